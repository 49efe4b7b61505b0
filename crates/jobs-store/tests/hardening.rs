//! The store under hostile conditions, on SQLite and PostgreSQL: values the database
//! cannot store, stale attempts under a reused worker id, cancels racing outcomes,
//! concurrent batches of unique keys, and lists of any size.

use std::time::Duration;

use futures::future::join;
use jobs_core::{
    ClaimRequest, Finish, JobError, JobId, JobStore, Lease, LeaseToken, ListFilter, NewJob,
    Outcome, PageRequest, Retry, State, limits, storable,
};
use jobs_store::{SeaOrmStore, backend_tests, testing::TestDb};
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::json;
use time::OffsetDateTime;

backend_tests!(
    one_unstorable_outcome_fails_alone_in_its_batch,
    a_value_the_database_refuses_fails_only_its_own_job,
    a_stale_attempt_under_the_same_worker_id_changes_nothing,
    a_cancel_committed_while_a_retry_waits_ends_cancelled,
    a_pending_job_with_a_cancel_request_is_never_claimed_and_ends_cancelled,
    concurrent_batches_in_opposite_orders_do_not_deadlock,
    heartbeats_and_cancel_checks_take_any_number_of_leases,
    unstorable_input_is_refused_by_field,
);

fn claim_req(worker: &str, limit: u32, lease: Duration) -> ClaimRequest {
    ClaimRequest {
        lease,
        ..jobs_conformance::fixtures::claim_req(worker, limit)
    }
}

/// Enqueues `n` jobs and claims them all as `worker`.
async fn claimed(s: &SeaOrmStore, n: usize, worker: &str, lease: Duration) -> Vec<Lease> {
    let jobs = (0..n).map(|i| NewJob::new("k", json!({"i": i}))).collect();
    s.enqueue_many(jobs).await.unwrap();
    let jobs = s.claim(&claim_req(worker, n as u32, lease)).await.unwrap();
    assert_eq!(jobs.len(), n);
    jobs.iter().map(|j| Lease::of(j).unwrap()).collect()
}

async fn one_unstorable_outcome_fails_alone_in_its_batch(db: TestDb) {
    let s = &db.store;
    let leases = claimed(s, 3, "w", Duration::from_secs(30)).await;
    let outcomes = [
        Outcome::Completed {
            result: json!({"ok": true}),
        },
        // The `http` handler returns such a result for a body holding a NUL byte.
        Outcome::Completed {
            result: json!({"status": 200, "body": "ok\u{0}poison"}),
        },
        // A server's `Retry-After` of centuries.
        Outcome::Failed {
            kind: "http_429".into(),
            message: "slow down\u{0}".into(),
            retry: Retry::After(Duration::from_secs(u64::MAX / 4)),
        },
    ];
    let items = leases
        .iter()
        .zip(outcomes)
        .map(|(lease, outcome)| Finish {
            follow_ups: Vec::new(),
            lease: *lease,
            outcome,
        })
        .collect();
    let states: Vec<State> = s
        .finish_many(items)
        .await
        .expect("the batch is written")
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(states, [State::Completed, State::Failed, State::Pending]);

    let poisoned = s.get(None, leases[1].job_id).await.unwrap();
    assert_eq!(poisoned.errors[0].kind, Outcome::UNSTORABLE);
    assert!(poisoned.errors[0].message.contains("NUL"), "{poisoned:?}");
    let retried = s.get(None, leases[2].job_id).await.unwrap();
    let ten_years = Duration::from_secs(limits::DURATION_MAX_SECS + 86_400);
    assert!(retried.run_at < OffsetDateTime::now_utc() + ten_years);
    assert!(retried.run_at > OffsetDateTime::now_utc() + Duration::from_secs(86_400 * 365));
    assert_eq!(retried.errors[0].message, "slow down\u{FFFD}");
}

/// Makes the database refuse any outcome whose result mentions "poison", as it would a
/// value it cannot store.
async fn refuse_poison(s: &SeaOrmStore) {
    let ddl = if s.is_postgres() {
        "ALTER TABLE jobs ADD CONSTRAINT no_poison \
         CHECK (result IS NULL OR result::text NOT LIKE '%poison%')"
    } else {
        "CREATE TRIGGER no_poison BEFORE UPDATE OF result ON jobs \
         WHEN NEW.result LIKE '%poison%' BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
    };
    s.connection().execute_unprepared(ddl).await.unwrap();
}

