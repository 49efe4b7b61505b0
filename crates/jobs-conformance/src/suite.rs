//! The suite's bodies. Each takes the harness of one fresh, migrated, empty database and
//! uses only the ports, so any backend passes or fails it the same way. They pin down
//! what users rely on: ordering, leases, retries, cancels, idempotency, leadership and
//! wake-ups.

use std::{collections::HashSet, time::Duration};

use futures::future::join_all;
use jobs_core::{
    ApiBackend, ClaimRequest, Finish, Job, JobError, JobId, Lease, LeaseToken, ListFilter, NewJob,
    Outcome, PageRequest, Retry, State,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

pub use crate::bulk::*;
pub use crate::files::*;
pub use crate::limits::*;
pub use crate::queues::*;
pub use crate::schedules::*;
pub use crate::unique::*;
pub use crate::webhooks::*;
pub use crate::workflows::*;
use crate::{
    Harness,
    fixtures::{add, claim_one, claim_req, count, job, rescue_all, wake_for},
};

pub async fn enqueue_and_get_round_trip(h: &dyn Harness) {
    let s = h.backend();
    let run_at = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    let new = job("email")
        .tenant("acme")
        .queue("mail")
        .priority(9)
        .run_at(run_at)
        .max_attempts(3)
        .timeout(Duration::from_millis(1500))
        .deadline(run_at + Duration::from_secs(60))
        .trace_id("trace-1")
        .metadata(json!({"owner": "billing"}));
    let id = new.id;
    let created = s.enqueue(new).await.unwrap();
    assert!(!created.duplicate);
    let got = s.get(Some("acme"), id).await.unwrap();
    assert_eq!(got, created.job);
    assert_eq!(
        (got.state, got.attempt, got.max_attempts, got.priority),
        (State::Pending, 0, 3, 9)
    );
    assert_eq!((got.kind.as_str(), got.queue.as_str()), ("email", "mail"));
    assert_eq!(got.args, json!({"n": 1}));
    assert_eq!(got.metadata, json!({"owner": "billing"}));
    assert_eq!(got.timeout_ms, Some(1500));
    assert_eq!(got.trace_id.as_deref(), Some("trace-1"));
    assert!((got.run_at - run_at).abs() < Duration::from_millis(1));
    assert!(got.errors.is_empty() && got.result.is_none());

    assert!(
        matches!(s.get(Some("other"), id).await, Err(JobError::NotFound(_))),
        "tenants are isolated"
    );
    assert!(matches!(
        s.get(None, JobId::new()).await,
        Err(JobError::NotFound(_))
    ));
    let invalid = s.enqueue(job("email").priority(11)).await.unwrap_err();
    match invalid {
        JobError::Invalid(fields) => assert_eq!(fields[0].field, "priority"),
        other => panic!("expected invalid, got {other}"),
    }
}

pub async fn enqueue_many_ten_thousand_in_one_call(h: &dyn Harness) {
    let jobs: Vec<NewJob> = (0..10_000)
        .map(|i| NewJob::new("bulk", json!({"i": i})))
        .collect();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let done = h.backend().enqueue_many(jobs).await.unwrap();
    assert_eq!(done.len(), 10_000);
    assert!(
        done.iter()
            .zip(&ids)
            .all(|(d, id)| d.job.id == *id && !d.duplicate),
        "results keep input order"
    );
    assert_eq!(count(h.backend()).await, 10_000);
    assert_eq!(
        h.backend().get(None, ids[9_999]).await.unwrap().args,
        json!({"i": 9_999})
    );
}

/// What an enqueue returns is the row as stored, whichever way the batch went in (small
/// and large batches without unique keys or parents may take faster paths):
/// text the bulk formats escape, times finer than the database keeps, delays, and
/// every optional field.
pub async fn enqueue_many_returns_the_rows_as_stored(h: &dyn Harness) {
    let s = h.backend();
    let odd = "tab\there\nnew line\r\\back\\slash \\N é 🦀";
    let fine = OffsetDateTime::now_utc() + Duration::from_nanos(3_600_000_000_123);
    let plain = || {
        vec![
            NewJob::new("odd", json!({"s": odd, "n": [1.5, null, true]})),
            job("odd.meta")
                .queue("q:1")
                .metadata(json!({"s": odd}))
                .trace_id(odd),
            job("later")
                .run_at(fine)
                .deadline(fine + Duration::from_secs(1)),
            job("delayed")
                .delay(Duration::from_millis(1_500))
                .concurrency_key(odd),
            NewJob::new("bare", Value::Null).timeout(Duration::from_millis(7)),
        ]
    };
    let mut large = plain();
    large.extend((0..150).map(|_| job("filler")));
    let mut keyed = plain();
    keyed.push(job("keyed").unique_key("k-1"));
    for batch in [plain(), large, keyed] {
        let done = s.enqueue_many(batch).await.unwrap();
        for e in &done {
            let stored = s.get(None, e.job.id).await.unwrap();
            assert_eq!(
                stored, e.job,
                "job {} as returned and as stored",
                e.job.kind
            );
        }
        assert_eq!(done[0].job.args["s"], json!(odd));
        assert_eq!(done[1].job.trace_id.as_deref(), Some(odd));
        assert!((done[2].job.run_at - fine).abs() < Duration::from_millis(1));
        assert!(done[3].job.run_at - done[3].job.created_at >= Duration::from_millis(1_500));
    }
}

pub async fn enqueue_many_is_all_or_nothing(h: &dyn Harness) {
    let mut jobs: Vec<NewJob> = (0..5).map(|_| job("k")).collect();
    jobs[3].max_attempts = 0;
    match h.backend().enqueue_many(jobs).await {
        Err(JobError::Invalid(fields)) => assert_eq!(fields[0].field, "jobs[3].max_attempts"),
        other => panic!("expected invalid, got {other:?}"),
    }
    // A database error late in a batch (a second job reusing an id) rolls back the rest.
    let first = job("k");
    let mut reused = job("k");
    reused.id = first.id;
    let mut batch: Vec<NewJob> = (0..1_500).map(|_| job("k")).collect();
    batch.insert(0, first);
    batch.push(reused);
    assert!(h.backend().enqueue_many(batch).await.is_err());
    assert_eq!(count(h.backend()).await, 0);
}

pub async fn list_filters_newest_first_with_offset_and_cursor(h: &dyn Harness) {
    let s = h.backend();
    let mut ids = Vec::new();
    for i in 0..25 {
        let kind = if i % 2 == 0 { "even" } else { "odd" };
        let queue = if i % 5 == 0 { "five" } else { "default" };
        ids.push(add(s, job(kind).tenant("t1").queue(queue)).await);
    }
    s.enqueue(job("even").tenant("t2")).await.unwrap();
    let t1 = ListFilter::new().tenant("t1");

    let all = s.list(&t1, &PageRequest::first(100)).await.unwrap();
    let listed: Vec<JobId> = all.items.iter().map(|j| j.id).collect();
    let newest_first: Vec<JobId> = ids.iter().rev().copied().collect();
    assert_eq!(listed, newest_first);
    assert!(all.next_cursor.is_none());

    let odd = t1.clone().kind("odd");
    assert_eq!(
        s.list(&odd, &PageRequest::first(100))
            .await
            .unwrap()
            .items
            .len(),
        12
    );
    let five = t1.clone().queue("five");
    assert_eq!(
        s.list(&five, &PageRequest::first(100))
            .await
            .unwrap()
            .items
            .len(),
        5
    );
    s.cancel(None, ids[0]).await.unwrap();
    let cancelled = t1.clone().state(State::Cancelled);
    let found = s
        .list(&cancelled, &PageRequest::first(100))
        .await
        .unwrap()
        .items;
    assert_eq!(found.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[0]]);
    let tomorrow = OffsetDateTime::now_utc() + Duration::from_secs(86_400);
    let future = t1.clone().created_from(tomorrow);
    assert!(
        s.list(&future, &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let past = t1.clone().created_to(tomorrow);
    assert_eq!(
        s.list(&past, &PageRequest::first(100))
            .await
            .unwrap()
            .items
            .len(),
        25
    );

    let offset = PageRequest {
        limit: 10,
        offset: 20,
        cursor: None,
    };
    let tail: Vec<JobId> = s
        .list(&t1, &offset)
        .await
        .unwrap()
        .items
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(tail, newest_first[20..]);

    let mut paged = Vec::new();
    let mut page = s.list(&t1, &PageRequest::first(7)).await.unwrap();
    loop {
        paged.extend(page.items.iter().map(|j| j.id));
        let Some(cursor) = page.next_cursor else {
            break;
        };
        // A job arriving meanwhile does not shift the pages that follow.
        s.enqueue(job("late").tenant("t1")).await.unwrap();
        page = s.list(&t1, &PageRequest::after(7, cursor)).await.unwrap();
    }
    assert_eq!(
        paged, newest_first,
        "cursor pages cover every job once, in order"
    );

    for limit in [0, 101] {
        assert!(matches!(
            s.list(&t1, &PageRequest::first(limit)).await,
            Err(JobError::Invalid(_))
        ));
    }
}

/// A tenant's listing of every state merges jobs of all states newest first: pages by
/// cursor and by offset cover each job once, in order, filtered by kind or not, and so
/// does a listing of each state (on PostgreSQL running jobs come from another index than
/// the rest). Jobs of one batch share their creation time, so the id decides between them.
pub async fn a_listing_of_mixed_states_pages_newest_first(h: &dyn Harness) {
    let s = h.backend();
    for _ in 0..5 {
        enqueue_one_per_state(s).await;
    }
    s.enqueue(job("even").tenant("other")).await.unwrap();
    move_to_their_states(s).await;

    let mixed = ListFilter::new().tenant("mixed");
    let ids: Vec<JobId> = listed_all(s, &mixed).await.iter().map(|j| j.id).collect();
    let mut jobs: Vec<Job> = s.get_many(&ids).await.unwrap().into_values().collect();
    jobs.sort_by_key(|j| std::cmp::Reverse((j.created_at, j.id)));
    let states: HashSet<State> = jobs.iter().map(|j| j.state).collect();
    assert_eq!(states, HashSet::from(State::ALL), "a job in every state");
    assert_eq!(jobs.len(), 5 * State::ALL.len());

    let each_state = State::ALL.map(|state| mixed.clone().state(state));
    for filter in [mixed.clone(), mixed.clone().kind("even")]
        .into_iter()
        .chain(each_state)
    {
        let expected: Vec<JobId> = jobs
            .iter()
            .filter(|j| filter.kind.as_ref().is_none_or(|k| *k == j.kind))
            .filter(|j| filter.state.is_none_or(|state| state == j.state))
            .map(|j| j.id)
            .collect();
        assert_eq!(
            by_cursor(s, &filter, 4).await,
            expected,
            "{filter:?} by cursor"
        );
        assert_eq!(
            by_offset(s, &filter, 4).await,
            expected,
            "{filter:?} by offset"
        );
    }
    let everyone = listed_all(s, &ListFilter::new()).await;
    assert_eq!(everyone.len(), jobs.len() + 1, "a listing across tenants");
}

/// Seven jobs of tenant `mixed` in one batch, one headed for each state (by queue):
/// the one on `wait` waits for its pending sibling. Kinds alternate `even` and `odd`.
async fn enqueue_one_per_state(s: &dyn ApiBackend) {
    let parent = job("even").tenant("mixed");
    let on = |queue: &str, kind: &str| job(kind).tenant("mixed").queue(queue);
    let batch = vec![
        on("run", "odd"),
        on("done", "even"),
        on("part", "odd"),
        on("fail", "even"),
        on("cancel", "odd"),
        job("even").tenant("mixed").after(parent.id),
        parent,
    ];
    s.enqueue_many(batch).await.unwrap();
}

/// Claims the jobs of the queues `run`, `done`, `part` and `fail`, ends those of the last
/// three as their queue says, and cancels those of `cancel`.
async fn move_to_their_states(s: &dyn ApiBackend) {
    let outcome = |queue: &str| match queue {
        "done" => Some(Outcome::Completed { result: json!(1) }),
        "part" => Some(Outcome::Partial {
            result: json!(1),
            item_errors: json!([1]),
        }),
        "fail" => Some(Outcome::Failed {
            kind: "bad_input".into(),
            message: "no".into(),
            retry: Retry::Never,
        }),
        _ => None,
    };
    let queues = ["run", "done", "part", "fail"].map(str::to_owned);
    let request = ClaimRequest {
        queues: queues.to_vec(),
        ..claim_req("w", 100)
    };
    let claimed = s.claim(&request).await.unwrap();
    assert_eq!(claimed.len(), 4 * 5);
    let finishes = claimed
        .iter()
        .filter_map(|j| Some(Finish::new(Lease::of(j).unwrap(), outcome(&j.queue)?)))
        .collect();
    for ended in s.finish_many(finishes).await.unwrap() {
        ended.unwrap();
    }
    let to_cancel = ListFilter::new().tenant("mixed").queue("cancel");
    for j in listed_all(s, &to_cancel).await {
        s.cancel(None, j.id).await.unwrap();
    }
}

/// Every job the filter lists, in one page.
async fn listed_all(s: &dyn ApiBackend, filter: &ListFilter) -> Vec<Job> {
    let page = s.list(filter, &PageRequest::first(100)).await.unwrap();
    assert!(page.next_cursor.is_none(), "more than a page");
    page.items
}

/// The ids of every page, following each page's cursor.
async fn by_cursor(s: &dyn ApiBackend, filter: &ListFilter, limit: u32) -> Vec<JobId> {
    let mut ids = Vec::new();
    let mut page = s.list(filter, &PageRequest::first(limit)).await.unwrap();
    loop {
        ids.extend(page.items.iter().map(|j| j.id));
        let Some(cursor) = page.next_cursor else {
            return ids;
        };
        page = s
            .list(filter, &PageRequest::after(limit, cursor))
            .await
            .unwrap();
    }
}

/// The ids of every page, by offset, until a page comes back empty.
async fn by_offset(s: &dyn ApiBackend, filter: &ListFilter, limit: u32) -> Vec<JobId> {
    let mut ids = Vec::new();
    loop {
        let page = PageRequest {
            limit,
            offset: ids.len() as u64,
            cursor: None,
        };
        let items = s.list(filter, &page).await.unwrap().items;
        if items.is_empty() {
            return ids;
        }
        ids.extend(items.iter().map(|j| j.id));
    }
}

pub async fn claim_takes_highest_priority_then_oldest(h: &dyn Harness) {
    let s = h.backend();
    let mut expected = Vec::new();
    for priority in [1, 10, 5, 10, 1, 5] {
        let id = add(s, job("k").priority(priority)).await;
        expected.push((priority, id));
    }
    // Stable sort: highest priority first, enqueue order within a priority.
    expected.sort_by_key(|(p, _)| -p);
    let claimed = s.claim(&claim_req("w1", 4)).await.unwrap();
    let rest = s.claim(&claim_req("w1", 10)).await.unwrap();
    let order: Vec<JobId> = claimed.iter().chain(&rest).map(|j| j.id).collect();
    assert_eq!(
        order,
        expected.iter().map(|(_, id)| *id).collect::<Vec<_>>()
    );
    assert_eq!(claimed.len(), 4);

    let first = &claimed[0];
    assert_eq!(first.state, State::Running);
    assert_eq!(first.attempt, 1);
    assert_eq!(first.worker_id.as_deref(), Some("w1"));
    let (started, lease) = (first.started_at.unwrap(), first.lease_expires_at.unwrap());
    assert!(
        lease - started >= Duration::from_secs(29),
        "lease counts from the claim"
    );
    assert!(s.claim(&claim_req("w1", 10)).await.unwrap().is_empty());
}

pub async fn claim_skips_future_jobs_and_other_queues_and_kinds(h: &dyn Harness) {
    let s = h.backend();
    s.enqueue(job("k").run_at(OffsetDateTime::now_utc() + Duration::from_secs(600)))
        .await
        .unwrap();
    s.enqueue(job("k").delay(Duration::from_secs(600)))
        .await
        .unwrap();
    s.enqueue(job("k").queue("other")).await.unwrap();
    let due_later = add(s, job("k").delay(Duration::from_millis(300))).await;
    let wanted = add(s, job("wanted")).await;
    s.enqueue(job("unwanted")).await.unwrap();

    let only_wanted = ClaimRequest {
        kinds: Some(vec!["wanted".into()]),
        ..claim_req("w", 10)
    };
    let got: Vec<JobId> = s
        .claim(&only_wanted)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(got, [wanted]);
    let rest = s.claim(&claim_req("w", 10)).await.unwrap();
    assert_eq!(
        rest.len(),
        1,
        "only the due default-queue job remains claimable"
    );
    assert_eq!(rest[0].kind, "unwanted");

    tokio::time::sleep(Duration::from_millis(400)).await;
    let later: Vec<JobId> = s
        .claim(&claim_req("w", 10))
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(
        later,
        [due_later],
        "a delayed job becomes claimable when due"
    );
    let other = ClaimRequest {
        queues: vec!["other".into()],
        ..claim_req("w", 10)
    };
    assert_eq!(s.claim(&other).await.unwrap().len(), 1);
}

pub async fn claim_race_gives_every_job_to_exactly_one_worker(h: &dyn Harness) {
    let jobs: Vec<NewJob> = (0..2_000).map(|_| job("race")).collect();
    let all: HashSet<JobId> = jobs.iter().map(|j| j.id).collect();
    h.backend().enqueue_many(jobs).await.unwrap();
    let mut claimers = Vec::new();
    for w in 0..8 {
        let store = h.connect_again().await;
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim(&claim_req(&format!("w{w}"), 25)).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|j| (j.id, j.worker_id.unwrap())));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut workers_used = HashSet::new();
    for claimer in claimers {
        for (id, worker) in claimer.await.unwrap() {
            assert!(seen.insert(id), "job {id} claimed twice");
            workers_used.insert(worker);
        }
    }
    assert_eq!(seen, all, "every job claimed, none missed");
    assert!(workers_used.len() > 1, "the claimers really competed");
}

pub async fn heartbeat_renews_reports_cancels_and_lost_jobs(h: &dyn Harness) {
    let s = h.backend();
    for _ in 0..3 {
        s.enqueue(job("k")).await.unwrap();
    }
    let mut claim = claim_req("w", 3);
    claim.lease = Duration::from_secs(1);
    let leases: Vec<Lease> = s
        .claim(&claim)
        .await
        .unwrap()
        .iter()
        .map(|j| Lease::of(j).unwrap())
        .collect();
    s.cancel(None, leases[1].job_id).await.unwrap();
    // A token this job never had, as a stale or forged attempt would present.
    let stranger = Lease {
        token: LeaseToken::from(uuid::Uuid::new_v4()),
        ..leases[0]
    };
    let mut asked = leases.clone();
    asked.push(stranger);

    let beat = s.heartbeat(&asked, Duration::from_secs(120)).await.unwrap();
    assert_eq!(
        beat.renewed.iter().collect::<HashSet<_>>(),
        leases.iter().map(|l| &l.token).collect()
    );
    assert_eq!(beat.cancel_requested, [leases[1].token]);
    assert_eq!(beat.lost, [stranger.token]);
    let id = leases[0].job_id;
    let lease = s.get(None, id).await.unwrap().lease_expires_at.unwrap();
    assert!(lease > OffsetDateTime::now_utc() + Duration::from_secs(100));
}

/// Heartbeats and batched outcomes of one worker's many jobs write overlapping rows at
/// once; they must not deadlock each other (a failed heartbeat lets leases lapse, and
/// the rescuer then charges jobs that ran an attempt they already finished).
pub async fn heartbeats_and_outcomes_of_many_jobs_do_not_deadlock(h: &dyn Harness) {
    let s = h.backend();
    let jobs: Vec<NewJob> = (0..3_000).map(|_| job("k")).collect();
    s.enqueue_many(jobs).await.unwrap();
    let claimed = s.claim(&claim_req("w", 3_000)).await.unwrap();
    let mut leases: Vec<Lease> = claimed.iter().map(|j| Lease::of(j).unwrap()).collect();
    // Orders that differ from the table's and from each other's.
    leases.sort_by_key(|l| std::cmp::Reverse(l.job_id));
    let beats = async {
        for round in 0..30 {
            let mut asked = leases.clone();
            asked.rotate_left(round * 97);
            s.heartbeat(&asked, Duration::from_secs(60)).await.unwrap();
        }
    };
    let mut finishing = leases.clone();
    finishing.sort_by_key(|l| l.token);
    let outcomes = async {
        for chunk in finishing.chunks(300) {
            let done = chunk
                .iter()
                .map(|&lease| Finish::completed(lease, json!(null)))
                .collect();
            for result in s.finish_many(done).await.unwrap() {
                result.unwrap();
            }
        }
    };
    futures::join!(beats, outcomes);
    let stats = s.queue_stats(None).await.unwrap();
    let completed: u64 = stats
        .iter()
        .filter_map(|q| q.counts.get(&State::Completed))
        .sum();
    assert_eq!(completed, 3_000);
}

pub async fn progress_only_by_the_lease_holder(h: &dyn Harness) {
    let s = h.backend();
    let id = add(s, job("k")).await;
    let lease = claim_one(s, "w").await;
    s.progress(&lease, 0.25, Some("resizing")).await.unwrap();
    let got = s.get(None, id).await.unwrap();
    assert_eq!(
        (got.progress, got.stage.as_deref()),
        (0.25, Some("resizing"))
    );

    let stranger = Lease {
        token: LeaseToken::from(uuid::Uuid::new_v4()),
        ..lease
    };
    assert!(matches!(
        s.progress(&stranger, 0.5, None).await,
        Err(JobError::LeaseLost(_))
    ));
    let stage = "x\0".repeat(10_000);
    s.progress(&lease, 0.25, Some(&stage)).await.unwrap();
    let capped = s.get(None, id).await.unwrap().stage.unwrap();
    assert!(
        capped.len() <= jobs_core::storable::caps::STAGE && !capped.contains('\0'),
        "a long stage with NUL characters is stored capped and clean"
    );
    s.progress(&lease, 0.25, Some("resizing")).await.unwrap();
    for bad in [-0.1, 1.5, f64::NAN] {
        assert!(matches!(
            s.progress(&lease, bad, None).await,
            Err(JobError::Invalid(_))
        ));
    }
    assert_eq!(
        s.get(None, id).await.unwrap().progress,
        0.25,
        "refused writes change nothing"
    );
}

pub async fn complete_partial_and_permanent_failure(h: &dyn Harness) {
    let s = h.backend();
    let ids: Vec<JobId> = s
        .enqueue_many((0..3).map(|_| job("k")).collect())
        .await
        .unwrap()
        .iter()
        .map(|e| e.job.id)
        .collect();
    let leases: Vec<Lease> = s
        .claim(&claim_req("w", 3))
        .await
        .unwrap()
        .iter()
        .map(|j| Lease::of(j).unwrap())
        .collect();
    let lease_of = |id: JobId| *leases.iter().find(|l| l.job_id == id).unwrap();
    let outcomes = vec![
        Finish::completed(lease_of(ids[0]), json!({"ok": true})),
        Finish {
            follow_ups: Vec::new(),
            lease: lease_of(ids[1]),
            outcome: Outcome::Partial {
                result: json!({"done": 9}),
                item_errors: json!([{"item": 3}]),
            },
        },
        Finish {
            follow_ups: Vec::new(),
            lease: lease_of(ids[2]),
            outcome: Outcome::Failed {
                kind: "bad_input".into(),
                message: "no such user".into(),
                retry: Retry::Never,
            },
        },
    ];
    let states: Vec<State> = s
        .finish_many(outcomes)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(states, [State::Completed, State::Partial, State::Failed]);

    let done = s.get(None, ids[0]).await.unwrap();
    assert_eq!(
        (done.state, done.result.clone(), done.progress),
        (State::Completed, Some(json!({"ok": true})), 1.0)
    );
    let finished = done.finished_at.unwrap();
    assert!(done.duration_ms().unwrap() >= 0);
    assert!(
        done.expires_at.unwrap() - finished >= Duration::from_secs(6 * 86_400),
        "kept for the default week"
    );
    let partial = s.get(None, ids[1]).await.unwrap();
    assert_eq!(partial.item_errors, Some(json!([{"item": 3}])));
    let failed = s.get(None, ids[2]).await.unwrap();
    assert_eq!(failed.errors.len(), 1);
    assert_eq!(
        (failed.errors[0].kind.as_str(), failed.errors[0].attempt),
        ("bad_input", 1)
    );
    assert_eq!(failed.errors[0].message, "no such user");

    // Finishing again is refused: the attempt is over.
    let again = s.complete(&lease_of(ids[0]), json!(null)).await;
    assert!(matches!(again, Err(JobError::LeaseLost(_))));
}

pub async fn lease_lost_after_rescue_leaves_second_result_standing(h: &dyn Harness) {
    let s = h.backend();
    let id = add(s, job("k")).await;
    let mut short = claim_req("first", 1);
    short.lease = Duration::from_millis(1);
    let first = Lease::of(&s.claim(&short).await.unwrap()[0]).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = rescue_all(s).await;
    assert_eq!((report.retried, report.failed), (1, 0));
    let rescued = s.get(None, id).await.unwrap();
    assert_eq!(rescued.state, State::Pending);
    assert_eq!(rescued.errors[0].kind, "lease_expired");

    let second = claim_one(s, "second").await;
    assert_eq!(second.attempt, 2);
    assert!(matches!(
        s.complete(&first, json!("stale")).await,
        Err(JobError::LeaseLost(_))
    ));
    assert!(matches!(
        s.fail(&first, "x", "y", Retry::Never).await,
        Err(JobError::LeaseLost(_))
    ));
    assert!(matches!(
        s.progress(&first, 0.9, None).await,
        Err(JobError::LeaseLost(_))
    ));
    assert_eq!(
        s.get(None, id).await.unwrap().state,
        State::Running,
        "the first worker changed nothing"
    );
    assert_eq!(
        s.complete(&second, json!("fresh")).await.unwrap(),
        State::Completed
    );
    let done = s.get(None, id).await.unwrap();
    assert_eq!(
        (done.result, done.worker_id.as_deref()),
        (Some(json!("fresh")), Some("second"))
    );
}

pub async fn rescue_fails_exhausted_cancels_requested_and_past_deadline(h: &dyn Harness) {
    let s = h.backend();
    let exhausted = add(s, job("a").max_attempts(1)).await;
    let cancelled = add(s, job("b")).await;
    let healthy = add(s, job("c")).await;
    let mut short = claim_req("w", 2);
    short.lease = Duration::from_millis(1);
    s.claim(&ClaimRequest {
        kinds: Some(vec!["a".into(), "b".into()]),
        ..short
    })
    .await
    .unwrap();
    s.claim(&claim_req("w", 1)).await.unwrap();
    s.cancel(None, cancelled).await.unwrap();
    let doomed = add(
        s,
        job("d").deadline(OffsetDateTime::now_utc() + Duration::from_millis(20)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(60)).await;

    let report = rescue_all(s).await;
    assert_eq!((report.retried, report.failed, report.cancelled), (0, 2, 1));
    assert_eq!(s.get(None, exhausted).await.unwrap().state, State::Failed);
    assert_eq!(
        s.get(None, cancelled).await.unwrap().state,
        State::Cancelled
    );
    assert_eq!(
        s.get(None, healthy).await.unwrap().state,
        State::Running,
        "live leases are left alone"
    );
    let late = s.get(None, doomed).await.unwrap();
    assert_eq!(
        (late.state, late.errors[0].kind.as_str()),
        (State::Failed, "deadline")
    );
    assert_eq!(
        rescue_all(s).await,
        Default::default(),
        "a second sweep finds nothing"
    );
}

pub async fn retention_deletes_only_expired_ended_jobs_in_batches(h: &dyn Harness) {
    let s = h.backend();
    let mut short_lived = Vec::new();
    for _ in 0..5 {
        short_lived.push(add(s, job("k").retention(Duration::ZERO)).await);
    }
    let kept = add(s, job("k").retention(Duration::from_secs(3600))).await;
    let pending = add(
        s,
        job("k")
            .retention(Duration::ZERO)
            .delay(Duration::from_secs(60)),
    )
    .await;
    for id in short_lived.iter().chain([&kept]) {
        s.cancel(None, *id).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    // One bounded statement per call: 2 + 2 + 1.
    let rounds: Vec<u64> = [
        s.purge_expired(2).await.unwrap(),
        s.purge_expired(2).await.unwrap(),
        s.purge_expired(2).await.unwrap(),
    ]
    .into();
    assert_eq!(rounds, [2, 2, 1]);
    assert_eq!(count(s).await, 2);
    assert!(s.get(None, kept).await.is_ok());
    assert!(
        s.get(None, pending).await.is_ok(),
        "waiting jobs are never purged"
    );
    assert_eq!(s.purge_expired(2).await.unwrap(), 0);
}

pub async fn cancel_in_each_state(h: &dyn Harness) {
    let s = h.backend();
    let waiting = add(s, job("k").tenant("t").delay(Duration::from_secs(60))).await;
    let cancelled = s.cancel(Some("t"), waiting).await.unwrap();
    assert_eq!(cancelled.state, State::Cancelled);
    assert!(cancelled.finished_at.is_some());

    let running = add(s, job("k").tenant("t")).await;
    let lease = claim_one(s, "w").await;
    let requested = s.cancel(Some("t"), running).await.unwrap();
    assert_eq!(
        requested.state,
        State::Running,
        "the worker finishes the move"
    );
    let asked_at = requested.cancel_requested_at.unwrap();
    let again = s.cancel(Some("t"), running).await.unwrap();
    assert_eq!(
        again.cancel_requested_at,
        Some(asked_at),
        "a repeated cancel keeps the first request"
    );
    assert_eq!(
        s.finish(&lease, Outcome::Cancelled).await.unwrap(),
        State::Cancelled
    );

    for ended in [waiting, running] {
        match s.cancel(Some("t"), ended).await {
            Err(JobError::IllegalTransition { from, to }) => {
                assert_eq!((from, to), (State::Cancelled, State::Cancelled))
            }
            other => panic!("expected illegal transition, got {other:?}"),
        }
    }
    let completed = add(s, job("k").tenant("t")).await;
    let lease = claim_one(s, "w").await;
    s.complete(&lease, json!(1)).await.unwrap();
    assert!(matches!(
        s.cancel(Some("t"), completed).await,
        Err(JobError::IllegalTransition {
            from: State::Completed,
            ..
        })
    ));
    assert!(matches!(
        s.cancel(Some("t"), JobId::new()).await,
        Err(JobError::NotFound(_))
    ));
    let other_tenant = add(s, job("k").tenant("u").queue("elsewhere")).await;
    assert!(matches!(
        s.cancel(Some("t"), other_tenant).await,
        Err(JobError::NotFound(_))
    ));
    assert_eq!(
        s.get(None, other_tenant).await.unwrap().state,
        State::Pending
    );

    // A retryable failure after a cancel request ends the job cancelled, not retried.
    let asked = add(s, job("k")).await;
    let lease = claim_one(s, "w").await;
    s.cancel(None, asked).await.unwrap();
    assert_eq!(
        s.fail(&lease, "x", "y", Retry::Backoff).await.unwrap(),
        State::Cancelled
    );
}

pub async fn retry_runs_an_ended_job_again(h: &dyn Harness) {
    let s = h.backend();
    let id = add(s, job("k").max_attempts(1)).await;
    assert!(matches!(
        s.retry(None, id).await,
        Err(JobError::IllegalTransition {
            from: State::Pending,
            to: State::Pending
        })
    ));
    let lease = claim_one(s, "w").await;
    s.fail(&lease, "boom", "it broke", Retry::Backoff)
        .await
        .unwrap();
    assert_eq!(s.get(None, id).await.unwrap().state, State::Failed);

    let again = s.retry(None, id).await.unwrap();
    assert_eq!((again.state, again.attempt), (State::Pending, 0));
    assert!(again.finished_at.is_none() && again.expires_at.is_none());
    assert_eq!(
        again.errors.len(),
        1,
        "the history of earlier attempts is kept"
    );
    let lease = claim_one(s, "w").await;
    assert_eq!(lease.attempt, 1);
    assert!(matches!(
        s.retry(None, JobId::new()).await,
        Err(JobError::NotFound(_))
    ));
}

pub async fn idempotent_enqueue_under_a_race(h: &dyn Harness) {
    let mut racers = Vec::new();
    for _ in 0..8 {
        let store = h.connect_again().await;
        racers.push(async move {
            store
                .enqueue(job("k").tenant("t").unique_key("order-42"))
                .await
                .unwrap()
        });
    }
    let results = join_all(racers).await;
    let created: Vec<_> = results.iter().filter(|r| !r.duplicate).collect();
    assert_eq!(created.len(), 1, "exactly one racer creates the job");
    assert!(
        results.iter().all(|r| r.job.id == created[0].job.id),
        "the others get that job"
    );
    assert!(matches!(
        results[0].clone().require_new(),
        Ok(_) | Err(JobError::Duplicate { .. })
    ));
    assert_eq!(count(h.backend()).await, 1);

    // Per tenant, and within one batch.
    let other = h
        .backend()
        .enqueue(job("k").tenant("u").unique_key("order-42"))
        .await
        .unwrap();
    assert!(!other.duplicate);
    let batch = h
        .backend()
        .enqueue_many(vec![
            job("k").unique_key("x"),
            job("k").unique_key("x"),
            job("k"),
        ])
        .await
        .unwrap();
    assert_eq!(
        batch.iter().map(|e| e.duplicate).collect::<Vec<_>>(),
        [false, true, false]
    );
    assert_eq!(batch[0].job.id, batch[1].job.id);
    let dup = h
        .backend()
        .enqueue(job("k").tenant("t").unique_key("order-42"))
        .await
        .unwrap();
    assert!(
        matches!(dup.require_new(), Err(JobError::Duplicate { existing }) if existing == created[0].job.id)
    );
}

pub async fn release_returns_job_without_charging_an_attempt(h: &dyn Harness) {
    let s = h.backend();
    let id = add(s, job("k")).await;
    let lease = claim_one(s, "w").await;
    assert_eq!(
        s.finish(&lease, Outcome::Released).await.unwrap(),
        State::Pending
    );
    let released = s.get(None, id).await.unwrap();
    assert_eq!((released.state, released.attempt), (State::Pending, 0));
    assert!(released.errors.is_empty());
    assert_eq!(
        claim_one(s, "w2").await.attempt,
        1,
        "claimable again at once"
    );
}

pub async fn one_process_at_a_time_leads_maintenance(h: &dyn Harness) {
    let (a, b) = (h.connect_again().await, h.connect_again().await);
    // Long enough that a loaded machine (the suite runs in parallel on both backends)
    // still makes each pair of calls within one term: at 600 ms the old leader's retry
    // sometimes came after the new leader's term had lapsed too.
    let ttl = Duration::from_secs(3);
    assert!(
        a.lead("maintenance", "a", ttl).await.unwrap(),
        "the first caller leads"
    );
    assert!(
        a.lead("maintenance", "a", ttl).await.unwrap(),
        "the leader renews"
    );
    assert!(
        !b.lead("maintenance", "b", ttl).await.unwrap(),
        "a second process does not lead while the first's term runs"
    );
    assert!(
        b.lead("other-role", "b", ttl).await.unwrap(),
        "roles are separate"
    );
    // The leader stops renewing (frozen, cut off): its term lapses and another takes over.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert!(
        b.lead("maintenance", "b", ttl).await.unwrap(),
        "a lapsed term is taken over"
    );
    assert!(
        !a.lead("maintenance", "a", ttl).await.unwrap(),
        "the old leader, resumed, does not get it back"
    );
    b.resign("maintenance", "b").await.unwrap();
    assert!(
        a.lead("maintenance", "a", ttl).await.unwrap(),
        "a resigned role is free at once"
    );
}

pub async fn enqueue_wakes_subscribers(h: &dyn Harness) {
    // Another connection, as another process would have: it hears the enqueue only where
    // the backend can tell across processes (PostgreSQL's LISTEN).
    let other = h.connect_again().await;
    let mut here = h.backend().subscribe().await.unwrap();
    let mut there = other.subscribe().await.unwrap();
    h.backend().enqueue(job("k").queue("mail")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), wake_for(&mut here, "mail"))
        .await
        .expect("an enqueue through this process always wakes its subscribers");
    if h.wakes_other_processes() {
        tokio::time::timeout(Duration::from_secs(5), wake_for(&mut there, "mail"))
            .await
            .expect("woken across processes");
    }
}

pub async fn queue_stats_count_states_and_oldest_wait(h: &dyn Harness) {
    let s = h.backend();
    add(s, job("k").tenant("t").queue("mail")).await;
    add(s, job("k").tenant("t").queue("mail")).await;
    add(
        s,
        job("k")
            .tenant("t")
            .queue("mail")
            .delay(Duration::from_secs(60)),
    )
    .await;
    let cancelled = add(s, job("k").tenant("t").queue("media")).await;
    s.cancel(None, cancelled).await.unwrap();
    add(s, job("k").tenant("other").queue("mail")).await;
    tokio::time::sleep(Duration::from_millis(30)).await;

    let stats = s.queue_stats(Some("t")).await.unwrap();
    assert_eq!(
        stats.iter().map(|q| q.queue.as_str()).collect::<Vec<_>>(),
        ["mail", "media"]
    );
    assert_eq!(stats[0].counts.get(&State::Pending), Some(&3));
    let age = stats[0].oldest_pending_age.expect("due jobs wait");
    assert!(
        age >= Duration::from_millis(20) && age < Duration::from_secs(30),
        "age {age:?}"
    );
    assert_eq!(stats[1].counts.get(&State::Cancelled), Some(&1));
    assert_eq!(stats[1].oldest_pending_age, None);
    let all = s.queue_stats(None).await.unwrap();
    assert_eq!(all[0].counts.get(&State::Pending), Some(&4));
}

pub async fn claims_can_be_limited_to_a_tenant(h: &dyn Harness) {
    let s = h.backend();
    let mine = add(s, job("k").tenant("a")).await;
    add(s, job("k").tenant("b")).await;
    let request = ClaimRequest {
        tenant: Some("a".into()),
        ..claim_req("w", 10)
    };
    let got: Vec<JobId> = s
        .claim(&request)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(got, [mine]);
}

pub async fn json_of_every_shape_round_trips(h: &dyn Harness) {
    let s = h.backend();
    let shapes = [
        json!("text"),
        json!(42),
        json!(1.5),
        json!([1, "two", null]),
        json!({"nested": {"deep": [true]}, "quote": "'\\\"ü"}),
        json!(null),
        json!({}),
    ];
    let jobs: Vec<NewJob> = shapes
        .iter()
        .map(|a| NewJob::new("shape", a.clone()))
        .collect();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    s.enqueue_many(jobs).await.unwrap();
    for (id, shape) in ids.iter().zip(&shapes) {
        assert_eq!(&s.get(None, *id).await.unwrap().args, shape, "args of {id}");
    }
    let finishes = s
        .claim(&claim_req("w", shapes.len() as u32))
        .await
        .unwrap()
        .iter()
        .map(|claimed| Finish::completed(Lease::of(claimed).unwrap(), claimed.args.clone()))
        .collect();
    s.finish_many(finishes).await.unwrap();
    for (id, shape) in ids.iter().zip(&shapes) {
        let done = s.get(None, *id).await.unwrap();
        assert_eq!(done.state, State::Completed);
        assert_eq!(&done.result.unwrap_or(Value::Null), shape, "result of {id}");
    }
}

pub async fn snooze_defers_without_spending_an_attempt(h: &dyn Harness) {
    let s = h.backend();
    let id = add(s, job("nap").max_attempts(1)).await;
    let lease = claim_one(s, "w").await;
    let snooze = Outcome::Snoozed {
        delay: Duration::from_secs(3600),
    };
    assert_eq!(s.finish(&lease, snooze).await.unwrap(), State::Pending);
    let job = s.get(None, id).await.unwrap();
    assert_eq!((job.attempt, job.errors.len()), (0, 0));
    assert!(job.run_at > OffsetDateTime::now_utc() + Duration::from_secs(3000));
    assert!(
        s.claim(&claim_req("w", 10)).await.unwrap().is_empty(),
        "a snoozed job is not claimable before its delay"
    );
}

pub async fn get_many_and_cancel_requests_answer_for_many_at_once(h: &dyn Harness) {
    let s = h.backend();
    let a = add(s, job("a")).await;
    let b = add(s, job("b")).await;
    let found = s.get_many(&[a, b, JobId::new()]).await.unwrap();
    assert_eq!(found.len(), 2, "an unknown id is left out");
    let claimed = s.claim(&claim_req("w", 2)).await.unwrap();
    let leases: Vec<Lease> = claimed.iter().filter_map(Lease::of).collect();
    assert!(s.cancel_requests(&leases).await.unwrap().is_empty());
    s.cancel(None, a).await.unwrap();
    let of_a = leases.iter().find(|l| l.job_id == a).unwrap().token;
    assert_eq!(s.cancel_requests(&leases).await.unwrap(), vec![of_a]);
}

pub async fn end_unrunnable_fails_pending_jobs_past_their_deadline(h: &dyn Harness) {
    let s = h.backend();
    let late = job("late").deadline(OffsetDateTime::now_utc() + Duration::from_millis(200));
    let id = add(s, late.delay(Duration::from_secs(3600))).await;
    let on_time = add(s, job("on_time")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = s.end_unrunnable(100).await.unwrap();
    assert_eq!((report.failed, report.cancelled), (1, 0));
    let job = s.get(None, id).await.unwrap();
    assert_eq!(job.state, State::Failed);
    assert_eq!(job.errors.last().map(|e| e.kind.as_str()), Some("deadline"));
    assert_eq!(s.get(None, on_time).await.unwrap().state, State::Pending);
}

/// A watcher of one job hears of its changes made through this process, and of no other.
pub async fn watchers_hear_changes_to_their_job(h: &dyn Harness) {
    let s = h.backend();
    let watched = add(s, job("watched")).await;
    let other = add(s, job("other").queue("elsewhere")).await;
    let mut changes = s.watch_job(watched);
    s.cancel(None, other).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(200), changes.next()).await;
    assert!(quiet.is_err(), "a change to another job is not signalled");
    let lease = claim_one(s, "w").await;
    assert!(hears(&mut changes).await, "the claim is signalled");
    s.complete(&lease, json!(1)).await.unwrap();
    assert!(hears(&mut changes).await, "the completion is signalled");
}

/// Whether `changes` signals within 5 s.
async fn hears(changes: &mut jobs_core::JobChanges) -> bool {
    tokio::time::timeout(Duration::from_secs(5), changes.next())
        .await
        .is_ok()
}
