//! Writes outcomes in batches: whatever queued up while the previous writes ran goes in
//! the next statement, so a lone completion is written at once. A failed write is retried
//! (the slots, and so the leases, stay held) until `give_up` fires at shutdown; then what
//! is unwritten is logged and dropped.

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use jobs_core::{Finish, JobError, State};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::runtime::{Backend, Completion};

/// Most outcomes written in one statement.
const BATCH: usize = 4_000;

/// Batches written at once. With one, the next batch waits for the previous one's
/// commit, and the database sits partly idle between them (a quarter of two cores in a
/// drain); batches hold distinct jobs, so they do not conflict.
const WRITERS: usize = 2;

pub(crate) struct Completer {
    store: Backend,
    completed: mpsc::UnboundedReceiver<Completion>,
    give_up: CancellationToken,
}

impl Completer {
    pub(crate) fn new(
        store: Backend,
        completed: mpsc::UnboundedReceiver<Completion>,
        give_up: CancellationToken,
    ) -> Self {
        Self {
            store,
            completed,
            give_up,
        }
    }

    /// Runs until every sender is gone or `flushed` fires (every slot is back, so every
    /// outcome was written or given up on).
    pub(crate) async fn run(self, flushed: CancellationToken) {
        let Self {
            store,
            mut completed,
            give_up,
        } = self;
        let writer = Writer { store, give_up };
        let mut writing = FuturesUnordered::new();
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                biased;
                Some(_) = writing.next() => {}
                n = completed.recv_many(&mut batch, BATCH), if writing.len() < WRITERS => {
                    if n == 0 {
                        break;
                    }
                    writing.push(writer.write(batch));
                }
                _ = flushed.cancelled() => break,
            }
        }
        while writing.next().await.is_some() {}
    }
}

/// Writes batches of outcomes; shared by the batches in flight.
struct Writer {
    store: Backend,
    give_up: CancellationToken,
}

impl Writer {
    /// Writes `batch` in one statement (retrying until `give_up`), freeing each slot
    /// once its outcome is written or given up on.
    async fn write(&self, mut batch: Vec<Completion>) {
        let finishes: Vec<Finish> = batch
            .iter()
            .map(|c| Finish::new(c.lease, c.outcome.clone()).with_follow_ups(c.follow_ups.clone()))
            .collect();
        let Some(results) = self.finish_many(finishes).await else {
            for completion in batch.drain(..) {
                tracing::error!(job = %completion.lease.job_id, attempt = completion.lease.attempt, outcome = ?completion.outcome, "outcome not written before shutdown; the job will run again after its lease expires");
            }
            return;
        };
        for (completion, result) in batch.drain(..).zip(results) {
            match result {
                Ok(state) => {
                    let (kind, queue) = (&completion.kind, &completion.queue);
                    crate::metrics::ended(kind, queue, completion.failure, state)
                }
                Err(error) => {
                    tracing::warn!(job = %completion.lease.job_id, %error, "outcome not written")
                }
            }
        }
    }

    /// `None` once `give_up` fires before the outcomes could be written.
    async fn finish_many(&self, finishes: Vec<Finish>) -> Option<Vec<Result<State, JobError>>> {
        let give_up = &self.give_up;
        loop {
            let attempt = tokio::select! {
                result = self.store.finish_many(finishes.clone()) => result,
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
}
