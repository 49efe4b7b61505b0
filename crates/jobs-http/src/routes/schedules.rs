//! Periodic jobs over HTTP: `/v1/schedules`, per tenant. The job template takes the
//! create fields of `POST /v1/jobs` (its DTO and conversion), less those that would hold
//! for a single slot only.

use actix_web::{HttpResponse, delete, get, post, web};
use jobs_core::{CatchUp, JobError, JobTemplate, Schedule, ScheduleInfo};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    ApiState,
    dto::CreateJob,
    error::{ApiError, Problem},
    extract::{Json, Tenant},
};

type Data = web::Data<ApiState>;

/// What to do with slots missed while no worker ran (see the README): `skip` drops them,
/// `once` enqueues the latest, `all` each of them (at most 100, the most recent).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CatchUpPolicy {
    Skip,
    Once,
    All,
}

impl From<CatchUpPolicy> for CatchUp {
    fn from(p: CatchUpPolicy) -> Self {
        match p {
            CatchUpPolicy::Skip => CatchUp::Skip,
            CatchUpPolicy::Once => CatchUp::Once,
            CatchUpPolicy::All => CatchUp::All,
        }
    }
}

impl From<CatchUp> for CatchUpPolicy {
    fn from(c: CatchUp) -> Self {
        match c {
            CatchUp::Skip => CatchUpPolicy::Skip,
            CatchUp::Once => CatchUpPolicy::Once,
            CatchUp::All => CatchUpPolicy::All,
        }
    }
}

/// A schedule to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Unique per tenant.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:/-]+$")]
    pub name: String,
    /// Five fields (minute hour day-of-month month day-of-week), or six with seconds
    /// first; `@hourly`, `@daily` and the like.
    #[schema(example = "0 3 * * *")]
    pub cron: String,
    /// IANA time zone the cron fields are read in; default `UTC`.
    #[schema(example = "Europe/Paris")]
    pub timezone: Option<String>,
    /// The job of each slot.
    pub job: ScheduleJobBody,
    /// Default `once`.
    pub catch_up: Option<CatchUpPolicy>,
}

/// The job each slot enqueues: the create fields of `POST /v1/jobs` that hold for every
/// slot. `run_at`, `delay_ms`, `deadline` and uniqueness would hold for one slot only
/// (each slot runs at its own time), so they are unknown fields here.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleJobBody {
    /// Which handler runs it, e.g. `send_report`.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:/-]+$")]
    pub kind: String,
    /// The handler's arguments (any JSON; default `{}`).
    #[serde(default = "crate::dto::empty_object")]
    pub args: Value,
    /// Default `default`.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:/-]+$")]
    pub queue: Option<String>,
    /// 0..=10, 10 runs first; default 5.
    #[schema(minimum = 0, maximum = 10)]
    #[serde(default, deserialize_with = "crate::dto::whole::option")]
    pub priority: Option<i16>,
    /// 1..=1000; default 20.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "crate::dto::whole::option")]
    pub max_attempts: Option<i32>,
    /// Per-attempt limit in milliseconds.
    #[schema(minimum = 1, maximum = 315_360_000_000u64)]
    #[serde(default, deserialize_with = "crate::dto::whole::option")]
    pub timeout_ms: Option<u64>,
    /// How long each job is kept after it ends, in seconds; default 7 days.
    #[schema(maximum = 315_360_000u64)]
    #[serde(default, deserialize_with = "crate::dto::whole::option")]
    pub ttl_seconds: Option<u64>,
    /// Free-form JSON object, kept beside `schedule` and `slot`.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

impl From<ScheduleJobBody> for CreateJob {
    fn from(job: ScheduleJobBody) -> Self {
        CreateJob {
            kind: job.kind,
            args: job.args,
            queue: job.queue,
            priority: job.priority,
            run_at: None,
            delay_ms: None,
            max_attempts: job.max_attempts,
            timeout_ms: job.timeout_ms,
            deadline: None,
            ttl_seconds: job.ttl_seconds,
            unique_key: None,
            unique: None,
            concurrency_key: None,
            metadata: job.metadata,
            depends_on: None,
            files: None,
            on_parent_failure: None,
        }
    }
}

impl CreateSchedule {
    fn into_schedule(self, tenant: &str) -> Result<Schedule, ApiError> {
        // Validation names the template's fields as `POST /v1/jobs` does, under `job.`.
        let job = CreateJob::from(self.job).into_new_job(tenant, None)?;
        let mut template = JobTemplate::new(job.kind, job.args)
            .queue(job.queue)
            .priority(job.priority)
            .max_attempts(job.max_attempts)
            .retention(job.retention)
            .metadata(job.metadata);
        template.timeout = job.timeout;
        let mut schedule = Schedule::new(self.name, self.cron, template).tenant(tenant);
        if let Some(tz) = self.timezone {
            schedule = schedule.timezone(tz);
        }
        if let Some(policy) = self.catch_up {
            schedule = schedule.catch_up(policy.into());
        }
        Ok(schedule)
    }
}

/// The job each slot enqueues.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleJobView {
    pub kind: String,
    pub args: Value,
    pub queue: String,
    pub priority: i16,
    pub max_attempts: i32,
    pub timeout_ms: Option<u64>,
    pub ttl_seconds: u64,
    pub metadata: Value,
}

