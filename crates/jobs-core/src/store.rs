//! The `JobStore` trait: batch-first and coarse. Each call is one statement for many jobs;
//! single-job calls are the batch calls with one element, not a second code path.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;

use crate::{BulkRequest, BulkResult, Job, JobError, JobId, LeaseToken, NewJob, State, storable};

/// What enqueueing one job produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    pub job: Job,
    /// True when a job with the same tenant and unique key already existed; `job` is that one.
    pub duplicate: bool,
    /// True when that job was pending and took this one's arguments and run time
    /// (`OnConflict::Replace`); `job` shows them.
    pub replaced: bool,
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

/// Which jobs a listing returns. Empty fields do not filter. Built with
/// `ListFilter::new().state(..).kind(..)`, so new filters keep old code compiling.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ListFilter {
    pub tenant: Option<String>,
    pub state: Option<State>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// The kind of the job's last error (the newest entry of its error history).
    pub error_kind: Option<String>,
    /// Inclusive lower bound on `created_at`.
    pub created_from: Option<OffsetDateTime>,
    /// Exclusive upper bound on `created_at`.
    pub created_to: Option<OffsetDateTime>,
    /// A job id (a UUID, matched against `id`) or else a unique key, matched exactly.
    pub id_or_key: Option<String>,
}

impl ListFilter {
    /// Longest `id_or_key`: the longest unique key.
    pub const ID_OR_KEY_MAX: usize = 255;

    pub fn new() -> Self {
        Self::default()
    }

    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    pub fn state(mut self, state: State) -> Self {
        self.state = Some(state);
        self
    }

    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Jobs whose last error is of this kind.
    pub fn error_kind(mut self, kind: impl Into<String>) -> Self {
        self.error_kind = Some(kind.into());
        self
    }

    /// Whether any field but the tenant narrows the selection.
    pub fn narrows(&self) -> bool {
        self.state.is_some()
            || self.kind.is_some()
            || self.queue.is_some()
            || self.error_kind.is_some()
            || self.created_from.is_some()
            || self.created_to.is_some()
            || self.id_or_key.is_some()
    }

    /// The job with this id, or the jobs with this unique key.
    pub fn id_or_key(mut self, text: impl Into<String>) -> Self {
        self.id_or_key = Some(text.into());
        self
    }

    /// Created at or after `at`.
    pub fn created_from(mut self, at: OffsetDateTime) -> Self {
        self.created_from = Some(at);
        self
    }

    /// Created before `at`.
    pub fn created_to(mut self, at: OffsetDateTime) -> Self {
        self.created_to = Some(at);
        self
    }

    pub fn validate(&self) -> Result<(), JobError> {
        let mut errors = Vec::new();
        storable::check_time(&mut errors, "created_after", self.created_from);
        storable::check_time(&mut errors, "created_before", self.created_to);
        for (field, value) in [
            ("kind", &self.kind),
            ("queue", &self.queue),
            ("error_kind", &self.error_kind),
            ("tenant", &self.tenant),
        ] {
            if let Some(value) = value {
                storable::check_text(&mut errors, field, value);
            }
        }
        if let Some(text) = &self.id_or_key {
            storable::check_text(&mut errors, "q", text);
            if text.is_empty() || text.len() > Self::ID_OR_KEY_MAX {
                errors.push(crate::FieldError::new(
                    "q",
                    "must be 1 to 255 bytes: a job id or a unique key",
                ));
            }
        }
        JobError::invalid_if_any(errors)
    }
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
        JobError::invalid_if_any(errors)
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
        let created_at = OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .filter(|at| storable::time_in_range(*at))
            .ok_or_else(invalid)?;
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

impl ClaimRequest {
    /// Most queues or kinds one claim may name.
    pub const MAX_NAMES: usize = 100;

    pub fn validate(&self) -> Result<(), JobError> {
        let mut errors = Vec::new();
        let id = &self.worker_id;
        if id.is_empty() || id.len() > 255 {
            errors.push(crate::FieldError::new(
                "worker_id",
                "must be 1 to 255 bytes",
            ));
        }
        storable::check_text(&mut errors, "worker_id", id);
        let lists = [
            ("queues", Some(&self.queues)),
            ("kinds", self.kinds.as_ref()),
        ];
        for (field, names) in lists {
            let Some(names) = names else { continue };
            if names.len() > Self::MAX_NAMES {
                errors.push(crate::FieldError::new(field, "must name at most 100"));
            }
            for (i, name) in names.iter().enumerate() {
                storable::check_text(&mut errors, &format!("{field}[{i}]"), name);
            }
        }
        JobError::invalid_if_any(errors)
    }
}

/// Names one attempt of one job. Every write a worker makes is conditional on the row
/// still running with this token, which each claim mints afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub job_id: JobId,
    pub token: LeaseToken,
    /// For the error history: which attempt this was.
    pub attempt: i32,
}

