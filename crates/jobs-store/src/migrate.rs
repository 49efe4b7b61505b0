//! Schema management for the binaries and tests: apply, roll back, report.

use migration::{Migrator, MigratorTrait};
use sea_orm::{DatabaseConnection, DbErr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
}

pub async fn migrate_up(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
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
