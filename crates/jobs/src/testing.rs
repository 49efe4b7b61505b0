//! Test helpers for services that embed the library, in the spirit of River's
//! `rivertest` and Oban's `perform_job` / `assert_enqueued`:
//!
//! - `TestJobs` (feature `sqlite`): a throwaway SQLite database with a
//!   [`Client`](crate::Client), asserts on what was enqueued, and (feature `worker`)
//!   `drain`, which runs what is due and returns the jobs as they ended.
//! - With feature `worker`, the runtime's own helpers (a `JobContext` without a
//!   database, running one typed job's `run`) are re-exported here.

#[cfg(feature = "worker")]
pub use jobs_worker::testing::*;

#[cfg(feature = "sqlite")]
mod test_jobs;
#[cfg(feature = "sqlite")]
pub use test_jobs::TestJobs;
