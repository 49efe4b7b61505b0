//! Request and response bodies. Requests reject unknown fields; times are RFC 3339.

use std::time::Duration;

use jobs_core::{
    AttemptError, Dependency, Estimate, FieldError, Job, JobError, JobId, LeaseToken, NewJob,
    OnParentFailure, QueueStats, Requires, State, UniqueStates, WorkflowId,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    limits::QueueLimitsBody,
    unique::{UniqueBody, UniqueState},
};

/// A job to create. Only `kind` is required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// Which handler runs it, e.g. `send_email`.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:/-]+$")]
    pub kind: String,
    /// The handler's arguments (any JSON; default `{}`).
    #[serde(default = "empty_object")]
    pub args: Value,
    /// Default `default`.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:/-]+$")]
    pub queue: Option<String>,
    /// 0..=10, 10 runs first; default 5.
    #[schema(minimum = 0, maximum = 10)]
    #[serde(default, deserialize_with = "whole::option")]
    pub priority: Option<i16>,
    /// Run no earlier than this instant. Exclusive with `delay_ms`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub run_at: Option<OffsetDateTime>,
    /// Run no earlier than this many milliseconds from now.
    #[schema(maximum = 315_360_000_000u64)]
    #[serde(default, deserialize_with = "whole::option")]
    pub delay_ms: Option<u64>,
    /// 1..=1000; default 20.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "whole::option")]
    pub max_attempts: Option<i32>,
    /// Per-attempt limit in milliseconds.
    #[schema(minimum = 1, maximum = 315_360_000_000u64)]
    #[serde(default, deserialize_with = "whole::option")]
    pub timeout_ms: Option<u64>,
    /// After this instant the job fails instead of running or retrying.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub deadline: Option<OffsetDateTime>,
    /// How long the job is kept after it ends, in seconds; default 7 days.
    #[schema(maximum = 315_360_000u64)]
    #[serde(default, deserialize_with = "whole::option")]
    pub ttl_seconds: Option<u64>,
    /// Short for `unique: {"key": ...}`: while a job with this key is pending or running
    /// (per tenant), a second create returns it. Not with `unique`.
    #[schema(min_length = 1, max_length = 255)]
    pub unique_key: Option<String>,
    /// Every option of uniqueness: key, by arguments, by kind, within a period, among
    /// chosen states, and what a duplicate does.
    pub unique: Option<UniqueBody>,
    /// Jobs of the tenant and queue with the same key (a customer id, an API host) count
    /// together against the queue's `key_concurrency` and `key_rate`.
    #[schema(min_length = 1, max_length = 255)]
    pub concurrency_key: Option<String>,
    /// Free-form JSON object.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Jobs that must end before this one runs (up to 10,000): job ids, or
    /// `{"id": ..., "requires": "completed" | "ended"}` (default `completed`: the parent
    /// must complete; `ended`: any end will do). In a workflow step: step names, or
    /// `{"step": ..., "requires": ...}`. With any, the job is created `waiting`.
    pub depends_on: Option<Vec<DependsOn>>,
    /// When a parent it requires to complete fails or is cancelled instead: `cancel`
    /// (default; the job is cancelled, its error history naming the parent) or `wait`
    /// (it keeps waiting for a retry of the parent).
    #[schema(value_type = Option<String>, example = "cancel")]
    pub on_parent_failure: Option<OnParentFailure>,
    /// Ids of files staged with `POST /v1/files` (up to 100, of distinct names): they
    /// become the job's inputs in the transaction that creates it, so no worker sees
    /// the job without them. Only `POST /v1/jobs` takes it.
    #[schema(max_items = 100)]
    pub files: Option<Vec<Uuid>>,
}

