//! Flow control: limits on how many of a queue's jobs run at once and start per period,
//! for every tenant together, per tenant and per key; and claims that take turns between
//! tenants.

use std::{collections::HashMap, time::Duration};

use futures::future::join_all;
use jobs_core::{
    ClaimRequest, JobError, Lease, QueueLimits, QueueScope, Rate, State, WorkerBackend,
};
use serde_json::json;

use crate::{
    Harness,
    fixtures::{add, claim_req, job},
};

fn limits(f: impl FnOnce(&mut QueueLimits)) -> QueueLimits {
    let mut limits = QueueLimits::default();
    f(&mut limits);
    limits
}

/// Sets the limits of the `default` queue in `scope`.
async fn limit_default(s: &dyn WorkerBackend, scope: QueueScope<'_>, limits: &QueueLimits) {
    s.set_queue_limits(scope, "default", limits).await.unwrap();
}

/// How many of `jobs` have each concurrency key.
fn per_key(jobs: &[jobs_core::Job]) -> HashMap<Option<String>, usize> {
    let mut counts = HashMap::new();
    for job in jobs {
        *counts.entry(job.concurrency_key.clone()).or_default() += 1;
    }
    counts
}

async fn claim(s: &dyn WorkerBackend, n: u32) -> Vec<jobs_core::Job> {
    s.claim(&claim_req("w", n)).await.unwrap()
}

async fn complete(s: &dyn WorkerBackend, job: &jobs_core::Job) {
    let lease = Lease::of(job).unwrap();
    assert_eq!(
        s.complete(&lease, json!(1)).await.unwrap(),
        State::Completed
    );
}

async fn add_many(s: &dyn WorkerBackend, n: usize, make: impl Fn(usize) -> jobs_core::NewJob) {
    let jobs = (0..n).map(make).collect();
    s.enqueue_many(jobs).await.unwrap();
}

