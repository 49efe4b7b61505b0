//! The worker runtime against real stores, each body on SQLite and PostgreSQL: order,
//! concurrency, scheduling, retries, timeouts, outcomes, progress, panics, cancellation
//! and graceful shutdown, observed from inside handlers and from other connections.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use jobs_core::{Job, JobArgs, JobId, JobStore, NewJob, RetryPolicy, State};
use jobs_store::{SeaOrmStore, backend_tests, testing::TestDb};
use jobs_worker::{HandlerError, JobContext, Output, TypedJob, Worker, WorkerBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;

backend_tests!(
    handlers_see_priority_then_fifo_order,
    concurrency_limit_is_never_exceeded,
    a_queue_limit_in_code_holds_across_workers,
    scheduled_jobs_wait_for_run_at,
    retries_follow_the_backoff_and_end_failed,
    a_slow_attempt_times_out,
    partial_success_ends_partial,
    progress_is_visible_from_another_connection_while_running,
    a_panicking_handler_is_retried_and_the_worker_survives,
    cancel_from_another_connection_reaches_the_handler,
    a_handler_that_ignores_cancel_is_aborted,
    shutdown_releases_unfinished_jobs_without_charging_an_attempt,
    prefetched_jobs_wait_for_a_handler_and_can_be_cancelled_or_released,
    a_snoozed_job_runs_again_after_the_delay_without_charging_an_attempt,
    a_handler_can_cancel_its_own_job,
    a_kinds_backoff_policy_sets_the_retry_delay,
    a_kind_registered_twice_is_refused_at_build,
    follow_ups_are_enqueued_with_a_completion_and_dropped_with_a_failure,
);

fn fast(store: &SeaOrmStore) -> WorkerBuilder {
    Worker::builder(store.clone()).config(|c| {
        c.poll_interval = Duration::from_millis(200);
        c.cancel_check_interval = Duration::from_millis(100);
        c.progress_interval = Duration::from_millis(50);
        c.cancel_grace = Duration::from_millis(300);
        c.shutdown_grace = Duration::from_millis(300);
    })
}

/// Polls from a separate connection until the job satisfies `done`.
/// Enqueues one job and returns its id.
async fn add(store: &SeaOrmStore, job: NewJob) -> JobId {
    store.enqueue(job).await.unwrap().job.id
}

async fn wait_for(store: &SeaOrmStore, id: JobId, done: impl Fn(&Job) -> bool) -> Job {
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let job = store.get(None, id).await.unwrap();
        if done(&job) {
            return job;
        }
        assert!(
            Instant::now() < give_up,
            "job {id} never got there: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ended(store: &SeaOrmStore, id: JobId) -> Job {
    wait_for(store, id, |j| j.state.is_ended()).await
}

#[derive(Serialize, Deserialize)]
struct Record {
    label: String,
}

static ORDER: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl JobArgs for Record {
    const KIND: &'static str = "record";
}

#[async_trait]
impl TypedJob for Record {
    type Output = String;

    async fn run(self, _ctx: &JobContext) -> Result<Output<String>, HandlerError> {
        ORDER.lock().unwrap().push(self.label.clone());
        Ok(self.label.into())
    }
}

async fn handlers_see_priority_then_fifo_order(db: TestDb) {
    let s = &db.store;
    // The kind is namespaced per backend run, because ORDER is shared by the process.
    let tag = if s.is_postgres() { "pg" } else { "lite" };
    let mut expected = Vec::new();
    for (i, priority) in [1, 9, 5, 9, 1, 5].into_iter().enumerate() {
        let label = format!("{tag}-{i}-p{priority}");
        let job = Record {
            label: label.clone(),
        }
        .to_job()
        .unwrap()
        .priority(priority);
        let id = add(s, job).await;
        expected.push((priority, label, id));
    }
    expected.sort_by_key(|(p, _, _)| -p);
    let worker = fast(s)
        .register::<Record>()
        .queue("default", 1)
        .build()
        .expect("valid worker configuration")
        .spawn();
    for (_, label, id) in &expected {
        let job = ended(s, *id).await;
        assert_eq!(
            job.result,
            Some(json!(label)),
            "typed output is the job's result"
        );
    }
    worker.shutdown().await.unwrap();
    let seen: Vec<String> = ORDER
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with(&format!("{tag}-")))
        .cloned()
        .collect();
    assert_eq!(
        seen,
        expected
            .iter()
            .map(|(_, l, _)| l.clone())
            .collect::<Vec<_>>()
    );
}

type Running = futures::future::BoxFuture<'static, Result<Output<Value>, HandlerError>>;

/// A handler that runs 30 ms and records the most handlers running at once.
fn peak_recording() -> (
    impl Fn(Value, JobContext) -> Running + Clone + Send + Sync + 'static,
    Arc<AtomicUsize>,
) {
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let recorded = peak.clone();
    let handler = move |_args: Value, _ctx: JobContext| {
        let (now, peak) = (now.clone(), peak.clone());
        let run = async move {
            let running = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(Value::Null.into())
        };
        Box::pin(run) as Running
    };
    (handler, recorded)
}

async fn concurrency_limit_is_never_exceeded(db: TestDb) {
    let s = &db.store;
    let (handler, peak) = peak_recording();
    let jobs: Vec<NewJob> = (0..40)
        .map(|_| NewJob::new("busy", json!({})).queue("limited"))
        .collect();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let worker = fast(s)
        .handler("busy", handler)
        .queue("limited", 3)
        .build()
        .expect("valid worker configuration")
        .spawn();
    s.enqueue_many(jobs).await.unwrap();
    for id in &ids {
        assert_eq!(ended(s, *id).await.state, State::Completed);
    }
    worker.shutdown().await.unwrap();
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "the limit is used and never exceeded"
    );
}

