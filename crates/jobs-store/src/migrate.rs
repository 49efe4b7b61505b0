//! Schema management for the binaries and tests: apply, roll back, report.

use migration::{Migrator, MigratorTrait};
use sea_orm::{DatabaseConnection, DbBackend, DbErr, sqlx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
}

/// Applies pending migrations. On PostgreSQL an advisory lock serializes processes that
/// start at once, so the second finds the work done instead of failing halfway.
pub async fn migrate_up(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Migrator::up(db, None).await;
    }
    let pool = db.get_postgres_connection_pool();
    let mut lock = pool.acquire().await.map_err(conn_error)?;
    sqlx::query("SELECT pg_advisory_lock(hashtext('jobs-migrate:' || current_schema()))")
        .execute(&mut *lock)
        .await
        .map_err(conn_error)?;
    let result = Migrator::up(db, None).await;
    // Closing the session would release it too; unlocking keeps the pooled connection clean.
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('jobs-migrate:' || current_schema()))")
        .execute(&mut *lock)
        .await;
    result
}

fn conn_error(error: sqlx::Error) -> DbErr {
    DbErr::Conn(sea_orm::RuntimeErr::SqlxError(error.into()))
}

/// Rolls back `steps` migrations, or all of them.
pub async fn migrate_down(db: &DatabaseConnection, steps: Option<u32>) -> Result<(), DbErr> {
    Migrator::down(db, steps).await
}

pub async fn migration_status(db: &DatabaseConnection) -> Result<Vec<MigrationState>, DbErr> {
    let migrations = Migrator::get_migration_with_status(db).await?;
    Ok(migrations
        .iter()
        .map(|m| MigrationState {
            name: m.name().to_owned(),
            applied: matches!(m.status(), migration::MigrationStatus::Applied),
        })
        .collect())
}

/// Why the database cannot serve yet, if it cannot: unreachable, migrations pending, or
/// the jobs table missing. Reads only, so probing readiness never changes the schema.
pub async fn readiness(db: &DatabaseConnection) -> Result<(), String> {
    let migrations = Migrator::get_migration_with_status_read_only(db)
        .await
        .map_err(|e| format!("database unreachable: {e}"))?;
    let pending: Vec<String> = migrations
        .iter()
        .filter(|m| !matches!(m.status(), migration::MigrationStatus::Applied))
        .map(|m| m.name().to_owned())
        .collect();
    if !pending.is_empty() {
        return Err(format!("migrations not applied: {}", pending.join(", ")));
    }
    let probe =
        sea_orm::Statement::from_string(db.get_database_backend(), "SELECT id FROM jobs LIMIT 1");
    sea_orm::ConnectionTrait::query_all_raw(db, probe)
        .await
        .map_err(|e| format!("jobs table not usable: {e}"))?;
    Ok(())
}
