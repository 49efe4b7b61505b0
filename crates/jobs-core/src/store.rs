//! The `JobStore` trait: batch-first and coarse. Each call is one statement for many jobs;
//! single-job calls are the batch calls with one element, not a second code path.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;

use crate::{Job, JobError, JobId, NewJob, State};

/// What enqueueing one job produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    pub job: Job,
    /// True when a job with the same tenant and unique key already existed; `job` is that one.
    pub duplicate: bool,
}

impl Enqueued {
    /// For callers that treat a duplicate as an error.
    pub fn require_new(self) -> Result<Job, JobError> {
        if self.duplicate {
            Err(JobError::Duplicate {
                existing: self.job.id,
            })
        } else {
            Ok(self.job)
        }
    }
}

/// Which jobs a listing returns. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    pub tenant: Option<String>,
    pub state: Option<State>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// Inclusive lower bound on `created_at`.
    pub created_from: Option<OffsetDateTime>,
    /// Exclusive upper bound on `created_at`.
    pub created_to: Option<OffsetDateTime>,
}

/// Newest first. `offset` suits shallow pages; `cursor` (from a previous page) stays fast
/// at any depth and is stable while new jobs arrive.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    /// 1..=100.
    pub limit: u32,
    pub offset: u64,
    pub cursor: Option<Cursor>,
}

impl PageRequest {
    pub const MAX_LIMIT: u32 = 100;

    pub fn first(limit: u32) -> Self {
        Self {
            limit,
            offset: 0,
            cursor: None,
        }
    }

    pub fn after(limit: u32, cursor: Cursor) -> Self {
        Self {
            limit,
            offset: 0,
            cursor: Some(cursor),
        }
    }

    pub fn validate(&self) -> Result<(), JobError> {
        let mut errors = Vec::new();
        if !(1..=Self::MAX_LIMIT).contains(&self.limit) {
            errors.push(crate::FieldError::new("limit", "must be between 1 and 100"));
        }
        if self.offset > i64::MAX as u64 {
            errors.push(crate::FieldError::new(
                "offset",
                "must be at most 9223372036854775807",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(JobError::Invalid(errors))
        }
    }
}

/// Position after the last job of a page: its creation time and id. Printed and parsed as
/// `<unix microseconds>.<uuid>`, which callers treat as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: OffsetDateTime,
    pub id: JobId,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.created_at.unix_timestamp_nanos() / 1_000;
        write!(f, "{micros}.{}", self.id)
    }
}

impl std::str::FromStr for Cursor {
    type Err = JobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            JobError::Invalid(vec![crate::FieldError::new(
                "cursor",
                "is not a cursor this API returned",
            )])
        };
        let (micros, id) = s.split_once('.').ok_or_else(invalid)?;
        let micros: i128 = micros.parse().map_err(|_| invalid())?;
        let nanos = micros.checked_mul(1_000).ok_or_else(invalid)?;
        let created_at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| invalid())?;
        let id = id.parse().map_err(|_| invalid())?;
        Ok(Self { created_at, id })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Job>,
    /// Present when more jobs follow.
    pub next_cursor: Option<Cursor>,
}

/// One claim round of one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    pub worker_id: String,
    pub queues: Vec<String>,
    /// Only these kinds; `None` claims any kind.
    pub kinds: Option<Vec<String>>,
    /// Only this tenant's jobs (remote workers authenticated as a tenant); `None`: any.
    pub tenant: Option<String>,
    pub limit: u32,
    /// How long the claim holds without a heartbeat.
    pub lease: Duration,
}

/// Names one attempt of one job by one worker. Every write a worker makes is
/// conditional on all three still matching the row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    pub job_id: JobId,
    pub worker_id: String,
    pub attempt: i32,
}

impl Lease {
    pub fn of(job: &Job) -> Option<Self> {
        Some(Self {
            job_id: job.id,
            worker_id: job.worker_id.clone()?,
            attempt: job.attempt,
        })
    }
}

/// When a failed attempt runs again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retry {
    /// After the store's retry policy backoff, if attempts and deadline allow.
    Backoff,
    /// After exactly this long (a server's `Retry-After`), if attempts and deadline allow.
    After(Duration),
    /// Never: the job fails now.
    Never,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed {
        result: Value,
    },
    /// Succeeded with some items failing.
    Partial {
        result: Value,
        item_errors: Value,
    },
    Failed {
        kind: String,
        message: String,
        retry: Retry,
    },
    /// The handler stopped after a cancel request.
    Cancelled,
    /// Not run to the end for reasons of the worker (shutdown): back to pending,
    /// and the attempt is not charged.
    Released,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub lease: Lease,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heartbeat {
    /// Jobs whose lease was extended.
    pub renewed: Vec<JobId>,
    /// Renewed jobs someone asked to cancel.
    pub cancel_requested: Vec<JobId>,
    /// Jobs this worker no longer owns; their handlers should stop.
    pub lost: Vec<JobId>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RescueReport {
    /// Running jobs with an expired lease, returned to pending.
    pub retried: u64,
    /// Jobs that ended as failed: lease expired on the last attempt, or deadline passed.
    pub failed: u64,
    /// Running jobs with an expired lease and a cancel request.
    pub cancelled: u64,
}

/// Per queue: how many jobs are in each state, and how long the oldest due job has waited.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    pub queue: String,
    pub counts: std::collections::BTreeMap<State, u64>,
    /// Age of the oldest pending job whose run_at has come; `None` when nothing is due.
    pub oldest_pending_age: Option<Duration>,
}