/// A queue limit set in code holds across workers: two workers of 10 slots each (and
/// prefetch) run at most 3 jobs at once between them, and drain the queue.
async fn a_queue_limit_in_code_holds_across_workers(db: TestDb) {
    let s = &db.store;
    let (handler, peak) = peak_recording();
    let limits = jobs_core::QueueLimits {
        concurrency: Some(3),
        ..Default::default()
    };
    let workers: Vec<_> = (0..2)
        .map(|_| {
            fast(s)
                .handler("busy", handler.clone())
                .queue("shared", 10)
                .limit("shared", limits.clone())
                .build()
                .expect("valid worker configuration")
                .spawn()
        })
        .collect();
    let jobs: Vec<NewJob> = (0..60)
        .map(|_| NewJob::new("busy", json!({})).queue("shared"))
        .collect();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    s.enqueue_many(jobs).await.unwrap();
    for id in &ids {
        assert_eq!(ended(s, *id).await.state, State::Completed);
    }
    for worker in workers {
        worker.shutdown().await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3, "used, never exceeded");
}

async fn scheduled_jobs_wait_for_run_at(db: TestDb) {
    let s = &db.store;
    let started = Arc::new(Mutex::new(None));
    let handler = {
        let started = started.clone();
        move |_args: Value, _ctx: JobContext| {
            let started = started.clone();
            async move {
                *started.lock().unwrap() = Some(OffsetDateTime::now_utc());
                Ok(Value::Null.into())
            }
        }
    };
    let worker = fast(s).handler("later", handler).build().unwrap().spawn();
    let run_at = OffsetDateTime::now_utc() + Duration::from_millis(800);
    let id = add(s, NewJob::new("later", json!({})).run_at(run_at)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        s.get(None, id).await.unwrap().state,
        State::Pending,
        "not before run_at"
    );
    ended(s, id).await;
    worker.shutdown().await.unwrap();
    let at = started.lock().unwrap().expect("the handler ran");
    assert!(at >= run_at, "started {at} before run_at {run_at}");
}