/// One parent: a job id (or, in a workflow, a step name), or an object saying what is
/// required of it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(
    untagged,
    expecting = "a job id (in a workflow, a step name), or {\"id\" (or \"step\"), \"requires\"}"
)]
pub enum DependsOn {
    Name(String),
    Parent(ParentBody),
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParentBody {
    /// A job id (in `POST /v1/jobs` and batches).
    #[schema(format = Uuid)]
    pub id: Option<String>,
    /// A step name (in workflows).
    pub step: Option<String>,
    #[schema(value_type = Option<String>, example = "completed")]
    #[serde(default)]
    pub requires: Requires,
}

impl DependsOn {
    /// The name (a job id or a step name) and what is required of it; `field` names the
    /// item in errors.
    pub(crate) fn target(
        &self,
        in_workflow: bool,
        field: &str,
    ) -> Result<(String, Requires), FieldError> {
        match self {
            DependsOn::Name(name) => Ok((name.clone(), Requires::Completed)),
            DependsOn::Parent(ParentBody {
                id: Some(id),
                step: None,
                requires,
            }) if !in_workflow => Ok((id.to_string(), *requires)),
            DependsOn::Parent(ParentBody {
                id: None,
                step: Some(step),
                requires,
            }) if in_workflow => Ok((step.clone(), *requires)),
            _ if in_workflow => Err(FieldError::new(
                field,
                "must be a step name or {\"step\", \"requires\"}",
            )),
            _ => Err(FieldError::new(
                field,
                "must be a job id or {\"id\", \"requires\"}",
            )),
        }
    }
}

/// Job ids as parents (`POST /v1/jobs`, batches, follow-ups), or every entry at fault.
fn parents_of(list: &[DependsOn]) -> Result<Vec<Dependency>, Vec<FieldError>> {
    let mut parents = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let field = format!("depends_on[{i}]");
        match item.target(false, &field) {
            Ok((id, requires)) => match id.parse() {
                Ok(job_id) => parents.push(Dependency { job_id, requires }),
                Err(_) => errors.push(FieldError::new(field, "must be a job id (a UUID)")),
            },
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(parents)
    } else {
        Err(errors)
    }
}

pub(crate) fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl CreateJob {
    /// The job, or the fields of `unique` at fault; `NewJob::validate` checks the rest.
    pub fn into_new_job(
        mut self,
        tenant: &str,
        trace_id: Option<String>,
    ) -> Result<NewJob, JobError> {
        if self.unique_key.is_some() && self.unique.is_some() {
            return Err(JobError::Invalid(vec![FieldError::new(
                "unique_key",
                "give unique_key or unique, not both",
            )]));
        }
        let depends_on = self.depends_on.take().unwrap_or_default();
        let mut job = self.into_job_without_parents(tenant, trace_id)?;
        job.depends_on = parents_of(&depends_on).map_err(JobError::Invalid)?;
        Ok(job)
    }

    /// The job without its `depends_on`, which workflows read as step names.
    pub(crate) fn into_job_without_parents(
        self,
        tenant: &str,
        trace_id: Option<String>,
    ) -> Result<NewJob, JobError> {
        if self.files.is_some() {
            return Err(JobError::Invalid(vec![FieldError::new(
                "files",
                "only a single create (POST /v1/jobs) takes files",
            )]));
        }
        let unique = self.unique.map(UniqueBody::into_opts).transpose();
        let mut job = NewJob::new(self.kind, self.args).tenant(tenant);
        job.on_parent_failure = self.on_parent_failure.unwrap_or_default();
        job.queue = self.queue.unwrap_or(job.queue);
        job.priority = self.priority.unwrap_or(job.priority);
        job.run_at = self.run_at;
        job.delay = self.delay_ms.map(Duration::from_millis);
        job.max_attempts = self.max_attempts.unwrap_or(job.max_attempts);
        job.timeout = self.timeout_ms.map(Duration::from_millis);
        job.deadline = self.deadline;
        job.retention = self
            .ttl_seconds
            .map(Duration::from_secs)
            .unwrap_or(job.retention);
        job.unique_key = self.unique_key.or(job.unique_key);
        job.concurrency_key = self.concurrency_key;
        job.trace_id = trace_id;
        job.metadata = self.metadata.unwrap_or(job.metadata);
        match unique {
            // The period bucket is that of this moment, by this process's clock.
            Ok(Some(opts)) => Ok(opts.apply(job)),
            Ok(None) => Ok(job),
            // With the other fields' problems, so one answer names them all.
            Err(JobError::Invalid(mut fields)) => {
                if let Err(JobError::Invalid(more)) = job.validate() {
                    fields.extend(more);
                }
                Err(JobError::Invalid(fields))
            }
            Err(other) => Err(other),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    /// 1..=1000 jobs, inserted all or none. `depends_on` may name jobs of the batch.
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<CreateJob>,
    /// A job that runs once, after every job of the batch ended (however); it reads
    /// their counts by state in its claim's `parents.counts`.
    pub callback: Option<CreateJob>,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    #[schema(value_type = String, example = "pending")]
    pub state: State,
    /// Pending with a run_at still in the future.
    pub scheduled: bool,
    pub priority: i16,
    pub args: Value,
    /// 0.0..=1.0 as last reported by the handler.
    pub progress: f64,
    pub stage: Option<String>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub result: Option<Value>,
    pub item_errors: Option<Value>,
    pub errors: Vec<AttemptErrorView>,
    pub worker_id: Option<String>,
    pub cancel_requested: bool,
    /// As stored: with `unique.by_args`, by kind or a period, it carries them.
    pub unique_key: Option<String>,
    /// With a `unique_key`: the states of this job in which the key blocks another.
    #[schema(value_type = Option<Vec<UniqueState>>)]
    pub unique_states: Option<UniqueStates>,
    /// Counts against the queue's per-key limits.
    pub concurrency_key: Option<String>,
    pub trace_id: Option<String>,
    pub metadata: Value,
    pub timeout_ms: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub run_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub deadline: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub lease_expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Run time of the last attempt, once it ended.
    pub duration_ms: Option<i64>,
    /// How many jobs this one depends on.
    pub parents: i32,
    /// How many of them have not yet ended as required; the job is `waiting` while any.
    pub waiting_on: i32,
    #[schema(value_type = String, example = "cancel")]
    pub on_parent_failure: OnParentFailure,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub workflow_id: Option<WorkflowId>,
    pub workflow_step: Option<String>,
    /// Files the job's attempts attached (`POST /v1/jobs/{id}/result-files`).
    pub result_files: Vec<FileView>,
    /// The download URL of the first result file; null without.
    pub result_url: Option<String>,
    /// A due pending job: how many runnable jobs of its tenant and queue a claim takes
    /// before it (priority, then oldest); 0 at the head. Counted up to 1,000 on a read and 100 on a create (see
    /// `position_exact`). Given on create and on `GET /v1/jobs/{id}`, null elsewhere.
    pub position_in_queue: Option<u64>,
    /// False when the count stopped at its limit: at least that many come first (as of
    /// at most a second ago, for a job far behind the limit).
    pub position_exact: Option<bool>,
    /// When a pending job will likely start: its `run_at` if scheduled; else after the
    /// jobs ahead of it, at the queue's observed pace. Null without run-time history.
    #[serde(with = "time::serde::rfc3339::option")]
    pub estimated_start_at: Option<OffsetDateTime>,
    /// When a pending or running job will likely end, from the observed run times of its
    /// kind and its reported progress. Null without either.
    #[serde(with = "time::serde::rfc3339::option")]
    pub estimated_completion_at: Option<OffsetDateTime>,
}

impl JobView {
    /// With where the job stands and when it will likely start and end.
    pub fn with_estimate(mut self, estimate: Estimate) -> Self {
        self.position_in_queue = estimate.position_in_queue;
        self.position_exact = estimate.position_in_queue.map(|_| estimate.position_exact);
        self.estimated_start_at = estimate.estimated_start_at;
        self.estimated_completion_at = estimate.estimated_completion_at;
        self
    }
}

/// A file of a job, to download from `url` (an absolute URL of this API, with the same
/// authentication).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileView {
    pub name: String,
    pub url: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    pub items: Vec<FileView>,
}

/// A file uploaded before its job exists: name its `id` in the job's `files` at create.
#[derive(Debug, Serialize, ToSchema)]
pub struct StagedFile {
    pub id: Uuid,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// It can be attached until this long after its upload (24 hours), then it is deleted.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptErrorView {
    pub attempt: i32,
    pub kind: String,
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl From<AttemptError> for AttemptErrorView {
    fn from(e: AttemptError) -> Self {
        Self {
            attempt: e.attempt,
            kind: e.kind,
            message: e.message,
            at: e.at,
        }
    }
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        let duration_ms = job.duration_ms();
        let scheduled = job.state == State::Pending && job.run_at > OffsetDateTime::now_utc();
        Self {
            id: job.id.as_uuid(),
            kind: job.kind,
            queue: job.queue,
            state: job.state,
            scheduled,
            priority: job.priority,
            args: job.args,
            progress: job.progress,
            stage: job.stage,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            result: job.result,
            item_errors: job.item_errors,
            errors: job.errors.into_iter().map(Into::into).collect(),
            worker_id: job.worker_id,
            cancel_requested: job.cancel_requested_at.is_some(),
            unique_key: job.unique_key,
            unique_states: job.unique_states,
            concurrency_key: job.concurrency_key,
            trace_id: job.trace_id,
            metadata: job.metadata,
            timeout_ms: job.timeout_ms,
            run_at: job.run_at,
            deadline: job.deadline,
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            lease_expires_at: job.lease_expires_at,
            expires_at: job.expires_at,
            duration_ms,
            parents: job.parents,
            waiting_on: job.waiting_on,
            on_parent_failure: job.on_parent_failure,
            workflow_id: job.workflow_id,
            workflow_step: job.workflow_step,
            position_in_queue: None,
            position_exact: None,
            estimated_start_at: None,
            estimated_completion_at: None,
            result_files: Vec::new(),
            result_url: None,
        }
    }
}

/// The created (or, for a repeated unique key, the existing) job.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    /// True when a job with this unique key already existed and is returned instead.
    pub duplicate: bool,
    /// True when that job was pending and took this request's `args` and run time
    /// (`unique.on_conflict: replace`).
    pub replaced: bool,
    #[serde(flatten)]
    pub job: JobView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedBatch {
    pub jobs: Vec<Created>,
    /// The batch's callback job, when one was given.
    pub callback: Option<Created>,
}

/// A created job's id alone: the answer to `Prefer: return=minimal`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatedId {
    pub id: Uuid,
    /// As in `Created`.
    pub duplicate: bool,
    /// As in `Created`.
    pub replaced: bool,
}

/// The ids of a batch's jobs, in the order sent: the answer to `Prefer: return=minimal`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatedBatchIds {
    pub jobs: Vec<CreatedId>,
    /// The batch's callback job, when one was given.
    pub callback: Option<CreatedId>,
}

