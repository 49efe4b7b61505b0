//! Uniqueness of jobs: by a key, by arguments, by kind, within a period, among chosen
//! states, and what a duplicate does (River's `UniqueOpts`).
//!
//! The options are folded into a job's `unique_key` when it is built (so the stored key
//! carries the args hash and the period bucket), beside the states in which that key
//! blocks another job (`unique_states`) and the policy on a duplicate (`on_conflict`).

use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{FieldError, JobError, NewJob, State, limits, storable};

/// How a job of a kind is deduplicated (per tenant). The short forms of [`UniqueOpts`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unique {
    /// By a key the caller chooses.
    Key(String),
    /// By the arguments: two jobs of one kind with equal arguments are one job.
    Args,
}

/// What enqueueing a job does when another job holds its unique key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Nothing is written; the existing job is returned (`duplicate: true`).
    #[default]
    Return,
    /// A pending holder takes the new job's arguments and run time; a running one is
    /// returned unchanged (its attempt already read its arguments).
    Replace,
}

impl OnConflict {
    pub fn as_str(self) -> &'static str {
        match self {
            OnConflict::Return => "return",
            OnConflict::Replace => "replace",
        }
    }

    /// `None` for a name that is not a policy.
    pub fn parse(name: &str) -> Option<Self> {
        [OnConflict::Return, OnConflict::Replace]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}

/// A set of states: those in which a job's unique key blocks another job with the same
/// key. Stored as the bitmask `jobs.unique_states` (bit `1 << i` for `State::ALL[i]`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UniqueStates(i32);

impl UniqueStates {
    /// Pending and running: a job that ended no longer blocks a new one.
    pub const DEFAULT: UniqueStates = UniqueStates(0b11);
    /// Every state: a key blocks for as long as its job is kept.
    pub const ALL: UniqueStates = UniqueStates(0b11_1111);

    pub fn of(states: impl IntoIterator<Item = State>) -> Self {
        Self(states.into_iter().fold(0, |bits, s| bits | bit(s)))
    }

    /// A stored bitmask; bits that name no state are dropped.
    pub fn from_bits(bits: i32) -> Self {
        Self(bits & Self::ALL.0)
    }

    pub fn bits(self) -> i32 {
        self.0
    }

    pub fn contains(self, state: State) -> bool {
        self.0 & bit(state) != 0
    }

    pub fn states(self) -> Vec<State> {
        State::ALL
            .into_iter()
            .filter(|s| *s != State::Waiting && self.contains(*s))
            .collect()
    }

    /// A job can go back to pending or running (a retry, a lease rescued) without
    /// leaving its key, so both must block: else a second holder could exist when it does.
    pub fn is_allowed(self) -> bool {
        self.contains(State::Pending) && self.contains(State::Running)
    }
}

impl Default for UniqueStates {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Debug for UniqueStates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.states()).finish()
    }
}

impl Serialize for UniqueStates {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.states().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for UniqueStates {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self::of(Vec::<State>::deserialize(deserializer)?))
    }
}

/// A waiting job holds its key as a pending one does: it is the same job, not yet due.
fn bit(state: State) -> i32 {
    let state = match state {
        State::Waiting => State::Pending,
        other => other,
    };
    let index = State::ALL.iter().position(|s| *s == state).unwrap_or(0);
    1 << index
}

/// Every option of uniqueness. With neither `key` nor `by_args` the job is unique by its
/// kind: one job of the kind per tenant among `states` (and in the period, if any).
///
/// ```
/// use std::time::Duration;
/// use jobs_core::{OnConflict, State, Unique, UniqueOpts};
///
/// let opts = UniqueOpts::from(Unique::Args)
///     .period(Duration::from_secs(3600))
///     .states([State::Pending, State::Running, State::Completed])
///     .on_conflict(OnConflict::Replace);
/// assert!(opts.validate().is_ok());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UniqueOpts {
    pub key: Option<String>,
    /// Fold a hash of the arguments' canonical JSON into the key.
    pub by_args: bool,
    /// Fold the period bucket of the enqueue time into the key: one job per bucket.
    pub period: Option<Duration>,
    pub states: UniqueStates,
    pub on_conflict: OnConflict,
}

impl From<Unique> for UniqueOpts {
    fn from(unique: Unique) -> Self {
        match unique {
            Unique::Key(key) => Self::new().key(key),
            Unique::Args => Self::new().by_args(),
        }
    }
}

