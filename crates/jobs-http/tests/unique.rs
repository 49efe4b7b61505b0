//! `unique` of `POST /v1/jobs` and the batch over a real socket, on SQLite and
//! PostgreSQL: each option, `replace`, the precise 400s, and a retry whose key another
//! job took (409 naming it).

mod common;

use common::{Api, assert_problem};
use jobs_store::{backend_tests, testing::TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};

backend_tests!(
    a_completed_job_frees_its_key_unless_its_states_say_otherwise,
    by_args_by_kind_and_period_keys,
    replace_changes_a_pending_job_and_returns_a_running_one,
    a_batch_dedupes_its_items_replace_included,
    bad_unique_options_name_their_field,
    retry_of_a_job_whose_key_was_taken_is_a_conflict,
);

/// Claims the next due job as a remote worker, leaving it running.
async fn claim_next(api: &Api) -> Value {
    let (status, claimed) = api
        .post("/v1/claims", json!({"worker_id": "w", "wait_seconds": 5}))
        .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    claimed["jobs"][0].clone()
}

/// Claims the next due job and completes it.
async fn complete_next(api: &Api) -> Value {
    let job = claim_next(api).await;
    let id = job["id"].as_str().expect("a job was claimed");
    let done = json!({"worker_id": "w", "lease_token": job["lease_token"], "result": 1});
    let (status, body) = api.post(&format!("/v1/jobs/{id}/complete"), done).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    job
}

/// Posts a job that must be a duplicate of `of`; returns the answer.
async fn duplicate(api: &Api, body: Value, of: &str) -> Value {
    let (status, again) = api.post("/v1/jobs", body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (again["id"].as_str(), again["duplicate"].as_bool()),
        (Some(of), Some(true)),
        "{again}"
    );
    again
}

async fn a_completed_job_frees_its_key_unless_its_states_say_otherwise(db: TestDb) {
    let api = Api::start(&db.store).await;
    let short = json!({"kind": "charge", "unique_key": "order-7"});
    let first = api.create(short.clone()).await;
    let dup = duplicate(
        &api,
        json!({"kind": "charge", "unique": {"key": "order-7"}}),
        &first,
    )
    .await;
    assert_eq!(dup["unique_key"], "order-7");
    assert_eq!(
        dup["unique_states"],
        json!(["pending", "running"]),
        "the default states"
    );
    complete_next(&api).await;
    let second = api.create(short).await;
    assert_ne!(second, first, "a completed job no longer blocks its key");
    complete_next(&api).await;

    let kept = json!({"kind": "charge", "unique": {"key": "once", "states": ["pending", "running", "completed", "partial", "failed", "cancelled"]}});
    let once = api.create(kept.clone()).await;
    complete_next(&api).await;
    duplicate(&api, kept, &once).await;
}

async fn by_args_by_kind_and_period_keys(db: TestDb) {
    let api = Api::start(&db.store).await;
    let by_args =
        |to: &str| json!({"kind": "mail", "args": {"to": to}, "unique": {"by_args": true}});
    let a = api.create(by_args("a")).await;
    duplicate(&api, by_args("a"), &a).await;
    api.create(by_args("b")).await;

    let by_kind = |n: i32| json!({"kind": "report", "args": {"n": n}, "unique": {}});
    let report = api.create(by_kind(1)).await;
    let dup = duplicate(&api, by_kind(2), &report).await;
    assert_eq!(dup["unique_key"], "kind:report");

    let daily = json!({"kind": "digest", "unique": {"key": "d", "period_seconds": 86400}});
    let digest = api.create(daily.clone()).await;
    let dup = duplicate(&api, daily, &digest).await;
    let key = dup["unique_key"].as_str().unwrap();
    assert!(
        key.starts_with("d|period:86400s@"),
        "the key carries the bucket: {key}"
    );
}

async fn replace_changes_a_pending_job_and_returns_a_running_one(db: TestDb) {
    let api = Api::start(&db.store).await;
    let job = |v: i32, at: &str| json!({"kind": "sync", "args": {"v": v}, "run_at": at, "unique": {"key": "s", "on_conflict": "replace"}});
    let first = api.create(job(1, "2030-01-01T00:00:00Z")).await;
    let again = duplicate(&api, job(2, "2031-01-01T00:00:00Z"), &first).await;
    assert_eq!(
        (again["replaced"].as_bool(), &again["args"]),
        (Some(true), &json!({"v": 2}))
    );
    assert_eq!(again["run_at"], "2031-01-01T00:00:00Z");
    let (_, stored) = api.get(&format!("/v1/jobs/{first}")).await;
    assert_eq!(stored["args"], json!({"v": 2}));

    let now = |v: i32| json!({"kind": "sync", "args": {"v": v}, "unique": {"key": "r", "on_conflict": "replace"}});
    let running = api.create(now(1)).await;
    assert_eq!(claim_next(&api).await["id"], running.as_str());
    let again = duplicate(&api, now(2), &running).await;
    assert_eq!(
        (again["replaced"].as_bool(), again["state"].as_str()),
        (Some(false), Some("running"))
    );
    assert_eq!(
        again["args"],
        json!({"v": 1}),
        "a running job keeps its arguments"
    );
}

