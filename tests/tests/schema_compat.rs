//! The real binaries on a schema newer than they know, as after a binary rollback past a
//! migration that breaks them: `jobs-api` answers `/readyz` 503 naming both versions and
//! refuses `/v1` requests without writing a row; `jobs-worker` (and the api's embedded
//! worker on SQLite) claims nothing. Once the schema fits again, both start working.
//! Likewise on an older schema (started with `--no-migrate`) until `jobs-api migrate up`.

use std::time::Duration;

use blackbox_tests::{free_port, log_path, run, spawn, terminate, wait_until};
use jobs_core::{JobStore, NewJob, State};
use jobs_store::{backend_tests, binary_schema_version, migrate_down, testing::TestDb};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tokio::time::sleep;

backend_tests!(
    binaries_refuse_a_schema_that_breaks_them,
    binaries_wait_for_an_older_schema_to_be_migrated
);

async fn execute(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn job_count(db: &DatabaseConnection) -> i64 {
    let sql = "SELECT COUNT(*) AS n FROM jobs";
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap();
    rows[0].try_get("", "n").unwrap()
}

/// The state of the only job, read with plain SQL: the store reads columns an older
/// schema lacks.
async fn only_job_state(db: &DatabaseConnection) -> String {
    let sql = "SELECT state FROM jobs";
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap();
    rows[0].try_get("", "state").unwrap()
}

async fn binaries_refuse_a_schema_that_breaks_them(db: TestDb) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let backend = if db.store.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    let conn = db.store.connection();
    let binary = binary_schema_version();
    let newer = binary + 1;
    let waiting = db
        .store
        .enqueue(NewJob::new("echo", json!({"before": "the rollback"})))
        .await
        .unwrap()
        .job;
    // A newer release applied a migration that breaks binaries older than itself.
    execute(
        conn,
        "INSERT INTO seaql_migrations (version, applied_at) \
         VALUES ('m20991231_000099_breaks_older_binaries', 0)",
    )
    .await;
    execute(
        conn,
        &format!("UPDATE jobs_schema SET oldest_compatible = {newer}"),
    )
    .await;
    let detail = format!(
        "schema version {newer} is newer than this binary ({binary}) and needs binaries of \
         version >= {newer}"
    );

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let api_label = format!("schema-compat-api-{backend}");
    // On SQLite this api also runs its embedded worker, which must not claim either.
    let mut api = spawn("jobs-api", &api_label, &db.url(), &["--listen", &listen]);
    let http = reqwest::Client::new();
    wait_until("the api to serve /healthz", Duration::from_secs(30), async || {
        matches!(http.get(format!("{base}/healthz")).send().await, Ok(r) if r.status().is_success())
    })
    .await;

    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let problem: Value = ready.json().await.unwrap();
    let said = problem["detail"].as_str().unwrap_or_default();
    assert!(said.starts_with(&detail), "/readyz says why: {problem}");

    let created = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"kind": "echo", "args": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status(),
        503,
        "a create on a schema that breaks the binary"
    );
    let problem: Value = created.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&detail),
        "the create says why: {problem}"
    );
    let listed = http.get(format!("{base}/v1/jobs")).send().await.unwrap();
    assert_eq!(listed.status(), 503, "every /v1 request is refused");
    let disguised = http
        .post(format!("{base}/%761/jobs"))
        .json(&json!({"kind": "echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(disguised.status(), 503, "a percent-encoded /v1 is /v1 too");
    assert_eq!(job_count(conn).await, 1, "no row was written");

    let worker_label = format!("schema-compat-worker-{backend}");
    let mut worker = spawn(
        "jobs-worker",
        &worker_label,
        &db.url(),
        &["--poll-interval-ms", "100"],
    );
    let log = log_path(&worker_label);
    wait_until(
        "the worker to log why it does not work",
        Duration::from_secs(30),
        async || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(&detail)
        },
    )
    .await;
    // Several poll intervals: it would have claimed the job by now.
    sleep(Duration::from_secs(2)).await;
    let still = db.store.get(None, waiting.id).await.unwrap();
    assert_eq!(
        (still.state, still.attempt),
        (State::Pending, 0),
        "nobody claimed the job"
    );
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker waits for the schema rather than exiting"
    );

    // The newer release's migration turns out additive after all: the binaries may run.
    execute(
        conn,
        &format!("UPDATE jobs_schema SET oldest_compatible = {binary}"),
    )
    .await;
    wait_until(
        "a waiting worker to run the job",
        Duration::from_secs(30),
        async || db.store.get(None, waiting.id).await.unwrap().state == State::Completed,
    )
    .await;
    wait_until(
        "the api to be ready again",
        Duration::from_secs(30),
        async || {
            let r = http.get(format!("{base}/readyz")).send().await.unwrap();
            r.status() == 200
        },
    )
    .await;
    wait_until(
        "the api to serve /v1 again",
        Duration::from_secs(30),
        async || {
            let created = http
                .post(format!("{base}/v1/jobs"))
                .json(&json!({"kind": "echo", "args": {}}))
                .send()
                .await
                .unwrap();
            created.status().is_success()
        },
    )
    .await;

    for (name, child) in [("api", &mut api), ("worker", &mut worker)] {
        terminate(child);
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "SIGTERM ends the {name} cleanly: {status}"
        );
    }
}

