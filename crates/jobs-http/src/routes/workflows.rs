//! Workflows over HTTP: `/v1/workflows`, per tenant. A step takes the create fields of
//! `POST /v1/jobs`, with a `name` and `depends_on` naming other steps.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, delete, get, post, web};
use jobs_core::{
    Cursor, FieldError, JobError, JobId, PageRequest, State, Step, StepDependency, Workflow,
    WorkflowFilter, WorkflowId, WorkflowState, WorkflowView,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::{
    ApiState,
    dto::CreateJob,
    error::{ApiError, Problem},
    extract::{Json, Query, Tenant, TraceId},
};

type Data = web::Data<ApiState>;

/// A workflow to create: named steps, each a job, and the steps each waits for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    /// Free text to find it by, up to 255 bytes.
    #[schema(min_length = 1, max_length = 255)]
    pub name: Option<String>,
    /// 1..=10,000 steps; no cycles. Each is an object: `name` (unique in the workflow)
    /// and the create fields of `POST /v1/jobs` (`CreateJob`), whose `depends_on` names
    /// steps of the workflow. Each is read by `step_of`, which names an error's
    /// field inside the step (a flattened struct would name only the step, and let
    /// unknown fields through).
    #[schema(min_items = 1, max_items = 10000, value_type = Vec<Object>)]
    pub steps: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Step `i`'s name and create fields, or the field at fault: `steps[2].priority`.
fn step_of(
    i: usize,
    mut fields: serde_json::Map<String, serde_json::Value>,
) -> Result<(String, CreateJob), FieldError> {
    let name = match fields.remove("name") {
        Some(serde_json::Value::String(name)) => name,
        Some(_) => {
            return Err(FieldError::new(
                format!("steps[{i}].name"),
                "must be a string",
            ));
        }
        None => return Err(FieldError::new(format!("steps[{i}].name"), "is required")),
    };
    let job = serde_path_to_error::deserialize(serde_json::Value::Object(fields)).map_err(|e| {
        let field = match e.path().to_string() {
            root if root == "." => format!("steps[{i}]"),
            path => format!("steps[{i}].{path}"),
        };
        FieldError::new(field, e.inner().to_string())
    })?;
    Ok((name, job))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowBody {
    #[schema(value_type = String, format = Uuid)]
    pub id: WorkflowId,
    pub name: Option<String>,
    /// `running` (a step is waiting, pending or running), `completed` (every step
    /// completed), `failed` (every step ended, one failed or was cancelled), `cancelled`.
    #[schema(value_type = String, example = "running")]
    pub state: WorkflowState,
    /// Steps by state.
    #[schema(value_type = Object)]
    pub counts: BTreeMap<State, u64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub cancelled_at: Option<OffsetDateTime>,
    /// In the order given; left out of listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepState>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StepState {
    pub name: String,
    #[schema(value_type = String, format = Uuid)]
    pub job_id: JobId,
    #[schema(value_type = String, example = "waiting")]
    pub state: State,
    pub depends_on: Vec<String>,
}

impl WorkflowBody {
    fn of(view: WorkflowView, with_steps: bool) -> Self {
        let steps = with_steps.then(|| {
            view.steps
                .into_iter()
                .map(|s| StepState {
                    name: s.name,
                    job_id: s.job_id,
                    state: s.state,
                    depends_on: s.depends_on,
                })
                .collect()
        });
        Self {
            id: view.id,
            name: view.name,
            state: view.state,
            counts: view.counts,
            created_at: view.created_at,
            cancelled_at: view.cancelled_at,
            steps,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowList {
    pub items: Vec<WorkflowBody>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WorkflowQuery {
    #[param(value_type = Option<String>, pattern = "^(running|completed|failed|cancelled)$")]
    pub state: Option<String>,
    pub name: Option<String>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = r"^-?[0-9]{1,17}\.[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub cursor: Option<String>,
}

impl CreateWorkflow {
    /// The workflow, or every field at fault, named by step: `steps[2].depends_on[0]`.
    fn into_workflow(self, tenant: &str, trace: &Option<String>) -> Result<Workflow, ApiError> {
        let mut workflow = Workflow {
            id: WorkflowId::new(),
            tenant: tenant.to_owned(),
            name: self.name,
            steps: Vec::with_capacity(self.steps.len()),
        };
        let mut errors = Vec::new();
        for (i, fields) in self.steps.into_iter().enumerate() {
            let (name, mut job) = match step_of(i, fields) {
                Ok(step) => step,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let depends_on = job.depends_on.take().unwrap_or_default();
            let mut parents = Vec::with_capacity(depends_on.len());
            for (j, item) in depends_on.iter().enumerate() {
                match item.target(true, &format!("steps[{i}].depends_on[{j}]")) {
                    Ok((step, requires)) => parents.push(StepDependency { step, requires }),
                    Err(e) => errors.push(e),
                }
            }
            match job.into_job_without_parents(tenant, trace.clone()) {
                Ok(job) => workflow.steps.push(Step {
                    name,
                    job,
                    depends_on: parents,
                }),
                Err(JobError::Invalid(fields)) => errors.extend(
                    fields
                        .into_iter()
                        .map(|f| FieldError::new(format!("steps[{i}].{}", f.field), f.message)),
                ),
                Err(other) => return Err(other.into()),
            }
        }
        JobError::invalid_if_any(errors)?;
        Ok(workflow)
    }
}

fn workflow_id(raw: &str) -> Result<WorkflowId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("workflow {raw} not found")))
}

/// Create a workflow: its steps' jobs are created at once, all or none; steps with
/// parents wait (`waiting`) until they end as required.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows", request_body = CreateWorkflow,
    responses(
        (status = 201, body = WorkflowBody),
        (status = 400, description = "Malformed JSON, or invalid steps: `errors` names each field by step (`steps[2].depends_on[0]`): an unknown step, a repeated name, a cycle, more than 10,000 steps, or a job field", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/workflows")]
pub async fn create_workflow(
    state: Data,
    Tenant(tenant): Tenant,
    trace: TraceId,
    Json(body): Json<CreateWorkflow>,
) -> Result<HttpResponse, ApiError> {
    let workflow = body.into_workflow(&tenant, &trace.0)?;
    let view = state.store.create_workflow(workflow).await?;
    tracing::info!(workflow_id = %view.id, steps = view.steps.len(), "workflow created");
    Ok(HttpResponse::Created().json(WorkflowBody::of(view, true)))
}

/// A workflow with each step's state.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows", params(("id" = String, Path)),
    responses(
        (status = 200, body = WorkflowBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/workflows/{id}")]
pub async fn get_workflow(
    state: Data,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = state
        .store
        .workflow(Some(&tenant), workflow_id(&path)?)
        .await?;
    Ok(HttpResponse::Ok().json(WorkflowBody::of(view, true)))
}

/// The tenant's workflows, newest first, by state and name.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", params(WorkflowQuery),
    responses(
        (status = 200, body = WorkflowList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/workflows")]
pub async fn list_workflows(
    state: Data,
    Tenant(tenant): Tenant,
    Query(query): Query<WorkflowQuery>,
) -> Result<HttpResponse, ApiError> {
    let workflow_state = match query.state.as_deref() {
        None => None,
        Some(raw) => Some(WorkflowState::parse(raw).ok_or_else(|| {
            ApiError::invalid_field("state", "must be running, completed, failed or cancelled")
        })?),
    };
    let filter = WorkflowFilter {
        tenant: Some(tenant),
        name: query.name,
        state: workflow_state,
    };
    let mut page = PageRequest::first(query.limit.unwrap_or(50));
    page.cursor = query
        .cursor
        .as_deref()
        .map(str::parse::<Cursor>)
        .transpose()?;
    let found = state.store.workflows(&filter, &page).await?;
    Ok(HttpResponse::Ok().json(WorkflowList {
        items: found
            .items
            .into_iter()
            .map(|w| WorkflowBody::of(w, false))
            .collect(),
        next_cursor: found.next_cursor.map(|c| c.to_string()),
    }))
}

/// Cancel a workflow: its waiting and pending steps end `cancelled` at once, running
/// ones get a cancel request; nothing of it runs afterwards.
#[utoipa::path(delete, path = "/v1/workflows/{id}", tag = "workflows", params(("id" = String, Path)),
    responses(
        (status = 200, body = WorkflowBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[delete("/v1/workflows/{id}")]
pub async fn cancel_workflow(
    state: Data,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = state
        .store
        .cancel_workflow(Some(&tenant), workflow_id(&path)?);
    moved(view.await?, "workflow cancelled")
}

/// Run a workflow's failed and cancelled steps again; each waits for those of its
/// parents that have not ended as it requires.
#[utoipa::path(post, path = "/v1/workflows/{id}/retry", tag = "workflows", params(("id" = String, Path)),
    responses(
        (status = 200, body = WorkflowBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/workflows/{id}/retry")]
pub async fn retry_workflow(
    state: Data,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = state
        .store
        .retry_workflow(Some(&tenant), workflow_id(&path)?);
    moved(view.await?, "workflow retried")
}

/// The answer to a cancel or a retry: the workflow as the move left it.
fn moved(view: WorkflowView, what: &str) -> Result<HttpResponse, ApiError> {
    tracing::info!(workflow_id = %view.id, "{what}");
    Ok(HttpResponse::Ok().json(WorkflowBody::of(view, true)))
}
