//! Queue control: pause and resume a queue for the caller's tenant.

use actix_web::{HttpResponse, post, web};
use jobs_core::{QueueScope, QueueStats, validate_queue_name};

use super::Data;
use crate::{
    dto::QueueView,
    error::{ApiError, Problem},
    extract::Tenant,
};

/// Stops new claims of the queue's jobs for this tenant in every process (remote workers
/// included) from the moment it answers; running jobs finish. An unknown queue is fine:
/// it exists, paused, from then on.
#[utoipa::path(post, path = "/v1/queues/{name}/pause", tag = "queues", params(("name" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:/-]+$", description = "The queue")),
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
#[utoipa::path(post, path = "/v1/queues/{name}/resume", tag = "queues", params(("name" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:/-]+$", description = "The queue")),
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
    let stats = state.store.queue_stats(Some(tenant)).await?;
    let view = stats
        .into_iter()
        .find(|s| s.queue == queue)
        .unwrap_or_else(|| QueueStats::empty(queue));
    Ok(HttpResponse::Ok().json(QueueView::from(view)))
}