#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Inserts all jobs or none. Validation errors name the item: `jobs[3].priority`.
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, JobError>;

    async fn enqueue(&self, job: NewJob) -> Result<Enqueued, JobError> {
        let mut done = self.enqueue_many(vec![job]).await.map_err(unprefix)?;
        Ok(done.remove(0))
    }

    /// `tenant: None` looks across tenants (operators, workers).
    async fn get(&self, tenant: Option<&str>, id: JobId) -> Result<Job, JobError>;

    async fn list(&self, filter: &ListFilter, page: &PageRequest) -> Result<Page, JobError>;

    /// Atomically moves up to `limit` due jobs to running under this worker,
    /// highest priority first, oldest first within a priority.
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Job>, JobError>;

    /// Extends the leases of the worker's running jobs among `ids`.
    async fn heartbeat(
        &self,
        worker_id: &str,
        ids: &[JobId],
        lease: Duration,
    ) -> Result<Heartbeat, JobError>;

    /// Records progress (0.0..=1.0) and a stage text; only the lease holder may.
    async fn progress(
        &self,
        lease: &Lease,
        fraction: f64,
        stage: Option<&str>,
    ) -> Result<(), JobError>;

    /// Ends attempts. Each item gets the state it moved to, or `LeaseLost` with the row
    /// left untouched.
    async fn finish_many(
        &self,
        items: Vec<Finish>,
    ) -> Result<Vec<Result<State, JobError>>, JobError>;

    async fn finish(&self, lease: &Lease, outcome: Outcome) -> Result<State, JobError> {
        let item = Finish {
            lease: lease.clone(),
            outcome,
        };
        self.finish_many(vec![item]).await?.remove(0)
    }

    async fn complete(&self, lease: &Lease, result: Value) -> Result<State, JobError> {
        self.finish(lease, Outcome::Completed { result }).await
    }

    async fn complete_partial(
        &self,
        lease: &Lease,
        result: Value,
        item_errors: Value,
    ) -> Result<State, JobError> {
        self.finish(
            lease,
            Outcome::Partial {
                result,
                item_errors,
            },
        )
        .await
    }

    async fn fail(
        &self,
        lease: &Lease,
        kind: &str,
        message: &str,
        retry: Retry,
    ) -> Result<State, JobError> {
        let outcome = Outcome::Failed {
            kind: kind.to_owned(),
            message: message.to_owned(),
            retry,
        };
        self.finish(lease, outcome).await
    }

    /// Pending: cancelled at once. Running: cancel requested; the worker ends it.
    /// Ended: `IllegalTransition`.
    async fn cancel(&self, tenant: Option<&str>, id: JobId) -> Result<Job, JobError>;

    /// Runs an ended job again from attempt 0.
    async fn retry(&self, tenant: Option<&str>, id: JobId) -> Result<Job, JobError>;

    /// Returns running jobs with expired leases to pending (or failed when no attempt is
    /// left), and fails pending jobs whose deadline passed.
    async fn rescue(&self) -> Result<RescueReport, JobError>;

    /// Counts per queue and state, for one tenant or all.
    async fn queue_stats(&self, tenant: Option<&str>) -> Result<Vec<QueueStats>, JobError>;

    /// Deletes ended jobs whose retention expired, `batch` rows per statement.
    async fn purge_expired(&self, batch: u32) -> Result<u64, JobError>;
}

/// A single enqueue reports `priority`, not `jobs[0].priority`.
fn unprefix(error: JobError) -> JobError {
    match error {
        JobError::Invalid(fields) => JobError::Invalid(
            fields
                .into_iter()
                .map(|mut f| {
                    if let Some(rest) = f.field.strip_prefix("jobs[0].") {
                        f.field = rest.to_owned();
                    }
                    f
                })
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let cursor = Cursor {
            created_at: time::macros::datetime!(2026-11-25 17:47:45.123456 UTC),
            id: JobId::new(),
        };
        assert_eq!(cursor.to_string().parse::<Cursor>().unwrap(), cursor);
        assert!("nonsense".parse::<Cursor>().is_err());
        let huge = format!("{}.{}", "9".repeat(38), JobId::new());
        assert!(
            huge.parse::<Cursor>().is_err(),
            "an overflowing time is refused, not a panic"
        );
    }
}
