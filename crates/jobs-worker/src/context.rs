//! What a running handler knows about its job, and how it reports progress and hears
//! of cancellation.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use jobs_core::{FileOwner, FileRole, Job, JobError, JobId, NewJob, ParentResult, State};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Cheap to clone; every clone speaks for the same attempt.
#[derive(Debug, Clone)]
pub struct JobContext {
    inner: Arc<Inner>,
}

struct Inner {
    job: Job,
    token: CancellationToken,
    /// The latest unwritten progress; the worker writes it at most a few times a second.
    pending_progress: Mutex<Option<(f64, Option<String>)>>,
    /// Jobs to enqueue with the completion, in its transaction.
    follow_ups: Mutex<Vec<NewJob>>,
    /// Where the parents' results are read; `None` in handler unit tests.
    store: Option<crate::runtime::Backend>,
    /// Where the job's files are; `None` when the worker has no file storage.
    files: Option<jobs_files::FileStorage>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("job", &self.job.id)
            .finish()
    }
}

impl JobContext {
    pub(crate) fn new(
        job: Job,
        token: CancellationToken,
        store: Option<crate::runtime::Backend>,
        files: Option<jobs_files::FileStorage>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                job,
                token,
                pending_progress: Mutex::new(None),
                follow_ups: Mutex::new(Vec::new()),
                store,
                files,
            }),
        }
    }

    /// Enqueues `job` if, and when, this attempt's completed (or partial) outcome is
    /// stored: in the same transaction, so a pipeline continues exactly once per stored
    /// result. A failed, cancelled or lost attempt drops its follow-ups. Refused at once
    /// when the job is invalid.
    pub fn follow_up(&self, job: NewJob) -> Result<(), JobError> {
        job.validate()?;
        self.inner
            .follow_ups
            .lock()
            .expect("follow-ups lock")
            .push(job);
        Ok(())
    }

    /// The follow-ups so far, taken with the outcome.
    pub(crate) fn take_follow_ups(&self) -> Vec<NewJob> {
        std::mem::take(&mut *self.inner.follow_ups.lock().expect("follow-ups lock"))
    }

    /// The jobs this one depends on, with how each ended and its result (oldest parent
    /// first, all of them).
    pub async fn parent_results(&self) -> Result<Vec<ParentResult>, JobError> {
        let id = self.inner.job.id;
        if self.inner.job.parents == 0 {
            return Ok(Vec::new());
        }
        let limit = jobs_core::dependency::MAX_PARENTS as u32;
        Ok(self
            .store()?
            .parent_results(&[id], limit)
            .await?
            .remove(&id)
            .unwrap_or_default())
    }

    /// How many of this job's parents ended in each state: what a batch's callback reads.
    pub async fn parent_counts(&self) -> Result<BTreeMap<State, u64>, JobError> {
        if self.inner.job.parents == 0 {
            return Ok(BTreeMap::new());
        }
        self.store()?.parent_counts(self.inner.job.id).await
    }

    /// The bytes of this job's input file `name` (uploaded with the job, see the HTTP
    /// API's files); `Invalid` naming `name` when it has none of that name.
    pub async fn input_file(&self, name: &str) -> Result<Vec<u8>, JobError> {
        let (store, storage) = (self.store()?, self.storage()?);
        let job = self.inner.job.id;
        let bytes = storage.read_job_file(&**store, None, job, FileRole::Input, name);
        Ok(bytes.await?.to_vec())
    }

    /// Attaches `bytes` as the result file `name` of this attempt, at once (not with the
    /// outcome): the job's view lists it, with its download URL. It replaces a result
    /// file of the same name (an earlier attempt's). Refused once the attempt lost its
    /// lease (`LeaseLost`).
    pub async fn attach_file(&self, name: &str, bytes: impl Into<Vec<u8>>) -> Result<(), JobError> {
        let (store, storage) = (self.store()?, self.storage()?);
        let lease = jobs_core::Lease::of(&self.inner.job)
            .ok_or_else(|| JobError::Unavailable("this context's job holds no lease".into()))?;
        let owner = FileOwner::Result(lease);
        let tenant = self.tenant();
        storage
            .store_bytes(&**store, owner, tenant, name, bytes.into())
            .await?;
        Ok(())
    }

    fn storage(&self) -> Result<&jobs_files::FileStorage, JobError> {
        self.inner.files.as_ref().ok_or_else(|| {
            JobError::Unavailable("this worker has no file storage (WorkerBuilder::files)".into())
        })
    }

    /// Where a webhook delivery goes, `None` once its subscription was deleted.
    #[cfg(feature = "builtins")]
    pub(crate) async fn webhook_target(
        &self,
        webhook_id: uuid::Uuid,
    ) -> Result<Option<jobs_core::WebhookTarget>, JobError> {
        self.store()?
            .webhook_target(&self.inner.job.tenant, webhook_id)
            .await
    }

    fn store(&self) -> Result<&crate::runtime::Backend, JobError> {
        self.inner.store.as_ref().ok_or_else(|| {
            JobError::Unavailable("this context has no store to read parents from".into())
        })
    }

    pub fn id(&self) -> JobId {
        self.inner.job.id
    }

    /// 1 on the first run; use it with `id` to make side effects idempotent.
    pub fn attempt(&self) -> i32 {
        self.inner.job.attempt
    }

    pub fn kind(&self) -> &str {
        &self.inner.job.kind
    }

    pub fn tenant(&self) -> &str {
        &self.inner.job.tenant
    }

    pub fn trace_id(&self) -> Option<&str> {
        self.inner.job.trace_id.as_deref()
    }

    pub fn deadline(&self) -> Option<OffsetDateTime> {
        self.inner.job.deadline
    }

    /// The whole job row as claimed.
    pub fn job(&self) -> &Job {
        &self.inner.job
    }

    /// Fired when the job is cancelled, times out, or the worker shuts down.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.inner.token
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.token.is_cancelled()
    }

    pub async fn cancelled(&self) {
        self.inner.token.cancelled().await
    }

    /// Reports progress (clamped to 0.0..=1.0) and the stage the job is in: a `&str`, a
    /// `String`, an `Option<String>`, or `None` for no stage. Calls are coalesced: only
    /// the latest value is written, a few times a second at most.
    ///
    /// ```
    /// # let ctx = jobs_worker::testing::TestContext::new(jobs_core::NewJob::new("k", serde_json::json!({}))).build();
    /// ctx.progress(0.25, "download");
    /// ctx.progress(0.5, format!("page {}", 3));
    /// ctx.progress(1.0, None);
    /// ```
    pub fn progress(&self, fraction: f64, stage: impl Stage) {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        *self.inner.pending_progress.lock().expect("progress lock") =
            Some((fraction, stage.into_stage()));
    }

    /// The latest progress not yet written.
    pub(crate) fn pending_progress(&self) -> Option<(f64, Option<String>)> {
        self.inner
            .pending_progress
            .lock()
            .expect("progress lock")
            .clone()
    }

    pub(crate) fn take_progress(&self) -> Option<(f64, Option<String>)> {
        self.inner
            .pending_progress
            .lock()
            .expect("progress lock")
            .take()
    }
}

/// What `JobContext::progress` takes as the stage. Only one `Option` type implements it,
/// so a bare `None` needs no annotation.
pub trait Stage {
    fn into_stage(self) -> Option<String>;
}

impl Stage for &str {
    fn into_stage(self) -> Option<String> {
        Some(self.to_owned())
    }
}

impl Stage for &String {
    fn into_stage(self) -> Option<String> {
        Some(self.clone())
    }
}

impl Stage for String {
    fn into_stage(self) -> Option<String> {
        Some(self)
    }
}

impl Stage for Option<String> {
    fn into_stage(self) -> Option<String> {
        self
    }
}
