//! Webhooks: subscriptions per tenant, and one delivery job per subscribed event of
//! every path that changes a job, written in the transaction of the change.

use std::{collections::BTreeMap, time::Duration};

use jobs_core::{
    BulkAction, BulkRequest, Finish, JobError, JobId, Lease, ListFilter, NewWebhook, Outcome,
    PageRequest, Retry, State, WorkerBackend,
    webhook::{self, Delivery, EVENTS, WEBHOOK_KIND, WEBHOOK_QUEUE},
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    Harness,
    fixtures::{claim_req, job, wake_for},
};

fn subscription(tenant: &str, events: &[&str]) -> NewWebhook {
    NewWebhook {
        tenant: tenant.into(),
        url: "https://hooks.example/in".into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        secret: None,
    }
}

/// The events delivered to `tenant` so far, as (job, type) counts; every delivery's
/// row and arguments are checked on the way.
async fn delivered(s: &dyn WorkerBackend, tenant: &str) -> BTreeMap<(JobId, String), u32> {
    let mut counts = BTreeMap::new();
    for (id, kind, _) in events(s, tenant).await {
        *counts.entry((id, kind)).or_insert(0) += 1;
    }
    counts
}

/// The events delivered to `tenant` so far: job, type and data.
async fn events(s: &dyn WorkerBackend, tenant: &str) -> Vec<(JobId, String, serde_json::Value)> {
    let filter = ListFilter::new().tenant(tenant).kind(WEBHOOK_KIND);
    let page = s.list(&filter, &PageRequest::first(100)).await.unwrap();
    assert!(page.next_cursor.is_none(), "fewer than 100 deliveries");
    let mut events = Vec::new();
    for delivery in page.items {
        assert_eq!(delivery.queue, WEBHOOK_QUEUE);
        let args: Delivery = serde_json::from_value(delivery.args.clone()).unwrap();
        let event = &args.event;
        assert!(
            event["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{event}"
        );
        let data = &event["data"];
        let id: JobId = data["id"].as_str().unwrap().parse().unwrap();
        let kind = event["type"].as_str().unwrap().to_owned();
        let changed = s.get(None, id).await.unwrap();
        assert_eq!(data["queue"], changed.queue.as_str(), "{event}");
        assert_eq!(data["kind"], changed.kind.as_str(), "{event}");
        if kind != "job.failed" && kind != "job.retrying" {
            assert!(data["error"].is_null(), "{event}");
        }
        events.push((id, kind, data.clone()));
    }
    events
}

fn once(events: &[(JobId, &str)]) -> BTreeMap<(JobId, String), u32> {
    events
        .iter()
        .map(|(id, e)| ((*id, e.to_string()), 1))
        .collect()
}

fn failure(retry: Retry) -> Outcome {
    Outcome::Failed {
        kind: "boom".into(),
        message: "it broke".into(),
        retry,
    }
}

async fn finish(s: &dyn WorkerBackend, items: Vec<(&jobs_core::Job, Outcome)>) {
    let finishes = items
        .into_iter()
        .map(|(j, outcome)| Finish::new(Lease::of(j).unwrap(), outcome))
        .collect();
    for done in s.finish_many(finishes).await.unwrap() {
        done.unwrap();
    }
}

pub async fn webhooks_are_created_listed_and_deleted_per_tenant(h: &dyn Harness) {
    let s = h.backend();
    let made = s
        .create_webhook(subscription("a", &["job.completed"]))
        .await
        .unwrap();
    assert!(
        webhook::signing_key(&made.secret).is_ok(),
        "{}",
        made.secret
    );
    let given = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut second = subscription("a", &["job.failed", "job.created"]);
    second.secret = Some(given.into());
    let second = s.create_webhook(second).await.unwrap();
    assert_eq!(second.secret, given);
    let listed = s.webhooks("a").await.unwrap();
    assert_eq!(listed, vec![made.webhook.clone(), second.webhook.clone()]);
    assert_eq!(listed[1].events, ["job.failed", "job.created"]);

    let id = made.webhook.id;
    assert!(s.webhooks("b").await.unwrap().is_empty());
    assert!(s.webhook_target("b", id).await.unwrap().is_none());
    assert!(matches!(
        s.delete_webhook("b", id).await,
        Err(JobError::WebhookNotFound(_))
    ));
    let target = s.webhook_target("a", id).await.unwrap().unwrap();
    assert_eq!(
        (target.url.as_str(), target.secret),
        ("https://hooks.example/in", made.secret)
    );
    s.delete_webhook("a", id).await.unwrap();
    assert!(s.webhook_target("a", id).await.unwrap().is_none());
    assert!(matches!(
        s.delete_webhook("a", Uuid::now_v7()).await,
        Err(JobError::WebhookNotFound(_))
    ));
    assert_eq!(s.webhooks("a").await.unwrap(), vec![second.webhook]);
}

pub async fn each_subscribed_transition_writes_one_delivery(h: &dyn Harness) {
    let s = h.backend();
    let mut wakeups = s.subscribe().await.unwrap();
    s.create_webhook(subscription("hooked", &EVENTS))
        .await
        .unwrap();
    s.create_webhook(subscription("picky", &["job.completed"]))
        .await
        .unwrap();

    // Enqueue (one statement for three), claim, progress, heartbeat.
    let new: Vec<_> = (0..3).map(|_| job("work").tenant("hooked")).collect();
    let ids: Vec<JobId> = new.iter().map(|j| j.id).collect();
    s.enqueue_many(new).await.unwrap();
    if h.wakes_other_processes() {
        wake_for(&mut wakeups, WEBHOOK_QUEUE).await;
    }
    let claimed = s.claim(&claim_req("w", 10)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let lease = Lease::of(&claimed[0]).unwrap();
    s.progress(&lease, 0.5, Some("half")).await.unwrap();
    s.progress(&lease, 0.5, Some("half")).await.unwrap(); // unchanged: no event
    let leases: Vec<Lease> = claimed.iter().map(|j| Lease::of(j).unwrap()).collect();
    s.heartbeat(&leases, Duration::from_secs(30)).await.unwrap();
    // Finish: completed, retried, partial, in one statement.
    finish(
        s,
        vec![
            (&claimed[0], Outcome::Completed { result: json!(1) }),
            (
                &claimed[1],
                failure(Retry::After(Duration::from_secs(3600))),
            ),
            (
                &claimed[2],
                Outcome::Partial {
                    result: json!(2),
                    item_errors: json!([]),
                },
            ),
        ],
    )
    .await;
    // Cancel a pending job; bulk-cancel the retried one; sweep one past its deadline.
    let cancelled = s
        .enqueue(
            job("later")
                .tenant("hooked")
                .delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap()
        .job
        .id;
    s.cancel(Some("hooked"), cancelled).await.unwrap();
    let mut bulk = BulkRequest::new(
        BulkAction::Cancel,
        ListFilter::new().tenant("hooked").kind("work"),
    );
    bulk.filter.state = Some(State::Pending);
    assert_eq!(s.bulk(&bulk).await.unwrap().matched, 1);
    let soon = time::OffsetDateTime::now_utc() + Duration::from_millis(300);
    let late = job("late")
        .tenant("hooked")
        .queue("elsewhere")
        .deadline(soon);
    let late = s.enqueue(late).await.unwrap().job.id;
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.end_unrunnable(100).await.unwrap();
    // A job that failed for good.
    let doomed = s
        .enqueue(job("doomed").tenant("hooked"))
        .await
        .unwrap()
        .job
        .id;
    let claimed = s.claim(&claim_req("w", 10)).await.unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), [doomed]);
    finish(s, vec![(&claimed[0], failure(Retry::Never))]).await;

    let expected = once(&[
        (ids[0], "job.created"),
        (ids[1], "job.created"),
        (ids[2], "job.created"),
        (ids[0], "job.started"),
        (ids[1], "job.started"),
        (ids[2], "job.started"),
        (ids[0], "job.progress"),
        (ids[0], "job.completed"),
        (ids[1], "job.retrying"),
        (ids[2], "job.partial"),
        (cancelled, "job.created"),
        (cancelled, "job.cancelled"),
        (ids[1], "job.cancelled"),
        (late, "job.created"),
        (late, "job.failed"),
        (doomed, "job.created"),
        (doomed, "job.started"),
        (doomed, "job.failed"),
    ]);
    assert_eq!(delivered(s, "hooked").await, expected);
    for (id, kind, data) in events(s, "hooked").await {
        if (id == doomed && kind == "job.failed") || (id == ids[1] && kind == "job.retrying") {
            assert_eq!(data["error"]["kind"], "boom", "the attempt's error: {data}");
            assert_eq!(data["attempt"], 1, "{data}");
        }
    }

    // Only the subscribed event, only for the subscribing tenant; deliveries emit none.
    let picky = s.enqueue(job("work").tenant("picky")).await.unwrap().job.id;
    s.enqueue(job("work").tenant("quiet")).await.unwrap();
    let claimed = s.claim(&claim_req("w", 10)).await.unwrap();
    let outcomes = claimed
        .iter()
        .map(|j| (j, Outcome::Completed { result: json!(0) }))
        .collect();
    finish(s, outcomes).await;
    assert_eq!(
        delivered(s, "picky").await,
        once(&[(picky, "job.completed")])
    );
    assert!(delivered(s, "quiet").await.is_empty());
    let mut deliveries = claim_req("w", 100);
    deliveries.queues = vec![WEBHOOK_QUEUE.into()];
    let claimed = s.claim(&deliveries).await.unwrap();
    assert_eq!(claimed.len(), expected.len() + 1);
    let outcomes = claimed
        .iter()
        .map(|j| (j, Outcome::Completed { result: json!(0) }))
        .collect();
    finish(s, outcomes).await;
    assert_eq!(
        delivered(s, "hooked").await,
        expected,
        "deliveries emit no events"
    );
}
