//! Typed job arguments: a serde struct names its kind and declares per-kind defaults
//! (River's `JobArgs` with `InsertOpts`, Oban's worker options); an insert may override
//! any of them. Services that only enqueue need nothing but this crate.

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use time::OffsetDateTime;

use crate::{JobError, NewJob, RetryPolicy, UniqueOpts};

/// The arguments of one kind of job.
///
/// ```
/// use jobs_core::{JobArgs, JobOptions};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Resize { image: String }
///
/// impl JobArgs for Resize {
///     const KIND: &'static str = "resize";
///     fn options() -> JobOptions {
///         JobOptions::new().queue("images").priority(8).max_attempts(3)
///     }
/// }
///
/// let job = Resize { image: "a.png".into() }.to_job_with(JobOptions::new().priority(1)).unwrap();
/// assert_eq!((job.kind.as_str(), job.queue.as_str(), job.priority, job.max_attempts), ("resize", "images", 1, 3));
/// ```
pub trait JobArgs: Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: &'static str;

    /// Defaults of every job of this kind; an insert's own options win field by field.
    fn options() -> JobOptions {
        JobOptions::default()
    }

    /// A job of this kind with these arguments and the kind's defaults.
    fn to_job(&self) -> Result<NewJob, JobError> {
        self.to_job_with(JobOptions::default())
    }

    /// A job of this kind with `overrides` laid over the kind's defaults.
    fn to_job_with(&self, overrides: JobOptions) -> Result<NewJob, JobError> {
        if overrides.backoff.is_some() {
            // The worker running the kind applies its backoff; a job does not carry one.
            return Err(JobError::Invalid(vec![crate::FieldError::new(
                "backoff",
                "is a per-kind option: set it in JobArgs::options",
            )]));
        }
        let options = overrides.over(Self::options());
        if let Some(unique) = &options.unique {
            unique.validate()?;
        }
        let args = serde_json::to_value(self)
            .map_err(|e| JobError::Serialization(format!("arguments of {}: {e}", Self::KIND)))?;
        Ok(options.apply(NewJob::new(Self::KIND, args)))
    }
}

/// Options of a new job. Unset fields leave the job's defaults (`NewJob::new`).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct JobOptions {
    pub queue: Option<String>,
    pub priority: Option<i16>,
    pub max_attempts: Option<i32>,
    pub timeout: Option<Duration>,
    /// Uniqueness (`Unique::Args`, `Unique::Key(..)`, or every option in `UniqueOpts`).
    pub unique: Option<UniqueOpts>,
    /// Backoff between failed attempts of this kind (applied by the worker that runs it);
    /// unset: the store's policy.
    pub backoff: Option<RetryPolicy>,
    pub tenant: Option<String>,
    /// Counts the job against its queue's per-key limits (`QueueLimits::key_concurrency`,
    /// `key_rate`) with the other jobs of this key.
    pub concurrency_key: Option<String>,
    pub run_at: Option<OffsetDateTime>,
    pub delay: Option<Duration>,
    pub deadline: Option<OffsetDateTime>,
    pub retention: Option<Duration>,
    pub trace_id: Option<String>,
    pub metadata: Option<Value>,
}

macro_rules! setters {
    ($($field:ident: $ty:ty),* $(,)?) => {$(
        pub fn $field(mut self, value: $ty) -> Self {
            self.$field = Some(value);
            self
        }
    )*};
}

macro_rules! text_setters {
    ($($field:ident),* $(,)?) => {$(
        pub fn $field(mut self, value: impl Into<String>) -> Self {
            self.$field = Some(value.into());
            self
        }
    )*};
}

impl JobOptions {
    pub fn new() -> Self {
        Self::default()
    }

    text_setters!(queue, tenant, concurrency_key, trace_id);

    /// `Unique::Args`, `Unique::Key(..)`, or a `UniqueOpts` with a period, states or a
    /// policy on duplicates.
    pub fn unique(mut self, unique: impl Into<UniqueOpts>) -> Self {
        self.unique = Some(unique.into());
        self
    }

    setters!(
        priority: i16,
        max_attempts: i32,
        timeout: Duration,
        backoff: RetryPolicy,
        run_at: OffsetDateTime,
        delay: Duration,
        deadline: OffsetDateTime,
        retention: Duration,
        metadata: Value,
    );

