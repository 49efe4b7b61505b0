//! Dependencies between jobs: a job may wait for others (its parents) to end. It is
//! stored `waiting`, which the claim never reads, and the statement that ends its last
//! parent makes it pending in the same transaction.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{FieldError, JobError, JobId, NewJob, State};

/// Most parents one job may have.
pub const MAX_PARENTS: usize = 10_000;

/// What a dependent job needs of one parent before it may run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requires {
    /// The parent completed (a partial success counts): its result exists.
    #[default]
    Completed,
    /// The parent ended in any way: completed, partial, failed or cancelled.
    Ended,
}

impl Requires {
    pub fn as_str(self) -> &'static str {
        match self {
            Requires::Completed => "completed",
            Requires::Ended => "ended",
        }
    }

    /// Whether a parent that ended in `state` satisfies this requirement.
    pub fn met_by(self, state: State) -> bool {
        match self {
            Requires::Completed => matches!(state, State::Completed | State::Partial),
            Requires::Ended => state.is_ended(),
        }
    }
}

/// One parent of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dependency {
    pub job_id: JobId,
    #[serde(default)]
    pub requires: Requires,
}

impl Dependency {
    pub fn completed(job_id: JobId) -> Self {
        Self {
            job_id,
            requires: Requires::Completed,
        }
    }

    pub fn ended(job_id: JobId) -> Self {
        Self {
            job_id,
            requires: Requires::Ended,
        }
    }
}

/// What becomes of a waiting job when a parent it requires to complete fails or is
/// cancelled instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnParentFailure {
    /// It is cancelled, with the parent named in its error history (`parent_failed`);
    /// its own dependents follow their policies in turn.
    #[default]
    Cancel,
    /// It keeps waiting: a retry of the parent that then completes releases it.
    Wait,
}

impl OnParentFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnParentFailure::Cancel => "cancel",
            OnParentFailure::Wait => "wait",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [OnParentFailure::Cancel, OnParentFailure::Wait]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}

/// The error-history kind of a job cancelled because a parent did not complete.
pub const PARENT_FAILED: &str = "parent_failed";

/// A parent as its dependent sees it: how it ended and what it returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentResult {
    pub id: JobId,
    /// Its step name, in a workflow.
    pub step: Option<String>,
    pub requires: Requires,
    /// `None` when the parent no longer exists (deleted after it ended).
    pub state: Option<State>,
    pub result: Option<Value>,
}

/// Among the jobs of a batch, no cycle. The error names the item: `jobs[2].depends_on`.
pub fn check_batch(jobs: &[NewJob]) -> Result<(), JobError> {
    match first_in_cycle(jobs) {
        None => Ok(()),
        Some(i) => Err(JobError::Invalid(vec![FieldError::new(
            format!("jobs[{i}].depends_on"),
            "forms a cycle: the job depends, through others of the batch, on itself",
        )])),
    }
}

/// One job's own list: its size, no repeats, not itself.
pub(crate) fn check_list(errors: &mut Vec<FieldError>, job: &NewJob) {
    let field = "depends_on";
    if job.depends_on.len() > MAX_PARENTS {
        errors.push(FieldError::new(field, "must name at most 10000 jobs"));
        return;
    }
    let mut seen = HashSet::with_capacity(job.depends_on.len());
    for (j, dependency) in job.depends_on.iter().enumerate() {
        if dependency.job_id == job.id {
            errors.push(FieldError::new(
                format!("{field}[{j}]"),
                "a job cannot depend on itself",
            ));
        } else if !seen.insert(dependency.job_id) {
            errors.push(FieldError::new(
                format!("{field}[{j}]"),
                format!("names job {} twice", dependency.job_id),
            ));
        }
    }
}

/// The index of a job on a cycle among the batch's own dependencies, if any (Kahn's
/// algorithm: what never reaches in-degree 0 is on or behind a cycle).
pub fn first_in_cycle(jobs: &[NewJob]) -> Option<usize> {
    let index: HashMap<JobId, usize> = jobs.iter().enumerate().map(|(i, j)| (j.id, i)).collect();
    let mut waiting_on = vec![0usize; jobs.len()];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
    for (i, job) in jobs.iter().enumerate() {
        for parent in job.depends_on.iter().filter_map(|d| index.get(&d.job_id)) {
            waiting_on[i] += 1;
            children[*parent].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..jobs.len()).filter(|i| waiting_on[*i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &child in &children[i] {
            waiting_on[child] -= 1;
            if waiting_on[child] == 0 {
                ready.push(child);
            }
        }
    }
    (done < jobs.len()).then(|| waiting_on.iter().position(|n| *n > 0))?
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job() -> NewJob {
        NewJob::new("k", json!({}))
    }

    fn fields(result: Result<(), JobError>) -> Vec<String> {
        match result {
            Err(JobError::Invalid(f)) => f.into_iter().map(|f| f.field).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn requirements_follow_the_parent_state() {
        assert!(Requires::Completed.met_by(State::Partial));
        assert!(!Requires::Completed.met_by(State::Failed));
        assert!(Requires::Ended.met_by(State::Cancelled));
        assert!(!Requires::Ended.met_by(State::Running));
        assert!(!Requires::Ended.met_by(State::Waiting));
    }

    #[test]
    fn a_cycle_in_a_batch_is_refused_and_named() {
        let a = job();
        let b = job().after(a.id);
        let c = job().after(b.id);
        assert!(check_batch(&[a.clone(), b.clone(), c.clone()]).is_ok());
        let a = a.after(c.id);
        assert_eq!(fields(check_batch(&[a, b, c])), vec!["jobs[0].depends_on"]);
    }

    #[test]
    fn self_and_repeated_parents_are_refused() {
        let parent = JobId::new();
        let own = job();
        let own = own.clone().after(own.id);
        assert_eq!(fields(own.validate()), vec!["depends_on[0]"]);
        let twice = job().after(parent).after_ended(parent);
        assert_eq!(fields(twice.validate()), vec!["depends_on[1]"]);
    }

    #[test]
    fn parents_outside_the_batch_are_no_cycle() {
        let outside = job().after(JobId::new());
        assert_eq!(first_in_cycle(&[outside]), None);
    }
}
