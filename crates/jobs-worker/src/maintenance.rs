//! Maintenance: the rescuer (expired leases, passed deadlines) and the retention cleaner.
//! On PostgreSQL one process at a time leads, by advisory lock, so N workers do not all sweep.

use std::time::Duration;

use jobs_core::JobStore;
use jobs_store::{Leadership, SeaOrmStore};
use tokio_util::sync::CancellationToken;

pub(crate) async fn run(
    store: SeaOrmStore,
    every: Duration,
    retention_batch: u32,
    stop: CancellationToken,
) {
    let mut leadership: Option<Leadership> = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Some(held) = &mut leadership {
            if !held.still_leading().await {
                tracing::warn!("lost the maintenance lock; will try to take it again");
                leadership = None;
            }
        }
        if leadership.is_none() {
            leadership = match store.try_lead().await {
                Ok(lead) => lead,
                Err(error) => {
                    tracing::warn!(%error, "could not try the maintenance lock");
                    None
                }
            };
        }
        if leadership.is_some() {
            sweep(&store, retention_batch).await;
        }
    }
}

/// One pass of rescue and retention; errors are logged and the next tick tries again.
pub(crate) async fn sweep(store: &SeaOrmStore, retention_batch: u32) {
    match store.rescue().await {
        Ok(report) if report != Default::default() => tracing::info!(?report, "rescued jobs"),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "rescue failed"),
    }
    match store.purge_expired(retention_batch).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "deleted expired jobs"),
        Err(error) => tracing::warn!(%error, "retention failed"),
    }
}
