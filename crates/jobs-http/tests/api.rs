//! The HTTP API over a real socket, each body on SQLite and PostgreSQL: every endpoint's
//! success path and each error class with its status and problem document.

mod common;

use std::time::Duration;

use common::{Api, assert_problem};
use jobs_store::{backend_tests, migrate_up, testing::TestDb};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

backend_tests!(
    create_get_list_and_queues,
    a_repeated_unique_key_returns_the_first_job,
    batch_is_all_or_nothing_and_names_the_item,
    a_batch_preferring_return_minimal_answers_with_ids_alone,
    wait_answers_with_the_finished_job_or_202,
    cancel_and_retry_follow_the_state_machine,
    events_stream_each_change_until_the_job_ends,
    an_idle_event_stream_sends_keep_alives,
    event_streams_are_limited_per_process,
    remote_worker_claims_heartbeats_completes_and_fails,
    bad_requests_get_precise_problems,
    tenants_only_see_their_own_jobs,
    readyz_is_503_until_migrations_are_applied,
    health_metrics_openapi_and_trace_ids,
);

/// A remote worker in the test: claims the next job and completes it with its args.
async fn work_one(api: &Api, worker: &str) -> Value {
    let claim = json!({"worker_id": worker, "wait_seconds": 10});
    let (status, claimed) = api.post("/v1/claims", claim).await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    let job = claimed["jobs"][0].clone();
    let id = job["id"].as_str().expect("a job was claimed");
    let done = json!({"worker_id": worker, "lease_token": job["lease_token"], "result": {"echo": job["args"]}});
    let (status, body) = api.post(&format!("/v1/jobs/{id}/complete"), done).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("completed"))
    );
    job
}

async fn create_get_list_and_queues(db: TestDb) {
    let api = Api::start(&db.store).await;
    let (status, created) = api.post("/v1/jobs", json!({"kind": "email", "args": {"to": "a@b"}, "priority": 7, "metadata": {"team": "x"}})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (created["state"].as_str(), created["duplicate"].as_bool()),
        (Some("pending"), Some(false))
    );
    assert!(created["created_at"].is_string());
    let id = created["id"].as_str().unwrap();

    let (status, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (job["kind"].as_str(), job["priority"].as_i64()),
        (Some("email"), Some(7))
    );
    assert_eq!(job["args"], json!({"to": "a@b"}));
    assert_eq!(
        (job["attempt"].as_i64(), job["max_attempts"].as_i64()),
        (Some(0), Some(20))
    );
    assert_eq!(job["progress"], 0.0);
    assert!(job["errors"].as_array().unwrap().is_empty());

    let later = api
        .create(json!({"kind": "report", "queue": "slow", "delay_ms": 60_000}))
        .await;
    let (_, scheduled) = api.get(&format!("/v1/jobs/{later}")).await;
    assert_eq!(scheduled["scheduled"], true);
    for _ in 0..3 {
        api.create(json!({"kind": "email"})).await;
    }

    let (status, page) = api.get("/v1/jobs?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let mut seen: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    let mut cursor = page["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let (_, page) = api.get(&format!("/v1/jobs?limit=2&cursor={c}")).await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned()),
        );
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen.last().map(String::as_str), Some(id), "newest first");
    let (_, emails) = api.get("/v1/jobs?kind=email&state=pending&offset=1").await;
    assert_eq!(emails["items"].as_array().unwrap().len(), 3);
    let (_, slow) = api
        .get("/v1/jobs?queue=slow&created_after=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(slow["items"].as_array().unwrap().len(), 1);

    let (status, queues) = api.get("/v1/queues").await;
    assert_eq!(status, StatusCode::OK);
    let default = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "default")
        .unwrap();
    assert_eq!(default["counts"]["pending"], 4);
    assert_eq!(default["counts"]["running"], 0);
}

async fn a_repeated_unique_key_returns_the_first_job(db: TestDb) {
    let api = Api::start(&db.store).await;
    let body = json!({"kind": "charge", "unique_key": "order-7"});
    let first = api.create(body.clone()).await;
    let (status, again) = api.post("/v1/jobs", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (again["id"].as_str(), again["duplicate"].as_bool()),
        (Some(first.as_str()), Some(true))
    );
}

