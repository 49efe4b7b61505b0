//! The migrations go up, down and up again with their indexes, and the SeaORM entity
//! agrees with the migrated `jobs` table on every column's name, type and nullability.
//! The schema check tells a current schema from an older, a newer-compatible and a
//! newer-incompatible one, naming the versions, and work runs only while it fits.

use std::collections::{BTreeMap, BTreeSet};

use jobs_core::{JobStore, ListFilter, NewJob, PageRequest, State};
use jobs_store::entity::{self, Column, Entity};
use jobs_store::testing::{TestDb, listing_plan};
use jobs_store::{
    SchemaStatus, binary_schema_version, known_migrations, migrate_down, migrate_up,
    migration_status, readiness, run_while_schema_fits, schema_check,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ColumnType, ConnectionTrait, DatabaseConnection, DbBackend,
    EntityTrait, IdenStatic, IntoActiveModel, Iterable, QueryResult, Statement,
};
use serde_json::json;
use time::macros::datetime;

/// Every index on `jobs` once all migrations ran.
const INDEXES: [&str; 7] = [
    "jobs_claim_idx",
    "jobs_unique_key_idx",
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
        unique_states: Some(63),
        concurrency_key: None,
        trace_id: None,
        metadata: json!({"m": 1}),
        created_at: at,
        updated_at: at,
        started_at: None,
        finished_at: Some(at),
        expires_at: None,
        parents: 2,
        waiting_on: 1,
        on_parent_failure: "wait".into(),
        has_dependents: true,
        workflow_id: Some(uuid::Uuid::now_v7()),
        workflow_step: Some("fetch".into()),
        outcome_zstd: Some(vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0xff]),
        has_files: true,
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
        "jobs_tenant_created_idx",
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
    // Claims write no entry into the listing index on PostgreSQL, and new jobs take its
    // right end (migration 15).
    let listing = &indexes["jobs_tenant_state_created_idx"];
    let on_postgres = conn.get_database_backend() == DbBackend::Postgres;
    assert_eq!(
        listing.contains("(tenant, state, created_at, id) WHERE (state <> 'running'"),
        on_postgres,
        "jobs_tenant_state_created_idx: {listing}"
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

/// With no index on `(tenant, created_at, id)`, a tenant's listing of every state still
/// reads an index, the per-state one, rather than sorting the tenant's jobs: the first
/// page and the one after a cursor. On PostgreSQL that index (read backwards) leaves
/// out running jobs (migration 15): their member reads the lease index and sorts, the
/// only sort. Jobs of a few tenants, planned with statistics.
async fn a_tenant_listing_of_every_state_reads_the_per_state_index(db: TestDb) {
    let store = &db.store;
    for tenant in ["a", "b", "c", "d"] {
        let jobs = (0..500)
            .map(|i| NewJob::new("k", json!({"i": i})).tenant(tenant))
            .collect();
        store.enqueue_many(jobs).await.unwrap();
    }
    execute(store.connection(), "ANALYZE").await;
    let tenant = ListFilter::new().tenant("b");
    let first = store.list(&tenant, &PageRequest::first(20)).await.unwrap();
    let after = PageRequest::after(20, first.next_cursor.unwrap());
    for page in [PageRequest::first(20), after] {
        let plan = listing_plan(store, &tenant, &page).await.join("\n");
        let per_state = match store.connection().get_database_backend() {
            // Each state's range in index order, merged; running jobs sorted from the
            // lease index; no scan of the table.
            DbBackend::Postgres => {
                let ranges = plan.matches("using jobs_tenant_state_created_idx").count();
                ranges == State::ALL.len() - 1
                    && plan.matches("Sort  (").count() == 1
                    && plan.contains("jobs_lease_idx")
                    && !plan.contains("Seq Scan")
            }
            _ => plan.contains("USING INDEX jobs_tenant_state_created_idx (tenant=? AND state=?"),
        };
        assert!(
            per_state,
            "the listing does not read the per-state index:\n{plan}"
        );
    }
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
        ColumnType::Boolean if pg => "boolean",
        ColumnType::Boolean => "boolean",
        ColumnType::Blob if pg => "bytea",
        ColumnType::Blob => "BLOB",
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

/// A migration no release of this binary knows, as a newer release would have applied.
const FUTURE: &str = "m20991231_000099_from_the_future";

async fn execute(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Records `FUTURE` as applied, as a newer release's `migrate up` would.
async fn apply_future_migration(db: &DatabaseConnection) {
    execute(
        db,
        &format!("INSERT INTO seaql_migrations (version, applied_at) VALUES ('{FUTURE}', 0)"),
    )
    .await;
}

async fn set_oldest_compatible(db: &DatabaseConnection, version: usize) {
    execute(
        db,
        &format!("UPDATE jobs_schema SET oldest_compatible = {version}"),
    )
    .await;
}

async fn a_migrated_schema_is_current(db: TestDb) {
    let conn = db.store.connection();
    let binary = binary_schema_version();
    assert_eq!(binary, known_migrations().len());
    assert_eq!(
        schema_check(conn).await,
        SchemaStatus::Current { version: binary }
    );
    assert_eq!(readiness(conn).await, Ok(()));
    let recorded: i32 = get(
        &rows(conn, "SELECT oldest_compatible FROM jobs_schema").await[0],
        "oldest_compatible",
    );
    let recorded = usize::try_from(recorded).unwrap();
    assert!(
        (1..=binary).contains(&recorded),
        "this binary runs on its own schema: oldest_compatible {recorded}, binary {binary}"
    );
    // One row only.
    let second = Statement::from_string(
        conn.get_database_backend(),
        "INSERT INTO jobs_schema (id, oldest_compatible) VALUES (2, 1)",
    );
    assert!(conn.execute_raw(second).await.is_err());
}

async fn an_empty_database_misses_the_jobs_table(migrated: TestDb) {
    let db = migrated.empty_twin().await;
    let conn = db.store.connection();
    let binary = binary_schema_version();
    assert_eq!(
        schema_check(conn).await,
        SchemaStatus::JobsTableMissing {
            database: 0,
            binary
        }
    );
    let reason = readiness(conn).await.unwrap_err();
    assert!(
        reason.contains("jobs table missing")
            && reason.contains(&format!("schema version 0, this binary needs {binary}")),
        "{reason}"
    );
    // Reading the status creates nothing.
    let status = migration_status(conn).await.unwrap();
    assert!(status.iter().all(|m| !m.applied && m.known), "{status:?}");
    let tables = match conn.get_database_backend() {
        DbBackend::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.tables              WHERE table_schema = current_schema()"
        }
        _ => "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table'",
    };
    assert_eq!(get::<i64>(&rows(conn, tables).await[0], "n"), 0);
}

async fn a_rolled_back_schema_is_older(db: TestDb) {
    let conn = db.store.connection();
    let binary = binary_schema_version();
    migrate_down(conn, Some(1)).await.unwrap();
    let newest = known_migrations().pop().unwrap();
    assert_eq!(
        schema_check(conn).await,
        SchemaStatus::Older {
            database: binary - 1,
            binary,
            pending: vec![newest.clone()]
        }
    );
    let reason = readiness(conn).await.unwrap_err();
    let want = format!(
        "schema version {}, this binary needs {binary}: run `jobs-api migrate up`",
        binary - 1
    );
    assert!(
        reason.starts_with(&want) && reason.contains(&newest),
        "{reason}"
    );

    let again = db.connect_again().await;
    migrate_up(again.connection()).await.unwrap();
    assert_eq!(
        schema_check(again.connection()).await,
        SchemaStatus::Current { version: binary }
    );
}

async fn a_newer_schema_that_breaks_this_binary_is_refused(db: TestDb) {
    let conn = db.store.connection();
    let binary = binary_schema_version();
    apply_future_migration(conn).await;
    set_oldest_compatible(conn, binary + 1).await;
    assert_eq!(
        schema_check(conn).await,
        SchemaStatus::NewerIncompatible {
            database: binary + 1,
            binary,
            oldest_compatible: Some(binary + 1),
            unknown: vec![FUTURE.to_owned()],
        }
    );
    let reason = readiness(conn).await.unwrap_err();
    let want = format!(
        "schema version {} is newer than this binary ({binary}) and needs binaries of version >= {}",
        binary + 1,
        binary + 1
    );
    assert!(
        reason.starts_with(&want) && reason.contains(FUTURE),
        "{reason}"
    );

    // Starting the binary (which migrates) neither fails nor changes anything.
    migrate_up(conn).await.unwrap();
    assert!(matches!(
        schema_check(conn).await,
        SchemaStatus::NewerIncompatible { .. }
    ));
    // Only the release that knows the newest migration can roll it back.
    let refused = migrate_down(conn, Some(1)).await.unwrap_err().to_string();
    assert!(refused.contains(FUTURE), "{refused}");
    assert!(matches!(
        schema_check(conn).await,
        SchemaStatus::NewerIncompatible { .. }
    ));
    // The status lists it, as applied and unknown.
    let status = migration_status(conn).await.unwrap();
    assert_eq!(status.len(), binary + 1);
    assert!(status[..binary].iter().all(|m| m.applied && m.known));
    assert_eq!(
        (
            status[binary].name.as_str(),
            status[binary].applied,
            status[binary].known
        ),
        (FUTURE, true, false)
    );
}

async fn a_newer_additive_schema_still_serves(db: TestDb) {
    let conn = db.store.connection();
    let binary = binary_schema_version();
    apply_future_migration(conn).await;
    let status = schema_check(conn).await;
    assert!(
        matches!(
            status,
            SchemaStatus::NewerCompatible { database, binary: b, oldest_compatible, .. }
                if database == binary + 1 && b == binary && oldest_compatible <= binary
        ),
        "{status:?}"
    );
    assert!(status.is_ready() && !status.blocks_work());
    assert_eq!(readiness(conn).await, Ok(()));
    // Exactly at the bound still runs.
    set_oldest_compatible(conn, binary).await;
    assert!(schema_check(conn).await.is_ready());
}

async fn work_runs_only_while_the_schema_fits(db: TestDb) {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    let conn = db.store.connection().clone();
    let binary = binary_schema_version();
    apply_future_migration(&conn).await;
    set_oldest_compatible(&conn, binary + 1).await;

    let started = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let supervisor = tokio::spawn({
        let (conn, started, stopped, shutdown) = (
            conn.clone(),
            started.clone(),
            stopped.clone(),
            shutdown.clone(),
        );
        async move {
            run_while_schema_fits(&conn, Duration::from_millis(50), &shutdown, |stop| {
                let (started, stopped) = (started.clone(), stopped.clone());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    stop.cancelled().await;
                    stopped.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), String>(())
                }
            })
            .await
        }
    });
    // Waits until `count` reaches `want` (at most 10 s), then a little longer, so that
    // a count that should stay put had the chance to move.
    let reaches = async |count: &AtomicUsize, want: usize, what: &str| {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
        while count.load(Ordering::SeqCst) < want {
            assert!(tokio::time::Instant::now() < give_up, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(count.load(Ordering::SeqCst), want, "{what}");
    };
    reaches(
        &started,
        0,
        "work does not start on a schema that breaks it",
    )
    .await;

    set_oldest_compatible(&conn, binary).await;
    reaches(&started, 1, "work starts once the schema fits").await;
    assert_eq!(stopped.load(Ordering::SeqCst), 0);

    set_oldest_compatible(&conn, binary + 1).await;
    reaches(&stopped, 1, "work stops when the schema breaks it").await;
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "and does not start again"
    );

    set_oldest_compatible(&conn, binary).await;
    reaches(&started, 2, "it resumes once the schema fits again").await;
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), supervisor)
        .await
        .expect("shutdown ends the supervisor")
        .unwrap();
    assert_eq!(result, Ok(()));
    assert_eq!(stopped.load(Ordering::SeqCst), 2);
}

jobs_store::backend_tests!(
    migrations_go_up_down_and_up_again,
    entity_matches_migrated_schema,
    a_migrated_schema_is_current,
    an_empty_database_misses_the_jobs_table,
    a_rolled_back_schema_is_older,
    a_newer_schema_that_breaks_this_binary_is_refused,
    a_newer_additive_schema_still_serves,
    work_runs_only_while_the_schema_fits,
    a_tenant_listing_of_every_state_reads_the_per_state_index,
);
