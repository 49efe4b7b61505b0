//! `soak`: jobs in and out at a fixed rate for a set time, with a row of figures every
//! interval (table and index size, live and dead row versions, claim and start
//! latencies, rates, backlog), so that bloat and the slow-down it brings show over time.
//!
//! What is measured, and how:
//! - **Enqueue-to-start**: each job carries the wall-clock time it was enqueued (`t`,
//!   microseconds); the handler compares it with its own start. The worker runs in this
//!   process (as in `latency`) so that both times come from one clock and the handler
//!   can hand its figure to the report; the jobs go in through their own connection
//!   pool on PostgreSQL, so the worker hears of them through LISTEN/NOTIFY as it would
//!   from an api process. It is the real runtime with maintenance on (this process leads
//!   it), and every job is kept `--retention-secs` after it ends, so the retention
//!   cleaner deletes ended jobs during the run as it would in production.
//! - **Claim latency**: the runtime does not time its claims, and a wrapper around a
//!   store with as many methods as `WorkerBackend` would be a second implementation to
//!   keep in step. So a probe here runs the same `claim` statement on the same queue,
//!   10 jobs every 50 ms (a few percent of the jobs), and times each call, empty ones
//!   included: an empty claim is what a caught-up worker mostly runs, and it is the one
//!   that walks dead index entries when the table bloats.
//! - **Sizes and row versions**: `pg_table_size`, `pg_indexes_size` and
//!   `pg_stat_user_tables` for `jobs` (the statistics lag by up to a second); null on
//!   SQLite, which keeps no such statistics per table.
//!
//! Jobs are enqueued with `enqueue_many` every 10 ms, as many as are due by then, so the
//! rate holds without bursts; when the database falls behind, the achieved rate says so.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jobs_core::{ClaimRequest, Finish, JobStore, Lease};
use jobs_store::SeaOrmStore;
use jobs_worker::{JobContext, Worker};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    SoakArgs, chart,
    report::{Report, percentile},
    setup::{self, KIND, QUEUE},
};

/// The first and the last this long of a run are compared (a fifth of shorter runs).
const COMPARED_WINDOW: Duration = Duration::from_secs(300);
/// Size growth after retention applies that still counts as flat (the table reuses the
/// space of deleted rows, but pages fill unevenly between vacuums).
const FLAT_GROWTH: f64 = 0.10;
/// Enqueue ticks: small batches often, so the rate holds without bursts.
const ENQUEUE_TICK: Duration = Duration::from_millis(10);
/// At most this many jobs per enqueue call when catching up after a slow call.
const MAX_BATCH: u64 = 5_000;
const PROBE_TICK: Duration = Duration::from_millis(50);
const PROBE_LIMIT: u32 = 10;

pub async fn run(url: &str, args: &SoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(args.minutes > 0.0, "--minutes must be positive");
    anyhow::ensure!(args.report_secs > 0.0, "--report-secs must be positive");
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let every = Duration::from_secs_f64(args.report_secs);

    let worker_store = setup::fresh(url).await?;
    let producer = if worker_store.is_postgres() {
        setup::connect(url).await?
    } else {
        worker_store.clone()
    };
    let started = Instant::now();
    let recorder = Arc::new(Recorder::new(started, total));
    let worker = Worker::builder(worker_store.clone())
        .handler(KIND, handler(recorder.clone()))
        .queue(QUEUE, args.concurrency)
        .config(|c| {
            c.prefetch = args.prefetch;
            c.maintenance = true;
            c.retention_interval = Duration::from_secs(args.retention_interval_secs.max(1));
        })
        .build()?
        .spawn();

    let stop = CancellationToken::new();
    let retention = Duration::from_secs(args.retention_secs);
    let enqueuer = tokio::spawn(enqueue_at_rate(
        producer.clone(),
        args.rate,
        retention,
        recorder.clone(),
        stop.clone(),
    ));
    let probe = tokio::spawn(probe_claims(
        producer.clone(),
        recorder.clone(),
        stop.clone(),
    ));

    let rows = report_intervals(&producer, &recorder, started, total, every).await;
    stop.cancel();
    enqueuer.await??;
    probe.await??;
    worker.shutdown().await?;
    let rows = rows?;

    if let Some(path) = &args.chart {
        std::fs::write(path, chart::soak(&rows))?;
        eprintln!("chart written to {}", path.display());
    }
    summarise(&worker_store, args, &recorder, &rows);
    Ok(())
}

