//! One queue's fetch loop: claim as many jobs as there are free slots (handler slots plus
//! prefetch), up to `MAX_CLAIM`, in one statement, when a wake-up, a freed slot or the
//! poll interval says jobs may wait.

use std::sync::{Arc, atomic::Ordering};

use jobs_core::{ClaimRequest, Job, Lease};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::runtime::{QueueSlots, Shared, Slot};

/// Most jobs one claim takes. With a large prefetch, one claim for all the room locked
/// and returned thousands of rows before the first handler started. Claims of this size
/// start work sooner; the next follows at once while a handler is idle, else when half
/// of what this process holds has run (`QueueSlots::wants_claim`). A drain of 200,000
/// no-op jobs at prefetch 8,000, alternating binaries: 38.9 / 43.0k jobs/s uncapped,
/// 43.0 / 45.1k capped; of 20,000 jobs, 35.4 / 36.1k against 37.8 / 41.8k. Claiming the
/// whole room in statements of this size (one after another) was measured too: 39.9 /
/// 42.4k and 38.2 / 41.3k.
const MAX_CLAIM: usize = 2_000;

pub(crate) struct Producer {
    shared: Arc<Shared>,
    queue: Arc<QueueSlots>,
    kinds: Vec<String>,
}

impl Producer {
    pub(crate) fn new(shared: Arc<Shared>, queue: Arc<QueueSlots>) -> Self {
        let kinds = shared.kinds();
        Self {
            shared,
            queue,
            kinds,
        }
    }

    /// Runs until `shutdown` fires; a claim in flight then finishes first, so the jobs it
    /// took are started or released like the others.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if self.tick().await {
                continue;
            }
            let (queue, poll) = (&self.queue, self.shared.config.poll_interval);
            tokio::select! {
                _ = queue.wake.notified() => {}
                _ = tokio::time::sleep(poll) => queue.expect_more(),
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One claim, if there is room and jobs may wait; starts what it claimed. True when
    /// it should claim again at once (it took every job it asked for, and room is left).
    pub(crate) async fn tick(&mut self) -> bool {
        let queue = &self.queue;
        let free = queue.slots.available_permits();
        if !queue.wants_claim(free) || !queue.maybe_more.swap(false, Ordering::Relaxed) {
            return false;
        }
        let config = &self.shared.config;
        let limit = free.min(MAX_CLAIM);
        let request = ClaimRequest {
            worker_id: config.worker_id.clone(),
            queues: vec![queue.name.clone()],
            kinds: Some(self.kinds.clone()),
            tenant: None,
            limit: limit as u32,
            lease: config.lease,
        };
        match self.shared.store.claim(&request).await {
            Ok(jobs) => {
                let full = jobs.len() == limit;
                let woken = queue.maybe_more.load(Ordering::Relaxed);
                jobs.into_iter().for_each(|job| self.start(job));
                let held = queue.capacity - queue.slots.available_permits();
                // A short claim may have been held back by the queue's limits (shared
                // with other processes) rather than have emptied it: while this process
                // holds jobs, each one it ends may free a place, so a freed slot claims
                // again; an empty claim with nothing held waits for a wake-up or the poll.
                if held > 0 {
                    queue.maybe_more.store(true, Ordering::Relaxed);
                }
                queue.held_after_claim.store(held, Ordering::Relaxed);
                (full || woken) && queue.wants_claim(queue.slots.available_permits())
            }
            Err(error) => {
                tracing::warn!(%error, queue = %queue.name, "claim failed; retrying after the poll interval");
                queue.maybe_more.store(true, Ordering::Relaxed);
                false
            }
        }
    }

    fn start(&self, job: Job) {
        let Some(lease) = Lease::of(&job) else {
            tracing::error!(job = %job.id, "claimed a job without a lease token");
            return;
        };
        let slot = Slot::take(&self.queue, &self.shared.attempts, lease.token);
        let Some(registered) = self.shared.handlers.get(&job.kind).cloned() else {
            // Claims filter by registered kinds, so this cannot happen.
            tracing::error!(kind = %job.kind, "claimed a job of an unregistered kind");
            return;
        };
        let span = tracing::info_span!("job", id = %job.id, kind = %job.kind, attempt = job.attempt, trace_id = job.trace_id.as_deref().unwrap_or(""));
        let run = crate::executor::execute(self.shared.clone(), job, lease, registered, slot);
        tokio::spawn(run.instrument(span));
    }
}