/// A schedule and where it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub job: ScheduleJobView,
    pub catch_up: CatchUpPolicy,
    pub paused: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub paused_at: Option<OffsetDateTime>,
    /// The next slot not yet enqueued (while paused: where it stood when paused).
    #[serde(with = "time::serde::rfc3339")]
    pub next_run_at: OffsetDateTime,
    /// The most recent slot a job was enqueued for.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_run_at: Option<OffsetDateTime>,
    pub last_job_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<ScheduleInfo> for ScheduleView {
    fn from(info: ScheduleInfo) -> Self {
        let job = job_view(&info.schedule.job);
        let s = info.schedule;
        Self {
            name: s.name,
            cron: s.cron,
            timezone: s.timezone,
            job,
            catch_up: s.catch_up.into(),
            paused: info.paused_at.is_some(),
            paused_at: info.paused_at,
            next_run_at: info.next_run_at,
            last_run_at: info.last_run_at,
            last_job_id: info.last_job_id.map(|id| id.as_uuid()),
            created_at: info.created_at,
            updated_at: info.updated_at,
        }
    }
}

fn job_view(t: &JobTemplate) -> ScheduleJobView {
    {
        ScheduleJobView {
            kind: t.kind.clone(),
            args: t.args.clone(),
            queue: t.queue.clone(),
            priority: t.priority,
            max_attempts: t.max_attempts,
            timeout_ms: t
                .timeout
                .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
            ttl_seconds: t.retention.as_secs(),
            metadata: t.metadata.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    pub items: Vec<ScheduleView>,
}

/// A name that no schedule can have (invalid characters, NUL, too long) names none: 404,
/// without asking the database, which may refuse such text.
fn schedule_name(raw: &str) -> Result<&str, ApiError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/');
    if raw.is_empty() || raw.len() > jobs_core::limits::NAME_MAX_LEN || !raw.chars().all(allowed) {
        return Err(JobError::ScheduleNotFound(raw.to_owned()).into());
    }
    Ok(raw)
}

fn view(info: ScheduleInfo) -> HttpResponse {
    HttpResponse::Ok().json(ScheduleView::from(info))
}

/// Create a schedule: one job per cron slot, from the first slot after now.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", request_body = CreateSchedule,
    responses(
        (status = 201, body = ScheduleView),
        (status = 400, description = "Malformed JSON, wrong type, unknown field, or invalid field values (`errors` names each: `cron`, `timezone`, `name`, `job.priority`...)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant has a schedule of this name", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/schedules")]
pub async fn create_schedule(
    state: Data,
    Tenant(tenant): Tenant,
    Json(body): Json<CreateSchedule>,
) -> Result<HttpResponse, ApiError> {
    let schedule = body.into_schedule(&tenant)?;
    let info = state.store.create_schedule(&schedule).await?;
    tracing::info!(%tenant, schedule = %info.schedule.name, cron = %info.schedule.cron, "schedule created");
    Ok(HttpResponse::Created().json(ScheduleView::from(info)))
}

/// The tenant's schedules by name, with their next run times.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    responses(
        (status = 200, body = ScheduleList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/schedules")]
pub async fn list_schedules(state: Data, Tenant(tenant): Tenant) -> Result<HttpResponse, ApiError> {
    let items = state.store.list_schedules(&tenant).await?;
    Ok(HttpResponse::Ok().json(ScheduleList {
        items: items.into_iter().map(Into::into).collect(),
    }))
}

/// One schedule.
#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path)),
    responses(
        (status = 200, body = ScheduleView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/schedules/{name}")]
pub async fn get_schedule(
    state: Data,
    Tenant(tenant): Tenant,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = schedule_name(&name)?;
    Ok(view(state.store.get_schedule(&tenant, name).await?))
}

/// Delete a schedule: 204. Jobs it already enqueued stay.
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[delete("/v1/schedules/{name}")]
pub async fn delete_schedule(
    state: Data,
    Tenant(tenant): Tenant,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = schedule_name(&name)?;
    state.store.delete_schedule(&tenant, name).await?;
    tracing::info!(%tenant, schedule = %name, "schedule deleted");
    Ok(HttpResponse::NoContent().finish())
}

/// Stop enqueueing (idempotent).
#[utoipa::path(post, path = "/v1/schedules/{name}/pause", tag = "schedules", params(("name" = String, Path)),
    responses(
        (status = 200, body = ScheduleView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/schedules/{name}/pause")]
pub async fn pause_schedule(
    state: Data,
    Tenant(tenant): Tenant,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = schedule_name(&name)?;
    Ok(view(state.store.pause_schedule(&tenant, name).await?))
}

/// Enqueue again from the first slot after now; paused time is not caught up (idempotent).
#[utoipa::path(post, path = "/v1/schedules/{name}/resume", tag = "schedules", params(("name" = String, Path)),
    responses(
        (status = 200, body = ScheduleView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/schedules/{name}/resume")]
pub async fn resume_schedule(
    state: Data,
    Tenant(tenant): Tenant,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = schedule_name(&name)?;
    Ok(view(state.store.resume_schedule(&tenant, name).await?))
}
