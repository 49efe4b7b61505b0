//! The handlers. Each is short: parse, call the store, shape the answer; errors map in
//! `error.rs`. Features of their own live in submodules.

pub(crate) mod bulk;
pub(crate) mod files;
pub(crate) mod snooze;

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use futures::stream;
use jobs_core::{
    ClaimRequest, Cursor, Dependency, Enqueued, Estimate, FieldError, Finish, Job, JobError, JobId,
    Lease, LeaseToken, ListFilter, NewJob, Outcome, PageRequest, Retry, State,
};
use tokio::time::Instant;

use crate::{
    ApiState,
    dto::*,
    error::{ApiError, Problem},
    extract::{Json, MetricsAccess, Query, ResultJson, ReturnMinimal, Tenant, TraceId},
};

pub mod queue_control;
pub mod schedules;
pub mod webhooks;
pub mod workflows;

type Data = web::Data<ApiState>;

/// Longest `?wait=` honoured.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Longest claim long-poll.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(30);
const MAX_BATCH: usize = 1_000;
const POLL: Duration = Duration::from_millis(50);

/// A path id that is not a UUID names no job: 404, like an unknown one.
pub(crate) fn job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("job {raw} not found")))
}

fn wait_of(seconds: Option<f64>, cap: Duration) -> Result<Duration, ApiError> {
    match seconds {
        None => Ok(Duration::ZERO),
        // Clamp before converting: a huge value must not overflow Duration.
        Some(s) if s.is_finite() && s >= 0.0 => {
            Ok(Duration::from_secs_f64(s.min(cap.as_secs_f64())))
        }
        Some(_) => Err(ApiError::invalid_field(
            "wait",
            "must be a number of seconds >= 0",
        )),
    }
}

