//! Request extractors that fail with problem documents: a size-limited JSON body that
//! names the offending field, query strings, the caller's tenant (API keys, cached), leave
//! to read metrics, and the trace id.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, http::header, web};
use futures::StreamExt;
use jobs_core::{JobError, KeyLookup};
use moka::future::Cache;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::{ApiState, AuthMode, error::ApiError};

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
        Box::pin(read_json(req, payload, limit))
    }
}

/// A JSON body that carries a job's result (a completion): as [`Json`], up to
/// `ApiConfig::result_body_limit` instead, so results up to the store's largest fit.
#[derive(Debug)]
pub struct ResultJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ResultJson<T> {
    type Error = ApiError;
    type Future = Pending<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let config = &state(req).config;
        let limit = config.result_body_limit.max(config.body_limit);
        let body = read_json(req, payload, limit);
        Box::pin(async move { body.await.map(|Json(body)| ResultJson(body)) })
    }
}

fn read_json<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> impl Future<Output = Result<Json<T>, ApiError>> + 'static {
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
    async move {
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

/// Errors name the parameter at fault (`created_after`), or `query` when no one is.
fn serde_urlencoded_path<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let pairs = form_urlencoded::parse(query.as_bytes());
    serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs)).map_err(|e| {
        let field = match e.path().to_string() {
            path if path == "." => "query".to_owned(),
            path => path,
        };
        ApiError::malformed(field, e.into_inner().to_string())
    })
}

impl ApiState {
    /// Whether requests need an API key now (see [`AuthMode`]).
    pub(crate) async fn auth_required(&self) -> Result<bool, ApiError> {
        Ok(match self.config.auth {
            AuthMode::Off => false,
            AuthMode::Required => true,
            AuthMode::Auto => self.auth.census(&*self.store).await?.any,
        })
    }
}

/// The tenant the caller acts for: from its API key, or the default tenant while
/// authentication is off (see [`AuthMode`]).
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

impl FromRequest for Tenant {
    type Error = ApiError;
    type Future = Pending<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state(req);
        let credentials = bearer_token(req);
        Box::pin(async move {
            if !state.auth_required().await? {
                return Ok(Tenant(jobs_core::limits::DEFAULT_TENANT.to_owned()));
            }
            state
                .auth
                .authenticate(&*state.store, credentials)
                .await
                .map(Tenant)
        })
    }
}

/// Leave to read `/metrics`: always, unless `ApiConfig::metrics_require_key`; then only
/// with a valid API key, of any tenant.
#[derive(Debug, Clone, Copy)]
pub struct MetricsAccess;

impl FromRequest for MetricsAccess {
    type Error = ApiError;
    type Future = Pending<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state(req);
        let credentials = bearer_token(req);
        Box::pin(async move {
            if state.config.metrics_require_key {
                state.auth.authenticate(&*state.store, credentials).await?;
            }
            Ok(MetricsAccess)
        })
    }
}

macro_rules! send_bearer {
    ($what:literal) => {
        concat!($what, "; send `Authorization: Bearer <api key>`")
    };
}

/// The secret of `Authorization: Bearer <secret>`: the scheme in any case, any amount
/// of whitespace after it. `Err` says what is wrong and what to send instead.
fn bearer_token(req: &HttpRequest) -> Result<String, &'static str> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(send_bearer!("no Authorization header"))?
        .to_str()
        .map_err(|_| send_bearer!("the Authorization header is not plain text"))?
        .trim();
    let (scheme, token) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(send_bearer!("the Authorization scheme is not Bearer"));
    }
    match token.trim() {
        "" => Err(send_bearer!("the bearer token is empty")),
        token => Ok(token.to_owned()),
    }
}

/// Whether keys exist at all, and whether any is active.
#[derive(Debug, Clone, Copy)]
pub struct Census {
    /// A key was created at some time, revoked or not.
    pub any: bool,
    pub active: bool,
}

const NO_KEY_YET: &str = "authentication is required and no API key exists; create one with `jobs-api keys create --tenant NAME`";
const ALL_REVOKED: &str =
    "every API key is revoked; create one with `jobs-api keys create --tenant NAME`";

