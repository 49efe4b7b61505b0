//! Bulk actions: retry, cancel or delete every job a filter matches (the dead-letter
//! workflow: list failed jobs by error kind, inspect, retry them all). Stores apply them
//! in bounded batches, each conditional on the job's state, so a job that moves meanwhile
//! is either moved whole or left alone.

use crate::{FieldError, JobError, ListFilter, State};

/// What a bulk request does to each matched job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BulkAction {
    /// An ended job runs again from attempt 0, as `JobStore::retry` does.
    Retry,
    /// A pending job is cancelled at once; a running one gets a cancel request, as
    /// `JobStore::cancel` does.
    Cancel,
    /// The job is removed, in any state but running (its worker still holds it).
    Delete,
}

impl BulkAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Retry => "retry",
            BulkAction::Cancel => "cancel",
            BulkAction::Delete => "delete",
        }
    }

    /// The states a job must be in for this action to apply; every statement of the
    /// action re-checks them. Retry and cancel follow the state machine.
    pub fn sources(self) -> Vec<State> {
        match self {
            BulkAction::Retry => State::sources_of(State::Pending)
                .into_iter()
                .filter(|s| s.is_ended())
                .collect(),
            BulkAction::Cancel => State::sources_of(State::Cancelled),
            // Not a move of the machine: a running job is never deleted under its worker.
            BulkAction::Delete => State::ALL
                .into_iter()
                .filter(|s| *s != State::Running)
                .collect(),
        }
    }
}

impl std::fmt::Display for BulkAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One bulk action over the jobs `filter` matches (`filter.tenant` confines it to one
/// tenant; `None` acts across tenants).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BulkRequest {
    pub action: BulkAction,
    pub filter: ListFilter,
    /// Must be true to act with a filter that names nothing but the tenant: acting on
    /// every job is never an accident.
    pub all: bool,
    /// Count the matched jobs and change nothing.
    pub dry_run: bool,
}

impl BulkRequest {
    pub fn new(action: BulkAction, filter: ListFilter) -> Self {
        Self {
            action,
            filter,
            all: false,
            dry_run: false,
        }
    }

    /// Allows a filter that names no field (every job of the tenant, or of all tenants).
    pub fn all(mut self) -> Self {
        self.all = true;
        self
    }

    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// Errors name fields as `filter.<field>` (`filter` alone for an empty filter).
    pub fn validate(&self) -> Result<(), JobError> {
        let mut errors = match self.filter.validate() {
            Err(JobError::Invalid(fields)) => fields,
            Err(other) => return Err(other),
            Ok(()) => Vec::new(),
        };
        for error in &mut errors {
            error.field = format!("filter.{}", error.field);
        }
        if !self.all && !self.filter.narrows() {
            errors.push(FieldError::new(
                "filter",
                "names no field; set `all` to act on every job",
            ));
        }
        let sources = self.action.sources();
        if let Some(state) = self.filter.state.filter(|s| !sources.contains(s)) {
            let names: Vec<&str> = sources.iter().map(|s| s.as_str()).collect();
            errors.push(FieldError::new(
                "filter.state",
                format!(
                    "{} applies to {} jobs, not {state}",
                    self.action,
                    names.join(", ")
                ),
            ));
        }
        JobError::invalid_if_any(errors)
    }
}

/// What a bulk request did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkResult {
    /// Jobs that matched the filter in a state the action applies to.
    pub matched: u64,
    /// Of those, the jobs the action changed. The rest moved meanwhile (a worker claimed
    /// one, another request retried it) or, for a retry, would have taken a unique key
    /// another job holds now.
    pub changed: u64,
    /// Statements that changed jobs: each touches a bounded number of rows.
    pub batches: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_follow_the_machine() {
        assert_eq!(BulkAction::Retry.sources(), State::ENDED.to_vec());
        assert_eq!(
            BulkAction::Cancel.sources(),
            vec![State::Pending, State::Running, State::Waiting]
        );
        assert!(!BulkAction::Delete.sources().contains(&State::Running));
        assert_eq!(BulkAction::Delete.sources().len(), State::ALL.len() - 1);
    }

    #[test]
    fn an_empty_filter_needs_all() {
        let fields = |r: BulkRequest| match r.validate() {
            Err(JobError::Invalid(f)) => f.into_iter().map(|f| f.field).collect::<Vec<_>>(),
            other => panic!("expected invalid, got {other:?}"),
        };
        let tenant_only = ListFilter::new().tenant("acme");
        assert_eq!(
            fields(BulkRequest::new(BulkAction::Delete, tenant_only.clone())),
            ["filter"]
        );
        assert!(
            BulkRequest::new(BulkAction::Delete, tenant_only)
                .all()
                .validate()
                .is_ok()
        );
        let pending = ListFilter::new().state(State::Pending);
        assert_eq!(
            fields(BulkRequest::new(BulkAction::Retry, pending)),
            ["filter.state"]
        );
        let nul = ListFilter::new().error_kind("a\0");
        assert_eq!(
            fields(BulkRequest::new(BulkAction::Retry, nul)),
            ["filter.error_kind"]
        );
    }
}
