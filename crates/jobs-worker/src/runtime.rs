//! The state the worker's tasks share: the registered handlers, each queue's slots, and
//! the attempts this process holds.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use jobs_core::{Job, Lease, LeaseToken, Outcome, RetryPolicy, WorkerBackend};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{Handler, JobContext, WorkerConfig};

/// The store, behind the ports the runtime needs and nothing more.
pub(crate) type Backend = Arc<dyn WorkerBackend>;

/// A kind's handler with the kind's own limits.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) timeout: Option<Duration>,
    /// Turns the handler's `Retry::Backoff` into a delay of this kind's policy.
    pub(crate) backoff: Option<RetryPolicy>,
}

pub(crate) struct QueueSlots {
    pub(crate) name: String,
    /// Jobs this process may hold at once: concurrency plus prefetch.
    pub(crate) capacity: usize,
    /// One permit per held job, from claim until its outcome is written.
    pub(crate) slots: Arc<Semaphore>,
    /// One permit per running handler.
    pub(crate) handlers: Arc<Semaphore>,
    pub(crate) wake: Notify,
    /// Whether the last claim could have left jobs behind; only then does a freed slot
    /// trigger an immediate claim instead of waiting for a wake-up.
    pub(crate) maybe_more: AtomicBool,
    /// Jobs held right after the last claim: a claim that a queue's limit cut short sets
    /// the level that "half the room" is measured against, until a wake-up or the poll
    /// says new jobs may wait (then the whole room counts again).
    pub(crate) held_after_claim: AtomicUsize,
}

impl QueueSlots {
    pub(crate) fn new(name: String, concurrency: usize, prefetch: usize) -> Self {
        Self {
            name,
            capacity: concurrency + prefetch,
            slots: Arc::new(Semaphore::new(concurrency + prefetch)),
            handlers: Arc::new(Semaphore::new(concurrency)),
            wake: Notify::new(),
            maybe_more: AtomicBool::new(true),
            held_after_claim: AtomicUsize::new(concurrency + prefetch),
        }
    }

    /// Claim when a handler would otherwise sit idle; with prefetch, otherwise only once
    /// half of what the last claim left held has run, so that claims stay large instead of
    /// one job per freed slot (also when a queue's limit, not the room, sized the last).
    pub(crate) fn wants_claim(&self, free: usize) -> bool {
        let held = self.capacity.saturating_sub(free);
        let level = self.held_after_claim.load(Ordering::Relaxed);
        free > 0 && (self.handlers.available_permits() > 0 || held <= level / 2)
    }

    /// A held or handler slot was just returned: claim again if jobs may be waiting.
    fn slot_returned(&self) {
        if self.maybe_more.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    pub(crate) fn wake_up(&self) {
        self.expect_more();
        self.wake.notify_one();
    }

    /// Jobs may have arrived since the last claim: a short claim no longer means the
    /// queue's limit is what keeps this process from filling its room.
    pub(crate) fn expect_more(&self) {
        self.held_after_claim
            .store(self.capacity, Ordering::Relaxed);
        self.maybe_more.store(true, Ordering::Relaxed);
    }

    fn idle(&self) -> bool {
        self.slots.available_permits() == self.capacity
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    Cancelled,
    Released,
    Lost,
}

pub(crate) struct Running {
    pub(crate) ctx: JobContext,
    pub(crate) lease: Lease,
    reason: Mutex<Option<StopReason>>,
    /// The attempt ended here and its outcome is on its way to the store: nothing is
    /// left to stop, and a heartbeat that finds the row ended meanwhile lost nothing.
    ended: std::sync::atomic::AtomicBool,
}

impl Running {
    pub(crate) fn new(
        job: &Job,
        lease: Lease,
        store: &Backend,
        files: Option<jobs_files::FileStorage>,
    ) -> Arc<Self> {
        let (token, store) = (CancellationToken::new(), Some(store.clone()));
        Arc::new(Self {
            ctx: JobContext::new(job.clone(), token, store, files),
            lease,
            reason: Mutex::new(None),
            ended: Default::default(),
        })
    }

    /// Its outcome was handed to the completer.
    pub(crate) fn mark_ended(&self) {
        self.ended.store(true, std::sync::atomic::Ordering::Release);
    }

    fn has_ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::Acquire)
    }

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

/// The attempts this worker holds, from claim until their outcome is written, by lease
/// token (a job lost and claimed again here is a different attempt): the heartbeater
/// renews exactly these leases.
#[derive(Default)]
pub(crate) struct Attempts(Mutex<HashMap<LeaseToken, Arc<Running>>>);

impl Attempts {
    pub(crate) fn insert(&self, running: Arc<Running>) {
        self.lock().insert(running.lease.token, running);
    }

