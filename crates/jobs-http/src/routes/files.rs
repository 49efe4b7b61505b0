//! Files of jobs over HTTP, per tenant. Inputs are staged before their job exists
//! (`POST /v1/files`, then `files` at create) or uploaded to an existing job; results
//! are uploaded by the holder of the job's lease. Bodies are raw bytes, streamed to the
//! file storage with their size and SHA-256 taken on the way; downloads stream back.
//! Another tenant's job is unknown here (404), as everywhere.

use actix_web::{HttpRequest, HttpResponse, get, http::header, post, web};
use futures::StreamExt;
use jobs_core::{FileOwner, FileRole, Job, JobFile, JobId, LeaseToken, files::STAGED_FILE_TTL};
use jobs_files::FileStorage;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::{
    ApiState,
    dto::{ClaimedJob, FileList, FileView, JobView, StagedFile},
    error::{ApiError, Problem},
    extract::{Query, Tenant},
    routes::{job_id, lease_held},
};

type Data = web::Data<ApiState>;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NameQuery {
    /// The file's name: 1 to 255 letters, digits, `.`, `_` or `-`, not starting with `.`.
    #[param(required = true, pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$")]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResultQuery {
    /// The file's name: 1 to 255 letters, digits, `.`, `_` or `-`, not starting with `.`.
    #[param(required = true, pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$")]
    pub name: Option<String>,
    /// The claimer's `worker_id`, as in complete and heartbeat.
    #[param(required = true, min_length = 1, max_length = 255)]
    pub worker_id: Option<String>,
    /// The claim's `lease_token`.
    #[param(required = true, value_type = Option<String>, format = Uuid)]
    pub lease_token: Option<LeaseToken>,
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::invalid_field(field, "is required"))
}

/// A valid file name, or 400 naming `name`.
fn name_of(raw: Option<String>) -> Result<String, ApiError> {
    let name = required(raw, "name")?;
    jobs_core::files::validate_file_name("name", &name)?;
    Ok(name)
}

fn storage(state: &ApiState) -> Result<&FileStorage, ApiError> {
    state
        .config
        .files
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this api has no file storage configured"))
}

/// Streams the request body into the storage and records it for `owner`. A declared
/// length over the limit is refused before a byte is read.
async fn store(
    state: &ApiState,
    req: &HttpRequest,
    owner: FileOwner,
    tenant: &str,
    name: &str,
    body: web::Payload,
) -> Result<JobFile, ApiError> {
    let limit = state.config.file_limit;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(jobs_files::FileError::TooLarge(limit).into());
    }
    let file = storage(state)?
        .store_file(&*state.store, owner, tenant, name, body, limit)
        .await?;
    tracing::info!(file = %file.id, job_id = ?file.job_id.map(|j| j.to_string()), size = file.size, role = file.role.as_str(), "file stored");
    Ok(file)
}