pub async fn limits_are_stored_per_scope_and_validated(h: &dyn Harness) {
    let s = h.backend();
    let set = limits(|l| {
        l.concurrency = Some(5);
        l.key_concurrency = Some(1);
        l.rate = Some(Rate::per_second(50));
        l.key_rate = Some(Rate::new(2, Duration::from_secs(60)));
    });
    s.set_queue_limits(QueueScope::Tenant("a"), "mail", &set)
        .await
        .unwrap();
    assert_eq!(
        s.queue_limits(QueueScope::Tenant("a"), "mail")
            .await
            .unwrap(),
        set
    );
    assert!(
        s.queue_limits(QueueScope::Tenant("b"), "mail")
            .await
            .unwrap()
            .is_unlimited(),
        "another tenant's limits are its own"
    );
    assert!(
        s.queue_limits(QueueScope::AllTenants, "mail")
            .await
            .unwrap()
            .is_unlimited()
    );
    s.set_queue_limits(QueueScope::Tenant("a"), "mail", &QueueLimits::default())
        .await
        .unwrap();
    assert!(
        s.queue_limits(QueueScope::Tenant("a"), "mail")
            .await
            .unwrap()
            .is_unlimited()
    );

    let bad = [
        (limits(|l| l.concurrency = Some(0)), "concurrency"),
        (
            limits(|l| l.key_concurrency = Some(2_000_000)),
            "key_concurrency",
        ),
        (limits(|l| l.rate = Some(Rate::per_second(0))), "rate.limit"),
        (
            limits(|l| l.rate = Some(Rate::new(1, Duration::from_millis(1500)))),
            "rate.period_seconds",
        ),
        (
            limits(|l| l.key_rate = Some(Rate::new(1, Duration::from_secs(86_401)))),
            "key_rate.period_seconds",
        ),
    ];
    for (bad, field) in bad {
        match s
            .set_queue_limits(QueueScope::Tenant("a"), "mail", &bad)
            .await
        {
            Err(JobError::Invalid(fields)) => assert_eq!(fields[0].field, field),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    match s
        .set_queue_limits(QueueScope::Tenant("a"), "a b", &set)
        .await
    {
        Err(JobError::Invalid(fields)) => assert_eq!(fields[0].field, "queue"),
        other => panic!("{other:?}"),
    }
}

pub async fn global_concurrency_caps_running_jobs_of_every_tenant(h: &dyn Harness) {
    let s = h.backend();
    add_many(s, 10, |i| {
        job("k").tenant(if i % 2 == 0 { "a" } else { "b" })
    })
    .await;
    limit_default(
        s,
        QueueScope::AllTenants,
        &limits(|l| l.concurrency = Some(3)),
    )
    .await;
    let first = claim(s, 10).await;
    assert_eq!(first.len(), 3, "three may run, whatever was asked");
    assert!(claim(s, 10).await.is_empty(), "none more while three run");
    complete(s, &first[0]).await;
    assert_eq!(claim(s, 10).await.len(), 1, "an ended job frees its place");
    limit_default(s, QueueScope::AllTenants, &QueueLimits::default()).await;
    assert_eq!(
        claim(s, 10).await.len(),
        6,
        "lifting the limit lets the rest run"
    );
}

pub async fn a_tenants_concurrency_counts_its_own_jobs_only(h: &dyn Harness) {
    let s = h.backend();
    add_many(s, 6, |_| job("k").tenant("a")).await;
    add_many(s, 6, |_| job("k").tenant("b")).await;
    limit_default(
        s,
        QueueScope::Tenant("a"),
        &limits(|l| l.concurrency = Some(2)),
    )
    .await;
    let got = claim(s, 20).await;
    let of = |t: &str| got.iter().filter(|j| j.tenant == t).count();
    assert_eq!((of("a"), of("b")), (2, 6));
    let mut request = claim_req("w", 5);
    request.tenant = Some("a".into());
    assert!(s.claim(&request).await.unwrap().is_empty());
}

pub async fn key_concurrency_runs_one_job_per_key_at_a_time(h: &dyn Harness) {
    let s = h.backend();
    add_many(s, 9, |i| {
        job("k").concurrency_key(format!("customer-{}", i % 3))
    })
    .await;
    add_many(s, 2, |_| job("k")).await;
    limit_default(
        s,
        QueueScope::AllTenants,
        &limits(|l| l.key_concurrency = Some(1)),
    )
    .await;
    let got = claim(s, 20).await;
    let per_key = per_key(&got);
    assert_eq!(
        per_key.len(),
        4,
        "three keys and the jobs without one: {per_key:?}"
    );
    assert!(
        per_key.iter().all(|(k, n)| k.is_none() || *n == 1),
        "{per_key:?}"
    );
    assert_eq!(per_key[&None], 2, "jobs without a key are not limited");
    assert!(claim(s, 20).await.is_empty());
    let ended = got.iter().find(|j| j.concurrency_key.is_some()).unwrap();
    complete(s, ended).await;
    let next = claim(s, 20).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].concurrency_key, ended.concurrency_key);
}

