//! Writes the latest progress of each job a few times a second at most.

use std::sync::Arc;

use async_trait::async_trait;

use super::Periodic;
use crate::runtime::{Attempts, Backend};

pub(crate) struct ProgressWriter {
    store: Backend,
    attempts: Arc<Attempts>,
}

impl ProgressWriter {
    pub(crate) fn new(store: Backend, attempts: Arc<Attempts>) -> Self {
        Self { store, attempts }
    }
}

#[async_trait]
impl Periodic for ProgressWriter {
    /// How many jobs' progress was written.
    type Report = usize;

    async fn tick(&mut self) -> usize {
        let mut written = 0;
        for running in self.attempts.snapshot() {
            let Some((fraction, stage)) = running.ctx.take_progress() else {
                continue;
            };
            let write = self
                .store
                .progress(&running.lease, fraction, stage.as_deref());
            match write.await {
                Ok(()) => written += 1,
                Err(error) => {
                    tracing::debug!(%error, job = %running.lease.job_id, "progress not written")
                }
            }
        }
        written
    }
}
