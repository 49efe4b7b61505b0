//! The migrations go up, down and up again with their indexes, and the SeaORM entity
//! agrees with the migrated `jobs` table on every column's name, type and nullability.

use std::collections::{BTreeMap, BTreeSet};

use jobs_store::entity::{self, Column, Entity};
use jobs_store::testing::TestDb;
use jobs_store::{migrate_down, migrate_up, migration_status};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ColumnType, ConnectionTrait, DatabaseConnection, DbBackend,
    EntityTrait, IdenStatic, IntoActiveModel, Iterable, QueryResult, Statement,
};
use serde_json::json;
use time::macros::datetime;

/// Every index on `jobs` once all migrations ran.
const INDEXES: [&str; 8] = [
    "jobs_claim_idx",
    "jobs_unique_key_idx",
    "jobs_tenant_created_idx",
    "jobs_tenant_state_created_idx",
    "jobs_trace_id_idx",
    "jobs_lease_idx",
    "jobs_expires_idx",
    "jobs_deadline_idx",
];

async fn rows(db: &DatabaseConnection, sql: &str) -> Vec<QueryResult> {
    let statement = Statement::from_string(db.get_database_backend(), sql);
    db.query_all_raw(statement)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, col: &str) -> T {
    row.try_get("", col)
        .unwrap_or_else(|e| panic!("column {col}: {e}"))
}

/// How many columns the catalog lists for `jobs` (0 when the table is absent).
async fn jobs_column_count(db: &DatabaseConnection) -> i64 {
    let sql = match db.get_database_backend() {
        DbBackend::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'jobs'"
        }
        _ => "SELECT COUNT(*) AS n FROM pragma_table_info('jobs')",
    };
    get(&rows(db, sql).await[0], "n")
}

/// The indexes on `jobs`, by name, with the SQL that defines them.
async fn jobs_indexes(db: &DatabaseConnection) -> BTreeMap<String, String> {
    let sql = match db.get_database_backend() {
        DbBackend::Postgres => {
            "SELECT indexname AS name, indexdef AS def FROM pg_indexes \
             WHERE schemaname = current_schema() AND tablename = 'jobs'"
        }
        // Indexes behind constraints (the primary key) have no SQL.
        _ => {
            "SELECT name, COALESCE(sql, '') AS def FROM sqlite_master \
             WHERE type = 'index' AND tbl_name = 'jobs'"
        }
    };
    rows(db, sql)
        .await
        .iter()
        .map(|row| (get(row, "name"), get(row, "def")))
        .collect()
}

fn sample_job() -> entity::Model {
    let at = datetime!(2026-01-02 03:04:05.123456 UTC);
    entity::Model {
        id: uuid::Uuid::now_v7(),
        tenant: "t".into(),
        queue: "default".into(),
        kind: "email".into(),
        args: json!({"to": "a@example.com"}),
        state: "pending".into(),
        priority: 5,
        run_at: at,
        attempt: 0,
        max_attempts: 3,
        timeout_ms: Some(30_000),
        deadline: None,
        retention_ms: 86_400_000,
        progress: 0.25,
        stage: Some("queued".into()),
        result: None,
        item_errors: None,
        errors: json!([]),
        worker_id: None,
        lease_token: None,
        lease_expires_at: None,
        cancel_requested_at: None,
        unique_key: Some("k1".into()),
        trace_id: None,
        metadata: json!({"m": 1}),
        created_at: at,
        updated_at: at,
        started_at: None,
        finished_at: Some(at),
        expires_at: None,
    }
}

async fn migrations_go_up_down_and_up_again(db: TestDb) {
    let conn = db.store.connection();
    let expected_columns = i64::try_from(Column::iter().count()).unwrap();
    assert!(expected_columns > 0, "the entity has no columns");

    let status = migration_status(conn).await.unwrap();
    assert!(
        status
            .iter()
            .any(|m| m.name == "m20261125_000001_create_jobs"),
        "create_jobs migration missing from {status:?}"
    );
    assert!(
        status.iter().all(|m| m.applied),
        "not all applied: {status:?}"
    );
    assert_eq!(jobs_column_count(conn).await, expected_columns);

    // Down: the table, and with it its indexes, is gone.
    migrate_down(conn, None).await.unwrap();
    let status = migration_status(conn).await.unwrap();
    assert!(!status.is_empty());
    assert!(
        status.iter().all(|m| !m.applied),
        "still applied: {status:?}"
    );
    assert_eq!(
        jobs_column_count(conn).await,
        0,
        "jobs still in the catalog"
    );
    assert!(jobs_indexes(conn).await.is_empty());
    let query = Statement::from_string(conn.get_database_backend(), "SELECT id FROM jobs");
    assert!(
        conn.query_all_raw(query).await.is_err(),
        "jobs is still queryable after migrate_down"
    );

    // Up again, on a fresh pool: an SQLite connection that saw the old schema fails
    // `CREATE INDEX` with a spurious "already exists" (it checks its stale schema cache).
    let again = db.connect_again().await;
    let conn = again.connection();
    migrate_up(conn).await.unwrap();
    let status = migration_status(conn).await.unwrap();
    assert!(
        status.iter().all(|m| m.applied),
        "not all applied: {status:?}"
    );
    assert_eq!(jobs_column_count(conn).await, expected_columns);

    let indexes = jobs_indexes(conn).await;
    for name in INDEXES {
        assert!(
            indexes.contains_key(name),
            "index {name} missing: {indexes:?}"
        );
    }
    for dropped in [
        "jobs_tenant_kind_created_idx",
        "jobs_tenant_queue_created_idx",
    ] {
        assert!(!indexes.contains_key(dropped), "{dropped} is still there");
    }
    let claim = &indexes["jobs_claim_idx"];
    assert!(
        claim.contains(" WHERE ") && claim.contains("state = 'pending'"),
        "jobs_claim_idx is not partial on pending rows: {claim}"
    );
    assert!(
        !claim.starts_with("CREATE UNIQUE"),
        "jobs_claim_idx is unique: {claim}"
    );
    let unique = &indexes["jobs_unique_key_idx"];
    assert!(
        unique.starts_with("CREATE UNIQUE INDEX"),
        "jobs_unique_key_idx is not unique: {unique}"
    );

    let job = sample_job();
    job.clone().into_active_model().insert(conn).await.unwrap();
    let read = Entity::find_by_id(job.id).one(conn).await.unwrap();
    assert_eq!(read, Some(job));
}

