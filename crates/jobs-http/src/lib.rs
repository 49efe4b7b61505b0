//! The HTTP API of the job system (actix-web): jobs, remote workers, queues, health,
//! metrics and the OpenAPI document. Errors are problem+json; the caller's API key
//! decides its tenant. While the database's schema does not fit this binary (older, or
//! newer and incompatible) every `/v1` request is answered 503 without touching a row.

mod coalesce;
mod dto;
mod error;
mod extract;
mod limits;
mod routes;
mod ui;
mod unique;

use std::{
    net::TcpListener,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use actix_web::{
    App, HttpMessage, HttpRequest, HttpServer, ResponseError,
    body::{EitherBody, MessageBody},
    dev::{Server, ServiceRequest, ServiceResponse},
    middleware::{Next, from_fn},
    web,
};
use jobs_core::ApiBackend;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;
use utoipa::OpenApi;

pub use coalesce::{Coalescer, EnqueueCoalescer, GetCoalescer};
pub use error::{ApiError, Problem};
pub use extract::TraceId;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Largest accepted body of a completion (`POST /v1/jobs/{id}/complete`), which
    /// carries the result: the store's largest result plus room for the rest.
    pub result_body_limit: usize,
    /// HTTP worker threads; `None`: one per core.
    pub workers: Option<usize>,
    /// Whether requests must carry an API key.
    pub auth: AuthMode,
    /// `/metrics` answers only requests with a valid API key (any tenant's), whatever
    /// `auth` says.
    pub metrics_require_key: bool,
    /// How long a key lookup is remembered, found or not (at most 10,000 keys, by the
    /// SHA-256 of the secret, never the secret): a revoked key keeps working, and a key
    /// tried before it was created keeps failing, for up to this long. Whether any key
    /// exists (for [`AuthMode::Auto`] and the revoked-keys answer) is re-read every
    /// 2 s, or this often if shorter.
    pub key_cache_ttl: Duration,
    /// An event stream with nothing to report sends a `: keep-alive` comment this often,
    /// so proxies keep it open. It is also how a client that went away is noticed: the
    /// server learns of it only when a write fails, within about two intervals, and the
    /// stream's slot (see `max_event_streams`) comes back then.
    pub event_keep_alive: Duration,
    /// Most event streams open at once on this process; past that, 429
    /// `too-many-streams` with `Retry-After: 1`.
    pub max_event_streams: usize,
    /// Where job files are kept; without one the file routes answer 503.
    pub files: Option<jobs_files::FileStorage>,
    /// Largest file accepted, in bytes (413 past it).
    pub file_limit: u64,
    /// The API's address as clients reach it (`https://jobs.example.com`), for the
    /// download URLs of files; default: the scheme and host each request came with.
    pub public_url: Option<String>,
    /// Hosts webhook subscriptions may name: the `http` handler's allow list
    /// (`--http-allow-host`); empty refuses every subscription.
    pub webhook_hosts: jobs_core::AllowedHosts,
    /// Serve the dashboard at `/ui` (`--no-ui` turns it off).
    pub ui: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_limit: 1 << 20,
            result_body_limit: (16 << 20) + (1 << 20),
            workers: None,
            auth: AuthMode::Auto,
            metrics_require_key: false,
            key_cache_ttl: Duration::from_secs(5),
            event_keep_alive: Duration::from_secs(15),
            max_event_streams: 1_000,
            files: None,
            file_limit: 100 << 20,
            public_url: None,
            webhook_hosts: jobs_core::AllowedHosts::default(),
            ui: true,
        }
    }
}

/// Whether requests must carry an API key (`Authorization: Bearer <key>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// The laptop default: no authentication only while no API key was ever created;
    /// once one was (revoked ones count), every request needs a valid key, so revoking
    /// them all refuses every request instead of switching authentication off.
    #[default]
    Auto,
    /// Every request needs a valid key, even while none exists: fail closed.
    Required,
    /// No authentication: every request acts for the default tenant and keys are
    /// ignored. Logged as a warning at start.
    Off,
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "required" => Ok(Self::Required),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "unknown auth mode {other:?}: expected auto, required or off"
            )),
        }
    }
}

impl std::fmt::Display for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Required => "required",
            Self::Off => "off",
        })
    }
}

