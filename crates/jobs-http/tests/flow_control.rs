//! Flow control over HTTP, on SQLite and PostgreSQL: `PUT /v1/queues/{name}` replaces the
//! caller's tenant's limits and the queue views show them; every setting out of range or
//! of the wrong type is a 400 naming it; limits belong to the tenant of the API key; jobs
//! carry a `concurrency_key`.

mod common;

use std::time::Duration;

use common::{Api, assert_problem};
use jobs_core::{QueueControl, QueueLimits, QueueScope, Rate, limits::DEFAULT_TENANT};
use jobs_store::{backend_tests, testing::TestDb};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    limits_round_trip_and_show_in_the_queue_views,
    a_put_replaces_every_limit_of_the_tenant,
    invalid_settings_are_400_naming_the_field,
    limits_belong_to_the_tenant_of_the_key,
    jobs_carry_their_concurrency_key,
    invalid_concurrency_keys_are_400_naming_the_field,
    the_schema_states_each_range,
);

fn no_limits() -> Value {
    json!({"concurrency": null, "key_concurrency": null, "rate": null, "key_rate": null})
}

fn every_limit() -> Value {
    json!({
        "concurrency": 5,
        "key_concurrency": 1,
        "rate": {"limit": 50, "period_seconds": 1},
        "key_rate": {"limit": 2, "period_seconds": 86400},
    })
}

fn listed<'a>(queues: &'a Value, name: &str) -> &'a Value {
    queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == name)
        .unwrap_or_else(|| panic!("{name} is listed in {queues}"))
}

