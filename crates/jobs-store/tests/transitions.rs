//! The database against `jobs_core::transition`: every input of the decision is driven
//! into real rows through the store, and the state the database wrote must be the one
//! `next_state` names. Also what a snooze does, on SQLite and PostgreSQL.

use std::time::Duration;

use jobs_core::{
    ClaimRequest, Finish, Job, JobId, JobStore, Lease, NewJob, Outcome, Retry, State,
    transition::{Ending, Facts, next_state},
};
use jobs_store::{SeaOrmStore, backend_tests, testing::TestDb};
use sea_orm::ConnectionTrait;
use serde_json::json;
use time::OffsetDateTime;

backend_tests!(
    finish_writes_the_state_the_core_decides,
    rescue_writes_the_state_the_core_decides,
    sweep_writes_the_state_the_core_decides,
    a_snoozed_job_waits_its_delay_without_spending_an_attempt,
    a_snooze_with_a_cancel_request_ends_cancelled,
    a_snooze_on_the_last_attempt_still_goes_back_to_pending,
);

/// Longer than any test runs: a retry this far out is past a deadline `DEADLINE` away.
const RETRY_DELAY: Duration = Duration::from_secs(3600);
const DEADLINE: Duration = Duration::from_secs(1800);

fn claim_req(limit: u32, lease: Duration) -> ClaimRequest {
    ClaimRequest {
        worker_id: "w".to_owned(),
        queues: vec!["default".to_owned()],
        kinds: None,
        tenant: None,
        limit,
        lease,
    }
}

/// A job whose attempts and deadline give `facts` once claimed: one attempt when none
/// is to be left after the claim, and a deadline `deadline` from now when it is to pass.
fn job_for(facts: Facts, deadline: Duration) -> NewJob {
    let job = NewJob::new("k", json!({})).max_attempts(if facts.attempts_left { 3 } else { 1 });
    if facts.deadline_passed {
        job.deadline(OffsetDateTime::now_utc() + deadline)
    } else {
        job
    }
}

/// Enqueues one job per case and claims them all; the leases come back in case order.
async fn claim_cases(
    s: &SeaOrmStore,
    cases: &[(Ending, Facts)],
    deadline: Duration,
    lease: Duration,
) -> Vec<Lease> {
    let jobs: Vec<NewJob> = cases.iter().map(|(_, f)| job_for(*f, deadline)).collect();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    s.enqueue_many(jobs).await.unwrap();
    let claimed = s
        .claim(&claim_req(cases.len() as u32, lease))
        .await
        .unwrap();
    assert_eq!(claimed.len(), cases.len(), "every case is claimed");
    let leases: Vec<Lease> = ids
        .iter()
        .map(|id| Lease::of(claimed.iter().find(|j| j.id == *id).unwrap()).unwrap())
        .collect();
    for ((_, facts), lease) in cases.iter().zip(&leases) {
        if facts.cancel_requested {
            let job = s.cancel(None, lease.job_id).await.unwrap();
            assert_eq!(
                job.state,
                State::Running,
                "a running job only gets a request"
            );
        }
    }
    leases
}

/// The outcome a worker reports for `ending`; a retry asks for `RETRY_DELAY`.
fn outcome_of(ending: Ending) -> Outcome {
    let failed = |retry| Outcome::Failed {
        kind: "boom".into(),
        message: "it broke".into(),
        retry,
    };
    match ending {
        Ending::Completed => Outcome::Completed { result: json!(1) },
        Ending::Partial => Outcome::Partial {
            result: json!(1),
            item_errors: json!([2]),
        },
        Ending::Failed => failed(Retry::Never),
        Ending::Retry => failed(Retry::After(RETRY_DELAY)),
        Ending::Cancelled => Outcome::Cancelled,
        Ending::Released => Outcome::Released,
        Ending::Snoozed => Outcome::Snoozed { delay: RETRY_DELAY },
        Ending::Unrunnable => unreachable!("no attempt ends as unrunnable"),
    }
}

/// Asserts each case's job is in the state the core decides for it.
async fn assert_decided(s: &SeaOrmStore, cases: &[(Ending, Facts)], ids: &[JobId]) {
    let jobs = s.get_many(ids).await.unwrap();
    for ((ending, facts), id) in cases.iter().zip(ids) {
        assert_eq!(
            jobs[id].state,
            next_state(*ending, *facts),
            "{ending:?} with {facts:?}"
        );
    }
}

async fn finish_writes_the_state_the_core_decides(db: TestDb) {
    let s = &db.store;
    let cases: Vec<(Ending, Facts)> = Ending::OF_ATTEMPT
        .into_iter()
        .flat_map(|e| Facts::all().map(move |f| (e, f)))
        .collect();
    let leases = claim_cases(s, &cases, DEADLINE, Duration::from_secs(60)).await;
    let items = cases
        .iter()
        .zip(&leases)
        .map(|((ending, _), lease)| Finish {
            follow_ups: Vec::new(),
            lease: *lease,
            outcome: outcome_of(*ending),
        })
        .collect();
    let answered = s.finish_many(items).await.unwrap();
    for ((ending, facts), answer) in cases.iter().zip(answered) {
        assert_eq!(
            answer.unwrap(),
            next_state(*ending, *facts),
            "{ending:?} {facts:?}"
        );
    }
    let ids: Vec<JobId> = leases.iter().map(|l| l.job_id).collect();
    assert_decided(s, &cases, &ids).await;
}

