//! `jobs-worker`: the worker process. Today it runs the maintenance a fleet needs
//! (rescue expired leases, delete expired jobs); the handler runtime lands in `jobs-worker`.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use jobs_core::JobStore;
use jobs_store::{DEFAULT_DATABASE_URL, SeaOrmStore};

#[derive(Debug, Parser)]
#[command(
    name = "jobs-worker",
    version,
    about = "The job system's worker process"
)]
struct Cli {
    /// PostgreSQL (`postgres://...`) or SQLite (`sqlite://file.db?mode=rwc`) database.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database_url: String,

    /// Seconds between maintenance sweeps.
    #[arg(long, env = "JOBS_MAINTENANCE_INTERVAL", default_value_t = 5)]
    maintenance_interval: u64,

    /// Rows deleted per retention statement.
    #[arg(long, default_value_t = 1_000)]
    retention_batch: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let store = SeaOrmStore::connect(&cli.database_url)
        .await
        .context("connecting to the database")?;
    let mut tick = tokio::time::interval(Duration::from_secs(cli.maintenance_interval.max(1)));
    tracing::info!(
        "worker started: maintenance every {}s",
        cli.maintenance_interval
    );
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => sweep(&store, cli.retention_batch).await,
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        }
    }
}

async fn sweep(store: &SeaOrmStore, retention_batch: u32) {
    match store.rescue().await {
        Ok(report) if report != Default::default() => tracing::info!(?report, "rescued jobs"),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "rescue failed; will try again"),
    }
    match store.purge_expired(retention_batch).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "deleted expired jobs"),
        Err(error) => tracing::warn!(%error, "retention failed; will try again"),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
