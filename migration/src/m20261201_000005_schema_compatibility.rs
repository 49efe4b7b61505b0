//! The `jobs_schema` table: one row whose `oldest_compatible` is the oldest binary schema
//! version (the number of migrations a binary knows) that may still run on this schema.
//! A binary that finds more migrations applied than it knows (a binary rollback) runs
//! only if its own version is at least this; otherwise it refuses work (see
//! docs/OPERATIONS.md).
//!
//! A later migration that breaks older binaries raises the value in its `up`
//! (`UPDATE jobs_schema SET oldest_compatible = N`) and restores the previous one in its
//! `down`; an additive migration leaves it alone.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Binaries that knew the first three migrations still run on every schema up to this
/// one: migrations 4 and 5 only add tables and a nullable column.
pub const OLDEST_COMPATIBLE: i32 = 3;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // The same SQL on PostgreSQL and SQLite; the check keeps it to one row.
        db.execute_unprepared(
            "CREATE TABLE jobs_schema (\
             id integer PRIMARY KEY CHECK (id = 1), \
             oldest_compatible integer NOT NULL)",
        )
        .await?;
        db.execute_unprepared(&format!(
            "INSERT INTO jobs_schema (id, oldest_compatible) VALUES (1, {OLDEST_COMPATIBLE})"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE jobs_schema")
            .await?;
        Ok(())
    }
}
