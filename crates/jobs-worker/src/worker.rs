//! The worker: a builder for configuration, and `run`, which drives the producers (one per
//! queue), the executor tasks, the heartbeater, the progress writer, the completer and
//! maintenance until shutdown.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use jobs_core::{ClaimRequest, Finish, Job, JobError, JobStore, Lease, LeaseToken, Outcome};
use jobs_store::SeaOrmStore;
use tokio::{
    sync::{Notify, Semaphore, mpsc},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Handler, JobContext, TypedJob, WorkerConfig, handler::Typed};

struct Registered {
    handler: Arc<dyn Handler>,
    timeout: Option<Duration>,
}

pub struct WorkerBuilder {
    store: SeaOrmStore,
    handlers: HashMap<String, Registered>,
    config: WorkerConfig,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<&String> = self.handlers.keys().collect();
        f.debug_struct("WorkerBuilder")
            .field("kinds", &kinds)
            .field("config", &self.config)
            .finish()
    }
}

impl WorkerBuilder {
    /// A typed job kind.
    pub fn register<J: TypedJob>(self) -> Self {
        self.handler_with_timeout(J::KIND, Typed::<J>::new(), J::timeout())
    }

    /// An untyped handler (a closure or a `Handler`) for `kind`.
    pub fn handler(self, kind: impl Into<String>, handler: impl Handler) -> Self {
        self.handler_with_timeout(kind, handler, None)
    }

    pub fn handler_with_timeout(
        mut self,
        kind: impl Into<String>,
        handler: impl Handler,
        timeout: Option<Duration>,
    ) -> Self {
        self.handlers.insert(
            kind.into(),
            Registered {
                handler: Arc::new(handler),
                timeout,
            },
        );
        self
    }

    pub fn queue(mut self, name: impl Into<String>, concurrency: usize) -> Self {
        self.config.queues.push((name.into(), concurrency));
        self
    }

    pub fn config(mut self, edit: impl FnOnce(&mut WorkerConfig)) -> Self {
        edit(&mut self.config);
        self
    }

    /// The worker, or `Invalid` naming each configuration field at fault.
    pub fn build(mut self) -> Result<Worker, JobError> {
        self.config.validate()?;
        if self.config.queues.is_empty() {
            self.config
                .queues
                .push((jobs_core::limits::DEFAULT_QUEUE.to_owned(), 10));
        }
        let prefetch = self.config.prefetch;
        let queues = self
            .config
            .queues
            .iter()
            .map(|(name, concurrency)| {
                Arc::new(QueueSlots {
                    name: name.clone(),
                    capacity: concurrency + prefetch,
                    slots: Arc::new(Semaphore::new(concurrency + prefetch)),
                    handlers: Arc::new(Semaphore::new(*concurrency)),
                    wake: Notify::new(),
                    maybe_more: AtomicBool::new(true),
                })
            })
            .collect();
        let (completions, completed) = mpsc::unbounded_channel();
        Ok(Worker {
            shared: Arc::new(Shared {
                store: self.store,
                handlers: self.handlers,
                config: self.config,
                queues,
                running: Arc::default(),
                completions,
                stopping: CancellationToken::new(),
            }),
            completed,
        })
    }
}

