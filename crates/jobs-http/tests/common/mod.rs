//! A real server on a real socket for each test, and a small client for it.
#![allow(dead_code)] // each test binary uses a part of it

use std::{net::TcpListener, sync::OnceLock};

use jobs_http::{ApiConfig, ApiState};
use jobs_store::SeaOrmStore;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub key: Option<String>,
}

fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("recorder")
        })
        .clone()
}

impl Api {
    pub async fn start(store: &SeaOrmStore) -> Api {
        Self::start_with(
            store,
            ApiConfig {
                body_limit: 64 * 1024,
                workers: Some(1),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn start_with(store: &SeaOrmStore, mut config: ApiConfig) -> Api {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if config.files.is_none() {
            // Kept after the test: the operating system's temporary directory is swept.
            let dir = tempfile::tempdir().unwrap().keep();
            config.files = Some(jobs_files::FileStorage::local(dir).unwrap());
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = ApiState::new(store.clone(), config, Some(metrics()))
            .await
            .unwrap();
        let server = jobs_http::server(listener, state).unwrap();
        tokio::spawn(server);
        Api {
            base,
            http: reqwest::Client::new(),
            key: None,
        }
    }

    /// The same server, as the holder of another API key.
    pub fn as_key(&self, key: &str) -> Api {
        Api {
            key: Some(key.to_owned()),
            ..self.clone()
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self.raw(method, path, body).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// Status, content type and body text.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, String, String) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request).await
    }

    /// A JSON body as text, for numbers `Value` cannot hold (`1e400`, `18446744073709551616`).
    pub async fn send_text(&self, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
        let request = self
            .request(method, path)
            .header("content-type", "application/json")
            .body(body.to_owned());
        let (status, _, body) = answer(request).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// A request to this server, with its key, for headers the helpers above do not set.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a job and returns its id.
    pub async fn create(&self, body: Value) -> String {
        let (status, job) = self.post("/v1/jobs", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        job["id"].as_str().unwrap().to_owned()
    }
}

/// Status, content type and body text of the answer.
async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, String, String) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// Asserts a problem+json answer with this status and stable type.
pub fn assert_problem(status: StatusCode, body: &Value, expected: StatusCode, kind: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["type"], format!("urn:jobs:problem:{kind}"), "{body}");
    assert_eq!(body["status"], expected.as_u16(), "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
}