impl Lease {
    /// The lease of a job as claimed; `None` for a job that is not running.
    pub fn of(job: &Job) -> Option<Self> {
        Some(Self {
            job_id: job.id,
            token: job.lease_token?,
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
    /// The handler asked to run again after `delay`: back to pending, and the attempt
    /// is not charged.
    Snoozed {
        delay: Duration,
    },
}

impl Outcome {
    /// The error kind of an outcome whose result the database cannot store.
    pub const UNSTORABLE: &'static str = "unstorable_outcome";

    /// This outcome as the store can write it: error texts capped (`storable::caps`) with
    /// NUL characters replaced, retry delays clamped to `limits::DURATION_MAX_SECS`, and a
    /// result or item errors holding a NUL character turned into a permanent failure of
    /// kind `unstorable_outcome` that says why.
    pub fn into_storable(self) -> Outcome {
        use storable::{caps, json_has_nul, storable_text};
        let unstorable = |what: &str| Outcome::Failed {
            kind: Self::UNSTORABLE.into(),
            message: format!(
                "the handler's {what} holds a NUL character (\\u0000), which the database cannot store"
            ),
            retry: Retry::Never,
        };
        match self {
            Outcome::Completed { result } if json_has_nul(&result) => unstorable("result"),
            Outcome::Partial { result, .. } if json_has_nul(&result) => unstorable("result"),
            Outcome::Partial { item_errors, .. } if json_has_nul(&item_errors) => {
                unstorable("item errors")
            }
            Outcome::Failed {
                kind,
                message,
                retry,
            } => Outcome::Failed {
                kind: storable_text(&kind, caps::ERROR_KIND),
                message: storable_text(&message, caps::ERROR_MESSAGE),
                retry: match retry {
                    Retry::After(delay) => Retry::After(
                        delay.min(Duration::from_secs(crate::limits::DURATION_MAX_SECS)),
                    ),
                    other => other,
                },
            },
            Outcome::Snoozed { delay } => Outcome::Snoozed {
                delay: delay.min(Duration::from_secs(crate::limits::DURATION_MAX_SECS)),
            },
            other => other,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub lease: Lease,
    pub outcome: Outcome,
    /// Jobs enqueued in the transaction that stores a completed or partial outcome:
    /// they exist if and only if it is stored. Other outcomes drop them.
    pub follow_ups: Vec<NewJob>,
}

impl Finish {
    pub fn new(lease: Lease, outcome: Outcome) -> Self {
        Self {
            lease,
            outcome,
            follow_ups: Vec::new(),
        }
    }

    /// The attempt of `lease` completed with `result`.
    pub fn completed(lease: Lease, result: Value) -> Self {
        Self::new(lease, Outcome::Completed { result })
    }

    pub fn with_follow_ups(mut self, jobs: Vec<NewJob>) -> Self {
        self.follow_ups = jobs;
        self
    }
}

/// What one heartbeat found, by lease token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heartbeat {
    /// Attempts whose lease was extended.
    pub renewed: Vec<LeaseToken>,
    /// Renewed attempts someone asked to cancel.
    pub cancel_requested: Vec<LeaseToken>,
    /// Attempts no longer current (rescued, cancelled, claimed again); their handlers
    /// should stop.
    pub lost: Vec<LeaseToken>,
}

/// What one maintenance statement moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RescueReport {
    /// Running jobs with an expired lease, returned to pending.
    pub retried: u64,
    /// Jobs that ended as failed: lease expired on the last attempt, or deadline passed.
    pub failed: u64,
    /// Jobs with a cancel request whose lease expired, or that were pending.
    pub cancelled: u64,
}

impl QueueStats {
    /// A queue without jobs, not paused.
    pub fn empty(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            counts: Default::default(),
            oldest_pending_age: None,
            paused: false,
            limits: Default::default(),
            all_tenants_limits: Default::default(),
            throttled: 0,
        }
    }
}

impl RescueReport {
    pub fn total(&self) -> u64 {
        self.retried + self.failed + self.cancelled
    }
}

/// Per queue: how many jobs are in each state, and how long the oldest due job has waited.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QueueStats {
    pub queue: String,
    pub counts: std::collections::BTreeMap<State, u64>,
    /// Age of the oldest pending job whose run_at has come; `None` when nothing is due.
    pub oldest_pending_age: Option<Duration>,
    /// No job of the queue is claimed (for this tenant, or for every tenant).
    pub paused: bool,
    /// The limits of the viewer's scope: the tenant's own, or (for `None`) every tenant's.
    pub limits: crate::QueueLimits,
    /// In a tenant's view, the limits an operator set for every tenant together.
    pub all_tenants_limits: crate::QueueLimits,
    /// Due pending jobs that a limit holds back right now: all of them while the queue's
    /// concurrency or rate is used up, else those whose key is at its `key_concurrency`.
    pub throttled: u64,
}

#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Inserts all jobs or none. Validation errors name the item: `jobs[3].priority`.
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, JobError>;

