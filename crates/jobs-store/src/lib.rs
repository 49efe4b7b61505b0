//! `SeaOrmStore`: the `JobStore` of the job system on PostgreSQL and SQLite.
//!
//! Every operation is one statement for many jobs (claims, heartbeats, completions);
//! the SQL is written once in `sql`-dialect fragments and runs on both backends.

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
compile_error!("jobs-store needs a backend: enable its feature `postgres`, `sqlite` or both");

mod backend;
mod connect;
pub mod entity;
mod keys;
mod leader;
mod migrate;
mod schema;
mod sql;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod wake;
mod watchers;

pub use connect::{DEFAULT_DATABASE_URL, connect_options};
pub use keys::{ApiKeyInfo, NewApiKey};
pub use leader::MAINTENANCE_ROLE;
pub use migrate::{MigrationState, migrate_down, migrate_up, migration_status, readiness};
pub use schema::{
    SCHEMA_RECHECK, SchemaStatus, binary_schema_version, known_migrations, run_while_schema_fits,
    schema_check, wait_for_schema,
};
pub use sea_orm::{ConnectOptions, DatabaseConnection};
pub use store::{OutcomeLimits, RESULT_TOO_LARGE, SeaOrmStore};
pub use wake::ENQUEUED_CHANNEL;
