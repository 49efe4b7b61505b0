//! Bulk actions by filter: each filter field, each action, dry runs, tenants, and a bulk
//! retry of 10,000 jobs while workers drain them and another process retries some.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use jobs_core::{
    BulkAction, BulkRequest, BulkResult, ClaimRequest, Finish, JobError, JobId, JobStore, Lease,
    ListFilter, NewJob, Outcome, PageRequest, Retry, State, WorkerBackend,
};

use crate::{
    Harness,
    fixtures::{add, claim_one, claim_req, job},
};

/// Enqueues `jobs` and fails each once, for good, with its error kind: dead letters.
pub async fn failed(s: &dyn WorkerBackend, jobs: Vec<(NewJob, &str)>) -> Vec<JobId> {
    let ids: Vec<JobId> = jobs.iter().map(|(j, _)| j.id).collect();
    let new = jobs.iter().map(|(j, _)| j.clone()).collect();
    s.enqueue_many(new).await.unwrap();
    fail_enqueued(s, &jobs).await;
    ids
}

/// Claims and fails jobs enqueued already, each with its error kind.
async fn fail_enqueued(s: &dyn WorkerBackend, jobs: &[(NewJob, &str)]) {
    let kinds: HashMap<JobId, &str> = jobs.iter().map(|(j, k)| (j.id, *k)).collect();
    let queues: HashSet<String> = jobs.iter().map(|(j, _)| j.queue.clone()).collect();
    let claim = ClaimRequest {
        queues: queues.into_iter().collect(),
        ..claim_req("dead-letters", 1_000)
    };
    loop {
        let claimed = s.claim(&claim).await.unwrap();
        if claimed.is_empty() {
            return;
        }
        let finishes = claimed
            .iter()
            .map(|job| Finish {
                follow_ups: Vec::new(),
                lease: Lease::of(job).unwrap(),
                outcome: Outcome::Failed {
                    kind: kinds[&job.id].to_owned(),
                    message: "it broke".into(),
                    retry: Retry::Never,
                },
            })
            .collect();
        for done in s.finish_many(finishes).await.unwrap() {
            assert_eq!(done.unwrap(), State::Failed);
        }
    }
}

async fn run(s: &dyn JobStore, action: BulkAction, filter: ListFilter) -> BulkResult {
    s.bulk(&BulkRequest::new(action, filter)).await.unwrap()
}

async fn dry(s: &dyn JobStore, action: BulkAction, filter: ListFilter) -> u64 {
    let request = BulkRequest::new(action, filter).dry_run();
    let result = s.bulk(&request).await.unwrap();
    assert_eq!(result.changed, 0, "a dry run changes nothing");
    result.matched
}

async fn state_of(s: &dyn JobStore, id: JobId) -> State {
    s.get(None, id).await.unwrap().state
}

