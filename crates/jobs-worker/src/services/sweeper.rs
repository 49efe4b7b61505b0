//! Ends pending jobs that can never run: deadline passed or cancel requested.

use async_trait::async_trait;
use jobs_core::{JobError, WorkerBackend};

use super::maintenance::{Chore, Maintainer};

pub(crate) type Sweeper = Maintainer<Sweep>;

pub(crate) struct Sweep;

#[async_trait]
impl Chore for Sweep {
    const NAME: &'static str = "sweeper";

    async fn step(store: &dyn WorkerBackend, limit: u32) -> Result<u64, JobError> {
        Ok(store.end_unrunnable(limit).await?.total())
    }
}
