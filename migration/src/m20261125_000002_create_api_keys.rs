//! The `api_keys` table: secrets that the HTTP API accepts as `Authorization: Bearer <key>`,
//! each mapped to a tenant. Only the SHA-256 of a secret is stored; `prefix` (its first
//! characters) lets operators tell keys apart in listings.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Tenant,
    KeyHash,
    Prefix,
    CreatedAt,
    RevokedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// One transaction on SQLite too, as in the first migration: other pooled connections
    /// see the table and its index at once.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(uuid(ApiKeys::Id).primary_key())
                    .col(text(ApiKeys::Tenant))
                    // Hex SHA-256 of the secret.
                    .col(text(ApiKeys::KeyHash))
                    .col(text(ApiKeys::Prefix))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .to_owned(),
            )
            .await?;
        // Authentication looks a key up by its hash; no two keys share one.
        manager
            .create_index(
                Index::create()
                    .name("api_keys_key_hash_idx")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::KeyHash)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Dropping the table drops its index on both backends.
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}
