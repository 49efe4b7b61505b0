//! An index on when jobs ended, per tenant and queue, for the throughput of a queue over
//! the last minutes and hours (`GET /v1/queues/{name}/throughput`, the dashboard's chart).
//!
//! Partial (`finished_at IS NOT NULL`): claims and progress of unfinished jobs write no
//! entry to it; each job takes one when it ends. Additive: older binaries run on it.

use sea_orm_migration::prelude::*;

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX jobs_tenant_queue_finished_idx ON jobs (tenant, queue, finished_at) \
                 WHERE finished_at IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX jobs_tenant_queue_finished_idx")
            .await?;
        Ok(())
    }
}
