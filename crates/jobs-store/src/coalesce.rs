//! Group commit for single-job enqueues: jobs handed in while earlier writes are under way
//! go together into the next multi-row insert, so many concurrent small requests share a
//! transaction (and its WAL flush) instead of each paying for one. A lone job is written
//! at once; nothing waits on a timer.

use std::sync::Arc;

use jobs_core::{Enqueued, JobError, JobStore, NewJob};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::SeaOrmStore;

/// Most jobs written together.
const MAX_GROUP: usize = 1_000;
/// Writes under way at once: while they run, the next group gathers.
const WRITES_IN_FLIGHT: usize = 2;

type Reply = oneshot::Sender<Result<Enqueued, JobError>>;

/// A handle to the group writer; cheap to clone. The writer stops when every handle is
/// dropped.
#[derive(Debug, Clone)]
pub struct EnqueueCoalescer {
    jobs: mpsc::UnboundedSender<(NewJob, Reply)>,
}

impl EnqueueCoalescer {
    /// Starts the group writer on the current tokio runtime.
    pub fn spawn(store: SeaOrmStore) -> Self {
        let (jobs, waiting) = mpsc::unbounded_channel();
        tokio::spawn(write_groups(store, waiting));
        Self { jobs }
    }

    /// Enqueues one job as `JobStore::enqueue` does, sharing the transaction with any
    /// jobs enqueued at the same moment. A job is invalid on its own: it never fails the
    /// others of its group.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, JobError> {
        job.validate()?;
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((job, reply))
            .map_err(|_| JobError::Unavailable("the enqueue writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| JobError::Unavailable("the enqueue writer has stopped".into()))?
    }
}

async fn write_groups(store: SeaOrmStore, mut waiting: mpsc::UnboundedReceiver<(NewJob, Reply)>) {
    let writes = Arc::new(Semaphore::new(WRITES_IN_FLIGHT));
    let mut group = Vec::new();
    loop {
        let Ok(permit) = writes.clone().acquire_owned().await else {
            return;
        };
        if waiting.recv_many(&mut group, MAX_GROUP).await == 0 {
            return;
        }
        let (jobs, replies): (Vec<NewJob>, Vec<Reply>) = group.drain(..).unzip();
        let store = store.clone();
        tokio::spawn(async move {
            match store.enqueue_many(jobs).await {
                Ok(done) => {
                    for (reply, enqueued) in replies.into_iter().zip(done) {
                        let _ = reply.send(Ok(enqueued));
                    }
                }
                Err(error) => {
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}
