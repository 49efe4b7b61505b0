//! Queue control for the caller's tenant: pause and resume a queue, set its limits, and
//! read it.

use actix_web::{HttpResponse, get, post, put, web};
use jobs_core::{QueueScope, QueueStats, validate_queue_name};
use serde::Deserialize;
use utoipa::IntoParams;

use super::Data;
use crate::{
    dto::QueueView,
    error::{ApiError, Problem},
    extract::{Json, Tenant},
    limits::QueueLimitsBody,
};

/// The queue a path names.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only documents the path parameter.
pub struct QueuePath {
    /// The queue
    #[param(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:/-]+$")]
    name: String,
}

/// Stops new claims of the queue's jobs for this tenant in every process (remote workers
/// included) from the moment it answers; running jobs finish. An unknown queue is fine:
/// it exists, paused, from then on.
#[utoipa::path(post, path = "/v1/queues/{name}/pause", tag = "queues", params(QueuePath),
    responses(
        (status = 200, description = "The queue, paused", body = QueueView),
        (status = 400, description = "Not a queue name (`errors` names `name`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/queues/{name}/pause")]
pub async fn pause_queue(
    state: Data,
    Tenant(tenant): Tenant,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_paused(&state, &tenant, &name, true).await
}

/// Lets claims of the queue's jobs resume for this tenant and wakes idle workers at once.
/// A pause made for every tenant by an operator stays.
#[utoipa::path(post, path = "/v1/queues/{name}/resume", tag = "queues", params(QueuePath),
    responses(
        (status = 200, description = "The queue, resumed", body = QueueView),
        (status = 400, description = "Not a queue name (`errors` names `name`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/queues/{name}/resume")]
pub async fn resume_queue(
    state: Data,
    Tenant(tenant): Tenant,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_paused(&state, &tenant, &name, false).await
}

/// The queue as this tenant sees it: jobs by state, pause, limits, running and throttled
/// jobs. An unknown queue is shown empty.
#[utoipa::path(get, path = "/v1/queues/{name}", tag = "queues", params(QueuePath),
    responses(
        (status = 200, body = QueueView),
        (status = 400, description = "Not a queue name (`errors` names `name`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/queues/{name}")]
pub async fn get_queue(
    state: Data,
    Tenant(tenant): Tenant,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    validate_queue_name("name", &name)?;
    view(&state, &tenant, &name).await
}

/// Replaces this tenant's limits of the queue: what the body leaves out (or sets to
/// `null`) is no limit, so `{}` lifts them all. They count this tenant's jobs, in every
/// process (remote workers included), and hold for every claim that starts after this
/// answers; limits an operator set for every tenant hold as well.
#[utoipa::path(put, path = "/v1/queues/{name}", tag = "queues", params(QueuePath), request_body = QueueLimitsBody,
    responses(
        (status = 200, description = "The queue, with its new limits", body = QueueView),
        (status = 400, description = "Not a queue name, malformed JSON, wrong type, unknown field, or a setting out of range (`errors` names each field: `name`, `concurrency`, `rate.period_seconds`...)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[put("/v1/queues/{name}")]
pub async fn set_queue_limits(
    state: Data,
    Tenant(tenant): Tenant,
    name: web::Path<String>,
    Json(body): Json<QueueLimitsBody>,
) -> Result<HttpResponse, ApiError> {
    validate_queue_name("name", &name)?;
    let limits = body.into_limits()?;
    let scope = QueueScope::Tenant(&tenant);
    state.store.set_queue_limits(scope, &name, &limits).await?;
    view(&state, &tenant, &name).await
}

async fn set_paused(
    state: &crate::ApiState,
    tenant: &str,
    queue: &str,
    paused: bool,
) -> Result<HttpResponse, ApiError> {
    validate_queue_name("name", queue)?;
    let scope = QueueScope::Tenant(tenant);
    if paused {
        state.store.pause_queue(scope, queue).await?;
    } else {
        state.store.resume_queue(scope, queue).await?;
    }
    view(state, tenant, queue).await
}

/// 200 with the queue as the tenant sees it.
async fn view(
    state: &crate::ApiState,
    tenant: &str,
    queue: &str,
) -> Result<HttpResponse, ApiError> {
    let stats = state.store.queue_stats(Some(tenant)).await?;
    let view = stats
        .into_iter()
        .find(|s| s.queue == queue)
        .unwrap_or_else(|| QueueStats::empty(queue));
    Ok(HttpResponse::Ok().json(QueueView::from(view)))
}