/// The fields a 400 names, in order.
fn named(status: StatusCode, problem: &Value) -> Vec<String> {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let kind = problem["type"].as_str().unwrap_or_default();
    assert!(
        kind.ends_with(":validation") || kind.ends_with(":malformed-request"),
        "{problem}"
    );
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors in {problem}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

async fn stored(db: &TestDb, tenant: &str, queue: &str) -> QueueLimits {
    db.store
        .queue_limits(QueueScope::Tenant(tenant), queue)
        .await
        .unwrap()
}

async fn limits_round_trip_and_show_in_the_queue_views(db: TestDb) {
    let api = Api::start(&db.store).await;
    api.create(json!({"kind": "k", "queue": "mail"})).await;
    api.create(json!({"kind": "k", "queue": "mail"})).await;
    let (status, view) = api.put("/v1/queues/mail", every_limit()).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(stored(&db, DEFAULT_TENANT, "mail").await, {
        QueueLimits {
            concurrency: Some(5),
            key_concurrency: Some(1),
            rate: Some(Rate::per_second(50)),
            key_rate: Some(Rate::new(2, Duration::from_secs(86_400))),
        }
    });
    assert_eq!(view["queue"], "mail");
    assert_eq!(view["limits"], every_limit(), "{view}");
    assert_eq!(view["all_tenants_limits"], no_limits(), "{view}");
    assert_eq!(
        (&view["counts"]["pending"], &view["paused"]),
        (&json!(2), &json!(false))
    );

    // A remote worker takes one job: it shows as running.
    let (status, claimed) = api
        .post("/v1/claims", json!({"worker_id": "w", "queues": ["mail"]}))
        .await;
    assert_eq!(
        (status, claimed["jobs"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    let (status, view) = api.get("/v1/queues/mail").await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["limits"], every_limit(), "{view}");
    assert_eq!(
        (&view["running"], &view["counts"]["running"]),
        (&json!(1), &json!(1))
    );
    assert!(view["throttled"].is_u64(), "{view}");
    let (_, queues) = api.get("/v1/queues").await;
    let mut mail = listed(&queues, "mail").clone();
    // The one field that moves between two reads.
    mail["oldest_pending_age_ms"] = view["oldest_pending_age_ms"].clone();
    assert_eq!(mail, view);

    // Whole numbers written as decimals are integers, as JSON Schema counts them.
    let (status, view) = api
        .put(
            "/v1/queues/empty",
            json!({"concurrency": 3.0, "rate": {"limit": 1e1, "period_seconds": 60.0}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let set = json!({"concurrency": 3, "key_concurrency": null, "rate": {"limit": 10, "period_seconds": 60}, "key_rate": null});
    assert_eq!(view["limits"], set, "a queue without jobs shows its limits");
    let (_, queues) = api.get("/v1/queues").await;
    assert_eq!(listed(&queues, "empty")["limits"], set);

    // What an operator sets from code for every tenant shows beside the tenant's own.
    let all = QueueLimits {
        concurrency: Some(100),
        ..Default::default()
    };
    db.store
        .set_queue_limits(QueueScope::AllTenants, "mail", &all)
        .await
        .unwrap();
    let (_, view) = api.get("/v1/queues/mail").await;
    assert_eq!(view["all_tenants_limits"]["concurrency"], 100, "{view}");
    assert_eq!(view["limits"], every_limit(), "{view}");

    let (status, view) = api.get("/v1/queues/never-used").await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(
        (&view["limits"], &view["running"]),
        (&no_limits(), &json!(0))
    );
}

async fn a_put_replaces_every_limit_of_the_tenant(db: TestDb) {
    let api = Api::start(&db.store).await;
    api.put("/v1/queues/mail", every_limit()).await;
    let (status, view) = api
        .put("/v1/queues/mail", json!({"key_concurrency": 2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let only = QueueLimits {
        key_concurrency: Some(2),
        ..Default::default()
    };
    assert_eq!(
        stored(&db, DEFAULT_TENANT, "mail").await,
        only,
        "absent is no limit"
    );
    assert_eq!(view["limits"]["concurrency"], Value::Null, "{view}");

    let explicit_nulls = api.put("/v1/queues/mail", no_limits()).await;
    assert_eq!(explicit_nulls.0, StatusCode::OK);
    assert!(stored(&db, DEFAULT_TENANT, "mail").await.is_unlimited());

    api.put("/v1/queues/mail", every_limit()).await;
    let (status, view) = api.put("/v1/queues/mail", json!({})).await;
    assert_eq!((status, &view["limits"]), (StatusCode::OK, &no_limits()));
    assert!(
        stored(&db, DEFAULT_TENANT, "mail").await.is_unlimited(),
        "{{}} lifts them all"
    );
}

async fn invalid_settings_are_400_naming_the_field(db: TestDb) {
    let api = Api::start(&db.store).await;
    let rate = |limit: &str, period: &str| {
        format!(r#"{{"rate": {{"limit": {limit}, "period_seconds": {period}}}}}"#)
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        (r#"{"concurrency": 0}"#.into(), vec!["concurrency"]),
        (r#"{"concurrency": -1}"#.into(), vec!["concurrency"]),
        (r#"{"concurrency": 1000001}"#.into(), vec!["concurrency"]),
        (r#"{"concurrency": 4294967297}"#.into(), vec!["concurrency"]),
        (r#"{"concurrency": 18446744073709551616}"#.into(), vec!["concurrency"]),
        (r#"{"concurrency": -9223372036854775809}"#.into(), vec!["concurrency"]),
        (r#"{"concurrency": 1e400}"#.into(), vec!["concurrency"]),
        (r#"{"concurrency": 2.5}"#.into(), vec!["concurrency"]),
        (r#"{"concurrency": "5"}"#.into(), vec!["concurrency"]),
        (r#"{"concurrency": true}"#.into(), vec!["concurrency"]),
        (r#"{"key_concurrency": 0}"#.into(), vec!["key_concurrency"]),
        (r#"{"key_concurrency": [1]}"#.into(), vec!["key_concurrency"]),
        (rate("0", "1"), vec!["rate.limit"]),
        (rate("1000001", "1"), vec!["rate.limit"]),
        (rate("1.5", "1"), vec!["rate.limit"]),
        (rate("10", "0"), vec!["rate.period_seconds"]),
        (rate("10", "-1"), vec!["rate.period_seconds"]),
        (rate("10", "86401"), vec!["rate.period_seconds"]),
        (rate("10", "0.5"), vec!["rate.period_seconds"]),
        (rate("10", "1e30"), vec!["rate.period_seconds"]),
        (rate("10", r#""60""#), vec!["rate.period_seconds"]),
        (rate("null", "1"), vec!["rate.limit"]),
        (r#"{"rate": {"limit": 10}}"#.into(), vec!["rate.period_seconds"]),
        (r#"{"rate": {}}"#.into(), vec!["rate.limit", "rate.period_seconds"]),
        (r#"{"rate": 50}"#.into(), vec!["rate"]),
        (
            r#"{"key_rate": {"limit": -5, "period_seconds": 90000}}"#.into(),
            vec!["key_rate.limit", "key_rate.period_seconds"],
        ),
        (
            r#"{"concurrency": 0, "rate": {"limit": 1, "period_seconds": 0}, "key_rate": {"period_seconds": 1}}"#.into(),
            vec!["key_rate.limit", "concurrency", "rate.period_seconds"],
        ),
        // Unknown fields are refused, as in every other body.
        (r#"{"burst": 3}"#.into(), vec!["burst"]),
        (r#"{"rate": {"limit": 1, "period_seconds": 1, "burst": 3}}"#.into(), vec!["rate.burst"]),
        ("[]".into(), vec!["body"]),
        ("null".into(), vec!["body"]),
        ("{".into(), vec!["body"]),
    ];
    for (body, fields) in cases {
        let (status, problem) = api.send_text(Method::PUT, "/v1/queues/mail", &body).await;
        assert_eq!(named(status, &problem), fields, "{body}: {problem}");
    }
    assert!(
        stored(&db, DEFAULT_TENANT, "mail").await.is_unlimited(),
        "no refused body set anything"
    );
    for name in ["a%20b", "%00", &"q".repeat(200)] {
        let path = format!("/v1/queues/{name}");
        let (status, problem) = api.put(&path, every_limit()).await;
        assert_problem(status, &problem, StatusCode::BAD_REQUEST, "validation");
        assert_eq!(named(status, &problem), ["name"]);
        let (status, problem) = api.get(&path).await;
        assert_eq!(named(status, &problem), ["name"]);
    }
}

async fn limits_belong_to_the_tenant_of_the_key(db: TestDb) {
    let acme = db.store.create_api_key("acme").await.unwrap().secret;
    let globex = db.store.create_api_key("globex").await.unwrap().secret;
    let api = Api::start(&db.store).await;
    let (acme, globex) = (api.as_key(&acme), api.as_key(&globex));
    assert_eq!(
        api.put("/v1/queues/mail", every_limit()).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (status, view) = acme.put("/v1/queues/mail", every_limit()).await;
    assert_eq!((status, &view["limits"]), (StatusCode::OK, &every_limit()));
    let theirs = json!({"concurrency": 7});
    globex.put("/v1/queues/mail", theirs).await;
    assert_eq!(stored(&db, "acme", "mail").await.concurrency, Some(5));
    assert_eq!(stored(&db, "globex", "mail").await.concurrency, Some(7));
    let every_tenant = db
        .store
        .queue_limits(QueueScope::AllTenants, "mail")
        .await
        .unwrap();
    assert!(
        every_tenant.is_unlimited(),
        "a tenant never limits the others"
    );

    let (_, view) = globex.get("/v1/queues/mail").await;
    assert_eq!(view["limits"]["concurrency"], 7, "{view}");
    assert_eq!(view["limits"]["rate"], Value::Null, "{view}");
    let (_, view) = acme.get("/v1/queues/mail").await;
    assert_eq!(view["limits"], every_limit(), "{view}");
    acme.put("/v1/queues/mail", json!({})).await;
    assert_eq!(
        stored(&db, "globex", "mail").await.concurrency,
        Some(7),
        "nor lifts theirs"
    );
}

async fn jobs_carry_their_concurrency_key(db: TestDb) {
    let api = Api::start(&db.store).await;
    let id = api
        .create(json!({"kind": "sync", "concurrency_key": "customer-42"}))
        .await;
    let (status, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (status, &job["concurrency_key"]),
        (StatusCode::OK, &json!("customer-42"))
    );
    let plain = api.create(json!({"kind": "sync"})).await;
    let (_, job) = api.get(&format!("/v1/jobs/{plain}")).await;
    assert_eq!(job["concurrency_key"], Value::Null, "{job}");

    let batch = json!({"jobs": [
        {"kind": "sync", "concurrency_key": "customer-1"},
        {"kind": "sync", "concurrency_key": "é".repeat(127)},
    ]});
    let (status, created) = api.post("/v1/jobs/batch", batch).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(created["jobs"][0]["concurrency_key"], "customer-1");
    let id = created["jobs"][1]["id"].as_str().unwrap();
    let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["concurrency_key"], "é".repeat(127));
}

async fn invalid_concurrency_keys_are_400_naming_the_field(db: TestDb) {
    let api = Api::start(&db.store).await;
    for key in [
        json!(""),
        json!("a\u{0}b"),
        json!("k".repeat(256)),
        json!("é".repeat(128)),
    ] {
        let (status, problem) = api
            .post("/v1/jobs", json!({"kind": "k", "concurrency_key": key}))
            .await;
        assert_problem(status, &problem, StatusCode::BAD_REQUEST, "validation");
        assert_eq!(named(status, &problem), ["concurrency_key"]);
        let batch = json!({"jobs": [{"kind": "k"}, {"kind": "k", "concurrency_key": key}]});
        let (status, problem) = api.post("/v1/jobs/batch", batch).await;
        assert_eq!(named(status, &problem), ["jobs[1].concurrency_key"]);
    }
    for key in [json!(42), json!(["a"]), json!({"k": 1})] {
        let (status, problem) = api
            .post("/v1/jobs", json!({"kind": "k", "concurrency_key": key}))
            .await;
        assert_eq!(named(status, &problem), ["concurrency_key"]);
    }
    let (_, list) = api.get("/v1/jobs").await;
    assert_eq!(list["items"], json!([]), "nothing was created");
}

/// Precise enough that generated valid bodies are accepted and out-of-range ones refused.
async fn the_schema_states_each_range(db: TestDb) {
    let api = Api::start(&db.store).await;
    let (_, doc) = api.get("/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    let limits = &schemas["QueueLimitsBody"];
    assert_eq!(limits["additionalProperties"], false, "{limits}");
    for count in ["concurrency", "key_concurrency"] {
        let field = &limits["properties"][count];
        assert_eq!(
            (&field["minimum"], &field["maximum"]),
            (&json!(1), &json!(1_000_000)),
            "{field}"
        );
        assert_eq!(field["type"], json!(["integer", "null"]), "{field}");
    }
    let rate = &schemas["RateBody"];
    assert_eq!(
        rate["required"],
        json!(["limit", "period_seconds"]),
        "{rate}"
    );
    let period = &rate["properties"]["period_seconds"];
    assert_eq!(
        (&period["minimum"], &period["maximum"]),
        (&json!(1), &json!(86_400))
    );
    assert_eq!(period["type"], "integer", "never null: {period}");
    let view = &schemas["QueueView"]["properties"];
    for field in [
        "limits",
        "all_tenants_limits",
        "running",
        "throttled",
        "paused",
    ] {
        assert!(view[field].is_object(), "QueueView.{field}: {view}");
    }
    let key = &schemas["CreateJob"]["properties"]["concurrency_key"];
    assert_eq!(
        (&key["minLength"], &key["maxLength"]),
        (&json!(1), &json!(255)),
        "{key}"
    );
    let put = &doc["paths"]["/v1/queues/{name}"]["put"];
    assert!(
        put["requestBody"]["content"]["application/json"].is_object(),
        "{put}"
    );
}
