//! Every schema change of the job system, in order. Each migration has a working `down`,
//! so `up`, `down`, `up` leaves the same schema on PostgreSQL and SQLite.
//!
//! A binary's schema version is the number of migrations it knows; the database's is the
//! number it has applied. The one-row table `jobs_schema` (from `000005`) records the
//! oldest binary version that may still run on the schema: a migration that breaks older
//! binaries raises `oldest_compatible` in its `up` and restores it in its `down`; an
//! additive one leaves it. Add every migration at the end of the list. docs/OPERATIONS.md
//! lists them, with their rollbacks.

pub use sea_orm_migration::{MigrationStatus, prelude::*};

mod m20261125_000001_create_jobs;
mod m20261125_000002_create_api_keys;
mod m20261126_000003_lean_listing_indexes;
mod m20261201_000004_leases_and_leader;
mod m20261201_000005_schema_compatibility;
pub mod m20261203_000006_operations;
pub mod m20261204_000007_flow_control;
pub mod m20261205_000008_workflows;
pub mod m20261206_000009_estimates_and_compression;
pub mod m20261206_000010_files;
pub mod m20261206_000011_webhooks;
mod m20261207_000012_finished_index;
mod m20261208_000013_one_listing_index;
mod m20261209_000014_cancel_pending_index;
mod m20261210_000015_listing_without_running;

#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_jobs::Migration),
            Box::new(m20261125_000002_create_api_keys::Migration),
            Box::new(m20261126_000003_lean_listing_indexes::Migration),
            Box::new(m20261201_000004_leases_and_leader::Migration),
            Box::new(m20261201_000005_schema_compatibility::Migration),
            Box::new(m20261203_000006_operations::Migration),
            Box::new(m20261204_000007_flow_control::Migration),
            Box::new(m20261205_000008_workflows::Migration),
            Box::new(m20261206_000009_estimates_and_compression::Migration),
            Box::new(m20261206_000010_files::Migration),
            Box::new(m20261206_000011_webhooks::Migration),
            Box::new(m20261207_000012_finished_index::Migration),
            Box::new(m20261208_000013_one_listing_index::Migration),
            Box::new(m20261209_000014_cancel_pending_index::Migration),
            Box::new(m20261210_000015_listing_without_running::Migration),
        ]
    }
}
