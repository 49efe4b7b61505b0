//! The client on both backends: transactions that commit or roll back with their jobs,
//! `wait` and `watch` hearing of changes made here and by other processes.

use std::time::Duration;

use futures::StreamExt;
use jobs::{Client, JobArgs, JobContext, JobError, JobOptions, Output, State, TypedJob, Worker};
use jobs_store::{backend_tests, testing::TestDb};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Halve {
    n: u32,
    /// How long the handler pauses after reporting half way.
    pause_ms: u64,
}

impl JobArgs for Halve {
    const KIND: &'static str = "halve";
}

#[jobs::async_trait]
impl TypedJob for Halve {
    type Output = u32;

    async fn run(self, ctx: &JobContext) -> Result<Output<u32>, jobs::HandlerError> {
        ctx.progress(0.5, "half way");
        tokio::time::sleep(Duration::from_millis(self.pause_ms)).await;
        Ok((self.n / 2).into())
    }
}

fn worker_for(client: &Client) -> jobs::WorkerHandle {
    Worker::builder(client.store().clone())
        .register::<Halve>()
        .config(|c| {
            c.progress_interval = Duration::from_millis(20);
            c.maintenance = false;
        })
        .build()
        .expect("worker")
        .spawn()
}

/// Inserts a job to halve `n` and waits (at most 20 s) for it to end.
async fn insert_and_wait(client: &Client, n: u32) -> jobs::Job {
    let id = client
        .insert(&Halve { n, pause_ms: 0 })
        .await
        .unwrap()
        .job
        .id;
    tokio::time::timeout(Duration::from_secs(20), client.wait(id))
        .await
        .expect("wait resolved")
        .unwrap()
}

async fn wait_resolves_when_the_job_ends(db: TestDb) {
    let client = Client::new(db.store.clone());
    let worker = worker_for(&client);
    let job = insert_and_wait(&client, 8).await;
    assert_eq!((job.state, job.result), (State::Completed, Some(4.into())));
    let id = job.id;
    // An ended job resolves at once; an unknown one is an error, not a hang.
    assert_eq!(client.wait(id).await.unwrap().state, State::Completed);
    let unknown = jobs::JobId::new();
    assert!(matches!(client.wait(unknown).await, Err(JobError::NotFound(id)) if id == unknown));
    worker.shutdown().await.unwrap();
}

async fn watch_follows_the_job_through_progress_to_its_end(db: TestDb) {
    let client = Client::new(db.store.clone());
    let id = client
        .insert(&Halve {
            n: 2,
            pause_ms: 500,
        })
        .await
        .unwrap()
        .job
        .id;
    let mut watch = Box::pin(client.watch(id));
    // The first item is read at the first poll: before any worker runs.
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!((first.state, first.stage), (State::Pending, None));
    let worker = worker_for(&client);
    let seen: Vec<(State, Option<String>)> =
        tokio::time::timeout(Duration::from_secs(20), watch.collect::<Vec<_>>())
            .await
            .expect("the stream ended after the job did")
            .into_iter()
            .map(|job| job.map(|j| (j.state, j.stage)).unwrap())
            .collect();
    assert!(
        seen.contains(&(State::Running, Some("half way".into()))),
        "the progress was seen: {seen:?}"
    );
    assert_eq!(seen.last().map(|s| s.0), Some(State::Completed));
    worker.shutdown().await.unwrap();
}

async fn transactions_commit_or_roll_back_with_their_jobs(db: TestDb) {
    let client = Client::new(db.store.clone());
    let rolled_back = client.begin().await.unwrap();
    let first = rolled_back
        .insert(&Halve { n: 1, pause_ms: 0 })
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();
    let dropped = client.begin().await.unwrap();
    let second = dropped.insert(&Halve { n: 2, pause_ms: 0 }).await.unwrap();
    drop(dropped);
    for gone in [first.job.id, second.job.id] {
        assert!(matches!(client.get(gone).await, Err(JobError::NotFound(_))));
    }
    let committed = client.begin().await.unwrap();
    let options = JobOptions::new().queue("elsewhere").priority(9);
    let kept = committed
        .insert_with(&Halve { n: 3, pause_ms: 0 }, options)
        .await
        .unwrap();
    committed.commit().await.unwrap();
    let job = client.get(kept.job.id).await.unwrap();
    assert_eq!((job.queue.as_str(), job.priority), ("elsewhere", 9));

    // A transaction the caller began itself, adopted.
    use jobs::sea_orm::TransactionTrait;
    let own = db.store.connection().begin().await.unwrap();
    let adopted = client.adopt(own);
    let theirs = adopted.insert(&Halve { n: 4, pause_ms: 0 }).await.unwrap();
    adopted.commit().await.unwrap();
    assert_eq!(
        client.get(theirs.job.id).await.unwrap().state,
        State::Pending
    );
}

