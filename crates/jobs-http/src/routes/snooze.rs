//! `POST /v1/jobs/{id}/snooze`: a remote worker puts its job back to pending for a while
//! without spending the attempt (`Outcome::Snoozed`), as an embedded handler can.

use std::time::Duration;

use actix_web::{HttpResponse, post, web};
use jobs_core::{LeaseToken, Outcome, limits::DURATION_MAX_SECS};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{Data, job_id, lease_held};
use crate::{
    dto::JobView,
    error::{ApiError, Problem},
    extract::{Json, Tenant},
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnoozeBody {
    #[schema(min_length = 1, max_length = 255)]
    pub worker_id: String,
    #[schema(value_type = String, format = Uuid)]
    pub lease_token: LeaseToken,
    /// How long until the job is due again: 0 to ten years.
    #[schema(minimum = 0, maximum = 315_360_000)]
    pub delay_seconds: f64,
}

/// 0..=ten years (the clamp of every other delay), else 400 naming `delay_seconds`.
fn delay_of(seconds: f64) -> Result<Duration, ApiError> {
    if seconds.is_finite() && (0.0..=DURATION_MAX_SECS as f64).contains(&seconds) {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(ApiError::invalid_field(
            "delay_seconds",
            "must be a number of seconds from 0 to 315360000 (ten years)",
        ))
    }
}

/// Remote workers: run this job again after `delay_seconds`, without spending the attempt.
#[utoipa::path(post, path = "/v1/jobs/{id}/snooze", tag = "workers", params(("id" = String, Path)), request_body = SnoozeBody,
    responses(
        (status = 200, description = "The job: `pending` and due after the delay, its attempt given back (or `cancelled` if a cancel was requested)", body = JobView),
        (status = 400, description = "Malformed JSON, wrong type, unknown field, or invalid field values (`errors` names each field)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This worker no longer holds the job (`lease-lost`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/jobs/{id}/snooze")]
pub async fn snooze(
    state: Data,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    Json(body): Json<SnoozeBody>,
) -> Result<HttpResponse, ApiError> {
    let id = job_id(&path)?;
    let delay = delay_of(body.delay_seconds)?;
    let lease = lease_held(&state, &tenant, id, &body.worker_id, body.lease_token).await?;
    state
        .store
        .finish(&lease, Outcome::Snoozed { delay })
        .await?;
    let job = state.store.get(Some(&tenant), id).await?;
    Ok(HttpResponse::Ok().json(JobView::from(job)))
}
