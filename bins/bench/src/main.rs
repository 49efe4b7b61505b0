//! `jobs-bench`: how fast jobs go in, get through, start, how fast jobs that wait for
//! others are released, and how the API and the table hold up, against `DATABASE_URL`
//! (PostgreSQL or SQLite). Every scenario prints a small
//! table and one JSON line (`{"scenario": ...}`) for scripts such as bench-compare.
//!
//! The database's `jobs` table is emptied before each scenario.

#![allow(clippy::print_stdout)]

mod chart;
mod child;
mod estimates;
mod http;
mod report;
mod scenarios;
mod setup;
mod soak;
mod workflows;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://jobs-bench.db?mode=rwc"
    )]
    database_url: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Bulk enqueue through the library and through `POST /v1/jobs/batch`.
    Enqueue(EnqueueArgs),
    /// N no-op jobs pending, one worker process drains them.
    Drain(DrainArgs),
    /// Enqueue -> handler start into an idle worker, one job at a time.
    Latency(LatencyArgs),
    /// Concurrent clients creating, then reading, jobs over HTTP.
    Http(HttpArgs),
    /// Claim and GET latency on a small and on a large table (and with waiting jobs).
    Scale(ScaleArgs),
    /// N jobs, each waiting for the one before, run by one worker process.
    Chain(ChainArgs),
    /// One root job, N children waiting for it, one join waiting for all N.
    Fanout(FanoutArgs),
    /// Positions and estimates of jobs at several depths of a long queue.
    Position(estimates::PositionArgs),
    /// One large result: completing and reading it, and the bytes stored.
    Results(estimates::ResultsArgs),
    /// Jobs in and out at a fixed rate for a set time: sizes, dead rows and latencies
    /// every interval, to show bloat.
    Soak(SoakArgs),
    /// Enqueue, drain, latency, http and scale, one after another (the smoke test's
    /// list; the workflow scenarios run on their own).
    All(AllArgs),
    /// A worker process with a no-op handler (started by `drain`).
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// An api process (started by `enqueue` and `http`); prints its address.
    #[command(hide = true)]
    Api,
}

#[derive(Debug, Clone, Args)]
pub struct EnqueueArgs {
    /// Jobs enqueued (each way).
    #[arg(long, short, default_value_t = 100_000)]
    pub n: usize,
    /// Jobs per call.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
}

#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    #[arg(long, short, default_value_t = 100_000)]
    pub n: usize,
    /// Handlers running at once in the worker; several values run one after another.
    #[arg(long, short, value_delimiter = ',', default_value = "10")]
    pub concurrency: Vec<usize>,
    /// Jobs claimed ahead of free handler slots.
    #[arg(long, default_value_t = 0)]
    pub prefetch: usize,
    /// A global concurrency limit on the queue (0: none); several values run one after
    /// another, so limited and unlimited drains compare in one run.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub limit: Vec<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct LatencyArgs {
    #[arg(long, default_value_t = 1_000)]
    pub samples: usize,
}

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    #[arg(long, short = 'k', default_value_t = 64)]
    pub clients: usize,
    /// Seconds of creating, then as many of reading.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
}

#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Rows in the large table (a tenth of them pending).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Rows in the small table it is compared with (a tenth of them pending).
    #[arg(long, default_value_t = 10_000)]
    pub small_rows: usize,
    /// Claims and GETs timed on each table.
    #[arg(long, default_value_t = 500)]
    pub samples: usize,
    /// Jobs waiting for a parent that never runs, added to the small table for a third
    /// measurement, so that claims with and without them compare in one run (0: none).
    #[arg(long, default_value_t = 0)]
    pub waiting: usize,
}

#[derive(Debug, Clone, Args)]
pub struct ChainArgs {
    /// Jobs in the chain.
    #[arg(long, short, default_value_t = 10_000)]
    pub n: usize,
    /// Jobs per enqueue call; each call's first job waits for the previous call's last.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    #[command(flatten)]
    pub worker: WorkerOpts,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Children of the root, all of them parents of the join (at most 10,000).
    #[arg(long, short, default_value_t = 10_000)]
    pub n: usize,
    #[command(flatten)]
    pub worker: WorkerOpts,
}

