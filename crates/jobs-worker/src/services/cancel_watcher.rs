//! Hears of cancels made by any process, within `cancel_check_interval`.

use std::sync::Arc;

use async_trait::async_trait;
use jobs_core::{JobError, Lease};

use super::Periodic;
use crate::runtime::{Attempts, Backend, StopReason};

pub(crate) struct CancelWatcher {
    store: Backend,
    attempts: Arc<Attempts>,
}

impl CancelWatcher {
    pub(crate) fn new(store: Backend, attempts: Arc<Attempts>) -> Self {
        Self { store, attempts }
    }
}

#[async_trait]
impl Periodic for CancelWatcher {
    /// How many running jobs were stopped.
    type Report = Result<usize, JobError>;

    async fn tick(&mut self) -> Result<usize, JobError> {
        let leases: Vec<Lease> = self
            .attempts
            .snapshot()
            .iter()
            .filter(|r| !r.ctx.is_cancelled())
            .map(|r| r.lease)
            .collect();
        let cancelled = self
            .store
            .cancel_requests(&leases)
            .await
            .inspect_err(|error| tracing::warn!(%error, "checking cancel requests failed"))?;
        Ok(self.attempts.stop(&cancelled, StopReason::Cancelled))
    }
}
