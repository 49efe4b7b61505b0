//! The backend conformance suite (jobs-conformance) on SQLite and on PostgreSQL: every
//! test of it, once per backend, each on its own fresh database.

use std::sync::Arc;

use async_trait::async_trait;
use jobs_conformance::{Harness, conformance_tests};
use jobs_core::{ApiBackend, WorkerBackend};
use jobs_store::testing::TestDb;

/// A test database as the suite sees it (a local type: `Harness` and `TestDb` are both
/// foreign here).
struct Db(TestDb);

#[async_trait]
impl Harness for Db {
    fn backend(&self) -> &dyn ApiBackend {
        &self.0.store
    }

    async fn connect_again(&self) -> Arc<dyn WorkerBackend> {
        Arc::new(self.0.connect_again().await)
    }

    fn wakes_other_processes(&self) -> bool {
        // LISTEN/NOTIFY; SQLite's wake-ups stay in the process.
        self.0.store.is_postgres()
    }
}

mod sqlite {
    use super::*;

    conformance_tests!(harness: Db(TestDb::sqlite().await));
}

mod postgres {
    use super::*;

    conformance_tests!(
        #[cfg_attr(
            not(jobs_postgres_tests),
            ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
        )]
        harness: Db(TestDb::postgres().await)
    );
}
