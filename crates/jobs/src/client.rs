//! The client: insert typed jobs (alone or in the caller's transaction), read them, and
//! wait for them to end without polling in user code.

use std::{collections::BTreeSet, ops::Deref, sync::Mutex, time::Duration};

use futures::Stream;
use jobs_core::{
    BulkRequest, BulkResult, Enqueued, Estimate, Job, JobArgs, JobError, JobId, JobOptions,
    JobStore, NewJob, QueueControl, QueueLimits, QueueScope, Workflow, WorkflowId, WorkflowStore,
    WorkflowView,
};
use jobs_core::{FileOwner, FileRole, FileStore};
use jobs_files::FileStorage;
use jobs_store::SeaOrmStore;
use sea_orm::{DatabaseTransaction, TransactionTrait};

/// `insert` and `insert_with` of a typed job, for each type that has `insert_job`.
macro_rules! typed_inserts {
    () => {
        /// Inserts a job of `args`' kind with the kind's defaults.
        pub async fn insert<A: JobArgs>(&self, args: &A) -> Result<Enqueued, JobError> {
            self.insert_job(args.to_job()?).await
        }

        /// Inserts with `options` laid over the kind's defaults.
        pub async fn insert_with<A: JobArgs>(
            &self,
            args: &A,
            options: JobOptions,
        ) -> Result<Enqueued, JobError> {
            self.insert_job(args.to_job_with(options)?).await
        }
    };
}

/// How long `wait` and `watch` sleep at most between reads when no change signal comes:
/// jobs run by other processes change without a signal to this one.
const MAX_RECHECK: Duration = Duration::from_secs(1);
const FIRST_RECHECK: Duration = Duration::from_millis(50);

/// Cheap to clone; clones share the connection pool and the wake-up channels, so a
/// worker built on `client.store()` hears of every insert made here.
#[derive(Debug, Clone)]
pub struct Client {
    store: SeaOrmStore,
}

impl Client {
    pub fn new(store: SeaOrmStore) -> Self {
        Self { store }
    }

    /// Connects to `postgres://…` or `sqlite://file.db?mode=rwc`; see `migrate`.
    pub async fn connect(url: &str) -> Result<Self, JobError> {
        Ok(Self::new(SeaOrmStore::connect(url).await?))
    }

    /// Brings the database's schema up to this version (idempotent; concurrent callers
    /// wait for each other).
    pub async fn migrate(&self) -> Result<(), JobError> {
        jobs_store::migrate_up(self.store.connection())
            .await
            .map_err(|e| JobError::Unavailable(format!("migration failed: {e}")))
    }

    /// The store, to build a `Worker` or an HTTP API on the same pool.
    pub fn store(&self) -> &SeaOrmStore {
        &self.store
    }

    typed_inserts!();

    /// Inserts an untyped job.
    pub async fn insert_job(&self, job: NewJob) -> Result<Enqueued, JobError> {
        self.store.enqueue(job).await
    }

    /// Inserts all or none, in one statement per thousand jobs.
    pub async fn insert_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, JobError> {
        self.store.enqueue_many(jobs).await
    }