/// A batch's answer: every job as `GET /v1/jobs/{id}` shows it, or with `Prefer:
/// return=minimal` their ids alone.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchCreated {
    Jobs(Box<CreatedBatch>),
    Ids(CreatedBatchIds),
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait for the job to end (capped at 60).
    #[param(minimum = 0)]
    pub wait: Option<f64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[param(value_type = Option<String>, pattern = "^(pending|running|completed|partial|failed|cancelled|waiting)$")]
    pub state: Option<State>,
    #[param(pattern = r"^[^\x00]*$")]
    pub kind: Option<String>,
    #[param(pattern = r"^[^\x00]*$")]
    pub queue: Option<String>,
    /// The kind of the job's last error.
    #[param(pattern = r"^[^\x00]*$")]
    pub error_kind: Option<String>,
    /// Created at or after (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_after: Option<OffsetDateTime>,
    /// Created before (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_before: Option<OffsetDateTime>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    #[param(maximum = 9_223_372_036_854_775_807u64)]
    pub offset: Option<u64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = r"^-?[0-9]{1,17}\.[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub cursor: Option<String>,
    /// A job id (a UUID: that job), or else a unique key, matched exactly (as stored: a
    /// key made with `unique.by_args`, by kind or a period carries them).
    #[param(min_length = 1, max_length = 255, pattern = r"^[^\x00]+$")]
    pub q: Option<String>,
}

