//! `POST /v1/jobs/bulk`: retry, cancel or delete every job of the caller's tenant that a
//! filter matches (the dead-letter workflow), in bounded batches in the store.

use actix_web::{HttpResponse, post};
use jobs_core::{BulkAction, BulkRequest, ListFilter, State};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::Data;
use crate::{
    error::{ApiError, Problem},
    extract::{Json, Tenant},
};

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkActionName {
    /// Ended jobs run again from attempt 0.
    Retry,
    /// Pending jobs end `cancelled`; running ones get a cancel request.
    Cancel,
    /// Jobs are removed, in any state but running.
    Delete,
}

impl From<BulkActionName> for BulkAction {
    fn from(name: BulkActionName) -> Self {
        match name {
            BulkActionName::Retry => BulkAction::Retry,
            BulkActionName::Cancel => BulkAction::Cancel,
            BulkActionName::Delete => BulkAction::Delete,
        }
    }
}

/// Which jobs: every field given must match. At least one field, or `all: true`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    #[schema(value_type = Option<String>, pattern = "^(pending|running|completed|partial|failed|cancelled|waiting)$")]
    pub state: Option<State>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// The kind of the job's last error.
    pub error_kind: Option<String>,
    /// Created at or after this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created_after: Option<OffsetDateTime>,
    /// Created before this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created_before: Option<OffsetDateTime>,
    /// A job id (that job), or else a unique key, matched exactly: as `q` of
    /// `GET /v1/jobs`.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^\x00]+$")]
    pub q: Option<String>,
    /// Act on every job of the tenant when no other field is given.
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    pub action: BulkActionName,
    #[serde(default)]
    pub filter: BulkFilter,
    /// Count the matched jobs and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl BulkBody {
    fn into_request(self, tenant: String) -> BulkRequest {
        let f = self.filter;
        let mut filter = ListFilter::new().tenant(tenant);
        filter.state = f.state;
        filter.kind = f.kind;
        filter.queue = f.queue;
        filter.error_kind = f.error_kind;
        filter.created_from = f.created_after;
        filter.created_to = f.created_before;
        filter.id_or_key = f.q;
        let mut request = BulkRequest::new(self.action.into(), filter);
        request.all = f.all;
        request.dry_run = self.dry_run;
        request
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkReply {
    /// Jobs that matched the filter in a state the action applies to.
    pub matched: u64,
    /// Jobs the action changed (0 on a dry run). The rest moved meanwhile, or a retry
    /// would have taken a unique key another job holds now.
    pub changed: u64,
}

/// Retry, cancel or delete every job of your tenant that the filter matches.
///
/// `retry` runs ended jobs again from attempt 0; `cancel` ends pending jobs and asks
/// running ones to stop; `delete` removes jobs in any state except running. Applied in
/// batches of at most 1,000 jobs, each checked against its state as it is moved: a job
/// that moved meanwhile is counted in `matched` but not in `changed`.
#[utoipa::path(post, path = "/v1/jobs/bulk", tag = "jobs", request_body = BulkBody,
    responses(
        (status = 200, body = BulkReply),
        (status = 400, description = "Malformed JSON, wrong type, unknown field, an empty filter without `all` (`filter`), or invalid field values (`errors` names each field, as `filter.state`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/jobs/bulk")]
pub async fn bulk_jobs(
    state: Data,
    Tenant(tenant): Tenant,
    Json(body): Json<BulkBody>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_request(tenant);
    let done = state.store.bulk(&request).await?;
    tracing::info!(action = %request.action, dry_run = request.dry_run, matched = done.matched, changed = done.changed, "bulk action");
    Ok(HttpResponse::Ok().json(BulkReply {
        matched: done.matched,
        changed: done.changed,
    }))
}
