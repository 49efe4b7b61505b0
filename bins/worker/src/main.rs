//! `jobs-worker`: the standalone worker process. Wiring only: configuration, connection,
//! built-in handlers, metrics exporter, signals, and claiming only while the database's
//! schema fits this binary.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::Parser;
use jobs_store::{
    DEFAULT_DATABASE_URL, OutcomeLimits, SCHEMA_RECHECK, SeaOrmStore, migrate_up,
    run_while_schema_fits,
};
use jobs_worker::{Worker, builtins};

#[derive(Debug, Parser)]
#[command(
    name = "jobs-worker",
    version,
    about = "Runs jobs: the built-in handlers http, webhook, sleep, echo, fail"
)]
struct Cli {
    /// PostgreSQL (`postgres://...`) or SQLite (`sqlite://file.db?mode=rwc`) database.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database_url: String,

    /// A queue to work and how many of its jobs run at once: `--queue default=10 --queue media=2`.
    #[arg(long = "queue", env = "JOBS_QUEUES", value_delimiter = ',', default_value = "default=10", value_parser = parse_queue)]
    queues: Vec<(String, usize)>,

    /// Webhook deliveries sent at once (queue `webhooks`, served unless --queue names it
    /// or this is 0).
    #[arg(long, env = "JOBS_WEBHOOKS_CONCURRENCY", default_value_t = 4)]
    webhooks_concurrency: usize,

    /// Jobs of each queue claimed ahead of its free slots, waiting here (leased) for one:
    /// raises the throughput of many short jobs; 0 claims only for free slots.
    #[arg(long, env = "JOBS_PREFETCH", default_value_t = 0)]
    prefetch: usize,

    /// Poll for due jobs this often when no wake-up arrives (milliseconds).
    #[arg(long, env = "JOBS_POLL_INTERVAL_MS", default_value_t = 1_000)]
    poll_interval_ms: u64,

    /// How long a claimed job stays ours without a heartbeat (seconds).
    #[arg(long, env = "JOBS_LEASE_SECS", default_value_t = 30)]
    lease_secs: u64,

    /// After SIGTERM/SIGINT, how long running jobs may finish before they are released (seconds).
    #[arg(long, env = "JOBS_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    shutdown_grace_secs: u64,

    /// After the grace period, how long shutdown waits to write outcomes (the database may
    /// be down) before it logs what is unwritten and exits (seconds).
    #[arg(long, env = "JOBS_FLUSH_TIMEOUT_SECS", default_value_t = 5)]
    flush_timeout_secs: u64,

    /// Seconds between lease rescues and sweeps of pending jobs that cannot run; one
    /// process at a time leads maintenance.
    #[arg(long, env = "JOBS_MAINTENANCE_INTERVAL_SECS", default_value_t = 5)]
    maintenance_interval_secs: u64,

    /// Seconds between deletions of ended jobs past their retention.
    #[arg(long, env = "JOBS_RETENTION_INTERVAL_SECS", default_value_t = 5)]
    retention_interval_secs: u64,

    /// Seconds a maintenance leader's term lasts unless renewed: a frozen leader is
    /// replaced within 4/3 of it.
    #[arg(long, env = "JOBS_LEADER_TTL_SECS", default_value_t = 10)]
    leader_ttl_secs: u64,

    /// Do not run maintenance in this process.
    #[arg(long, env = "JOBS_NO_MAINTENANCE")]
    no_maintenance: bool,

    /// Seconds between the maintenance leader's reads of the job tables' dead row
    /// counts (PostgreSQL); a table past the threshold below is vacuumed.
    #[arg(long, env = "JOBS_VACUUM_INTERVAL_SECS", default_value_t = 15)]
    vacuum_interval_secs: u64,

    /// Dead row versions below which a job table is never vacuumed.
    #[arg(long, env = "JOBS_VACUUM_MIN_DEAD_ROWS", default_value_t = 50_000)]
    vacuum_min_dead_rows: u64,

    /// Nor below this share of its live rows (autovacuum's default scale factor is 0.2).
    #[arg(long, env = "JOBS_VACUUM_DEAD_FRACTION", default_value_t = 0.2)]
    vacuum_dead_fraction: f64,

    /// Leave vacuuming the job tables to autovacuum.
    #[arg(long, env = "JOBS_NO_VACUUM")]
    no_vacuum: bool,

