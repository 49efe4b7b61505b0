//! Workflows: named steps, each a job, with edges between them (a DAG). Created in one
//! transaction; each step waits for the steps it depends on, as `dependency` describes.
//!
//! ```
//! use jobs_core::{NewJob, Workflow};
//! use serde_json::json;
//!
//! let flow = Workflow::new("ingest")
//!     .step("fetch", NewJob::new("fetch", json!({"url": "https://example.com"})))
//!     .step("parse", NewJob::new("parse", json!({})))
//!     .after(["fetch"])
//!     .step("index", NewJob::new("index", json!({})))
//!     .after(["parse"])
//!     .step("notify", NewJob::new("notify", json!({})))
//!     .after_ended(["index"]);
//! assert!(flow.validate().is_ok());
//! ```

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    Cursor, Dependency, FieldError, JobError, JobId, NewJob, PageRequest, ParentResult, Requires,
    State, WorkflowId, dependency, limits, storable,
};

/// Most steps one workflow may have.
pub const MAX_STEPS: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub id: WorkflowId,
    pub tenant: String,
    pub name: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    /// The step's job; its tenant is the workflow's.
    pub job: NewJob,
    pub depends_on: Vec<StepDependency>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepDependency {
    pub step: String,
    pub requires: Requires,
}

impl Workflow {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            id: WorkflowId::new(),
            tenant: limits::DEFAULT_TENANT.to_owned(),
            name: Some(name.into()),
            steps: Vec::new(),
        }
    }

    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// Adds a step; `after` and `after_ended` then give the steps it waits for.
    pub fn step(mut self, name: impl Into<String>, job: NewJob) -> Self {
        self.steps.push(Step {
            name: name.into(),
            job,
            depends_on: Vec::new(),
        });
        self
    }

    /// The last step runs once each of these steps completed.
    pub fn after<S: Into<String>>(self, steps: impl IntoIterator<Item = S>) -> Self {
        self.last_step_waits(steps, Requires::Completed)
    }

    /// The last step runs once each of these steps ended, however.
    pub fn after_ended<S: Into<String>>(self, steps: impl IntoIterator<Item = S>) -> Self {
        self.last_step_waits(steps, Requires::Ended)
    }

    fn last_step_waits<S: Into<String>>(
        mut self,
        steps: impl IntoIterator<Item = S>,
        requires: Requires,
    ) -> Self {
        if let Some(last) = self.steps.last_mut() {
            last.depends_on
                .extend(steps.into_iter().map(|step| StepDependency {
                    step: step.into(),
                    requires,
                }));
        }
        self
    }

    /// Every problem at once, named by step: `steps[2].depends_on[0]`.
    pub fn validate(&self) -> Result<(), JobError> {
        let mut errors = Vec::new();
        crate::new_job::check_name(&mut errors, "tenant", &self.tenant);
        if let Some(name) = &self.name {
            check_workflow_name(&mut errors, name);
        }
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            errors.push(FieldError::new("steps", "must hold 1 to 10000 steps"));
            return JobError::invalid_if_any(errors);
        }
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            crate::new_job::check_name(&mut errors, &format!("steps[{i}].name"), &step.name);
            if index.insert(&step.name, i).is_some() {
                errors.push(FieldError::new(
                    format!("steps[{i}].name"),
                    format!("step {:?} is named twice", step.name),
                ));
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            check_step(&mut errors, i, step, &index);
        }
        if errors.is_empty() {
            let jobs = self.clone().into_jobs();
            if let Some(i) = dependency::first_in_cycle(&jobs) {
                errors.push(FieldError::new(
                    format!("steps[{i}].depends_on"),
                    format!(
                        "step {:?} depends on itself through the steps it waits for",
                        self.steps[i].name
                    ),
                ));
            }
        }
        JobError::invalid_if_any(errors)
    }

    /// The steps as jobs of this workflow's tenant, each depending on its parents' ids.
    /// Names that match no step are left out (`validate` refuses them).
    pub fn into_jobs(self) -> Vec<NewJob> {
        let ids: HashMap<String, JobId> = self
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.job.id))
            .collect();
        self.steps
            .into_iter()
            .map(|step| {
                let mut job = step.job;
                job.tenant = self.tenant.clone();
                job.workflow = Some((self.id, step.name));
                job.depends_on
                    .extend(step.depends_on.iter().filter_map(|d| {
                        ids.get(&d.step).map(|id| Dependency {
                            job_id: *id,
                            requires: d.requires,
                        })
                    }));
                job
            })
            .collect()
    }
}

