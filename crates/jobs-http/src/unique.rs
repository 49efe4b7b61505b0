//! `unique` of a job to create: the options of `jobs_core::UniqueOpts` as JSON, with
//! state and policy names checked here so that a bad one is a 400 naming its place
//! (`unique.states[2]`), not a malformed body.

use std::time::Duration;

use jobs_core::{FieldError, JobError, OnConflict, State, UniqueOpts};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::dto::whole;

/// Uniqueness of a new job, per tenant. With neither `key` nor `by_args`, one job per
/// kind. Meanwhile `unique_key: k` is short for `{"key": k}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UniqueBody {
    /// A key of the caller's choosing; combinable with `by_args`.
    #[schema(min_length = 1, max_length = 255)]
    pub key: Option<String>,
    /// Unique by the arguments (a hash of their canonical JSON), per kind.
    pub by_args: Option<bool>,
    /// One job per period of this many seconds (buckets of the enqueue time, UTC, from
    /// the Unix epoch); the stored `unique_key` then ends in `|period:<s>s@<bucket start>`.
    #[schema(minimum = 1, maximum = 315_360_000u64)]
    #[serde(default, deserialize_with = "whole::option")]
    pub period_seconds: Option<u64>,
    /// The states of this job in which its key blocks another; must include `pending`
    /// and `running`. Default: those two, so an ended job does not block a new one.
    #[schema(value_type = Option<Vec<UniqueState>>)]
    pub states: Option<Vec<String>>,
    /// On a duplicate: `return` the existing job (default), or `replace` its arguments
    /// and run time with this job's when it is pending (a running one is returned
    /// unchanged). Either way the answer is the existing job with `duplicate: true`.
    #[schema(value_type = Option<UniqueConflict>)]
    pub on_conflict: Option<String>,
}

/// A job state, as `unique.states` lists them.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Only documents the accepted names.
pub enum UniqueState {
    Pending,
    Running,
    Completed,
    Partial,
    Failed,
    Cancelled,
}

/// What a duplicate does.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Only documents the accepted names.
pub enum UniqueConflict {
    Return,
    Replace,
}

impl UniqueBody {
    /// The options, or every field at fault (named `unique.*`).
    pub fn into_opts(self) -> Result<UniqueOpts, JobError> {
        let mut errors = Vec::new();
        let mut opts = UniqueOpts::new();
        opts.key = self.key;
        opts.by_args = self.by_args.unwrap_or(false);
        opts.period = self.period_seconds.map(Duration::from_secs);
        if let Some(names) = self.states {
            let states = names.iter().enumerate().filter_map(|(i, name)| {
                let state = name.parse::<State>().ok();
                if state.is_none() {
                    errors.push(FieldError::new(
                        format!("unique.states[{i}]"),
                        "must be one of pending, running, completed, partial, failed, cancelled",
                    ));
                }
                state
            });
            opts = opts.states(states.collect::<Vec<_>>());
        }
        if let Some(name) = self.on_conflict {
            match OnConflict::parse(&name) {
                Some(policy) => opts.on_conflict = policy,
                None => errors.push(FieldError::new(
                    "unique.on_conflict",
                    "must be return or replace",
                )),
            }
        }
        // An unknown state name is reported by its position, not again as a set
        // lacking pending or running.
        let bad_name = errors.iter().any(|e| e.field.starts_with("unique.states["));
        if let Err(JobError::Invalid(fields)) = opts.validate() {
            errors.extend(
                fields
                    .into_iter()
                    .filter(|f| !(bad_name && f.field == "unique.states")),
            );
        }
        JobError::invalid_if_any(errors).map(|()| opts)
    }
}
