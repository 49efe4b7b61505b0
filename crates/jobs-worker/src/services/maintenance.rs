//! Maintenance: the rescuer (expired leases), the sweeper (pending jobs that can never
//! run: deadline passed or cancel requested) and the retention cleaner, each its own
//! service with its own interval and a bounded amount of work per tick, so a retention
//! backlog of millions of rows never delays lease rescue. They run in one process at a
//! time: the one the elector made leader. Leadership expires unless renewed, so a frozen
//! leader is replaced within `leader_ttl` plus a third of it.

use std::{
    marker::PhantomData,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use jobs_core::{JobError, WorkerBackend};
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    Periodic, elector::Elector, rescuer::Rescuer, retention::RetentionCleaner, run_periodic,
    sweeper::Sweeper,
};
use crate::{WorkerConfig, runtime::Backend};

/// Statements a service may run in one tick while each moves a full batch.
pub(crate) const BATCHES_PER_TICK: u32 = 10;

/// Until when this process may act as leader, by its own monotonic clock (which keeps
/// running while the process is frozen, so a resumed leader knows its term ran out).
#[derive(Debug, Default)]
pub(crate) struct Term(Mutex<Option<Instant>>);

impl Term {
    pub(crate) fn holds(&self) -> bool {
        self.0
            .lock()
            .expect("term lock")
            .is_some_and(|until| Instant::now() < until)
    }

    pub(crate) fn set(&self, until: Option<Instant>) {
        *self.0.lock().expect("term lock") = until;
    }
}

pub(crate) fn spawn(
    services: &mut JoinSet<()>,
    store: &Backend,
    config: &WorkerConfig,
    stop: CancellationToken,
) {
    let term = Arc::new(Term::default());
    let elector = Elector::new(
        store.clone(),
        &config.worker_id,
        config.leader_ttl,
        term.clone(),
    );
    let (every, batch) = (config.maintenance_interval, config.maintenance_batch);
    services.spawn(run_periodic(elector, config.leader_ttl / 3, stop.clone()));
    let rescuer = Rescuer::new(store.clone(), batch, term.clone());
    services.spawn(run_periodic(rescuer, every, stop.clone()));
    let sweeper = Sweeper::new(store.clone(), batch, term.clone());
    services.spawn(run_periodic(sweeper, every, stop.clone()));
    let cleaner = RetentionCleaner::new(store.clone(), batch, term);
    services.spawn(run_periodic(cleaner, config.retention_interval, stop));
}

/// One kind of maintenance work, done a batch per statement.
#[async_trait]
pub(crate) trait Chore: Send + Sync + 'static {
    const NAME: &'static str;

    /// One statement of at most `limit` rows; returns the rows moved.
    async fn step(store: &dyn WorkerBackend, limit: u32) -> Result<u64, JobError>;
}

/// A maintenance service: its chore, done only while this process leads.
pub(crate) struct Maintainer<C> {
    store: Backend,
    batch: u32,
    term: Arc<Term>,
    chore: PhantomData<fn() -> C>,
}

impl<C: Chore> Maintainer<C> {
    pub(crate) fn new(store: Backend, batch: u32, term: Arc<Term>) -> Self {
        Self {
            store,
            batch,
            term,
            chore: PhantomData,
        }
    }
}

#[async_trait]
impl<C: Chore> Periodic for Maintainer<C> {
    /// Rows moved; none unless this process leads.
    type Report = u64;

    /// While leading, statements of up to `batch` rows until one moves less than a full
    /// batch or `BATCHES_PER_TICK` ran.
    async fn tick(&mut self) -> u64 {
        let mut moved = 0;
        for _ in 0..BATCHES_PER_TICK {
            if !self.term.holds() {
                break;
            }
            match C::step(self.store.as_ref(), self.batch).await {
                Ok(n) => {
                    moved += n;
                    if n < u64::from(self.batch) {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(service = C::NAME, %error, "maintenance step failed");
                    break;
                }
            }
        }
        if moved > 0 {
            tracing::info!(service = C::NAME, jobs = moved, "maintenance moved jobs");
        }
        moved
    }
}