async fn a_batch_dedupes_its_items_replace_included(db: TestDb) {
    let api = Api::start(&db.store).await;
    let item = |v: i32, policy: &str| json!({"kind": "k", "args": {"v": v}, "unique": {"key": "b", "on_conflict": policy}});
    let body = json!({"jobs": [item(1, "return"), item(2, "replace"), item(3, "return")]});
    let (status, done) = api.post("/v1/jobs/batch", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{done}");
    let jobs = done["jobs"].as_array().unwrap();
    let flags: Vec<_> = jobs
        .iter()
        .map(|j| {
            (
                j["duplicate"].as_bool().unwrap(),
                j["replaced"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(flags, [(false, false), (true, true), (true, false)]);
    assert!(jobs.iter().all(|j| j["id"] == jobs[0]["id"]));
    assert!(jobs.iter().all(|j| j["args"] == json!({"v": 2})), "{done}");
}

async fn bad_unique_options_name_their_field(db: TestDb) {
    let api = Api::start(&db.store).await;
    let fields = |body: &Value| -> Vec<String> {
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    };
    let cases = [
        (
            json!({"kind": "k", "unique_key": "a", "unique": {"key": "a"}}),
            vec!["unique_key"],
        ),
        (
            json!({"kind": "k", "unique": {"states": ["pending", "completed"]}}),
            vec!["unique.states"],
        ),
        (
            json!({"kind": "k", "unique": {"states": []}}),
            vec!["unique.states"],
        ),
        (
            json!({"kind": "k", "unique": {"states": ["pending", "running", "done"]}}),
            vec!["unique.states[2]"],
        ),
        (
            json!({"kind": "k", "unique": {"period_seconds": 0}}),
            vec!["unique.period_seconds"],
        ),
        (
            json!({"kind": "k", "unique": {"period_seconds": 315_360_001u64}}),
            vec!["unique.period_seconds"],
        ),
        (
            json!({"kind": "k", "unique": {"on_conflict": "merge"}}),
            vec!["unique.on_conflict"],
        ),
        (
            json!({"kind": "k", "unique": {"key": ""}, "priority": 11}),
            vec!["unique.key", "priority"],
        ),
        (
            json!({"kind": "k", "unique": {"key": "a\u{0}"}}),
            vec!["unique.key"],
        ),
    ];
    for (body, expected) in cases {
        let (status, problem) = api.post("/v1/jobs", body.clone()).await;
        assert_problem(status, &problem, StatusCode::BAD_REQUEST, "validation");
        assert_eq!(fields(&problem), expected, "{body}");
    }
    let (status, problem) = api
        .post("/v1/jobs", json!({"kind": "k", "unique": {"keys": "a"}}))
        .await;
    assert_problem(
        status,
        &problem,
        StatusCode::BAD_REQUEST,
        "malformed-request",
    );

    let batch = json!({"jobs": [{"kind": "k"}, {"kind": "k"}, {"kind": "k", "priority": 99}, {"kind": "k", "unique": {"on_conflict": "x"}}]});
    let (status, problem) = api.post("/v1/jobs/batch", batch).await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST, "validation");
    assert_eq!(
        fields(&problem),
        ["jobs[2].priority", "jobs[3].unique.on_conflict"]
    );
    let (_, list) = api.get("/v1/jobs").await;
    assert_eq!(list["items"], json!([]), "nothing was created");
}

async fn retry_of_a_job_whose_key_was_taken_is_a_conflict(db: TestDb) {
    let api = Api::start(&db.store).await;
    let body = json!({"kind": "nightly", "unique_key": "n"});
    let old = api.create(body.clone()).await;
    complete_next(&api).await;
    let holder = api.create(body).await;
    let (status, problem) = api.post(&format!("/v1/jobs/{old}/retry"), json!({})).await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "duplicate");
    assert_eq!(problem["existing_job_id"], holder.as_str(), "{problem}");
    let (_, job) = api.get(&format!("/v1/jobs/{old}")).await;
    assert_eq!(job["state"], "completed", "unchanged");

    api.delete(&format!("/v1/jobs/{holder}")).await;
    let (status, job) = api.post(&format!("/v1/jobs/{old}/retry"), json!({})).await;
    assert_eq!(
        (status, job["state"].as_str()),
        (StatusCode::OK, Some("pending"))
    );
}
