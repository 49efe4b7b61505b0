//! One listing index on `jobs` instead of two: every insert, claim and outcome wrote an
//! entry into both `(tenant, created_at, id)` and `(tenant, state, created_at, id)` (no
//! update of `state` is HOT). A listing of every state now reads the per-state index
//! once per state and merges the newest of each (see `store/read.rs`).
//!
//! Compatible with older binaries: their listings still run, by sorting the tenant's
//! rows found through the per-state index, only slower; so `oldest_compatible` stays.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const DROPPED: &str = "jobs_tenant_created_idx";
const DEFINITION: &str = "ON jobs (tenant, created_at DESC, id DESC)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP INDEX IF EXISTS {DROPPED}"))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!("CREATE INDEX {DROPPED} {DEFINITION}"))
            .await?;
        Ok(())
    }
}
