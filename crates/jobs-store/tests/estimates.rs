//! Positions in the queue, run-time estimates and compressed results, on SQLite and
//! PostgreSQL.

use std::time::Duration;

use jobs_core::{Estimate, Finish, Job, JobStore, Lease, NewJob, Outcome, State};
use jobs_store::{OutcomeLimits, RESULT_TOO_LARGE, SeaOrmStore, backend_tests, testing::TestDb};
use serde_json::{Value, json};
use time::OffsetDateTime;

backend_tests!(
    each_position_is_the_rank_in_the_claim_order,
    a_deep_position_is_counted_up_to_the_limit,
    estimates_are_null_without_history_and_within_the_observed_range_after,
    a_running_job_ends_by_its_pace_and_history,
    a_five_megabyte_result_round_trips_compressed,
    a_result_over_the_maximum_fails_the_job_saying_why,
);

fn claim_req(limit: u32) -> jobs_core::ClaimRequest {
    jobs_conformance::fixtures::claim_req("w", limit)
}

async fn position(s: &SeaOrmStore, job: &Job) -> Option<u64> {
    let estimate = s.estimate(job, Estimate::POSITION_LIMIT).await.unwrap();
    estimate.position_in_queue
}

async fn each_position_is_the_rank_in_the_claim_order(db: TestDb) {
    let s = &db.store;
    // Past the limit too: those are answered from the queue's depth mark, which must
    // agree with the claim order as the count does.
    let jobs: Vec<NewJob> = (0..1100)
        .map(|i| NewJob::new("k", json!({"i": i})).priority(((i * 7) % 5) as i16))
        .collect();
    let mut jobs: Vec<Job> = s
        .enqueue_many(jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.job)
        .collect();
    // Another tenant's and another queue's jobs come before none of these.
    s.enqueue_many(vec![
        NewJob::new("k", json!({})).tenant("other").priority(9),
        NewJob::new("k", json!({})).queue("elsewhere").priority(9),
    ])
    .await
    .unwrap();
    jobs.sort_by(|a, b| (b.priority, a.run_at, a.id).cmp(&(a.priority, b.run_at, b.id)));
    for (rank, job) in jobs.iter().enumerate() {
        let estimate = s.estimate(job, Estimate::POSITION_LIMIT).await.unwrap();
        let limit = Estimate::POSITION_LIMIT;
        assert_eq!(
            (estimate.position_in_queue, estimate.position_exact),
            (Some((rank as u64).min(limit)), (rank as u64) < limit),
            "job of rank {rank}"
        );
    }
    // The claims agree: the first ten claimed are the first ten ranked, in order. (Claims
    // take turns between tenants; a position counts the job's own tenant's jobs.)
    let tenant_claim = jobs_core::ClaimRequest {
        tenant: Some(jobs[0].tenant.clone()),
        ..claim_req(1)
    };
    for job in &jobs[..10] {
        let claimed = s.claim(&tenant_claim).await.unwrap();
        assert_eq!(claimed[0].id, job.id);
    }
    let next = s.get(None, jobs[10].id).await.unwrap();
    assert_eq!(position(s, &next).await, Some(0), "the head reports 0");
    let running = s.get(None, jobs[0].id).await.unwrap();
    assert_eq!(
        position(s, &running).await,
        None,
        "running jobs have no position"
    );
}

async fn a_deep_position_is_counted_up_to_the_limit(db: TestDb) {
    let s = &db.store;
    let jobs = (0..150)
        .map(|i| NewJob::new("k", json!({"i": i})))
        .collect();
    let jobs = s.enqueue_many(jobs).await.unwrap();
    let last = &jobs.last().unwrap().job;
    let deep = s.estimate(last, 100).await.unwrap();
    assert_eq!(deep.position_in_queue, Some(100));
    assert!(!deep.position_exact, "at least 100 come first, not exactly");
    let counted = s.estimate(last, Estimate::POSITION_LIMIT).await.unwrap();
    assert_eq!(counted.position_in_queue, Some(149));
    assert!(counted.position_exact);
}