impl UniqueOpts {
    /// Unique by kind, among pending and running jobs, returning a duplicate's holder.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn by_args(mut self) -> Self {
        self.by_args = true;
        self
    }

    /// Whole seconds; the bucket is `enqueue time - enqueue time mod period` (UTC).
    pub fn period(mut self, period: Duration) -> Self {
        self.period = Some(period);
        self
    }

    /// Must include pending and running (see [`UniqueStates::is_allowed`]).
    pub fn states(mut self, states: impl IntoIterator<Item = State>) -> Self {
        self.states = UniqueStates::of(states);
        self
    }

    pub fn on_conflict(mut self, policy: OnConflict) -> Self {
        self.on_conflict = policy;
        self
    }

    /// Every problem, with fields named as in the HTTP API (`unique.key`, ...).
    pub fn validate(&self) -> Result<(), JobError> {
        let mut errors = Vec::new();
        match self.key.as_deref() {
            Some("") => errors.push(FieldError::new("unique.key", "must not be empty")),
            Some(k) if k.len() > limits::KEY_MAX_LEN => {
                errors.push(FieldError::new("unique.key", "must be at most 255 bytes"))
            }
            Some(k) => storable::check_text(&mut errors, "unique.key", k),
            None => {}
        }
        if let Some(period) = self.period {
            if period < Duration::from_secs(1)
                || period > Duration::from_secs(limits::DURATION_MAX_SECS)
            {
                errors.push(FieldError::new(
                    "unique.period_seconds",
                    "must be between 1 second and ten years",
                ));
            }
        }
        if !self.states.is_allowed() {
            errors.push(states_error());
        }
        JobError::invalid_if_any(errors)
    }

    /// The stored key of a job of `kind` with `args` enqueued at `now`: the caller's key,
    /// or `args:<kind>:<hash>` (both joined by `|` when both are chosen), or
    /// `kind:<kind>`; then `|period:<seconds>s@<bucket start, unix seconds>` when a period
    /// is set. A key longer than 255 bytes is stored as `sha256:<hash of it>`.
    pub fn key_for(&self, kind: &str, args: &Value, now: OffsetDateTime) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.key.clone());
        if self.by_args {
            parts.push(args_key(kind, args));
        }
        if parts.is_empty() {
            parts.push(format!("kind:{kind}"));
        }
        if let Some(period) = self.period {
            let secs = period.as_secs().max(1) as i64;
            let at = now.unix_timestamp();
            parts.push(format!("period:{secs}s@{}", at - at.rem_euclid(secs)));
        }
        let key = parts.join("|");
        if key.len() <= limits::KEY_MAX_LEN {
            key
        } else {
            format!("sha256:{}", hex_sha256(&key))
        }
    }

    /// `job` made unique by these options, its key computed at `now`.
    pub fn apply_at(&self, mut job: NewJob, now: OffsetDateTime) -> NewJob {
        job.unique_key = Some(self.key_for(&job.kind, &job.args, now));
        job.unique_states = self.states;
        job.on_conflict = self.on_conflict;
        job
    }

    /// As [`UniqueOpts::apply_at`] with the enqueue time now.
    pub fn apply(&self, job: NewJob) -> NewJob {
        self.apply_at(job, OffsetDateTime::now_utc())
    }
}

pub(crate) fn states_error() -> FieldError {
    FieldError::new(
        "unique.states",
        "must include pending and running: a job moving back to either must not collide with another holder of its key",
    )
}

/// `args:<kind>:<sha-256 of the arguments' canonical JSON>`: object keys sorted at every
/// depth, so equal arguments give equal keys whatever order a struct or map lists them in
/// (and whether or not serde_json keeps insertion order in this build).
pub(crate) fn args_key(kind: &str, args: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(&mut canonical, args);
    format!("args:{kind}:{}", hex_sha256(&canonical))
}

fn hex_sha256(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
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
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a = json!({"b": [{"y": 1, "x": 2}], "a": "q\""});
        let mut out = String::new();
        write_canonical(&mut out, &a);
        assert_eq!(out, r#"{"a":"q\"","b":[{"x":2,"y":1}]}"#);
    }

    #[test]
    fn keys_fold_key_args_kind_and_period() {
        let at = datetime!(2026-12-03 10:59:59 UTC);
        let args = json!({"a": 1});
        let key = |o: UniqueOpts| o.key_for("mail", &args, at);
        assert_eq!(key(UniqueOpts::new().key("k")), "k");
        assert_eq!(key(UniqueOpts::new()), "kind:mail");
        assert_eq!(
            key(UniqueOpts::new().by_args()),
            args_key("mail", &args),
            "as before these options"
        );
        assert!(key(UniqueOpts::new().key("k").by_args()).starts_with("k|args:mail:"));
        let hourly = UniqueOpts::new().key("k").period(Duration::from_secs(3600));
        let bucket = datetime!(2026-12-03 10:00 UTC).unix_timestamp();
        assert_eq!(key(hourly.clone()), format!("k|period:3600s@{bucket}"));
        assert_ne!(
            hourly.key_for("mail", &args, at + Duration::from_secs(1)),
            key(hourly),
            "the next second is the next bucket"
        );
        let long = key(UniqueOpts::new().key("x".repeat(255)).by_args());
        assert!(long.starts_with("sha256:") && long.len() <= limits::KEY_MAX_LEN);
    }

    #[test]
    fn states_must_hold_pending_and_running() {
        assert!(UniqueOpts::new().validate().is_ok());
        assert_eq!(
            UniqueStates::DEFAULT.states(),
            [State::Pending, State::Running]
        );
        let Err(JobError::Invalid(fields)) = UniqueOpts::new()
            .states([State::Pending, State::Completed])
            .period(Duration::ZERO)
            .key("")
            .validate()
        else {
            panic!("refused")
        };
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            names,
            ["unique.key", "unique.period_seconds", "unique.states"]
        );
        assert_eq!(UniqueStates::of(State::ALL), UniqueStates::ALL);
        assert_eq!(UniqueStates::from_bits(63 | 64), UniqueStates::ALL);
    }

    #[test]
    fn states_serialize_as_names() {
        let json = serde_json::to_value(UniqueStates::DEFAULT).unwrap();
        assert_eq!(json, json!(["pending", "running"]));
        let back: UniqueStates = serde_json::from_value(json).unwrap();
        assert_eq!(back, UniqueStates::DEFAULT);
    }
}