/// Where clients reach this API: `public_url`, else the scheme and host of the request.
pub(crate) fn base_url(state: &ApiState, req: &HttpRequest) -> String {
    match &state.config.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

pub(crate) fn file_view(base: &str, file: &JobFile) -> FileView {
    let route = match file.role {
        FileRole::Input => "files",
        FileRole::Result => "result-files",
    };
    let job = file.job_id.map(|j| j.to_string()).unwrap_or_default();
    FileView {
        url: format!("{base}/v1/jobs/{job}/{route}/{}", file.name),
        name: file.name.clone(),
        size: file.size,
        sha256: file.sha256.clone(),
    }
}

/// The files of `role` of these jobs, by job.
async fn files_by_job(
    state: &ApiState,
    base: &str,
    tenant: &str,
    jobs: &[JobId],
    role: FileRole,
) -> Result<std::collections::HashMap<uuid::Uuid, Vec<FileView>>, ApiError> {
    let mut by_job = std::collections::HashMap::<uuid::Uuid, Vec<FileView>>::new();
    if jobs.is_empty() {
        return Ok(by_job);
    }
    for file in state.store.job_files(Some(tenant), jobs, role).await? {
        let job = file.job_id.map(|j| j.as_uuid()).unwrap_or_default();
        by_job.entry(job).or_default().push(file_view(base, &file));
    }
    Ok(by_job)
}

fn with_files(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().filter(|j| j.has_files).map(|j| j.id).collect()
}

/// Jobs as the API shows them, with their result files (one query for those that have
/// files, none when no job has).
pub(crate) async fn job_views(
    state: &ApiState,
    req: &HttpRequest,
    tenant: &str,
    jobs: Vec<Job>,
) -> Result<Vec<JobView>, ApiError> {
    job_views_at(state, &base_url(state, req), tenant, jobs).await
}

/// [`job_views`] with download URLs under `base` (see [`base_url`]).
pub(crate) async fn job_views_at(
    state: &ApiState,
    base: &str,
    tenant: &str,
    jobs: Vec<Job>,
) -> Result<Vec<JobView>, ApiError> {
    let ids = with_files(&jobs);
    let mut results = files_by_job(state, base, tenant, &ids, FileRole::Result).await?;
    Ok(jobs
        .into_iter()
        .map(|job| {
            let files = results.remove(&job.id.as_uuid()).unwrap_or_default();
            let mut view = JobView::from(job);
            view.result_url = files.first().map(|f| f.url.clone());
            view.result_files = files;
            view
        })
        .collect())
}

pub(crate) async fn job_view(
    state: &ApiState,
    req: &HttpRequest,
    tenant: &str,
    job: Job,
) -> Result<JobView, ApiError> {
    Ok(job_views(state, req, tenant, vec![job]).await?.remove(0))
}

/// Claimed jobs with their input files. `jobs` are the claimed rows, for `has_files`.
pub(crate) async fn with_inputs(
    state: &ApiState,
    req: &HttpRequest,
    tenant: &str,
    jobs: &[Job],
    claimed: &mut [ClaimedJob],
) -> Result<(), ApiError> {
    let ids = with_files(jobs);
    let base = base_url(state, req);
    let mut inputs = files_by_job(state, &base, tenant, &ids, FileRole::Input).await?;
    for one in claimed {
        one.files = inputs.remove(&one.job.id).unwrap_or_default();
    }
    Ok(())
}

/// The tenant's job, or 404.
async fn tenant_job(state: &ApiState, tenant: &str, raw: &str) -> Result<Job, ApiError> {
    Ok(state.reader.get(Some(tenant), job_id(raw)?).await?)
}

async fn list(
    state: &ApiState,
    req: &HttpRequest,
    tenant: &str,
    raw_id: &str,
    role: FileRole,
) -> Result<HttpResponse, ApiError> {
    let job = tenant_job(state, tenant, raw_id).await?;
    let base = base_url(state, req);
    let mut files = files_by_job(state, &base, tenant, &[job.id], role).await?;
    let items = files.remove(&job.id.as_uuid()).unwrap_or_default();
    Ok(HttpResponse::Ok().json(FileList { items }))
}

async fn download(
    state: &ApiState,
    tenant: &str,
    (raw_id, name): (String, String),
    role: FileRole,
) -> Result<HttpResponse, ApiError> {
    let id = job_id(&raw_id)?;
    let files = state.store.job_files(Some(tenant), &[id], role).await?;
    let file = files.into_iter().find(|f| f.name == name).ok_or_else(|| {
        ApiError::not_found(format!(
            "job {raw_id} has no {} file named {name:?}",
            role.as_str()
        ))
    })?;
    let bytes = storage(state)?.get(file.id).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((header::ETAG, format!("\"{}\"", file.sha256)))
        .no_chunking(file.size)
        .streaming(bytes.map(|chunk| chunk.map_err(std::io::Error::other))))
}

/// Stage an input file before its job exists; name its `id` in `files` when creating
/// the job. Unattached staged files are deleted a day after their upload.
#[utoipa::path(post, path = "/v1/files", tag = "files", params(NameQuery),
    request_body(content = Option<String>, description = "The file's bytes, raw (may be empty)", content_type = "application/octet-stream"),
    responses(
        (status = 201, body = StagedFile),
        (status = 400, description = "A missing or invalid `name`, an unknown query parameter, or a broken body (`errors` names the field)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than the api's file limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/files")]
pub async fn stage_file(
    state: Data,
    Tenant(tenant): Tenant,
    req: HttpRequest,
    Query(query): Query<NameQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = name_of(query.name)?;
    let file = store(&state, &req, FileOwner::Staged, &tenant, &name, body).await?;
    Ok(HttpResponse::Created().json(StagedFile {
        id: file.id.as_uuid(),
        name: file.name,
        size: file.size,
        sha256: file.sha256,
        expires_at: file.created_at + STAGED_FILE_TTL,
    }))
}