/// One event of `GET /v1/jobs/{id}/events`, field by field: the stream sends
/// `event: job`, `id: <job id>` and `data: <the job as JSON, on one line>`, then a blank
/// line.
#[derive(Debug, ToSchema)]
pub struct JobEvent {
    /// Always `job`.
    #[schema(pattern = "^job$")]
    pub event: &'static str,
    /// The job's id (the SSE `id` field).
    pub id: uuid::Uuid,
    pub data: JobView,
}

impl JobEvent {
    pub fn job(view: JobView) -> Self {
        Self {
            event: "job",
            id: view.id,
            data: view,
        }
    }

    /// The event as the stream sends it.
    pub fn frame(&self) -> String {
        let data = serde_json::to_string(&self.data).unwrap_or_default();
        format!("event: {}\nid: {}\ndata: {data}\n\n", self.event, self.id)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub items: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// Unique per worker process.
    #[schema(min_length = 1, max_length = 255)]
    pub worker_id: String,
    /// Default `["default"]`.
    pub queues: Option<Vec<String>>,
    /// Only these kinds; default any.
    pub kinds: Option<Vec<String>>,
    /// 1..=100, default 1.
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "whole::option")]
    pub max_jobs: Option<u32>,
    /// 1..=3600, default 30.
    #[schema(minimum = 1, maximum = 3600)]
    #[serde(default, deserialize_with = "whole::option")]
    pub lease_seconds: Option<u64>,
    /// Wait up to this long (max 30 s) for a job when none is due.
    #[schema(minimum = 0)]
    pub wait_seconds: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Claimed {
    pub jobs: Vec<ClaimedJob>,
}

