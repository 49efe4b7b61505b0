//! Flow control: limits per queue, keys that jobs share a limit by, a log of starts for
//! rate limits, and a claim index that leads with the tenant so claims can take turns
//! between tenants.
//!
//! - `jobs.concurrency_key`: jobs of a tenant and queue sharing it count against the
//!   queue's per-key limits together.
//! - `jobs_queues`: `concurrency`, `key_concurrency`, and the rate limits as a count per
//!   period in milliseconds (`rate_*`, `key_rate_*`); NULL is no limit.
//! - `jobs_queue_starts`: one row per claim of a rate-limited queue, per tenant and key,
//!   with how many jobs it started; rows older than the longest period are deleted by the
//!   claims that read them.
//! - `jobs_claim_idx` becomes `(queue, tenant, priority DESC, run_at, id)`: a claim walks
//!   the tenants with pending jobs and takes each one's oldest, so one tenant's backlog
//!   cannot hold back another's jobs.
//!
//! Breaks older binaries: they would claim without honouring limits, so
//! `oldest_compatible` rises to this migration's number.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

/// The schema version this migration makes the oldest that may run.
pub const OLDEST_COMPATIBLE: i32 = 7;
const PREVIOUS_OLDEST_COMPATIBLE: i32 = 6;

const CLAIM_INDEX: &str = "CREATE INDEX jobs_claim_idx ON jobs (queue, tenant, priority DESC, run_at, id) WHERE state = 'pending'";
const PREVIOUS_CLAIM_INDEX: &str = "CREATE INDEX jobs_claim_idx ON jobs (queue, priority DESC, run_at, id) WHERE state = 'pending'";

#[derive(DeriveIden)]
enum Jobs {
    Table,
    ConcurrencyKey,
}

#[derive(DeriveIden)]
enum JobsQueues {
    Table,
    Concurrency,
    KeyConcurrency,
    RateLimit,
    RatePeriodMs,
    KeyRateLimit,
    KeyRatePeriodMs,
}

#[derive(DeriveIden)]
enum JobsQueueStarts {
    Table,
    Queue,
    Tenant,
    ConcurrencyKey,
    StartedAt,
    Started,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(text_null(Jobs::ConcurrencyKey))
                    .to_owned(),
            )
            .await?;
        // SQLite alters one column per statement.
        for column in [
            big_integer_null(JobsQueues::Concurrency),
            big_integer_null(JobsQueues::KeyConcurrency),
            big_integer_null(JobsQueues::RateLimit),
            big_integer_null(JobsQueues::RatePeriodMs),
            big_integer_null(JobsQueues::KeyRateLimit),
            big_integer_null(JobsQueues::KeyRatePeriodMs),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(JobsQueues::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager.create_table(starts_table()).await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX jobs_queue_starts_idx ON jobs_queue_starts (queue, started_at)",
        )
        .await?;
        db.execute_unprepared("DROP INDEX jobs_claim_idx").await?;
        db.execute_unprepared(CLAIM_INDEX).await?;
        db.execute_unprepared(&format!(
            "UPDATE jobs_schema SET oldest_compatible = {OLDEST_COMPATIBLE}"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "UPDATE jobs_schema SET oldest_compatible = {PREVIOUS_OLDEST_COMPATIBLE}"
        ))
        .await?;
        db.execute_unprepared("DROP INDEX jobs_claim_idx").await?;
        db.execute_unprepared(PREVIOUS_CLAIM_INDEX).await?;
        manager
            .drop_table(Table::drop().table(JobsQueueStarts::Table).to_owned())
            .await?;
        for column in [
            JobsQueues::Concurrency,
            JobsQueues::KeyConcurrency,
            JobsQueues::RateLimit,
            JobsQueues::RatePeriodMs,
            JobsQueues::KeyRateLimit,
            JobsQueues::KeyRatePeriodMs,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(JobsQueues::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .drop_column(Jobs::ConcurrencyKey)
                    .to_owned(),
            )
            .await
    }
}

fn starts_table() -> TableCreateStatement {
    Table::create()
        .table(JobsQueueStarts::Table)
        .col(text(JobsQueueStarts::Queue))
        .col(text(JobsQueueStarts::Tenant))
        .col(text_null(JobsQueueStarts::ConcurrencyKey))
        .col(timestamp_with_time_zone(JobsQueueStarts::StartedAt))
        .col(big_integer(JobsQueueStarts::Started))
        .to_owned()
}
