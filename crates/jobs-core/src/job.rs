//! A job as stored: what the API shows and what a worker receives when it claims one.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::{JobId, LeaseToken, OnParentFailure, State, UniqueStates, WorkflowId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub tenant: String,
    pub queue: String,
    pub kind: String,
    pub args: Value,
    pub state: State,
    pub priority: i16,
    #[serde(with = "time::serde::rfc3339")]
    pub run_at: OffsetDateTime,
    /// The attempt now running or last run; 0 before the first claim.
    pub attempt: i32,
    pub max_attempts: i32,
    pub timeout_ms: Option<i64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub deadline: Option<OffsetDateTime>,
    /// How long an ended job is kept before retention deletes it.
    pub retention_ms: i64,
    pub progress: f64,
    pub stage: Option<String>,
    pub result: Option<Value>,
    /// Per-item errors of a partial success.
    pub item_errors: Option<Value>,
    /// One entry per failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    pub worker_id: Option<String>,
    /// The running attempt's lease token; only its claimer is told it.
    pub lease_token: Option<LeaseToken>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub lease_expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub cancel_requested_at: Option<OffsetDateTime>,
    pub unique_key: Option<String>,
    /// With a `unique_key`: the states of this job in which the key blocks another job.
    #[serde(default)]
    pub unique_states: Option<UniqueStates>,
    /// Counts against the queue's per-key limits.
    #[serde(default)]
    pub concurrency_key: Option<String>,
    pub trace_id: Option<String>,
    pub metadata: Value,
    /// How many jobs this one depends on.
    #[serde(default)]
    pub parents: i32,
    /// How many of them have not yet ended as it requires; it is `waiting` while any.
    #[serde(default)]
    pub waiting_on: i32,
    #[serde(default)]
    pub on_parent_failure: OnParentFailure,
    #[serde(default)]
    pub workflow_id: Option<WorkflowId>,
    #[serde(default)]
    pub workflow_step: Option<String>,
    /// Whether files were ever recorded for it (inputs or results): readers skip the
    /// file lookup of jobs without.
    #[serde(default)]
    pub has_files: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

impl Job {
    /// Whether a caller of `tenant` may see this job; `None` sees every tenant.
    pub fn visible_to(&self, tenant: Option<&str>) -> bool {
        tenant.is_none_or(|t| self.tenant == t)
    }

    /// Wall time of the last attempt, once it has ended.
    pub fn duration_ms(&self) -> Option<i64> {
        let (start, end) = (self.started_at?, self.finished_at?);
        Some((end - start).whole_milliseconds() as i64)
    }
}

/// What went wrong in one attempt. `kind` is machine-readable (`timeout`,
/// `lease_expired`, `panic`, or a handler's own), `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    pub attempt: i32,
    pub kind: String,
    pub message: String,
    /// When the store recorded it, by the database clock.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}
