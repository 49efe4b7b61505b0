//! The worker: `run` starts the producers (one per queue), the heartbeater, the cancel
//! watcher, the progress writer, the completer and maintenance, and at shutdown stops
//! them in the order that keeps every outcome written and every lease alive meanwhile.

use std::{sync::Arc, time::Duration};

use jobs_core::{JobError, QueueScope, Wakeups, WorkerBackend};
use tokio::{
    sync::mpsc,
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;

use crate::{
    WorkerBuilder,
    runtime::{Completion, Shared},
    services::{
        cancel_watcher::CancelWatcher, completer::Completer, heartbeater::Heartbeater,
        producer::Producer, progress_writer::ProgressWriter, run_periodic, scheduler::Scheduler,
    },
};

pub struct Worker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) completed: mpsc::UnboundedReceiver<Completion>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.shared.config.worker_id)
            .finish()
    }
}

/// A worker running in the background.
#[derive(Debug)]
pub struct WorkerHandle {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), JobError>>,
}

impl WorkerHandle {
    /// Graceful shutdown: stop claiming, let jobs finish within the grace period, release
    /// the rest. Returns when every outcome is written.
    pub async fn shutdown(self) -> Result<(), JobError> {
        self.shutdown.cancel();
        self.task
            .await
            .map_err(|e| JobError::Storage(format!("worker task failed: {e}")))?
    }
}

/// The tasks of a running worker, with the tokens that stop each group.
struct Services {
    /// The completer and the heartbeater outlive every other service: leases stay
    /// renewed while outcomes wait to be written.
    completer: JoinHandle<()>,
    heartbeater: JoinHandle<()>,
    give_up: CancellationToken,
    flushed: CancellationToken,
    beats_stop: CancellationToken,
    /// Cancel watcher, progress writer and maintenance.
    background: JoinSet<()>,
    background_stop: CancellationToken,
    producers: JoinSet<()>,
    waker: JoinHandle<()>,
}

impl Worker {
    /// A worker over any backend that implements the `jobs_core` ports (jobs-store's store, or another).
    pub fn builder(store: impl WorkerBackend) -> WorkerBuilder {
        WorkerBuilder::new(store)
    }

    pub fn id(&self) -> &str {
        &self.shared.config.worker_id
    }

    pub fn spawn(self) -> WorkerHandle {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(self.run(shutdown.clone()));
        WorkerHandle { shutdown, task }
    }

    /// Runs until `shutdown` fires, then shuts down gracefully.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), JobError> {
        let shared = self.shared;
        let config = &shared.config;
        tracing::info!(worker_id = %config.worker_id, queues = ?config.queues, kinds = ?shared.kinds(), "worker starting");
        let services = start(&shared, self.completed, &shutdown).await?;
        shutdown.cancelled().await;
        stop(shared, services).await;
        tracing::info!("worker stopped");
        Ok(())
    }
}

async fn start(
    shared: &Arc<Shared>,
    completed: mpsc::UnboundedReceiver<Completion>,
    shutdown: &CancellationToken,
) -> Result<Services, JobError> {
    let (config, store, attempts) = (&shared.config, &shared.store, &shared.attempts);
    for schedule in &config.schedules {
        store.upsert_schedule(schedule).await?;
    }
    for (queue, limits) in &config.limits {
        store
            .set_queue_limits(QueueScope::AllTenants, queue, limits)
            .await?;
    }
    let wakeups = store.subscribe().await?;
    let (give_up, flushed) = (CancellationToken::new(), CancellationToken::new());
    let completer = Completer::new(store.clone(), completed, give_up.clone());
    let completer = tokio::spawn(completer.run(flushed.clone()));
    let beats_stop = CancellationToken::new();
    let beats = Heartbeater::new(store.clone(), attempts.clone(), config.lease);
    let every = beats.interval();
    let heartbeater = tokio::spawn(run_periodic(beats, every, beats_stop.clone()));
    let (background, background_stop) = background(shared);
    let mut producers = JoinSet::new();
    for queue in &shared.queues {
        producers.spawn(Producer::new(shared.clone(), queue.clone()).run(shutdown.clone()));
    }
    let waker = waker(shared.clone(), wakeups, shutdown.clone());
    Ok(Services {
        completer,
        heartbeater,
        give_up,
        flushed,
        beats_stop,
        background,
        background_stop,
        producers,
        waker,
    })
}