async fn retries_follow_the_backoff_and_end_failed(db: TestDb) {
    let policy = RetryPolicy {
        base: Duration::from_millis(300),
        cap: Duration::from_secs(10),
        jitter: 0.0,
    };
    let s = &db.store.clone().with_retry_policy(policy);
    let starts = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let starts = starts.clone();
        move |_args: Value, ctx: JobContext| {
            let starts = starts.clone();
            async move {
                starts.lock().unwrap().push((ctx.attempt(), Instant::now()));
                Err::<Output<Value>, _>(HandlerError::retryable("flaky", "upstream said no"))
            }
        }
    };
    let worker = fast(s)
        .handler("flaky", handler)
        .config(|c| c.poll_interval = Duration::from_millis(50))
        .build()
        .expect("valid worker configuration")
        .spawn();
    let id = add(s, NewJob::new("flaky", json!({})).max_attempts(3)).await;
    let job = ended(s, id).await;
    worker.shutdown().await.unwrap();
    assert_eq!(job.state, State::Failed);
    assert_eq!(
        job.errors
            .iter()
            .map(|e| (e.attempt, e.kind.as_str()))
            .collect::<Vec<_>>(),
        [(1, "flaky"), (2, "flaky"), (3, "flaky")]
    );
    let starts = starts.lock().unwrap().clone();
    assert_eq!(
        starts.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert!(
        gaps[0] >= Duration::from_millis(290),
        "first backoff {gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(590),
        "second backoff doubles {gaps:?}"
    );
}

async fn a_slow_attempt_times_out(db: TestDb) {
    let s = &db.store;
    let handler = |_args: Value, ctx: JobContext| async move {
        ctx.cancelled().await;
        Ok(json!("stopped").into())
    };
    let worker = fast(s).handler("slow", handler).build().unwrap().spawn();
    let job = NewJob::new("slow", json!({}))
        .timeout(Duration::from_millis(200))
        .max_attempts(1);
    let id = add(s, job).await;
    let job = ended(s, id).await;
    worker.shutdown().await.unwrap();
    assert_eq!(job.state, State::Failed);
    assert_eq!(job.errors[0].kind, "timeout");
    assert!(job.duration_ms().unwrap() < 5_000);
}

async fn partial_success_ends_partial(db: TestDb) {
    let s = &db.store;
    let handler = |_args: Value, _ctx: JobContext| async move {
        Ok(Output::Partial {
            result: json!({"sent": 9}),
            item_errors: json!([{"item": 4, "error": "bounced"}]),
        })
    };
    let worker = fast(s).handler("mailing", handler).build().unwrap().spawn();
    let id = add(s, NewJob::new("mailing", json!({}))).await;
    let job = ended(s, id).await;
    worker.shutdown().await.unwrap();
    assert_eq!(job.state, State::Partial);
    assert_eq!(job.result, Some(json!({"sent": 9})));
    assert_eq!(
        job.item_errors,
        Some(json!([{"item": 4, "error": "bounced"}]))
    );
}

async fn progress_is_visible_from_another_connection_while_running(db: TestDb) {
    let s = &db.store;
    let handler = |_args: Value, ctx: JobContext| async move {
        for i in 1..=10_000 {
            ctx.progress(i as f64 / 20_000.0, Some(format!("step {i}")));
        }
        ctx.cancelled().await;
        Ok(Value::Null.into())
    };
    let worker = fast(s).handler("report", handler).build().unwrap().spawn();
    let id = add(s, NewJob::new("report", json!({}))).await;
    let other = db.connect_again().await;
    let seen = wait_for(&other, id, |j| j.progress == 0.5).await;
    assert_eq!(
        (seen.state, seen.stage.as_deref()),
        (State::Running, Some("step 10000"))
    );
    other.cancel(None, id).await.unwrap();
    assert_eq!(
        ended(s, id).await.state,
        State::Completed,
        "a handler that finishes after a cancel keeps its result"
    );
    worker.shutdown().await.unwrap();
}

