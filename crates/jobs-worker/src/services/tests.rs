//! Each service one round at a time, against real stores (SQLite and PostgreSQL).

use std::{sync::Arc, time::Duration};

use jobs_core::{ClaimRequest, Job, Lease, NewJob, State};
use jobs_store::{backend_tests, testing::TestDb};
use serde_json::json;

use super::{
    Periodic,
    elector::Elector,
    heartbeater::{Beat, Heartbeater},
    maintenance::Term,
    rescuer::Rescuer,
    retention::RetentionCleaner,
    scheduler::Scheduler,
    vacuumer::{Threshold, Vacuumer},
};
use crate::runtime::{Attempts, Backend, Running, StopReason};

backend_tests!(
    a_heartbeat_stops_only_the_jobs_whose_lease_was_lost,
    a_heartbeat_finding_an_attempt_ended_whose_outcome_was_sent_stops_nothing,
    the_rescuer_rescues_expired_leases_only_while_leading,
    one_elector_leads_at_a_time_and_resigning_hands_over,
    schedulers_of_two_processes_enqueue_a_due_slot_once,
    one_retention_tick_deletes_a_backlog_of_many_batches,
    the_vacuumer_vacuums_a_table_past_its_threshold_only_while_leading,
);

fn backend(db: &TestDb) -> Backend {
    Arc::new(db.store.clone())
}

/// Enqueues one job of `kind` and claims it with a lease of `lease`.
async fn claimed(store: &Backend, kind: &str, lease: Duration) -> Job {
    store.enqueue(NewJob::new(kind, json!({}))).await.unwrap();
    let request = ClaimRequest {
        worker_id: "test".into(),
        queues: vec![jobs_core::limits::DEFAULT_QUEUE.into()],
        kinds: Some(vec![kind.into()]),
        tenant: None,
        limit: 1,
        lease,
    };
    store.claim(&request).await.unwrap().remove(0)
}

fn hold(store: &Backend, attempts: &Attempts, job: &Job) -> Arc<Running> {
    let running = Running::new(job, Lease::of(job).unwrap(), store, None);
    attempts.insert(running.clone());
    running
}

async fn a_heartbeat_stops_only_the_jobs_whose_lease_was_lost(db: TestDb) {
    let store = backend(&db);
    let attempts = Arc::new(Attempts::default());
    let lost = hold(
        &store,
        &attempts,
        &claimed(&store, "lost", Duration::from_millis(1)).await,
    );
    let kept = hold(
        &store,
        &attempts,
        &claimed(&store, "kept", Duration::from_secs(30)).await,
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Another process's rescuer takes the expired one back.
    assert_eq!(store.rescue_expired(100).await.unwrap().retried, 1);

    let mut heartbeater = Heartbeater::new(store, attempts, Duration::from_secs(30));
    let beat = heartbeater.tick().await.unwrap();
    assert_eq!(
        beat,
        Beat {
            lost: 1,
            cancelled: 0
        }
    );
    assert!(lost.ctx.is_cancelled());
    assert_eq!(lost.reason(), StopReason::Lost);
    assert!(
        !kept.ctx.is_cancelled(),
        "a renewed lease keeps its job running"
    );
}

/// Under load a heartbeat can wait for a batch of outcomes to commit and then find those
/// rows ended: their attempts ended here, so that is not a lost lease.
async fn a_heartbeat_finding_an_attempt_ended_whose_outcome_was_sent_stops_nothing(db: TestDb) {
    let store = backend(&db);
    let attempts = Arc::new(Attempts::default());
    let job = claimed(&store, "k", Duration::from_secs(30)).await;
    let running = hold(&store, &attempts, &job);
    running.mark_ended();
    // The completer's batch commits before the heartbeat's statement runs.
    let lease = Lease::of(&job).unwrap();
    store.complete(&lease, json!({})).await.unwrap();

    let mut heartbeater = Heartbeater::new(store, attempts, Duration::from_secs(30));
    let beat = heartbeater.tick().await.unwrap();
    assert_eq!(beat, Beat::default(), "no lease was lost");
    assert!(!running.ctx.is_cancelled());
}

async fn the_rescuer_rescues_expired_leases_only_while_leading(db: TestDb) {
    let store = backend(&db);
    let job = claimed(&store, "k", Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let term = Arc::new(Term::default());
    let mut rescuer = Rescuer::new(store.clone(), 100, Duration::from_secs(5), term.clone());

    assert_eq!(rescuer.tick().await, 0, "not leading: nothing is done");
    assert_eq!(store.get(None, job.id).await.unwrap().state, State::Running);

    let mut elector = Elector::new(store.clone(), "w", Duration::from_secs(30), term.clone());
    assert!(elector.tick().await);
    assert_eq!(rescuer.tick().await, 1);
    assert_eq!(store.get(None, job.id).await.unwrap().state, State::Pending);
}

async fn one_elector_leads_at_a_time_and_resigning_hands_over(db: TestDb) {
    let store = backend(&db);
    let ttl = Duration::from_secs(30);
    let (first_term, second_term) = (Arc::new(Term::default()), Arc::new(Term::default()));
    let mut first = Elector::new(store.clone(), "w", ttl, first_term.clone());
    // The same worker id: each process is its own holder.
    let mut second = Elector::new(store.clone(), "w", ttl, second_term.clone());

    assert!(first.tick().await);
    assert!(!second.tick().await);
    first.stopped().await;
    assert!(!first_term.holds(), "a stopped elector no longer leads");
    assert!(
        second.tick().await,
        "resigning hands leadership over at once"
    );
    assert!(second_term.holds());
}

/// Processes of older versions lead under the store's name for the role: a different one
/// would let two of them run maintenance at once.
#[test]
fn maintenance_is_led_under_the_role_older_workers_use() {
    assert_eq!(
        super::elector::MAINTENANCE_ROLE,
        jobs_store::MAINTENANCE_ROLE
    );
}

async fn schedulers_of_two_processes_enqueue_a_due_slot_once(db: TestDb) {
    let store = backend(&db);
    let every_second = jobs_core::Schedule::new(
        "beat",
        "* * * * * *",
        jobs_core::JobTemplate::new("beat", json!({})),
    );
    let mut a = Scheduler::new(store.clone(), "a");
    let mut b = Scheduler::new(Arc::new(db.connect_again().await), "b");
    // Created as a second begins, so its first slot (the next second) is most of a
    // second away when the first tick looks. Created anywhere in a second, the slot
    // could pass before that tick (it did, whenever the second connection above took
    // longer than what was left of the second).
    let into_second = time::OffsetDateTime::now_utc().nanosecond();
    tokio::time::sleep(Duration::from_nanos(u64::from(1_000_000_000 - into_second))).await;
    let slot = store
        .create_schedule(&every_second)
        .await
        .unwrap()
        .next_run_at;
    assert!(a.tick().await.is_empty(), "not due before its slot");
    let wait = slot - time::OffsetDateTime::now_utc();
    tokio::time::sleep(wait.unsigned_abs() + Duration::from_millis(20)).await;
    let (ran_a, ran_b) = tokio::join!(a.tick(), b.tick());
    let runs: Vec<_> = ran_a.into_iter().chain(ran_b).collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].slot, slot);
    let job = store.get(None, runs[0].job_id).await.unwrap();
    assert_eq!((job.kind.as_str(), job.run_at), ("beat", slot));
}