/// Claims one job and completes it after `ms`; returns how long it ran by the database.
async fn run_for(s: &SeaOrmStore, ms: u64) -> i64 {
    let job = s.claim(&claim_req(1)).await.unwrap().remove(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let lease = Lease::of(&job).unwrap();
    s.complete(&lease, json!({})).await.unwrap();
    let job = s.get(None, job.id).await.unwrap();
    job.duration_ms().unwrap()
}

async fn estimates_are_null_without_history_and_within_the_observed_range_after(db: TestDb) {
    let s = &db.store;
    let first = s
        .enqueue(NewJob::new("render", json!({})))
        .await
        .unwrap()
        .job;
    let none = s.estimate(&first, Estimate::POSITION_LIMIT).await.unwrap();
    assert_eq!(none.position_in_queue, Some(0));
    assert_eq!(none.estimated_start_at, None, "no history: no estimate");
    assert_eq!(none.estimated_completion_at, None);
    let mut observed = Vec::new();
    for i in 0..20u64 {
        if i > 0 {
            s.enqueue(NewJob::new("render", json!({}))).await.unwrap();
        }
        observed.push(run_for(s, 20 + (i % 5) * 15).await);
    }
    let (min, max) = (
        *observed.iter().min().unwrap(),
        *observed.iter().max().unwrap(),
    );
    let job = s
        .enqueue(NewJob::new("render", json!({})))
        .await
        .unwrap()
        .job;
    let before = OffsetDateTime::now_utc();
    let estimate = s.estimate(&job, Estimate::POSITION_LIMIT).await.unwrap();
    let start = estimate.estimated_start_at.expect("a start after 20 runs");
    let end = estimate
        .estimated_completion_at
        .expect("an end after 20 runs");
    assert!(
        start >= before - Duration::from_secs(1),
        "at the head, it starts now"
    );
    let run_ms = (end - start).whole_milliseconds() as i64;
    assert!(
        (min..=max).contains(&run_ms),
        "estimated run {run_ms} ms, observed {min}..={max} ms"
    );
    // Other kinds of the queue share its pace but not their run time.
    let other = s
        .enqueue(NewJob::new("other", json!({})))
        .await
        .unwrap()
        .job;
    let estimate = s.estimate(&other, Estimate::POSITION_LIMIT).await.unwrap();
    assert!(estimate.estimated_start_at.is_some());
    assert_eq!(estimate.estimated_completion_at, None);
}

async fn a_running_job_ends_by_its_pace_and_history(db: TestDb) {
    let s = &db.store;
    s.enqueue(NewJob::new("k", json!({}))).await.unwrap();
    let job = s.claim(&claim_req(1)).await.unwrap().remove(0);
    let blind = s.estimate(&job, Estimate::POSITION_LIMIT).await.unwrap();
    assert_eq!(
        blind.estimated_completion_at, None,
        "no progress, no history"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lease = Lease::of(&job).unwrap();
    s.progress(&lease, 0.5, Some("half")).await.unwrap();
    let job = s.get(None, job.id).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let end = s
        .estimate(&job, Estimate::POSITION_LIMIT)
        .await
        .unwrap()
        .estimated_completion_at
        .expect("half done: an end by its pace");
    let started = job.started_at.unwrap();
    let run = (end - started).whole_milliseconds();
    let elapsed = (now - started).whole_milliseconds();
    assert!(
        run >= elapsed && run <= 3 * elapsed,
        "half done after {elapsed} ms, estimated to run {run} ms"
    );
}

/// About 5 MB of JSON, as a report would be: many similar rows.
fn large_result() -> Value {
    let rows: Vec<Value> = (0..56_000)
        .map(|i| json!({"row": i, "sku": format!("SKU-{:08}", i * 7919 % 100_000), "status": "shipped", "note": "left the warehouse on time"}))
        .collect();
    json!({"rows": rows})
}

async fn a_five_megabyte_result_round_trips_compressed(db: TestDb) {
    let s = &db.store;
    let result = large_result();
    let size = serde_json::to_vec(&result).unwrap().len();
    assert!(size > 5_000_000, "{size} bytes");
    let small = json!({"ok": true});
    s.enqueue_many(vec![
        NewJob::new("big", json!({})),
        NewJob::new("small", json!({})),
    ])
    .await
    .unwrap();
    let claimed = s.claim(&claim_req(2)).await.unwrap();
    let states = s
        .finish_many(vec![
            Finish::new(
                Lease::of(&claimed[0]).unwrap(),
                Outcome::Partial {
                    result: result.clone(),
                    item_errors: json!([{"row": 3, "error": "lost"}]),
                },
            ),
            Finish::new(
                Lease::of(&claimed[1]).unwrap(),
                Outcome::Completed {
                    result: small.clone(),
                },
            ),
        ])
        .await
        .unwrap();
    assert!(states.iter().all(Result::is_ok), "{states:?}");
    let big = s.get(None, claimed[0].id).await.unwrap();
    assert_eq!(big.state, State::Partial);
    assert_eq!(big.result.as_ref(), Some(&result), "read back as written");
    assert_eq!(big.item_errors, Some(json!([{"row": 3, "error": "lost"}])));
    let stored = s.compressed_outcome_bytes(big.id).await.unwrap();
    let stored = stored.expect("stored compressed");
    assert!(
        (stored as usize) < size / 5,
        "{size} bytes of JSON stored in {stored}"
    );
    let small_job = s.get(None, claimed[1].id).await.unwrap();
    assert_eq!(small_job.result, Some(small));
    let small_stored = s.compressed_outcome_bytes(small_job.id).await.unwrap();
    assert_eq!(small_stored, None, "small results stay JSON");
}

async fn a_result_over_the_maximum_fails_the_job_saying_why(db: TestDb) {
    let s = db.store.clone().with_outcome_limits(OutcomeLimits {
        compress_above: 1024,
        max_bytes: 100_000,
    });
    s.enqueue(NewJob::new("k", json!({}))).await.unwrap();
    let job = s.claim(&claim_req(1)).await.unwrap().remove(0);
    let lease = Lease::of(&job).unwrap();
    let state = s
        .complete(&lease, json!({"blob": "x".repeat(200_000)}))
        .await
        .unwrap();
    assert_eq!(state, State::Failed);
    let job = s.get(None, job.id).await.unwrap();
    assert_eq!(job.result, None);
    let error = job.errors.last().unwrap();
    assert_eq!(error.kind, RESULT_TOO_LARGE);
    assert!(
        error.message.contains("at most 100000"),
        "{}",
        error.message
    );
}
