//! Queue control: pausing a queue stops every claim of its jobs, in every process, from the
//! moment the pause commits; running jobs finish. Pauses live in the database, so a
//! restarted or newly started worker honours them too.

use async_trait::async_trait;

use crate::JobError;

/// Whom a pause concerns: one tenant's jobs of a queue, or every tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueScope<'a> {
    Tenant(&'a str),
    /// Operators: every tenant. A tenant's own resume does not lift it.
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

/// Pausing and resuming queues.
#[async_trait]
pub trait QueueControl: Send + Sync + 'static {
    /// Stops new claims of the queue's jobs in `scope` everywhere; running jobs finish.
    /// Pausing a queue that has no jobs yet is fine: it exists from then on. Idempotent: a
    /// second pause keeps the first one's time.
    async fn pause_queue(&self, scope: QueueScope<'_>, queue: &str) -> Result<(), JobError>;

    /// Lets claims of the queue's jobs in `scope` resume and wakes idle workers at once
    /// (every process on PostgreSQL), without waiting for a poll.
    async fn resume_queue(&self, scope: QueueScope<'_>, queue: &str) -> Result<(), JobError>;
}