    async fn enqueue(&self, job: NewJob) -> Result<Enqueued, JobError> {
        let mut done = self
            .enqueue_many(vec![job])
            .await
            .map_err(single_job_error)?;
        Ok(done.remove(0))
    }

    /// `tenant: None` looks across tenants (operators, workers).
    async fn get(&self, tenant: Option<&str>, id: JobId) -> Result<Job, JobError>;

    /// The jobs of `ids` that exist, across tenants: one statement for many readers.
    async fn get_many(&self, ids: &[JobId]) -> Result<HashMap<JobId, Job>, JobError>;

    /// Where `job` stands in its queue (counting at most `position_limit` jobs ahead) and
    /// when it will likely start and end.
    async fn estimate(&self, job: &Job, position_limit: u64) -> Result<crate::Estimate, JobError>;

    async fn list(&self, filter: &ListFilter, page: &PageRequest) -> Result<Page, JobError>;

    /// Atomically moves up to `limit` due jobs to running under this worker,
    /// highest priority first, oldest first within a priority.
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Job>, JobError>;

    /// Extends the leases of the worker's running jobs among `ids`.
    /// Extends the leases of these attempts, if they are still current.
    async fn heartbeat(&self, leases: &[Lease], lease: Duration) -> Result<Heartbeat, JobError>;

    /// Which of these attempts are still current with a cancel request: a cheap read that
    /// lets a worker hear of cancels made by any process.
    async fn cancel_requests(&self, leases: &[Lease]) -> Result<Vec<LeaseToken>, JobError>;

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
        self.finish_many(vec![Finish::new(*lease, outcome)])
            .await?
            .remove(0)
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

    /// Retries, cancels or deletes every job the request's filter matches, in bounded
    /// batches each conditional on the job's state (see `BulkRequest`).
    async fn bulk(&self, request: &BulkRequest) -> Result<BulkResult, JobError>;

    /// Returns up to `limit` running jobs whose lease expired to pending (or failed when
    /// no attempt or time is left, cancelled when a cancel was requested). One statement.
    async fn rescue_expired(&self, limit: u32) -> Result<RescueReport, JobError>;

    /// Ends up to `limit` pending jobs that may never run: failed when their deadline
    /// passed, cancelled when a cancel was requested. One statement.
    async fn end_unrunnable(&self, limit: u32) -> Result<RescueReport, JobError>;

    /// Counts per queue and state, for one tenant or all, and whether each queue is paused
    /// (for that tenant, or for every tenant). Paused queues without jobs are listed too.
    async fn queue_stats(&self, tenant: Option<&str>) -> Result<Vec<QueueStats>, JobError>;

    /// Deletes up to `limit` ended jobs whose retention expired. One statement.
    async fn purge_expired(&self, limit: u32) -> Result<u64, JobError>;
}

/// A single enqueue reports `priority`, not `jobs[0].priority`: the errors of a batch of
/// one, named as for that job alone.
pub fn single_job_error(error: JobError) -> JobError {
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
    fn outcomes_are_made_storable() {
        let nul = Outcome::Completed {
            result: serde_json::json!({"body": "a\u{0}b"}),
        };
        let Outcome::Failed { kind, retry, .. } = nul.into_storable() else {
            panic!("a NUL result must become a failure");
        };
        assert_eq!((kind.as_str(), retry), (Outcome::UNSTORABLE, Retry::Never));
        let long = Outcome::Failed {
            kind: "k\0".repeat(100),
            message: "m".repeat(100_000),
            retry: Retry::After(Duration::MAX),
        };
        let Outcome::Failed {
            kind,
            message,
            retry,
        } = long.into_storable()
        else {
            panic!("stays a failure");
        };
        assert!(kind.len() <= storable::caps::ERROR_KIND && !kind.contains('\0'));
        assert!(message.len() <= storable::caps::ERROR_MESSAGE);
        assert!(message.ends_with(storable::TRUNCATED_MARKER));
        assert_eq!(
            retry,
            Retry::After(Duration::from_secs(crate::limits::DURATION_MAX_SECS))
        );
    }

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
