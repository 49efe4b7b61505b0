//! The `jobs` table: one row per job, and the indexes that the claim, listing,
//! lease and retention queries use.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    Tenant,
    Queue,
    Kind,
    Args,
    State,
    Priority,
    RunAt,
    Attempt,
    MaxAttempts,
    TimeoutMs,
    Deadline,
    RetentionMs,
    Progress,
    Stage,
    Result,
    ItemErrors,
    Errors,
    WorkerId,
    LeaseExpiresAt,
    CancelRequestedAt,
    UniqueKey,
    TraceId,
    Metadata,
    CreatedAt,
    UpdatedAt,
    StartedAt,
    FinishedAt,
    ExpiresAt,
}

/// Plain SQL that reads the same on PostgreSQL and SQLite (both have partial indexes).
const INDEXES: &[&str] = &[
    // Claiming scans only pending rows, in claim order.
    "CREATE INDEX jobs_claim_idx ON jobs (queue, priority DESC, run_at, id) WHERE state = 'pending'",
    // Idempotent enqueue: one job per tenant and unique key.
    "CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (tenant, unique_key) WHERE unique_key IS NOT NULL",
    // Listing, newest first, for a tenant and optionally a state, kind or queue.
    "CREATE INDEX jobs_tenant_created_idx ON jobs (tenant, created_at DESC, id DESC)",
    "CREATE INDEX jobs_tenant_state_created_idx ON jobs (tenant, state, created_at DESC, id DESC)",
    "CREATE INDEX jobs_tenant_kind_created_idx ON jobs (tenant, kind, created_at DESC, id DESC)",
    "CREATE INDEX jobs_tenant_queue_created_idx ON jobs (tenant, queue, created_at DESC, id DESC)",
    "CREATE INDEX jobs_trace_id_idx ON jobs (trace_id) WHERE trace_id IS NOT NULL",
    // The rescuer looks for expired leases among running rows only.
    "CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE state = 'running'",
    // Retention deletes by expiry.
    "CREATE INDEX jobs_expires_idx ON jobs (expires_at) WHERE expires_at IS NOT NULL",
    // Deadlines of waiting jobs.
    "CREATE INDEX jobs_deadline_idx ON jobs (deadline) WHERE state = 'pending' AND deadline IS NOT NULL",
];

const STATES: [&str; 6] = [
    "pending",
    "running",
    "completed",
    "partial",
    "failed",
    "cancelled",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// One transaction on SQLite too: other pooled connections then see the table and all
    /// its indexes at once, never a half-built schema that SQLite would not re-read.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .col(uuid(Jobs::Id).primary_key())
                    .col(text(Jobs::Tenant))
                    .col(text(Jobs::Queue))
                    .col(text(Jobs::Kind))
                    .col(json_binary(Jobs::Args))
                    .col(text(Jobs::State))
                    .col(small_integer(Jobs::Priority))
                    .col(timestamp_with_time_zone(Jobs::RunAt))
                    .col(integer(Jobs::Attempt))
                    .col(integer(Jobs::MaxAttempts))
                    .col(big_integer_null(Jobs::TimeoutMs))
                    .col(timestamp_with_time_zone_null(Jobs::Deadline))
                    .col(big_integer(Jobs::RetentionMs))
                    .col(double(Jobs::Progress))
                    .col(text_null(Jobs::Stage))
                    .col(json_binary_null(Jobs::Result))
                    .col(json_binary_null(Jobs::ItemErrors))
                    .col(json_binary(Jobs::Errors))
                    .col(text_null(Jobs::WorkerId))
                    .col(timestamp_with_time_zone_null(Jobs::LeaseExpiresAt))
                    .col(timestamp_with_time_zone_null(Jobs::CancelRequestedAt))
                    .col(text_null(Jobs::UniqueKey))
                    .col(text_null(Jobs::TraceId))
                    .col(json_binary(Jobs::Metadata))
                    .col(timestamp_with_time_zone(Jobs::CreatedAt))
                    .col(timestamp_with_time_zone(Jobs::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Jobs::StartedAt))
                    .col(timestamp_with_time_zone_null(Jobs::FinishedAt))
                    .col(timestamp_with_time_zone_null(Jobs::ExpiresAt))
                    .check(Expr::col(Jobs::State).is_in(STATES))
                    .check(Expr::col(Jobs::Priority).between(0, 10))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for statement in INDEXES {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Dropping the table drops its indexes on both backends.
        manager
            .drop_table(Table::drop().table(Jobs::Table).to_owned())
            .await
    }
}