async fn batch_is_all_or_nothing_and_names_the_item(db: TestDb) {
    let api = Api::start(&db.store).await;
    let jobs: Vec<Value> = (0..500)
        .map(|i| json!({"kind": "bulk", "args": {"i": i}}))
        .collect();
    let (status, body) = api.post("/v1/jobs/batch", json!({"jobs": jobs})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["jobs"].as_array().unwrap().len(), 500);
    assert_eq!(body["jobs"][499]["args"], json!({"i": 499}));

    let (status, body) = api
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "ok"}, {"kind": "ok", "priority": 99}]}),
        )
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
    assert_eq!(body["errors"][0]["field"], "jobs[1].priority");
    let (status, body) = api
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "ok"}, {"kind": 5}]}),
        )
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed-request");
    assert_eq!(body["errors"][0]["field"], "jobs[1].kind");
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"kind": "k"})).collect();
    let big = Api::start_with(
        &db.store,
        jobs_http::ApiConfig {
            body_limit: 1 << 20,
            workers: Some(1),
            ..Default::default()
        },
    )
    .await;
    let (status, body) = big.post("/v1/jobs/batch", json!({"jobs": too_many})).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
    let (_, page) = api.get("/v1/jobs?kind=ok").await;
    assert!(
        page["items"].as_array().unwrap().is_empty(),
        "failed batches left nothing"
    );
}

/// `Prefer: return=minimal` (RFC 7240): the batch's ids in the order sent, with its
/// callback's, and `Preference-Applied`; other or malformed preferences get every job.
async fn a_batch_preferring_return_minimal_answers_with_ids_alone(db: TestDb) {
    let api = Api::start(&db.store).await;
    let batch = json!({"jobs": [{"kind": "a", "args": {"i": 0}}, {"kind": "b", "args": {"i": 1}}], "callback": {"kind": "c"}});
    let send = |prefer: &'static str| {
        let request = api
            .request(Method::POST, "/v1/jobs/batch")
            .header("prefer", prefer)
            .json(&batch);
        async move {
            let response = request.send().await.unwrap();
            let applied = response.headers().get("preference-applied").cloned();
            let status = response.status();
            (status, applied, response.json::<Value>().await.unwrap())
        }
    };
    for prefer in ["return=minimal", "respond-async, RETURN = \"minimal\"; x=1"] {
        let (status, applied, body) = send(prefer).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{prefer}: {body}");
        assert_eq!(applied.unwrap(), "return=minimal", "{prefer}");
        let jobs = body["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 2, "{body}");
        for (i, item) in jobs.iter().enumerate() {
            let keys: Vec<&str> = item
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, ["duplicate", "id", "replaced"], "{item}");
            let id = item["id"].as_str().unwrap();
            let (status, job) = api.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!((status, &job["args"]), (StatusCode::OK, &json!({"i": i})));
        }
        let callback = body["callback"]["id"].as_str().unwrap();
        let (_, job) = api.get(&format!("/v1/jobs/{callback}")).await;
        assert_eq!(
            (job["kind"].as_str(), job["parents"].as_u64()),
            (Some("c"), Some(2))
        );
    }
    for prefer in [
        "return=representation",
        "return",
        "minimal",
        "return=minimalist",
    ] {
        let (status, applied, body) = send(prefer).await;
        assert_eq!((status, applied), (StatusCode::ACCEPTED, None), "{prefer}");
        assert_eq!(body["jobs"][1]["args"], json!({"i": 1}), "{prefer}: {body}");
        assert_eq!(body["callback"]["kind"], "c", "{prefer}: {body}");
    }
}

async fn wait_answers_with_the_finished_job_or_202(db: TestDb) {
    let api = Api::start(&db.store).await;
    let (status, body) = api
        .post(
            "/v1/jobs?wait=0.3",
            json!({"kind": "nobody_runs_this", "queue": "idle"}),
        )
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::ACCEPTED, Some("pending"))
    );

    let worker = {
        let api = api.clone();
        tokio::spawn(async move { work_one(&api, "remote-1").await })
    };
    let (status, body) = api
        .post(
            "/v1/jobs?wait=10",
            json!({"kind": "echo", "args": {"n": 1}}),
        )
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("completed")),
        "{body}"
    );
    assert_eq!(body["result"], json!({"echo": {"n": 1}}));
    worker.await.unwrap();

    let id = api.create(json!({"kind": "echo"})).await;
    let (status, body) = api.get(&format!("/v1/jobs/{id}?wait=0.2")).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("pending")),
        "a GET that waits in vain still answers"
    );
}