/// The worker process that runs a workflow scenario's jobs.
#[derive(Debug, Clone, Args)]
pub struct WorkerOpts {
    /// Handlers running at once in the worker; several values run one after another.
    #[arg(long, short, value_delimiter = ',', default_value = "10")]
    pub concurrency: Vec<usize>,
    /// Jobs claimed ahead of free handler slots.
    #[arg(long, default_value_t = 0)]
    pub prefetch: usize,
}

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Jobs enqueued (and so to be run) per second.
    #[arg(long, default_value_t = 5_000.0)]
    pub rate: f64,
    /// How long the run lasts (fractions too: 0.1 is six seconds).
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Handlers running at once in the worker.
    #[arg(long, short, default_value_t = 10)]
    pub concurrency: usize,
    /// Jobs claimed ahead of free handler slots.
    #[arg(long, default_value_t = 200)]
    pub prefetch: usize,
    /// How long each job is kept after it ends, so retention deletes jobs during the run.
    #[arg(long, default_value_t = 60)]
    pub retention_secs: u64,
    /// How often the worker's retention cleaner runs (the worker's default is 5).
    #[arg(long, default_value_t = 5)]
    pub retention_interval_secs: u64,
    /// Seconds per row of figures.
    #[arg(long, default_value_t = 60.0)]
    pub report_secs: f64,
    /// Where to write an SVG chart of the rows (sizes, dead rows, p99 latencies).
    #[arg(long)]
    pub chart: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct AllArgs {
    #[command(flatten)]
    pub enqueue: EnqueueArgs,
    #[arg(long, short, value_delimiter = ',', default_value = "10")]
    pub concurrency: Vec<usize>,
    #[arg(long, default_value_t = 0)]
    pub prefetch: usize,
    #[command(flatten)]
    pub latency: LatencyArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[arg(long, default_value_t = 1_000_000)]
    pub scale_rows: usize,
    #[arg(long, default_value_t = 10_000)]
    pub small_rows: usize,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 0)]
    pub prefetch: usize,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    tokio::runtime::Runtime::new()?.block_on(run(&cli.database_url, cli.scenario))
}

async fn run(url: &str, scenario: Scenario) -> anyhow::Result<()> {
    match scenario {
        Scenario::Enqueue(args) => scenarios::enqueue(url, &args).await,
        Scenario::Drain(args) => scenarios::drain(url, &args).await,
        Scenario::Latency(args) => scenarios::latency(url, &args).await,
        Scenario::Http(args) => http::run(url, &args).await,
        Scenario::Scale(args) => scenarios::scale(url, &args).await,
        Scenario::Position(args) => estimates::position(url, &args).await,
        Scenario::Results(args) => estimates::results(url, &args).await,
        Scenario::Chain(args) => workflows::chain(url, &args).await,
        Scenario::Fanout(args) => workflows::fanout(url, &args).await,
        Scenario::Soak(args) => soak::run(url, &args).await,
        Scenario::All(args) => {
            let n = args.enqueue.n;
            scenarios::enqueue(url, &args.enqueue).await?;
            let drain = DrainArgs {
                n,
                concurrency: args.concurrency.clone(),
                prefetch: args.prefetch,
                limit: vec![0],
            };
            scenarios::drain(url, &drain).await?;
            scenarios::latency(url, &args.latency).await?;
            http::run(url, &args.http).await?;
            let scale = ScaleArgs {
                rows: args.scale_rows,
                small_rows: args.small_rows,
                samples: args.latency.samples.min(500),
                waiting: 0,
            };
            scenarios::scale(url, &scale).await
        }
        Scenario::Worker(args) => child::run_worker(url, &args).await,
        Scenario::Api => child::run_api(url).await,
    }
}