/// The no-op handler, recording how long after its enqueue each job started.
fn handler(recorder: Arc<Recorder>) -> impl jobs_worker::Handler {
    move |args: Value, _ctx: JobContext| {
        if let Some(enqueued) = args["t"].as_u64() {
            recorder.started(micros_now().saturating_sub(enqueued));
        }
        async { Ok(Value::Null.into()) }
    }
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// As many jobs as are due at `rate` every tick, until `stop`.
async fn enqueue_at_rate(
    store: SeaOrmStore,
    rate: f64,
    retention: Duration,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(ENQUEUE_TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = Instant::now();
    let mut sent = 0u64;
    while stop.run_until_cancelled(ticks.tick()).await.is_some() {
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        let count = due.saturating_sub(sent).min(MAX_BATCH);
        if count == 0 {
            continue;
        }
        let t = micros_now();
        let jobs = (0..count)
            .map(|_| setup::job_with(json!({ "t": t })).retention(retention))
            .collect();
        store.enqueue_many(jobs).await?;
        sent += count;
        recorder.enqueued.fetch_add(count, Ordering::Relaxed);
    }
    Ok(())
}

/// Timed claims of a few jobs at a time, completed at once, until `stop`.
async fn probe_claims(
    store: SeaOrmStore,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let request = ClaimRequest {
        worker_id: "soak-probe".into(),
        queues: vec![QUEUE.into()],
        kinds: Some(vec![KIND.into()]),
        tenant: None,
        limit: PROBE_LIMIT,
        lease: Duration::from_secs(60),
    };
    let mut ticks = tokio::time::interval(PROBE_TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while stop.run_until_cancelled(ticks.tick()).await.is_some() {
        let began = Instant::now();
        let jobs = store.claim(&request).await?;
        recorder.claimed(began.elapsed(), jobs.len() as u64);
        let done: Vec<Finish> = jobs
            .iter()
            .filter_map(Lease::of)
            .map(|lease| Finish::completed(lease, Value::Null))
            .collect();
        if !done.is_empty() {
            store.finish_many(done).await?;
        }
    }
    Ok(())
}

/// Latency samples of one stretch of the run.
#[derive(Debug, Default)]
struct Samples {
    starts: Vec<Duration>,
    claims: Vec<Duration>,
}

impl Samples {
    fn p(samples: &mut [Duration], p: f64) -> Option<f64> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        Some(ms(percentile(samples, p)))
    }
}

/// Where the handler and the probe put their figures: the current interval's, and the
/// first and last windows compared at the end.
#[derive(Debug)]
struct Recorder {
    started: Instant,
    /// The first window ends here, the last begins here (from `started`).
    first_until: Duration,
    last_from: Duration,
    interval: Mutex<Samples>,
    first: Mutex<Samples>,
    last: Mutex<Samples>,
    enqueued: AtomicU64,
    /// Jobs started by the worker or claimed by the probe.
    out: AtomicU64,
}

impl Recorder {
    fn new(started: Instant, total: Duration) -> Self {
        let window = COMPARED_WINDOW.min(total / 5);
        Self {
            started,
            first_until: window,
            last_from: total.saturating_sub(window),
            interval: Mutex::default(),
            first: Mutex::default(),
            last: Mutex::default(),
            enqueued: AtomicU64::new(0),
            out: AtomicU64::new(0),
        }
    }

    fn started(&self, waited_micros: u64) {
        self.out.fetch_add(1, Ordering::Relaxed);
        self.record(|s| s.starts.push(Duration::from_micros(waited_micros)));
    }

    fn claimed(&self, took: Duration, jobs: u64) {
        self.out.fetch_add(jobs, Ordering::Relaxed);
        self.record(|s| s.claims.push(took));
    }

    fn record(&self, add: impl Fn(&mut Samples)) {
        add(&mut self.interval.lock().expect("samples lock"));
        let at = self.started.elapsed();
        if at < self.first_until {
            add(&mut self.first.lock().expect("samples lock"));
        }
        if at >= self.last_from {
            add(&mut self.last.lock().expect("samples lock"));
        }
    }

    fn take_interval(&self) -> Samples {
        std::mem::take(&mut self.interval.lock().expect("samples lock"))
    }
}

/// One row of the report: the interval that ended at `minute`.
#[derive(Debug, Clone, Default)]
pub struct Interval {
    pub minute: f64,
    pub table_mb: Option<f64>,
    pub index_mb: Option<f64>,
    pub live_tuples: Option<i64>,
    pub dead_tuples: Option<i64>,
    pub claim_p50_ms: Option<f64>,
    pub claim_p99_ms: Option<f64>,
    pub start_p50_ms: Option<f64>,
    pub start_p99_ms: Option<f64>,
    pub in_per_s: f64,
    pub out_per_s: f64,
    pub backlog: i64,
}

impl Interval {
    pub fn size_mb(&self) -> Option<f64> {
        Some(self.table_mb? + self.index_mb?)
    }

    fn json(&self) -> Value {
        json!({
            "minute": round(self.minute),
            "table_mb": self.table_mb.map(round),
            "index_mb": self.index_mb.map(round),
            "live_tuples": self.live_tuples,
            "dead_tuples": self.dead_tuples,
            "claim_p50_ms": self.claim_p50_ms,
            "claim_p99_ms": self.claim_p99_ms,
            "start_p50_ms": self.start_p50_ms,
            "start_p99_ms": self.start_p99_ms,
            "in_per_s": self.in_per_s.round(),
            "out_per_s": self.out_per_s.round(),
            "backlog": self.backlog,
        })
    }

    fn print(&self) {
        let shown = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
        let count = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
        println!(
            "{:>7.2} {:>9} {:>9} {:>10} {:>10} {:>8}/{:<8} {:>8}/{:<8} {:>7.0} {:>7.0} {:>8}",
            self.minute,
            shown(self.table_mb),
            shown(self.index_mb),
            count(self.live_tuples),
            count(self.dead_tuples),
            shown(self.claim_p50_ms),
            shown(self.claim_p99_ms),
            shown(self.start_p50_ms),
            shown(self.start_p99_ms),
            self.in_per_s,
            self.out_per_s,
            self.backlog,
        );
    }
}

fn print_header() {
    println!(
        "\n{:>7} {:>9} {:>9} {:>10} {:>10} {:>17} {:>17} {:>7} {:>7} {:>8}",
        "minute",
        "table MB",
        "index MB",
        "live",
        "dead",
        "claim p50/p99 ms",
        "start p50/p99 ms",
        "in/s",
        "out/s",
        "backlog"
    );
}

/// A row every `every` until `total` has passed (a shorter last one if it does not
/// divide), printed as it comes.
async fn report_intervals(
    store: &SeaOrmStore,
    recorder: &Recorder,
    started: Instant,
    total: Duration,
    every: Duration,
) -> anyhow::Result<Vec<Interval>> {
    print_header();
    let mut rows = Vec::new();
    let (mut from, mut counted) = (started, (0, 0));
    loop {
        let until = (from + every).min(started + total);
        tokio::time::sleep_until(until).await;
        let took = from.elapsed().as_secs_f64();
        let now = (
            recorder.enqueued.load(Ordering::Relaxed),
            recorder.out.load(Ordering::Relaxed),
        );
        let mut samples = recorder.take_interval();
        let mut row = table_figures(store).await?;
        row.minute = started.elapsed().as_secs_f64() / 60.0;
        row.claim_p50_ms = Samples::p(&mut samples.claims, 0.50);
        row.claim_p99_ms = Samples::p(&mut samples.claims, 0.99);
        row.start_p50_ms = Samples::p(&mut samples.starts, 0.50);
        row.start_p99_ms = Samples::p(&mut samples.starts, 0.99);
        row.in_per_s = (now.0 - counted.0) as f64 / took;
        row.out_per_s = (now.1 - counted.1) as f64 / took;
        row.print();
        rows.push(row);
        (from, counted) = (Instant::now(), now);
        if until >= started + total {
            return Ok(rows);
        }
    }
}

/// Sizes, row versions (PostgreSQL only) and the backlog of pending bench jobs.
async fn table_figures(store: &SeaOrmStore) -> anyhow::Result<Interval> {
    let backlog =
        format!("SELECT count(*) AS n FROM jobs WHERE queue = '{QUEUE}' AND state = 'pending'");
    let mut row = Interval {
        backlog: query_i64(store, &backlog, "n").await?,
        ..Interval::default()
    };
    if store.is_postgres() {
        let sql = "SELECT pg_table_size('jobs') AS table_bytes, \
                     pg_indexes_size('jobs') AS index_bytes, \
                     n_live_tup AS live, n_dead_tup AS dead \
                   FROM pg_stat_user_tables WHERE relid = 'jobs'::regclass";
        let stats = query(store, sql).await?;
        let mb = |bytes: i64| bytes as f64 / 1_048_576.0;
        row.table_mb = Some(mb(stats.try_get("", "table_bytes")?));
        row.index_mb = Some(mb(stats.try_get("", "index_bytes")?));
        row.live_tuples = Some(stats.try_get("", "live")?);
        row.dead_tuples = Some(stats.try_get("", "dead")?);
    }
    Ok(row)
}

async fn query(store: &SeaOrmStore, sql: &str) -> anyhow::Result<sea_orm::QueryResult> {
    let db = store.connection();
    let statement = Statement::from_string(db.get_database_backend(), sql);
    db.query_one_raw(statement)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no row from {sql}"))
}

async fn query_i64(store: &SeaOrmStore, sql: &str, column: &str) -> anyhow::Result<i64> {
    Ok(query(store, sql).await?.try_get("", column)?)
}

/// The JSON line: settings, rates, the first and last windows compared, whether the
/// size settled, and every interval.
fn summarise(store: &SeaOrmStore, args: &SoakArgs, recorder: &Recorder, rows: &[Interval]) {
    let took = recorder.started.elapsed();
    let mut report = Report::new("soak", setup::backend(store), "soak");
    report
        .param("rate", json!(args.rate))
        .param("minutes", json!(args.minutes))
        .param("concurrency", json!(args.concurrency))
        .param("prefetch", json!(args.prefetch))
        .param("retention_secs", json!(args.retention_secs))
        .param(
            "retention_interval_secs",
            json!(args.retention_interval_secs),
        )
        .param("report_secs", json!(args.report_secs))
        .rate(
            "in_per_s",
            recorder.enqueued.load(Ordering::Relaxed) as usize,
            took,
        )
        .rate(
            "out_per_s",
            recorder.out.load(Ordering::Relaxed) as usize,
            took,
        );
    let mut first = std::mem::take(&mut *recorder.first.lock().expect("samples lock"));
    let mut last = std::mem::take(&mut *recorder.last.lock().expect("samples lock"));
    compare(
        &mut report,
        "claim_p99",
        &mut first.claims,
        &mut last.claims,
    );
    compare(
        &mut report,
        "start_p99",
        &mut first.starts,
        &mut last.starts,
    );
    settling(&mut report, args, rows);
    let intervals: Vec<Value> = rows.iter().map(Interval::json).collect();
    report.add(
        "intervals",
        json!(intervals),
        format!("{} rows (above)", rows.len()),
    );
    report.print();
}

/// `<key>_first_ms`, `<key>_last_ms` and their ratio (last over first).
fn compare(report: &mut Report, key: &str, first: &mut [Duration], last: &mut [Duration]) {
    let (a, b) = (Samples::p(first, 0.99), Samples::p(last, 0.99));
    let shown = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} ms"));
    report.add(&format!("{key}_first_ms"), json!(a), shown(a));
    report.add(&format!("{key}_last_ms"), json!(b), shown(b));
    let ratio = a
        .zip(b)
        .filter(|(a, _)| *a > 0.0)
        .map(|(a, b)| round(b / a));
    report.add(
        &format!("{key}_ratio"),
        json!(ratio),
        ratio.map_or("-".to_owned(), |r| format!("{r:.2}x")),
    );
}

/// Table plus index size once retention applies (the first ended jobs have expired and
/// two cleaner rounds ran) against the end: null when the run is too short or the
/// backend keeps no sizes.
fn settling(report: &mut Report, args: &SoakArgs, rows: &[Interval]) {
    let cleaner_round = Duration::from_secs(args.retention_interval_secs.max(1));
    let applies = Duration::from_secs(args.retention_secs) + 2 * cleaner_round;
    let settled: Vec<f64> = rows
        .iter()
        .filter(|r| r.minute * 60.0 >= applies.as_secs_f64())
        .filter_map(Interval::size_mb)
        .collect();
    let growth = match (settled.first(), settled.last()) {
        (Some(from), Some(to)) if settled.len() >= 2 && *from > 0.0 => Some((to - from) / from),
        _ => None,
    };
    let mb = |v: Option<&f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} MB"));
    report
        .add(
            "size_mb_once_retained",
            json!(settled.first().copied().map(round)),
            mb(settled.first()),
        )
        .add(
            "size_mb_end",
            json!(settled.last().copied().map(round)),
            mb(settled.last()),
        )
        .add(
            "size_growth_after_retention",
            json!(growth.map(round)),
            growth.map_or("-".to_owned(), |g| format!("{:+.1} %", g * 100.0)),
        )
        .add(
            "size_stopped_growing",
            json!(growth.map(|g| g <= FLAT_GROWTH)),
            growth.map_or("-".to_owned(), |g| (g <= FLAT_GROWTH).to_string()),
        );
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0)
}

/// Kept to three decimals in the JSON line.
fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