    /// Hosts the `http` handler and webhook deliveries may call (repeat or comma-separate);
    /// none turns `http` off and fails every delivery.
    #[arg(
        long = "http-allow-host",
        env = "JOBS_HTTP_ALLOW_HOSTS",
        value_delimiter = ','
    )]
    http_allow_hosts: Vec<String>,

    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9091.
    #[arg(long, env = "JOBS_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Larger results (with item errors) are refused: the job fails with kind
    /// `result_too_large`. In bytes of JSON.
    #[arg(long, env = "JOBS_MAX_RESULT_BYTES", default_value_t = OutcomeLimits::default().max_bytes)]
    max_result_bytes: usize,

    /// Larger results are stored zstd-compressed. In bytes of JSON.
    #[arg(long, env = "JOBS_COMPRESS_RESULTS_ABOVE", default_value_t = OutcomeLimits::default().compress_above)]
    compress_results_above: usize,

    /// Do not apply pending migrations at start.
    #[arg(long, env = "JOBS_NO_MIGRATE")]
    no_migrate: bool,

    /// Name of this process in job rows; unique per process (default: host-pid-random).
    #[arg(long, env = "JOBS_WORKER_ID")]
    worker_id: Option<String>,

    #[command(flatten)]
    files: jobs_files::FilesArgs,
}

fn parse_queue(text: &str) -> Result<(String, usize), String> {
    let (name, concurrency) = text.split_once('=').unwrap_or((text, "10"));
    let concurrency: usize = concurrency
        .parse()
        .map_err(|_| format!("{text:?}: concurrency must be a number"))?;
    if name.is_empty() || concurrency == 0 {
        return Err(format!(
            "{text:?}: expected NAME=CONCURRENCY with CONCURRENCY >= 1"
        ));
    }
    Ok((name.to_owned(), concurrency))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    // Listen for signals first: a SIGTERM during start-up is a graceful stop, not a kill.
    let shutdown = jobs_worker::signals::cancel_on_signals()?;
    if let Some(addr) = cli.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .context("starting the metrics endpoint")?;
    }
    let store = SeaOrmStore::connect(&cli.database_url)
        .await
        .context("connecting to the database")?
        .with_outcome_limits(OutcomeLimits {
            compress_above: cli.compress_results_above,
            max_bytes: cli.max_result_bytes,
        });
    if !cli.no_migrate {
        migrate_up(store.connection())
            .await
            .context("applying migrations")?;
    }

    let files = cli
        .files
        .storage(&cli.database_url)
        .context("opening the file storage")?;
    tracing::info!(files = files.location(), "file storage");
    let db = store.connection().clone();
    let build = || {
        let mut builder = Worker::builder(store.clone())
            .files(files.clone())
            .config(|c| {
                c.poll_interval = Duration::from_millis(cli.poll_interval_ms);
                c.lease = Duration::from_secs(cli.lease_secs);
                c.prefetch = cli.prefetch;
                c.shutdown_grace = Duration::from_secs(cli.shutdown_grace_secs);
                c.flush_timeout = Duration::from_secs(cli.flush_timeout_secs);
                c.maintenance = !cli.no_maintenance;
                c.maintenance_interval = Duration::from_secs(cli.maintenance_interval_secs);
                c.retention_interval = Duration::from_secs(cli.retention_interval_secs);
                c.leader_ttl = Duration::from_secs(cli.leader_ttl_secs);
                c.vacuum = !cli.no_vacuum;
                c.vacuum_interval = Duration::from_secs(cli.vacuum_interval_secs);
                c.vacuum_min_dead_rows = cli.vacuum_min_dead_rows;
                c.vacuum_dead_fraction = cli.vacuum_dead_fraction;
                if let Some(id) = &cli.worker_id {
                    c.worker_id = id.clone();
                }
            });
        for (queue, concurrency) in &cli.queues {
            builder = builder.queue(queue, *concurrency);
        }
        let builder = builtins::serve_webhooks(builder, cli.webhooks_concurrency);
        builtins::register(builder, cli.http_allow_hosts.clone()).build()
    };
    build().context("invalid worker configuration")?;

    // On a schema that does not fit (older, or newer and incompatible) the worker claims
    // nothing: it logs why and checks again every few seconds; once running it stops
    // (as on SIGTERM) if the schema stops fitting, and waits again.
    run_while_schema_fits(&db, SCHEMA_RECHECK, &shutdown, |stop| {
        let worker = build();
        async move { worker?.run(stop).await }
    })
    .await
    .context("worker failed")?;
    Ok(())
}
