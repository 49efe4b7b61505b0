//! Maintenance: the rescuer (expired leases), the sweeper (pending jobs that can never
//! run: deadline passed or cancel requested) and the retention cleaner, each its own
//! service with its own interval and a bounded amount of work per tick, so a retention
//! backlog of millions of rows never delays lease rescue. They run in one process at a
//! time: the one whose row in `jobs_leader` is current. Leadership expires unless renewed,
//! so a frozen leader is replaced within `leader_ttl` plus a third of it.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use jobs_core::{JobError, JobStore};
use jobs_store::{MAINTENANCE_ROLE, SeaOrmStore};
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::WorkerConfig;

/// Statements a service may run in one tick while each moves a full batch.
const BATCHES_PER_TICK: u32 = 10;

/// Until when this process may act as leader, by its own monotonic clock (which keeps
/// running while the process is frozen, so a resumed leader knows its term ran out).
#[derive(Debug, Default)]
struct Term(Mutex<Option<Instant>>);

impl Term {
    fn holds(&self) -> bool {
        self.0
            .lock()
            .expect("term lock")
            .is_some_and(|until| Instant::now() < until)
    }

    fn set(&self, until: Option<Instant>) {
        *self.0.lock().expect("term lock") = until;
    }
}

pub(crate) fn spawn(
    services: &mut JoinSet<()>,
    store: &SeaOrmStore,
    config: &WorkerConfig,
    stop: CancellationToken,
) {
    let term = Arc::new(Term::default());
    // Unique per process: a restart under the same worker id starts a new term.
    let holder = format!("{}/{}", config.worker_id, uuid::Uuid::new_v4().simple());
    services.spawn(elect(
        store.clone(),
        holder,
        config.leader_ttl,
        term.clone(),
        stop.clone(),
    ));
    let batch = config.maintenance_batch;
    let rescuer = store.clone();
    services.spawn(run_service(
        "rescuer",
        config.maintenance_interval,
        batch,
        term.clone(),
        stop.clone(),
        move |limit| {
            let store = rescuer.clone();
            async move { Ok(store.rescue_expired(limit).await?.total()) }
        },
    ));
    let sweeper = store.clone();
    services.spawn(run_service(
        "sweeper",
        config.maintenance_interval,
        batch,
        term.clone(),
        stop.clone(),
        move |limit| {
            let store = sweeper.clone();
            async move { Ok(store.end_unrunnable(limit).await?.total()) }
        },
    ));
    let cleaner = store.clone();
    services.spawn(run_service(
        "retention",
        config.retention_interval,
        batch,
        term,
        stop,
        move |limit| {
            let store = cleaner.clone();
            async move { store.purge_expired(limit).await }
        },
    ));
}

/// Takes or renews leadership every third of its time to live; gives it up at shutdown.
async fn elect(
    store: SeaOrmStore,
    holder: String,
    ttl: Duration,
    term: Arc<Term>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let asked = Instant::now();
        // The row expires `ttl` after the database ran the statement, which is after
        // `asked`: ending the local term a tenth early leaves room for clock drift.
        let renewal = tokio::time::timeout(ttl / 3, store.lead(MAINTENANCE_ROLE, &holder, ttl));
        let Some(renewal) = stop.run_until_cancelled(renewal).await else {
            break;
        };
        match renewal {
            Ok(Ok(true)) => {
                if !term.holds() {
                    tracing::info!(%holder, "leading maintenance");
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
    }
    if term.holds() {
        term.set(None);
        let resign = store.resign(MAINTENANCE_ROLE, &holder);
        if let Ok(Err(error)) = tokio::time::timeout(Duration::from_secs(2), resign).await {
            tracing::warn!(%error, "could not give up maintenance leadership; it will expire");
        }
    }
}

/// One maintenance service: on each tick, while leading, statements of up to `batch`
/// rows until one moves less than a full batch or `BATCHES_PER_TICK` ran.
async fn run_service<F, Fut>(
    name: &'static str,
    every: Duration,
    batch: u32,
    term: Arc<Term>,
    stop: CancellationToken,
    mut step: F,
) where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<u64, JobError>>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let mut moved = 0;
        for _ in 0..BATCHES_PER_TICK {
            if !term.holds() || stop.is_cancelled() {
                break;
            }
            let Some(moved_now) = stop.run_until_cancelled(step(batch)).await else {
                return;
            };
            match moved_now {
                Ok(n) => {
                    moved += n;
                    if n < u64::from(batch) {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(service = name, %error, "maintenance step failed");
                    break;
                }
            }
        }
        if moved > 0 {
            tracing::info!(service = name, jobs = moved, "maintenance moved jobs");
        }
    }
}
