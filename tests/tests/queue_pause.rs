//! Queue pause and resume across real processes on PostgreSQL: an api with its embedded
//! worker (queue `default`), two standalone workers (queue `work`, polling only once a
//! minute) and a remote worker's long-poll (queue `remote`). While their queues are
//! paused none of them claims anything; a resume wakes each of them at once, well before
//! any poll would have.

use std::time::Duration;

use blackbox_tests::{free_port, spawn, wait_until};
use jobs_core::{JobId, JobStore, State};
use jobs_store::testing::TestDb;
use reqwest::Client;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

const QUEUES: [&str; 3] = ["default", "work", "remote"];

async fn post(http: &Client, url: String, body: Value) -> Value {
    let response = http.post(url).json(&body).send().await.expect("request");
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.expect("JSON")
}

async fn states(db: &TestDb, ids: &[JobId]) -> Vec<State> {
    let jobs = db.store.get_many(ids).await.unwrap();
    ids.iter().map(|id| jobs[id].state).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_postgres_tests),
    ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
)]
async fn a_pause_stops_every_claimer_and_a_resume_wakes_them() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDb::postgres().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let _api = spawn(
        "jobs-api",
        "pause-api",
        &db.url(),
        &["--listen", &listen, "--embedded-worker", "on"],
    );
    let slow_poll = ["--queue", "work=4", "--poll-interval-ms", "60000"];
    let _workers = [
        spawn("jobs-worker", "pause-worker-1", &db.url(), &slow_poll),
        spawn("jobs-worker", "pause-worker-2", &db.url(), &slow_poll),
    ];
    let http = Client::new();
    wait_until("the api to serve", Duration::from_secs(60), async || {
        matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
    })
    .await;
    // Workers are up once they have run a job of their queue.
    let probe = post(
        &http,
        format!("{base}/v1/jobs?wait=60"),
        json!({"kind": "echo", "queue": "work"}),
    )
    .await;
    assert_eq!(probe["state"], "completed", "{probe}");

    for queue in QUEUES {
        post(&http, format!("{base}/v1/queues/{queue}/pause"), json!({})).await;
    }
    let claim = |wait: u64| {
        let (http, base) = (http.clone(), base.clone());
        let body = json!({"worker_id": "remote-1", "queues": ["remote"], "wait_seconds": wait});
        tokio::spawn(async move { post(&http, format!("{base}/v1/claims"), body).await })
    };
    let first_poll = claim(3);
    let mut ids = Vec::new();
    for (queue, kind) in [("default", "echo"), ("work", "echo"), ("remote", "remote")] {
        for _ in 0..5 {
            let job = post(
                &http,
                format!("{base}/v1/jobs"),
                json!({"kind": kind, "queue": queue}),
            )
            .await;
            ids.push(job["id"].as_str().unwrap().parse::<JobId>().unwrap());
        }
    }
    assert_eq!(
        first_poll.await.unwrap()["jobs"],
        json!([]),
        "the long-poll claims nothing"
    );
    sleep(Duration::from_secs(1)).await;
    assert!(
        states(&db, &ids).await.iter().all(|s| *s == State::Pending),
        "no process claimed from a paused queue"
    );
    let second_poll = claim(30);
    sleep(Duration::from_millis(300)).await;
    let resumed = Instant::now();
    for queue in QUEUES {
        post(&http, format!("{base}/v1/queues/{queue}/resume"), json!({})).await;
    }
    let claimed = second_poll.await.unwrap();
    assert!(!claimed["jobs"].as_array().unwrap().is_empty(), "{claimed}");
    let local = &ids[..10];
    wait_until(
        "the resumed jobs to run",
        Duration::from_secs(20),
        async || {
            states(&db, local)
                .await
                .iter()
                .all(|s| *s == State::Completed)
        },
    )
    .await;
    // Standalone workers poll once a minute: only the resume's wake-up explains this.
    assert!(
        resumed.elapsed() < Duration::from_secs(30),
        "{:?}",
        resumed.elapsed()
    );
}
