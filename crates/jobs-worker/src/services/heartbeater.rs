//! One statement renews every lease this worker holds; jobs it no longer owns are stopped.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use jobs_core::{JobError, Lease};

use super::Periodic;
use crate::runtime::{Attempts, Backend, StopReason};

pub(crate) struct Heartbeater {
    store: Backend,
    attempts: Arc<Attempts>,
    lease: Duration,
}

/// What one heartbeat stopped.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Beat {
    pub(crate) lost: usize,
    pub(crate) cancelled: usize,
}

impl Heartbeater {
    pub(crate) fn new(store: Backend, attempts: Arc<Attempts>, lease: Duration) -> Self {
        Self {
            store,
            attempts,
            lease,
        }
    }

    /// A third of the lease: two beats may fail before a lease runs out.
    pub(crate) fn interval(&self) -> Duration {
        self.lease / 3
    }
}

#[async_trait]
impl Periodic for Heartbeater {
    type Report = Result<Beat, JobError>;

    async fn tick(&mut self) -> Result<Beat, JobError> {
        let leases: Vec<Lease> = self.attempts.snapshot().iter().map(|r| r.lease).collect();
        if leases.is_empty() {
            return Ok(Beat::default());
        }
        let beat = self
            .store
            .heartbeat(&leases, self.lease)
            .await
            .inspect_err(|error| tracing::warn!(%error, "heartbeat failed"))?;
        // Jobs that ended since the snapshot also come back as lost; only the ones still
        // running here were really taken away.
        let lost = self.attempts.stop(&beat.lost, StopReason::Lost);
        if lost > 0 {
            tracing::warn!(lost, "leases lost (rescued elsewhere); stopped those jobs");
        }
        let cancelled = self
            .attempts
            .stop(&beat.cancel_requested, StopReason::Cancelled);
        Ok(Beat { lost, cancelled })
    }
}
