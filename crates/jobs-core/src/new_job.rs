//! A job to be enqueued, with defaults that work and validation that names every bad field.

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use crate::{
    Dependency, FieldError, JobError, JobId, OnConflict, OnParentFailure, UniqueOpts, UniqueStates,
    WorkflowId, dependency, storable,
};

/// Bounds that validation enforces; exported so the API can document them.
pub mod limits {
    pub const NAME_MAX_LEN: usize = 128;
    pub const KEY_MAX_LEN: usize = 255;
    pub const PRIORITY_MAX: i16 = 10;
    pub const MAX_ATTEMPTS_MAX: i32 = 1_000;
    pub const DEFAULT_PRIORITY: i16 = 5;
    pub const DEFAULT_MAX_ATTEMPTS: i32 = 20;
    pub const DEFAULT_QUEUE: &str = "default";
    pub const DEFAULT_TENANT: &str = "default";
    /// Ended jobs are kept a week unless the job asks otherwise.
    pub const DEFAULT_RETENTION_SECS: u64 = 7 * 24 * 3600;
    /// Nothing is kept, waited for or delayed longer than ten years; longer retry delays
    /// (a server's `Retry-After`) are clamped to it.
    pub const DURATION_MAX_SECS: u64 = 10 * 365 * 24 * 3600;
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Chosen by the caller, or generated; lets a caller know the id before enqueueing.
    pub id: JobId,
    pub kind: String,
    pub args: Value,
    pub tenant: String,
    pub queue: String,
    /// 0..=10; 10 runs first.
    pub priority: i16,
    /// Run no earlier than this instant. Exclusive with `delay`.
    pub run_at: Option<OffsetDateTime>,
    /// Run no earlier than this long after the database receives the job.
    pub delay: Option<Duration>,
    pub max_attempts: i32,
    /// Per-attempt limit; `None` leaves it to the worker's default for the kind.
    pub timeout: Option<Duration>,
    /// After this instant the job is failed for good instead of run or retried.
    pub deadline: Option<OffsetDateTime>,
    /// How long the job is kept after it ends.
    pub retention: Duration,
    /// Per tenant: while a job holding this key is in one of its `unique_states`, a
    /// second job with the key is not created (see `on_conflict`). Built by `UniqueOpts`
    /// when uniqueness is by arguments, kind or period (the key then carries them).
    pub unique_key: Option<String>,
    /// The states of this job in which its key blocks another; must include pending and
    /// running. Default: those two.
    pub unique_states: UniqueStates,
    /// What enqueueing does when another job holds the key.
    pub on_conflict: OnConflict,
    /// Per tenant and queue: jobs sharing this key (a customer id, an API host) count
    /// against the queue's `key_concurrency` and `key_rate` limits together.
    pub concurrency_key: Option<String>,
    pub trace_id: Option<String>,
    /// Free-form JSON object for the caller's own bookkeeping.
    pub metadata: Value,
    /// Jobs that must end first (see `Dependency`): existing ones, or others of the same
    /// batch. With any, the job is created `waiting`.
    pub depends_on: Vec<Dependency>,
    pub on_parent_failure: OnParentFailure,
    /// Set by the store for the steps of a workflow.
    pub workflow: Option<(WorkflowId, String)>,
}

impl NewJob {
    pub fn new(kind: impl Into<String>, args: Value) -> Self {
        Self {
            id: JobId::new(),
            kind: kind.into(),
            args,
            tenant: limits::DEFAULT_TENANT.to_owned(),
            queue: limits::DEFAULT_QUEUE.to_owned(),
            priority: limits::DEFAULT_PRIORITY,
            run_at: None,
            delay: None,
            max_attempts: limits::DEFAULT_MAX_ATTEMPTS,
            timeout: None,
            deadline: None,
            retention: Duration::from_secs(limits::DEFAULT_RETENTION_SECS),
            unique_key: None,
            unique_states: UniqueStates::DEFAULT,
            on_conflict: OnConflict::Return,
            concurrency_key: None,
            trace_id: None,
            metadata: Value::Object(Default::default()),
            depends_on: Vec::new(),
            on_parent_failure: OnParentFailure::Cancel,
            workflow: None,
        }
    }

    /// Runs only after `parent` completed.
    pub fn after(mut self, parent: JobId) -> Self {
        self.depends_on.push(Dependency::completed(parent));
        self
    }

    /// Runs once `parent` ended, however it ended.
    pub fn after_ended(mut self, parent: JobId) -> Self {
        self.depends_on.push(Dependency::ended(parent));
        self
    }

