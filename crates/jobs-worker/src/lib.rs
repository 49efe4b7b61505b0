//! The runtime of the job system: register handlers, run them with bounded concurrency
//! per queue, keep leases alive, enforce timeouts and cancellation, write outcomes in
//! batches, shut down gracefully, and run maintenance on one process at a time. It talks
//! to the database only through the `jobs_core` ports (`WorkerBackend`).

mod builder;
#[cfg(feature = "builtins")]
pub mod builtins;
mod config;
mod context;
mod executor;
mod handler;
mod metrics;
mod runtime;
mod services;
pub mod signals;
pub mod testing;
mod worker;

pub use builder::WorkerBuilder;
pub use config::WorkerConfig;
pub use context::{JobContext, Stage};
pub use handler::{Handler, HandlerError, Output, TypedJob};
pub use jobs_core::Retry;
pub use tokio_util::sync::CancellationToken;
pub use worker::{Worker, WorkerHandle};
