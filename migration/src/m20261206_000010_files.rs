//! Files of jobs: the rows of inputs and results whose bytes live in the file storage.
//!
//! - `jobs_files`: one row per stored file: its id (the name of its object), its job
//!   (`NULL` while staged: uploaded before its job exists), tenant, role (`input` or
//!   `result`), name, size and SHA-256. A job's files of one role have distinct names.
//!   No foreign key: rows of deleted jobs are swept with their objects, objects first.
//! - `jobs.has_files`: set with a job's first file, so claims and reads of the many
//!   jobs without files skip the lookup.
//!
//! Additive: older binaries ignore both, so `oldest_compatible` stays.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    HasFiles,
}

#[derive(DeriveIden)]
enum JobsFiles {
    Table,
    Id,
    JobId,
    Tenant,
    Role,
    Name,
    Size,
    Sha256,
    CreatedAt,
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
                    .add_column(boolean(Jobs::HasFiles).default(false))
                    .to_owned(),
            )
            .await?;
        manager.create_table(files_table()).await?;
        let db = manager.get_connection();
        for statement in [
            "CREATE UNIQUE INDEX jobs_files_job_idx ON jobs_files (job_id, role, name)",
            "CREATE INDEX jobs_files_staged_idx ON jobs_files (created_at) WHERE job_id IS NULL",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The objects of the dropped rows stay in the file storage: delete them by hand
        // (docs/OPERATIONS.md) if the rollback is for good.
        manager
            .drop_table(Table::drop().table(JobsFiles::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .drop_column(Jobs::HasFiles)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

fn files_table() -> TableCreateStatement {
    Table::create()
        .table(JobsFiles::Table)
        .col(uuid(JobsFiles::Id).primary_key())
        .col(uuid_null(JobsFiles::JobId))
        .col(text(JobsFiles::Tenant))
        .col(text(JobsFiles::Role).check(Expr::col(JobsFiles::Role).is_in(["input", "result"])))
        .col(text(JobsFiles::Name))
        .col(big_integer(JobsFiles::Size))
        .col(text(JobsFiles::Sha256))
        .col(timestamp_with_time_zone(JobsFiles::CreatedAt))
        .to_owned()
}
