//! The job system in one dependency.
//!
//! - Declare a job: a serde struct implementing [`JobArgs`] (its kind and per-kind
//!   defaults) and, to run it here, [`TypedJob`] (its `run`).
//! - Insert it with a [`Client`]: alone, or inside a [`Transaction`] together with your
//!   own writes, so the job exists if and only if they commit; workers are woken at commit.
//! - Wait for it to end with [`Client::wait`], or follow it with [`Client::watch`].
//! - Run it with a [`Worker`] (feature `worker`, on by default), serve the HTTP API with
//!   [`http`] (feature `http`), and unit-test it without a database with [`testing`].
//!
//! `jobs-core` alone suffices for a service that only declares and enqueues jobs through
//! another process's API.

mod client;
mod schedules;
pub mod testing;

pub use client::{Client, Transaction};
pub use jobs_core::{
    AttemptError, BulkAction, BulkRequest, BulkResult, Enqueued, Estimate, Job, JobArgs, JobError,
    JobId, JobOptions, ListFilter, NewJob, OnConflict, Outcome, Page, PageRequest, QueueLimits,
    QueueScope, QueueStats, Rate, Retry, RetryPolicy, State, Unique, UniqueOpts, UniqueStates,
    limits,
};
pub use jobs_core::{CATCH_UP_MAX, CatchUp, JobTemplate, Schedule, ScheduleInfo, ScheduledRun};
pub use jobs_core::{
    Dependency, OnParentFailure, ParentResult, Requires, Workflow, WorkflowFilter, WorkflowId,
    WorkflowState, WorkflowView,
};
pub use jobs_files::FileStorage;

/// The ports a backend implements; in scope, they let you call the store directly
/// (`client.store().list(..)`), or run the worker on a backend of your own.
pub mod ports {
    pub use jobs_core::{
        ApiBackend, FileStore, JobStore, KeyLookup, Leadership, Notifier, QueueControl,
        ScheduleStore, SchemaGate, TableUpkeep, WorkerBackend, WorkflowStore,
    };
}
pub use jobs_store::{DEFAULT_DATABASE_URL, SeaOrmStore, migrate_up};

#[cfg(feature = "worker")]
pub use jobs_worker::{
    CancellationToken, Handler, HandlerError, JobContext, Output, Stage, TypedJob, Worker,
    WorkerBuilder, WorkerConfig, WorkerHandle,
};

/// The HTTP API as a library: mount it in your own actix-web server or run it alone.
#[cfg(feature = "http")]
pub mod http {
    pub use jobs_http::*;
}

/// For `#[jobs::async_trait]` on `TypedJob` impls without a dependency of your own.
pub use async_trait::async_trait;
/// The ORM the store runs on: run your own statements in a [`Transaction`].
pub use sea_orm;