pub async fn a_rate_limits_starts_in_any_window_of_its_period(h: &dyn Harness) {
    let s = h.backend();
    add_many(s, 12, |_| job("k")).await;
    let rate = Rate::new(5, Duration::from_secs(1));
    limit_default(s, QueueScope::AllTenants, &limits(|l| l.rate = Some(rate))).await;
    let first = claim(s, 20).await;
    assert_eq!(first.len(), 5);
    for job in &first {
        complete(s, job).await;
    }
    assert!(
        claim(s, 20).await.is_empty(),
        "ended jobs still count as starts within the period"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(claim(s, 20).await.len(), 5, "the window has moved on");
}

pub async fn a_key_rate_limits_each_keys_starts(h: &dyn Harness) {
    let s = h.backend();
    add_many(s, 6, |i| job("k").concurrency_key(format!("api-{}", i % 2))).await;
    let rate = Rate::new(2, Duration::from_secs(60));
    limit_default(
        s,
        QueueScope::Tenant("default"),
        &limits(|l| l.key_rate = Some(rate)),
    )
    .await;
    let got = claim(s, 20).await;
    assert_eq!(got.len(), 4, "two per key");
    for job in &got {
        complete(s, job).await;
    }
    assert!(claim(s, 20).await.is_empty());
}

pub async fn racing_claimers_never_pass_a_limit(h: &dyn Harness) {
    let s = h.backend();
    let other = h.connect_again().await;
    add_many(s, 60, |i| job("k").concurrency_key(format!("c{}", i % 4))).await;
    s.set_queue_limits(
        QueueScope::AllTenants,
        "default",
        &limits(|l| {
            l.concurrency = Some(6);
            l.key_concurrency = Some(2);
        }),
    )
    .await
    .unwrap();
    let claims = (0..8).map(|i| {
        let store: &dyn WorkerBackend = if i % 2 == 0 { s } else { other.as_ref() };
        async move { store.claim(&claim_req(&format!("w{i}"), 3)).await.unwrap() }
    });
    let got: Vec<_> = join_all(claims).await.into_iter().flatten().collect();
    assert_eq!(got.len(), 6, "eight claims of three, six may run");
    let per_key = per_key(&got);
    assert!(per_key.values().all(|n| *n <= 2), "{per_key:?}");
}

pub async fn a_limit_holds_at_once_in_a_process_that_has_not_heard_of_it(h: &dyn Harness) {
    let s = h.backend();
    let other = h.connect_again().await;
    add_many(s, 10, |_| job("k")).await;
    // The other process claims first, so it has read (and keeps) that nothing is limited.
    assert_eq!(other.claim(&claim_req("o", 1)).await.unwrap().len(), 1);
    limit_default(
        s,
        QueueScope::AllTenants,
        &limits(|l| l.concurrency = Some(2)),
    )
    .await;
    let got = other.claim(&claim_req("o", 10)).await.unwrap();
    assert!(got.len() <= 1, "one runs, one more may: {}", got.len());
}

pub async fn claims_take_turns_between_tenants(h: &dyn Harness) {
    let s = h.backend();
    add_many(s, 300, |_| job("k").tenant("big")).await;
    let small: Vec<_> = join_all((0..3).map(|_| add(s, job("k").tenant("small")))).await;
    let got = claim(s, 10).await;
    let ids: Vec<_> = got.iter().map(|j| j.id).collect();
    assert!(
        small.iter().all(|id| ids.contains(id)),
        "the small tenant's jobs are in the first claim, not after 300 others"
    );
    assert_eq!(
        got.len(),
        8,
        "half the claim each, the small tenant has three"
    );
    let mut request: ClaimRequest = claim_req("w", 10);
    request.tenant = Some("big".into());
    assert_eq!(
        s.claim(&request).await.unwrap().len(),
        10,
        "one tenant's claim takes all"
    );
}

pub async fn queue_stats_show_limits_and_throttled_jobs(h: &dyn Harness) {
    let s = h.backend();
    add_many(s, 5, |_| job("k").tenant("a")).await;
    limit_default(
        s,
        QueueScope::AllTenants,
        &limits(|l| l.concurrency = Some(2)),
    )
    .await;
    let own = limits(|l| l.rate = Some(Rate::per_second(100)));
    limit_default(s, QueueScope::Tenant("a"), &own).await;
    assert_eq!(claim(s, 10).await.len(), 2);
    let stats = s.queue_stats(Some("a")).await.unwrap();
    let q = stats.iter().find(|q| q.queue == "default").unwrap();
    assert_eq!(q.limits, own);
    assert_eq!(q.all_tenants_limits.concurrency, Some(2));
    assert_eq!(q.counts.get(&State::Running), Some(&2));
    assert_eq!(q.throttled, 3, "three due jobs wait for the limit");
    let all = s.queue_stats(None).await.unwrap();
    let q = all.iter().find(|q| q.queue == "default").unwrap();
    assert_eq!(q.limits.concurrency, Some(2));
    assert_eq!(q.throttled, 3);
}
