//! The worker binary as a real process on PostgreSQL: SIGKILL it mid-run, start another,
//! and every job still ends completed; only the jobs in flight at the kill ran twice.

use std::{collections::HashSet, time::Duration};

use blackbox_tests::{spawn, terminate, wait_until};
use jobs_core::{JobStore, NewJob};
use jobs_store::{SeaOrmStore, testing::TestDb};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use uuid::Uuid;

const JOBS: usize = 2_000;

async fn ids_where(store: &SeaOrmStore, condition: &str) -> HashSet<Uuid> {
    let db = store.connection();
    let sql = format!("SELECT id FROM jobs WHERE {condition}");
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get::<Uuid>("", "id").unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_postgres_tests),
    ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
)]
async fn postgres_sigkill_mid_run_loses_nothing() {
    let db = TestDb::postgres().await;
    let store = &db.store;
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|_| NewJob::new("sleep", json!({"ms": 20})))
        .collect();
    store.enqueue_many(jobs).await.unwrap();
    let args = |id: &'static str| {
        vec![
            "--worker-id",
            id,
            "--queue",
            "default=10",
            "--lease-secs",
            "2",
            "--maintenance-interval-secs",
            "1",
            "--poll-interval-ms",
            "200",
        ]
    };

    let mut first = spawn("jobs-worker", "crash-first", &db.url(), &args("first"));
    wait_until(
        "the first worker to finish some jobs",
        Duration::from_secs(60),
        async || ids_where(store, "state = 'completed'").await.len() >= 300,
    )
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let in_flight = ids_where(store, "state = 'running' AND worker_id = 'first'").await;
    let done_by_first = ids_where(store, "state = 'completed' AND worker_id = 'first'").await;
    assert!(!in_flight.is_empty(), "the kill happened mid-run");
    assert!(
        done_by_first.len() < JOBS,
        "the first worker did not finish everything"
    );

    let mut second = spawn("jobs-worker", "crash-second", &db.url(), &args("second"));
    wait_until(
        "every job to complete",
        Duration::from_secs(120),
        async || ids_where(store, "state = 'completed'").await.len() == JOBS,
    )
    .await;
    terminate(&second);
    let status = second.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM ends the worker cleanly: {status}"
    );

    let ran_twice = ids_where(store, "attempt > 1").await;
    assert_eq!(
        ran_twice, in_flight,
        "exactly the jobs in flight at the kill ran again"
    );
    assert!(ids_where(store, "attempt > 2").await.is_empty());
    let rescued = ids_where(
        store,
        "attempt = 2 AND CAST(errors AS text) LIKE '%lease_expired%'",
    )
    .await;
    assert_eq!(
        rescued, in_flight,
        "each rerun was a rescue of an expired lease"
    );
}