async fn a_panicking_handler_is_retried_and_the_worker_survives(db: TestDb) {
    let s = &db.store.clone().with_retry_policy(RetryPolicy {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(10),
        jitter: 0.0,
    });
    let handler = |_args: Value, ctx: JobContext| async move {
        if ctx.attempt() == 1 {
            panic!("the handler blew up");
        }
        Ok(json!("second time lucky").into())
    };
    let worker = fast(s)
        .handler("fragile", handler)
        .config(|c| c.poll_interval = Duration::from_millis(50))
        .build()
        .expect("valid worker configuration")
        .spawn();
    let id = add(s, NewJob::new("fragile", json!({}))).await;
    let job = ended(s, id).await;
    let after = add(s, NewJob::new("fragile", json!({}))).await;
    assert_eq!(
        ended(s, after).await.attempt,
        2,
        "the same worker keeps working"
    );
    worker.shutdown().await.unwrap();
    assert_eq!((job.state, job.attempt), (State::Completed, 2));
    assert_eq!(job.errors[0].kind, "panic");
    assert!(job.errors[0].message.contains("blew up"));
}

async fn cancel_from_another_connection_reaches_the_handler(db: TestDb) {
    let s = &db.store;
    let heard = Arc::new(Mutex::new(None));
    let handler = {
        let heard = heard.clone();
        move |_args: Value, ctx: JobContext| {
            let heard = heard.clone();
            async move {
                ctx.cancelled().await;
                *heard.lock().unwrap() = Some(Instant::now());
                Err::<Output<Value>, _>(HandlerError::retryable("cancelled", "stopped on request"))
            }
        }
    };
    let worker = fast(s).handler("long", handler).build().unwrap().spawn();
    let id = add(s, NewJob::new("long", json!({}))).await;
    wait_for(s, id, |j| j.state == State::Running).await;
    let other = db.connect_again().await;
    let asked = Instant::now();
    other.cancel(None, id).await.unwrap();
    let job = ended(&other, id).await;
    worker.shutdown().await.unwrap();
    assert_eq!(job.state, State::Cancelled);
    let heard = heard.lock().unwrap().expect("the handler's token fired");
    assert!(
        heard - asked < Duration::from_secs(1),
        "cancel reached the handler in {:?}",
        heard - asked
    );
}

async fn a_handler_that_ignores_cancel_is_aborted(db: TestDb) {
    let s = &db.store;
    let handler = |_args: Value, _ctx: JobContext| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(Value::Null.into())
    };
    let worker = fast(s)
        .handler("stubborn", handler)
        .build()
        .unwrap()
        .spawn();
    let id = add(s, NewJob::new("stubborn", json!({}))).await;
    wait_for(s, id, |j| j.state == State::Running).await;
    let asked = Instant::now();
    s.cancel(None, id).await.unwrap();
    let job = ended(s, id).await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "aborted after the grace period"
    );
    worker.shutdown().await.unwrap();
    assert_eq!(job.state, State::Cancelled);
}

async fn shutdown_releases_unfinished_jobs_without_charging_an_attempt(db: TestDb) {
    let s = &db.store;
    let handler = |args: Value, _ctx: JobContext| async move {
        let ms = args["ms"].as_u64().unwrap();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(Value::Null.into())
    };
    let worker = fast(s)
        .handler("nap", handler)
        .config(|c| c.shutdown_grace = Duration::from_secs(1))
        .build()
        .expect("valid worker configuration")
        .spawn();
    let quick = add(s, NewJob::new("nap", json!({"ms": 300}))).await;
    let endless = add(s, NewJob::new("nap", json!({"ms": 3_600_000}))).await;
    wait_for(s, endless, |j| j.state == State::Running).await;
    wait_for(s, quick, |j| j.started_at.is_some()).await;
    worker.shutdown().await.unwrap();
    assert_eq!(
        s.get(None, quick).await.unwrap().state,
        State::Completed,
        "finished within the grace period"
    );
    let released = s.get(None, endless).await.unwrap();
    assert_eq!((released.state, released.attempt), (State::Pending, 0));
    assert!(released.errors.is_empty());
}

