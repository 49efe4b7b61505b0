//! Lease tokens and expiring leadership. Each claim stores a random `lease_token` on the
//! row, and every worker write must present it, so a stale attempt changes nothing even
//! under a reused worker id. `jobs_leader` holds one row per elected role (maintenance)
//! with an expiry that only a live leader renews: a frozen leader loses the role when its
//! row expires, where a session advisory lock would be held as long as its connection.
//!
//! Additive: binaries that knew the first three migrations still run on this schema.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    LeaseToken,
}

#[derive(DeriveIden)]
enum JobsLeader {
    Table,
    Name,
    LeaderId,
    ExpiresAt,
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
                    .add_column(uuid_null(Jobs::LeaseToken))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(JobsLeader::Table)
                    .col(text(JobsLeader::Name).primary_key())
                    .col(text(JobsLeader::LeaderId))
                    .col(timestamp_with_time_zone(JobsLeader::ExpiresAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(JobsLeader::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .drop_column(Jobs::LeaseToken)
                    .to_owned(),
            )
            .await
    }
}
