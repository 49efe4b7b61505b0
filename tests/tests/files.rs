//! Job files through real `jobs-api` processes: a remote worker (this test, over HTTP)
//! finds its input's URL in the claim, downloads it, uploads a result file and completes;
//! the client downloads the result from the job view's `result_url`; another tenant gets
//! 404 for both; an upload over the limit gets 413; deleting the job removes its files
//! from the storage. Once on a directory, once on S3 (moto at `JOBS_TEST_S3_URL`).

use std::{path::Path, time::Duration};

use blackbox_tests::{free_port, run, spawn_with_env, stdout, wait_until};
use serde_json::{Value, json};

const LIMIT: usize = 64 * 1024;

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Vec<u8>) {
        let response = request.bearer_auth(&self.key).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let (status, body) = self.send(request).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let request = self.http.post(format!("{}{path}", self.base)).json(&body);
        self.json(request).await
    }

    async fn upload(&self, path: &str, bytes: Vec<u8>) -> (u16, Value) {
        let request = self.http.post(format!("{}{path}", self.base)).body(bytes);
        self.json(request).await
    }

    async fn get(&self, url: &str) -> (u16, Vec<u8>) {
        self.send(self.http.get(url)).await
    }
}

fn key(database_url: &str, tenant: &str) -> String {
    let created = run(
        "jobs-api",
        database_url,
        &["keys", "create", "--tenant", tenant],
    );
    assert!(created.status.success());
    stdout(&created).trim().to_owned()
}

/// The whole life of a job's files against an api started with `storage_args`;
/// `objects` counts what the storage holds.
async fn files_travel_with_their_job(
    label: &str,
    storage_args: &[&str],
    env: &[(&str, &str)],
    objects: impl AsyncFn() -> usize,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
    let migrated = run("jobs-api", &url, &["migrate", "up"]);
    assert!(migrated.status.success());
    let (acme, rival) = (key(&url, "acme"), key(&url, "rival"));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let limit = LIMIT.to_string();
    let mut args = vec![
        "--listen",
        &listen,
        "--embedded-worker",
        "off",
        "--file-limit",
        &limit,
        "--files-sweep-interval-secs",
        "1",
    ];
    args.extend_from_slice(storage_args);
    let _api = spawn_with_env("jobs-api", label, &url, &args, env);
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    wait_until("the api to be ready", Duration::from_secs(20), async || {
        let ready = http.get(format!("{base}/readyz")).send().await;
        ready.is_ok_and(|r| r.status().is_success())
    })
    .await;
    let client = Client {
        http: http.clone(),
        base: base.clone(),
        key: acme,
    };
    let rival = Client {
        key: rival,
        ..Client {
            http,
            base,
            key: String::new(),
        }
    };

    let input: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
    let (status, staged) = client
        .upload("/v1/files?name=input.bin", input.clone())
        .await;
    assert_eq!(status, 201, "{staged}");
    let (status, created) = client
        .post(
            "/v1/jobs",
            json!({"kind": "render", "files": [staged["id"]]}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    // The remote worker.
    let claim = json!({"worker_id": "remote-1", "wait_seconds": 5});
    let (status, claimed) = client.post("/v1/claims", claim).await;
    assert_eq!(status, 200, "{claimed}");
    let job = &claimed["jobs"][0];
    let input_url = job["files"][0]["url"].as_str().unwrap();
    assert_eq!(client.get(input_url).await, (200, input.clone()));
    assert_eq!(
        rival.get(input_url).await.0,
        404,
        "another tenant sees no input"
    );
    let token = job["lease_token"].as_str().unwrap();
    let result = b"rendered".repeat(100);
    let path =
        format!("/v1/jobs/{id}/result-files?name=out.txt&worker_id=remote-1&lease_token={token}");
    let (status, file) = client.upload(&path, result.clone()).await;
    assert_eq!(status, 201, "{file}");
    let too_big = path.replace("out.txt", "big.bin");
    let (status, problem) = client.upload(&too_big, vec![0; LIMIT + 1]).await;
    assert_eq!(status, 413, "{problem}");
    let done = json!({"worker_id": "remote-1", "lease_token": token, "result": {"ok": true}});
    let (status, body) = client.post(&format!("/v1/jobs/{id}/complete"), done).await;
    assert_eq!(status, 200, "{body}");

    // The client.
    let view_url = format!("{}/v1/jobs/{id}", client.base);
    let (_, view) = client.get(&view_url).await;
    let view: Value = serde_json::from_slice(&view).unwrap();
    let result_url = view["result_url"].as_str().unwrap();
    assert_eq!(client.get(result_url).await, (200, result));
    assert_eq!(
        rival.get(result_url).await.0,
        404,
        "another tenant sees no result"
    );
    assert_eq!(objects().await, 2, "the input and the result are stored");

    // Deleting the job takes its files with it.
    let delete = json!({"action": "delete", "filter": {"kind": "render"}});
    let (status, body) = client.post("/v1/jobs/bulk", delete).await;
    assert_eq!(status, 200, "{body}");
    wait_until(
        "the files to be swept",
        Duration::from_secs(20),
        async || objects().await == 0,
    )
    .await;
    assert_eq!(client.get(result_url).await.0, 404);
}

/// Files under `dir`, at any depth.
fn files_in(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type().is_ok_and(|t| t.is_dir()) {
            true => files_in(&e.path()),
            false => 1,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    let arg = files.display().to_string();
    let storage = ["--files-dir", arg.as_str()];
    files_travel_with_their_job("files-dir", &storage, &[], async || files_in(&files)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_s3_tests),
    ignore = "S3 half NOT RUN: JOBS_TEST_S3_URL is not set"
)]
async fn on_s3() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let endpoint = std::env::var("JOBS_TEST_S3_URL").unwrap();
    let bucket = format!("jobs-blackbox-{}", uuid::Uuid::new_v4().simple());
    let http = reqwest::Client::new();
    // moto creates buckets on an unsigned PUT and lists them on an unsigned GET.
    let made = http
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success());
    let files_url = format!("s3://{bucket}/deployment/files");
    let storage = ["--files-url", files_url.as_str()];
    let env = [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let list = format!("{endpoint}/{bucket}?list-type=2");
    let objects = async || {
        let listing = http.get(&list).send().await.unwrap().text().await.unwrap();
        listing.matches("<Key>deployment/files/").count()
    };
    files_travel_with_their_job("files-s3", &storage, &env, objects).await;
}