/// The type name the catalog shows for a column SeaORM declares as `ty`: PostgreSQL's
/// `information_schema.columns.data_type`, or SQLite's `table_info` type, which is the
/// name sea-query wrote in `CREATE TABLE` (SQLite's own names upper-cased). SQLite
/// cannot tell `Integer` from `BigInteger`: sea-query writes `integer` for both.
fn catalog_type(backend: DbBackend, column: &str, ty: &ColumnType) -> &'static str {
    let pg = backend == DbBackend::Postgres;
    match ty {
        ColumnType::Uuid if pg => "uuid",
        ColumnType::Uuid => "uuid_text",
        ColumnType::Text if pg => "text",
        ColumnType::Text => "TEXT",
        ColumnType::JsonBinary if pg => "jsonb",
        ColumnType::JsonBinary => "jsonb_text",
        ColumnType::SmallInteger => "smallint",
        ColumnType::Integer if pg => "integer",
        ColumnType::Integer => "INTEGER",
        ColumnType::BigInteger if pg => "bigint",
        ColumnType::BigInteger => "INTEGER",
        ColumnType::Double if pg => "double precision",
        ColumnType::Double => "double",
        ColumnType::TimestampWithTimeZone if pg => "timestamp with time zone",
        ColumnType::TimestampWithTimeZone => "timestamp_with_timezone_text",
        other => panic!(
            "column {column}: no expected {backend:?} catalog type for SeaORM type {other:?}; \
             add it to catalog_type()"
        ),
    }
}

/// Each column of `jobs` in the catalog: name -> (type, nullable).
async fn catalog_columns(db: &DatabaseConnection) -> BTreeMap<String, (String, bool)> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let sql = "SELECT column_name::text AS name, data_type::text AS ty, \
                       is_nullable::text AS nullable FROM information_schema.columns \
                       WHERE table_schema = current_schema() AND table_name = 'jobs'";
            rows(db, sql)
                .await
                .iter()
                .map(|r| {
                    let nullable: String = get(r, "nullable");
                    (get(r, "name"), (get(r, "ty"), nullable == "YES"))
                })
                .collect()
        }
        _ => rows(db, "PRAGMA table_info(jobs)")
            .await
            .iter()
            .map(|r| {
                let notnull: i64 = get(r, "notnull");
                (get(r, "name"), (get(r, "type"), notnull == 0))
            })
            .collect(),
    }
}

async fn entity_matches_migrated_schema(db: TestDb) {
    let conn = db.store.connection();
    let backend = conn.get_database_backend();
    let table = catalog_columns(conn).await;
    // Not vacuous: the table has columns, and each must match one of the entity's.
    assert!(!table.is_empty(), "the catalog lists no columns for jobs");

    let mut problems = Vec::new();
    let mut entity_names = BTreeSet::new();
    for column in Column::iter() {
        let name = column.as_str();
        entity_names.insert(name.to_owned());
        let def = column.def();
        let want_type = catalog_type(backend, name, def.get_column_type());
        let Some((have_type, have_null)) = table.get(name) else {
            problems.push(format!(
                "column {name}: in the entity, missing from the table"
            ));
            continue;
        };
        if have_type != want_type {
            problems.push(format!(
                "column {name}: entity type {:?} expects {want_type:?}, table has {have_type:?}",
                def.get_column_type()
            ));
        }
        if *have_null != def.is_null() {
            problems.push(format!(
                "column {name}: entity nullable={}, table nullable={have_null}",
                def.is_null()
            ));
        }
    }
    for name in table.keys().filter(|n| !entity_names.contains(*n)) {
        problems.push(format!(
            "column {name}: in the table, missing from the entity"
        ));
    }
    assert!(
        problems.is_empty(),
        "entity and {backend:?} schema disagree:\n{}",
        problems.join("\n")
    );

    assert_eq!(
        table.get("id").map(|c| c.1),
        Some(false),
        "id must be NOT NULL"
    );
    assert!(!Column::Id.def().is_null(), "entity id must be NOT NULL");
}

jobs_store::backend_tests!(
    migrations_go_up_down_and_up_again,
    entity_matches_migrated_schema
);