/// Polls the job until it ends or `wait` passes.
async fn await_end(
    state: &ApiState,
    tenant: &str,
    id: JobId,
    wait: Duration,
) -> Result<Job, ApiError> {
    let until = Instant::now() + wait;
    loop {
        let job = state.reader.get(Some(tenant), id).await?;
        if job.state.is_ended() || Instant::now() >= until {
            return Ok(job);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn created(enqueued: Enqueued) -> Created {
    Created {
        duplicate: enqueued.duplicate,
        replaced: enqueued.replaced,
        job: enqueued.job.into(),
    }
}

fn created_new(job: Job) -> Created {
    created(Enqueued {
        job,
        duplicate: false,
        replaced: false,
    })
}

/// Create a job.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = CreateJob, params(WaitQuery),
    responses(
        (status = 202, description = "Accepted; poll it by id", body = Created),
        (status = 200, description = "Duplicate unique key (the existing job, `duplicate: true`; `replaced: true` when `unique.on_conflict: replace` changed it), or ended within `wait`", body = Created),
        (status = 400, description = "Malformed JSON, wrong type, unknown field, or invalid field values (`errors` names each field)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/jobs")]
pub async fn create_job(
    state: Data,
    Tenant(tenant): Tenant,
    trace: TraceId,
    Query(query): Query<WaitQuery>,
    Json(mut body): Json<CreateJob>,
) -> Result<HttpResponse, ApiError> {
    let wait = wait_of(query.wait, MAX_WAIT)?;
    let files: Vec<jobs_core::FileId> = body
        .files
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(Into::into)
        .collect();
    let job = body.into_new_job(&tenant, trace.0)?;
    // A job with parents or files goes alone: they are checked in its transaction, and
    // one request's unknown parent must not fail the others of a group.
    let enqueued = match (job.depends_on.is_empty(), files.is_empty()) {
        (true, true) => state.enqueuer.enqueue(job).await?,
        (_, false) => state.store.enqueue_with_files(job, &files).await?,
        (false, true) => state.store.enqueue(job).await?,
    };
    let job = &enqueued.job;
    tracing::info!(job_id = %job.id, kind = %job.kind, trace_id = job.trace_id.as_deref().unwrap_or(""), duplicate = enqueued.duplicate, replaced = enqueued.replaced, "job accepted");
    if enqueued.duplicate || wait.is_zero() {
        let estimate = state
            .store
            .estimate(&enqueued.job, Estimate::QUICK_POSITION_LIMIT)
            .await?;
        let status = match enqueued.duplicate {
            true => HttpResponse::Ok(),
            false => HttpResponse::Accepted(),
        };
        let mut body = created(enqueued);
        body.job = body.job.with_estimate(estimate);
        return Ok(with_status(status, body));
    }
    let job = enqueued.job;
    let job = await_end(&state, &tenant, job.id, wait).await?;
    let status = if job.state.is_ended() {
        HttpResponse::Ok()
    } else {
        HttpResponse::Accepted()
    };
    Ok(with_status(status, created_new(job)))
}

fn with_status(
    mut builder: actix_web::HttpResponseBuilder,
    body: impl serde::Serialize,
) -> HttpResponse {
    builder.json(body)
}

/// Create up to 1,000 jobs in one request: all or none.
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs", request_body = CreateBatch,
    params(("Prefer" = Option<String>, Header, description = "`return=minimal`: answer with the jobs' ids alone (`CreatedBatchIds`), and the header `Preference-Applied: return=minimal`; other preferences are ignored")),
    responses(
        (status = 202, description = "Accepted: every job as `GET /v1/jobs/{id}` shows it, or with `Prefer: return=minimal` their ids alone", body = BatchCreated),
        (status = 400, description = "Malformed JSON, wrong type, unknown field, or invalid field values (`errors` names each field, by item: `jobs[3].priority`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/jobs/batch")]
pub async fn create_batch(
    state: Data,
    Tenant(tenant): Tenant,
    trace: TraceId,
    ReturnMinimal(minimal): ReturnMinimal,
    Json(body): Json<CreateBatch>,
) -> Result<HttpResponse, ApiError> {
    if body.jobs.is_empty() || body.jobs.len() > MAX_BATCH {
        return Err(ApiError::invalid_field("jobs", "must hold 1 to 1000 jobs"));
    }
    let mut jobs = batch_jobs(body.jobs, &tenant, &trace.0, "jobs")?;
    let callback_given = body.callback.is_some();
    let callback = body
        .callback
        .map(|c| callback_of(c, &jobs, &tenant, &trace.0))
        .transpose()?;
    jobs.extend(callback);
    let callback_at = format!("jobs[{}].", jobs.len() - 1);
    let mut done = state.store.enqueue_many(jobs).await.map_err(|e| match e {
        // The store names the callback as the batch's last job.
        JobError::Invalid(fields) if callback_given => JobError::Invalid(
            fields
                .into_iter()
                .map(|mut f| {
                    if let Some(rest) = f.field.strip_prefix(&callback_at) {
                        f.field = format!("callback.{rest}");
                    }
                    f
                })
                .collect(),
        ),
        other => other,
    })?;
    tracing::info!(
        jobs = done.len(),
        trace_id = trace.0.as_deref().unwrap_or(""),
        "batch accepted"
    );
    let callback = match callback_given {
        true => done.pop(),
        false => None,
    };
    if minimal {
        let ids = CreatedBatchIds {
            jobs: done.iter().map(created_id).collect(),
            callback: callback.as_ref().map(created_id),
        };
        return Ok(HttpResponse::Accepted()
            .insert_header(ReturnMinimal::APPLIED)
            .json(BatchCreated::Ids(ids)));
    }
    let jobs = CreatedBatch {
        jobs: done.into_iter().map(created).collect(),
        callback: callback.map(created),
    };
    Ok(HttpResponse::Accepted().json(BatchCreated::Jobs(Box::new(jobs))))
}

fn created_id(enqueued: &Enqueued) -> CreatedId {
    CreatedId {
        id: enqueued.job.id.as_uuid(),
        duplicate: enqueued.duplicate,
        replaced: enqueued.replaced,
    }
}

/// A batch's callback: it waits for every job of the batch to end, however.
fn callback_of(
    body: CreateJob,
    jobs: &[NewJob],
    tenant: &str,
    trace: &Option<String>,
) -> Result<NewJob, ApiError> {
    let mut callback = body
        .into_new_job(tenant, trace.clone())
        .map_err(|e| prefixed(e, "callback"))?;
    callback
        .depends_on
        .extend(jobs.iter().map(|j| Dependency::ended(j.id)));
    callback.validate().map_err(|e| prefixed(e, "callback"))?;
    Ok(callback)
}

/// Field errors of a part of a request, named under it: `callback.priority`.
fn prefixed(error: JobError, prefix: &str) -> ApiError {
    match error {
        JobError::Invalid(fields) => JobError::Invalid(
            fields
                .into_iter()
                .map(|f| FieldError {
                    field: format!("{prefix}.{}", f.field),
                    message: f.message,
                })
                .collect(),
        )
        .into(),
        other => other.into(),
    }
}

/// The jobs of a batch, or every field at fault in any of them, named by item
/// (`jobs[3].unique.on_conflict`).
pub(crate) fn batch_jobs(
    items: Vec<CreateJob>,
    tenant: &str,
    trace: &Option<String>,
    name: &str,
) -> Result<Vec<NewJob>, ApiError> {
    let mut jobs = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let fields = match item.into_new_job(tenant, trace.clone()) {
            Ok(job) => {
                let invalid = job.validate().err();
                jobs.push(job);
                invalid
            }
            Err(e) => Some(e),
        };
        if let Some(JobError::Invalid(fields)) = fields {
            errors.extend(fields.into_iter().map(|f| FieldError {
                field: format!("{name}[{i}].{}", f.field),
                message: f.message,
            }));
        }
    }
    JobError::invalid_if_any(errors)?;
    Ok(jobs)
}

/// Get a job; `?wait=N` long-polls until it ends or N seconds pass.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path), WaitQuery),
    responses(
        (status = 200, body = JobView),
        (status = 400, description = "Malformed query, wrong type, unknown parameter, or invalid values (`errors` names each field)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/jobs/{id}")]
pub async fn get_job(
    state: Data,
    Tenant(tenant): Tenant,
    req: HttpRequest,
    path: web::Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = job_id(&path)?;
    let wait = wait_of(query.wait, MAX_WAIT)?;
    let job = await_end(&state, &tenant, id, wait).await?;
    let estimate = state.store.estimate(&job, Estimate::POSITION_LIMIT).await?;
    let view = files::job_view(&state, &req, &tenant, job).await?;
    Ok(HttpResponse::Ok().json(view.with_estimate(estimate)))
}

/// List jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, body = JobList),
        (status = 400, description = "Malformed query, wrong type, unknown parameter, or invalid values (`errors` names each field; `q` empty, over 255 bytes or with NUL)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/jobs")]
pub async fn list_jobs(
    state: Data,
    Tenant(tenant): Tenant,
    req: HttpRequest,
    Query(q): Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let cursor = q.cursor.as_deref().map(str::parse::<Cursor>).transpose()?;
    let mut filter = ListFilter::new().tenant(tenant.clone());
    filter.state = q.state;
    filter.kind = q.kind;
    filter.queue = q.queue;
    filter.error_kind = q.error_kind;
    filter.created_from = q.created_after;
    filter.created_to = q.created_before;
    filter.id_or_key = q.q;
    let page = PageRequest {
        limit: q.limit.unwrap_or(50),
        offset: q.offset.unwrap_or(0),
        cursor,
    };
    let page = state.store.list(&filter, &page).await?;
    Ok(HttpResponse::Ok().json(JobList {
        items: files::job_views(&state, &req, &tenant, page.items).await?,
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// Cancel: a pending job ends at once; a running one is asked to stop.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses(
        (status = 200, description = "Cancelled, or cancel requested (`cancel_requested`)", body = JobView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has ended", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[delete("/v1/jobs/{id}")]
pub async fn cancel_job(
    state: Data,
    Tenant(tenant): Tenant,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = state.store.cancel(Some(&tenant), job_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(files::job_view(&state, &req, &tenant, job).await?))
}

/// Run an ended job again, from attempt 0.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path)),
    responses(
        (status = 200, body = JobView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has not ended (`illegal-transition`), or another job holds its unique key in one of that job's unique states (`duplicate`, naming it in `existing_job_id`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/jobs/{id}/retry")]
pub async fn retry_job(
    state: Data,
    Tenant(tenant): Tenant,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = state.store.retry(Some(&tenant), job_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(files::job_view(&state, &req, &tenant, job).await?))
}

/// Server-Sent Events: one `job` event per change of state or progress, until it ends.
///
/// With nothing to report, a `: keep-alive` comment every 15 s. Each api process serves
/// a bounded number of streams at once (1,000 by default); past that, 429.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs", params(("id" = String, Path)),
    responses(
        (status = 200, description = "`text/event-stream`: `job` events, whose fields the `JobEvent` schema describes (`data` is the job as `GET /v1/jobs/{id}` shows it, on one line), and `: keep-alive` comments while nothing changes", content_type = "text/event-stream", body = String),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "This api serves as many event streams as it may (`too-many-streams`); retry after `Retry-After`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/jobs/{id}/events")]
pub async fn job_events(
    state: Data,
    Tenant(tenant): Tenant,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = job_id(&path)?;
    let slot = state
        .event_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::too_many_streams(state.config.max_event_streams))?;
    let first = state.reader.get(Some(&tenant), id).await?;
    let watch = Watch {
        keep_alive: state.config.event_keep_alive,
        base_url: files::base_url(&state, &req),
        state,
        tenant,
        id,
        first: Some(first),
        last: None,
        sent_at: Instant::now(),
        done: false,
        _slot: slot,
    };
    let events = stream::unfold(watch, |mut watch| async move {
        let frame = watch.next_frame().await?;
        Some((Ok::<_, actix_web::Error>(web::Bytes::from(frame)), watch))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(events))
}

/// The state of one event stream: the last change sent, when anything was last sent,
/// and whether the job has ended. Holds the stream's slot until the stream is dropped:
/// the job ended, or the client went away (noticed only when a write fails, so within
/// about two keep-alive intervals).
struct Watch {
    state: Data,
    /// Of the files' download URLs in each event.
    base_url: String,
    tenant: String,
    id: JobId,
    first: Option<Job>,
    last: Option<(State, u64, Option<String>, i32)>,
    keep_alive: Duration,
    sent_at: Instant,
    done: bool,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Watch {
    /// The next `job` event, waiting for a change, or a keep-alive comment once nothing
    /// was sent for `keep_alive`; `None` once the ended job was sent (or the job
    /// vanished).
    async fn next_frame(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        loop {
            let job = match self.first.take() {
                Some(job) => job,
                None => {
                    tokio::time::sleep(Duration::from_millis(200).min(self.keep_alive)).await;
                    self.state
                        .store
                        .get(Some(&self.tenant), self.id)
                        .await
                        .ok()?
                }
            };
            let key = (
                job.state,
                (job.progress * 1e6) as u64,
                job.stage.clone(),
                job.attempt,
            );
            if self.last.as_ref() == Some(&key) {
                if self.sent_at.elapsed() >= self.keep_alive {
                    self.sent_at = Instant::now();
                    return Some(": keep-alive\n\n".to_owned());
                }
                continue;
            }
            self.last = Some(key);
            self.sent_at = Instant::now();
            self.done = job.state.is_ended();
            let view = files::job_views_at(&self.state, &self.base_url, &self.tenant, vec![job])
                .await
                .ok()?
                .remove(0);
            return Some(JobEvent::job(view).frame());
        }
    }
}

/// Remote workers: claim due jobs; with `wait_seconds`, wait for one to arrive.
#[utoipa::path(post, path = "/v1/claims", tag = "workers", request_body = ClaimBody,
    responses(
        (status = 200, description = "The claimed jobs (possibly none)", body = Claimed),
        (status = 400, description = "Malformed JSON, wrong type, unknown field, or invalid field values (`errors` names each field)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/claims")]
pub async fn claim(
    state: Data,
    Tenant(tenant): Tenant,
    req: HttpRequest,
    Json(body): Json<ClaimBody>,
) -> Result<HttpResponse, ApiError> {
    let max_jobs = body.max_jobs.unwrap_or(1);
    if !(1..=100).contains(&max_jobs) {
        return Err(ApiError::invalid_field(
            "max_jobs",
            "must be between 1 and 100",
        ));
    }
    let lease = lease_of(body.lease_seconds)?;
    let wait = wait_of(body.wait_seconds, MAX_CLAIM_WAIT)?;
    let request = ClaimRequest {
        worker_id: body.worker_id,
        queues: body
            .queues
            .unwrap_or_else(|| vec![jobs_core::limits::DEFAULT_QUEUE.to_owned()]),
        kinds: body.kinds,
        tenant: Some(tenant.clone()),
        limit: max_jobs,
        lease,
    };
    let until = Instant::now() + wait;
    loop {
        let waiting = state.wake.notified();
        let jobs = state.store.claim(&request).await?;
        if !jobs.is_empty() || Instant::now() >= until {
            let mut claimed = with_parents(&state, jobs.clone()).await?;
            files::with_inputs(&state, &req, &tenant, &jobs, &mut claimed).await?;
            return Ok(HttpResponse::Ok().json(Claimed { jobs: claimed }));
        }
        // Woken by an enqueue, or re-check now and then for scheduled jobs coming due.
        let _ = tokio::time::timeout(
            Duration::from_millis(500).min(until - Instant::now()),
            waiting,
        )
        .await;
    }
}

/// Most parent results one claimed job carries, and most bytes of them.
const PARENT_RESULTS: u32 = 100;
const PARENT_RESULT_BYTES: usize = 1 << 20;

/// The claimed jobs, each with its parents' counts and first results. A read that fails
/// is answered 503 (the jobs stay claimed and come back when their lease expires).
async fn with_parents(state: &ApiState, jobs: Vec<Job>) -> Result<Vec<ClaimedJob>, ApiError> {
    let children: Vec<JobId> = jobs
        .iter()
        .filter(|j| j.parents > 0)
        .map(|j| j.id)
        .collect();
    let mut results = state
        .store
        .parent_results(&children, PARENT_RESULTS)
        .await?;
    let mut claimed = Vec::with_capacity(jobs.len());
    for job in jobs {
        let (id, parents) = (job.id, job.parents);
        let Some(mut one) = ClaimedJob::of(job) else {
            continue;
        };
        if parents > 0 {
            let results = results.remove(&id).unwrap_or_default();
            // Counted from the results when they hold every parent: no second query.
            let counts = match parents as usize <= results.len() {
                true => counts_of(&results),
                false => state.store.parent_counts(id).await?,
            };
            one.parent_results = Some(parents_view(counts, results, parents));
        }
        claimed.push(one);
    }
    Ok(claimed)
}

fn counts_of(parents: &[jobs_core::ParentResult]) -> std::collections::BTreeMap<State, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for state in parents.iter().filter_map(|p| p.state) {
        *counts.entry(state).or_insert(0) += 1;
    }
    counts
}

fn parents_view(
    counts: std::collections::BTreeMap<State, u64>,
    parents: Vec<jobs_core::ParentResult>,
    total: i32,
) -> ParentsView {
    let mut bytes = 0;
    let mut results = Vec::with_capacity(parents.len());
    for parent in parents {
        bytes += parent.result.as_ref().map_or(0, |r| r.to_string().len());
        if bytes > PARENT_RESULT_BYTES {
            break;
        }
        results.push(ParentView {
            id: parent.id,
            step: parent.step,
            state: parent.state,
            requires: parent.requires,
            result: parent.result,
        });
    }
    ParentsView {
        counts,
        truncated: results.len() < total as usize,
        results,
    }
}

fn lease_of(seconds: Option<u64>) -> Result<Duration, ApiError> {
    match seconds.unwrap_or(30) {
        s @ 1..=3600 => Ok(Duration::from_secs(s)),
        _ => Err(ApiError::invalid_field(
            "lease_seconds",
            "must be between 1 and 3600",
        )),
    }
}

fn check_worker_id(worker_id: &str) -> Result<(), ApiError> {
    if worker_id.is_empty() || worker_id.len() > 255 {
        return Err(ApiError::invalid_field(
            "worker_id",
            "must be 1 to 255 bytes",
        ));
    }
    Ok(())
}

/// The lease of the attempt that `token` names, if it is still the job's current one;
/// else 409 `lease-lost` (the job was rescued, cancelled or claimed again since).
pub(crate) async fn lease_held(
    state: &ApiState,
    tenant: &str,
    id: JobId,
    worker_id: &str,
    token: LeaseToken,
) -> Result<Lease, ApiError> {
    check_worker_id(worker_id)?;
    let job = state.reader.get(Some(tenant), id).await?;
    match Lease::of(&job) {
        Some(lease) if job.state == State::Running && lease.token == token => Ok(lease),
        _ => Err(jobs_core::JobError::LeaseLost(id).into()),
    }
}

/// JSON a handler returned, refused (400 naming `field`) when the database cannot store it.
fn check_storable(field: &str, value: &serde_json::Value) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    jobs_core::storable::check_json(&mut errors, field, value);
    jobs_core::JobError::invalid_if_any(errors).map_err(Into::into)
}

/// Remote workers: extend the lease, report progress, hear of cancel requests.
#[utoipa::path(post, path = "/v1/jobs/{id}/heartbeat", tag = "workers", params(("id" = String, Path)), request_body = HeartbeatBody,
    responses(
        (status = 200, body = HeartbeatReply),
        (status = 400, description = "Malformed JSON, wrong type, unknown field, or invalid field values (`errors` names each field)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This worker no longer holds the job", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/jobs/{id}/heartbeat")]
pub async fn heartbeat(
    state: Data,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    Json(body): Json<HeartbeatBody>,
) -> Result<HttpResponse, ApiError> {
    let id = job_id(&path)?;
    let lease_for = lease_of(body.lease_seconds)?;
    if body.progress.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return Err(ApiError::invalid_field(
            "progress",
            "must be between 0.0 and 1.0",
        ));
    }
    let lease = lease_held(&state, &tenant, id, &body.worker_id, body.lease_token).await?;
    let beat = state.store.heartbeat(&[lease], lease_for).await?;
    if beat.renewed.is_empty() {
        return Err(jobs_core::JobError::LeaseLost(id).into());
    }
    if let Some(progress) = body.progress {
        state
            .store
            .progress(&lease, progress, body.stage.as_deref())
            .await?;
    }
    Ok(HttpResponse::Ok().json(HeartbeatReply {
        cancel_requested: !beat.cancel_requested.is_empty(),
    }))
}

/// Remote workers: the attempt succeeded (partially, with `item_errors`).
#[utoipa::path(post, path = "/v1/jobs/{id}/complete", tag = "workers", params(("id" = String, Path)), request_body = CompleteBody,
    responses(
        (status = 200, body = Ended),
        (status = 400, description = "Malformed JSON, wrong type, unknown field, or invalid field values (`errors` names each field)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This worker no longer holds the job", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/jobs/{id}/complete")]
pub async fn complete(
    state: Data,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    ResultJson(body): ResultJson<CompleteBody>,
) -> Result<HttpResponse, ApiError> {
    check_storable("result", &body.result)?;
    if let Some(item_errors) = &body.item_errors {
        check_storable("item_errors", item_errors)?;
    }
    let id = job_id(&path)?;
    let lease = lease_held(&state, &tenant, id, &body.worker_id, body.lease_token).await?;
    let follow_ups = body.follow_ups.unwrap_or_default();
    if follow_ups.len() > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "follow_ups",
            "must hold at most 1000 jobs",
        ));
    }
    let follow_ups = batch_jobs(follow_ups, &tenant, &None, "follow_ups")?;
    let outcome = match body.item_errors {
        Some(item_errors) => Outcome::Partial {
            result: body.result,
            item_errors,
        },
        None => Outcome::Completed {
            result: body.result,
        },
    };
    let finish = Finish::new(lease, outcome).with_follow_ups(follow_ups);
    let state = state.store.finish_many(vec![finish]).await?.remove(0)?;
    Ok(HttpResponse::Ok().json(Ended { state }))
}

/// Remote workers: the attempt failed; retried with backoff unless `retryable` is false.
#[utoipa::path(post, path = "/v1/jobs/{id}/fail", tag = "workers", params(("id" = String, Path)), request_body = FailBody,
    responses(
        (status = 200, description = "`pending` (will retry), `failed` or `cancelled`", body = Ended),
        (status = 400, description = "Malformed JSON, wrong type, unknown field, or invalid field values (`errors` names each field)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This worker no longer holds the job", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/jobs/{id}/fail")]
pub async fn fail(
    state: Data,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    Json(body): Json<FailBody>,
) -> Result<HttpResponse, ApiError> {
    let id = job_id(&path)?;
    let lease = lease_held(&state, &tenant, id, &body.worker_id, body.lease_token).await?;
    let retry = match (body.retryable.unwrap_or(true), body.retry_after_seconds) {
        (false, _) => Retry::Never,
        (true, None) => Retry::Backoff,
        (true, Some(s)) if s.is_finite() && s >= 0.0 => {
            // Clamped again by the store, to `limits::DURATION_MAX_SECS`.
            Retry::After(Duration::from_secs_f64(s.min(1e12)))
        }
        (true, Some(_)) => {
            return Err(ApiError::invalid_field(
                "retry_after_seconds",
                "must be >= 0",
            ));
        }
    };
    let outcome = Outcome::Failed {
        kind: body.error.kind,
        message: body.error.message,
        retry,
    };
    let state = state.store.finish(&lease, outcome).await?;
    Ok(HttpResponse::Ok().json(Ended { state }))
}

/// Per queue: jobs by state and the wait of the oldest due job.
#[utoipa::path(get, path = "/v1/queues", tag = "queues",
    responses(
        (status = 200, body = Queues),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/queues")]
pub async fn queues(state: Data, Tenant(tenant): Tenant) -> Result<HttpResponse, ApiError> {
    let stats = state.store.queue_stats(Some(&tenant)).await?;
    Ok(HttpResponse::Ok().json(Queues {
        queues: stats.into_iter().map(Into::into).collect(),
    }))
}

/// Whether requests need an API key, and the tenant of the one sent.
///
/// Answers without a key too (`tenant` null then), so a client can tell whether to ask
/// for one; a key that is sent must be valid.
#[utoipa::path(get, path = "/v1/me", tag = "operations", security((), ("api_key" = [])),
    responses(
        (status = 200, description = "Whether a key is needed, and the caller's tenant (null when a key is needed and none was sent)", body = Me),
        (status = 401, description = "A key was sent and is not valid", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable, or its schema does not fit this binary", body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/me")]
pub async fn me(state: Data, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    use actix_web::FromRequest;
    let auth = state.auth_required().await?;
    let sent = req
        .headers()
        .contains_key(actix_web::http::header::AUTHORIZATION);
    let tenant = match auth && !sent {
        true => None,
        false => Some(Tenant::extract(&req).await?.0),
    };
    Ok(HttpResponse::Ok().json(Me { auth, tenant }))
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

/// Ready to serve: database reachable, migrations at head, jobs table present.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, body = Health),
        (status = 503, description = "`detail` says why", body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/readyz")]
pub async fn readyz(state: Data) -> Result<HttpResponse, ApiError> {
    let check = tokio::time::timeout(Duration::from_secs(5), state.store.readiness()).await;
    match check {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(Health {
            status: "ready".into(),
        })),
        Ok(Err(reason)) => Err(ApiError::unavailable(reason)),
        Err(_) => Err(ApiError::unavailable(
            "database unreachable: no answer within 5 s",
        )),
    }
}

/// Prometheus metrics of this process.
///
/// Open, unless the api runs with `--metrics-require-key`: then any tenant's API key.
#[utoipa::path(get, path = "/metrics", tag = "operations", security((), ("api_key" = [])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "Only with `--metrics-require-key`: no valid API key", body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/metrics")]
pub async fn metrics(state: Data, _access: MetricsAccess) -> HttpResponse {
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}

/// This document. It declares the bearer key only while the api requires one.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)))]
#[get("/openapi.json")]
pub async fn openapi(state: web::Data<ApiState>) -> HttpResponse {
    // Unknown (the database is away): declare the key, which is the safe side.
    let auth_required = state.auth_required().await.unwrap_or(true);
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::served_openapi(auth_required))
}
