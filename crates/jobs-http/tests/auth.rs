//! Authentication over a real socket, each body on SQLite and PostgreSQL: it never falls
//! open, whatever happens to the keys, and says what to send.

mod common;

use std::time::Duration;

use common::{Api, assert_problem};
use jobs_http::{ApiConfig, AuthMode};
use jobs_store::{backend_tests, testing::TestDb};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    revoking_every_key_keeps_auth_on,
    auth_off_serves_everyone_as_the_default_tenant,
    auth_required_refuses_requests_before_the_first_key,
    bearer_is_any_case_and_anything_else_says_what_to_send,
    metrics_can_require_a_key,
    the_document_declares_the_key_only_while_one_is_required,
);

/// How long these tests' apis cache what they know of keys.
const TTL: Duration = Duration::from_millis(200);

async fn start(db: &TestDb, config: ApiConfig) -> Api {
    let config = ApiConfig {
        workers: Some(1),
        key_cache_ttl: TTL,
        ..config
    };
    Api::start_with(&db.store, config).await
}

/// Waits until the api has forgotten what it knew of keys.
async fn expire() {
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
}

fn assert_unauthorized(status: StatusCode, body: &Value, detail: &str) {
    assert_problem(status, body, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(body["detail"].as_str().unwrap().contains(detail), "{body}");
}

async fn revoking_every_key_keeps_auth_on(db: TestDb) {
    let api = start(&db, ApiConfig::default()).await;
    let old = db.store.create_api_key("acme").await.unwrap();
    expire().await;
    assert_eq!(
        api.as_key(&old.secret).get("/v1/jobs").await.0,
        StatusCode::OK
    );

    db.store.revoke_api_key(old.id).await.unwrap();
    expire().await;
    for caller in [api.clone(), api.as_key(&old.secret)] {
        let (status, body) = caller.get("/v1/jobs").await;
        assert_unauthorized(
            status,
            &body,
            "every API key is revoked; create one with `jobs-api keys create",
        );
    }

    let new = db.store.create_api_key("acme").await.unwrap().secret;
    expire().await;
    assert_eq!(api.as_key(&new).get("/v1/jobs").await.0, StatusCode::OK);
    let (status, body) = api.as_key(&old.secret).get("/v1/jobs").await;
    assert_unauthorized(status, &body, "unknown or revoked API key");
}

async fn auth_off_serves_everyone_as_the_default_tenant(db: TestDb) {
    let key = db.store.create_api_key("acme").await.unwrap().secret;
    let off = ApiConfig {
        auth: AuthMode::Off,
        ..Default::default()
    };
    let api = start(&db, off).await;
    let id = api.create(json!({"kind": "k"})).await;
    let (status, _) = api.as_key(&key).get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "the key is ignored: one tenant");
}

async fn auth_required_refuses_requests_before_the_first_key(db: TestDb) {
    let required = ApiConfig {
        auth: AuthMode::Required,
        ..Default::default()
    };
    let api = start(&db, required).await;
    let (status, body) = api.get("/v1/jobs").await;
    assert_unauthorized(status, &body, "no API key exists; create one with");
    let key = db.store.create_api_key("acme").await.unwrap().secret;
    expire().await;
    assert_eq!(api.as_key(&key).get("/v1/jobs").await.0, StatusCode::OK);
}

async fn bearer_is_any_case_and_anything_else_says_what_to_send(db: TestDb) {
    let api = start(&db, ApiConfig::default()).await;
    let key = db.store.create_api_key("acme").await.unwrap().secret;
    expire().await;
    let send = |authorization: Option<String>| {
        let mut request = api.http.get(format!("{}/v1/jobs", api.base));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    for good in [
        format!("bearer {key}"),
        format!("BEARER   {key}"),
        format!("Bearer\t{key} "),
    ] {
        assert_eq!(send(Some(good.clone())).await.0, StatusCode::OK, "{good}");
    }
    for bad in [
        None,
        Some("Basic YWNtZTpzZWNyZXQ=".to_owned()),
        Some("Bearer   ".to_owned()),
        Some(key.clone()),
    ] {
        let (status, body) = send(bad).await;
        assert_unauthorized(status, &body, "send `Authorization: Bearer <api key>`");
    }
}

async fn metrics_can_require_a_key(db: TestDb) {
    let guarded = ApiConfig {
        metrics_require_key: true,
        ..Default::default()
    };
    let api = start(&db, guarded).await;
    let key = db.store.create_api_key("acme").await.unwrap().secret;
    expire().await;
    let (status, _, body) = api.raw(Method::GET, "/metrics", None).await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_unauthorized(status, &body, "no Authorization header");
    let (status, _, _) = api.as_key(&key).raw(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);

    let open = start(&db, ApiConfig::default()).await;
    let (status, _, _) = open.raw(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK, "open by default, even with keys");
}

/// Clients generated from the document send a key exactly when the api wants one.
async fn the_document_declares_the_key_only_while_one_is_required(db: TestDb) {
    let declares_key = |doc: &Value| {
        let global = doc["security"] == json!([{"api_key": []}]);
        let per_operation = doc["paths"]["/v1/jobs"]["get"]["responses"]["401"].is_object();
        assert_eq!(global, per_operation, "global and per-operation agree");
        global
    };
    let off = start(
        &db,
        ApiConfig {
            auth: AuthMode::Off,
            ..ApiConfig::default()
        },
    )
    .await;
    let auto = start(&db, ApiConfig::default()).await;
    assert!(!declares_key(&auto.get("/openapi.json").await.1));
    assert!(
        auto.get("/openapi.json").await.1["components"]["securitySchemes"]["api_key"].is_object(),
        "the scheme stays described for when keys are added"
    );

    db.store.create_api_key("acme").await.unwrap();
    expire().await;
    assert!(declares_key(&auto.get("/openapi.json").await.1));
    assert!(!declares_key(&off.get("/openapi.json").await.1));
    let required = start(
        &db,
        ApiConfig {
            auth: AuthMode::Required,
            ..ApiConfig::default()
        },
    )
    .await;
    assert!(declares_key(&required.get("/openapi.json").await.1));
}
