//! What a running handler knows about its job, and how it reports progress and hears
//! of cancellation.

use std::sync::{Arc, Mutex};

use jobs_core::{Job, JobId};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Cheap to clone; every clone speaks for the same attempt.
#[derive(Debug, Clone)]
pub struct JobContext {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    job: Job,
    token: CancellationToken,
    /// The latest unwritten progress; the worker writes it at most a few times a second.
    pending_progress: Mutex<Option<(f64, Option<String>)>>,
}

impl JobContext {
    pub(crate) fn new(job: Job, token: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                job,
                token,
                pending_progress: Mutex::new(None),
            }),
        }
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
