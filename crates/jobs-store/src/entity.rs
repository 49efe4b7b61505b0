//! The SeaORM entity of the `jobs` table. Rows are read through it; a test checks that it
//! agrees with the migrated schema column by column.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub tenant: String,
    #[sea_orm(column_type = "Text")]
    pub queue: String,
    #[sea_orm(column_type = "Text")]
    pub kind: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub args: Json,
    #[sea_orm(column_type = "Text")]
    pub state: String,
    pub priority: i16,
    pub run_at: TimeDateTimeWithTimeZone,
    pub attempt: i32,
    pub max_attempts: i32,
    pub timeout_ms: Option<i64>,
    pub deadline: Option<TimeDateTimeWithTimeZone>,
    pub retention_ms: i64,
    pub progress: f64,
    #[sea_orm(column_type = "Text", nullable)]
    pub stage: Option<String>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub result: Option<Json>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub item_errors: Option<Json>,
    #[sea_orm(column_type = "JsonBinary")]
    pub errors: Json,
    #[sea_orm(column_type = "Text", nullable)]
    pub worker_id: Option<String>,
    pub lease_token: Option<Uuid>,
    pub lease_expires_at: Option<TimeDateTimeWithTimeZone>,
    pub cancel_requested_at: Option<TimeDateTimeWithTimeZone>,
    #[sea_orm(column_type = "Text", nullable)]
    pub unique_key: Option<String>,
    /// Bitmask of the states in which `unique_key` blocks another job (migration 6).
    pub unique_states: Option<i32>,
    /// Jobs sharing it count against per-key limits together (migration 7).
    #[sea_orm(column_type = "Text", nullable)]
    pub concurrency_key: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub trace_id: Option<String>,
    #[sea_orm(column_type = "JsonBinary")]
    pub metadata: Json,
    pub created_at: TimeDateTimeWithTimeZone,
    pub updated_at: TimeDateTimeWithTimeZone,
    pub started_at: Option<TimeDateTimeWithTimeZone>,
    pub finished_at: Option<TimeDateTimeWithTimeZone>,
    pub expires_at: Option<TimeDateTimeWithTimeZone>,
    /// Dependencies and workflows (migration 8).
    pub parents: i32,
    pub waiting_on: i32,
    #[sea_orm(column_type = "Text")]
    pub on_parent_failure: String,
    pub has_dependents: bool,
    pub workflow_id: Option<Uuid>,
    #[sea_orm(column_type = "Text", nullable)]
    pub workflow_step: Option<String>,
    /// A large result and item errors, zstd-compressed (migration 9).
    #[sea_orm(column_type = "Blob", nullable)]
    pub outcome_zstd: Option<Vec<u8>>,
    pub has_files: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