/// What every handler shares.
pub struct ApiState {
    /// The backend, known only by its ports: any `ApiBackend` serves.
    store: Arc<dyn ApiBackend>,
    config: ApiConfig,
    auth: extract::Auth,
    metrics: Option<PrometheusHandle>,
    /// Fired on every enqueue wake-up, for claim long-polls.
    wake: Arc<Notify>,
    /// Single creates from concurrent requests share inserts and commits.
    enqueuer: EnqueueCoalescer,
    /// Single reads by id from concurrent requests share a query.
    reader: GetCoalescer,
    /// One permit per open event stream, held by the stream until it is dropped.
    event_streams: Arc<Semaphore>,
    /// Why `/v1` requests are refused: the schema does not fit this binary. Checked at
    /// start and every `SCHEMA_RECHECK`; an unreachable database leaves it as it was.
    schema_refusal: Arc<RwLock<Option<String>>>,
}

// By hand: a backend need not be `Debug`.
impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("config", &self.config)
            .field("schema_refusal", &self.schema_refusal())
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// Subscribes to enqueue wake-ups (LISTEN on PostgreSQL) for claim long-polls, and
    /// logs a warning when the api will serve without authentication, or refuse every
    /// request for want of an active key.
    pub async fn new(
        store: impl ApiBackend,
        config: ApiConfig,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, jobs_core::JobError> {
        let store: Arc<dyn ApiBackend> = Arc::new(store);
        let wake = Arc::new(Notify::new());
        let mut wakeups = store.subscribe().await?;
        let notify = wake.clone();
        tokio::spawn(async move {
            loop {
                wakeups.next().await;
                notify.notify_waiters();
            }
        });
        let auth = extract::Auth::new(config.key_cache_ttl);
        auth.warn_at_start(&*store, config.auth).await;
        let streams = config.max_event_streams.min(Semaphore::MAX_PERMITS);
        let event_streams = Arc::new(Semaphore::new(streams));
        let schema_refusal = Arc::new(RwLock::new(None));
        check_schema(&*store, &schema_refusal).await;
        tokio::spawn({
            let (store, refusal) = (store.clone(), schema_refusal.clone());
            async move {
                loop {
                    tokio::time::sleep(jobs_core::SCHEMA_RECHECK).await;
                    check_schema(&*store, &refusal).await;
                }
            }
        });
        Ok(Self {
            enqueuer: EnqueueCoalescer::spawn(store.clone()),
            reader: GetCoalescer::spawn(store.clone()),
            store,
            config,
            auth,
            event_streams,
            metrics,
            wake,
            schema_refusal,
        })
    }

    fn schema_refusal(&self) -> Option<String> {
        self.schema_refusal
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Sets or clears the reason to refuse `/v1` requests from the schema's fit.
/// No answer in time, or an error, leaves it as it was: an unreachable database says
/// nothing about the schema.
async fn check_schema(store: &dyn ApiBackend, refusal: &RwLock<Option<String>>) {
    let Ok(Ok(reason)) = tokio::time::timeout(Duration::from_secs(5), store.schema_refusal()).await
    else {
        return;
    };
    let mut current = refusal
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *current != reason {
        match &reason {
            Some(reason) => tracing::error!("refusing /v1 requests: {reason}"),
            None => tracing::info!("the schema fits this binary: serving /v1 requests"),
        }
        *current = reason;
    }
}

/// Serves the API on `listener` until the returned server is stopped.
pub fn server(listener: TcpListener, state: ApiState) -> std::io::Result<Server> {
    let workers = state.config.workers;
    let ui = state.config.ui;
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(from_fn(schema_gate))
            .wrap(from_fn(observe))
            .configure(routes)
            .configure(|cfg| {
                if ui {
                    ui::routes(cfg);
                }
            })
            .default_service(web::to(unknown_route))
    })
    // The caller decides when to stop (its own signal handling, or a test).
    .disable_signals()
    .shutdown_timeout(10);
    if let Some(workers) = workers {
        server = server.workers(workers);
    }
    Ok(server.listen(listener)?.run())
}