    fn mark_ended(&self, token: &LeaseToken) {
        if let Some(running) = self.lock().get(token) {
            running.mark_ended();
        }
    }

    fn remove(&self, token: &LeaseToken) {
        self.lock().remove(token);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn snapshot(&self) -> Vec<Arc<Running>> {
        self.lock().values().cloned().collect()
    }

    /// Stops those of these attempts still running here; returns how many. An attempt
    /// whose outcome is being written is past stopping: a lease found lost or a cancel
    /// found requested is then the store's to answer when the outcome arrives.
    pub(crate) fn stop(&self, tokens: &[LeaseToken], reason: StopReason) -> usize {
        let running = self.lock();
        let found: Vec<&Arc<Running>> = tokens
            .iter()
            .filter_map(|t| running.get(t))
            .filter(|job| !job.has_ended())
            .collect();
        found.iter().for_each(|job| job.stop(reason));
        found.len()
    }

    pub(crate) fn release_all(&self) -> usize {
        let all = self.snapshot();
        for job in &all {
            job.stop(StopReason::Released);
        }
        all.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseToken, Arc<Running>>> {
        self.0.lock().expect("running lock")
    }
}

pub(crate) struct Completion {
    /// Freed when the completion is dropped, after its outcome is written.
    pub(crate) _slot: Slot,
    pub(crate) lease: Lease,
    pub(crate) outcome: Outcome,
    /// Enqueued with a completed or partial outcome (`JobContext::follow_up`).
    pub(crate) follow_ups: Vec<jobs_core::NewJob>,
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
            follow_ups: Vec::new(),
            kind: job.kind.clone(),
            queue: job.queue.clone(),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) store: Backend,
    pub(crate) handlers: HashMap<String, Registered>,
    pub(crate) config: WorkerConfig,
    pub(crate) queues: Vec<Arc<QueueSlots>>,
    pub(crate) attempts: Arc<Attempts>,
    pub(crate) completions: mpsc::UnboundedSender<Completion>,
    /// Fired when shutdown begins: jobs not yet started are released, not started.
    pub(crate) stopping: CancellationToken,
    /// Where handlers read input files and attach result files.
    pub(crate) files: Option<jobs_files::FileStorage>,
}

impl Shared {
    pub(crate) fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.handlers.keys().cloned().collect();
        kinds.sort();
        kinds
    }

    pub(crate) fn start(&self, job: &Job, lease: Lease) -> Arc<Running> {
        let running = Running::new(job, lease, &self.store, self.files.clone());
        self.attempts.insert(running.clone());
        running
    }

    /// Hands an attempt's outcome to the completer: from here the attempt has ended.
    pub(crate) fn complete(&self, completion: Completion) {
        self.attempts.mark_ended(&completion.lease.token);
        // The completer outlives every executor, so the channel is open.
        let _ = self.completions.send(completion);
    }

    /// Waits until no job runs here, or `limit` passes; true when idle.
    pub(crate) async fn wait_idle(&self, limit: Duration) -> bool {
        let until = tokio::time::Instant::now().checked_add(limit);
        loop {
            if self.attempts.len() == 0 && self.queues.iter().all(|q| q.idle()) {
                return true;
            }
            if until.is_some_and(|u| tokio::time::Instant::now() >= u) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A claimed job's place in its queue (concurrency plus prefetch) and in the heartbeat
/// set. It is held until the job's outcome is written, so a worker never holds more jobs
/// without a durable outcome than that, and keeps their leases alive meanwhile: a slow
/// database slows claiming instead of letting finished jobs expire and run again.
/// Freeing it wakes the producer if more jobs may wait.
pub(crate) struct Slot {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    queue: Arc<QueueSlots>,
    attempts: Arc<Attempts>,
    token: LeaseToken,
}

impl Slot {
    /// One of the queue's free slots, which the caller claimed a job for.
    pub(crate) fn take(
        queue: &Arc<QueueSlots>,
        attempts: &Arc<Attempts>,
        token: LeaseToken,
    ) -> Self {
        let permit = queue
            .slots
            .clone()
            .try_acquire_owned()
            .expect("claimed no more than the free slots");
        Self {
            permit: Some(permit),
            queue: queue.clone(),
            attempts: attempts.clone(),
            token,
        }
    }

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
        self.attempts.remove(&self.token);
        // Returned before the wake-up, so the woken producer sees it.
        drop(self.permit.take());
        self.queue.slot_returned();
    }
}
