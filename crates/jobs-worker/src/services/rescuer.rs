//! Returns running jobs whose lease expired to pending, or ends them when no attempt
//! or deadline is left.

use async_trait::async_trait;
use jobs_core::{JobError, WorkerBackend};

use super::maintenance::{Chore, Maintainer};

pub(crate) type Rescuer = Maintainer<Rescue>;

pub(crate) struct Rescue;

#[async_trait]
impl Chore for Rescue {
    const NAME: &'static str = "rescuer";

    async fn step(store: &dyn WorkerBackend, limit: u32) -> Result<u64, JobError> {
        Ok(store.rescue_expired(limit).await?.total())
    }
}
