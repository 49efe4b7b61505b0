//! Request extractors that fail with problem documents: a size-limited JSON body that
//! names the offending field, query strings, the caller's tenant, and the trace id.

use std::{
    future::Future,
    pin::Pin,
    sync::Mutex,
    time::{Duration, Instant},
};

use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, http::header, web};
use futures::StreamExt;
use jobs_store::SeaOrmStore;
use serde::de::DeserializeOwned;

use crate::{ApiState, error::ApiError};

type Pending<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

fn state(req: &HttpRequest) -> web::Data<ApiState> {
    req.app_data::<web::Data<ApiState>>()
        .expect("ApiState is registered")
        .clone()
}

/// A JSON body: over the limit -> 413; not JSON -> 400; wrong type or unknown field -> 400
/// naming the path (`jobs[3].priority`).
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pending<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = state(req).config.body_limit;
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let declared_length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if let Some(ct) = content_type.filter(|ct| !ct.starts_with("application/json")) {
                return Err(ApiError::unsupported_media_type(&ct));
            }
            if declared_length.is_some_and(|n| n > limit) {
                return Err(ApiError::too_large(limit));
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| ApiError::malformed(String::new(), e.to_string()))?;
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::too_large(limit));
                }
                body.extend_from_slice(&chunk);
            }
            let deserializer = &mut serde_json::Deserializer::from_slice(&body);
            serde_path_to_error::deserialize(deserializer)
                .map(Json)
                .map_err(|e| {
                    let path = e.path().to_string();
                    ApiError::malformed(path, e.into_inner().to_string())
                })
        })
    }
}

/// A query string; unknown or mistyped parameters -> 400 naming the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parsed = serde_urlencoded_path(req.query_string());
        std::future::ready(parsed.map(Query))
    }
}

fn serde_urlencoded_path<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    web::Query::<T>::from_query(query)
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::malformed("query".into(), e.to_string()))
}

/// The tenant the caller acts for: from its API key, or the single default tenant when
/// no keys are configured.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

impl FromRequest for Tenant {
    type Error = ApiError;
    type Future = Pending<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state(req);
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").map(str::trim).map(str::to_owned));
        Box::pin(async move {
            if !state.auth.keys_configured(&state.store).await? {
                return Ok(Tenant(jobs_core::limits::DEFAULT_TENANT.to_owned()));
            }
            let Some(Some(secret)) = bearer else {
                return Err(ApiError::unauthorized(
                    "send Authorization: Bearer <api key>",
                ));
            };
            match state.store.tenant_for_key(&secret).await? {
                Some(tenant) => Ok(Tenant(tenant)),
                None => Err(ApiError::unauthorized("unknown or revoked API key")),
            }
        })
    }
}

/// Whether any API key exists, re-read every few seconds so new keys take effect
/// without a restart.
#[derive(Debug, Default)]
pub struct Auth {
    cached: Mutex<Option<(bool, Instant)>>,
}

const AUTH_REFRESH: Duration = Duration::from_secs(2);

impl Auth {
    async fn keys_configured(&self, store: &SeaOrmStore) -> Result<bool, ApiError> {
        if let Some((configured, at)) = *self.cached.lock().expect("auth cache") {
            if at.elapsed() < AUTH_REFRESH {
                return Ok(configured);
            }
        }
        let configured = store.has_active_keys().await?;
        *self.cached.lock().expect("auth cache") = Some((configured, Instant::now()));
        Ok(configured)
    }
}

/// The request's trace id: the trace-id of a W3C `traceparent`, else `X-Request-Id`.
#[derive(Debug, Clone)]
pub struct TraceId(pub Option<String>);

impl TraceId {
    pub fn of(req: &HttpRequest) -> Self {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let from_traceparent = header("traceparent").and_then(|tp| {
            let parts: Vec<&str> = tp.trim().split('-').collect();
            (parts.len() == 4
                && parts[1].len() == 32
                && parts[1].bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| parts[1].to_ascii_lowercase())
        });
        let id = from_traceparent.or_else(|| {
            header("x-request-id")
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| v.chars().take(255).collect())
        });
        Self(id)
    }
}

impl FromRequest for TraceId {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req
            .extensions()
            .get::<TraceId>()
            .cloned()
            .unwrap_or_else(|| TraceId::of(req));
        std::future::ready(Ok(id))
    }
}
