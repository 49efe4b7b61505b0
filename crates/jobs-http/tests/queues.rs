//! Queue control over HTTP, on SQLite and PostgreSQL: pause and resume, what `GET
//! /v1/queues` shows, and that a remote worker's long-poll neither claims from a paused
//! queue nor waits for a poll once it is resumed.

mod common;

use std::time::Duration;

use common::{Api, assert_problem};
use jobs_store::{backend_tests, testing::TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

backend_tests!(
    pause_and_resume_show_in_queues,
    a_long_poll_skips_a_paused_queue_and_wakes_on_resume,
    bad_queue_names_are_400_naming_the_field,
);

fn queue<'a>(queues: &'a Value, name: &str) -> Option<&'a Value> {
    queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == name)
}

async fn pause_and_resume_show_in_queues(db: TestDb) {
    let api = Api::start(&db.store).await;
    api.create(json!({"kind": "k", "queue": "mail"})).await;
    let (status, paused) = api.post("/v1/queues/mail/pause", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(
        (&paused["queue"], &paused["paused"]),
        (&json!("mail"), &json!(true))
    );
    assert_eq!(paused["counts"]["pending"], 1);

    let (status, unknown) = api.post("/v1/queues/fresh/pause", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{unknown}");
    let (_, queues) = api.get("/v1/queues").await;
    assert_eq!(queue(&queues, "mail").unwrap()["paused"], true);
    assert_eq!(
        queue(&queues, "fresh").expect("a paused unknown queue exists from then on")["paused"],
        true
    );

    let (status, resumed) = api.post("/v1/queues/mail/resume", json!({})).await;
    assert_eq!(
        (status, &resumed["paused"]),
        (StatusCode::OK, &json!(false))
    );
    let (_, queues) = api.get("/v1/queues").await;
    assert_eq!(queue(&queues, "mail").unwrap()["paused"], false);
    let (status, _) = api.post("/v1/queues/never-paused/resume", json!({})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "resuming a queue that is not paused is fine"
    );
}

async fn a_long_poll_skips_a_paused_queue_and_wakes_on_resume(db: TestDb) {
    let api = Api::start(&db.store).await;
    api.post("/v1/queues/remote/pause", json!({})).await;
    let poll = |wait: u64| {
        let api = api.clone();
        let claim = json!({"worker_id": "w", "queues": ["remote"], "wait_seconds": wait});
        tokio::spawn(async move { api.post("/v1/claims", claim).await })
    };

    let waiting = poll(2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = api.create(json!({"kind": "k", "queue": "remote"})).await;
    let (status, claimed) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        claimed["jobs"],
        json!([]),
        "nothing is claimed from a paused queue"
    );

    // A long-poll in flight when the queue is resumed gets the job at once: the resume
    // wakes it, where a poll would take up to 500 ms.
    let started = Instant::now();
    let waiting = poll(20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.post("/v1/queues/remote/resume", json!({})).await;
    let (_, claimed) = waiting.await.unwrap();
    assert_eq!(claimed["jobs"][0]["id"], id.as_str(), "{claimed}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn bad_queue_names_are_400_naming_the_field(db: TestDb) {
    let api = Api::start(&db.store).await;
    for name in ["a%20b", "%00", &"q".repeat(200)] {
        let (status, problem) = api
            .post(&format!("/v1/queues/{name}/pause"), json!({}))
            .await;
        assert_problem(status, &problem, StatusCode::BAD_REQUEST, "validation");
        assert_eq!(problem["errors"][0]["field"], "name", "{problem}");
    }
}