/// What the api knows of API keys, cached: each key lookup (found or not) by the SHA-256
/// of its secret for `key_cache_ttl`, and the [`Census`] for at most `CENSUS_REFRESH`,
/// so new and revoked keys take effect without a restart and a request costs no
/// database round trip while its key is cached. Concurrent lookups of one key share a
/// query; errors are not cached.
pub struct Auth {
    keys: Cache<[u8; 32], Option<Arc<str>>>,
    census: Cache<(), Census>,
}

/// Most keys remembered; past that the least useful are dropped (and looked up again).
const KEY_CACHE_CAPACITY: u64 = 10_000;
/// Longest time before new or revoked keys are noticed by [`AuthMode::Auto`].
const CENSUS_REFRESH: Duration = Duration::from_secs(2);

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("cached_keys", &self.keys.entry_count())
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(key_ttl: Duration) -> Self {
        Self {
            keys: Cache::builder()
                .max_capacity(KEY_CACHE_CAPACITY)
                .time_to_live(key_ttl)
                .build(),
            census: Cache::builder()
                .max_capacity(1)
                .time_to_live(key_ttl.min(CENSUS_REFRESH))
                .build(),
        }
    }

    pub async fn census(&self, store: &(impl KeyLookup + ?Sized)) -> Result<Census, ApiError> {
        self.census
            .try_get_with((), async {
                let any = store.has_any_keys().await?;
                let active = any && store.has_active_keys().await?;
                Ok::<_, JobError>(Census { any, active })
            })
            .await
            .map_err(|e| ApiError::from(JobError::clone(&e)))
    }

    /// The tenant of a valid key; else 401 saying why (no active key at all, nothing
    /// usable sent, or an unknown or revoked key).
    async fn authenticate(
        &self,
        store: &(impl KeyLookup + ?Sized),
        credentials: Result<String, &'static str>,
    ) -> Result<String, ApiError> {
        let census = self.census(store).await?;
        if !census.active {
            let why = if census.any { ALL_REVOKED } else { NO_KEY_YET };
            return Err(ApiError::unauthorized(why));
        }
        let secret = credentials.map_err(ApiError::unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let tenant = self
            .keys
            .try_get_with(digest, async {
                let tenant = store.tenant_for_key(&secret).await?;
                Ok::<_, JobError>(tenant.map(Arc::from))
            })
            .await
            .map_err(|e| ApiError::from(JobError::clone(&e)))?;
        match tenant {
            Some(tenant) => Ok(tenant.to_string()),
            None => Err(ApiError::unauthorized("unknown or revoked API key")),
        }
    }

    /// Warns when the api will serve without authentication, or refuse every request.
    pub async fn warn_at_start(&self, store: &(impl KeyLookup + ?Sized), mode: AuthMode) {
        const CREATE: &str = "create one with `jobs-api keys create --tenant NAME`";
        if mode == AuthMode::Off {
            tracing::warn!(
                "authentication is off (auth mode `off`): every request acts for the default tenant and API keys are ignored"
            );
            return;
        }
        match self.census(store).await {
            Ok(Census { any: false, .. }) if mode == AuthMode::Auto => tracing::warn!(
                "no API key was ever created: serving a single tenant without authentication ({CREATE}; auth mode `required` refuses requests until then)"
            ),
            Ok(Census { active: false, any }) => {
                let why = if any {
                    "every API key is revoked"
                } else {
                    "authentication is required and no API key exists"
                };
                tracing::warn!("{why}: every request is refused with 401 ({CREATE})");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(
                %error,
                "could not read the API keys at start; each request checks them again"
            ),
        }
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

/// Whether the request asks for a minimal answer with `Prefer: return=minimal` (RFC
/// 7240). Other preferences, and malformed ones, are ignored, as the RFC says.
pub struct ReturnMinimal(pub bool);

impl ReturnMinimal {
    /// The response header that tells the client its preference was applied.
    pub const APPLIED: (&'static str, &'static str) = ("preference-applied", "return=minimal");

    fn of(req: &HttpRequest) -> bool {
        req.headers()
            .get_all("prefer")
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|preference| {
                // `token [= value] *( ";" parameter )`; the value may be quoted.
                let preference = preference.split(';').next().unwrap_or_default();
                let (token, value) = preference.split_once('=').unwrap_or((preference, ""));
                token.trim().eq_ignore_ascii_case("return")
                    && value
                        .trim()
                        .trim_matches('"')
                        .eq_ignore_ascii_case("minimal")
            })
    }
}

impl FromRequest for ReturnMinimal {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Self(Self::of(req))))
    }
}
