//! The runtime of the job system: register handlers, run them with bounded concurrency
//! per queue, keep leases alive, enforce timeouts and cancellation, write outcomes in
//! batches, shut down gracefully, and run maintenance on one process at a time.

#[cfg(feature = "builtins")]
pub mod builtins;
mod config;
mod context;
mod executor;
mod handler;
mod maintenance;
mod metrics;
pub mod signals;
mod worker;

pub use config::WorkerConfig;
pub use context::JobContext;
pub use handler::{Handler, HandlerError, Output, TypedJob};
pub use jobs_core::Retry;
pub use tokio_util::sync::CancellationToken;
pub use worker::{Worker, WorkerBuilder, WorkerHandle};