async fn cancel_and_retry_follow_the_state_machine(db: TestDb) {
    let api = Api::start(&db.store).await;
    let id = api.create(json!({"kind": "k"})).await;
    let (status, body) = api.delete(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (status, body) = api.delete(&format!("/v1/jobs/{id}")).await;
    assert_problem(status, &body, StatusCode::CONFLICT, "illegal-transition");
    assert_eq!(body["state"], "cancelled");

    let (status, body) = api.post(&format!("/v1/jobs/{id}/retry"), json!({})).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("pending"))
    );
    let (status, body) = api.post(&format!("/v1/jobs/{id}/retry"), json!({})).await;
    assert_problem(status, &body, StatusCode::CONFLICT, "illegal-transition");
    assert_eq!(body["state"], "pending");

    for missing in ["01a21413-792a-75c8-a57e-f7c157450ee5", "not-a-uuid"] {
        let (status, body) = api.delete(&format!("/v1/jobs/{missing}")).await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
        let (status, body) = api.get(&format!("/v1/jobs/{missing}")).await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
        let (status, body) = api
            .post(&format!("/v1/jobs/{missing}/retry"), json!({}))
            .await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    }
}

async fn events_stream_each_change_until_the_job_ends(db: TestDb) {
    let api = Api::start(&db.store).await;
    let id = api.create(json!({"kind": "k"})).await;
    let stream = api
        .http
        .get(format!("{}/v1/jobs/{id}/events", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let reader = tokio::spawn(async move { stream.text().await.unwrap() });

    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, claimed) = api.post("/v1/claims", json!({"worker_id": "w"})).await;
    assert_eq!(claimed["jobs"][0]["id"], id.as_str());
    let token = &claimed["jobs"][0]["lease_token"];
    tokio::time::sleep(Duration::from_millis(400)).await;
    api.post(
        &format!("/v1/jobs/{id}/heartbeat"),
        json!({"worker_id": "w", "lease_token": token, "progress": 0.5, "stage": "half"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    api.post(
        &format!("/v1/jobs/{id}/complete"),
        json!({"worker_id": "w", "lease_token": token, "result": 1}),
    )
    .await;

    let text = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the stream ends with the job")
        .unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let states: Vec<&str> = events
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"pending"));
    assert_eq!(states.last(), Some(&"completed"));
    assert!(states.contains(&"running"));
    assert!(
        events
            .iter()
            .any(|e| e["progress"] == 0.5 && e["stage"] == "half"),
        "progress is an event: {states:?}"
    );
    assert!(text.contains("event: job"));
}

async fn an_idle_event_stream_sends_keep_alives(db: TestDb) {
    let config = jobs_http::ApiConfig {
        workers: Some(1),
        event_keep_alive: Duration::from_millis(200),
        ..Default::default()
    };
    let api = Api::start_with(&db.store, config).await;
    let id = api.create(json!({"kind": "k"})).await;
    let url = format!("{}/v1/jobs/{id}/events", api.base);
    let mut stream = api.http.get(url).send().await.unwrap();
    let mut text = String::new();
    let read = async {
        while !text.contains("\n: keep-alive\n\n") {
            let chunk = stream
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(3), read)
        .await
        .expect("a keep-alive within the interval");
    assert!(text.starts_with("event: job\n"), "{text}");
}

async fn event_streams_are_limited_per_process(db: TestDb) {
    let config = jobs_http::ApiConfig {
        workers: Some(1),
        max_event_streams: 1,
        event_keep_alive: Duration::from_millis(100),
        ..Default::default()
    };
    let api = Api::start_with(&db.store, config).await;
    let id = api.create(json!({"kind": "k"})).await;
    let open = || {
        api.http
            .get(format!("{}/v1/jobs/{id}/events", api.base))
            .send()
    };
    let first = open().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = open().await.unwrap();
    assert_eq!(second.headers()["retry-after"], "1");
    let (status, body) = (second.status(), second.json::<Value>().await.unwrap());
    assert_problem(
        status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-streams",
    );

    drop(first);
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let again = open().await.unwrap();
        if again.status() == StatusCode::OK {
            break;
        }
        assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            Instant::now() < until,
            "the dropped stream's slot comes back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn remote_worker_claims_heartbeats_completes_and_fails(db: TestDb) {
    let api = Api::start(&db.store).await;
    let first = api.create(json!({"kind": "resize", "priority": 9})).await;
    let second = api.create(json!({"kind": "resize"})).await;

    let (status, claimed) = api
        .post(
            "/v1/claims",
            json!({"worker_id": "w1", "kinds": ["resize"], "max_jobs": 1, "lease_seconds": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        claimed["jobs"][0]["id"],
        first.as_str(),
        "highest priority first"
    );
    assert_eq!(claimed["jobs"][0]["state"], "running");
    let token = claimed["jobs"][0]["lease_token"].clone();
    assert!(
        token.is_string(),
        "the claim returns the attempt's lease token"
    );
    let (_, seen) = api.get(&format!("/v1/jobs/{first}")).await;
    assert!(
        seen.get("lease_token").is_none(),
        "readers are never told the token"
    );

    let beat =
        json!({"worker_id": "w1", "lease_token": token, "progress": 0.4, "stage": "thumbnails"});
    let (status, reply) = api.post(&format!("/v1/jobs/{first}/heartbeat"), beat).await;
    assert_eq!(
        (status, reply["cancel_requested"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let (_, seen) = api.get(&format!("/v1/jobs/{first}")).await;
    assert_eq!(
        (seen["progress"].as_f64(), seen["stage"].as_str()),
        (Some(0.4), Some("thumbnails"))
    );

    // A stale attempt: the same worker id, another token.
    let stale = json!({"worker_id": "w1", "lease_token": uuid::Uuid::new_v4()});
    let (status, body) = api
        .post(&format!("/v1/jobs/{first}/complete"), stale.clone())
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "lease-lost");
    let (status, body) = api
        .post(&format!("/v1/jobs/{first}/heartbeat"), stale)
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "lease-lost");

    let partial = json!({"worker_id": "w1", "lease_token": token, "result": {"done": 3}, "item_errors": [{"item": 2}]});
    let (status, body) = api
        .post(&format!("/v1/jobs/{first}/complete"), partial)
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("partial"))
    );
    let (status, body) = api
        .post(
            &format!("/v1/jobs/{first}/complete"),
            json!({"worker_id": "w1", "lease_token": token}),
        )
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "lease-lost");

    let (_, claimed) = api.post("/v1/claims", json!({"worker_id": "w2"})).await;
    assert_eq!(claimed["jobs"][0]["id"], second.as_str());
    let token = &claimed["jobs"][0]["lease_token"];
    let failure = json!({"worker_id": "w2", "lease_token": token, "error": {"kind": "bad_image", "message": "not a PNG"}, "retryable": false});
    let (status, body) = api.post(&format!("/v1/jobs/{second}/fail"), failure).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("failed"))
    );
    let (_, failed) = api.get(&format!("/v1/jobs/{second}")).await;
    assert_eq!(failed["errors"][0]["kind"], "bad_image");

    // Cancellation through DELETE is seen in the heartbeat answer.
    let third = api.create(json!({"kind": "resize"})).await;
    let (_, claimed) = api.post("/v1/claims", json!({"worker_id": "w3"})).await;
    let token = &claimed["jobs"][0]["lease_token"];
    let (status, body) = api.delete(&format!("/v1/jobs/{third}")).await;
    assert_eq!(
        (
            status,
            body["state"].as_str(),
            body["cancel_requested"].as_bool()
        ),
        (StatusCode::OK, Some("running"), Some(true))
    );
    let (_, reply) = api
        .post(
            &format!("/v1/jobs/{third}/heartbeat"),
            json!({"worker_id": "w3", "lease_token": token}),
        )
        .await;
    assert_eq!(reply["cancel_requested"], true);
    let stop = json!({"worker_id": "w3", "lease_token": token, "error": {"kind": "cancelled", "message": "stopped"}});
    let (_, body) = api.post(&format!("/v1/jobs/{third}/fail"), stop).await;
    assert_eq!(body["state"], "cancelled");

    // Long-poll: a claim waits for a job that arrives meanwhile.
    let started = Instant::now();
    let poller = {
        let api = api.clone();
        tokio::spawn(async move {
            api.post("/v1/claims", json!({"worker_id": "w4", "wait_seconds": 5}))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fourth = api.create(json!({"kind": "resize"})).await;
    let (status, claimed) = poller.await.unwrap();
    assert_eq!(
        (status, claimed["jobs"][0]["id"].as_str()),
        (StatusCode::OK, Some(fourth.as_str()))
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "woken, not timed out: {:?}",
        started.elapsed()
    );
    let (_, empty) = api
        .post(
            "/v1/claims",
            json!({"worker_id": "w5", "wait_seconds": 0.2}),
        )
        .await;
    assert!(empty["jobs"].as_array().unwrap().is_empty());
}

async fn bad_requests_get_precise_problems(db: TestDb) {
    let api = Api::start(&db.store).await;
    let send = |body: &'static str, content_type: &'static str| {
        let request = api
            .http
            .post(format!("{}/v1/jobs", api.base))
            .header("content-type", content_type)
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            let body: Value = response.json().await.unwrap();
            (status, content_type, body)
        }
    };
    let (status, content_type, body) = send("{\"kind\": ", "application/json").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed-request");
    assert_eq!(content_type, "application/problem+json");
    let (status, _, body) = send(
        "{\"kind\": \"k\", \"priority\": \"high\"}",
        "application/json",
    )
    .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed-request");
    assert_eq!(body["errors"][0]["field"], "priority");
    let (status, _, body) = send("{\"kind\": \"k\", \"colour\": 1}", "application/json").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed-request");
    assert_eq!(body["errors"][0]["field"], "colour");
    let (status, _, body) = send("kind=k", "application/x-www-form-urlencoded").await;
    assert_problem(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    );

    let (status, body) = api
        .post("/v1/jobs", json!({"kind": "k", "args": "x".repeat(70_000)}))
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    );
    let (status, body) = api
        .post(
            "/v1/jobs",
            json!({"kind": "", "priority": 11, "max_attempts": 0}),
        )
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["kind", "priority", "max_attempts"]);
    let (status, body) = api.get("/v1/jobs?limit=500").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
    let (status, body) = api.get("/v1/jobs?state=bogus").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed-request");
    assert_eq!(
        body["errors"][0]["field"], "state",
        "the parameter is named"
    );
    let (status, body) = api.get("/v1/jobs?created_after=x").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed-request");
    assert_eq!(body["errors"][0]["field"], "created_after");
    let (status, body) = api.get("/v1/jobs?cursor=zzz").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
    let (status, body) = api.delete("/healthz").await;
    assert_problem(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    );
    let allow = api
        .http
        .put(format!("{}/v1/jobs", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(allow.headers()["allow"], "GET, POST");
    let huge = format!(
        "/v1/jobs?cursor={}.01a21413-792a-75c8-a57e-f7c157450ee5",
        "9".repeat(38)
    );
    let (status, body) = api.get(&huge).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
    let (status, body) = api.get("/v1/jobs?offset=9223372036854775808").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
    let ended = api.create(json!({"kind": "k"})).await;
    api.delete(&format!("/v1/jobs/{ended}")).await;
    let (status, body) = api.get(&format!("/v1/jobs/{ended}?wait=1e20")).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "an absurd wait is capped, not a crash"
    );
    let (status, body) = api.get("/v1/nothing-here").await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    let (status, body) = api
        .post("/v1/claims", json!({"worker_id": "w", "max_jobs": 101}))
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
}

async fn tenants_only_see_their_own_jobs(db: TestDb) {
    let api = Api::start(&db.store).await;
    let a_key = db.store.create_api_key("acme").await.unwrap().secret;
    let b_key = db.store.create_api_key("globex").await.unwrap().secret;
    tokio::time::sleep(Duration::from_millis(2_100)).await; // the auth cache notices keys within 2 s
    let (a, b) = (api.as_key(&a_key), api.as_key(&b_key));

    let (status, body) = api.get("/v1/jobs").await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = api.as_key("jk_wrong").get("/v1/jobs").await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    let mine = a.create(json!({"kind": "k"})).await;
    let done = a.create(json!({"kind": "k"})).await;
    a.delete(&format!("/v1/jobs/{done}")).await;
    for path in [
        format!("/v1/jobs/{mine}"),
        format!("/v1/jobs/{mine}/events"),
    ] {
        let (status, body) = b.get(&path).await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    }
    let (status, _) = b.delete(&format!("/v1/jobs/{mine}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = b.post(&format!("/v1/jobs/{done}/retry"), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = b.get("/v1/jobs").await;
    assert!(listed["items"].as_array().unwrap().is_empty());
    let (_, claimed) = b.post("/v1/claims", json!({"worker_id": "b-worker"})).await;
    assert!(
        claimed["jobs"].as_array().unwrap().is_empty(),
        "b cannot claim a's jobs"
    );
    let (_, queues) = b.get("/v1/queues").await;
    assert!(queues["queues"].as_array().unwrap().is_empty());

    let (_, listed) = a.get("/v1/jobs").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let (_, claimed) = a.post("/v1/claims", json!({"worker_id": "a-worker"})).await;
    assert_eq!(claimed["jobs"][0]["id"], mine.as_str());
    let (status, _) = b
        .post(
            &format!("/v1/jobs/{mine}/complete"),
            json!({"worker_id": "a-worker", "lease_token": claimed["jobs"][0]["lease_token"]}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "b cannot complete a's job");
}

async fn readyz_is_503_until_migrations_are_applied(db: TestDb) {
    let empty = db.empty_twin().await;
    let api = Api::start(&empty.store).await;
    let (status, body) = api.get("/readyz").await;
    assert_problem(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert!(
        body["detail"].as_str().unwrap().contains("migrations"),
        "{body}"
    );
    migrate_up(empty.store.connection()).await.unwrap();
    let (status, body) = api.get("/readyz").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
}

async fn health_metrics_openapi_and_trace_ids(db: TestDb) {
    let api = Api::start(&db.store).await;
    let (status, body) = api.get("/healthz").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );

    let traced = api
        .http
        .post(format!("{}/v1/jobs", api.base))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&json!({"kind": "k"}))
        .send()
        .await
        .unwrap();
    let traced: Value = traced.json().await.unwrap();
    assert_eq!(traced["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let requested = api
        .http
        .post(format!("{}/v1/jobs", api.base))
        .header("x-request-id", "req-42")
        .json(&json!({"kind": "k"}))
        .send()
        .await
        .unwrap();
    let requested: Value = requested.json().await.unwrap();
    assert_eq!(requested["trace_id"], "req-42");

    let (status, content_type, text) = api.raw(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"));
    assert!(
        text.contains("http_requests_total") && text.contains("route=\"/v1/jobs\""),
        "{text}"
    );
    assert!(text.contains("http_request_duration_seconds"));

    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs"),
        ("post", "/v1/jobs/batch"),
        ("get", "/v1/jobs/{id}"),
        ("delete", "/v1/jobs/{id}"),
        ("post", "/v1/jobs/{id}/retry"),
        ("get", "/v1/jobs/{id}/events"),
        ("post", "/v1/claims"),
        ("post", "/v1/jobs/{id}/heartbeat"),
        ("post", "/v1/jobs/{id}/complete"),
        ("post", "/v1/jobs/{id}/fail"),
        ("post", "/v1/jobs/{id}/snooze"),
        ("post", "/v1/jobs/bulk"),
        ("get", "/v1/queues"),
        ("get", "/v1/queues/{name}"),
        ("put", "/v1/queues/{name}"),
        ("post", "/v1/queues/{name}/pause"),
        ("post", "/v1/queues/{name}/resume"),
        ("post", "/v1/schedules"),
        ("get", "/v1/schedules"),
        ("get", "/v1/schedules/{name}"),
        ("delete", "/v1/schedules/{name}"),
        ("post", "/v1/schedules/{name}/pause"),
        ("post", "/v1/schedules/{name}/resume"),
        ("post", "/v1/workflows"),
        ("get", "/v1/workflows"),
        ("get", "/v1/workflows/{id}"),
        ("delete", "/v1/workflows/{id}"),
        ("post", "/v1/workflows/{id}/retry"),
        ("post", "/v1/files"),
        ("post", "/v1/jobs/{id}/files"),
        ("get", "/v1/jobs/{id}/files"),
        ("get", "/v1/jobs/{id}/files/{name}"),
        ("post", "/v1/jobs/{id}/result-files"),
        ("get", "/v1/jobs/{id}/result-files"),
        ("get", "/v1/jobs/{id}/result-files/{name}"),
        ("post", "/v1/webhooks"),
        ("get", "/v1/webhooks"),
        ("delete", "/v1/webhooks/{id}"),
        ("post", "/v1/webhooks/{id}/test"),
        ("get", "/v1/queues/{name}/throughput"),
        ("get", "/v1/me"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ];
    for (method, path) in expected {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        for (code, response) in operation["responses"].as_object().unwrap() {
            assert_ne!(code, "422", "{method} {path}: invalid values are 400");
            let description = response["description"].as_str().unwrap_or_default();
            assert!(
                !description.is_empty(),
                "{method} {path} {code} is described"
            );
            if code.starts_with('4') || code.starts_with('5') {
                assert!(
                    response["content"]["application/problem+json"].is_object(),
                    "{method} {path} {code} documents its problem"
                );
            }
        }
    }
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        expected.len(),
        "no undocumented extras, no missing routes"
    );
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}
