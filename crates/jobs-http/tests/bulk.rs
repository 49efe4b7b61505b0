//! `POST /v1/jobs/bulk` over a real socket on SQLite and PostgreSQL: the dead-letter
//! workflow (list failed jobs by error kind, retry them all), each action, dry runs,
//! validation naming the field, and tenants.

mod common;

use std::time::Duration;

use common::{Api, assert_problem};
use jobs_store::{backend_tests, testing::TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};

backend_tests!(
    dead_letters_are_listed_by_error_kind_then_retried,
    cancel_and_delete_in_bulk,
    bad_bulk_requests_name_the_field,
    bulk_actions_stay_in_the_callers_tenant,
);

/// Creates a job of `kind` and fails its one attempt with `error_kind`, as a remote
/// worker; returns its id.
async fn dead_letter(api: &Api, kind: &str, error_kind: &str) -> String {
    let id = api.create(json!({"kind": kind, "max_attempts": 1})).await;
    let (status, claimed) = api
        .post("/v1/claims", json!({"worker_id": "w", "kinds": [kind]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    let job = &claimed["jobs"][0];
    assert_eq!(job["id"], id.as_str());
    let fail = json!({"worker_id": "w", "lease_token": job["lease_token"],
        "error": {"kind": error_kind, "message": "it broke"}, "retryable": false});
    let (status, body) = api.post(&format!("/v1/jobs/{id}/fail"), fail).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("failed"))
    );
    id
}

async fn bulk(api: &Api, body: Value) -> (u64, u64) {
    let (status, reply) = api.post("/v1/jobs/bulk", body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    (
        reply["matched"].as_u64().unwrap(),
        reply["changed"].as_u64().unwrap(),
    )
}

async fn ids_listed(api: &Api, query: &str) -> Vec<String> {
    let (status, page) = api.get(&format!("/v1/jobs?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut ids: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

async fn state_of(api: &Api, id: &str) -> String {
    let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
    job["state"].as_str().unwrap_or("gone").to_owned()
}

async fn dead_letters_are_listed_by_error_kind_then_retried(db: TestDb) {
    let api = Api::start(&db.store).await;
    let first = dead_letter(&api, "email", "timeout").await;
    let second = dead_letter(&api, "resize", "timeout").await;
    let oom = dead_letter(&api, "resize", "oom").await;

    let mut timeouts = vec![first.clone(), second.clone()];
    timeouts.sort();
    assert_eq!(
        ids_listed(&api, "state=failed&error_kind=timeout").await,
        timeouts
    );
    assert_eq!(
        ids_listed(&api, "error_kind=oom").await,
        std::slice::from_ref(&oom)
    );

    let filter = json!({"state": "failed", "error_kind": "timeout"});
    let dry = json!({"action": "retry", "filter": filter, "dry_run": true});
    assert_eq!(bulk(&api, dry).await, (2, 0));
    assert_eq!(
        state_of(&api, &first).await,
        "failed",
        "a dry run changes nothing"
    );

    assert_eq!(
        bulk(&api, json!({"action": "retry", "filter": filter})).await,
        (2, 2)
    );
    for id in [&first, &second] {
        let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(
            (job["state"].as_str(), job["attempt"].as_i64()),
            (Some("pending"), Some(0))
        );
        assert_eq!(job["errors"][0]["kind"], "timeout", "the history stays");
    }
    assert_eq!(state_of(&api, &oom).await, "failed");
    assert_eq!(
        bulk(&api, json!({"action": "retry", "filter": filter})).await,
        (0, 0),
        "nothing left to retry"
    );
}

async fn cancel_and_delete_in_bulk(db: TestDb) {
    let api = Api::start(&db.store).await;
    let dead = dead_letter(&api, "k", "boom").await;
    let pending = api.create(json!({"kind": "k", "queue": "q1"})).await;
    let later = api.create(json!({"kind": "other", "queue": "q1"})).await;
    let (_, claimed) = api
        .post(
            "/v1/claims",
            json!({"worker_id": "w", "queues": ["q1"], "kinds": ["other"]}),
        )
        .await;
    assert_eq!(claimed["jobs"][0]["id"], later.as_str());

    let cancel = json!({"action": "cancel", "filter": {"queue": "q1"}});
    assert_eq!(bulk(&api, cancel).await, (2, 2));
    assert_eq!(state_of(&api, &pending).await, "cancelled");
    let (_, running) = api.get(&format!("/v1/jobs/{later}")).await;
    assert_eq!(
        (
            running["state"].as_str(),
            running["cancel_requested"].as_bool()
        ),
        (Some("running"), Some(true))
    );

    let delete = json!({"action": "delete", "filter": {"all": true}});
    assert_eq!(bulk(&api, delete).await, (2, 2), "all but the running job");
    for id in [&dead, &pending] {
        let (status, body) = api.get(&format!("/v1/jobs/{id}")).await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    }
    assert_eq!(state_of(&api, &later).await, "running");
}

async fn bad_bulk_requests_name_the_field(db: TestDb) {
    let api = Api::start(&db.store).await;
    let dead = dead_letter(&api, "k", "boom").await;
    let cases = [
        (json!({"action": "retry"}), "validation", "filter"),
        (
            json!({"action": "retry", "filter": {}}),
            "validation",
            "filter",
        ),
        (
            json!({"action": "retry", "filter": {"all": false}}),
            "validation",
            "filter",
        ),
        (
            json!({"action": "retry", "filter": {"state": "pending"}}),
            "validation",
            "filter.state",
        ),
        (
            json!({"action": "delete", "filter": {"state": "running"}}),
            "validation",
            "filter.state",
        ),
        (
            json!({"action": "retry", "filter": {"error_kind": "a\u{0}b"}}),
            "validation",
            "filter.error_kind",
        ),
        (
            json!({"action": "explode", "filter": {"all": true}}),
            "malformed-request",
            "action",
        ),
        (
            json!({"filter": {"all": true}}),
            "malformed-request",
            "body",
        ),
        (
            json!({"action": "retry", "filter": {"colour": "red"}}),
            "malformed-request",
            "filter.colour",
        ),
        (
            json!({"action": "retry", "filter": {"state": "done"}}),
            "malformed-request",
            "filter.state",
        ),
        (
            json!({"action": "retry", "filter": {"created_after": "yesterday"}}),
            "malformed-request",
            "filter.created_after",
        ),
        (
            json!({"action": "retry", "filter": {"all": true}, "dry_run": "yes"}),
            "malformed-request",
            "dry_run",
        ),
    ];
    for (body, kind, field) in cases {
        let (status, problem) = api.post("/v1/jobs/bulk", body.clone()).await;
        assert_problem(status, &problem, StatusCode::BAD_REQUEST, kind);
        assert_eq!(problem["errors"][0]["field"], field, "{body} -> {problem}");
    }
    assert_eq!(state_of(&api, &dead).await, "failed", "nothing moved");
    let (status, body) = api.get("/v1/jobs?error_kind=a%00b").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "validation");
    assert_eq!(body["errors"][0]["field"], "error_kind");
}

async fn bulk_actions_stay_in_the_callers_tenant(db: TestDb) {
    let api = Api::start(&db.store).await;
    let a_key = db.store.create_api_key("acme").await.unwrap().secret;
    let b_key = db.store.create_api_key("globex").await.unwrap().secret;
    tokio::time::sleep(Duration::from_millis(2_100)).await; // the auth cache notices keys within 2 s
    let (a, b) = (api.as_key(&a_key), api.as_key(&b_key));
    let mine = dead_letter(&a, "k", "boom").await;
    let theirs = dead_letter(&b, "k", "boom").await;

    let (status, body) = api
        .post(
            "/v1/jobs/bulk",
            json!({"action": "delete", "filter": {"all": true}}),
        )
        .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let retry_all = json!({"action": "retry", "filter": {"all": true}});
    assert_eq!(bulk(&b, retry_all.clone()).await, (1, 1));
    assert_eq!(state_of(&b, &theirs).await, "pending");
    assert_eq!(
        state_of(&a, &mine).await,
        "failed",
        "another tenant's job is untouched"
    );
    let delete_all = json!({"action": "delete", "filter": {"all": true}});
    assert_eq!(bulk(&a, delete_all).await, (1, 1));
    assert_eq!(state_of(&b, &theirs).await, "pending");
}
