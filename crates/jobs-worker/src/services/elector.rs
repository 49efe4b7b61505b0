//! Takes or renews maintenance leadership every third of its time to live; gives it up
//! at shutdown.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Periodic, maintenance::Term};
use crate::runtime::Backend;

/// The role maintenance is led under; every version of the worker must agree on it.
pub(crate) const MAINTENANCE_ROLE: &str = "maintenance";

pub(crate) struct Elector {
    store: Backend,
    holder: String,
    ttl: Duration,
    term: Arc<Term>,
}

impl Elector {
    pub(crate) fn new(store: Backend, worker_id: &str, ttl: Duration, term: Arc<Term>) -> Self {
        // Unique per process: a restart under the same worker id starts a new term.
        let holder = format!("{worker_id}/{}", uuid::Uuid::new_v4().simple());
        Self {
            store,
            holder,
            ttl,
            term,
        }
    }
}

#[async_trait]
impl Periodic for Elector {
    /// Whether this process leads after the round.
    type Report = bool;

    async fn tick(&mut self) -> bool {
        let (ttl, term) = (self.ttl, &self.term);
        let asked = Instant::now();
        // The row expires `ttl` after the database ran the statement, which is after
        // `asked`: ending the local term a tenth early leaves room for clock drift.
        let lead = self.store.lead(MAINTENANCE_ROLE, &self.holder, ttl);
        match tokio::time::timeout(ttl / 3, lead).await {
            Ok(Ok(true)) => {
                if !term.holds() {
                    tracing::info!(holder = %self.holder, "leading maintenance");
                }
                term.set(Some(asked + ttl.mul_f64(0.9)));
            }
            Ok(Ok(false)) => {
                if term.holds() {
                    tracing::warn!("maintenance leadership taken over by another process");
                }
                term.set(None);
            }
            // The term runs out on its own if renewals keep failing.
            Ok(Err(error)) => tracing::warn!(%error, "could not renew maintenance leadership"),
            Err(_) => tracing::warn!("renewing maintenance leadership timed out"),
        }
        term.holds()
    }

    async fn stopped(&mut self) {
        if !self.term.holds() {
            return;
        }
        self.term.set(None);
        let resign = self.store.resign(MAINTENANCE_ROLE, &self.holder);
        if let Ok(Err(error)) = tokio::time::timeout(Duration::from_secs(2), resign).await {
            tracing::warn!(%error, "could not give up maintenance leadership; it will expire");
        }
    }
}
