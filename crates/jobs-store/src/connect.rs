//! Connection settings that make both backends behave: SQLite in WAL mode with a busy
//! timeout so an api and a worker process can share one file; bounded waits everywhere
//! so a database outage surfaces as an error instead of a hang.

use std::time::Duration;

use sea_orm::ConnectOptions;

/// An SQLite file in the working directory, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://jobs.db?mode=rwc";

pub fn connect_options(url: &str) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        // A connection is pinged before use only after a second idle: pinging on every
        // acquire is a round trip more per statement. A hot connection that broke fails
        // its statement as transient (retried like any lost connection); after an outage,
        // every connection has idled past the second and is tested before use.
        .test_before_acquire_if_idle_for(Duration::from_secs(1))
        .sqlx_logging(false);
    if url.starts_with("sqlite:") {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // Each in-memory connection is its own database.
        options.max_connections(if in_memory { 1 } else { 4 });
        #[cfg(feature = "sqlite")]
        options.map_sqlx_sqlite_opts(|o| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
        });
    } else {
        options.max_connections(10);
        // Every statement here is short; compiling one with JIT (PostgreSQL's default
        // above a plan cost that a claim of a few thousand rows reaches) costs ~100 ms
        // per claim and saves nothing.
        #[cfg(feature = "postgres")]
        options.map_sqlx_postgres_opts(|o| o.options([("jit", "off")]));
    }
    options
}
