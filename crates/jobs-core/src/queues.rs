//! Queue control: pausing a queue stops every claim of its jobs, in every process, from the
//! moment the pause commits; running jobs finish. Limits cap how many of a queue's jobs run
//! at once and how many start per period, across every process. Both live in the
//! database, so a restarted or newly started worker honours them too.

use std::time::Duration;

use async_trait::async_trait;

use crate::{FieldError, JobError};

/// Whom a pause or a limit concerns: one tenant's jobs of a queue, or every tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueScope<'a> {
    Tenant(&'a str),
    /// Operators: every tenant. A tenant's own resume does not lift it; its limits count
    /// every tenant's jobs together.
    AllTenants,
}

impl QueueScope<'_> {
    /// How the scope is stored: `*` cannot be a tenant name (tenant names are limited to
    /// letters, digits and `_ - . : /`).
    pub const ALL_TENANTS: &'static str = "*";

    pub fn as_stored(&self) -> &str {
        match self {
            QueueScope::Tenant(tenant) => tenant,
            QueueScope::AllTenants => Self::ALL_TENANTS,
        }
    }
}

/// A queue's name must be a valid job queue name; errors name `field`.
pub fn validate_queue_name(field: &str, name: &str) -> Result<(), JobError> {
    let mut errors = Vec::new();
    crate::new_job::check_name(&mut errors, field, name);
    JobError::invalid_if_any(errors)
}

/// Flow control of one queue in one scope; `None` is no limit. Limits of a tenant's scope
/// count that tenant's jobs; limits for every tenant count all of them together; where
/// both are set, both hold. Per-key limits always count per tenant and key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// At most this many jobs of the queue running at once, in every process together.
    pub concurrency: Option<u32>,
    /// At most this many jobs with the same `concurrency_key` running at once.
    pub key_concurrency: Option<u32>,
    /// At most this many job starts in any window of the period.
    pub rate: Option<Rate>,
    /// The same, for the jobs of each `concurrency_key`.
    pub key_rate: Option<Rate>,
}

/// At most `limit` starts in any window of `period` (a sliding window: no burst of twice
/// the limit across the edge of two fixed windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub period: Duration,
}

impl Rate {
    pub fn per_second(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(1))
    }

    pub fn new(limit: u32, period: Duration) -> Self {
        Self { limit, period }
    }
}

impl QueueLimits {
    /// The largest count a limit may have.
    pub const COUNT_MAX: u32 = 1_000_000;
    /// The longest rate period: a day.
    pub const PERIOD_MAX_SECS: u64 = 86_400;

    pub fn is_unlimited(&self) -> bool {
        *self == Self::default()
    }

    /// Errors name the field as the HTTP body has it (`rate.period_seconds`).
    pub fn validate(&self) -> Result<(), JobError> {
        let mut errors = Vec::new();
        check_count(&mut errors, "concurrency", self.concurrency);
        check_count(&mut errors, "key_concurrency", self.key_concurrency);
        for (field, rate) in [("rate", &self.rate), ("key_rate", &self.key_rate)] {
            if let Some(rate) = rate {
                check_count(&mut errors, &format!("{field}.limit"), Some(rate.limit));
                let period = rate.period;
                if period < Duration::from_secs(1)
                    || period > Duration::from_secs(Self::PERIOD_MAX_SECS)
                    || period.subsec_nanos() != 0
                {
                    errors.push(FieldError::new(
                        format!("{field}.period_seconds"),
                        "must be a whole number of seconds from 1 to 86400",
                    ));
                }
            }
        }
        JobError::invalid_if_any(errors)
    }
}

fn check_count(errors: &mut Vec<FieldError>, field: &str, value: Option<u32>) {
    if value.is_some_and(|n| n == 0 || n > QueueLimits::COUNT_MAX) {
        errors.push(FieldError::new(
            field,
            "must be between 1 and 1000000 (pause the queue to stop it)",
        ));
    }
}

/// Pausing, resuming and limiting queues.
#[async_trait]
pub trait QueueControl: Send + Sync + 'static {
    /// Stops new claims of the queue's jobs in `scope` everywhere; running jobs finish.
    /// Pausing a queue that has no jobs yet is fine: it exists from then on. Idempotent: a
    /// second pause keeps the first one's time.
    async fn pause_queue(&self, scope: QueueScope<'_>, queue: &str) -> Result<(), JobError>;

    /// Lets claims of the queue's jobs in `scope` resume and wakes idle workers at once
    /// (every process on PostgreSQL), without waiting for a poll.
    async fn resume_queue(&self, scope: QueueScope<'_>, queue: &str) -> Result<(), JobError>;

    /// Replaces the queue's limits in `scope` (all `None` lifts them). They hold for every
    /// claim that starts after this returns, in every process, remote workers included.
    async fn set_queue_limits(
        &self,
        scope: QueueScope<'_>,
        queue: &str,
        limits: &QueueLimits,
    ) -> Result<(), JobError>;

    /// The queue's limits in `scope` (all `None` when none were set).
    async fn queue_limits(
        &self,
        scope: QueueScope<'_>,
        queue: &str,
    ) -> Result<QueueLimits, JobError>;

    /// How many of the tenant's jobs of the queue ended in each minute (UTC) from the
    /// minute of `since` on, by the state they ended in; minutes and states with none are
    /// left out. Counted from `finished_at`, so a job retried since counts no more.
    async fn ended_per_minute(
        &self,
        tenant: &str,
        queue: &str,
        since: time::OffsetDateTime,
    ) -> Result<Vec<EndedInMinute>, JobError>;
}

/// Jobs of a queue that ended in one minute in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedInMinute {
    /// The minute's start (UTC, whole minute).
    pub minute: time::OffsetDateTime,
    pub state: crate::State,
    pub count: u64,
}
