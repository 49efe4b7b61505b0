//! `jobs-api` as a real process on the embedded SQLite default: it migrates, serves, runs
//! posted jobs with its embedded worker, enforces API keys made by `keys create`, and
//! exits 0 on SIGTERM.

use std::time::Duration;

use blackbox_tests::{free_port, run, spawn, stdout, terminate};
use serde_json::{Value, json};

async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the api never became ready");
}

#[test]
fn serve_options_on_both_sides_of_serve_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
    let out = run("jobs-api", &url, &["--listen", "127.0.0.1:0", "serve"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("after `serve`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_default_serves_runs_jobs_and_enforces_keys() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    // The other black-box tests serve with `jobs-api --listen`; this one names `serve`.
    let mut api = spawn(
        "jobs-api",
        "api-process",
        &url,
        &["serve", "--listen", &listen],
    );
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;

    let done: Value = http
        .post(format!("{base}/v1/jobs?wait=10"))
        .json(&json!({"kind": "echo", "args": {"hello": "world"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        done["state"], "completed",
        "the embedded worker ran it: {done}"
    );
    assert_eq!(done["result"], json!({"hello": "world"}));

    let created = run("jobs-api", &url, &["keys", "create", "--tenant", "acme"]);
    assert!(created.status.success());
    let key = stdout(&created).trim().to_owned();
    assert!(key.starts_with("jk_"));
    tokio::time::sleep(Duration::from_millis(2_100)).await; // the api re-reads keys every 2 s
    let anonymous = http.get(format!("{base}/v1/jobs")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let listed: Value = http
        .get(format!("{base}/v1/jobs"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed["items"].as_array().unwrap().is_empty(),
        "acme does not see the default tenant's job"
    );

    terminate(&api);
    let status = api.wait().unwrap();
    assert!(status.success(), "SIGTERM ends the api cleanly: {status}");
}
