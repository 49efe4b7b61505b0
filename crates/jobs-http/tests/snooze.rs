//! `POST /v1/jobs/{id}/snooze` for remote workers over a real socket, on SQLite and
//! PostgreSQL: back to pending later without spending the attempt; only the lease holder.

mod common;

use std::time::Duration;

use common::{Api, assert_problem};
use jobs_store::{backend_tests, testing::TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

backend_tests!(
    a_snoozed_job_is_pending_later_with_its_attempt_given_back,
    a_stale_lease_cannot_snooze,
    snooze_delays_are_validated,
);

/// Creates a job and claims it as worker `w`; returns the claimed job.
async fn claimed(api: &Api) -> Value {
    let id = api.create(json!({"kind": "k", "max_attempts": 1})).await;
    let (status, body) = api.post("/v1/claims", json!({"worker_id": "w"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let job = body["jobs"][0].clone();
    assert_eq!(
        (job["id"].as_str(), job["attempt"].as_i64()),
        (Some(id.as_str()), Some(1))
    );
    job
}

fn snooze_body(job: &Value, delay: Value) -> Value {
    json!({"worker_id": "w", "lease_token": job["lease_token"], "delay_seconds": delay})
}

fn time_of(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339).unwrap()
}

async fn a_snoozed_job_is_pending_later_with_its_attempt_given_back(db: TestDb) {
    let api = Api::start(&db.store).await;
    let job = claimed(&api).await;
    let id = job["id"].as_str().unwrap();
    let before = OffsetDateTime::now_utc();
    let (status, snoozed) = api
        .post(
            &format!("/v1/jobs/{id}/snooze"),
            snooze_body(&job, json!(60)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{snoozed}");
    assert_eq!(
        (
            snoozed["state"].as_str(),
            snoozed["attempt"].as_i64(),
            snoozed["scheduled"].as_bool()
        ),
        (Some("pending"), Some(0), Some(true)),
        "{snoozed}"
    );
    assert!(snoozed["lease_expires_at"].is_null() && snoozed["errors"] == json!([]));
    let due = time_of(&snoozed["run_at"]) - before;
    assert!(
        due >= Duration::from_secs(59) && due <= Duration::from_secs(65),
        "due in {due}"
    );
    let (_, again) = api.post("/v1/claims", json!({"worker_id": "w"})).await;
    assert_eq!(again["jobs"], json!([]), "not due before the delay");

    // Snoozed for no time, a job is claimed again at once: its one attempt unspent.
    let job = claimed(&api).await;
    let other = job["id"].as_str().unwrap();
    let (status, body) = api
        .post(
            &format!("/v1/jobs/{other}/snooze"),
            snooze_body(&job, json!(0)),
        )
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("pending"))
    );
    assert!(time_of(&body["run_at"]) <= OffsetDateTime::now_utc() + Duration::from_secs(1));
    let (_, again) = api.post("/v1/claims", json!({"worker_id": "w"})).await;
    assert_eq!(
        (
            again["jobs"][0]["id"].as_str(),
            again["jobs"][0]["attempt"].as_i64()
        ),
        (Some(other), Some(1))
    );
}

async fn a_stale_lease_cannot_snooze(db: TestDb) {
    let api = Api::start(&db.store).await;
    let job = claimed(&api).await;
    let id = job["id"].as_str().unwrap();
    let mut stale = snooze_body(&job, json!(60));
    stale["lease_token"] = json!("00000000-0000-4000-8000-000000000000");
    let (status, body) = api.post(&format!("/v1/jobs/{id}/snooze"), stale).await;
    assert_problem(status, &body, StatusCode::CONFLICT, "lease-lost");
    let (_, now) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (
            now["state"].as_str(),
            now["attempt"].as_i64(),
            now["run_at"].clone()
        ),
        (Some("running"), Some(1), job["run_at"].clone()),
        "nothing changed"
    );

    let done = json!({"worker_id": "w", "lease_token": job["lease_token"], "result": {}});
    let (status, _) = api.post(&format!("/v1/jobs/{id}/complete"), done).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .post(
            &format!("/v1/jobs/{id}/snooze"),
            snooze_body(&job, json!(60)),
        )
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "lease-lost");
    let (_, ended) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(ended["state"], "completed");
}

async fn snooze_delays_are_validated(db: TestDb) {
    use jobs_core::limits::DURATION_MAX_SECS;
    let api = Api::start(&db.store).await;
    let job = claimed(&api).await;
    let id = job["id"].as_str().unwrap();
    let path = format!("/v1/jobs/{id}/snooze");
    for delay in [
        json!(-1),
        json!(-0.5),
        json!(DURATION_MAX_SECS + 1),
        json!(1e300),
    ] {
        let (status, body) = api.post(&path, snooze_body(&job, delay.clone())).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
        assert_eq!(body["errors"][0]["field"], "delay_seconds", "{delay}");
    }
    for (body, field) in [
        (
            json!({"worker_id": "w", "lease_token": job["lease_token"]}),
            "body",
        ),
        (snooze_body(&job, json!("soon")), "delay_seconds"),
    ] {
        let (status, problem) = api.post(&path, body).await;
        assert_problem(
            status,
            &problem,
            StatusCode::BAD_REQUEST,
            "malformed-request",
        );
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (_, now) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(now["state"], "running", "nothing changed");
    let (status, body) = api
        .post(&path, snooze_body(&job, json!(DURATION_MAX_SECS)))
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("pending")),
        "{body}"
    );
}