fn check_workflow_name(errors: &mut Vec<FieldError>, name: &str) {
    if name.is_empty() || name.len() > limits::KEY_MAX_LEN {
        errors.push(FieldError::new("name", "must be 1 to 255 bytes"));
    }
    storable::check_text(errors, "name", name);
}

fn check_step(errors: &mut Vec<FieldError>, i: usize, step: &Step, index: &HashMap<&str, usize>) {
    if step.job.unique_key.is_some() {
        errors.push(FieldError::new(
            format!("steps[{i}].unique"),
            "a workflow step cannot be unique: it is created with its workflow",
        ));
    }
    if !step.job.depends_on.is_empty() {
        errors.push(FieldError::new(
            format!("steps[{i}].depends_on"),
            "names steps of the workflow, not job ids",
        ));
    }
    if step.depends_on.len() > dependency::MAX_PARENTS {
        errors.push(FieldError::new(
            format!("steps[{i}].depends_on"),
            "must name at most 10000 steps",
        ));
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for (j, parent) in step.depends_on.iter().enumerate() {
        let field = format!("steps[{i}].depends_on[{j}]");
        if !index.contains_key(parent.step.as_str()) {
            errors.push(FieldError::new(
                field,
                format!(
                    "step {:?} waits for {:?}, which is no step of the workflow",
                    step.name, parent.step
                ),
            ));
        } else if parent.step == step.name {
            errors.push(FieldError::new(
                field,
                format!("step {:?} cannot wait for itself", step.name),
            ));
        } else if !seen.insert(&parent.step) {
            errors.push(FieldError::new(
                field,
                format!("step {:?} names {:?} twice", step.name, parent.step),
            ));
        }
    }
    if let Err(JobError::Invalid(fields)) = step.job.validate() {
        errors.extend(fields.into_iter().map(|f| FieldError {
            field: format!("steps[{i}].{}", f.field),
            message: f.message,
        }));
    }
}

/// Where a workflow stands, from its steps' states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    /// A step is waiting, pending or running.
    Running,
    /// Every step completed (or completed partially).
    Completed,
    /// Every step ended, and one failed or was cancelled.
    Failed,
    /// Cancelled as a whole; steps still running end as their workers stop them.
    Cancelled,
}

