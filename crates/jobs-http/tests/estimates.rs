//! Positions and estimates in the job view, and large results through remote workers'
//! completions, over a real socket on SQLite and PostgreSQL.

mod common;

use common::Api;
use jobs_http::ApiConfig;
use jobs_store::{OutcomeLimits, backend_tests, testing::TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};

backend_tests!(
    created_and_read_jobs_report_their_place_in_line,
    a_five_megabyte_result_round_trips_through_complete,
    results_over_the_limits_are_refused_clearly,
);

fn place(job: &Value) -> Option<u64> {
    job["position_in_queue"].as_u64()
}

async fn created_and_read_jobs_report_their_place_in_line(db: TestDb) {
    let api = Api::start(&db.store).await;
    let priorities = [0, 5, 0, 9, 5, 0, 9, 1];
    let mut created = Vec::new();
    for (i, priority) in priorities.into_iter().enumerate() {
        let (status, job) = api
            .post("/v1/jobs", json!({"kind": "k", "priority": priority}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        // At its creation, the jobs of its priority or higher created before it come first.
        let ahead = priorities[..i].iter().filter(|p| **p >= priority).count() as u64;
        assert_eq!(place(&job), Some(ahead), "job {i}: {job}");
        assert_eq!(job["position_exact"], json!(true));
        assert_eq!(job["estimated_start_at"], Value::Null, "no history yet");
        assert_eq!(job["estimated_completion_at"], Value::Null);
        created.push((priority, job["id"].as_str().unwrap().to_owned()));
    }
    // Read later, each reports its rank in the claim order: priority, then oldest.
    let mut ranked: Vec<(i64, usize)> = priorities
        .iter()
        .enumerate()
        .map(|(i, p)| (-(*p as i64), i))
        .collect();
    ranked.sort();
    for (rank, (_, i)) in ranked.iter().enumerate() {
        let (_, job) = api.get(&format!("/v1/jobs/{}", created[*i].1)).await;
        assert_eq!(place(&job), Some(rank as u64), "{job}");
    }
    // Listings do not count.
    let (_, list) = api.get("/v1/jobs").await;
    assert_eq!(list["items"][0]["position_in_queue"], Value::Null);
    // The head is claimed; a running job has no place in line.
    let (_, claimed) = api.post("/v1/claims", json!({"worker_id": "w"})).await;
    let (_, running) = api
        .get(&format!(
            "/v1/jobs/{}",
            claimed["jobs"][0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(running["state"], "running");
    assert_eq!(running["position_in_queue"], Value::Null);
    let (_, next) = api
        .get(&format!("/v1/jobs/{}", created[ranked[1].1].1))
        .await;
    assert_eq!(place(&next), Some(0), "the new head: {next}");
}

/// Claims the one pending job as worker `w` and completes it with `result`.
async fn complete_with(api: &Api, result: &Value) -> (StatusCode, Value, String) {
    let id = api.create(json!({"kind": "report"})).await;
    let (_, claimed) = api.post("/v1/claims", json!({"worker_id": "w"})).await;
    let token = claimed["jobs"][0]["lease_token"].clone();
    let (status, body) = api
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"worker_id": "w", "lease_token": token, "result": result}),
        )
        .await;
    (status, body, id)
}

fn report(rows: usize) -> Value {
    let rows: Vec<Value> = (0..rows)
        .map(|i| json!({"row": i, "status": "shipped", "note": "left the warehouse on time"}))
        .collect();
    json!({"rows": rows})
}

async fn a_five_megabyte_result_round_trips_through_complete(db: TestDb) {
    // Ordinary bodies stay small (64 KiB); a completion may carry a large result.
    let api = Api::start(&db.store).await;
    let result = report(75_000);
    assert!(serde_json::to_vec(&result).unwrap().len() > 5_000_000);
    let (status, body, id) = complete_with(&api, &result).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "completed");
    let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["result"], result);
    let stored = db
        .store
        .compressed_outcome_bytes(id.parse().unwrap())
        .await
        .unwrap();
    assert!(
        stored.is_some_and(|n| n < 1_000_000),
        "stored in {stored:?} bytes"
    );
}

async fn results_over_the_limits_are_refused_clearly(db: TestDb) {
    let store = db.store.clone().with_outcome_limits(OutcomeLimits {
        compress_above: 10_000,
        max_bytes: 200_000,
    });
    let config = ApiConfig {
        body_limit: 64 * 1024,
        result_body_limit: 1_000_000,
        workers: Some(1),
        ..Default::default()
    };
    let api = Api::start_with(&store, config).await;
    // Over the store's largest result: the job fails and says why.
    let (status, body, id) = complete_with(&api, &report(5_000)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "failed");
    let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
    let error = &job["errors"][0];
    assert_eq!(error["kind"], "result_too_large", "{job}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("at most 200000")
    );
    // Over the completion's body limit: 413, and the job still runs.
    let (status, body, id) = complete_with(&api, &report(20_000)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "running");
}