    /// What happens to this job if a parent it needs completed fails or is cancelled.
    pub fn on_parent_failure(mut self, policy: OnParentFailure) -> Self {
        self.on_parent_failure = policy;
        self
    }

    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    pub fn run_at(mut self, at: OffsetDateTime) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    pub fn max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn deadline(mut self, deadline: OffsetDateTime) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Counts the job against its queue's per-key limits with the other jobs of `key`.
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }

    /// Unique by every option of `unique` (its key computed now, at the enqueue time).
    pub fn unique(self, unique: impl Into<UniqueOpts>) -> Self {
        unique.into().apply(self)
    }

    pub fn trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }

    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// Every problem at once, so a caller can fix a request in one go.
    pub fn validate(&self) -> Result<(), JobError> {
        let mut errors = Vec::new();
        check_name(&mut errors, "kind", &self.kind);
        check_name(&mut errors, "queue", &self.queue);
        check_name(&mut errors, "tenant", &self.tenant);
        if !(0..=limits::PRIORITY_MAX).contains(&self.priority) {
            errors.push(FieldError::new("priority", "must be between 0 and 10"));
        }
        if !(1..=limits::MAX_ATTEMPTS_MAX).contains(&self.max_attempts) {
            errors.push(FieldError::new(
                "max_attempts",
                "must be between 1 and 1000",
            ));
        }
        if self.run_at.is_some() && self.delay.is_some() {
            errors.push(FieldError::new("delay", "give run_at or delay, not both"));
        }
        check_duration(&mut errors, "delay", self.delay, false);
        check_duration(&mut errors, "timeout", self.timeout, true);
        check_duration(&mut errors, "retention", Some(self.retention), false);
        if let (Some(deadline), Some(run_at)) = (self.deadline, self.run_at) {
            if deadline <= run_at {
                errors.push(FieldError::new("deadline", "must be after run_at"));
            }
        }
        storable::check_time(&mut errors, "run_at", self.run_at);
        storable::check_time(&mut errors, "deadline", self.deadline);
        check_key(&mut errors, "unique_key", self.unique_key.as_deref());
        if self.unique_key.is_some() && !self.unique_states.is_allowed() {
            errors.push(crate::unique::states_error());
        }
        check_key(
            &mut errors,
            "concurrency_key",
            self.concurrency_key.as_deref(),
        );
        check_key(&mut errors, "trace_id", self.trace_id.as_deref());
        storable::check_json(&mut errors, "args", &self.args);
        if !self.metadata.is_object() {
            errors.push(FieldError::new("metadata", "must be a JSON object"));
        }
        storable::check_json(&mut errors, "metadata", &self.metadata);
        dependency::check_list(&mut errors, self);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(JobError::Invalid(errors))
        }
    }
}

pub(crate) fn check_name(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/');
    if value.is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if value.len() > limits::NAME_MAX_LEN {
        errors.push(FieldError::new(field, "must be at most 128 characters"));
    } else if !value.chars().all(allowed) {
        errors.push(FieldError::new(
            field,
            "may contain only ASCII letters, digits and _ - . : /",
        ));
    }
}

fn check_key(errors: &mut Vec<FieldError>, field: &str, value: Option<&str>) {
    match value {
        Some("") => errors.push(FieldError::new(field, "must not be empty when given")),
        Some(v) if v.len() > limits::KEY_MAX_LEN => {
            errors.push(FieldError::new(field, "must be at most 255 bytes"))
        }
        Some(v) => storable::check_text(errors, field, v),
        None => {}
    }
}

fn check_duration(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<Duration>,
    positive: bool,
) {
    match value {
        Some(d) if positive && d.is_zero() => {
            errors.push(FieldError::new(field, "must be greater than zero"))
        }
        Some(d) if d > Duration::from_secs(limits::DURATION_MAX_SECS) => {
            errors.push(FieldError::new(field, "must be at most ten years"))
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(job: &NewJob) -> Vec<String> {
        match job.validate() {
            Ok(()) => vec![],
            Err(JobError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            Err(other) => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert!(
            NewJob::new("send_email", json!({"to": "a@b"}))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let now = OffsetDateTime::now_utc();
        let job = NewJob::new("", json!(null))
            .queue("bad queue")
            .tenant("x".repeat(200))
            .priority(11)
            .max_attempts(0)
            .run_at(now)
            .delay(Duration::from_secs(1))
            .timeout(Duration::ZERO)
            .deadline(now)
            .unique_key("")
            .metadata(json!([1]));
        assert_eq!(
            fields(&job),
            [
                "kind",
                "queue",
                "tenant",
                "priority",
                "max_attempts",
                "delay",
                "timeout",
                "deadline",
                "unique_key",
                "metadata"
            ]
        );
    }

    #[test]
    fn unstorable_values_are_refused_by_field() {
        let far = OffsetDateTime::parse(
            "9999-12-31T23:59:59-23:59",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let job = NewJob::new("k", json!({"a": "x\u{0}"}))
            .run_at(far)
            .unique_key("a\0b")
            .metadata(json!({"m": "\u{0}"}));
        assert_eq!(fields(&job), ["run_at", "unique_key", "args", "metadata"]);
    }

    #[test]
    fn priority_bounds_are_inclusive() {
        for p in [0, 10] {
            assert!(NewJob::new("k", json!({})).priority(p).validate().is_ok());
        }
        assert_eq!(
            fields(&NewJob::new("k", json!({})).priority(-1)),
            ["priority"]
        );
    }
}
