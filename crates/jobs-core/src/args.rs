//! Typed job arguments: a serde struct names its kind and declares per-kind defaults
//! (River's `JobArgs` with `InsertOpts`, Oban's worker options); an insert may override
//! any of them. Services that only enqueue need nothing but this crate.

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{JobError, NewJob, RetryPolicy};

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
        let args = serde_json::to_value(self)
            .map_err(|e| JobError::Serialization(format!("arguments of {}: {e}", Self::KIND)))?;
        Ok(overrides
            .over(Self::options())
            .apply(NewJob::new(Self::KIND, args)))
    }
}

/// How a job of a kind is deduplicated (per tenant, among all its jobs).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unique {
    /// By a key the caller chooses.
    Key(String),
    /// By the arguments: two jobs of one kind with equal arguments are one job.
    Args,
}

/// Options of a new job. Unset fields leave the job's defaults (`NewJob::new`).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct JobOptions {
    pub queue: Option<String>,
    pub priority: Option<i16>,
    pub max_attempts: Option<i32>,
    pub timeout: Option<Duration>,
    pub unique: Option<Unique>,
    /// Backoff between failed attempts of this kind (applied by the worker that runs it);
    /// unset: the store's policy.
    pub backoff: Option<RetryPolicy>,
    pub tenant: Option<String>,
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

    text_setters!(queue, tenant, trace_id);

    setters!(
        priority: i16,
        max_attempts: i32,
        timeout: Duration,
        unique: Unique,
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
        job.unique_key = match self.unique {
            Some(Unique::Key(key)) => Some(key),
            Some(Unique::Args) => Some(args_key(&job.kind, &job.args)),
            None => job.unique_key,
        };
        job.queue = self.queue.unwrap_or(job.queue);
        job.priority = self.priority.unwrap_or(job.priority);
        job.max_attempts = self.max_attempts.unwrap_or(job.max_attempts);
        job.timeout = self.timeout.or(job.timeout);
        job.tenant = self.tenant.unwrap_or(job.tenant);
        job.run_at = self.run_at.or(job.run_at);
        job.delay = self.delay.or(job.delay);
        job.deadline = self.deadline.or(job.deadline);
        job.retention = self.retention.unwrap_or(job.retention);
        job.trace_id = self.trace_id.or(job.trace_id);
        job.metadata = self.metadata.unwrap_or(job.metadata);
        job
    }
}

/// `args:<kind>:<sha-256 of the arguments' canonical JSON>`: object keys sorted at every
/// depth, so equal arguments give equal keys whatever order a struct or map lists them in
/// (and whether or not serde_json keeps insertion order in this build).
fn args_key(kind: &str, args: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(&mut canonical, args);
    let digest = Sha256::digest(canonical.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("args:{kind}:{hex}")
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(out, value);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn canonical_json_sorts_keys_at_every_depth() {
        let a = serde_json::json!({"b": [{"y": 1, "x": 2}], "a": "q\""});
        let mut out = String::new();
        write_canonical(&mut out, &a);
        assert_eq!(out, r#"{"a":"q\"","b":[{"x":2,"y":1}]}"#);
    }

    #[test]
    fn unique_by_args_keys_equal_arguments_alike() {
        let key = |to: &str| Mail { to: to.into() }.to_job().unwrap().unique_key;
        assert_eq!(key("a"), key("a"));
        assert_ne!(key("a"), key("b"));
        assert!(key("a").unwrap().len() <= crate::limits::KEY_MAX_LEN);
    }
}