    /// Inserts `job` with `files` (name, bytes) as its inputs: each is stored in `storage`
    /// first, then the job is created with them in one transaction, so no worker sees it
    /// without them. Its handler reads them with `JobContext::input_file`.
    pub async fn insert_with_files(
        &self,
        storage: &FileStorage,
        job: NewJob,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Enqueued, JobError> {
        let mut ids = Vec::with_capacity(files.len());
        for (name, bytes) in files {
            let staged =
                storage.store_bytes(&self.store, FileOwner::Staged, &job.tenant, &name, bytes);
            ids.push(staged.await?.id);
        }
        self.store.enqueue_with_files(job, &ids).await
    }

    /// The bytes of job `id`'s result file `name` (attached by its handler with
    /// `JobContext::attach_file`, or by a remote worker).
    pub async fn result_file(
        &self,
        storage: &FileStorage,
        id: JobId,
        name: &str,
    ) -> Result<Vec<u8>, JobError> {
        let bytes = storage.read_job_file(&self.store, None, id, FileRole::Result, name);
        Ok(bytes.await?.to_vec())
    }

    /// A transaction for your own writes and for jobs: they commit together or not at all,
    /// and workers are woken when it commits.
    pub async fn begin(&self) -> Result<Transaction, JobError> {
        let txn = self
            .store
            .connection()
            .begin()
            .await
            .map_err(|e| JobError::Unavailable(e.to_string()))?;
        Ok(self.adopt(txn))
    }

    /// Adopts a transaction you began yourself on the same database, so jobs can be
    /// inserted in it and workers are woken when it commits through the returned value.
    pub fn adopt(&self, txn: DatabaseTransaction) -> Transaction {
        Transaction {
            txn,
            store: self.store.clone(),
            queues: Mutex::default(),
        }
    }

    /// The job as it is now, in any tenant.
    pub async fn get(&self, id: JobId) -> Result<Job, JobError> {
        self.store.get(None, id).await
    }

    /// The job with where it stands in its queue (counted up to 1,000 jobs ahead) and
    /// when it will likely start and end; estimates are `None` without run-time history.
    pub async fn get_with_estimate(&self, id: JobId) -> Result<(Job, Estimate), JobError> {
        let job = self.store.get(None, id).await?;
        let estimate = self.store.estimate(&job, Estimate::POSITION_LIMIT).await?;
        Ok((job, estimate))
    }

    /// Cancels a pending job, or asks the worker running it to stop.
    pub async fn cancel(&self, id: JobId) -> Result<Job, JobError> {
        self.store.cancel(None, id).await
    }

    /// Runs an ended job again from its first attempt.
    pub async fn retry(&self, id: JobId) -> Result<Job, JobError> {
        self.store.retry(None, id).await
    }

    /// Pauses `queue` for every tenant: no process claims its jobs from now on (remote
    /// workers included); running jobs finish. `QueueScope::Tenant` through
    /// `store().pause_queue` pauses one tenant's.
    pub async fn pause_queue(&self, queue: &str) -> Result<(), JobError> {
        self.store.pause_queue(QueueScope::AllTenants, queue).await
    }

    /// Lifts `pause_queue` and wakes idle workers at once.
    pub async fn resume_queue(&self, queue: &str) -> Result<(), JobError> {
        self.store.resume_queue(QueueScope::AllTenants, queue).await
    }

    /// Replaces `queue`'s limits for every tenant, counting all tenants' jobs together
    /// (`QueueLimits::default()` lifts them); limits a tenant set over HTTP hold as well.
    /// They hold for every claim that starts after this returns, in every process, remote
    /// workers included. `QueueScope::Tenant` through `store().set_queue_limits` limits one
    /// tenant's jobs.
    pub async fn set_queue_limits(
        &self,
        queue: &str,
        limits: &QueueLimits,
    ) -> Result<(), JobError> {
        self.store
            .set_queue_limits(QueueScope::AllTenants, queue, limits)
            .await
    }

    /// `queue`'s limits for every tenant, as `set_queue_limits` left them.
    pub async fn queue_limits(&self, queue: &str) -> Result<QueueLimits, JobError> {
        self.store.queue_limits(QueueScope::AllTenants, queue).await
    }

    /// Per queue: jobs by state, the oldest due job's wait, whether it is paused, its
    /// limits for every tenant, and how many due jobs a limit holds back.
    pub async fn queues(&self) -> Result<Vec<jobs_core::QueueStats>, JobError> {
        self.store.queue_stats(None).await
    }

    /// Retries, cancels or deletes every job `request.filter` matches (across tenants
    /// unless the filter names one), in bounded batches: the dead-letter workflow, e.g.
    /// `BulkRequest::new(BulkAction::Retry, ListFilter::new().state(State::Failed)
    /// .error_kind("timeout"))`. Refuses a filter that names nothing unless `.all()`.
    pub async fn bulk(&self, request: BulkRequest) -> Result<BulkResult, JobError> {
        self.store.bulk(&request).await
    }

    /// Creates a workflow (`Workflow::new("etl").step(..).after([..])`): its steps' jobs
    /// exist at once, all or none, and each step waits for the steps it names.
    pub async fn create_workflow(&self, workflow: Workflow) -> Result<WorkflowView, JobError> {
        self.store.create_workflow(workflow).await
    }

    /// The workflow with each step's state.
    pub async fn workflow(&self, id: WorkflowId) -> Result<WorkflowView, JobError> {
        self.store.workflow(None, id).await
    }

    /// Cancels every step not yet ended; nothing of the workflow runs afterwards.
    pub async fn cancel_workflow(&self, id: WorkflowId) -> Result<WorkflowView, JobError> {
        self.store.cancel_workflow(None, id).await
    }

    /// Runs the workflow's failed and cancelled steps again, in the graph's order.
    pub async fn retry_workflow(&self, id: WorkflowId) -> Result<WorkflowView, JobError> {
        self.store.retry_workflow(None, id).await
    }

    /// Enqueues `jobs` and a `callback` that runs once, after every one of them ended
    /// however (`JobContext::parent_counts` gives their states). All or none.
    pub async fn insert_batch_with_callback(
        &self,
        jobs: Vec<NewJob>,
        callback: NewJob,
    ) -> Result<Vec<Enqueued>, JobError> {
        let callback = jobs.iter().fold(callback, |c, j| c.after_ended(j.id));
        let mut all = jobs;
        all.push(callback);
        self.store.enqueue_many(all).await
    }

    /// Resolves with the job once it has ended (completed, partial, failed or cancelled).
    /// Changes made through this process are heard at once; others are read at most a
    /// second late.
    pub async fn wait(&self, id: JobId) -> Result<Job, JobError> {
        let mut watch = std::pin::pin!(self.watch(id));
        let mut last = None;
        while let Some(job) = futures::StreamExt::next(&mut watch).await {
            last = Some(job?);
        }
        last.ok_or(JobError::NotFound(id))
    }

    /// The job each time it is seen changed (state, attempt, progress or stage), starting
    /// with how it is when the stream is first polled; the stream ends after the job's
    /// ended state, or after an error. Nothing is read before the first poll.
    pub fn watch(&self, id: JobId) -> impl Stream<Item = Result<Job, JobError>> + Send + 'static {
        let watcher = Watcher {
            store: self.store.clone(),
            changes: self.store.watch_job(id),
            id,
            last: None,
            done: false,
        };
        futures::stream::unfold(watcher, |mut w| async move {
            let job = w.next_change().await?;
            Some((job, w))
        })
    }
}

