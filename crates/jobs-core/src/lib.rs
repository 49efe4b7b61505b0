//! Domain of the job system: what a job is, the states it moves through, how new jobs
//! are validated, how retries back off, and the `JobStore` trait every backend implements.
//!
//! This crate knows no database, no HTTP and no async runtime; it only names the contracts.

mod args;
mod backend;
mod bulk;
pub mod dependency;
mod error;
pub mod estimate;
pub mod files;
mod id;
mod job;
mod new_job;
mod queues;
mod retry;
mod schedule;
mod state;
pub mod storable;
mod store;
pub mod transition;
mod unique;
pub mod webhook;
pub mod workflow;

pub use args::{JobArgs, JobOptions};
pub use backend::{
    ApiBackend, JobChanges, KeyLookup, Leadership, Notifier, SCHEMA_RECHECK, SchemaGate, Signals,
    TableHealth, TableUpkeep, Wake, Wakeups, WorkerBackend,
};
pub use bulk::{BulkAction, BulkRequest, BulkResult};
pub use dependency::{Dependency, OnParentFailure, ParentResult, Requires};
pub use error::{FieldError, JobError};
pub use estimate::{Estimate, RunTimes};
pub use files::{FileOwner, FileRole, FileStore, JobFile, NewFile};
pub use id::{FileId, JobId, LeaseToken, WorkflowId};
pub use job::{AttemptError, Job};
pub use new_job::{NewJob, limits};
pub use queues::{EndedInMinute, QueueControl, QueueLimits, QueueScope, Rate, validate_queue_name};
pub use retry::RetryPolicy;
pub use schedule::{
    CATCH_UP_MAX, CatchUp, CronSchedule, DEFAULT_TIMEZONE, Due, JobTemplate, Schedule,
    ScheduleInfo, ScheduleStore, ScheduledRun,
};
pub use state::State;
pub use store::{
    ClaimRequest, Cursor, Enqueued, Finish, Heartbeat, JobStore, Lease, ListFilter, Outcome, Page,
    PageRequest, QueueStats, RescueReport, Retry, single_job_error,
};
pub use unique::{OnConflict, Unique, UniqueOpts, UniqueStates};
pub use webhook::{AllowedHosts, CreatedWebhook, NewWebhook, Webhook, WebhookStore, WebhookTarget};
pub use workflow::{
    Step, StepDependency, StepView, Workflow, WorkflowFilter, WorkflowPage, WorkflowState,
    WorkflowStore, WorkflowView,
};
