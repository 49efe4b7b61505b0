//! Uniqueness options on every backend: by key, by arguments, by kind, within a period,
//! among chosen states, `OnConflict::Replace`, retry of a job whose key is taken, and
//! for each option, two inserts racing: exactly one row.

use std::{sync::Arc, time::Duration};

use jobs_core::{
    Enqueued, JobError, JobId, ListFilter, NewJob, OnConflict, Outcome, PageRequest, State,
    UniqueOpts, WorkerBackend,
};
use serde_json::json;
use time::{OffsetDateTime, macros::datetime};

use crate::{
    Harness,
    fixtures::{add, claim_one, count, job},
};

/// Enqueues `new`, claims it and completes it.
async fn completed(s: &dyn WorkerBackend, new: NewJob) -> JobId {
    let id = add(s, new).await;
    let lease = claim_one(s, "w").await;
    assert_eq!(lease.job_id, id, "the only due job");
    let end = Outcome::Completed { result: json!(1) };
    assert_eq!(s.finish(&lease, end).await.unwrap(), State::Completed);
    id
}

fn dup_of(e: &Enqueued, holder: JobId) -> bool {
    e.duplicate && e.job.id == holder
}

pub async fn unique_key_blocks_among_its_states_only(h: &dyn Harness) {
    let s = h.backend();
    let first = add(s, job("k").unique_key("order-1")).await;
    let again = s.enqueue(job("k").unique_key("order-1")).await.unwrap();
    assert!(dup_of(&again, first), "pending blocks");
    assert_eq!(
        again.job.unique_states.map(|u| u.states()),
        Some(vec![State::Pending, State::Running])
    );

    // Default states: once completed, the key is free.
    let lease = claim_one(s, "w").await;
    let dup = s.enqueue(job("k").unique_key("order-1")).await.unwrap();
    assert!(dup_of(&dup, first), "running blocks");
    s.finish(&lease, Outcome::Completed { result: json!(1) })
        .await
        .unwrap();
    let next = s.enqueue(job("k").unique_key("order-1")).await.unwrap();
    assert!(!next.duplicate, "a completed job does not block by default");
    s.cancel(None, next.job.id).await.unwrap();

    // States that include completed: the completed job keeps blocking.
    let keep =
        UniqueOpts::new()
            .key("order-2")
            .states([State::Pending, State::Running, State::Completed]);
    let done = completed(s, job("k").unique(keep.clone())).await;
    let dup = s.enqueue(job("k").unique(keep)).await.unwrap();
    assert!(dup_of(&dup, done), "completed is among its states");

    // Without pending and running the job is refused, naming the field.
    let bad = job("k").unique(UniqueOpts::new().key("x").states([State::Completed]));
    assert!(matches!(
        s.enqueue(bad).await,
        Err(JobError::Invalid(f)) if f[0].field == "unique.states"
    ));
}

pub async fn unique_by_args_and_key_with_args(h: &dyn Harness) {
    let s = h.backend();
    let by_args = || UniqueOpts::new().by_args();
    let a = add(
        s,
        NewJob::new("mail", json!({"to": "a", "n": 1})).unique(by_args()),
    )
    .await;
    let same = NewJob::new("mail", json!({"n": 1, "to": "a"})).unique(by_args());
    assert!(
        dup_of(&s.enqueue(same).await.unwrap(), a),
        "key order is not a difference"
    );
    let other = NewJob::new("mail", json!({"to": "b", "n": 1})).unique(by_args());
    assert!(!s.enqueue(other).await.unwrap().duplicate);
    let other_kind = NewJob::new("sms", json!({"to": "a", "n": 1})).unique(by_args());
    assert!(!s.enqueue(other_kind).await.unwrap().duplicate, "per kind");

    let keyed = |to: &str| {
        NewJob::new("mail", json!({"to": to})).unique(UniqueOpts::new().key("acct-1").by_args())
    };
    let k = add(s, keyed("a")).await;
    assert!(dup_of(&s.enqueue(keyed("a")).await.unwrap(), k));
    assert!(
        !s.enqueue(keyed("b")).await.unwrap().duplicate,
        "the args are part of the key"
    );
}