async fn a_value_the_database_refuses_fails_only_its_own_job(db: TestDb) {
    let s = &db.store;
    refuse_poison(s).await;
    let leases = claimed(s, 5, "w", Duration::from_secs(30)).await;
    let items = leases
        .iter()
        .enumerate()
        .map(|(i, lease)| Finish::completed(*lease, json!(if i == 2 { "poison" } else { "fine" })))
        .collect();
    let states: Vec<State> = s
        .finish_many(items)
        .await
        .expect("one refused row does not fail the batch")
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        states,
        [
            State::Completed,
            State::Completed,
            State::Failed,
            State::Completed,
            State::Completed
        ]
    );
    let refused = s.get(None, leases[2].job_id).await.unwrap();
    assert_eq!(refused.errors[0].kind, Outcome::UNSTORABLE);
    assert!(
        refused.errors[0].message.contains("refused"),
        "the reason is kept: {}",
        refused.errors[0].message
    );
    assert_eq!(refused.result, None);
}

async fn a_stale_attempt_under_the_same_worker_id_changes_nothing(db: TestDb) {
    let s = &db.store;
    let first = claimed(s, 1, "host-1", Duration::from_millis(1)).await[0];
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.rescue_expired(100).await.unwrap().retried, 1);
    // The worker restarted under its configured id and claims the job again.
    let again = s
        .claim(&claim_req("host-1", 1, Duration::from_secs(30)))
        .await
        .unwrap();
    let second = Lease::of(&again[0]).unwrap();
    assert_eq!((second.job_id, second.attempt), (first.job_id, 2));
    assert_ne!(second.token, first.token, "each claim mints a new token");

    let beat = s
        .heartbeat(&[first], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(beat.lost, [first.token]);
    assert!(matches!(
        s.complete(&first, json!("old")).await,
        Err(JobError::LeaseLost(_))
    ));
    assert!(matches!(
        s.progress(&first, 0.5, None).await,
        Err(JobError::LeaseLost(_))
    ));
    let job = s.get(None, first.job_id).await.unwrap();
    assert_eq!((job.state, job.result.clone()), (State::Running, None));
    assert_eq!(
        s.complete(&second, json!("new")).await.unwrap(),
        State::Completed
    );
    assert_eq!(
        s.get(None, first.job_id).await.unwrap().result,
        Some(json!("new"))
    );
}

