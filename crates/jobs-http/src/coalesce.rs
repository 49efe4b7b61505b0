//! Group commit and group reads: requests handed in while earlier statements are under
//! way go together into the next one, so many concurrent small requests share a statement
//! (and, for writes, a transaction and its WAL flush) instead of each paying for one. A
//! lone request is sent at once; nothing waits on a timer.

use std::{future::Future, sync::Arc};

use jobs_core::{Enqueued, Job, JobError, JobId, JobStore, NewJob};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Most requests in one statement.
const MAX_GROUP: usize = 1_000;
/// Statements under way at once: while they run, the next group gathers.
const IN_FLIGHT: usize = 2;

type Reply<O> = oneshot::Sender<Result<O, JobError>>;

/// Hands requests to a background task that runs them in groups through `run_group`,
/// which answers each request of the group in order. Cheap to clone; the task stops when
/// every handle is dropped.
#[derive(Debug)]
pub struct Coalescer<I, O> {
    requests: mpsc::UnboundedSender<(I, Reply<O>)>,
}

impl<I, O> Clone for Coalescer<I, O> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Coalescer<I, O> {
    /// Starts the group task on the current tokio runtime.
    pub fn spawn<F, Fut>(run_group: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<O, JobError>>, JobError>> + Send + 'static,
    {
        let (requests, waiting) = mpsc::unbounded_channel();
        tokio::spawn(run_groups(waiting, run_group));
        Self { requests }
    }

    pub async fn call(&self, request: I) -> Result<O, JobError> {
        let stopped = || JobError::Unavailable("the request group task has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((request, reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run_groups<I, O, F, Fut>(mut waiting: mpsc::UnboundedReceiver<(I, Reply<O>)>, run_group: F)
where
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(Vec<I>) -> Fut,
    Fut: Future<Output = Result<Vec<Result<O, JobError>>, JobError>> + Send + 'static,
{
    let statements = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut group = Vec::new();
    loop {
        let Ok(permit) = statements.clone().acquire_owned().await else {
            return;
        };
        if waiting.recv_many(&mut group, MAX_GROUP).await == 0 {
            return;
        }
        let (requests, replies): (Vec<I>, Vec<Reply<O>>) = group.drain(..).unzip();
        let done = run_group(requests);
        tokio::spawn(async move {
            match done.await {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
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

/// Single enqueues grouped into multi-row inserts, one transaction per group. A job is
/// validated on its own first, so an invalid one never fails the others of its group.
#[derive(Debug, Clone)]
pub struct EnqueueCoalescer(Coalescer<NewJob, Enqueued>);

impl EnqueueCoalescer {
    /// Any `JobStore`: a concrete one, or `dyn JobStore`/`dyn ApiBackend` behind an `Arc`.
    pub fn spawn<S: JobStore + ?Sized>(store: Arc<S>) -> Self {
        Self(Coalescer::spawn(move |jobs: Vec<NewJob>| {
            let store = store.clone();
            async move {
                Ok(store
                    .enqueue_many(jobs)
                    .await?
                    .into_iter()
                    .map(Ok)
                    .collect())
            }
        }))
    }

    /// As `JobStore::enqueue`, sharing the transaction with jobs enqueued at the same moment.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, JobError> {
        job.validate()?;
        self.0.call(job).await
    }
}

/// Single reads by id grouped into one `SELECT` per group.
#[derive(Debug, Clone)]
pub struct GetCoalescer(Coalescer<JobId, Job>);

impl GetCoalescer {
    /// Any `JobStore`, as [`EnqueueCoalescer::spawn`].
    pub fn spawn<S: JobStore + ?Sized>(store: Arc<S>) -> Self {
        Self(Coalescer::spawn(move |ids: Vec<JobId>| {
            let store = store.clone();
            async move {
                // An id may come twice in one group (two readers of one job).
                let found = store.get_many(&ids).await?;
                Ok(ids
                    .iter()
                    .map(|id| found.get(id).cloned().ok_or(JobError::NotFound(*id)))
                    .collect())
            }
        }))
    }

    /// As `JobStore::get`: `tenant: None` looks across tenants.
    pub async fn get(&self, tenant: Option<&str>, id: JobId) -> Result<Job, JobError> {
        let job = self.0.call(id).await?;
        if job.visible_to(tenant) {
            Ok(job)
        } else {
            Err(JobError::NotFound(id))
        }
    }
}