/// A term held by an elector of its own, as the leader's.
async fn leading(store: &Backend) -> Arc<Term> {
    let term = Arc::new(Term::default());
    let mut elector = Elector::new(store.clone(), "w", Duration::from_secs(30), term.clone());
    assert!(elector.tick().await);
    term
}

/// Ended jobs past their retention (kept for no time at all).
async fn expired(store: &Backend, n: usize) {
    let jobs = (0..n)
        .map(|_| NewJob::new("k", json!({})).retention(Duration::ZERO))
        .collect();
    for enqueued in store.enqueue_many(jobs).await.unwrap() {
        store.cancel(None, enqueued.job.id).await.unwrap();
    }
}

/// Under sustained load a round must delete more than a fixed number of batches, or the
/// ended jobs pile up: 25 batches here, where a round used to stop at ten.
async fn one_retention_tick_deletes_a_backlog_of_many_batches(db: TestDb) {
    let store = backend(&db);
    expired(&store, 50).await;
    let term = leading(&store).await;
    let mut cleaner = RetentionCleaner::new(store.clone(), 2, Duration::from_secs(600), term);
    assert_eq!(cleaner.tick().await, 50);
    assert_eq!(
        cleaner.tick().await,
        0,
        "nothing is left for the next round"
    );
}

async fn the_vacuumer_vacuums_a_table_past_its_threshold_only_while_leading(db: TestDb) {
    let store = backend(&db);
    expired(&store, 200).await;
    assert_eq!(store.purge_expired(1_000).await.unwrap(), 200);
    let threshold = Threshold {
        min_dead_rows: 100,
        dead_fraction: 0.2,
    };
    let idle = Arc::new(Term::default());
    let mut follower = Vacuumer::new(store.clone(), threshold, idle);
    assert!(
        follower.tick().await.is_empty(),
        "not leading: nothing is done"
    );

    let mut vacuumer = Vacuumer::new(store.clone(), threshold, leading(&store).await);
    if !db.store.is_postgres() {
        assert!(
            vacuumer.tick().await.is_empty(),
            "nothing to vacuum on SQLite"
        );
        return;
    }
    // The deletes reach the statistics a moment later.
    for _ in 0..300 {
        let vacuumed = vacuumer.tick().await;
        if let Some(jobs) = vacuumed.iter().find(|v| v.table == "jobs") {
            assert!(jobs.dead_rows >= 100, "{vacuumed:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the jobs table was never vacuumed");
}