pub async fn unique_by_kind_and_within_a_period(h: &dyn Harness) {
    let s = h.backend();
    let by_kind = || UniqueOpts::new();
    let first = add(s, NewJob::new("report", json!({"a": 1})).unique(by_kind())).await;
    let dup = s
        .enqueue(NewJob::new("report", json!({"a": 2})).unique(by_kind()))
        .await
        .unwrap();
    assert!(dup_of(&dup, first), "one per kind, whatever the arguments");
    let other = NewJob::new("audit", json!({})).unique(by_kind());
    assert!(!s.enqueue(other).await.unwrap().duplicate);

    let hourly = UniqueOpts::new()
        .key("digest")
        .period(Duration::from_secs(3600));
    let at = |t: OffsetDateTime| hourly.apply_at(job("k"), t);
    let ten = add(s, at(datetime!(2026-12-03 10:05 UTC))).await;
    let same_bucket = s
        .enqueue(at(datetime!(2026-12-03 10:59:59 UTC)))
        .await
        .unwrap();
    assert!(dup_of(&same_bucket, ten), "same hour");
    let eleven = s
        .enqueue(at(datetime!(2026-12-03 11:00 UTC)))
        .await
        .unwrap();
    assert!(!eleven.duplicate, "the next hour is another bucket");
    assert!(
        eleven
            .job
            .unique_key
            .as_deref()
            .unwrap()
            .starts_with("digest|period:3600s@"),
        "the stored key carries the bucket: {:?}",
        eleven.job.unique_key
    );
}

pub async fn on_conflict_replace_changes_a_pending_holder_only(h: &dyn Harness) {
    let s = h.backend();
    let replace = || {
        UniqueOpts::new()
            .key("sync")
            .on_conflict(OnConflict::Replace)
    };
    let later = OffsetDateTime::now_utc() + Duration::from_secs(600);
    let first = add(s, NewJob::new("k", json!({"v": 1})).unique(replace())).await;
    let new = NewJob::new("k", json!({"v": 2}))
        .unique(replace())
        .run_at(later);
    let replaced = s.enqueue(new).await.unwrap();
    assert!(dup_of(&replaced, first) && replaced.replaced);
    assert_eq!(replaced.job.args, json!({"v": 2}));
    assert_eq!(replaced.job.run_at.unix_timestamp(), later.unix_timestamp());
    assert_eq!(s.get(None, first).await.unwrap(), replaced.job, "stored");

    // `return` leaves the holder as it is.
    let kept = NewJob::new("k", json!({"v": 3})).unique(UniqueOpts::new().key("sync"));
    let kept = s.enqueue(kept).await.unwrap();
    assert!(dup_of(&kept, first) && !kept.replaced);
    assert_eq!(kept.job.args, json!({"v": 2}));

    // A running holder already read its arguments: returned unchanged.
    let run = add(
        s,
        NewJob::new("r", json!({"v": 1})).unique(replace().key("run")),
    )
    .await;
    claim_one(s, "w").await;
    let new = NewJob::new("r", json!({"v": 2})).unique(replace().key("run"));
    let running = s.enqueue(new).await.unwrap();
    assert!(dup_of(&running, run) && !running.replaced);
    assert_eq!(
        (running.job.state, &running.job.args),
        (State::Running, &json!({"v": 1}))
    );
}

