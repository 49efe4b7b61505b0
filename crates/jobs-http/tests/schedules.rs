//! `/v1/schedules` over a real socket, on SQLite and PostgreSQL: the success paths, each
//! error with its status and problem, tenants, and the OpenAPI document.

mod common;

use std::time::Duration;

use common::{Api, assert_problem};
use jobs_core::ScheduleStore;
use jobs_store::{backend_tests, testing::TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

backend_tests!(
    schedules_are_created_listed_paused_resumed_and_deleted,
    a_slot_of_an_http_schedule_becomes_a_job,
    bad_schedules_get_400_naming_the_field,
    schedules_belong_to_their_tenant,
    the_openapi_document_lists_every_schedule_endpoint,
);

fn nightly() -> Value {
    json!({
        "name": "nightly-report",
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "job": {"kind": "report", "args": {"format": "pdf"}, "queue": "reports", "priority": 7,
                "timeout_ms": 60000, "ttl_seconds": 3600, "metadata": {"team": "ops"}},
        "catch_up": "all"
    })
}

fn time_of(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().expect("a time"), &Rfc3339).unwrap()
}

async fn schedules_are_created_listed_paused_resumed_and_deleted(db: TestDb) {
    let api = Api::start(&db.store).await;
    let before = OffsetDateTime::now_utc();
    let (status, created) = api.post("/v1/schedules", nightly()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "nightly-report");
    assert_eq!(created["catch_up"], "all");
    assert_eq!(created["paused"], false);
    assert_eq!(
        created["job"],
        json!({"kind": "report", "args": {"format": "pdf"}, "queue": "reports", "priority": 7,
               "max_attempts": 20, "timeout_ms": 60000, "ttl_seconds": 3600, "metadata": {"team": "ops"}})
    );
    let next = time_of(&created["next_run_at"]);
    assert!(next > before && next <= before + Duration::from_secs(24 * 3600));
    assert!(
        matches!(next.hour(), 1 | 2),
        "03:00 in Paris is 01:00 or 02:00 UTC"
    );

    let (status, again) = api.post("/v1/schedules", nightly()).await;
    assert_problem(status, &again, StatusCode::CONFLICT, "conflict");

    let minimal = json!({"name": "tick", "cron": "*/10 * * * * *", "job": {"kind": "tick"}});
    let (status, tick) = api.post("/v1/schedules", minimal).await;
    assert_eq!(status, StatusCode::CREATED, "{tick}");
    assert_eq!(
        (tick["timezone"].as_str(), tick["catch_up"].as_str()),
        (Some("UTC"), Some("once"))
    );

    let slashed = json!({"name": "team/sync:v1", "cron": "@hourly", "job": {"kind": "sync"}});
    let (status, body) = api.post("/v1/schedules", slashed).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, got) = api.get("/v1/schedules/team%2Fsync:v1").await;
    assert_eq!(
        (status, got["name"].as_str()),
        (StatusCode::OK, Some("team/sync:v1"))
    );
    let (status, _) = api.delete("/v1/schedules/team%2Fsync:v1").await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "a name with a slash is addressed encoded"
    );

    let (status, list) = api.get("/v1/schedules").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nightly-report", "tick"]);
    let (status, got) = api.get("/v1/schedules/nightly-report").await;
    assert_eq!((status, &got), (StatusCode::OK, &created));

    let (status, paused) = api
        .post("/v1/schedules/nightly-report/pause", json!({}))
        .await;
    assert_eq!(
        (status, paused["paused"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    assert!(paused["paused_at"].is_string());
    // No body at all, as most clients send these.
    let resume = "/v1/schedules/nightly-report/resume";
    let (status, resumed) = api.call(reqwest::Method::POST, resume, None).await;
    assert_eq!(
        (status, resumed["paused"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    assert_eq!(resumed["paused_at"], Value::Null);

    let (status, _) = api.delete("/v1/schedules/nightly-report").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (method, path) in [
        ("GET", "/v1/schedules/nightly-report"),
        ("DELETE", "/v1/schedules/nightly-report"),
        ("POST", "/v1/schedules/nightly-report/pause"),
        ("POST", "/v1/schedules/nightly-report/resume"),
        ("GET", "/v1/schedules/bad%00name"),
        ("GET", "/v1/schedules/%F0%9F%98%80"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (status, problem) = api.call(method, path, None).await;
        assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    }
}

async fn a_slot_of_an_http_schedule_becomes_a_job(db: TestDb) {
    let api = Api::start(&db.store).await;
    let (status, created) = api.post("/v1/schedules", nightly()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let slot = time_of(&created["next_run_at"]);
    let runs = db.store.enqueue_due(slot, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    let (status, schedule) = api.get("/v1/schedules/nightly-report").await;
    assert_eq!(status, StatusCode::OK);
    let job_id = schedule["last_job_id"].as_str().expect("the slot's job");
    assert_eq!(time_of(&schedule["last_run_at"]), slot);
    let (status, job) = api.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (job["kind"].as_str(), job["queue"].as_str()),
        (Some("report"), Some("reports"))
    );
    assert_eq!(time_of(&job["run_at"]), slot);
    assert_eq!(job["metadata"]["schedule"], "nightly-report");
    assert_eq!(time_of(&job["metadata"]["slot"]), slot);
    assert_eq!(job["timeout_ms"], 60000);
}

async fn bad_schedules_get_400_naming_the_field(db: TestDb) {
    let api = Api::start(&db.store).await;
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut body = nightly();
        edit(&mut body);
        body
    };
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (with(&|b| b["cron"] = json!("61 * * * *")), vec!["cron"]),
        (with(&|b| b["cron"] = json!("not a cron")), vec!["cron"]),
        (with(&|b| b["cron"] = json!("0 0 30 2 *")), vec!["cron"]),
        (with(&|b| b["cron"] = json!("x".repeat(1000))), vec!["cron"]),
        (
            with(&|b| b["timezone"] = json!("Mars/Olympus")),
            vec!["timezone"],
        ),
        (
            with(&|b| b["timezone"] = json!("UTC\u{0}")),
            vec!["timezone"],
        ),
        (with(&|b| b["name"] = json!("has space")), vec!["name"]),
        (
            with(&|b| b["job"]["priority"] = json!(11)),
            vec!["job.priority"],
        ),
        (with(&|b| b["job"]["kind"] = json!("")), vec!["job.kind"]),
        (
            with(&|b| b["job"]["args"] = json!({"a": "\u{0}"})),
            vec!["job.args"],
        ),
    ];
    for (body, fields) in cases {
        let (status, problem) = api.post("/v1/schedules", body.clone()).await;
        assert_problem(status, &problem, StatusCode::BAD_REQUEST, "validation");
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{body}");
    }
    for malformed in [
        with(&|b| b["catch_up"] = json!("sometimes")),
        with(&|b| b["surprise"] = json!(1)),
        // Fields that would hold for one slot only are not part of a schedule's job.
        with(&|b| b["job"]["run_at"] = json!("2030-01-01T00:00:00Z")),
        with(&|b| b["job"]["unique_key"] = json!("k")),
        json!({"name": "x", "job": {"kind": "k"}}),
    ] {
        let (status, problem) = api.post("/v1/schedules", malformed).await;
        assert_problem(
            status,
            &problem,
            StatusCode::BAD_REQUEST,
            "malformed-request",
        );
    }
    let (_, list) = api.get("/v1/schedules").await;
    assert_eq!(list["items"], json!([]), "nothing was created");
}

async fn schedules_belong_to_their_tenant(db: TestDb) {
    let api = Api::start(&db.store).await;
    let a_key = db.store.create_api_key("acme").await.unwrap().secret;
    let b_key = db.store.create_api_key("globex").await.unwrap().secret;
    tokio::time::sleep(Duration::from_millis(2_100)).await; // the auth cache notices keys within 2 s
    let (a, b) = (api.as_key(&a_key), api.as_key(&b_key));
    let (status, _) = a.post("/v1/schedules", nightly()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = b.post("/v1/schedules", nightly()).await;
    assert_eq!(status, StatusCode::CREATED, "names are per tenant");
    b.delete("/v1/schedules/nightly-report").await;
    let (status, problem) = b.get("/v1/schedules/nightly-report").await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    let (status, kept) = a.get("/v1/schedules/nightly-report").await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    let (_, list) = b.get("/v1/schedules").await;
    assert_eq!(list["items"], json!([]));
    let (status, problem) = api.get("/v1/schedules").await;
    assert_problem(status, &problem, StatusCode::UNAUTHORIZED, "unauthorized");
}

async fn the_openapi_document_lists_every_schedule_endpoint(db: TestDb) {
    // Keys required: the document lists the 401s (a keyless api declares none).
    let config = jobs_http::ApiConfig {
        auth: jobs_http::AuthMode::Required,
        ..jobs_http::ApiConfig::default()
    };
    let api = Api::start_with(&db.store, config).await;
    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let responses = doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is documented"));
        responses.keys().cloned().collect()
    };
    assert_eq!(
        statuses("/v1/schedules", "post"),
        ["201", "400", "401", "409", "413", "415", "503"]
    );
    assert_eq!(statuses("/v1/schedules", "get"), ["200", "401", "503"]);
    assert_eq!(
        statuses("/v1/schedules/{name}", "get"),
        ["200", "401", "404", "503"]
    );
    assert_eq!(
        statuses("/v1/schedules/{name}", "delete"),
        ["204", "401", "404", "503"]
    );
    for action in ["pause", "resume"] {
        let path = format!("/v1/schedules/{{name}}/{action}");
        assert_eq!(statuses(&path, "post"), ["200", "401", "404", "503"]);
    }
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["CreateSchedule"].is_object() && schemas["ScheduleView"].is_object());
}