pub struct Worker {
    shared: Arc<Shared>,
    completed: mpsc::UnboundedReceiver<Completion>,
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
    task: tokio::task::JoinHandle<Result<(), JobError>>,
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

impl Worker {
    pub fn builder(store: SeaOrmStore) -> WorkerBuilder {
        WorkerBuilder {
            store,
            handlers: HashMap::new(),
            config: WorkerConfig::default(),
        }
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
        let mut wakeups = shared.store.subscribe().await?;
        let background = CancellationToken::new();
        let mut services = JoinSet::new();
        let mut producers = JoinSet::new();

        // The completer and the heartbeater outlive every other service: leases stay
        // renewed while outcomes wait to be written.
        let give_up = CancellationToken::new();
        let flushed = CancellationToken::new();
        let completer = tokio::spawn(completer(
            shared.store.clone(),
            self.completed,
            give_up.clone(),
            flushed.clone(),
        ));
        let beats_stop = CancellationToken::new();
        let heartbeats = tokio::spawn(heartbeater(shared.clone(), beats_stop.clone()));
        services.spawn(cancel_watcher(shared.clone(), background.clone()));
        services.spawn(progress_writer(shared.clone(), background.clone()));
        if config.maintenance {
            crate::maintenance::spawn(&mut services, &shared.store, config, background.clone());
        }
        for queue in &shared.queues {
            producers.spawn(produce(shared.clone(), queue.clone(), shutdown.clone()));
        }
        let waker = {
            let shared = shared.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        wake = wakeups.next() => shared.queues.iter().filter(|q| wake.concerns(&q.name)).for_each(|q| q.wake_up()),
                        _ = stop.cancelled() => return,
                    }
                }
            })
        };

        shutdown.cancelled().await;
        shared.stopping.cancel();
        tracing::info!(
            running = shared.running_count(),
            "shutting down: no new claims"
        );
        // A claim in flight is waited for, so its jobs are released like the others; but
        // not longer than the grace period (a database that stopped answering would hold
        // it for minutes): what such a claim took is rescued after its lease.
        let claims = async { while producers.join_next().await.is_some() {} };
        if tokio::time::timeout(config.shutdown_grace, claims)
            .await
            .is_err()
        {
            tracing::warn!("a claim did not return in the grace period; abandoning it");
            producers.abort_all();
        }
        let _ = waker.await;
        if !shared.wait_idle(config.shutdown_grace).await {
            let released = shared.release_all();
            tracing::info!(released, "grace period over: releasing unfinished jobs");
            if !shared.wait_idle(config.flush_timeout).await {
                // The database is away: stop waiting for it. The completer logs what it
                // could not write; those leases expire and the rescuer runs them again.
                give_up.cancel();
                shared.wait_idle(Duration::from_secs(1)).await;
            }
        }
        // Every slot is back, so every outcome was written or given up on.
        flushed.cancel();
        let _ = completer.await;
        beats_stop.cancel();
        let _ = heartbeats.await;
        background.cancel();
        drop(shared);
        while services.join_next().await.is_some() {}
        tracing::info!("worker stopped");
        Ok(())
    }
}

pub(crate) struct QueueSlots {
    name: String,
    /// Jobs this process may hold at once: concurrency plus prefetch.
    capacity: usize,
    /// One permit per held job, from claim until its outcome is written.
    slots: Arc<Semaphore>,
    /// One permit per running handler.
    handlers: Arc<Semaphore>,
    wake: Notify,
    /// Whether the last claim could have left jobs behind; only then does a freed slot
    /// trigger an immediate claim instead of waiting for a wake-up.
    maybe_more: AtomicBool,
}

impl QueueSlots {
    /// Claim when a handler would otherwise sit idle; with prefetch, otherwise only once
    /// half the room is free, so that claims stay large instead of one job per freed slot.
    fn wants_claim(&self, free: usize) -> bool {
        free > 0 && (self.handlers.available_permits() > 0 || free >= self.capacity / 2)
    }