    /// These options, with `defaults` filling what they leave unset. `run_at` and `delay`
    /// are one choice (when the job may start): setting either here replaces both defaults.
    pub fn over(self, defaults: JobOptions) -> JobOptions {
        let (run_at, delay) = if self.run_at.is_some() || self.delay.is_some() {
            (self.run_at, self.delay)
        } else {
            (defaults.run_at, defaults.delay)
        };
        JobOptions {
            queue: self.queue.or(defaults.queue),
            priority: self.priority.or(defaults.priority),
            max_attempts: self.max_attempts.or(defaults.max_attempts),
            timeout: self.timeout.or(defaults.timeout),
            unique: self.unique.or(defaults.unique),
            backoff: self.backoff.or(defaults.backoff),
            tenant: self.tenant.or(defaults.tenant),
            concurrency_key: self.concurrency_key.or(defaults.concurrency_key),
            run_at,
            delay,
            deadline: self.deadline.or(defaults.deadline),
            retention: self.retention.or(defaults.retention),
            trace_id: self.trace_id.or(defaults.trace_id),
            metadata: self.metadata.or(defaults.metadata),
        }
    }

    /// `job` with every set option written into it.
    pub fn apply(self, mut job: NewJob) -> NewJob {
        if let Some(unique) = &self.unique {
            job = unique.apply(job);
        }
        job.queue = self.queue.unwrap_or(job.queue);
        job.priority = self.priority.unwrap_or(job.priority);
        job.max_attempts = self.max_attempts.unwrap_or(job.max_attempts);
        job.timeout = self.timeout.or(job.timeout);
        job.tenant = self.tenant.unwrap_or(job.tenant);
        job.concurrency_key = self.concurrency_key.or(job.concurrency_key);
        job.run_at = self.run_at.or(job.run_at);
        job.delay = self.delay.or(job.delay);
        job.deadline = self.deadline.or(job.deadline);
        job.retention = self.retention.unwrap_or(job.retention);
        job.trace_id = self.trace_id.or(job.trace_id);
        job.metadata = self.metadata.unwrap_or(job.metadata);
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OnConflict, State, Unique, UniqueStates};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Mail {
        to: String,
    }

    impl JobArgs for Mail {
        const KIND: &'static str = "mail";
        fn options() -> JobOptions {
            JobOptions::new()
                .queue("mail")
                .max_attempts(3)
                .unique(Unique::Args)
        }
    }

    #[test]
    fn kind_defaults_apply_and_inserts_override_them() {
        let job = Mail { to: "a".into() }.to_job().unwrap();
        assert_eq!((job.queue.as_str(), job.max_attempts), ("mail", 3));
        let job = Mail { to: "a".into() }
            .to_job_with(JobOptions::new().queue("urgent"))
            .unwrap();
        assert_eq!((job.queue.as_str(), job.max_attempts), ("urgent", 3));
    }

    #[test]
    fn an_insert_schedule_replaces_the_kind_schedule() {
        let defaults = JobOptions::new().delay(Duration::from_secs(60));
        let at = time::macros::datetime!(2030-01-01 0:00 UTC);
        let merged = JobOptions::new().run_at(at).over(defaults.clone());
        assert_eq!((merged.run_at, merged.delay), (Some(at), None));
        let kept = JobOptions::new().over(defaults);
        assert_eq!(kept.delay, Some(Duration::from_secs(60)));
    }

    #[test]
    fn backoff_is_refused_per_insert() {
        let options = JobOptions::new().backoff(RetryPolicy::default());
        assert!(matches!(
            Mail { to: "a".into() }.to_job_with(options),
            Err(JobError::Invalid(fields)) if fields[0].field == "backoff"
        ));
    }

    #[test]
    fn unique_by_args_keys_equal_arguments_alike() {
        let key = |to: &str| Mail { to: to.into() }.to_job().unwrap().unique_key;
        assert_eq!(key("a"), key("a"));
        assert_ne!(key("a"), key("b"));
        assert!(key("a").unwrap().len() <= crate::limits::KEY_MAX_LEN);
    }

    #[test]
    fn unique_opts_carry_states_and_policy_and_are_validated() {
        let opts = UniqueOpts::from(Unique::Key("k".into()))
            .states(State::ALL)
            .on_conflict(OnConflict::Replace);
        let job = Mail { to: "a".into() }
            .to_job_with(JobOptions::new().unique(opts))
            .unwrap();
        assert_eq!(job.unique_key.as_deref(), Some("k"));
        assert_eq!(
            (job.unique_states, job.on_conflict),
            (UniqueStates::ALL, OnConflict::Replace)
        );
        let plain = Mail { to: "a".into() }.to_job().unwrap();
        assert_eq!(
            (plain.unique_states, plain.on_conflict),
            (UniqueStates::DEFAULT, OnConflict::Return)
        );
        let refused = JobOptions::new().unique(UniqueOpts::new().states([State::Pending]));
        assert!(matches!(
            Mail { to: "a".into() }.to_job_with(refused),
            Err(JobError::Invalid(fields)) if fields[0].field == "unique.states"
        ));
    }
}
