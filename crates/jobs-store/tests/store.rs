//! The store's own behaviour beyond the ports, on SQLite and on PostgreSQL: a retry
//! policy of its own, and enqueues inside a caller's transaction. What any backend must
//! do is the conformance suite's (jobs-conformance, run by tests/conformance.rs).

use std::time::Duration;

use jobs_conformance::fixtures::{add, claim_one, claim_req, count, job};
use jobs_core::{JobError, JobStore, Retry, RetryPolicy, State, TableUpkeep};
use jobs_store::{backend_tests, testing::TestDb};
use sea_orm::{ConnectionTrait, TransactionTrait};
use time::OffsetDateTime;

backend_tests!(
    retry_backs_off_then_exhausts_to_failed,
    enqueue_in_a_transaction_exists_only_if_it_commits,
    bulk_retry_skips_jobs_whose_unique_key_another_job_holds,
    vacuum_clears_the_dead_rows_that_deletes_left,
);

async fn retry_backs_off_then_exhausts_to_failed(db: TestDb) {
    let policy = RetryPolicy {
        base: Duration::from_secs(10),
        cap: Duration::from_secs(60),
        jitter: 0.0,
    };
    let s = &db.store.clone().with_retry_policy(policy);
    let id = add(s, job("k").max_attempts(2)).await;

    let first = claim_one(s, "w").await;
    let state = s
        .fail(&first, "http_503", "upstream down", Retry::Backoff)
        .await
        .unwrap();
    assert_eq!(state, State::Pending);
    let waiting = s.get(None, id).await.unwrap();
    let wait = waiting.run_at - waiting.updated_at;
    assert!(
        wait >= Duration::from_millis(9_900) && wait <= Duration::from_millis(10_100),
        "backoff {wait}"
    );
    assert_eq!(waiting.errors[0].kind, "http_503");
    assert!(waiting.finished_at.is_none() && waiting.lease_expires_at.is_none());
    assert!(
        s.claim(&claim_req("w", 1)).await.unwrap().is_empty(),
        "not before the backoff"
    );

    // Make it due now, as if the backoff had passed.
    let db_conn = s.connection();
    db_conn
        .execute_unprepared("UPDATE jobs SET run_at = created_at")
        .await
        .unwrap();
    let second = claim_one(s, "w").await;
    assert_eq!(second.attempt, 2);
    let state = s
        .fail(
            &second,
            "http_503",
            "still down",
            Retry::After(Duration::ZERO),
        )
        .await
        .unwrap();
    assert_eq!(state, State::Failed, "no attempts left");
    let failed = s.get(None, id).await.unwrap();
    assert_eq!(
        failed.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(failed.finished_at.is_some() && failed.expires_at.is_some());

    // A deadline that a retry would pass fails the job at once.
    let soon = OffsetDateTime::now_utc() + Duration::from_secs(5);
    s.enqueue(job("k").deadline(soon)).await.unwrap();
    let lease = claim_one(s, "w").await;
    assert_eq!(
        s.fail(&lease, "x", "y", Retry::Backoff).await.unwrap(),
        State::Failed
    );
}

async fn enqueue_in_a_transaction_exists_only_if_it_commits(db: TestDb) {
    let s = &db.store;
    let txn = s.connection().begin().await.unwrap();
    let kept = s.enqueue_many_in(&txn, vec![job("k")]).await.unwrap()[0]
        .job
        .id;
    txn.commit().await.unwrap();
    assert_eq!(s.get(None, kept).await.unwrap().state, State::Pending);

    let txn = s.connection().begin().await.unwrap();
    let dropped = s.enqueue_many_in(&txn, vec![job("k")]).await.unwrap()[0]
        .job
        .id;
    txn.rollback().await.unwrap();
    assert!(matches!(
        s.get(None, dropped).await,
        Err(JobError::NotFound(_))
    ));
    assert_eq!(count(s).await, 1);
}

/// Keys that block only while pending or running (as `unique_states` may choose): a
/// failed job's key is free, a new job takes it, and retrying the failed one would break
/// the unique index. The bulk retry redoes that batch row by row and skips the one.
async fn bulk_retry_skips_jobs_whose_unique_key_another_job_holds(db: TestDb) {
    use jobs_core::{BulkAction, BulkRequest, ListFilter};
    let s = &db.store;
    let keyed = |key: &str| job("k").unique_key(key).max_attempts(1);
    let jobs = ["k1", "k2", "k3"].map(|key| (keyed(key), "boom")).to_vec();
    let ids = jobs_conformance::bulk::failed(s, jobs).await;
    s.connection()
        .execute_unprepared("UPDATE jobs SET unique_states = 3")
        .await
        .unwrap();
    let holder = s.enqueue(keyed("k2")).await.unwrap();
    assert!(!holder.duplicate, "a failed job no longer holds its key");

    let request = BulkRequest::new(BulkAction::Retry, ListFilter::new().state(State::Failed));
    let done = s.bulk(&request).await.unwrap();
    assert_eq!((done.matched, done.changed), (3, 2), "{done:?}");
    assert_eq!(done.batches, 3, "the refused batch was redone row by row");
    let states: Vec<State> = futures::future::join_all(ids.iter().map(|id| s.get(None, *id)))
        .await
        .into_iter()
        .map(|job| job.unwrap().state)
        .collect();
    assert_eq!(states, [State::Pending, State::Failed, State::Pending]);
    assert_eq!(
        s.get(None, holder.job.id).await.unwrap().state,
        State::Pending
    );
}

/// Dead rows of `jobs` as the statistics have them, once they show at least `min`: the
/// statistics are written a moment after the statements, so this waits (boundedly).
async fn dead_rows_at_least(s: &jobs_store::SeaOrmStore, min: u64) -> u64 {
    for _ in 0..300 {
        let health = s.table_health().await.unwrap();
        let jobs = health
            .iter()
            .find(|t| t.table == "jobs")
            .expect("jobs listed");
        if jobs.dead_rows >= min {
            return jobs.dead_rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the statistics never showed {min} dead rows");
}

async fn vacuum_clears_the_dead_rows_that_deletes_left(db: TestDb) {
    let s = &db.store;
    let refused = s.vacuum_table("pg_class").await;
    assert!(matches!(refused, Err(JobError::Invalid(_))), "{refused:?}");
    let jobs = (0..2_000).map(|_| job("k")).collect();
    s.enqueue_many(jobs).await.unwrap();
    let db_conn = s.connection();
    let txn = db_conn.begin().await.unwrap();
    txn.execute_unprepared("DELETE FROM jobs").await.unwrap();
    if s.is_postgres() {
        // Statistics reach the shared counters at the end of this transaction.
        txn.execute_unprepared("SELECT pg_stat_force_next_flush()")
            .await
            .unwrap();
    }
    txn.commit().await.unwrap();

    if !s.is_postgres() {
        assert!(
            s.table_health().await.unwrap().is_empty(),
            "SQLite keeps no dead row versions"
        );
        s.vacuum_table("jobs").await.unwrap();
        return;
    }
    let tables: Vec<String> = s
        .table_health()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.table)
        .collect();
    assert!(tables.iter().all(|t| t.starts_with("jobs")), "{tables:?}");
    assert!(
        tables.contains(&"jobs_dependencies".to_owned()),
        "{tables:?}"
    );
    let before = dead_rows_at_least(s, 2_000).await;
    // A transaction elsewhere in the cluster that is older than the delete keeps the rows
    // visible to it, so they are vacuumed once it ends.
    for _ in 0..300 {
        s.vacuum_table("jobs").await.unwrap();
        let health = s.table_health().await.unwrap();
        let jobs = health
            .iter()
            .find(|t| t.table == "jobs")
            .expect("jobs listed");
        if jobs.dead_rows < before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("vacuum never cleared the {before} dead rows");
}
