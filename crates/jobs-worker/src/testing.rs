//! Testing handlers without a database: a `JobContext` for a job that was never stored,
//! and a way to run a typed job's `run` with it and read what it reported.
//!
//! ```
//! use jobs_core::JobArgs;
//! use jobs_worker::{HandlerError, JobContext, Output, TypedJob, testing};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Count { to: u32 }
//!
//! impl JobArgs for Count {
//!     const KIND: &'static str = "count";
//! }
//!
//! #[async_trait::async_trait]
//! impl TypedJob for Count {
//!     type Output = u32;
//!     async fn run(self, ctx: &JobContext) -> Result<Output<u32>, HandlerError> {
//!         if ctx.attempt() < 2 {
//!             return Err(HandlerError::retryable("flaky", "first attempt"));
//!         }
//!         ctx.progress(1.0, "counted");
//!         Ok(self.to.into())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! assert_eq!(testing::run(Count { to: 3 }).await.unwrap_err().kind, "flaky");
//!
//! let ctx = testing::TestContext::of(&Count { to: 3 }).unwrap().attempt(2).build();
//! let output = testing::run_with(Count { to: 3 }, &ctx).await.unwrap();
//! assert_eq!(output, Output::Completed(3));
//! assert_eq!(testing::progress(&ctx), Some((1.0, Some("counted".into()))));
//! assert!(!ctx.is_cancelled());
//! # });
//! ```

use jobs_core::{Job, JobArgs, JobError, LeaseToken, NewJob, State};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::{HandlerError, JobContext, Output, TypedJob};

/// A job row as a worker would have claimed it, built from a `NewJob`: running its first
/// attempt (unless set otherwise), with a lease of its own.
#[derive(Debug, Clone)]
pub struct TestContext {
    job: Job,
}

impl TestContext {
    pub fn new(job: NewJob) -> Self {
        let now = OffsetDateTime::now_utc();
        let job = Job {
            id: job.id,
            tenant: job.tenant,
            queue: job.queue,
            kind: job.kind,
            args: job.args,
            state: State::Running,
            priority: job.priority,
            run_at: job.run_at.unwrap_or(now),
            attempt: 1,
            max_attempts: job.max_attempts,
            timeout_ms: job.timeout.map(|t| t.as_millis() as i64),
            deadline: job.deadline,
            retention_ms: job.retention.as_millis() as i64,
            progress: 0.0,
            stage: None,
            result: None,
            item_errors: None,
            errors: Vec::new(),
            worker_id: Some("test".into()),
            lease_token: Some(LeaseToken::from(uuid::Uuid::new_v4())),
            lease_expires_at: None,
            cancel_requested_at: None,
            unique_states: job.unique_key.as_ref().map(|_| job.unique_states),
            unique_key: job.unique_key,
            concurrency_key: job.concurrency_key,
            trace_id: job.trace_id,
            metadata: job.metadata,
            parents: job.depends_on.len() as i32,
            waiting_on: 0,
            on_parent_failure: job.on_parent_failure,
            workflow_id: job.workflow.as_ref().map(|(id, _)| *id),
            workflow_step: job.workflow.map(|(_, step)| step),
            has_files: false,
            created_at: now,
            updated_at: now,
            started_at: Some(now),
            finished_at: None,
            expires_at: None,
        };
        Self { job }
    }

    /// A job of these arguments, with the kind's defaults.
    pub fn of<J: JobArgs>(args: &J) -> Result<Self, JobError> {
        Ok(Self::new(args.to_job()?))
    }

    /// Which attempt this is (1-based).
    pub fn attempt(mut self, attempt: i32) -> Self {
        self.job.attempt = attempt;
        self
    }

    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.job.tenant = tenant.into();
        self
    }

    pub fn deadline(mut self, deadline: OffsetDateTime) -> Self {
        self.job.deadline = Some(deadline);
        self
    }

    pub fn trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.job.trace_id = Some(trace_id.into());
        self
    }

    /// The job row the context will hold.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The context; keep a clone to read progress or to cancel the job from the test
    /// (`ctx.cancellation_token().cancel()`).
    pub fn build(self) -> JobContext {
        JobContext::new(self.job, CancellationToken::new(), None, None)
    }
}

/// A context for a job of these arguments, on its first attempt.
pub fn context<J: JobArgs>(args: &J) -> Result<JobContext, JobError> {
    Ok(TestContext::of(args)?.build())
}

/// Runs a typed job's `run` once, with a first-attempt context.
pub async fn run<J: TypedJob>(args: J) -> Result<Output<J::Output>, HandlerError> {
    let ctx = context(&args).map_err(|e| HandlerError::permanent("invalid_args", e.to_string()))?;
    run_with(args, &ctx).await
}

/// Runs a typed job's `run` once, with `ctx`.
pub async fn run_with<J: TypedJob>(
    args: J,
    ctx: &JobContext,
) -> Result<Output<J::Output>, HandlerError> {
    args.run(ctx).await
}

/// The latest progress the job reported through `ctx`: fraction and stage.
pub fn progress(ctx: &JobContext) -> Option<(f64, Option<String>)> {
    ctx.pending_progress()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Poll;

    impl JobArgs for Poll {
        const KIND: &'static str = "poll";
    }

    /// Reports progress until cancelled, then ends its job as cancelled.
    #[async_trait::async_trait]
    impl TypedJob for Poll {
        type Output = ();

        async fn run(self, ctx: &JobContext) -> Result<Output<()>, HandlerError> {
            ctx.progress(0.1, "waiting");
            ctx.cancelled().await;
            Err(HandlerError::cancel("asked to stop"))
        }
    }

    #[tokio::test]
    async fn a_test_cancels_the_job_and_reads_what_it_reported() {
        let ctx = TestContext::of(&Poll).unwrap().tenant("acme").build();
        assert_eq!(
            (ctx.tenant(), ctx.attempt(), ctx.kind()),
            ("acme", 1, "poll")
        );
        let running = tokio::spawn({
            let ctx = ctx.clone();
            async move { run_with(Poll, &ctx).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!running.is_finished(), "runs until cancelled");
        ctx.cancellation_token().cancel();
        let error = running.await.unwrap().unwrap_err();
        assert!(error.is_cancel());
        assert_eq!(progress(&ctx), Some((0.1, Some("waiting".into()))));
    }
}