    /// A held or handler slot was just returned: claim again if jobs may be waiting.
    fn slot_returned(&self) {
        if self.maybe_more.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    fn wake_up(&self) {
        self.maybe_more.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    Cancelled,
    Released,
    Lost,
}

/// The attempts this worker holds, from claim until their outcome is written, by lease
/// token (a job lost and claimed again here is a different attempt): the heartbeater
/// renews exactly these leases.
type RunningMap = Mutex<HashMap<LeaseToken, Arc<Running>>>;

pub(crate) struct Running {
    pub(crate) ctx: JobContext,
    lease: Lease,
    reason: Mutex<Option<StopReason>>,
}

impl Running {
    pub(crate) fn reason(&self) -> StopReason {
        self.reason
            .lock()
            .expect("reason lock")
            .unwrap_or(StopReason::Cancelled)
    }

    /// The first reason wins: a job released at shutdown stays released.
    pub(crate) fn stop(&self, reason: StopReason) {
        self.reason
            .lock()
            .expect("reason lock")
            .get_or_insert(reason);
        self.ctx.cancellation_token().cancel();
    }
}

pub(crate) struct Completion {
    /// Freed when the completion is dropped, after its outcome is written.
    pub(crate) _slot: Slot,
    pub(crate) lease: Lease,
    pub(crate) outcome: Outcome,
    pub(crate) kind: String,
    pub(crate) queue: String,
    pub(crate) failure: bool,
}

impl Completion {
    pub(crate) fn new(slot: Slot, lease: Lease, outcome: Outcome, job: &Job) -> Self {
        Self {
            _slot: slot,
            lease,
            failure: matches!(outcome, Outcome::Failed { .. }),
            outcome,
            kind: job.kind.clone(),
            queue: job.queue.clone(),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) store: SeaOrmStore,
    handlers: HashMap<String, Registered>,
    pub(crate) config: WorkerConfig,
    queues: Vec<Arc<QueueSlots>>,
    running: Arc<RunningMap>,
    completions: mpsc::UnboundedSender<Completion>,
    /// Fired when shutdown begins: jobs not yet started are released, not started.
    pub(crate) stopping: CancellationToken,
}

impl Shared {
    fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.handlers.keys().cloned().collect();
        kinds.sort();
        kinds
    }

    pub(crate) fn start(&self, job: &Job, lease: Lease) -> Arc<Running> {
        let running = Arc::new(Running {
            ctx: JobContext::new(job.clone(), CancellationToken::new()),
            lease,
            reason: Mutex::new(None),
        });
        self.running
            .lock()
            .expect("running lock")
            .insert(lease.token, running.clone());
        running
    }

    pub(crate) fn complete(&self, completion: Completion) {
        // The completer outlives every executor, so the channel is open.
        let _ = self.completions.send(completion);
    }

    fn running_count(&self) -> usize {
        self.running.lock().expect("running lock").len()
    }

    fn snapshot(&self) -> Vec<Arc<Running>> {
        self.running
            .lock()
            .expect("running lock")
            .values()
            .cloned()
            .collect()
    }

    /// Stops those of these attempts still running here; returns how many.
    fn stop_jobs(&self, tokens: &[LeaseToken], reason: StopReason) -> usize {
        let running = self.running.lock().expect("running lock");
        let found: Vec<&Arc<Running>> = tokens.iter().filter_map(|t| running.get(t)).collect();
        found.iter().for_each(|job| job.stop(reason));
        found.len()
    }

    fn release_all(&self) -> usize {
        let all = self.snapshot();
        for job in &all {
            job.stop(StopReason::Released);
        }
        all.len()
    }

    /// Waits until no job runs here, or `limit` passes; true when idle.
    async fn wait_idle(&self, limit: Duration) -> bool {
        let until = tokio::time::Instant::now().checked_add(limit);
        loop {
            if self.running_count() == 0
                && self
                    .queues
                    .iter()
                    .all(|q| q.slots.available_permits() == q.capacity)
            {
                return true;
            }
            if until.is_some_and(|u| tokio::time::Instant::now() >= u) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One queue's fetch loop: claim as many jobs as there are free slots (handler slots plus
/// prefetch), in one statement.
async fn produce(shared: Arc<Shared>, queue: Arc<QueueSlots>, shutdown: CancellationToken) {
    let kinds = shared.kinds();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let free = queue.slots.available_permits();
        if queue.wants_claim(free) && queue.maybe_more.swap(false, Ordering::Relaxed) {
            let request = ClaimRequest {
                worker_id: shared.config.worker_id.clone(),
                queues: vec![queue.name.clone()],
                kinds: Some(kinds.clone()),
                tenant: None,
                limit: free as u32,
                lease: shared.config.lease,
            };
            match shared.store.claim(&request).await {
                Ok(jobs) => {
                    if jobs.len() == free {
                        queue.maybe_more.store(true, Ordering::Relaxed);
                    }
                    for job in jobs {
                        spawn_job(&shared, &queue, job);
                    }
                    if queue.maybe_more.load(Ordering::Relaxed)
                        && queue.wants_claim(queue.slots.available_permits())
                    {
                        continue;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, queue = %queue.name, "claim failed; retrying after the poll interval");
                    queue.maybe_more.store(true, Ordering::Relaxed);
                }
            }
        }
        tokio::select! {
            _ = queue.wake.notified() => {}
            _ = tokio::time::sleep(shared.config.poll_interval) => queue.maybe_more.store(true, Ordering::Relaxed),
            _ = shutdown.cancelled() => return,
        }
    }
}

fn spawn_job(shared: &Arc<Shared>, queue: &Arc<QueueSlots>, job: Job) {
    let Some(lease) = Lease::of(&job) else {
        tracing::error!(job = %job.id, "claimed a job without a lease token");
        return;
    };
    let permit = queue
        .slots
        .clone()
        .try_acquire_owned()
        .expect("claimed no more than the free slots");
    let slot = Slot {
        permit: Some(permit),
        queue: queue.clone(),
        running: shared.running.clone(),
        token: lease.token,
    };
    let Some(registered) = shared.handlers.get(&job.kind) else {
        // Claims filter by registered kinds, so this cannot happen.
        tracing::error!(kind = %job.kind, "claimed a job of an unregistered kind");
        return;
    };
    let handler = registered.handler.clone();
    let timeout = registered.timeout.or(shared.config.default_timeout);
    let span = tracing::info_span!("job", id = %job.id, kind = %job.kind, attempt = job.attempt, trace_id = job.trace_id.as_deref().unwrap_or(""));
    tokio::spawn(
        crate::executor::execute(shared.clone(), job, lease, handler, timeout, slot)
            .instrument(span),
    );
}

/// A claimed job's place in its queue (concurrency plus prefetch) and in the heartbeat
/// set. It is held until the job's outcome is written, so a worker never holds more jobs
/// without a durable outcome than that, and keeps their leases alive meanwhile: a slow
/// database slows claiming instead of letting finished jobs expire and run again.
/// Freeing it wakes the producer if more jobs may wait.
pub(crate) struct Slot {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    queue: Arc<QueueSlots>,
    running: Arc<RunningMap>,
    token: LeaseToken,
}

impl Slot {
    /// Waits for a free handler slot of the queue; held while the handler runs.
    pub(crate) async fn handler_permit(&self) -> HandlerPermit {
        let permit = self
            .queue
            .handlers
            .clone()
            .acquire_owned()
            .await
            .expect("the handler semaphore is never closed");
        HandlerPermit {
            permit: Some(permit),
            queue: self.queue.clone(),
        }
    }
}

/// A running handler's place; freeing it lets the producer claim if handlers would idle.
pub(crate) struct HandlerPermit {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    queue: Arc<QueueSlots>,
}

impl Drop for HandlerPermit {
    fn drop(&mut self) {
        // Returned before the wake-up, so the woken producer sees it.
        drop(self.permit.take());
        self.queue.slot_returned();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running
            .lock()
            .expect("running lock")
            .remove(&self.token);
        // Returned before the wake-up, so the woken producer sees it.
        drop(self.permit.take());
        self.queue.slot_returned();
    }
}

/// Writes outcomes in batches: whatever queued up while the previous write ran goes in
/// the next statement, so a lone completion is written at once. A failed write is retried
/// (the slots, and so the leases, stay held) until `give_up` fires at shutdown; then what
/// is unwritten is logged and dropped. Stops when `flushed` fires.
async fn completer(
    store: SeaOrmStore,
    mut completed: mpsc::UnboundedReceiver<Completion>,
    give_up: CancellationToken,
    flushed: CancellationToken,
) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            biased;
            n = completed.recv_many(&mut batch, 2_000) => if n == 0 { return },
            _ = flushed.cancelled() => return,
        }
        let finishes: Vec<Finish> = batch
            .iter()
            .map(|c| Finish {
                lease: c.lease,
                outcome: c.outcome.clone(),
            })
            .collect();
        let Some(results) = write_outcomes(&store, finishes, &give_up).await else {
            for completion in batch.drain(..) {
                tracing::error!(job = %completion.lease.job_id, attempt = completion.lease.attempt, outcome = ?completion.outcome, "outcome not written before shutdown; the job will run again after its lease expires");
            }
            continue;
        };
        for (completion, result) in batch.drain(..).zip(results) {
            match result {
                Ok(state) => crate::metrics::ended(
                    &completion.kind,
                    &completion.queue,
                    completion.failure,
                    state,
                ),
                Err(error) => {
                    tracing::warn!(job = %completion.lease.job_id, %error, "outcome not written")
                }
            }
        }
    }
}

/// `None` once `give_up` fires before the outcomes could be written.
async fn write_outcomes(
    store: &SeaOrmStore,
    finishes: Vec<Finish>,
    give_up: &CancellationToken,
) -> Option<Vec<Result<jobs_core::State, JobError>>> {
    loop {
        let attempt = tokio::select! {
            result = store.finish_many(finishes.clone()) => result,
            _ = give_up.cancelled() => return None,
        };
        match attempt {
            Ok(results) => return Some(results),
            Err(error) => {
                tracing::warn!(%error, jobs = finishes.len(), "writing outcomes failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = give_up.cancelled() => return None,
                }
            }
        }
    }
}

/// One statement renews every lease this worker holds; jobs it no longer owns are stopped.
async fn heartbeater(shared: Arc<Shared>, stop: CancellationToken) {
    let every = shared.config.lease / 3;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let leases: Vec<Lease> = shared.snapshot().iter().map(|r| r.lease).collect();
        if leases.is_empty() {
            continue;
        }
        let beat = shared.store.heartbeat(&leases, shared.config.lease);
        let Some(beat) = stop.run_until_cancelled(beat).await else {
            return;
        };
        match beat {
            Ok(beat) => {
                // Jobs that ended since the snapshot also come back as lost; only the
                // ones still running here were really taken away.
                let lost = shared.stop_jobs(&beat.lost, StopReason::Lost);
                if lost > 0 {
                    tracing::warn!(lost, "leases lost (rescued elsewhere); stopped those jobs");
                }
                shared.stop_jobs(&beat.cancel_requested, StopReason::Cancelled);
            }
            Err(error) => tracing::warn!(%error, "heartbeat failed"),
        }
    }
}

/// Hears of cancels made by any process, within `cancel_check_interval`.
async fn cancel_watcher(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.cancel_check_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let leases: Vec<Lease> = shared
            .snapshot()
            .iter()
            .filter(|r| !r.ctx.is_cancelled())
            .map(|r| r.lease)
            .collect();
        let Some(requests) = stop
            .run_until_cancelled(shared.store.cancel_requests(&leases))
            .await
        else {
            return;
        };
        match requests {
            Ok(cancelled) => {
                shared.stop_jobs(&cancelled, StopReason::Cancelled);
            }
            Err(error) => tracing::warn!(%error, "checking cancel requests failed"),
        }
    }
}

/// Writes the latest progress of each job a few times a second at most.
async fn progress_writer(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.progress_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        for running in shared.snapshot() {
            if let Some((fraction, stage)) = running.ctx.take_progress() {
                let write = shared
                    .store
                    .progress(&running.lease, fraction, stage.as_deref());
                match stop.run_until_cancelled(write).await {
                    None => return,
                    Some(Err(error)) => {
                        tracing::debug!(%error, job = %running.lease.job_id, "progress not written")
                    }
                    Some(Ok(())) => {}
                }
            }
        }
    }
}
