//! Run-time statistics for estimates, and compressed outcomes.
//!
//! - `jobs_run_stats`: per tenant, queue and kind, how many runs were observed and their
//!   rolling mean, minimum and maximum wall time in milliseconds. Each process adds its
//!   observations about once a second, so finishing a job writes no statistics row.
//! - `jobs.outcome_zstd`: a result and item errors above the compression threshold, as
//!   zstd-compressed JSON (`{"result": .., "item_errors": ..}`); `result` and
//!   `item_errors` are NULL then.
//!
//! Breaks older binaries: they would show a compressed job's result as null, so
//! `oldest_compatible` rises to this migration's number.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

/// The schema version this migration makes the oldest that may run.
pub const OLDEST_COMPATIBLE: i32 = 9;
const PREVIOUS_OLDEST_COMPATIBLE: i32 = 8;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    OutcomeZstd,
}

#[derive(DeriveIden)]
enum JobsRunStats {
    Table,
    Tenant,
    Queue,
    Kind,
    Runs,
    MeanMs,
    MinMs,
    MaxMs,
    UpdatedAt,
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
                    .add_column(blob_null(Jobs::OutcomeZstd))
                    .to_owned(),
            )
            .await?;
        manager.create_table(stats_table()).await?;
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "UPDATE jobs_schema SET oldest_compatible = {OLDEST_COMPATIBLE}"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "UPDATE jobs_schema SET oldest_compatible = {PREVIOUS_OLDEST_COMPATIBLE}"
            ))
            .await?;
        manager
            .drop_table(Table::drop().table(JobsRunStats::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .drop_column(Jobs::OutcomeZstd)
                    .to_owned(),
            )
            .await
    }
}

fn stats_table() -> TableCreateStatement {
    Table::create()
        .table(JobsRunStats::Table)
        .col(text(JobsRunStats::Tenant))
        .col(text(JobsRunStats::Queue))
        .col(text(JobsRunStats::Kind))
        .col(big_integer(JobsRunStats::Runs))
        .col(double(JobsRunStats::MeanMs))
        .col(big_integer(JobsRunStats::MinMs))
        .col(big_integer(JobsRunStats::MaxMs))
        .col(timestamp_with_time_zone(JobsRunStats::UpdatedAt))
        .primary_key(
            Index::create()
                .col(JobsRunStats::Tenant)
                .col(JobsRunStats::Queue)
                .col(JobsRunStats::Kind),
        )
        .to_owned()
}
