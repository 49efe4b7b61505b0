//! Maintenance: the rescuer (expired leases), the sweeper (pending jobs that can never
//! run: deadline passed or cancel requested), the retention cleaner and the vacuumer,
//! each its own service with its own interval and a bounded amount of work per tick, so
//! a retention backlog of millions of rows or a long VACUUM never delays lease rescue.
//! They run in one process at a time: the one the elector made leader. Leadership
//! expires unless renewed, so a frozen leader is replaced within `leader_ttl` plus a
//! third of it.

use std::{
    marker::PhantomData,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use jobs_core::{JobError, WorkerBackend};
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    Periodic,
    elector::Elector,
    rescuer::Rescuer,
    retention::RetentionCleaner,
    run_periodic,
    sweeper::Sweeper,
    vacuumer::{Threshold, Vacuumer},
};
use crate::{WorkerConfig, runtime::Backend};

/// The share of its interval a service may spend in one tick while each statement moves
/// a full batch: enough to keep up with a sustained load (a 1,000-row delete takes tens
/// of milliseconds, so half of 30 s is some 20,000 jobs a second), while one connection
/// at a time and at most half the time leaves the database to the jobs.
const TICK_SHARE: f64 = 0.5;

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
    let rescuer = Rescuer::new(store.clone(), batch, every, term.clone());
    services.spawn(run_periodic(rescuer, every, stop.clone()));
    let sweeper = Sweeper::new(store.clone(), batch, every, term.clone());
    services.spawn(run_periodic(sweeper, every, stop.clone()));
    let retention = config.retention_interval;
    let cleaner = RetentionCleaner::new(store.clone(), batch, retention, term.clone());
    services.spawn(run_periodic(cleaner, retention, stop.clone()));
    if config.vacuum {
        let threshold = Threshold {
            min_dead_rows: config.vacuum_min_dead_rows,
            dead_fraction: config.vacuum_dead_fraction,
        };
        let vacuumer = Vacuumer::new(store.clone(), threshold, term);
        services.spawn(run_periodic(vacuumer, config.vacuum_interval, stop));
    }
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
    /// How long a tick may go on while statements move full batches.
    budget: Duration,
    term: Arc<Term>,
    chore: PhantomData<fn() -> C>,
}

impl<C: Chore> Maintainer<C> {
    /// A service ticking `every`: each tick spends at most `TICK_SHARE` of it.
    pub(crate) fn new(store: Backend, batch: u32, every: Duration, term: Arc<Term>) -> Self {
        Self {
            store,
            batch,
            budget: every.mul_f64(TICK_SHARE),
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
    /// batch or the tick's budget is spent (checked between statements, so a tick ends
    /// at most one statement after it). Leadership is checked before each statement.
    async fn tick(&mut self) -> u64 {
        let started = Instant::now();
        let mut moved = 0;
        while self.term.holds() {
            match C::step(self.store.as_ref(), self.batch).await {
                Ok(n) => {
                    moved += n;
                    if n < u64::from(self.batch) || started.elapsed() >= self.budget {
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
