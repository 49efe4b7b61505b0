//! Queue control for the caller's tenant: pause and resume a queue, set its limits, and
//! read it and its throughput.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, post, put, web};
use jobs_core::{QueueScope, QueueStats, validate_queue_name};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use utoipa::{IntoParams, ToSchema};

use super::Data;
use crate::{
    dto::QueueView,
    error::{ApiError, Problem},
    extract::{Json, Query, Tenant},
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

/// How far back `GET /v1/queues/{name}/throughput` looks.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ThroughputQuery {
    /// Minutes, counting the current one: 1..=1440, default 30.
    #[param(minimum = 1, maximum = 1440)]
    pub minutes: Option<u32>,
}

/// Jobs of a queue that ended, per minute.
#[derive(Debug, Serialize, ToSchema)]
pub struct Throughput {
    pub queue: String,
    /// One per minute, oldest first, the last being the current minute (so far).
    pub minutes: Vec<MinuteView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MinuteView {
    /// The minute's start (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Jobs that ended in it, in any state.
    pub ended: u64,
    /// Of those, how many by the state they ended in (states with none are left out).
    #[schema(value_type = Object)]
    pub by_state: BTreeMap<String, u64>,
}

/// The throughput of the queue for this tenant: how many of its jobs ended in each of
/// the last minutes, by end state, from when they finished. A job retried since counts
/// at its latest end only.
#[utoipa::path(get, path = "/v1/queues/{name}/throughput", tag = "queues", params(QueuePath, ThroughputQuery),
    responses(
        (status = 200, description = "One entry per minute, oldest first", body = Throughput),
        (status = 400, description = "Not a queue name (`errors` names `name`), or `minutes` out of 1..=1440 or not a whole number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable, or its schema does not fit this binary", body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/queues/{name}/throughput")]
pub async fn queue_throughput(
    state: Data,
    Tenant(tenant): Tenant,
    name: web::Path<String>,
    Query(query): Query<ThroughputQuery>,
) -> Result<HttpResponse, ApiError> {
    validate_queue_name("name", &name)?;
    let minutes = query.minutes.unwrap_or(30);
    if !(1..=1440).contains(&minutes) {
        return Err(ApiError::invalid_field(
            "minutes",
            "must be between 1 and 1440",
        ));
    }
    let now = OffsetDateTime::now_utc();
    let current = now
        - Duration::seconds(now.second().into())
        - Duration::nanoseconds(now.nanosecond().into());
    let first = current - Duration::minutes(i64::from(minutes) - 1);
    let ended = state.store.ended_per_minute(&tenant, &name, first).await?;
    let mut view: Vec<MinuteView> = (0..i64::from(minutes))
        .map(|i| MinuteView {
            at: first + Duration::minutes(i),
            ended: 0,
            by_state: BTreeMap::new(),
        })
        .collect();
    for row in ended {
        let index = (row.minute - first).whole_minutes();
        // A clock between database and api that disagree may name a minute past now.
        if let Some(minute) = usize::try_from(index).ok().and_then(|i| view.get_mut(i)) {
            minute.ended += row.count;
            *minute
                .by_state
                .entry(row.state.as_str().to_owned())
                .or_insert(0) += row.count;
        }
    }
    Ok(HttpResponse::Ok().json(Throughput {
        queue: name.into_inner(),
        minutes: view,
    }))
}
