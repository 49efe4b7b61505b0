//! What the dashboard needs of the API, on SQLite and PostgreSQL: who the caller is
//! (`GET /v1/me`), a queue's throughput, listings by job id or unique key, and the page
//! itself at `/ui`, served without a key under a strict content policy, or not at all.

mod common;

use common::{Api, assert_problem};
use jobs_core::{ClaimRequest, JobStore, Lease, Retry};
use jobs_http::ApiConfig;
use jobs_store::{backend_tests, testing::TestDb};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    me_says_whether_a_key_is_needed_and_whose_it_is,
    throughput_counts_the_tenants_ended_jobs_per_minute,
    throughput_refuses_bad_minutes_and_queue_names,
    q_lists_a_job_by_id_or_unique_key_and_refuses_bad_text,
    the_page_is_served_without_a_key_under_a_strict_policy,
    the_page_can_be_turned_off,
);

async fn me_says_whether_a_key_is_needed_and_whose_it_is(db: TestDb) {
    let open = Api::start(&db.store).await;
    let (status, me) = open.get("/v1/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me, json!({"auth": false, "tenant": "default"}));

    let key = db.store.create_api_key("acme").await.unwrap().secret;
    let keyed = Api::start(&db.store).await;
    let (status, me) = keyed.get("/v1/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me, json!({"auth": true, "tenant": null}), "no key sent");
    let (status, me) = keyed.as_key(&key).get("/v1/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me, json!({"auth": true, "tenant": "acme"}));
    let (status, problem) = keyed.as_key("jk_not-a-key").get("/v1/me").await;
    assert_problem(status, &problem, StatusCode::UNAUTHORIZED, "unauthorized");
}

fn ended_in(minutes: &Value, state: &str) -> u64 {
    minutes
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["by_state"][state].as_u64().unwrap_or(0))
        .sum()
}

async fn throughput_counts_the_tenants_ended_jobs_per_minute(db: TestDb) {
    let api = Api::start(&db.store).await;
    for _ in 0..3 {
        api.create(json!({"kind": "k"})).await;
    }
    let request = ClaimRequest {
        worker_id: "w".into(),
        queues: vec!["default".into()],
        kinds: None,
        tenant: None,
        limit: 10,
        lease: std::time::Duration::from_secs(30),
    };
    let claimed = db.store.claim(&request).await.unwrap();
    for (i, job) in claimed.iter().enumerate() {
        let lease = Lease::of(job).unwrap();
        match i {
            0 => db
                .store
                .fail(&lease, "boom", "no", Retry::Never)
                .await
                .unwrap(),
            _ => db.store.complete(&lease, json!({})).await.unwrap(),
        };
    }
    let (status, body) = api.get("/v1/queues/default/throughput?minutes=5").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["queue"], "default");
    let minutes = &body["minutes"];
    assert_eq!(minutes.as_array().unwrap().len(), 5, "{body}");
    assert_eq!(
        (ended_in(minutes, "completed"), ended_in(minutes, "failed")),
        (2, 1),
        "{body}"
    );
    let total: u64 = minutes
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ended"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 3);
    let starts: Vec<&str> = minutes
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["at"].as_str().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {starts:?}"
    );
    assert!(
        starts.iter().all(|s| s.ends_with(":00Z")),
        "whole minutes: {starts:?}"
    );

    let (_, default) = api.get("/v1/queues/default/throughput").await;
    assert_eq!(
        default["minutes"].as_array().unwrap().len(),
        30,
        "default window"
    );
    // Another tenant sees none of them.
    let key = db.store.create_api_key("other").await.unwrap().secret;
    let other = Api::start(&db.store).await.as_key(&key);
    let (status, theirs) = other.get("/v1/queues/default/throughput?minutes=5").await;
    assert_eq!(status, StatusCode::OK, "{theirs}");
    assert_eq!(ended_in(&theirs["minutes"], "completed"), 0, "{theirs}");
}