fn routes(cfg: &mut web::ServiceConfig) {
    // Literal paths before `/v1/jobs/{id}` templates.
    cfg.service(routes::create_batch)
        .service(routes::bulk::bulk_jobs)
        .service(routes::create_job)
        .service(routes::list_jobs)
        .service(routes::get_job)
        .service(routes::cancel_job)
        .service(routes::retry_job)
        .service(routes::job_events)
        .service(routes::claim)
        .service(routes::heartbeat)
        .service(routes::complete)
        .service(routes::fail)
        .service(routes::snooze::snooze)
        .service(routes::queues)
        .service(routes::queue_control::pause_queue)
        .service(routes::queue_control::resume_queue)
        .service(routes::queue_control::queue_throughput)
        .service(routes::queue_control::get_queue)
        .service(routes::queue_control::set_queue_limits)
        .service(routes::schedules::create_schedule)
        .service(routes::schedules::list_schedules)
        .service(routes::schedules::get_schedule)
        .service(routes::schedules::delete_schedule)
        .service(routes::schedules::pause_schedule)
        .service(routes::schedules::resume_schedule)
        .service(routes::workflows::create_workflow)
        .service(routes::workflows::list_workflows)
        .service(routes::workflows::get_workflow)
        .service(routes::workflows::cancel_workflow)
        .service(routes::workflows::retry_workflow)
        .service(routes::files::stage_file)
        .service(routes::files::upload_input)
        .service(routes::files::list_inputs)
        .service(routes::files::download_input)
        .service(routes::files::upload_result)
        .service(routes::files::list_results)
        .service(routes::files::download_result)
        .service(routes::webhooks::create_webhook)
        .service(routes::webhooks::list_webhooks)
        .service(routes::webhooks::delete_webhook)
        .service(routes::webhooks::test_webhook)
        .service(routes::me)
        .service(routes::healthz)
        .service(routes::readyz)
        .service(routes::metrics)
        .service(routes::openapi);
}

/// No route matched: 405 with `Allow` when the path exists under other methods, else 404.
async fn unknown_route(req: HttpRequest) -> actix_web::HttpResponse {
    let matching: Vec<_> = known_routes()
        .iter()
        .filter(|(pattern, _)| pattern.is_match(req.path()))
        .collect();
    // A literal path (`/v1/jobs/batch`) shadows a template that also matches it (`/v1/jobs/{id}`).
    let exact = matching
        .iter()
        .find(|(pattern, _)| pattern.pattern() == Some(req.path()));
    let allowed: Vec<&str> = match exact {
        Some((_, methods)) => methods.clone(),
        None => matching
            .iter()
            .flat_map(|(_, methods)| methods.iter().copied())
            .collect(),
    };
    if allowed.is_empty() {
        return ApiError::not_found(format!("no route for {} {}", req.method(), req.path()))
            .error_response();
    }
    let mut response =
        ApiError::method_not_allowed(req.method().as_str(), req.path()).error_response();
    let allow =
        actix_web::http::header::HeaderValue::from_str(&allowed.join(", ")).expect("method names");
    response
        .headers_mut()
        .insert(actix_web::http::header::ALLOW, allow);
    response
}

/// Each documented path and its methods, read once from the OpenAPI document, which is
/// generated from the routes themselves.
fn known_routes() -> &'static [(actix_web::dev::ResourceDef, Vec<&'static str>)] {
    static ROUTES: std::sync::OnceLock<Vec<(actix_web::dev::ResourceDef, Vec<&'static str>)>> =
        std::sync::OnceLock::new();
    ROUTES.get_or_init(|| {
        ApiDoc::openapi()
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("DELETE", item.delete.is_some()),
                ];
                let methods = methods
                    .into_iter()
                    .filter(|(_, has)| *has)
                    .map(|(m, _)| m)
                    .collect();
                (actix_web::dev::ResourceDef::new(path.as_str()), methods)
            })
            .collect()
    })
}

