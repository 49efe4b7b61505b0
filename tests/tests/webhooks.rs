//! Webhooks end to end with real processes: `jobs-api` (its embedded worker delivers)
//! and a receiver in this test, a real HTTP server. The receiver sees each subscribed
//! event once per transition, checks every signature with its own HMAC, answers 500 to
//! the first delivery and sees the retry carry the same `webhook-id`; unsubscribed events
//! and other tenants' jobs send nothing; a disallowed host is refused at subscription;
//! another tenant can neither see nor delete a subscription. Both backends.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::{Engine, engine::general_purpose::STANDARD};
use blackbox_tests::{create_key, start_api, wait_until};
use hmac::{Hmac, Mac};
use jobs_store::testing::TestDb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

impl Received {
    fn event(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Receiver {
    seen: Mutex<Vec<Received>>,
}

fn header(req: &HttpRequest, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Records every request; the very first one gets a 500.
async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<Receiver>) -> HttpResponse {
    let mut seen = state.seen.lock().unwrap();
    seen.push(Received {
        id: header(&req, "webhook-id"),
        timestamp: header(&req, "webhook-timestamp"),
        signature: header(&req, "webhook-signature"),
        body: body.to_vec(),
    });
    match seen.len() {
        1 => HttpResponse::InternalServerError().body("not yet"),
        _ => HttpResponse::NoContent().finish(),
    }
}

/// Starts the receiver on a free port: its URL and what it saw.
fn start_receiver() -> (String, Arc<Receiver>) {
    let state = web::Data::new(Receiver::default());
    let shared = state.clone().into_inner();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hook",
        listener.local_addr().unwrap().port()
    );
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/hook", web::post().to(receive))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (url, shared)
}

/// The signature as the Standard Webhooks specification defines it, computed here.
fn expected_signature(secret: &str, r: &Received) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(r.id.as_bytes());
    mac.update(b".");
    mac.update(r.timestamp.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Creates a job and waits (up to 10 s) for it to end; returns its id.
    async fn run_job(&self, kind: &str, args: Value) -> String {
        let (status, job) = self
            .post("/v1/jobs?wait=10", json!({"kind": kind, "args": args}))
            .await;
        assert!(status.is_success(), "{job}");
        job["id"].as_str().unwrap().to_owned()
    }
}

async fn webhooks_end_to_end(db: TestDb, label: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = db.url();
    let (key_a, key_b) = (create_key(&url, "a"), create_key(&url, "b"));
    let args = ["--embedded-worker", "on", "--http-allow-host", "127.0.0.1"];
    let (_api, base) = start_api(label, &url, &args).await;
    let http = reqwest::Client::new();
    let a = Client {
        http: http.clone(),
        base: base.clone(),
        key: key_a,
    };
    let b = Client {
        http,
        base,
        key: key_b,
    };
    let (hook_url, receiver) = start_receiver();

    // Refused at subscription, naming the field.
    let (status, problem) = a
        .post(
            "/v1/webhooks",
            json!({"url": "http://evil.example/hook", "events": ["job.completed"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "url", "{problem}");
    let (status, problem) = a
        .post(
            "/v1/webhooks",
            json!({"url": hook_url, "events": ["job.completed", "job.completed"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "events[1]", "{problem}");

    let subscribed = [
        "job.created",
        "job.started",
        "job.completed",
        "job.failed",
        "job.retrying",
    ];
    let (status, created) = a
        .post(
            "/v1/webhooks",
            json!({"url": hook_url, "events": subscribed}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    let webhook_id = created["id"].as_str().unwrap().to_owned();

    // Tenant b neither sees nor deletes nor tests it; tenant a lists it without secret.
    let (_, listed) = b.get("/v1/webhooks").await;
    assert_eq!(listed["items"], json!([]), "{listed}");
    let (status, _) = b.delete(&format!("/v1/webhooks/{webhook_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = b
        .post(&format!("/v1/webhooks/{webhook_id}/test"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = a.get("/v1/webhooks").await;
    assert_eq!(listed["items"][0]["id"], webhook_id.as_str(), "{listed}");
    assert!(listed["items"][0].get("secret").is_none(), "{listed}");

    // Transitions: each job's expected events, in order.
    let echo = a.run_job("echo", json!({})).await;
    let retried = a.run_job("fail", json!({"times": 1})).await;
    let failed = a
        .run_job("fail", json!({"times": 1, "permanent": true}))
        .await;
    // Progress and cancellation are not subscribed; tenant b subscribes to nothing.
    let slept = a.run_job("sleep", json!({"ms": 300})).await;
    let (_, later) = a
        .post("/v1/jobs", json!({"kind": "echo", "delay_ms": 3_600_000}))
        .await;
    let later = later["id"].as_str().unwrap().to_owned();
    let (status, _) = a.delete(&format!("/v1/jobs/{later}")).await;
    assert_eq!(status, StatusCode::OK);
    b.run_job("echo", json!({})).await;
    let expected: BTreeMap<String, Vec<&str>> = [
        (echo, vec!["job.created", "job.started", "job.completed"]),
        (
            retried,
            vec![
                "job.created",
                "job.started",
                "job.retrying",
                "job.started",
                "job.completed",
            ],
        ),
        (failed, vec!["job.created", "job.started", "job.failed"]),
        (slept, vec!["job.created", "job.started", "job.completed"]),
        (later, vec!["job.created"]),
    ]
    .into_iter()
    .collect();
    let total: usize = expected.values().map(Vec::len).sum();

    // Every delivery succeeds in the end: one more request than events (the first got 500).
    wait_until("every delivery", Duration::from_secs(60), async || {
        let seen = receiver.seen.lock().unwrap();
        let distinct: BTreeSet<&String> = seen.iter().map(|r| &r.id).collect();
        distinct.len() >= total && seen.len() > total
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await; // anything extra would show now
    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), total + 1, "one retry only: {seen:#?}");
    let retry = seen[1..].iter().find(|r| r.id == seen[0].id);
    let retry = retry.expect("the first delivery, answered 500, is retried with its webhook-id");
    assert_eq!(retry.body, seen[0].body, "the same event");

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // Per job, the events (as a sorted list: two may share a millisecond).
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for r in &seen {
        assert_eq!(
            r.signature,
            expected_signature(&secret, r),
            "signature of {r:?}"
        );
        let sent_at: i64 = r.timestamp.parse().unwrap();
        assert!((now - sent_at).abs() < 300, "a current timestamp: {r:?}");
        if !ids.insert(r.id.clone()) {
            continue; // the retry, checked above
        }
        let event = r.event();
        let data = &event["data"];
        assert_ne!(data["kind"], "webhook", "deliveries emit nothing: {event}");
        let job = data["id"].as_str().unwrap().to_owned();
        let kind = event["type"].as_str().unwrap().to_owned();
        got.entry(job).or_default().push(kind);
        if event["type"] == "job.failed" || event["type"] == "job.retrying" {
            assert_eq!(data["error"]["kind"], "fail", "{event}");
        }
    }
    got.values_mut().for_each(|events| events.sort());
    let expected: BTreeMap<String, Vec<String>> = expected
        .into_iter()
        .map(|(job, events)| {
            let mut events: Vec<String> = events.into_iter().map(str::to_owned).collect();
            events.sort();
            (job, events)
        })
        .collect();
    assert_eq!(got, expected);

    // The delivery log is the job list; each delivery's id is its webhook-id.
    let (_, log) = a.get("/v1/jobs?kind=webhook&limit=100").await;
    let log_ids: BTreeSet<String> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(log_ids, ids);

    // A test event, then unsubscribing: later jobs send nothing.
    let (status, test) = a
        .post(&format!("/v1/webhooks/{webhook_id}/test"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{test}");
    let test_id = test["id"].as_str().unwrap().to_owned();
    wait_until("the test event", Duration::from_secs(30), async || {
        receiver
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.id == test_id)
    })
    .await;
    let tested = receiver
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.id == test_id)
        .cloned()
        .unwrap();
    assert_eq!(tested.event()["type"], "webhook.test");
    assert_eq!(tested.signature, expected_signature(&secret, &tested));
    let (status, _) = a.delete(&format!("/v1/webhooks/{webhook_id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let before = receiver.seen.lock().unwrap().len();
    a.run_job("echo", json!({})).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.seen.lock().unwrap().len(), before, "unsubscribed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_webhooks_deliver_each_subscribed_event_once() {
    webhooks_end_to_end(TestDb::sqlite().await, "webhooks-sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_postgres_tests),
    ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
)]
async fn postgres_webhooks_deliver_each_subscribed_event_once() {
    webhooks_end_to_end(TestDb::postgres().await, "webhooks-postgres").await;
}