async fn rescue_writes_the_state_the_core_decides(db: TestDb) {
    let s = &db.store;
    let cases: Vec<(Ending, Facts)> = Facts::all().map(|f| (Ending::Retry, f)).collect();
    // A rescued attempt runs again now: its deadline passed once it is behind us.
    let deadline = Duration::from_millis(600);
    let leases = claim_cases(s, &cases, deadline, Duration::from_millis(1)).await;
    tokio::time::sleep(deadline + Duration::from_millis(200)).await;
    let report = s.rescue_expired(100).await.unwrap();
    assert_eq!(
        (report.retried + report.failed + report.cancelled) as usize,
        cases.len()
    );
    let ids: Vec<JobId> = leases.iter().map(|l| l.job_id).collect();
    assert_decided(s, &cases, &ids).await;
    for job in s.get_many(&ids).await.unwrap().values() {
        assert_eq!(job.errors.last().unwrap().kind, "lease_expired");
    }
}

/// A pending job gets a cancel request only when a cancel lost a race; set it as that
/// race leaves it.
async fn request_cancel_of_pending(s: &SeaOrmStore, id: JobId) {
    let literal = if s.is_postgres() {
        format!("'{id}'")
    } else {
        format!("x'{}'", id.as_uuid().simple())
    };
    let sql = format!("UPDATE jobs SET cancel_requested_at = updated_at WHERE id = {literal}");
    let done = s.connection().execute_unprepared(&sql).await.unwrap();
    assert_eq!(done.rows_affected(), 1);
}

async fn sweep_writes_the_state_the_core_decides(db: TestDb) {
    let s = &db.store;
    // A pending job always has an attempt left: it has not been charged one for its run.
    let facts: Vec<Facts> = Facts::all().filter(|f| f.attempts_left).collect();
    let deadline = Duration::from_millis(300);
    let jobs: Vec<NewJob> = facts.iter().map(|f| job_for(*f, deadline)).collect();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    s.enqueue_many(jobs).await.unwrap();
    for (f, id) in facts.iter().zip(&ids) {
        if f.cancel_requested {
            request_cancel_of_pending(s, *id).await;
        }
    }
    tokio::time::sleep(deadline + Duration::from_millis(200)).await;
    s.end_unrunnable(100).await.unwrap();
    let got = s.get_many(&ids).await.unwrap();
    for (f, id) in facts.iter().zip(&ids) {
        let expected = if f.cancel_requested || f.deadline_passed {
            next_state(Ending::Unrunnable, *f)
        } else {
            State::Pending
        };
        assert_eq!(got[id].state, expected, "{f:?}");
    }
}

async fn claim_all(s: &SeaOrmStore) -> Vec<Job> {
    s.claim(&claim_req(10, Duration::from_secs(60)))
        .await
        .unwrap()
}

async fn a_snoozed_job_waits_its_delay_without_spending_an_attempt(db: TestDb) {
    let s = &db.store;
    let id = s.enqueue(NewJob::new("k", json!({}))).await.unwrap().job.id;
    let lease = Lease::of(&claim_all(s).await[0]).unwrap();
    assert_eq!(lease.attempt, 1);
    let delay = Duration::from_millis(800);
    let before = OffsetDateTime::now_utc();
    let state = s.finish(&lease, Outcome::Snoozed { delay }).await.unwrap();
    let after = OffsetDateTime::now_utc();
    assert_eq!(state, State::Pending);
    let job = s.get(None, id).await.unwrap();
    assert_eq!(job.state, State::Pending);
    assert_eq!(
        job.attempt,
        lease.attempt - 1,
        "the snoozed attempt is not charged"
    );
    assert!(job.errors.is_empty());
    // The database clock and ours agree to well within this on one machine.
    let slack = Duration::from_millis(100);
    assert!(
        job.run_at >= before + delay - slack && job.run_at <= after + delay + slack,
        "run_at {} is not about now + {delay:?} ({before}..{after})",
        job.run_at
    );
    assert!(claim_all(s).await.is_empty(), "claimed before it was due");
    tokio::time::sleep((job.run_at - after).unsigned_abs() + slack * 2).await;
    let again = claim_all(s).await;
    assert_eq!(again.len(), 1, "claimable once due");
    assert_eq!((again[0].id, again[0].attempt), (id, 1));
}

async fn a_snooze_with_a_cancel_request_ends_cancelled(db: TestDb) {
    let s = &db.store;
    let id = s.enqueue(NewJob::new("k", json!({}))).await.unwrap().job.id;
    let lease = Lease::of(&claim_all(s).await[0]).unwrap();
    s.cancel(None, id).await.unwrap();
    let delay = Duration::from_secs(1);
    let state = s.finish(&lease, Outcome::Snoozed { delay }).await.unwrap();
    assert_eq!(state, State::Cancelled);
    let job = s.get(None, id).await.unwrap();
    assert_eq!(job.state, State::Cancelled);
    assert!(job.finished_at.is_some() && job.lease_token.is_none());
}

async fn a_snooze_on_the_last_attempt_still_goes_back_to_pending(db: TestDb) {
    let s = &db.store;
    let new = NewJob::new("k", json!({})).max_attempts(1);
    let id = s.enqueue(new).await.unwrap().job.id;
    let lease = Lease::of(&claim_all(s).await[0]).unwrap();
    let delay = Duration::ZERO;
    let state = s.finish(&lease, Outcome::Snoozed { delay }).await.unwrap();
    assert_eq!(
        state,
        State::Pending,
        "a snooze never spends the last attempt"
    );
    let job = s.get(None, id).await.unwrap();
    assert_eq!((job.state, job.attempt), (State::Pending, 0));
    let again = claim_all(s).await;
    assert_eq!(again.len(), 1, "the last attempt is still there to run");
    assert_eq!(again[0].attempt, 1);
}