async fn binaries_wait_for_an_older_schema_to_be_migrated(db: TestDb) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let backend = if db.store.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    let conn = db.store.connection();
    let binary = binary_schema_version();
    let waiting = db
        .store
        .enqueue(NewJob::new("echo", json!({})))
        .await
        .unwrap()
        .job;
    migrate_down(conn, Some(1)).await.unwrap();
    let detail = format!(
        "schema version {}, this binary needs {binary}: run `jobs-api migrate up`",
        binary - 1
    );

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let no_migrate = [
        "--no-migrate",
        "--embedded-worker",
        "off",
        "--listen",
        &listen,
    ];
    let mut api = spawn(
        "jobs-api",
        &format!("schema-older-api-{backend}"),
        &db.url(),
        &no_migrate,
    );
    let worker_label = format!("schema-older-worker-{backend}");
    let mut worker = spawn(
        "jobs-worker",
        &worker_label,
        &db.url(),
        &["--no-migrate", "--poll-interval-ms", "100"],
    );
    let http = reqwest::Client::new();
    wait_until("the api to serve /healthz", Duration::from_secs(30), async || {
        matches!(http.get(format!("{base}/healthz")).send().await, Ok(r) if r.status().is_success())
    })
    .await;
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let problem: Value = ready.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&detail),
        "/readyz says why: {problem}"
    );
    let created = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"kind": "echo", "args": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 503);
    let log = log_path(&worker_label);
    wait_until(
        "the worker to log why it waits",
        Duration::from_secs(30),
        async || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(&detail)
        },
    )
    .await;
    sleep(Duration::from_secs(1)).await;
    assert_eq!(job_count(conn).await, 1, "no row was written");
    assert_eq!(only_job_state(conn).await, State::Pending.as_str());

    // The deployment step that was skipped: both binaries take up work without a restart.
    let migrated = run("jobs-api", &db.url(), &["migrate", "up"]);
    assert!(
        migrated.status.success(),
        "migrate up: {}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    wait_until(
        "the worker to run the job",
        Duration::from_secs(30),
        async || db.store.get(None, waiting.id).await.unwrap().state == State::Completed,
    )
    .await;
    wait_until(
        "the api to serve /v1",
        Duration::from_secs(30),
        async || {
            let created = http
                .post(format!("{base}/v1/jobs"))
                .json(&json!({"kind": "echo", "args": {}}))
                .send()
                .await
                .unwrap();
            created.status().is_success()
        },
    )
    .await;
    for (name, child) in [("api", &mut api), ("worker", &mut worker)] {
        terminate(child);
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "SIGTERM ends the {name} cleanly: {status}"
        );
    }
}