async fn throughput_refuses_bad_minutes_and_queue_names(db: TestDb) {
    let api = Api::start(&db.store).await;
    let out_of_range = [("0", "validation"), ("1441", "validation")];
    let not_whole = [
        ("-1", "malformed-request"),
        ("x", "malformed-request"),
        ("1.5", "malformed-request"),
    ];
    for (minutes, kind) in out_of_range.into_iter().chain(not_whole) {
        let (status, problem) = api
            .get(&format!("/v1/queues/default/throughput?minutes={minutes}"))
            .await;
        assert_problem(status, &problem, StatusCode::BAD_REQUEST, kind);
        assert_eq!(
            problem["errors"][0]["field"], "minutes",
            "{minutes}: {problem}"
        );
    }
    let (status, problem) = api.get("/v1/queues/default/throughput?hours=1").await;
    assert_problem(
        status,
        &problem,
        StatusCode::BAD_REQUEST,
        "malformed-request",
    );
    let (status, problem) = api.get("/v1/queues/a%20b/throughput").await;
    assert_problem(status, &problem, StatusCode::BAD_REQUEST, "validation");
    assert_eq!(problem["errors"][0]["field"], "name", "{problem}");
    let (status, _) = api.get("/v1/queues/default/throughput?minutes=1440").await;
    assert_eq!(status, StatusCode::OK);
}

async fn q_lists_a_job_by_id_or_unique_key_and_refuses_bad_text(db: TestDb) {
    let api = Api::start(&db.store).await;
    let plain = api.create(json!({"kind": "k"})).await;
    let keyed = api
        .create(json!({"kind": "k", "unique_key": "order 7/é"}))
        .await;
    let ids = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, found) = api.get(&format!("/v1/jobs?q={plain}")).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(ids(&found), vec![plain.clone()]);
    let (_, found) = api.get("/v1/jobs?q=order%207%2F%C3%A9").await;
    assert_eq!(ids(&found), vec![keyed.clone()]);
    let (_, found) = api.get("/v1/jobs?q=order").await;
    assert!(ids(&found).is_empty(), "exact keys only: {found}");
    let (status, bulk) = api
        .post(
            "/v1/jobs/bulk",
            json!({"action": "cancel", "filter": {"q": keyed}, "dry_run": true}),
        )
        .await;
    assert_eq!(
        (status, &bulk["matched"]),
        (StatusCode::OK, &json!(1)),
        "{bulk}"
    );

    let long = "x".repeat(256);
    for bad in ["", "a%00b", long.as_str()] {
        let (status, problem) = api.get(&format!("/v1/jobs?q={bad}")).await;
        assert_problem(status, &problem, StatusCode::BAD_REQUEST, "validation");
        assert_eq!(problem["errors"][0]["field"], "q", "{bad}: {problem}");
    }
}

async fn the_page_is_served_without_a_key_under_a_strict_policy(db: TestDb) {
    db.store.create_api_key("acme").await.unwrap();
    let api = Api::start(&db.store).await;
    let (status, _) = api.get("/v1/jobs").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "keys are needed for the API"
    );
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let response = api
            .http
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(header("content-type"), content_type, "{path}");
        assert!(
            header("content-security-policy").contains("script-src 'self';"),
            "{path}"
        );
        assert!(
            header("content-security-policy").starts_with("default-src 'none';"),
            "{path}"
        );
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let etag = header("etag");
        let again = api
            .http
            .get(format!("{}{path}", api.base))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }
    let (status, _, html) = api.raw(Method::GET, "/ui", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(r#"<script type="module" src="/ui/app.js">"#),
        "{html}"
    );
    assert!(!html.contains("<script>"), "no inline script");
    let (status, problem) = api.get("/ui/missing.js").await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    // Not part of the API's document.
    let (_, document) = api.get("/openapi.json").await;
    let paths = document["paths"].as_object().unwrap();
    assert!(
        paths.keys().all(|p| !p.starts_with("/ui")),
        "{:?}",
        paths.keys()
    );
    assert!(paths.contains_key("/v1/me") && paths.contains_key("/v1/queues/{name}/throughput"));
}

async fn the_page_can_be_turned_off(db: TestDb) {
    let config = ApiConfig {
        ui: false,
        ..ApiConfig::default()
    };
    let api = Api::start_with(&db.store, config).await;
    for path in ["/ui", "/ui/app.js"] {
        let (status, problem) = api.get(path).await;
        assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    }
    let (status, _) = api.get("/v1/me").await;
    assert_eq!(status, StatusCode::OK, "the API stays");
}
