//! Operations: uniqueness among chosen states, queue control and periodic schedules.
//!
//! - `jobs.unique_states`: a bitmask of the states in which a job's `unique_key` blocks
//!   another job with the same key (see `UNIQUE_PREDICATE`). Rows that had a key keep the
//!   old meaning (every state blocks); new jobs choose.
//! - `jobs_queues`: one row per (tenant, queue) that was ever controlled; `paused_at` set
//!   while paused. Tenant `*` stands for every tenant.
//! - `jobs_schedules`: periodic jobs. `next_run_at` is the next slot not yet enqueued; a
//!   process enqueues a slot only by moving it forward with a compare-and-set.
//!
//! Breaks older binaries: their enqueue names the old unique index in `ON CONFLICT`, which
//! no longer exists, so `oldest_compatible` rises to this migration's number.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

/// The bit of each state in `unique_states`, in the order of `jobs_core::State::ALL`.
pub const STATE_BITS: [(&str, i32); 6] = [
    ("pending", 1),
    ("running", 2),
    ("completed", 4),
    ("partial", 8),
    ("failed", 16),
    ("cancelled", 32),
];

/// Every state: the meaning a unique key had before this migration.
pub const ALL_STATES_MASK: i32 = 63;

/// The predicate of the unique index: a key blocks while its job is in one of its
/// `unique_states`. An `ON CONFLICT` clause must repeat it word for word to use the index.
pub const UNIQUE_PREDICATE: &str = "unique_key IS NOT NULL AND (unique_states & CASE state \
     WHEN 'pending' THEN 1 WHEN 'running' THEN 2 WHEN 'completed' THEN 4 \
     WHEN 'partial' THEN 8 WHEN 'failed' THEN 16 WHEN 'cancelled' THEN 32 ELSE 0 END) <> 0";

/// The schema version this migration makes the oldest that may run.
pub const OLDEST_COMPATIBLE: i32 = 6;
/// What it was before (see `m20261201_000005_schema_compatibility`).
const PREVIOUS_OLDEST_COMPATIBLE: i32 = 3;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    UniqueStates,
}

#[derive(DeriveIden)]
enum JobsQueues {
    Table,
    Tenant,
    Name,
    PausedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum JobsSchedules {
    Table,
    Tenant,
    Name,
    Cron,
    Timezone,
    Job,
    CatchUp,
    PausedAt,
    NextRunAt,
    LastRunAt,
    LastJobId,
    CreatedAt,
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
                    .add_column(integer_null(Jobs::UniqueStates))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "UPDATE jobs SET unique_states = {ALL_STATES_MASK} WHERE unique_key IS NOT NULL"
        ))
        .await?;
        db.execute_unprepared("DROP INDEX jobs_unique_key_idx")
            .await?;
        db.execute_unprepared(&format!(
            "CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (tenant, unique_key) WHERE {UNIQUE_PREDICATE}"
        ))
        .await?;
        manager.create_table(queues_table()).await?;
        manager.create_table(schedules_table()).await?;
        db.execute_unprepared(
            "CREATE INDEX jobs_schedules_due_idx ON jobs_schedules (next_run_at) WHERE paused_at IS NULL",
        )
        .await?;
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
        manager
            .drop_table(Table::drop().table(JobsSchedules::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(JobsQueues::Table).to_owned())
            .await?;
        // Back to one job per key forever: keys that now repeat (allowed once their
        // holder ended) keep only on the newest job, so the old index can be built.
        db.execute_unprepared("DROP INDEX jobs_unique_key_idx")
            .await?;
        db.execute_unprepared(
            "UPDATE jobs SET unique_key = NULL WHERE unique_key IS NOT NULL AND EXISTS (\
             SELECT 1 FROM jobs newer WHERE newer.tenant = jobs.tenant \
             AND newer.unique_key = jobs.unique_key \
             AND (newer.created_at, newer.id) > (jobs.created_at, jobs.id))",
        )
        .await?;
        db.execute_unprepared(
            "CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (tenant, unique_key) WHERE unique_key IS NOT NULL",
        )
        .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .drop_column(Jobs::UniqueStates)
                    .to_owned(),
            )
            .await
    }
}

fn queues_table() -> TableCreateStatement {
    Table::create()
        .table(JobsQueues::Table)
        .col(text(JobsQueues::Tenant))
        .col(text(JobsQueues::Name))
        .col(timestamp_with_time_zone_null(JobsQueues::PausedAt))
        .col(timestamp_with_time_zone(JobsQueues::CreatedAt))
        .col(timestamp_with_time_zone(JobsQueues::UpdatedAt))
        .primary_key(
            Index::create()
                .col(JobsQueues::Tenant)
                .col(JobsQueues::Name),
        )
        .to_owned()
}

fn schedules_table() -> TableCreateStatement {
    Table::create()
        .table(JobsSchedules::Table)
        .col(text(JobsSchedules::Tenant))
        .col(text(JobsSchedules::Name))
        .col(text(JobsSchedules::Cron))
        .col(text(JobsSchedules::Timezone))
        // The job template: the create fields of `POST /v1/jobs`.
        .col(json_binary(JobsSchedules::Job))
        .col(text(JobsSchedules::CatchUp))
        .col(timestamp_with_time_zone_null(JobsSchedules::PausedAt))
        .col(timestamp_with_time_zone(JobsSchedules::NextRunAt))
        .col(timestamp_with_time_zone_null(JobsSchedules::LastRunAt))
        .col(uuid_null(JobsSchedules::LastJobId))
        .col(timestamp_with_time_zone(JobsSchedules::CreatedAt))
        .col(timestamp_with_time_zone(JobsSchedules::UpdatedAt))
        .primary_key(
            Index::create()
                .col(JobsSchedules::Tenant)
                .col(JobsSchedules::Name),
        )
        .check(Expr::col(JobsSchedules::CatchUp).is_in(["skip", "once", "all"]))
        .to_owned()
}
