//! The scenarios that talk to the store directly (HTTP ones are in `http`).

use std::time::Duration;

use jobs_core::{ClaimRequest, Finish, JobStore, Lease, QueueControl, State};
use jobs_worker::{JobContext, Worker};
use serde_json::{Value, json};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    DrainArgs, EnqueueArgs, LatencyArgs, ScaleArgs,
    child::Process,
    http,
    report::{Report, percentile, progress, spinner},
    setup::{self, KIND, QUEUE},
};

/// Library batches, then HTTP batches into an api process: answered with every job,
/// then with their ids alone (`Prefer: return=minimal`).
pub async fn enqueue(url: &str, args: &EnqueueArgs) -> anyhow::Result<()> {
    let store = setup::fresh(url).await?;
    let started = Instant::now();
    setup::fill(&store, args.n, args.batch).await?;
    let library = started.elapsed();

    let (api, base) = Process::api(url)?;
    setup::fresh(url).await?;
    let over_http = http::enqueue_batches(&base, args.n, args.batch, false).await?;
    setup::fresh(url).await?;
    let ids_only = http::enqueue_batches(&base, args.n, args.batch, true).await?;
    api.stop()?;

    let mut report = Report::new("enqueue", setup::backend(&store), "enqueue");
    report
        .param("n", json!(args.n))
        .param("batch", json!(args.batch))
        .rate("library_jobs_per_s", args.n, library)
        .rate("http_jobs_per_s", args.n, over_http)
        .rate("http_minimal_jobs_per_s", args.n, ids_only)
        .print();
    Ok(())
}

/// For each concurrency: N jobs pending, then one worker process started; timed until
/// the table holds no unfinished job.
pub async fn drain(url: &str, args: &DrainArgs) -> anyhow::Result<()> {
    for &concurrency in &args.concurrency {
        for &limit in &args.limit {
            drain_once(url, args, concurrency, limit).await?;
        }
    }
    Ok(())
}

/// One drain; with a `limit`, under that global concurrency limit on the queue.
async fn drain_once(
    url: &str,
    args: &DrainArgs,
    concurrency: usize,
    limit: u32,
) -> anyhow::Result<()> {
    {
        let store = setup::fresh(url).await?;
        setup::fill(&store, args.n, 1_000).await?;
        if limit > 0 {
            let limits = jobs_core::QueueLimits {
                concurrency: Some(limit),
                ..Default::default()
            };
            store
                .set_queue_limits(jobs_core::QueueScope::AllTenants, QUEUE, &limits)
                .await?;
        }
        if store.is_postgres() {
            setup::analyze(&store).await?;
        }
        let bar = spinner("drain");
        let started = Instant::now();
        let worker = Process::worker(url, concurrency, args.prefetch)?;
        while setup::unfinished(&store).await? {
            tokio::time::sleep(Duration::from_millis(20)).await;
            bar.tick();
        }
        let took = started.elapsed();
        bar.finish_and_clear();
        let cpu = worker.cpu_time()?;
        anyhow::ensure!(worker.stop()?, "the worker did not exit cleanly");
        let completed = count(&store, State::Completed).await?;
        anyhow::ensure!(
            completed == args.n,
            "{completed} of {} jobs completed",
            args.n
        );

        let mut report = Report::new("drain", setup::backend(&store), "drain");
        report
            .param("n", json!(args.n))
            .param("concurrency", json!(concurrency))
            .param("prefetch", json!(args.prefetch))
            .param("limit", json!(limit))
            .rate("jobs_per_s", args.n, took)
            .add(
                "worker_cpu_s",
                json!((cpu.as_secs_f64() * 100.0).round() / 100.0),
                format!("{:.2} s", cpu.as_secs_f64()),
            )
            .print();
    }
    Ok(())
}

/// Jobs of the bench queue in `state`.
pub async fn count(store: &jobs_store::SeaOrmStore, state: State) -> anyhow::Result<usize> {
    let stats = store.queue_stats(None).await?;
    Ok(stats
        .iter()
        .filter(|q| q.queue == QUEUE)
        .filter_map(|q| q.counts.get(&state))
        .map(|&n| n as usize)
        .sum())
}

