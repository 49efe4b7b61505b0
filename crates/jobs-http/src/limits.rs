//! A queue's limits as JSON: the body of `PUT /v1/queues/{name}` and the `limits` of the
//! queue view, one shape for both. Counts arrive as any JSON integer and are checked by
//! `QueueLimits::validate`, so that `0`, `-1` and `5000000000` all get its one message
//! naming the field; only what is not an integer at all is a malformed body.

use std::time::Duration;

use jobs_core::{FieldError, JobError, QueueLimits, Rate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::dto::whole;

/// Flow control of a queue; `null` (or absent) is no limit.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueLimitsBody {
    /// At most this many of the queue's jobs running at once, across every process.
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(default, deserialize_with = "whole::option")]
    pub concurrency: Option<i64>,
    /// At most this many jobs with the same `concurrency_key` running at once.
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(default, deserialize_with = "whole::option")]
    pub key_concurrency: Option<i64>,
    /// At most `limit` job starts in any window of `period_seconds` (a sliding window).
    pub rate: Option<RateBody>,
    /// The same, for the jobs of each `concurrency_key`.
    pub key_rate: Option<RateBody>,
}

/// At most `limit` starts in any window of `period_seconds`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateBody {
    // Optional in Rust only so that a missing one is named `rate.limit`, not `rate`.
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 1_000_000)]
    #[serde(default, deserialize_with = "whole::option")]
    pub limit: Option<i64>,
    /// A whole number of seconds, at most a day.
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 86_400)]
    #[serde(default, deserialize_with = "whole::option")]
    pub period_seconds: Option<i64>,
}

impl QueueLimitsBody {
    /// The limits, or every field at fault.
    pub fn into_limits(self) -> Result<QueueLimits, JobError> {
        let mut missing = Vec::new();
        let limits = QueueLimits {
            concurrency: self.concurrency.map(count),
            key_concurrency: self.key_concurrency.map(count),
            rate: self.rate.and_then(|r| r.into_rate("rate", &mut missing)),
            key_rate: self
                .key_rate
                .and_then(|r| r.into_rate("key_rate", &mut missing)),
        };
        if let Err(JobError::Invalid(invalid)) = limits.validate() {
            missing.extend(invalid);
        }
        JobError::invalid_if_any(missing)?;
        Ok(limits)
    }
}

impl RateBody {
    fn into_rate(self, field: &str, missing: &mut Vec<FieldError>) -> Option<Rate> {
        let mut require = |name: &str, value: Option<i64>| {
            if value.is_none() {
                missing.push(FieldError::new(format!("{field}.{name}"), "is required"));
            }
            value
        };
        let limit = require("limit", self.limit);
        let period = require("period_seconds", self.period_seconds);
        let seconds = period?.clamp(0, i64::MAX) as u64;
        Some(Rate::new(count(limit?), Duration::from_secs(seconds)))
    }
}

/// Out of `u32`'s range is out of the limit's range too: clamped, then refused by
/// `validate` with its message.
fn count(n: i64) -> u32 {
    n.clamp(0, i64::from(u32::MAX)) as u32
}

impl From<QueueLimits> for QueueLimitsBody {
    fn from(limits: QueueLimits) -> Self {
        let rate = |r: Rate| RateBody {
            limit: Some(r.limit.into()),
            period_seconds: Some(r.period.as_secs() as i64),
        };
        Self {
            concurrency: limits.concurrency.map(Into::into),
            key_concurrency: limits.key_concurrency.map(Into::into),
            rate: limits.rate.map(rate),
            key_rate: limits.key_rate.map(rate),
        }
    }
}