/// The cancel watcher, the progress writer, the scheduler and maintenance, stopped
/// together, last.
fn background(shared: &Shared) -> (JoinSet<()>, CancellationToken) {
    let (config, store, attempts) = (&shared.config, &shared.store, &shared.attempts);
    let (mut services, stop) = (JoinSet::new(), CancellationToken::new());
    let watcher = CancelWatcher::new(store.clone(), attempts.clone());
    services.spawn(run_periodic(
        watcher,
        config.cancel_check_interval,
        stop.clone(),
    ));
    let progress = ProgressWriter::new(store.clone(), attempts.clone());
    services.spawn(run_periodic(
        progress,
        config.progress_interval,
        stop.clone(),
    ));
    let scheduler = Scheduler::new(store.clone(), &config.worker_id);
    services.spawn(run_periodic(
        scheduler,
        config.scheduler_interval,
        stop.clone(),
    ));
    if config.maintenance {
        crate::services::maintenance::spawn(&mut services, store, config, stop.clone());
        if let Some(files) = &shared.files {
            // Files follow their jobs out at retention's pace.
            let (store, holder) = (store.clone(), config.worker_id.clone());
            let every = config.retention_interval;
            let sweeper =
                jobs_files::run_sweeper(store, files.clone(), holder, every, stop.clone());
            services.spawn(sweeper);
        }
    }
    (services, stop)
}

/// Until shutdown, wakes the producers of the queues each wake-up concerns.
fn waker(shared: Arc<Shared>, mut wakeups: Wakeups, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(wake) = stop.run_until_cancelled(wakeups.next()).await {
            let queues = shared.queues.iter();
            queues
                .filter(|q| wake.concerns(&q.name))
                .for_each(|q| q.wake_up());
        }
    })
}

/// Graceful shutdown: no new claims; running jobs get the grace period, then are released;
/// outcomes get `flush_timeout` to be written; then the rest stops.
async fn stop(shared: Arc<Shared>, mut services: Services) {
    let config = &shared.config;
    shared.stopping.cancel();
    tracing::info!(
        running = shared.attempts.len(),
        "shutting down: no new claims"
    );
    // A claim in flight is waited for, so its jobs are released like the others; but
    // not longer than the grace period (a database that stopped answering would hold
    // it for minutes): what such a claim took is rescued after its lease.
    let claims = async { while services.producers.join_next().await.is_some() {} };
    if tokio::time::timeout(config.shutdown_grace, claims)
        .await
        .is_err()
    {
        tracing::warn!("a claim did not return in the grace period; abandoning it");
        services.producers.abort_all();
    }
    let _ = services.waker.await;
    if !shared.wait_idle(config.shutdown_grace).await {
        let released = shared.attempts.release_all();
        tracing::info!(released, "grace period over: releasing unfinished jobs");
        if !shared.wait_idle(config.flush_timeout).await {
            // The database is away: stop waiting for it. The completer logs what it
            // could not write; those leases expire and the rescuer runs them again.
            services.give_up.cancel();
            shared.wait_idle(Duration::from_secs(1)).await;
        }
    }
    // Every slot is back, so every outcome was written or given up on.
    services.flushed.cancel();
    let _ = services.completer.await;
    services.beats_stop.cancel();
    let _ = services.heartbeater.await;
    services.background_stop.cancel();
    drop(shared);
    while services.background.join_next().await.is_some() {}
}
