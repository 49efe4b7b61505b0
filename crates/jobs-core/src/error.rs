//! The one error type of the domain; HTTP and the worker map it, never invent their own.

use serde::Serialize;

use crate::{JobId, State};

/// One invalid field of an input, named the way the caller spelled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error("job {0} not found")]
    NotFound(JobId),

    /// No schedule of this name (in the caller's tenant).
    #[error("schedule {0:?} not found")]
    ScheduleNotFound(String),

    /// No workflow with this id (in the caller's tenant).
    #[error("workflow {0} not found")]
    WorkflowNotFound(crate::WorkflowId),

    /// No webhook subscription with this id (in the caller's tenant).
    #[error("webhook {0} not found")]
    WebhookNotFound(uuid::Uuid),

    /// The name is taken (a schedule of the same tenant and name exists).
    #[error("conflict: {0}")]
    Conflict(String),

    #[error("illegal transition: job is {from}, cannot move to {to}")]
    IllegalTransition { from: State, to: State },

    #[error("invalid input: {}", summarize(.0))]
    Invalid(Vec<FieldError>),

    #[error("duplicate: job {existing} already has this unique key")]
    Duplicate { existing: JobId },

    /// The caller no longer owns the attempt: the lease expired and the job was rescued,
    /// cancelled, or claimed again. The row was left untouched.
    #[error("lease lost on job {0}")]
    LeaseLost(JobId),

    /// The database cannot be reached right now; the request may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),

    /// A value could not be turned into JSON (a typed job's arguments or result).
    #[error("serialization failed: {0}")]
    Serialization(String),

    #[error("storage error: {0}")]
    Storage(String),
}

impl JobError {
    /// `Ok` when `errors` is empty, else `Invalid` with all of them.
    pub fn invalid_if_any(errors: Vec<FieldError>) -> Result<(), JobError> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(JobError::Invalid(errors))
        }
    }
}

fn summarize(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}