/// A claimed job and the token of this attempt, which heartbeat, complete and fail must
/// present. Only the claimer is told it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimedJob {
    #[schema(value_type = String, format = Uuid)]
    pub lease_token: LeaseToken,
    /// For a job with parents: how they ended and what they returned (bounded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_results: Option<ParentsView>,
    /// The job's input files, each with its download URL.
    pub files: Vec<FileView>,
    #[serde(flatten)]
    pub job: JobView,
}

impl ClaimedJob {
    pub fn of(job: Job) -> Option<Self> {
        Some(Self {
            lease_token: job.lease_token?,
            parent_results: None,
            files: Vec::new(),
            job: job.into(),
        })
    }
}

/// A claimed job's parents: all of them counted by state, and the results of the first
/// ones, at most 100 and 1 MiB of results (`truncated` says when some were left out;
/// `GET /v1/jobs/{id}` of a parent reads any one).
#[derive(Debug, Serialize, ToSchema)]
pub struct ParentsView {
    #[schema(value_type = Object)]
    pub counts: std::collections::BTreeMap<State, u64>,
    pub results: Vec<ParentView>,
    pub truncated: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParentView {
    #[schema(value_type = String, format = Uuid)]
    pub id: JobId,
    pub step: Option<String>,
    #[schema(value_type = Option<String>, example = "completed")]
    pub state: Option<State>,
    #[schema(value_type = String, example = "completed")]
    pub requires: Requires,
    pub result: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    #[schema(min_length = 1, max_length = 255)]
    pub worker_id: String,
    /// The `lease_token` the claim returned; a stale one gets 409 `lease-lost`.
    #[schema(value_type = String, format = Uuid)]
    pub lease_token: LeaseToken,
    /// 0.0..=1.0.
    #[schema(minimum = 0, maximum = 1)]
    pub progress: Option<f64>,
    pub stage: Option<String>,
    /// Extend the lease by this long; default 30.
    #[schema(minimum = 1, maximum = 3600)]
    #[serde(default, deserialize_with = "whole::option")]
    pub lease_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatReply {
    /// Stop the job and report it with `fail`; it will end cancelled.
    pub cancel_requested: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    #[schema(min_length = 1, max_length = 255)]
    pub worker_id: String,
    /// The `lease_token` the claim returned; a stale one gets 409 `lease-lost`.
    #[schema(value_type = String, format = Uuid)]
    pub lease_token: LeaseToken,
    #[serde(default)]
    pub result: Value,
    /// Present for a partial success: the items that failed.
    pub item_errors: Option<Value>,
    /// Jobs to create (up to 1,000, as `POST /v1/jobs` takes them) in the transaction
    /// that stores this result: they exist if and only if it is stored.
    #[schema(max_items = 1000)]
    pub follow_ups: Option<Vec<CreateJob>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    #[schema(min_length = 1, max_length = 255)]
    pub worker_id: String,
    /// The `lease_token` the claim returned; a stale one gets 409 `lease-lost`.
    #[schema(value_type = String, format = Uuid)]
    pub lease_token: LeaseToken,
    pub error: FailError,
    /// Default true: retried with backoff while attempts remain.
    pub retryable: Option<bool>,
    /// Retry after exactly this long instead of the backoff.
    #[schema(minimum = 0)]
    pub retry_after_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailError {
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Ended {
    /// The state the job moved to.
    #[schema(value_type = String)]
    pub state: State,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub queue: String,
    /// Jobs per state (states with none are 0).
    pub counts: std::collections::BTreeMap<String, u64>,
    /// Milliseconds the oldest due pending job has waited.
    pub oldest_pending_age_ms: Option<u64>,
    /// No job of the queue is claimed while paused (for this tenant or for every tenant);
    /// running jobs finish.
    pub paused: bool,
    /// Jobs running now, in every process (`counts.running`).
    pub running: u64,
    /// Due pending jobs that a limit holds back right now.
    pub throttled: u64,
    /// The limits this tenant set (`PUT /v1/queues/{name}`); each `null` is no limit.
    pub limits: QueueLimitsBody,
    /// The limits an operator set for every tenant, counting all tenants' jobs
    /// together; where both are set, both hold.
    pub all_tenants_limits: QueueLimitsBody,
}

impl From<QueueStats> for QueueView {
    fn from(stats: QueueStats) -> Self {
        let counts: std::collections::BTreeMap<String, u64> = State::ALL
            .iter()
            .map(|s| {
                (
                    s.as_str().to_owned(),
                    stats.counts.get(s).copied().unwrap_or(0),
                )
            })
            .collect();
        Self {
            queue: stats.queue,
            oldest_pending_age_ms: stats.oldest_pending_age.map(|d| d.as_millis() as u64),
            paused: stats.paused,
            running: counts[State::Running.as_str()],
            counts,
            throttled: stats.throttled,
            limits: stats.limits.into(),
            all_tenants_limits: stats.all_tenants_limits.into(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queues {
    pub queues: Vec<QueueView>,
}

/// Who the caller is: what a client needs before its first request.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// Whether requests need an API key (`Authorization: Bearer <key>`).
    pub auth: bool,
    /// The tenant the caller acts for; null when a key is needed and none was sent.
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// JSON Schema counts `46.0` as an integer; so do we, for integer fields.
pub(crate) mod whole {
    use serde::{Deserialize, Deserializer, de::Error};
    use serde_json::Number;

    pub fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64> + TryFrom<u64>,
    {
        let Some(number) = Option::<Number>::deserialize(deserializer)? else {
            return Ok(None);
        };
        let out_of_range = || D::Error::custom(format!("{number} is out of range"));
        if let Some(n) = number.as_u64() {
            return T::try_from(n).map(Some).map_err(|_| out_of_range());
        }
        if let Some(n) = number.as_i64() {
            return T::try_from(n).map(Some).map_err(|_| out_of_range());
        }
        match number.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                T::try_from(f as i64).map(Some).map_err(|_| out_of_range())
            }
            _ => Err(D::Error::custom(format!(
                "invalid type: {number}, expected an integer"
            ))),
        }
    }
}
