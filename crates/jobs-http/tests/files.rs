//! Job files over a real socket, on SQLite and PostgreSQL: inputs staged before their
//! job and handed to the claimer as URLs, results uploaded by the lease holder and shown
//! in the job view, limits and names enforced, and nothing of it visible to another
//! tenant.

mod common;

use common::{Api, assert_problem};
use jobs_http::ApiConfig;
use jobs_store::{backend_tests, testing::TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

backend_tests!(
    a_worker_downloads_its_inputs_and_uploads_its_results,
    another_tenant_gets_404_for_every_file,
    uploads_are_bounded_named_and_owned,
);

/// Raw bytes to `path`; status and JSON answer.
async fn upload(api: &Api, path: &str, bytes: &[u8]) -> (StatusCode, Value) {
    let mut request = api
        .http
        .post(format!("{}{path}", api.base))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec());
    if let Some(key) = &api.key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// GET an absolute URL; status and bytes.
async fn download(api: &Api, url: &str) -> (StatusCode, Vec<u8>) {
    let mut request = api.http.get(url);
    if let Some(key) = &api.key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.bytes().await.unwrap().to_vec())
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Stages `bytes` as `name` and creates a job with it; returns the job id.
async fn job_with_input(api: &Api, name: &str, bytes: &[u8]) -> String {
    let (status, staged) = upload(api, &format!("/v1/files?name={name}"), bytes).await;
    assert_eq!(status, StatusCode::CREATED, "{staged}");
    assert_eq!(staged["sha256"], sha256(bytes));
    api.create(json!({"kind": "convert", "files": [staged["id"]]}))
        .await
}

async fn claim(api: &Api) -> Value {
    let (status, body) = api.post("/v1/claims", json!({"worker_id": "w"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["jobs"][0].clone()
}

fn result_path(job: &Value, name: &str) -> String {
    format!(
        "/v1/jobs/{}/result-files?name={name}&worker_id=w&lease_token={}",
        job["id"].as_str().unwrap(),
        job["lease_token"].as_str().unwrap()
    )
}

async fn a_worker_downloads_its_inputs_and_uploads_its_results(db: TestDb) {
    let api = Api::start(&db.store).await;
    let input = b"id,name\n1,ada\n".repeat(1000);
    let id = job_with_input(&api, "in.csv", &input).await;
    let job = claim(&api).await;
    assert_eq!(job["id"], id.as_str());
    let files = job["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{job}");
    assert_eq!(files[0]["name"], "in.csv");
    assert_eq!(files[0]["size"], input.len());
    let url = files[0]["url"].as_str().unwrap();
    assert!(
        url.starts_with(&api.base),
        "an absolute URL of this API: {url}"
    );
    assert_eq!(download(&api, url).await, (StatusCode::OK, input.clone()));

    let output = b"converted".to_vec();
    let (status, file) = upload(&api, &result_path(&job, "out.txt"), &output).await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    let done = json!({"worker_id": "w", "lease_token": job["lease_token"], "result": {}});
    let (status, body) = api.post(&format!("/v1/jobs/{id}/complete"), done).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let late = upload(&api, &result_path(&job, "late.txt"), b"x").await;
    assert_problem(late.0, &late.1, StatusCode::CONFLICT, "lease-lost");

    let (_, view) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(view["result_files"].as_array().unwrap().len(), 1, "{view}");
    assert_eq!(view["result_files"][0]["sha256"], sha256(&output));
    assert_eq!(view["result_url"], file["url"]);
    let url = view["result_url"].as_str().unwrap();
    assert_eq!(download(&api, url).await, (StatusCode::OK, output));
    // The event stream shows the job as GET does, files included.
    let events = format!("/v1/jobs/{id}/events");
    let (_, _, stream) = api.raw(reqwest::Method::GET, &events, None).await;
    let data = stream.lines().find_map(|l| l.strip_prefix("data: "));
    let event: Value = serde_json::from_str(data.unwrap_or_default()).unwrap();
    assert_eq!(event["result_url"], view["result_url"], "{stream}");
    assert_eq!(event["result_files"], view["result_files"], "{stream}");
    let (_, listed) = api.get("/v1/jobs").await;
    assert_eq!(listed["items"][0]["result_url"], view["result_url"]);
    let (_, inputs) = api.get(&format!("/v1/jobs/{id}/files")).await;
    assert_eq!(inputs["items"][0]["name"], "in.csv");

    let other = api.create(json!({"kind": "plain"})).await;
    let (_, plain) = api.get(&format!("/v1/jobs/{other}")).await;
    assert_eq!(plain["result_files"], json!([]));
    assert_eq!(plain["result_url"], Value::Null);
}

async fn another_tenant_gets_404_for_every_file(db: TestDb) {
    // Keys first: the api reads at start whether any exists.
    let (acme, rival) = (
        db.store.create_api_key("acme"),
        db.store.create_api_key("rival"),
    );
    let (acme, rival) = (acme.await.unwrap().secret, rival.await.unwrap().secret);
    let api = Api::start(&db.store).await;
    let (acme, rival) = (api.as_key(&acme), api.as_key(&rival));
    let id = job_with_input(&acme, "in.bin", b"secret").await;
    let job = claim(&acme).await;
    let (status, _) = upload(&acme, &result_path(&job, "out.bin"), b"result").await;
    assert_eq!(status, StatusCode::CREATED);

    for path in [
        format!("/v1/jobs/{id}/files/in.bin"),
        format!("/v1/jobs/{id}/result-files/out.bin"),
        format!("/v1/jobs/{id}/files"),
        format!("/v1/jobs/{id}/result-files"),
    ] {
        let (status, body) = rival.get(&path).await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
        assert_eq!(acme.get(&path).await.0, StatusCode::OK, "{path}");
    }
    let (status, body) = upload(&rival, &format!("/v1/jobs/{id}/files?name=x"), b"x").await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    let (status, body) = upload(&rival, &result_path(&job, "x"), b"x").await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    let (_, staged) = upload(&acme, "/v1/files?name=mine", b"mine").await;
    let (status, body) = rival
        .post("/v1/jobs", json!({"kind": "k", "files": [staged["id"]]}))
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
    assert_eq!(body["errors"][0]["field"], "files[0]");
}

async fn uploads_are_bounded_named_and_owned(db: TestDb) {
    let config = ApiConfig {
        file_limit: 1024,
        workers: Some(1),
        ..Default::default()
    };
    let api = Api::start_with(&db.store, config).await;
    let (status, body) = upload(&api, "/v1/files?name=big", &[7; 1025]).await;
    assert_problem(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    );
    let (status, _) = upload(&api, "/v1/files?name=fits", &[7; 1024]).await;
    assert_eq!(status, StatusCode::CREATED);
    for path in [
        "/v1/files",
        "/v1/files?name=",
        "/v1/files?name=a%2Fb",
        "/v1/files?name=.x",
    ] {
        let (status, body) = upload(&api, path, b"x").await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
        assert_eq!(body["errors"][0]["field"], "name", "{path}: {body}");
    }
    let (status, body) = upload(&api, "/v1/files?name=a&color=red", b"x").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed-request");

    let id = job_with_input(&api, "in", b"1").await;
    let (status, body) = upload(&api, &format!("/v1/jobs/{id}/files?name=in"), b"2").await;
    assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, _) = upload(&api, &format!("/v1/jobs/{id}/files?name=more"), b"2").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = api.get(&format!("/v1/jobs/{id}/files/nope")).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    let (status, body) = api.get("/v1/jobs/not-a-job/files/in").await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");

    let job = claim(&api).await;
    let names: Vec<&str> = job["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["in", "more"]);
    let stale = result_path(&job, "out").replace(
        job["lease_token"].as_str().unwrap(),
        "00000000-0000-4000-8000-000000000000",
    );
    let (status, body) = upload(&api, &stale, b"x").await;
    assert_problem(status, &body, StatusCode::CONFLICT, "lease-lost");
    let missing = format!("/v1/jobs/{id}/result-files?name=out&worker_id=w");
    let (status, body) = upload(&api, &missing, b"x").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
    assert_eq!(body["errors"][0]["field"], "lease_token");

    let batch = json!({"jobs": [{"kind": "k", "files": []}]});
    let (status, body) = api.post("/v1/jobs/batch", batch).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
    assert_eq!(body["errors"][0]["field"], "jobs[0].files");
}
