//! Deletes ended jobs whose retention ran out.

use async_trait::async_trait;
use jobs_core::{JobError, WorkerBackend};

use super::maintenance::{Chore, Maintainer};

pub(crate) type RetentionCleaner = Maintainer<Retention>;

pub(crate) struct Retention;

#[async_trait]
impl Chore for Retention {
    const NAME: &'static str = "retention";

    async fn step(store: &dyn WorkerBackend, limit: u32) -> Result<u64, JobError> {
        store.purge_expired(limit).await
    }
}