async fn a_cancel_committed_while_a_retry_waits_ends_cancelled(db: TestDb) {
    let s = &db.store;
    let lease = claimed(s, 1, "w", Duration::from_secs(30)).await[0];
    let canceller = db.connect_again().await;
    let txn = canceller.connection().begin().await.unwrap();
    // A cancel request that holds the row until it commits.
    let request = format!(
        "UPDATE jobs SET cancel_requested_at = updated_at WHERE id = {}",
        if s.is_postgres() {
            format!("'{}'", lease.job_id)
        } else {
            format!("x'{}'", lease.job_id.as_uuid().simple())
        }
    );
    assert_eq!(
        txn.execute_unprepared(&request)
            .await
            .unwrap()
            .rows_affected(),
        1
    );
    let finishing = {
        let s = s.clone();
        tokio::spawn(async move { s.fail(&lease, "flaky", "try again", Retry::Backoff).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    txn.commit().await.unwrap();
    assert_eq!(finishing.await.unwrap().unwrap(), State::Cancelled);
    assert_eq!(
        s.get(None, lease.job_id).await.unwrap().state,
        State::Cancelled
    );
}

async fn a_pending_job_with_a_cancel_request_is_never_claimed_and_ends_cancelled(db: TestDb) {
    let s = &db.store;
    let id = s.enqueue(NewJob::new("k", json!({}))).await.unwrap().job.id;
    // As a cancel that lost a race to a retry would have left it.
    s.connection()
        .execute_unprepared("UPDATE jobs SET cancel_requested_at = updated_at")
        .await
        .unwrap();
    let none = s
        .claim(&claim_req("w", 10, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(none.is_empty(), "claimed a job whose cancel was requested");
    let report = s.end_unrunnable(100).await.unwrap();
    assert_eq!(report.cancelled, 1);
    assert_eq!(s.get(None, id).await.unwrap().state, State::Cancelled);
}

async fn concurrent_batches_in_opposite_orders_do_not_deadlock(db: TestDb) {
    let (a, b) = (db.connect_again().await, db.connect_again().await);
    for round in 0..10 {
        let keys: Vec<String> = (0..200).map(|i| format!("r{round}-k{i:03}")).collect();
        let batch = |keys: Vec<&String>| -> Vec<NewJob> {
            keys.into_iter()
                .map(|k| NewJob::new("k", json!({})).unique_key(k.clone()))
                .collect()
        };
        let forward = batch(keys.iter().collect());
        let backward = batch(keys.iter().rev().collect());
        let (x, y) = join(a.enqueue_many(forward), b.enqueue_many(backward)).await;
        let (x, y) = (x.expect("no deadlock"), y.expect("no deadlock"));
        let created = x.iter().chain(&y).filter(|e| !e.duplicate).count();
        assert_eq!(created, keys.len(), "each key made exactly one job");
    }
}

async fn heartbeats_and_cancel_checks_take_any_number_of_leases(db: TestDb) {
    let s = &db.store;
    let real = claimed(s, 1, "w", Duration::from_secs(30)).await[0];
    // More than SQLite's 32,766 parameters if each were bound alone.
    let mut leases: Vec<Lease> = (0..40_000)
        .map(|i| Lease {
            job_id: JobId::new(),
            token: LeaseToken::from(uuid::Uuid::new_v4()),
            attempt: i,
        })
        .collect();
    leases.push(real);
    let beat = s.heartbeat(&leases, Duration::from_secs(30)).await.unwrap();
    assert_eq!(beat.renewed, [real.token]);
    assert_eq!(beat.lost.len(), 40_000);
    assert!(s.cancel_requests(&leases).await.unwrap().is_empty());
}

async fn unstorable_input_is_refused_by_field(db: TestDb) {
    let s = &db.store;
    let fields = |result: Result<_, JobError>| match result {
        Err(JobError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect::<Vec<_>>(),
        other => panic!("expected a validation error, got {other:?}"),
    };
    let far = OffsetDateTime::parse(
        "9999-12-31T23:59:59-23:59",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let batch = vec![
        NewJob::new("k", json!({})),
        NewJob::new("k", json!({"a": "\u{0}"})).deadline(far),
    ];
    assert_eq!(
        fields(s.enqueue_many(batch).await.map(|_| ())),
        ["jobs[1].deadline", "jobs[1].args"]
    );
    let filter = ListFilter::new().created_from(far).kind("a\0b");
    assert_eq!(
        fields(s.list(&filter, &PageRequest::first(10)).await.map(|_| ())),
        ["created_after", "kind"]
    );
    let mut claim = claim_req("w\0", 1, Duration::from_secs(1));
    claim.queues = vec!["q\0".into()];
    assert_eq!(
        fields(s.claim(&claim).await.map(|_| ())),
        ["worker_id", "queues[0]"]
    );
    assert!(storable::time_in_range(storable::TIME_MAX));
}

/// PostgreSQL only: SQLite has no row locks (a writer takes the whole file), so no
/// statement of an outcome batch waits on one row there.
mod postgres_only {
    use super::*;

    /// The connection of an outcome batch is lost while it waits for its rows' locks:
    /// the batch answers `Unavailable` as a whole, to be retried whole, and writes
    /// nothing. (It must not fall back to writing outcomes one by one, which is for
    /// values the database refuses.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(jobs_postgres_tests),
        ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
    )]
    async fn an_outcome_batch_that_loses_its_connection_while_locking_is_retried_whole() {
        let db = TestDb::postgres().await;
        let s = db.store.clone();
        let leases = claimed(&s, 2, "w", Duration::from_secs(30)).await;
        let holder = db.connect_again().await;
        let txn = holder.connection().begin().await.unwrap();
        let pid: i32 = txn
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT pg_backend_pid() AS pid".to_owned(),
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "pid")
            .unwrap();
        let locked = leases.iter().map(|l| l.job_id.as_uuid()).min().unwrap();
        txn.execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT id FROM jobs WHERE id = $1 FOR UPDATE",
            [locked.into()],
        ))
        .await
        .unwrap();

        let items = leases
            .iter()
            .map(|lease| Finish::completed(*lease, json!(1)))
            .collect();
        let batch = tokio::spawn({
            let s = s.clone();
            async move { s.finish_many(items).await }
        });
        let waiting = format!(
            "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity \
             WHERE {pid} = ANY(pg_blocking_pids(pid))"
        );
        let mut terminated = false;
        for _ in 0..500 {
            let rows = db
                .store
                .connection()
                .query_all_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    waiting.clone(),
                ))
                .await
                .unwrap();
            if !rows.is_empty() {
                terminated = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(terminated, "the batch never waited for the held row");
        txn.rollback().await.unwrap();

        let answer = batch.await.unwrap();
        assert!(
            matches!(answer, Err(JobError::Unavailable(_))),
            "answered {answer:?}"
        );
        for lease in &leases {
            let job = s.get(None, lease.job_id).await.unwrap();
            assert_eq!(job.state, State::Running, "no outcome was written");
        }
    }
}
