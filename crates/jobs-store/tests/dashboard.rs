//! What the dashboard reads, on SQLite and PostgreSQL: jobs ended per minute of a queue,
//! and listings narrowed to a job id or a unique key.

use std::collections::BTreeMap;

use jobs_conformance::fixtures::claim_req;
use jobs_core::{
    ClaimRequest, JobStore, Lease, ListFilter, NewJob, PageRequest, QueueControl, Retry, State,
};
use jobs_store::{SeaOrmStore, backend_tests, testing::TestDb};
use serde_json::json;
use time::{Duration, OffsetDateTime};

backend_tests!(
    ended_per_minute_counts_one_tenant_and_queue_by_end_state,
    ended_per_minute_starts_at_the_minute_of_since,
    a_listing_narrows_to_a_job_id_or_a_unique_key,
    an_empty_long_or_nul_id_or_key_is_refused_naming_q,
);

/// Claims every due job of `queue` for `tenant` and ends them: the first `completed`
/// complete, the rest fail for good.
async fn end_all(s: &SeaOrmStore, tenant: &str, queue: &str, completed: usize) {
    let request = ClaimRequest {
        queues: vec![queue.to_owned()],
        tenant: Some(tenant.to_owned()),
        ..claim_req("w", 100)
    };
    let jobs = s.claim(&request).await.unwrap();
    for (i, job) in jobs.iter().enumerate() {
        let lease = Lease::of(job).unwrap();
        if i < completed {
            s.complete(&lease, json!({})).await.unwrap();
        } else {
            s.fail(&lease, "boom", "failed", Retry::Never)
                .await
                .unwrap();
        }
    }
}

async fn add(s: &SeaOrmStore, tenant: &str, queue: &str, n: usize) {
    let jobs = (0..n)
        .map(|_| NewJob::new("k", json!({})).tenant(tenant).queue(queue))
        .collect();
    s.enqueue_many(jobs).await.unwrap();
}

async fn ended_per_minute_counts_one_tenant_and_queue_by_end_state(db: TestDb) {
    let s = &db.store;
    let before = OffsetDateTime::now_utc();
    add(s, "acme", "mail", 5).await;
    add(s, "other", "mail", 2).await;
    add(s, "acme", "else", 2).await;
    end_all(s, "acme", "mail", 3).await;
    end_all(s, "other", "mail", 2).await;
    end_all(s, "acme", "else", 2).await;
    let pending = s
        .enqueue(NewJob::new("k", json!({})).tenant("acme").queue("mail"))
        .await
        .unwrap();
    s.cancel(None, pending.job.id).await.unwrap();
    add(s, "acme", "mail", 1).await; // Still pending: not ended.
    let after = OffsetDateTime::now_utc();

    let rows = s
        .ended_per_minute("acme", "mail", before - Duration::minutes(5))
        .await
        .unwrap();
    let mut by_state = BTreeMap::new();
    for row in &rows {
        let minute_start = after
            .replace_second(0)
            .unwrap()
            .replace_nanosecond(0)
            .unwrap();
        assert!(row.minute <= minute_start, "{row:?} is past {after}");
        assert!(
            row.minute > before - Duration::minutes(1),
            "{row:?} is before {before}"
        );
        assert_eq!(
            (row.minute.second(), row.minute.nanosecond()),
            (0, 0),
            "{row:?}"
        );
        *by_state.entry(row.state).or_insert(0) += row.count;
    }
    let expected = BTreeMap::from([
        (State::Completed, 3),
        (State::Failed, 2),
        (State::Cancelled, 1),
    ]);
    assert_eq!(by_state, expected, "{rows:?}");
}

async fn ended_per_minute_starts_at_the_minute_of_since(db: TestDb) {
    let s = &db.store;
    add(s, "acme", "mail", 1).await;
    end_all(s, "acme", "mail", 1).await;
    let page = PageRequest {
        limit: 1,
        offset: 0,
        cursor: None,
    };
    let job = s
        .list(&ListFilter::new(), &page)
        .await
        .unwrap()
        .items
        .remove(0);
    let finished = job.finished_at.unwrap();
    // A `since` later within the minute of the end still counts that whole minute.
    let same_minute = finished.replace_second(59).unwrap();
    let rows = s
        .ended_per_minute("acme", "mail", same_minute)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0].minute,
        finished
            .replace_second(0)
            .unwrap()
            .replace_nanosecond(0)
            .unwrap()
    );
    assert_eq!((rows[0].state, rows[0].count), (State::Completed, 1));
    let next_minute = s
        .ended_per_minute("acme", "mail", finished + Duration::minutes(1))
        .await
        .unwrap();
    assert!(next_minute.is_empty(), "{next_minute:?}");
}

async fn list(s: &SeaOrmStore, filter: ListFilter) -> Vec<jobs_core::JobId> {
    let page = PageRequest {
        limit: 100,
        offset: 0,
        cursor: None,
    };
    let page = s.list(&filter, &page).await.unwrap();
    page.items.iter().map(|j| j.id).collect()
}

async fn a_listing_narrows_to_a_job_id_or_a_unique_key(db: TestDb) {
    let s = &db.store;
    let plain = s.enqueue(NewJob::new("k", json!({}))).await.unwrap().job;
    let keyed = s
        .enqueue(NewJob::new("k", json!({})).unique_key("order-7"))
        .await
        .unwrap()
        .job;
    let elsewhere = s
        .enqueue(
            NewJob::new("k", json!({}))
                .tenant("other")
                .unique_key("order-7"),
        )
        .await
        .unwrap()
        .job;
    let mine = || ListFilter::new().tenant("default");
    assert_eq!(
        list(s, mine().id_or_key(plain.id.to_string())).await,
        vec![plain.id]
    );
    assert_eq!(list(s, mine().id_or_key("order-7")).await, vec![keyed.id]);
    assert_eq!(
        list(s, ListFilter::new().id_or_key("order-7")).await.len(),
        2
    );
    // Another tenant's job is not found by its id; a key matches exactly, not by prefix.
    assert!(
        list(s, mine().id_or_key(elsewhere.id.to_string()))
            .await
            .is_empty()
    );
    assert!(list(s, mine().id_or_key("order-")).await.is_empty());
    // With the other fields.
    let failed = mine().id_or_key("order-7").state(State::Failed);
    assert!(list(s, failed).await.is_empty());
    // Bulk actions select the same jobs.
    let mut cancel =
        jobs_core::BulkRequest::new(jobs_core::BulkAction::Cancel, mine().id_or_key("order-7"));
    cancel.dry_run = true;
    assert_eq!(s.bulk(&cancel).await.unwrap().matched, 1);
}

async fn an_empty_long_or_nul_id_or_key_is_refused_naming_q(db: TestDb) {
    let s = &db.store;
    for text in [String::new(), "x".repeat(256), "a\0b".to_owned()] {
        let page = PageRequest {
            limit: 10,
            offset: 0,
            cursor: None,
        };
        match s
            .list(&ListFilter::new().id_or_key(text.clone()), &page)
            .await
        {
            Err(jobs_core::JobError::Invalid(fields)) => {
                assert_eq!(fields[0].field, "q", "{text:?}: {fields:?}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
    let longest = "x".repeat(255);
    assert!(
        list(s, ListFilter::new().id_or_key(longest))
            .await
            .is_empty()
    );
}
