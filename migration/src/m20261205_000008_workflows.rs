//! Workflows: jobs that wait for other jobs.
//!
//! - `jobs.state` may be `waiting`: the job waits for parents. The claim index only holds
//!   pending rows, so waiting jobs cost claims nothing however many there are.
//! - `jobs.parents` (how many parents), `jobs.waiting_on` (how many have not yet ended as
//!   required), `jobs.on_parent_failure` (`cancel` or `wait`), `jobs.has_dependents` (so
//!   a statement that ends jobs knows, from its own RETURNING, whether any job waits for
//!   them), `jobs.workflow_id` and `jobs.workflow_step`.
//! - `jobs_dependencies`: one row per (job, parent) with what the job requires of the
//!   parent (`completed` or `ended`) and whether the parent has satisfied it.
//! - `jobs_workflows`: one row per workflow.
//! - The unique index counts a waiting job as pending (see `UNIQUE_PREDICATE`).
//!
//! Breaks older binaries: they cannot read a waiting job and would end parents without
//! releasing their dependents, so `oldest_compatible` rises to this migration's number.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

pub const OLDEST_COMPATIBLE: i32 = 8;
const PREVIOUS_OLDEST_COMPATIBLE: i32 = 7;

/// The predicate of the unique index: a key blocks while its job is in one of its
/// `unique_states`, a waiting job as a pending one. An `ON CONFLICT` clause must repeat
/// it word for word to use the index.
pub const UNIQUE_PREDICATE: &str = "unique_key IS NOT NULL AND (unique_states & CASE state \
     WHEN 'pending' THEN 1 WHEN 'waiting' THEN 1 WHEN 'running' THEN 2 WHEN 'completed' THEN 4 \
     WHEN 'partial' THEN 8 WHEN 'failed' THEN 16 WHEN 'cancelled' THEN 32 ELSE 0 END) <> 0";

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Parents,
    WaitingOn,
    OnParentFailure,
    HasDependents,
    WorkflowId,
    WorkflowStep,
}

#[derive(DeriveIden)]
enum JobsDependencies {
    Table,
    JobId,
    ParentId,
    Requires,
    Satisfied,
}

#[derive(DeriveIden)]
enum JobsWorkflows {
    Table,
    Id,
    Tenant,
    Name,
    CreatedAt,
    CancelledAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite alters one column per statement.
        for mut column in [
            integer(Jobs::Parents).default(0).to_owned(),
            integer(Jobs::WaitingOn).default(0).to_owned(),
            text(Jobs::OnParentFailure).default("cancel").to_owned(),
            boolean(Jobs::HasDependents).default(false).to_owned(),
            uuid_null(Jobs::WorkflowId),
            text_null(Jobs::WorkflowStep),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Jobs::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager.create_table(dependencies_table()).await?;
        manager.create_table(workflows_table()).await?;
        let db = manager.get_connection();
        allow_states(manager, &STATES, &STATES[..6]).await?;
        for statement in [
            "CREATE INDEX jobs_dependencies_parent_idx ON jobs_dependencies (parent_id)",
            "CREATE INDEX jobs_workflow_idx ON jobs (workflow_id) WHERE workflow_id IS NOT NULL",
            "CREATE INDEX jobs_workflows_listing_idx ON jobs_workflows (tenant, created_at, id)",
            "DROP INDEX jobs_unique_key_idx",
        ] {
            db.execute_unprepared(statement).await?;
        }
        db.execute_unprepared(&format!(
            "CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (tenant, unique_key) WHERE {UNIQUE_PREDICATE}"
        ))
        .await?;
        db.execute_unprepared(&format!(
            "UPDATE jobs_schema SET oldest_compatible = {OLDEST_COMPATIBLE}"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("UPDATE jobs SET state = 'pending' WHERE state = 'waiting'")
            .await?;
        allow_states(manager, &STATES[..6], &STATES).await?;
        // Without dependencies a waiting job is simply pending.
        for statement in [
            format!("UPDATE jobs_schema SET oldest_compatible = {PREVIOUS_OLDEST_COMPATIBLE}"),
            "DROP INDEX jobs_unique_key_idx".to_owned(),
            format!(
                "CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (tenant, unique_key) WHERE {}",
                crate::m20261203_000006_operations::UNIQUE_PREDICATE
            ),
            "DROP INDEX jobs_workflow_idx".to_owned(),
        ] {
            db.execute_unprepared(&statement).await?;
        }
        manager
            .drop_table(Table::drop().table(JobsWorkflows::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(JobsDependencies::Table).to_owned())
            .await?;
        for column in [
            Jobs::Parents,
            Jobs::WaitingOn,
            Jobs::OnParentFailure,
            Jobs::HasDependents,
            Jobs::WorkflowId,
            Jobs::WorkflowStep,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Jobs::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Every state, `waiting` last.
const STATES: [&str; 7] = [
    "pending",
    "running",
    "completed",
    "partial",
    "failed",
    "cancelled",
    "waiting",
];

/// Replaces the CHECK on `jobs.state` (allowing `old`) by one allowing `new`. SQLite
/// cannot alter a constraint; its documented way for a change that every existing row
/// satisfies is to edit the stored schema text and bump the schema version.
async fn allow_states(
    manager: &SchemaManager<'_>,
    new: &[&str],
    old: &[&str],
) -> Result<(), DbErr> {
    let list = |states: &[&str]| {
        let quoted: Vec<String> = states.iter().map(|s| format!("'{s}'")).collect();
        quoted.join(", ")
    };
    let db = manager.get_connection();
    if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
        db.execute_unprepared("ALTER TABLE jobs DROP CONSTRAINT jobs_state_check")
            .await?;
        db.execute_unprepared(&format!(
            "ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN ({}))",
            list(new)
        ))
        .await?;
        return Ok(());
    }
    let version: i64 = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "PRAGMA schema_version",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("no schema version".into()))?
        .try_get_by_index(0)?;
    db.execute_unprepared("PRAGMA writable_schema = ON").await?;
    db.execute_unprepared(&format!(
        "UPDATE sqlite_master SET sql = replace(sql, \"IN ({old})\", \"IN ({new})\") \
         WHERE type = 'table' AND name = 'jobs'",
        old = list(old),
        new = list(new),
    ))
    .await?;
    db.execute_unprepared("PRAGMA writable_schema = OFF")
        .await?;
    db.execute_unprepared(&format!("PRAGMA schema_version = {}", version + 1))
        .await?;
    Ok(())
}

fn dependencies_table() -> TableCreateStatement {
    Table::create()
        .table(JobsDependencies::Table)
        .col(uuid(JobsDependencies::JobId))
        .col(uuid(JobsDependencies::ParentId))
        .col(text(JobsDependencies::Requires))
        .col(boolean(JobsDependencies::Satisfied).default(false))
        .primary_key(
            Index::create()
                .col(JobsDependencies::JobId)
                .col(JobsDependencies::ParentId),
        )
        .to_owned()
}

fn workflows_table() -> TableCreateStatement {
    Table::create()
        .table(JobsWorkflows::Table)
        .col(uuid(JobsWorkflows::Id).primary_key())
        .col(text(JobsWorkflows::Tenant))
        .col(text_null(JobsWorkflows::Name))
        .col(timestamp_with_time_zone(JobsWorkflows::CreatedAt))
        .col(timestamp_with_time_zone_null(JobsWorkflows::CancelledAt))
        .to_owned()
}
