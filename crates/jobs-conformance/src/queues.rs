//! Queue control: pauses stop claims at once, per tenant or for every tenant; running
//! jobs still finish; a resume wakes idle workers.

use std::time::Duration;

use jobs_core::{ClaimRequest, JobError, QueueScope, State};

use crate::{
    Harness,
    fixtures::{add, claim_req, job, wake_for},
};

fn claim_of(tenant: Option<&str>) -> ClaimRequest {
    ClaimRequest {
        tenant: tenant.map(str::to_owned),
        ..claim_req("w", 10)
    }
}

pub async fn a_paused_queue_is_not_claimed_until_resumed(h: &dyn Harness) {
    let s = h.backend();
    let running = add(s, job("k").tenant("a")).await;
    let claimed = s.claim(&claim_of(Some("a"))).await.unwrap();
    assert_eq!(claimed.len(), 1);
    s.pause_queue(QueueScope::Tenant("a"), "default")
        .await
        .unwrap();
    let waiting = add(s, job("k").tenant("a")).await;
    let other_tenant = add(s, job("k").tenant("b")).await;
    let other_queue = add(s, job("k").tenant("a").queue("mail")).await;

    let mut request = claim_of(None);
    request.queues.push("mail".into());
    let got: Vec<_> = s.claim(&request).await.unwrap();
    let ids: Vec<_> = got.iter().map(|j| j.id).collect();
    assert!(
        ids.contains(&other_tenant) && ids.contains(&other_queue) && !ids.contains(&waiting),
        "only tenant a's default queue is paused: {ids:?}"
    );
    let lease = jobs_core::Lease::of(&claimed[0]).unwrap();
    assert_eq!(
        s.complete(&lease, serde_json::json!(1)).await.unwrap(),
        State::Completed,
        "a job running when its queue was paused still finishes"
    );
    assert_eq!(s.get(None, running).await.unwrap().state, State::Completed);

    s.pause_queue(QueueScope::Tenant("a"), "default")
        .await
        .expect("pausing twice is fine");
    s.resume_queue(QueueScope::Tenant("a"), "default")
        .await
        .unwrap();
    let got = s.claim(&claim_of(Some("a"))).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), [waiting]);
}

pub async fn a_pause_for_every_tenant_outlasts_a_tenant_resume(h: &dyn Harness) {
    let s = h.backend();
    let a = add(s, job("k").tenant("a")).await;
    add(s, job("k").tenant("b")).await;
    s.pause_queue(QueueScope::AllTenants, "default")
        .await
        .unwrap();
    assert!(s.claim(&claim_of(None)).await.unwrap().is_empty());
    s.resume_queue(QueueScope::Tenant("a"), "default")
        .await
        .unwrap();
    assert!(
        s.claim(&claim_of(Some("a"))).await.unwrap().is_empty(),
        "a tenant cannot lift an operator's pause"
    );
    let stats = s.queue_stats(Some("a")).await.unwrap();
    assert!(stats[0].paused, "the tenant sees the queue paused");
    s.resume_queue(QueueScope::AllTenants, "default")
        .await
        .unwrap();
    let got = s.claim(&claim_of(Some("a"))).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), [a]);
}

pub async fn queue_stats_show_paused_queues_even_without_jobs(h: &dyn Harness) {
    let s = h.backend();
    add(s, job("k").tenant("a").queue("mail")).await;
    s.pause_queue(QueueScope::Tenant("a"), "never-used")
        .await
        .unwrap();
    s.pause_queue(QueueScope::Tenant("a"), "mail")
        .await
        .unwrap();
    s.pause_queue(QueueScope::Tenant("b"), "other")
        .await
        .unwrap();
    let stats = s.queue_stats(Some("a")).await.unwrap();
    let seen: Vec<(&str, bool)> = stats.iter().map(|q| (q.queue.as_str(), q.paused)).collect();
    assert_eq!(seen, [("mail", true), ("never-used", true)]);
    assert!(stats[1].counts.values().all(|n| *n == 0));
    s.resume_queue(QueueScope::Tenant("a"), "mail")
        .await
        .unwrap();
    let stats = s.queue_stats(Some("a")).await.unwrap();
    assert!(!stats.iter().find(|q| q.queue == "mail").unwrap().paused);
    // Every tenant's view (operators) shows pauses made for every tenant.
    assert!(s.queue_stats(None).await.unwrap().iter().all(|q| !q.paused));
}

pub async fn pausing_refuses_names_no_job_could_have(h: &dyn Harness) {
    let s = h.backend();
    for bad in ["", "a b", "nul\0", &"q".repeat(200)] {
        match s.pause_queue(QueueScope::Tenant("a"), bad).await {
            Err(JobError::Invalid(fields)) => assert_eq!(fields[0].field, "queue"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

pub async fn resume_wakes_idle_workers(h: &dyn Harness) {
    let other = h.connect_again().await;
    let s = h.backend();
    s.pause_queue(QueueScope::AllTenants, "mail").await.unwrap();
    let mut here = s.subscribe().await.unwrap();
    let mut there = other.subscribe().await.unwrap();
    s.resume_queue(QueueScope::AllTenants, "mail")
        .await
        .unwrap();
    // Tests sharing the database wake for their own queues too: wait for ours.
    tokio::time::timeout(Duration::from_secs(5), wake_for(&mut here, "mail"))
        .await
        .expect("a resume wakes this process's workers");
    if h.wakes_other_processes() {
        tokio::time::timeout(Duration::from_secs(5), wake_for(&mut there, "mail"))
            .await
            .expect("and every other process's");
    }
}