/// A job run by another process sends this one no signal: `wait` still resolves.
async fn wait_hears_of_jobs_ended_by_other_processes(db: TestDb) {
    let client = Client::new(db.store.clone());
    let other = Client::new(db.connect_again().await);
    let worker = worker_for(&other);
    let job = insert_and_wait(&client, 6).await;
    assert_eq!(job.result, Some(3.into()));
    worker.shutdown().await.unwrap();
}

backend_tests!(
    wait_resolves_when_the_job_ends,
    watch_follows_the_job_through_progress_to_its_end,
    transactions_commit_or_roll_back_with_their_jobs,
    wait_hears_of_jobs_ended_by_other_processes,
    bulk_retry_hands_dead_letters_to_a_running_worker,
    queue_limits_set_from_code_show_in_queues,
);

/// Limits for every tenant, set and lifted through the client; `queues()` shows them.
async fn queue_limits_set_from_code_show_in_queues(db: TestDb) {
    use jobs::{NewJob, QueueLimits, Rate};
    let client = Client::new(db.store.clone());
    let job = NewJob::new("sync", serde_json::json!({})).queue("mail");
    let id = client
        .insert_job(job.concurrency_key("customer-42"))
        .await
        .unwrap()
        .job
        .id;
    let concurrency_key = client.get(id).await.unwrap().concurrency_key;
    assert_eq!(concurrency_key.as_deref(), Some("customer-42"));

    let limits = QueueLimits {
        concurrency: Some(10),
        key_concurrency: Some(1),
        rate: Some(Rate::per_second(50)),
        key_rate: None,
    };
    client.set_queue_limits("mail", &limits).await.unwrap();
    assert_eq!(client.queue_limits("mail").await.unwrap(), limits);
    let queues = client.queues().await.unwrap();
    let mail = queues.iter().find(|q| q.queue == "mail").expect("listed");
    assert_eq!(
        (&mail.limits, mail.counts.get(&State::Pending)),
        (&limits, Some(&1))
    );

    let zero = QueueLimits {
        concurrency: Some(0),
        ..limits.clone()
    };
    match client.set_queue_limits("mail", &zero).await {
        Err(JobError::Invalid(fields)) => assert_eq!(fields[0].field, "concurrency"),
        other => panic!("a concurrency of 0 is refused: {other:?}"),
    }
    assert_eq!(
        client.queue_limits("mail").await.unwrap(),
        limits,
        "unchanged"
    );
    let lifted = QueueLimits::default();
    client.set_queue_limits("mail", &lifted).await.unwrap();
    assert!(client.queue_limits("mail").await.unwrap().is_unlimited());
}

/// Dead letters retried in bulk through the client wake an idle worker, which runs them
/// to completion from attempt 0.
async fn bulk_retry_hands_dead_letters_to_a_running_worker(db: TestDb) {
    use jobs::{BulkAction, BulkRequest, ListFilter, Retry, ports::JobStore};
    let client = Client::new(db.store.clone());
    let once = JobOptions::new().max_attempts(1);
    let mut ids = Vec::new();
    for n in [2, 4, 6] {
        let halve = Halve { n, pause_ms: 0 };
        ids.push(
            client
                .insert_with(&halve, once.clone())
                .await
                .unwrap()
                .job
                .id,
        );
    }
    let store = client.store();
    let claim = jobs_core::ClaimRequest {
        worker_id: "before".into(),
        queues: vec!["default".into()],
        kinds: None,
        tenant: None,
        limit: 10,
        lease: Duration::from_secs(30),
    };
    for job in store.claim(&claim).await.unwrap() {
        let lease = jobs_core::Lease::of(&job).unwrap();
        store
            .fail(&lease, "upstream_down", "503", Retry::Never)
            .await
            .unwrap();
    }
    let worker = worker_for(&client);
    let dead = ListFilter::new()
        .state(State::Failed)
        .error_kind("upstream_down");
    let done = client
        .bulk(BulkRequest::new(BulkAction::Retry, dead))
        .await
        .unwrap();
    assert_eq!((done.matched, done.changed), (3, 3));
    for (id, n) in ids.into_iter().zip([2, 4, 6]) {
        let job = tokio::time::timeout(Duration::from_secs(20), client.wait(id))
            .await
            .expect("wait resolved")
            .unwrap();
        assert_eq!((job.state, job.attempt), (State::Completed, 1));
        assert_eq!(job.result, Some((n / 2).into()));
    }
    worker.shutdown().await.unwrap();
}