pub async fn bulk_retry_selects_by_each_filter_field(h: &dyn Harness) {
    let s = h.backend();
    let mut jobs = Vec::new();
    let mut created = Vec::new();
    for (kind, queue, error) in [
        ("email", "mail", "timeout"),
        ("email", "default", "http_503"),
        ("resize", "default", "timeout"),
        ("resize", "media", "oom"),
    ] {
        let new = job(kind).tenant("t").queue(queue).max_attempts(1);
        created.push(s.enqueue(new.clone()).await.unwrap().job.created_at);
        jobs.push((new, error));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Enqueued one by one above: `failed` only claims and fails them.
    let ids: Vec<JobId> = jobs.iter().map(|(j, _)| j.id).collect();
    fail_enqueued(s, &jobs).await;
    let other = add(s, job("email").tenant("t").queue("mail")).await; // pending
    let t = || ListFilter::new().tenant("t");
    let retry = BulkAction::Retry;

    // The listing answers with the same filter: inspect, then act.
    let timeouts = s
        .list(&t().error_kind("timeout"), &PageRequest::first(10))
        .await
        .unwrap();
    let mut listed: Vec<JobId> = timeouts.items.iter().map(|j| j.id).collect();
    listed.sort();
    let mut expected = vec![ids[0], ids[2]];
    expected.sort();
    assert_eq!(listed, expected, "listing by the kind of the last error");

    assert_eq!(dry(s, retry, t().error_kind("timeout")).await, 2);
    assert_eq!(dry(s, retry, t().error_kind("nothing")).await, 0);
    assert_eq!(dry(s, retry, t().kind("email")).await, 2, "pending ignored");
    assert_eq!(dry(s, retry, t().queue("default")).await, 2);
    assert_eq!(dry(s, retry, t().state(State::Failed)).await, 4);
    assert_eq!(dry(s, retry, t().state(State::Cancelled)).await, 0);
    assert_eq!(
        dry(s, retry, t().created_from(created[1])).await,
        3,
        "created_after is inclusive"
    );
    assert_eq!(
        dry(s, retry, t().created_to(created[1])).await,
        1,
        "created_before is exclusive"
    );
    let mixed = t().kind("resize").error_kind("timeout").queue("default");
    assert_eq!(dry(s, retry, mixed.clone()).await, 1, "fields combine");
    assert_eq!(dry(s, retry, ListFilter::new().kind("email")).await, 2);
    for id in &ids {
        assert_eq!(
            state_of(s, *id).await,
            State::Failed,
            "dry runs move nothing"
        );
    }

    let done = run(s, retry, mixed).await;
    assert_eq!((done.matched, done.changed), (1, 1));
    let again = s.get(None, ids[2]).await.unwrap();
    assert_eq!((again.state, again.attempt), (State::Pending, 0));
    assert_eq!(again.errors.len(), 1, "the error history is kept");
    assert!(again.finished_at.is_none() && again.lease_token.is_none());
    assert_eq!(state_of(s, ids[3]).await, State::Failed);

    let rest = run(s, retry, t().state(State::Failed)).await;
    assert_eq!((rest.matched, rest.changed), (3, 3));
    assert_eq!(state_of(s, other).await, State::Pending);
    let lease = claim_one(s, "w").await;
    assert_eq!(lease.attempt, 1, "a retried job starts from attempt 0");
}

pub async fn bulk_cancel_and_delete_follow_their_states(h: &dyn Harness) {
    let s = h.backend();
    let dead = failed(s, vec![(job("k"), "boom")]).await[0];
    let running = add(s, job("k")).await;
    claim_one(s, "w").await;
    let pending: Vec<JobId> = futures::future::join_all((0..3).map(|_| add(s, job("k")))).await;
    let k = || ListFilter::new().kind("k");

    assert_eq!(dry(s, BulkAction::Cancel, k()).await, 4);
    let cancel = run(s, BulkAction::Cancel, k()).await;
    assert_eq!((cancel.matched, cancel.changed), (4, 4));
    for id in &pending {
        assert_eq!(state_of(s, *id).await, State::Cancelled);
    }
    let asked = s.get(None, running).await.unwrap();
    assert_eq!(
        asked.state,
        State::Running,
        "a running job is asked to stop"
    );
    assert!(asked.cancel_requested_at.is_some());
    assert_eq!(state_of(s, dead).await, State::Failed, "ended jobs stay");

    assert_eq!(
        dry(s, BulkAction::Delete, k()).await,
        4,
        "every state but running"
    );
    let delete = run(s, BulkAction::Delete, k()).await;
    assert_eq!((delete.matched, delete.changed), (4, 4));
    assert!(matches!(
        s.get(None, dead).await,
        Err(JobError::NotFound(_))
    ));
    assert_eq!(state_of(s, running).await, State::Running, "never deleted");
}

pub async fn bulk_refuses_an_empty_filter_and_stays_in_its_tenant(h: &dyn Harness) {
    let s = h.backend();
    let mine = failed(s, vec![(job("k").tenant("a"), "boom")]).await[0];
    let theirs = failed(s, vec![(job("k").tenant("b"), "boom")]).await[0];
    let a = ListFilter::new().tenant("a");
    let refused = s
        .bulk(&BulkRequest::new(BulkAction::Retry, a.clone()))
        .await;
    match refused {
        Err(JobError::Invalid(fields)) => assert_eq!(fields[0].field, "filter"),
        other => panic!("an empty filter must be refused, got {other:?}"),
    }
    assert_eq!(state_of(s, mine).await, State::Failed);

    let all = s
        .bulk(&BulkRequest::new(BulkAction::Retry, a).all())
        .await
        .unwrap();
    assert_eq!((all.matched, all.changed), (1, 1));
    assert_eq!(state_of(s, mine).await, State::Pending);
    assert_eq!(
        state_of(s, theirs).await,
        State::Failed,
        "tenants are apart"
    );
}

/// 10,000 dead letters retried in bulk while workers drain the queue and another
/// process retries the same failed jobs in bulk too: every job runs exactly once more,
/// and each was moved by exactly one of the two requests.
pub async fn bulk_retry_of_ten_thousand_while_workers_drain(h: &dyn Harness) {
    const N: usize = 10_000;
    let s = h.backend();
    let jobs = (0..N)
        .map(|_| (job("dead").max_attempts(1), "timeout"))
        .collect();
    let ids = failed(s, jobs).await;
    let mut workers = Vec::new();
    for i in 0..2 {
        let other = h.connect_again().await;
        workers.push(tokio::spawn(async move {
            drain(&*other, &format!("w{i}"), N).await
        }));
    }
    let other = h.connect_again().await;
    let racer = tokio::spawn(async move {
        let failed = ListFilter::new().kind("dead").state(State::Failed);
        run(&*other, BulkAction::Retry, failed).await
    });
    let filter = ListFilter::new().error_kind("timeout").state(State::Failed);
    let bulk = run(s, BulkAction::Retry, filter).await;
    let raced = racer.await.unwrap();
    let mut ran = 0;
    for worker in workers {
        ran += worker.await.unwrap();
    }

    assert_eq!(ran, N, "every job ran once more");
    assert_eq!(
        bulk.changed + raced.changed,
        N as u64,
        "each job was moved by exactly one request: {bulk:?} {raced:?}"
    );
    for result in [bulk, raced] {
        assert!(result.changed <= result.matched && result.matched <= N as u64);
    }
    assert!(
        bulk.batches + raced.batches >= 10,
        "bounded batches: {bulk:?} {raced:?}"
    );
    let all = s.get_many(&ids).await.unwrap();
    for id in &ids {
        let job = &all[id];
        assert_eq!(
            (job.state, job.attempt, job.errors.len()),
            (State::Completed, 1, 1),
            "job {id} moved whole: {job:?}"
        );
    }
}

/// A worker: claims and completes until `total` jobs are completed in all.
async fn drain(s: &dyn WorkerBackend, worker: &str, total: usize) -> usize {
    let mut ran = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let claimed = s.claim(&claim_req(worker, 100)).await.unwrap();
        if claimed.is_empty() {
            if completed(s).await >= total as u64 {
                return ran;
            }
            assert!(tokio::time::Instant::now() < deadline, "drain timed out");
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let finishes = claimed
            .iter()
            .map(|job| Finish::completed(Lease::of(job).unwrap(), serde_json::json!({"ok": true})))
            .collect();
        for done in s.finish_many(finishes).await.unwrap() {
            assert_eq!(done.unwrap(), State::Completed);
            ran += 1;
        }
    }
}

async fn completed(s: &dyn WorkerBackend) -> u64 {
    let stats = s.queue_stats(None).await.unwrap();
    stats
        .iter()
        .filter_map(|q| q.counts.get(&State::Completed))
        .sum()
}
