//! The worker's background services. Each is built from its configuration, does one
//! round of work per `tick` (so a test can drive it one round at a time), and runs until
//! its shutdown token fires.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub(crate) mod cancel_watcher;
pub(crate) mod completer;
pub(crate) mod elector;
pub(crate) mod heartbeater;
pub(crate) mod maintenance;
pub(crate) mod producer;
pub(crate) mod progress_writer;
pub(crate) mod rescuer;
pub(crate) mod retention;
pub(crate) mod scheduler;
pub(crate) mod sweeper;
pub(crate) mod vacuumer;

#[cfg(test)]
mod tests;

/// A service that does one round of work at a fixed interval.
#[async_trait]
pub(crate) trait Periodic: Send + 'static {
    /// What one round did; tests read it, the runner drops it (the round logs).
    type Report: Send;

    async fn tick(&mut self) -> Self::Report;

    /// Runs once after the last round, when the service is told to stop.
    async fn stopped(&mut self) {}
}

/// Ticks `service` every `every` (the first round at once) until `stop` fires; a round
/// in progress is abandoned then, so a database that stopped answering cannot hold up
/// shutdown. A round that overran its interval is followed by the next one at once.
pub(crate) async fn run_periodic<S: Periodic>(
    mut service: S,
    every: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => break,
        }
        if stop.run_until_cancelled(service.tick()).await.is_none() {
            break;
        }
    }
    service.stopped().await;
}