impl WorkflowState {
    pub const ALL: [WorkflowState; 4] = [
        WorkflowState::Running,
        WorkflowState::Completed,
        WorkflowState::Failed,
        WorkflowState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Running => "running",
            WorkflowState::Completed => "completed",
            WorkflowState::Failed => "failed",
            WorkflowState::Cancelled => "cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The state of a workflow whose steps are in these states.
    pub fn of(cancelled: bool, counts: &BTreeMap<State, u64>) -> Self {
        let any = |states: &[State]| {
            states
                .iter()
                .any(|s| counts.get(s).copied().unwrap_or(0) > 0)
        };
        if cancelled {
            WorkflowState::Cancelled
        } else if any(&[State::Waiting, State::Pending, State::Running]) {
            WorkflowState::Running
        } else if any(&[State::Failed, State::Cancelled]) {
            WorkflowState::Failed
        } else {
            WorkflowState::Completed
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepView {
    pub name: String,
    pub job_id: JobId,
    pub state: State,
    /// The steps it waits for.
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowView {
    pub id: WorkflowId,
    pub tenant: String,
    pub name: Option<String>,
    pub state: WorkflowState,
    /// Steps by state.
    pub counts: BTreeMap<State, u64>,
    pub created_at: OffsetDateTime,
    pub cancelled_at: Option<OffsetDateTime>,
    /// In creation order; empty in listings.
    pub steps: Vec<StepView>,
}

/// Which workflows a listing returns; empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkflowFilter {
    pub tenant: Option<String>,
    pub name: Option<String>,
    pub state: Option<WorkflowState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowPage {
    pub items: Vec<WorkflowView>,
    pub next_cursor: Option<Cursor>,
}

#[async_trait]
pub trait WorkflowStore: Send + Sync + 'static {
    /// Creates the workflow and its steps' jobs, all or nothing.
    async fn create_workflow(&self, workflow: Workflow) -> Result<WorkflowView, JobError>;

    async fn workflow(
        &self,
        tenant: Option<&str>,
        id: WorkflowId,
    ) -> Result<WorkflowView, JobError>;

    /// Newest first.
    async fn workflows(
        &self,
        filter: &WorkflowFilter,
        page: &PageRequest,
    ) -> Result<WorkflowPage, JobError>;

    /// Cancels every step not yet ended: waiting and pending ones at once, running ones
    /// by a cancel request. Nothing of it is runnable afterwards.
    async fn cancel_workflow(
        &self,
        tenant: Option<&str>,
        id: WorkflowId,
    ) -> Result<WorkflowView, JobError>;

    /// Runs its failed and cancelled steps again: each waits for those of its parents
    /// that have not (now) ended as it requires, or is pending at once.
    async fn retry_workflow(
        &self,
        tenant: Option<&str>,
        id: WorkflowId,
    ) -> Result<WorkflowView, JobError>;

    /// The parents of each of `ids`, with their states and results, at most `limit` per
    /// job (the oldest parents first).
    async fn parent_results(
        &self,
        ids: &[JobId],
        limit: u32,
    ) -> Result<HashMap<JobId, Vec<ParentResult>>, JobError>;

    /// How many parents of `id` are in each state (deleted parents are not counted).
    async fn parent_counts(&self, id: JobId) -> Result<BTreeMap<State, u64>, JobError>;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job() -> NewJob {
        NewJob::new("k", json!({}))
    }

    fn fields(flow: &Workflow) -> Vec<(String, String)> {
        match flow.validate() {
            Err(JobError::Invalid(f)) => f.into_iter().map(|f| (f.field, f.message)).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_step() {
        let flow = Workflow::new("w")
            .step("a", job())
            .after(["nope"])
            .step("a", job())
            .step("b", job())
            .after(["b"]);
        let found = fields(&flow);
        assert_eq!(found[0].0, "steps[1].name");
        assert_eq!(found[1].0, "steps[0].depends_on[0]");
        assert!(found[1].1.contains("\"nope\""), "{found:?}");
        assert_eq!(found[2].0, "steps[2].depends_on[0]");
    }

    #[test]
    fn a_cycle_is_refused_and_named() {
        let flow = Workflow::new("w")
            .step("a", job())
            .after(["c"])
            .step("b", job())
            .after(["a"])
            .step("c", job())
            .after(["b"])
            .step("d", job());
        let found = fields(&flow);
        assert_eq!(found.len(), 1);
        assert!(found[0].0.starts_with("steps[") && found[0].0.ends_with("].depends_on"));
        assert!(found[0].1.contains("depends on itself"));
    }

    #[test]
    fn too_many_steps_are_refused() {
        let mut flow = Workflow::new("w");
        for i in 0..=MAX_STEPS {
            flow = flow.step(format!("s{i}"), job());
        }
        assert_eq!(fields(&flow)[0].0, "steps");
        assert_eq!(fields(&Workflow::new("w"))[0].0, "steps");
    }

    #[test]
    fn steps_become_jobs_that_wait_for_their_parents() {
        let flow = Workflow::new("w")
            .tenant("acme")
            .step("a", job())
            .step("b", job())
            .after_ended(["a"]);
        let id = flow.id;
        let jobs = flow.into_jobs();
        assert!(jobs.iter().all(|j| j.tenant == "acme"));
        assert_eq!(jobs[1].depends_on, vec![Dependency::ended(jobs[0].id)]);
        assert_eq!(jobs[1].workflow, Some((id, "b".to_owned())));
    }

    #[test]
    fn the_state_follows_the_steps() {
        let counts = |pairs: &[(State, u64)]| pairs.iter().copied().collect();
        let done = counts(&[(State::Completed, 3)]);
        assert_eq!(WorkflowState::of(false, &done), WorkflowState::Completed);
        let failing = counts(&[(State::Failed, 1), (State::Waiting, 1)]);
        assert_eq!(WorkflowState::of(false, &failing), WorkflowState::Running);
        let failed = counts(&[(State::Failed, 1), (State::Cancelled, 1)]);
        assert_eq!(WorkflowState::of(false, &failed), WorkflowState::Failed);
        assert_eq!(WorkflowState::of(true, &done), WorkflowState::Cancelled);
    }
}
