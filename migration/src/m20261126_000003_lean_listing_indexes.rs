//! Fewer indexes on `jobs`: every claim and every outcome writes a new row version, and
//! each index on the table takes one more entry per version (no HOT update is possible,
//! since `state` changes). The per-kind and per-queue listing indexes cost a fifth of the
//! drain rate (measured with `jobs-bench drain`); listings filtered by kind or queue now
//! walk the tenant's newest-first index and filter, as the per-state listing cannot.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const DROPPED: &[(&str, &str)] = &[
    (
        "jobs_tenant_kind_created_idx",
        "ON jobs (tenant, kind, created_at DESC, id DESC)",
    ),
    (
        "jobs_tenant_queue_created_idx",
        "ON jobs (tenant, queue, created_at DESC, id DESC)",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, _) in DROPPED {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, definition) in DROPPED {
            db.execute_unprepared(&format!("CREATE INDEX {name} {definition}"))
                .await?;
        }
        Ok(())
    }
}