/// Upload an input file to an existing job. A worker may claim the job meanwhile: to
/// create a job together with its inputs, stage them first (`POST /v1/files`).
#[utoipa::path(post, path = "/v1/jobs/{id}/files", tag = "files", params(("id" = String, Path), NameQuery),
    request_body(content = Option<String>, description = "The file's bytes, raw (may be empty)", content_type = "application/octet-stream"),
    responses(
        (status = 201, body = FileView),
        (status = 400, description = "A missing or invalid `name`, an unknown query parameter, or a broken body (`errors` names the field)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has an input of this name", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than the api's file limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/jobs/{id}/files")]
pub async fn upload_input(
    state: Data,
    Tenant(tenant): Tenant,
    req: HttpRequest,
    path: web::Path<String>,
    Query(query): Query<NameQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let job = tenant_job(&state, &tenant, &path).await?;
    let name = name_of(query.name)?;
    let owner = FileOwner::Input(job.id);
    let file = store(&state, &req, owner, &tenant, &name, body).await?;
    Ok(HttpResponse::Created().json(file_view(&base_url(&state, &req), &file)))
}

/// A job's input files.
#[utoipa::path(get, path = "/v1/jobs/{id}/files", tag = "files", params(("id" = String, Path)),
    responses(
        (status = 200, body = FileList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/jobs/{id}/files")]
pub async fn list_inputs(
    state: Data,
    Tenant(tenant): Tenant,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    list(&state, &req, &tenant, &path, FileRole::Input).await
}

/// Download an input file.
#[utoipa::path(get, path = "/v1/jobs/{id}/files/{name}", tag = "files", params(("id" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "The file's bytes; `ETag` is their SHA-256", content_type = "application/octet-stream", body = String),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job, or no input of this name", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/jobs/{id}/files/{name}")]
pub async fn download_input(
    state: Data,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    download(&state, &tenant, path.into_inner(), FileRole::Input).await
}

/// Remote workers: attach a result file to the running attempt (the lease holder only);
/// it replaces a result file of the same name, such as an earlier attempt's.
#[utoipa::path(post, path = "/v1/jobs/{id}/result-files", tag = "workers", params(("id" = String, Path), ResultQuery),
    request_body(content = Option<String>, description = "The file's bytes, raw (may be empty)", content_type = "application/octet-stream"),
    responses(
        (status = 201, body = FileView),
        (status = 400, description = "A missing or invalid `name`, `worker_id` or `lease_token`, an unknown query parameter, or a broken body (`errors` names the field)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This worker no longer holds the job (`lease-lost`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than the api's file limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/jobs/{id}/result-files")]
pub async fn upload_result(
    state: Data,
    Tenant(tenant): Tenant,
    req: HttpRequest,
    path: web::Path<String>,
    Query(query): Query<ResultQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = job_id(&path)?;
    let name = name_of(query.name)?;
    let worker_id = required(query.worker_id, "worker_id")?;
    let token = required(query.lease_token, "lease_token")?;
    let lease = lease_held(&state, &tenant, id, &worker_id, token).await?;
    let file = store(&state, &req, FileOwner::Result(lease), &tenant, &name, body).await?;
    Ok(HttpResponse::Created().json(file_view(&base_url(&state, &req), &file)))
}

/// A job's result files.
#[utoipa::path(get, path = "/v1/jobs/{id}/result-files", tag = "files", params(("id" = String, Path)),
    responses(
        (status = 200, body = FileList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/jobs/{id}/result-files")]
pub async fn list_results(
    state: Data,
    Tenant(tenant): Tenant,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    list(&state, &req, &tenant, &path, FileRole::Result).await
}

/// Download a result file.
#[utoipa::path(get, path = "/v1/jobs/{id}/result-files/{name}", tag = "files", params(("id" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "The file's bytes; `ETag` is their SHA-256", content_type = "application/octet-stream", body = String),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job, or no result file of this name", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/jobs/{id}/result-files/{name}")]
pub async fn download_result(
    state: Data,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    download(&state, &tenant, path.into_inner(), FileRole::Result).await
}