async fn prefetched_jobs_wait_for_a_handler_and_can_be_cancelled_or_released(db: TestDb) {
    let s = &db.store;
    let started: Arc<Mutex<Vec<JobId>>> = Arc::default();
    let handler = {
        let started = started.clone();
        move |_args: Value, ctx: JobContext| {
            let started = started.clone();
            async move {
                started.lock().unwrap().push(ctx.id());
                tokio::time::sleep(Duration::from_secs(3_600)).await;
                Ok(Value::Null.into())
            }
        }
    };
    let first = add(s, NewJob::new("hold", json!({})).queue("pre").priority(9)).await;
    let worker = fast(s)
        .handler("hold", handler)
        .queue("pre", 1)
        .config(|c| c.prefetch = 3)
        .build()
        .expect("valid worker configuration")
        .spawn();
    wait_for(s, first, |j| j.state == State::Running).await;
    let waiting: Vec<JobId> = s
        .enqueue_many(
            (0..3)
                .map(|_| NewJob::new("hold", json!({})).queue("pre"))
                .collect(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.job.id)
        .collect();
    for id in &waiting {
        wait_for(s, *id, |j| j.state == State::Running).await;
    }
    assert_eq!(
        *started.lock().unwrap(),
        vec![first],
        "claimed ahead, but only one handler runs"
    );

    s.cancel(None, waiting[0]).await.unwrap();
    assert_eq!(ended(s, waiting[0]).await.state, State::Cancelled);
    worker.shutdown().await.unwrap();
    assert_eq!(
        *started.lock().unwrap(),
        vec![first],
        "a cancelled or released job waiting for a handler never runs"
    );
    for id in [first, waiting[1], waiting[2]] {
        let job = s.get(None, id).await.unwrap();
        assert_eq!(
            (job.state, job.attempt),
            (State::Pending, 0),
            "{id} released"
        );
    }
}

/// Records each run's attempt and start, and answers from `answer` by run number.
fn recording(
    runs: &Arc<Mutex<Vec<(i32, Instant)>>>,
    answer: fn(usize) -> Result<Output<Value>, HandlerError>,
) -> impl jobs_worker::Handler {
    let runs = runs.clone();
    move |_args: Value, ctx: JobContext| {
        let runs = runs.clone();
        async move {
            let run = {
                let mut runs = runs.lock().unwrap();
                runs.push((ctx.attempt(), Instant::now()));
                runs.len()
            };
            answer(run)
        }
    }
}

async fn a_snoozed_job_runs_again_after_the_delay_without_charging_an_attempt(db: TestDb) {
    let s = &db.store;
    let runs = Arc::default();
    let handler = recording(&runs, |run| match run {
        1 => Err(HandlerError::snooze(Duration::from_millis(400))),
        _ => Ok(json!("woke").into()),
    });
    let worker = fast(s).handler("nap", handler).build().unwrap().spawn();
    let id = add(s, NewJob::new("nap", json!({})).max_attempts(1)).await;
    let job = ended(s, id).await;
    worker.shutdown().await.unwrap();
    // With one attempt allowed, a charged snooze would have left none for the second run.
    assert_eq!((job.state, job.attempt), (State::Completed, 1));
    assert!(
        job.errors.is_empty(),
        "a snooze is not an error: {:?}",
        job.errors
    );
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.iter().map(|(a, _)| *a).collect::<Vec<_>>(), [1, 1]);
    let gap = runs[1].1 - runs[0].1;
    assert!(gap >= Duration::from_millis(390), "ran again after {gap:?}");
}

async fn a_handler_can_cancel_its_own_job(db: TestDb) {
    let s = &db.store;
    let runs = Arc::default();
    let handler = recording(&runs, |_| {
        Err(HandlerError::cancel("the order was withdrawn"))
    });
    let worker = fast(s).handler("order", handler).build().unwrap().spawn();
    let id = add(s, NewJob::new("order", json!({})).max_attempts(3)).await;
    let job = ended(s, id).await;
    worker.shutdown().await.unwrap();
    assert_eq!(job.state, State::Cancelled);
    assert_eq!(
        runs.lock().unwrap().len(),
        1,
        "a cancelled job is not retried"
    );
}

#[derive(Serialize, Deserialize)]
struct Flaky;

impl JobArgs for Flaky {
    const KIND: &'static str = "flaky_kind";
    fn options() -> jobs_core::JobOptions {
        let backoff = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            jitter: 0.0,
        };
        jobs_core::JobOptions::new()
            .max_attempts(2)
            .backoff(backoff)
    }
}