pub async fn a_batch_dedupes_within_itself_replace_included(h: &dyn Harness) {
    let s = h.backend();
    let replace = UniqueOpts::new().key("b").on_conflict(OnConflict::Replace);
    let done = s
        .enqueue_many(vec![
            NewJob::new("k", json!({"v": 1})).unique(replace.clone()),
            NewJob::new("k", json!({"v": 2})).unique(replace.clone()),
            NewJob::new("k", json!({"v": 3})).unique_key("b"),
            job("k"),
        ])
        .await
        .unwrap();
    let flags: Vec<_> = done.iter().map(|e| (e.duplicate, e.replaced)).collect();
    assert_eq!(
        flags,
        [(false, false), (true, true), (true, false), (false, false)]
    );
    assert!(done[1..3].iter().all(|e| e.job.id == done[0].job.id));
    assert!(
        done[..3].iter().all(|e| e.job.args == json!({"v": 2})),
        "each shows the row as the batch left it"
    );
    assert_eq!(
        s.get(None, done[0].job.id).await.unwrap().args,
        json!({"v": 2}),
        "the second item replaced the first's arguments"
    );
    assert_eq!(count(s).await, 2);
}

pub async fn retry_refuses_a_key_held_by_another_job(h: &dyn Harness) {
    let s = h.backend();
    let old = completed(s, job("k").unique_key("nightly")).await;
    let holder = add(s, job("k").unique_key("nightly")).await;
    assert!(matches!(
        s.retry(None, old).await,
        Err(JobError::Duplicate { existing }) if existing == holder
    ));
    assert_eq!(
        s.get(None, old).await.unwrap().state,
        State::Completed,
        "unchanged"
    );
    s.cancel(None, holder).await.unwrap();
    let again = s.retry(None, old).await.unwrap();
    assert_eq!(again.state, State::Pending, "free once the holder ended");
}

/// Two processes insert the same unique job at once, 20 times over (a tenant per
/// round): each time exactly one row, and the other insert gets it as a duplicate.
async fn race(h: &dyn Harness, make: impl Fn(&str) -> NewJob) {
    let (a, b) = (h.connect_again().await, h.connect_again().await);
    for round in 0..20 {
        let tenant = format!("t{round}");
        let insert = |store: &Arc<dyn WorkerBackend>| {
            let (store, new) = (store.clone(), make(&tenant));
            tokio::spawn(async move { store.enqueue(new).await.unwrap() })
        };
        let (x, y) = (insert(&a), insert(&b));
        let (x, y) = (x.await.unwrap(), y.await.unwrap());
        assert_eq!(x.job.id, y.job.id, "round {round}: one job");
        assert!(x.duplicate != y.duplicate, "round {round}: one created it");
        let filter = ListFilter::new().tenant(tenant);
        let rows = h.backend().list(&filter, &PageRequest::first(10)).await;
        assert_eq!(rows.unwrap().items.len(), 1, "round {round}: one row");
    }
}

pub async fn racing_inserts_by_key_make_one_job(h: &dyn Harness) {
    race(h, |t| job("k").tenant(t).unique_key("same")).await;
}

pub async fn racing_inserts_by_args_make_one_job(h: &dyn Harness) {
    race(h, |t| {
        job("k").tenant(t).unique(UniqueOpts::new().by_args())
    })
    .await;
}

pub async fn racing_inserts_by_kind_make_one_job(h: &dyn Harness) {
    race(h, |t| job("k").tenant(t).unique(UniqueOpts::new())).await;
}

pub async fn racing_inserts_in_a_period_make_one_job(h: &dyn Harness) {
    let at = datetime!(2026-12-03 10:00 UTC);
    let opts = UniqueOpts::new().key("p").period(Duration::from_secs(60));
    race(h, |t| opts.apply_at(job("k").tenant(t), at)).await;
}

pub async fn racing_inserts_among_all_states_make_one_job(h: &dyn Harness) {
    let opts = UniqueOpts::new().key("s").states(State::ALL);
    race(h, |t| job("k").tenant(t).unique(opts.clone())).await;
}

pub async fn racing_inserts_with_replace_make_one_job(h: &dyn Harness) {
    let opts = UniqueOpts::new().key("r").on_conflict(OnConflict::Replace);
    race(h, |t| job("k").tenant(t).unique(opts.clone())).await;
}
