//! How the store reads a database error: worth retrying, a value refused, or a failure.

use jobs_core::JobError;
use sea_orm::{DbErr, RuntimeErr, sqlx};

/// The database cannot serve now (503: unreachable, shutting down, a deadlock or
/// serialization failure; the same request may succeed when retried), or it failed the
/// statement (500).
pub(crate) fn db_error(error: DbErr) -> JobError {
    if transient(&error) {
        JobError::Unavailable(error.to_string())
    } else {
        JobError::Storage(error.to_string())
    }
}

/// A driver error from a statement sent past SeaORM, classified as every other one.
#[cfg(feature = "postgres")]
pub(crate) fn sqlx_error(error: sqlx::Error) -> JobError {
    db_error(DbErr::Exec(RuntimeErr::SqlxError(std::sync::Arc::new(
        error,
    ))))
}

/// The error code a database answered with, if it answered.
enum Code {
    /// A PostgreSQL SQLSTATE.
    Postgres(String),
    /// An SQLite extended result code.
    Sqlite(u32),
}

fn code_of(error: &DbErr) -> Option<Code> {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = error
    else {
        return None;
    };
    let sqlx::Error::Database(e) = e.as_ref() else {
        return None;
    };
    let code = e.code()?;
    if is_postgres_error(e.as_ref()) {
        Some(Code::Postgres(code.into_owned()))
    } else {
        code.parse().ok().map(Code::Sqlite)
    }
}

#[cfg(feature = "postgres")]
fn is_postgres_error(e: &dyn sqlx::error::DatabaseError) -> bool {
    e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
}

#[cfg(not(feature = "postgres"))]
fn is_postgres_error(_: &dyn sqlx::error::DatabaseError) -> bool {
    false
}

/// Lost connections, exhausted pools, a server shutting down, transaction rollbacks.
pub(crate) fn transient(error: &DbErr) -> bool {
    if let DbErr::ConnectionAcquire(_) | DbErr::Conn(_) = error {
        return true;
    }
    if let DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) = error {
        if let sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed = e.as_ref()
        {
            return true;
        }
    }
    match code_of(error) {
        // Connection exceptions, transaction rollback (deadlock, serialization),
        // insufficient resources, operator intervention (shutdown, statement timeout),
        // lock timeout, a read-only standby after a failover.
        Some(Code::Postgres(code)) => ["08", "40", "53", "57", "55P03", "25006"]
            .iter()
            .any(|c| code.starts_with(c)),
        // Busy, locked, I/O error, full, cannot open.
        Some(Code::Sqlite(code)) => matches!(code & 0xff, 5 | 6 | 10 | 13 | 14),
        None => false,
    }
}

/// The database refused a value of the statement (a character or number it cannot
/// store, a value too large, a check): the same statement would fail again.
pub(crate) fn refused_value(error: &DbErr) -> bool {
    match code_of(error) {
        // Data exception, integrity violation, program limit exceeded, raised by a trigger.
        Some(Code::Postgres(code)) => ["22", "23", "54", "P0001"]
            .iter()
            .any(|c| code.starts_with(c)),
        // Too big, constraint (a check or a trigger's RAISE), datatype mismatch.
        Some(Code::Sqlite(code)) => matches!(code & 0xff, 18..=20),
        None => false,
    }
}

/// A unique index refused the statement: another row holds the same key. Which rows
/// take part in a key is the schema's to decide (`UNIQUE_PREDICATE`), so callers that
/// move jobs between states treat any such violation alike.
pub(crate) fn unique_violation(error: &DbErr) -> bool {
    match code_of(error) {
        Some(Code::Postgres(code)) => code == "23505",
        // SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY.
        Some(Code::Sqlite(code)) => matches!(code, 2067 | 1555),
        None => false,
    }
}
