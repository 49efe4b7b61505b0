//! Schema management for the binaries and tests: apply, roll back, report.

use migration::{Migrator, MigratorTrait};
#[cfg(feature = "postgres")]
use sea_orm::sqlx;
use sea_orm::{DatabaseConnection, DbBackend, DbErr};

use crate::schema::{known_migrations, read_schema, schema_check};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
    /// Whether this binary knows the migration; `false` for one a newer release applied.
    pub known: bool,
}

/// Applies pending migrations. On PostgreSQL an advisory lock serializes processes that
/// start at once, so the second finds the work done instead of failing halfway.
///
/// On a schema with migrations this binary does not know (a newer release applied them)
/// it applies nothing and returns `Ok`: whether the binary may run on that schema is for
/// [`schema_check`] to say.
pub async fn migrate_up(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return up_unless_newer(db).await;
    }
    migrate_up_locked(db).await
}

#[cfg(not(feature = "postgres"))]
async fn migrate_up_locked(_: &DatabaseConnection) -> Result<(), DbErr> {
    Err(DbErr::Custom(
        "this build has no PostgreSQL support (feature `postgres`)".into(),
    ))
}

#[cfg(feature = "postgres")]
async fn migrate_up_locked(db: &DatabaseConnection) -> Result<(), DbErr> {
    let pool = db.get_postgres_connection_pool();
    let mut lock = pool.acquire().await.map_err(conn_error)?;
    sqlx::query("SELECT pg_advisory_lock(hashtext('jobs-migrate:' || current_schema()))")
        .execute(&mut *lock)
        .await
        .map_err(conn_error)?;
    let result = up_unless_newer(db).await;
    // Closing the session would release it too; unlocking keeps the pooled connection clean.
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('jobs-migrate:' || current_schema()))")
        .execute(&mut *lock)
        .await;
    result
}

async fn up_unless_newer(db: &DatabaseConnection) -> Result<(), DbErr> {
    let unknown = read_schema(db).await?.unknown(&known_migrations());
    if !unknown.is_empty() {
        tracing::warn!(
            unknown = %unknown.join(", "),
            "the database has migrations this binary does not know: applying none"
        );
        return Ok(());
    }
    Migrator::up(db, None).await
}

#[cfg(feature = "postgres")]
fn conn_error(error: sqlx::Error) -> DbErr {
    DbErr::Conn(sea_orm::RuntimeErr::SqlxError(error.into()))
}

/// Rolls back `steps` migrations, or all of them. Refuses while migrations this binary
/// does not know are applied: only the release that applied them can roll them back.
pub async fn migrate_down(db: &DatabaseConnection, steps: Option<u32>) -> Result<(), DbErr> {
    let unknown = read_schema(db).await?.unknown(&known_migrations());
    if !unknown.is_empty() {
        return Err(DbErr::Custom(format!(
            "the database has migrations this binary does not know ({}): roll them back \
             first with the jobs-api of the release that applied them",
            unknown.join(", ")
        )));
    }
    Migrator::down(db, steps).await
}

/// Each migration this binary knows, applied or not, then any applied one it does not
/// know. Reads only: on a fresh database it creates no migration table.
pub async fn migration_status(db: &DatabaseConnection) -> Result<Vec<MigrationState>, DbErr> {
    let found = read_schema(db).await?;
    let unknown = found.unknown(&known_migrations());
    let mut states: Vec<MigrationState> = known_migrations()
        .into_iter()
        .map(|name| MigrationState {
            applied: found.applied.contains(&name),
            name,
            known: true,
        })
        .collect();
    states.extend(unknown.into_iter().map(|name| MigrationState {
        name,
        applied: true,
        known: false,
    }));
    Ok(states)
}

/// Why the database cannot serve this binary, if it cannot: unreachable, the jobs table
/// missing, an older schema (migrations pending) or a newer one this binary must not run
/// on; the reason names both schema versions. Reads only, so probing readiness never
/// changes the schema.
pub async fn readiness(db: &DatabaseConnection) -> Result<(), String> {
    let status = schema_check(db).await;
    if status.is_ready() {
        Ok(())
    } else {
        Err(status.to_string())
    }
}