/// Answers `/v1` requests 503, naming the schema versions, while the schema does not fit
/// this binary; health, readiness, metrics and the OpenAPI document stay served.
async fn schema_gate<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    // The path as the router matches it: percent-encoded letters (`/%761/jobs`) decoded.
    let path = req.match_info().as_str();
    let api = path == "/v1" || path.starts_with("/v1/");
    let refusal = api
        .then(|| req.app_data::<web::Data<ApiState>>())
        .flatten()
        .and_then(|state| state.schema_refusal());
    match refusal {
        Some(detail) => {
            let response = ApiError::unavailable(detail).error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

/// Per request: the trace id for handlers and logs, request counts and latencies.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let trace = TraceId::of(req.request());
    req.extensions_mut().insert(trace.clone());
    let method = req.method().to_string();
    let span = tracing::info_span!("http", %method, path = %req.path(), trace_id = trace.0.as_deref().unwrap_or(""));
    let started = Instant::now();
    let response = next.call(req).instrument(span.clone()).await?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    let labels = [
        ("method", method),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed);
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed, "request failed");
        } else {
            tracing::debug!(status, elapsed, "request");
        }
    });
    Ok(response)
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "jobs", description = "A durable background-job system: create jobs, watch them, and run them from workers in any language."),
    paths(
        routes::create_job, routes::create_batch, routes::get_job, routes::list_jobs, routes::cancel_job,
        routes::retry_job, routes::job_events, routes::claim, routes::heartbeat, routes::complete, routes::fail,
        routes::snooze::snooze, routes::bulk::bulk_jobs, routes::queues, routes::queue_control::pause_queue, routes::queue_control::resume_queue,
        routes::queue_control::get_queue, routes::queue_control::set_queue_limits, routes::queue_control::queue_throughput,
        routes::schedules::create_schedule, routes::schedules::list_schedules,
        routes::schedules::get_schedule, routes::schedules::delete_schedule,
        routes::schedules::pause_schedule, routes::schedules::resume_schedule,
        routes::workflows::create_workflow, routes::workflows::list_workflows, routes::workflows::get_workflow,
        routes::workflows::cancel_workflow, routes::workflows::retry_workflow,
        routes::files::stage_file, routes::files::upload_input, routes::files::list_inputs, routes::files::download_input,
        routes::files::upload_result, routes::files::list_results, routes::files::download_result,
        routes::webhooks::create_webhook, routes::webhooks::list_webhooks, routes::webhooks::delete_webhook, routes::webhooks::test_webhook,
        routes::me, routes::healthz, routes::readyz, routes::metrics, routes::openapi,
    ),
    components(schemas(Problem, error::ProblemField, dto::JobEvent)),
    modifiers(&BearerAuth, &DescribeResponses),
    tags((name = "jobs"), (name = "workers", description = "For remote workers in any language"), (name = "queues"), (name = "operations"), (name = "workflows"), (name = "files"), (name = "webhooks")),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
    }
}

/// OpenAPI requires a description on every response; the common refusals are described
/// here once instead of on each of the routes that can give them.
struct DescribeResponses;

impl utoipa::Modify for DescribeResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for operation in operations_mut(openapi) {
            for (status, response) in &mut operation.responses.responses {
                if let RefOr::T(response) = response
                    && response.description.is_empty()
                {
                    response.description = common_description(status).to_owned();
                }
            }
        }
    }
}

fn common_description(status: &str) -> &'static str {
    match status {
        "400" => "The request is invalid; `fields` names each invalid field",
        "401" => "No valid API key: send `Authorization: Bearer <api key>`",
        "404" => "Not found (or another tenant's)",
        "409" => "Conflicts with the resource's current state",
        "413" => "The body is larger than the api accepts",
        "415" => "The body is not `application/json`",
        "429" => "Too many requests; retry after `Retry-After` seconds",
        "503" => "The database is unavailable or the schema does not fit this binary; retry later",
        _ => "Success",
    }
}

fn operations_mut(
    openapi: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
    })
}

/// The document as served: while the api runs without authentication (auth `off`, or
/// `auto` before the first key), it declares no security requirement, so clients
/// generated from it send no key.
pub(crate) fn served_openapi(auth_required: bool) -> &'static [u8] {
    use std::sync::OnceLock;
    static DOCUMENTS: [OnceLock<Vec<u8>>; 2] = [OnceLock::new(), OnceLock::new()];
    DOCUMENTS[usize::from(auth_required)].get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        if !auth_required {
            doc.security = None;
            for operation in operations_mut(&mut doc) {
                operation.security = None;
                operation.responses.responses.remove("401");
            }
        }
        serde_json::to_vec(&doc).expect("the OpenAPI document serializes")
    })
}