struct Watcher {
    store: SeaOrmStore,
    changes: jobs_core::JobChanges,
    id: JobId,
    last: Option<(jobs_core::State, i32, u64, Option<String>)>,
    done: bool,
}

impl Watcher {
    /// The next differing view of the job; `None` once the stream is over.
    async fn next_change(&mut self) -> Option<Result<Job, JobError>> {
        if self.done {
            return None;
        }
        let mut recheck = FIRST_RECHECK;
        loop {
            let job = match self.store.get(None, self.id).await {
                Ok(job) => job,
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
            };
            let seen = Some((
                job.state,
                job.attempt,
                job.progress.to_bits(),
                job.stage.clone(),
            ));
            if seen != self.last {
                self.last = seen;
                self.done = job.state.is_ended();
                return Some(Ok(job));
            }
            self.signal_or(recheck).await;
            recheck = (recheck * 2).min(MAX_RECHECK);
        }
    }

    /// Returns when this job may have changed: a signal for it, or `recheck` passing.
    async fn signal_or(&mut self, recheck: Duration) {
        let _ = tokio::time::timeout(recheck, self.changes.next()).await;
    }
}

/// A database transaction that also inserts jobs. Dereferences to SeaORM's
/// `DatabaseTransaction`, so your own statements run in it (`txn.execute(...)`,
/// `Entity::insert(..).exec(&*txn)`). Dropped without `commit`, it rolls back.
#[derive(Debug)]
pub struct Transaction {
    txn: DatabaseTransaction,
    store: SeaOrmStore,
    /// Queues that got jobs here: woken at commit.
    queues: Mutex<BTreeSet<String>>,
}

impl Deref for Transaction {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

impl Transaction {
    typed_inserts!();

    pub async fn insert_job(&self, job: NewJob) -> Result<Enqueued, JobError> {
        // Checked alone first, so errors name `priority` rather than `jobs[0].priority`.
        job.validate()?;
        let mut done = self.insert_many(vec![job]).await?;
        Ok(done.remove(0))
    }

    pub async fn insert_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, JobError> {
        let done = self.store.enqueue_many_in(&self.txn, jobs).await?;
        let mut queues = self.queues.lock().expect("queues lock");
        queues.extend(
            done.iter()
                // A replaced holder took a new run time: it may be due now.
                .filter(|e| !e.duplicate || e.replaced)
                .map(|e| e.job.queue.clone()),
        );
        Ok(done)
    }

    /// Commits your writes and the jobs together, then wakes this process's workers for
    /// the queues that got jobs (PostgreSQL also tells every other process at commit).
    pub async fn commit(self) -> Result<(), JobError> {
        let queues = std::mem::take(&mut *self.queues.lock().expect("queues lock"));
        self.txn
            .commit()
            .await
            .map_err(|e| JobError::Unavailable(format!("commit failed: {e}")))?;
        for queue in queues {
            self.store.wake_workers(&queue);
        }
        Ok(())
    }

    /// Discards your writes and the jobs.
    pub async fn rollback(self) -> Result<(), JobError> {
        self.txn
            .rollback()
            .await
            .map_err(|e| JobError::Unavailable(format!("rollback failed: {e}")))
    }
}
