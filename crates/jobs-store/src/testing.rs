//! Test databases: each test gets its own migrated SQLite file or PostgreSQL schema, so
//! tests run in parallel without seeing each other's jobs.

use sea_orm::{ConnectionTrait, Database, DbBackend};

use crate::{SeaOrmStore, connect_options, migrate_up};

/// Where the PostgreSQL half of the tests connects; unset means that half is not run.
pub const POSTGRES_URL_VAR: &str = "JOBS_TEST_POSTGRES_URL";

#[derive(Debug)]
pub struct TestDb {
    pub store: SeaOrmStore,
    url: String,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh SQLite file in a temporary directory, migrated.
    pub async fn sqlite() -> Self {
        let db = Self::sqlite_empty().await;
        migrate_up(db.store.connection())
            .await
            .expect("migrate SQLite");
        db
    }

    /// A fresh schema in the database of `JOBS_TEST_POSTGRES_URL`, migrated.
    pub async fn postgres() -> Self {
        let db = Self::postgres_empty().await;
        migrate_up(db.store.connection())
            .await
            .expect("migrate PostgreSQL");
        db
    }

    /// A fresh SQLite file with no tables yet.
    pub async fn sqlite_empty() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
        let store = SeaOrmStore::connect(&url).await.expect("open SQLite");
        Self {
            store,
            url,
            schema: None,
            _dir: Some(dir),
        }
    }

    /// A fresh, empty schema in the database of `JOBS_TEST_POSTGRES_URL`.
    pub async fn postgres_empty() -> Self {
        let url = std::env::var(POSTGRES_URL_VAR)
            .unwrap_or_else(|_| panic!("{POSTGRES_URL_VAR} must be set for PostgreSQL tests"));
        let schema = format!("test_{}", uuid::Uuid::now_v7().simple());
        let admin = Database::connect(url.as_str())
            .await
            .expect("connect to PostgreSQL");
        admin
            .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create test schema");
        admin.close().await.ok();
        Self {
            store: Self::open(&url, Some(&schema)).await,
            url,
            schema: Some(schema),
            _dir: None,
        }
    }

    /// A new, empty database on the same backend as this one.
    pub async fn empty_twin(&self) -> Self {
        if self.schema.is_some() {
            Self::postgres_empty().await
        } else {
            Self::sqlite_empty().await
        }
    }

    /// A `DATABASE_URL` that points another process at this database (and schema).
    pub fn url(&self) -> String {
        match &self.schema {
            None => self.url.clone(),
            Some(schema) => {
                let sep = if self.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}options=-c%20search_path%3D{schema}", self.url)
            }
        }
    }

    /// Another store with its own connection pool on the same database, as a second
    /// process would have.
    pub async fn connect_again(&self) -> SeaOrmStore {
        Self::open(&self.url, self.schema.as_deref()).await
    }

    async fn open(url: &str, schema: Option<&str>) -> SeaOrmStore {
        let mut options = connect_options(url);
        if let Some(schema) = schema {
            options.set_schema_search_path(schema.to_owned());
        }
        SeaOrmStore::connect_with(options).await.expect("connect")
    }
}

/// The plan of the statement `list` runs for `filter` and `page`, one line per row of
/// PostgreSQL's `EXPLAIN` or SQLite's `EXPLAIN QUERY PLAN`.
pub async fn listing_plan(
    store: &SeaOrmStore,
    filter: &jobs_core::ListFilter,
    page: &jobs_core::PageRequest,
) -> Vec<String> {
    let mut statement = store.listing_statement(filter, page);
    let (explain, column) = match statement.db_backend {
        DbBackend::Sqlite => ("EXPLAIN QUERY PLAN", "detail"),
        _ => ("EXPLAIN", "QUERY PLAN"),
    };
    statement.sql = format!("{explain} {}", statement.sql);
    let rows = store
        .connection()
        .query_all_raw(statement)
        .await
        .expect("explain the listing");
    rows.iter()
        .map(|row| row.try_get::<String>("", column).expect("a plan line"))
        .collect()
}

/// Instantiates each async test body `fn(TestDb)` once per backend: `sqlite::name` and
/// `postgres::name`. The PostgreSQL half is compiled as ignored, with the reason shown in
/// the test report, when `JOBS_TEST_POSTGRES_URL` was not set at build time.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::testing::TestDb::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(jobs_postgres_tests), ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set")]
                async fn $name() {
                    super::$name($crate::testing::TestDb::postgres().await).await;
                }
            )*
        }
    };
}