/// One job at a time into an idle worker running in this process; on PostgreSQL the jobs
/// go in through their own connection pool, as from an api process, so the worker hears
/// of each through LISTEN/NOTIFY.
pub async fn latency(url: &str, args: &LatencyArgs) -> anyhow::Result<()> {
    let worker_store = setup::fresh(url).await?;
    let producer = if worker_store.is_postgres() {
        setup::connect(url).await?
    } else {
        worker_store.clone()
    };
    let (started, mut starts) = mpsc::unbounded_channel::<Instant>();
    let handler = move |_args: Value, _ctx: JobContext| {
        let started = started.clone();
        async move {
            let _ = started.send(Instant::now());
            Ok(Value::Null.into())
        }
    };
    let worker = Worker::builder(worker_store.clone())
        .handler(KIND, handler)
        .queue(QUEUE, 10)
        .config(|c| c.poll_interval = Duration::from_secs(5))
        .build()?
        .spawn();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let warmup = 20;
    let bar = progress(args.samples, "latency");
    // The whole start, and its two parts: the enqueue until it returned (committed),
    // and from there until the handler started (wake-up, claim, dispatch).
    let (mut samples, mut enqueues, mut after) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..warmup + args.samples {
        // Idle again: the previous job's outcome is written.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let sent = Instant::now();
        producer.enqueue(setup::job()).await?;
        let committed = Instant::now();
        let began = starts.recv().await.expect("the handler reports");
        if i >= warmup {
            samples.push(began - sent);
            enqueues.push(committed - sent);
            after.push(began.saturating_duration_since(committed));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    worker.shutdown().await?;

    let mut report = Report::new("latency", setup::backend(&worker_store), "start latency");
    report
        .param("samples", json!(samples.len()))
        .latencies("start", &mut samples)
        .latencies("enqueue", &mut enqueues)
        .latencies("after_commit", &mut after)
        .print();
    Ok(())
}

/// Claim and GET latency with `small_rows` in the table, then with `rows`; a tenth
/// pending, the rest completed, as in a queue that keeps its history. With `waiting`,
/// once more on the small table with that many waiting jobs added: the claim index holds
/// only pending rows, so they should cost claims nothing.
pub async fn scale(url: &str, args: &ScaleArgs) -> anyhow::Result<()> {
    let small = table_latencies(url, args.small_rows, 0, args.samples).await?;
    let large = table_latencies(url, args.rows, 0, args.samples).await?;
    let store = setup::connect(url).await?;
    let mut report = Report::new("scale", setup::backend(&store), "scale");
    report
        .param("small_rows", json!(args.small_rows))
        .param("rows", json!(args.rows))
        .param("samples", json!(args.samples))
        .ms("claim_small_p50_ms", small.claim)
        .ms("claim_large_p50_ms", large.claim)
        .ms("get_small_p50_ms", small.get)
        .ms("get_large_p50_ms", large.get);
    ratio(&mut report, "claim_ratio", large.claim, small.claim);
    ratio(&mut report, "get_ratio", large.get, small.get);
    if args.waiting > 0 {
        let waiting = table_latencies(url, args.small_rows, args.waiting, args.samples).await?;
        report
            .param("waiting", json!(args.waiting))
            .rate("waiting_enqueue_per_s", args.waiting, waiting.enqueue)
            .ms("claim_waiting_p50_ms", waiting.claim)
            .ms("get_waiting_p50_ms", waiting.get);
        ratio(
            &mut report,
            "claim_waiting_ratio",
            waiting.claim,
            small.claim,
        );
        ratio(&mut report, "get_waiting_ratio", waiting.get, small.get);
    }
    report.print();
    Ok(())
}

/// `a / b`, shown as `2.51x`.
fn ratio(report: &mut Report, key: &str, a: Duration, b: Duration) {
    let r = (a.as_secs_f64() / b.as_secs_f64() * 100.0).round() / 100.0;
    report.add(key, json!(r), format!("{r:.2}x"));
}

#[derive(Debug)]
struct TableLatencies {
    claim: Duration,
    get: Duration,
    /// How long adding the waiting jobs took.
    enqueue: Duration,
}

async fn table_latencies(
    url: &str,
    rows: usize,
    waiting: usize,
    samples: usize,
) -> anyhow::Result<TableLatencies> {
    let store = setup::fresh(url).await?;
    let mut ids = setup::fill(&store, rows, 5_000).await?;
    end_all_but(&store, rows / 10).await?;
    let started = Instant::now();
    ids.extend(setup::fill_waiting(&store, waiting).await?);
    let enqueue = started.elapsed();
    if store.is_postgres() {
        setup::vacuum(&store).await?;
    }

    let mut gets = Vec::with_capacity(samples);
    for _ in 0..samples {
        let id = ids[fastrand::usize(..ids.len())];
        let started = Instant::now();
        store.get(None, id).await?;
        gets.push(started.elapsed());
    }
    let request = ClaimRequest {
        worker_id: "bench".into(),
        queues: vec![QUEUE.into()],
        kinds: Some(vec![KIND.into()]),
        tenant: None,
        limit: 10,
        lease: Duration::from_secs(60),
    };
    let mut claims = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let jobs = store.claim(&request).await?;
        // An empty claim times an empty queue, not a claim: the small table's pending
        // tenth runs out before the samples do.
        if jobs.is_empty() {
            break;
        }
        claims.push(started.elapsed());
        let done = jobs
            .iter()
            .filter_map(Lease::of)
            .map(|lease| Finish::completed(lease, Value::Null))
            .collect();
        store.finish_many(done).await?;
    }
    gets.sort_unstable();
    claims.sort_unstable();
    // The claims took only pending jobs: every waiting one is still there.
    let still_waiting = count(&store, State::Waiting).await?;
    anyhow::ensure!(
        still_waiting == waiting,
        "{still_waiting} of {waiting} jobs still waiting"
    );
    Ok(TableLatencies {
        claim: percentile(&claims, 0.5),
        get: percentile(&gets, 0.5),
        enqueue,
    })
}

/// Ends all pending jobs except `keep`, as completed long ago.
async fn end_all_but(store: &jobs_store::SeaOrmStore, keep: usize) -> anyhow::Result<()> {
    use sea_orm::ConnectionTrait;
    let sql = format!(
        "UPDATE jobs SET state = 'completed', attempt = 1, started_at = created_at, \
           finished_at = created_at, updated_at = created_at \
         WHERE id IN (SELECT id FROM jobs ORDER BY id LIMIT (SELECT count(*) - {keep} FROM jobs))"
    );
    store.connection().execute_unprepared(&sql).await?;
    Ok(())
}