static FLAKY_RUNS: Mutex<Vec<(JobId, Instant)>> = Mutex::new(Vec::new());

#[async_trait]
impl TypedJob for Flaky {
    type Output = ();

    async fn run(self, ctx: &JobContext) -> Result<Output<()>, HandlerError> {
        FLAKY_RUNS.lock().unwrap().push((ctx.id(), Instant::now()));
        Err(HandlerError::retryable("flaky", "upstream said no"))
    }
}

async fn a_kinds_backoff_policy_sets_the_retry_delay(db: TestDb) {
    // The store's own policy waits about a second: far longer than the kind's 100 ms.
    let s = &db.store;
    let worker = fast(s)
        .register::<Flaky>()
        .config(|c| c.poll_interval = Duration::from_millis(20))
        .build()
        .unwrap()
        .spawn();
    let id = add(s, Flaky.to_job().unwrap()).await;
    let job = ended(s, id).await;
    worker.shutdown().await.unwrap();
    assert_eq!((job.state, job.errors.len()), (State::Failed, 2));
    let runs: Vec<Instant> = FLAKY_RUNS
        .lock()
        .unwrap()
        .iter()
        .filter(|(job, _)| *job == id)
        .map(|(_, at)| *at)
        .collect();
    let gap = runs[1] - runs[0];
    assert!(
        gap >= Duration::from_millis(95) && gap < Duration::from_millis(700),
        "retried after {gap:?}"
    );
}

async fn a_kind_registered_twice_is_refused_at_build(db: TestDb) {
    let echo = |args: Value, _ctx: JobContext| async move { Ok(args.into()) };
    let refused = fast(&db.store)
        .register::<Record>()
        .handler("echo", echo)
        .handler("record", echo)
        .build()
        .unwrap_err();
    let jobs_core::JobError::Invalid(fields) = refused else {
        panic!("not Invalid: {refused:?}");
    };
    let fields: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(fields, ["handlers.record"]);
}

/// `{"next": N, "fail": bool}`: asks for N follow-ups of kind `leaf`, then completes, or
/// fails for good after asking.
async fn spawner(args: Value, ctx: JobContext) -> Result<Output<Value>, HandlerError> {
    let n = args["next"].as_u64().unwrap_or(0);
    for i in 0..n {
        let job =
            NewJob::new("leaf", json!({"i": i})).metadata(json!({"from": ctx.id().to_string()}));
        ctx.follow_up(job)
            .map_err(|e| HandlerError::permanent("bad_follow_up", e.to_string()))?;
    }
    if args["fail"].as_bool().unwrap_or(false) {
        return Err(HandlerError::permanent(
            "asked",
            "failing after asking for follow-ups",
        ));
    }
    Ok(json!("spawned").into())
}

async fn follow_ups_are_enqueued_with_a_completion_and_dropped_with_a_failure(db: TestDb) {
    let s = &db.store;
    let leaf = |args: Value, _ctx: JobContext| async move { Ok(args.into()) };
    let worker = fast(s)
        .handler("spawner", spawner)
        .handler("leaf", leaf)
        .build()
        .unwrap()
        .spawn();
    let kept = add(s, NewJob::new("spawner", json!({"next": 3}))).await;
    let dropped = add(s, NewJob::new("spawner", json!({"next": 2, "fail": true}))).await;
    assert_eq!(ended(s, kept).await.state, State::Completed);
    assert_eq!(ended(s, dropped).await.state, State::Failed);
    let from = |id: JobId| json!({"from": id.to_string()});
    let give_up = Instant::now() + Duration::from_secs(20);
    let leaves = loop {
        let page = s
            .list(
                &jobs_core::ListFilter::new().kind("leaf"),
                &jobs_core::PageRequest::first(100),
            )
            .await
            .unwrap();
        if page.items.iter().all(|j| j.state == State::Completed) || Instant::now() > give_up {
            break page.items;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    worker.shutdown().await.unwrap();
    assert_eq!(leaves.len(), 3, "only the completion's follow-ups exist");
    assert!(
        leaves
            .iter()
            .all(|j| j.metadata == from(kept) && j.state == State::Completed)
    );
}
