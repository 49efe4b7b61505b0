//! Periodic jobs: a named cron schedule that enqueues one job per slot.
//!
//! A slot is an instant the cron expression matches in the schedule's time zone. The store
//! keeps `next_run_at`, the next slot not yet enqueued, and enqueues a slot only by moving
//! it forward with a compare-and-set in the transaction that inserts the job, so any number
//! of processes may tick at once and each slot still gets exactly one job.
//!
//! Catch-up, when a tick finds the due slots S1..Sk (all <= now) at once:
//! - k == 1 (normal operation, even when a little late): every policy enqueues S1;
//! - k >= 2 (slots were missed: every process was down, or the schedule could not run):
//!   `skip` enqueues none of them, `once` enqueues one job for Sk, `all` enqueues each,
//!   capped at the most recent `CATCH_UP_MAX`.
//!
//! Either way `next_run_at` then moves to the first slot after now.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use chrono::TimeZone as _;
use croner::{Cron, parser::CronParser};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::{FieldError, JobError, JobId, NewJob, limits};

/// `CatchUp::All` enqueues at most this many missed slots (the most recent ones).
pub const CATCH_UP_MAX: usize = 100;

/// The time zone of a schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// What to do with slots missed while no process ran the schedule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Missed slots are dropped; the next job is for the first future slot.
    Skip,
    /// One job, for the most recent missed slot.
    #[default]
    Once,
    /// One job per missed slot, at most `CATCH_UP_MAX` (the most recent).
    All,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Once => "once",
            CatchUp::All => "all",
        }
    }
}

impl FromStr for CatchUp {
    type Err = JobError;

    fn from_str(s: &str) -> Result<Self, JobError> {
        match s {
            "skip" => Ok(CatchUp::Skip),
            "once" => Ok(CatchUp::Once),
            "all" => Ok(CatchUp::All),
            other => Err(JobError::Invalid(vec![FieldError::new(
                "catch_up",
                format!("must be skip, once or all, not {other:?}"),
            )])),
        }
    }
}

/// The job each slot enqueues: the create options of `NewJob` that make sense for every
/// slot alike (its run time is the slot; an absolute deadline or a unique key would
/// hold for one slot only). Stored as JSON with the field names of `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTemplate {
    pub kind: String,
    #[serde(default)]
    pub args: Value,
    pub queue: String,
    pub priority: i16,
    pub max_attempts: i32,
    #[serde(rename = "timeout_ms", with = "millis_option", default)]
    pub timeout: Option<Duration>,
    #[serde(rename = "ttl_seconds", with = "seconds")]
    pub retention: Duration,
    pub metadata: Value,
}

impl JobTemplate {
    /// The defaults of `NewJob`.
    pub fn new(kind: impl Into<String>, args: Value) -> Self {
        let job = NewJob::new(kind, args);
        Self {
            kind: job.kind,
            args: job.args,
            queue: job.queue,
            priority: job.priority,
            max_attempts: job.max_attempts,
            timeout: job.timeout,
            retention: job.retention,
            metadata: job.metadata,
        }
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    pub fn max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// The job of one slot: due at the slot, its metadata naming the schedule and slot.
    pub fn new_job(&self, tenant: &str, schedule: &str, slot: OffsetDateTime) -> NewJob {
        let mut metadata = match &self.metadata {
            Value::Object(map) => map.clone(),
            _ => Default::default(),
        };
        metadata.insert("schedule".into(), schedule.into());
        metadata.insert("slot".into(), rfc3339(slot).into());
        let mut job = NewJob::new(self.kind.clone(), self.args.clone())
            .tenant(tenant)
            .queue(self.queue.clone())
            .priority(self.priority)
            .max_attempts(self.max_attempts)
            .retention(self.retention)
            .run_at(slot)
            .metadata(Value::Object(metadata));
        job.timeout = self.timeout;
        job
    }
}

/// A periodic job, as defined by its owner (in code or over HTTP).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub tenant: String,
    /// Unique per tenant.
    pub name: String,
    /// Five fields (minute hour day-of-month month day-of-week) or six with seconds first;
    /// `@hourly` and the like too.
    pub cron: String,
    /// An IANA time zone name, e.g. `Europe/Paris`; the cron fields are read in it.
    pub timezone: String,
    pub job: JobTemplate,
    pub catch_up: CatchUp,
}

impl Schedule {
    pub fn new(name: impl Into<String>, cron: impl Into<String>, job: JobTemplate) -> Self {
        Self {
            tenant: limits::DEFAULT_TENANT.to_owned(),
            name: name.into(),
            cron: cron.into(),
            timezone: DEFAULT_TIMEZONE.to_owned(),
            job,
            catch_up: CatchUp::default(),
        }
    }

    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = timezone.into();
        self
    }

    pub fn catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// Every problem at once, each naming its field (`name`, `cron`, `timezone`,
    /// `job.priority`, ...).
    pub fn validate(&self) -> Result<(), JobError> {
        let mut errors = Vec::new();
        let probe = self
            .job
            .new_job(&self.tenant, &self.name, OffsetDateTime::UNIX_EPOCH);
        if let Err(JobError::Invalid(fields)) = probe.validate() {
            for f in fields {
                // The probe's tenant stands for the schedule's; the rest is the template.
                let field = match f.field.as_str() {
                    "tenant" => "tenant".to_owned(),
                    other => format!("job.{other}"),
                };
                errors.push(FieldError::new(field, f.message));
            }
        }
        // Names follow the rules of queue and kind names: `check_name` via a probe.
        if let Err(JobError::Invalid(fields)) = NewJob::new(&self.name, Value::Null).validate() {
            errors.extend(
                fields
                    .into_iter()
                    .filter(|f| f.field == "kind")
                    .map(|f| FieldError {
                        field: "name".into(),
                        message: f.message,
                    }),
            );
        }
        if !self.job.metadata.is_object() && !errors.iter().any(|e| e.field == "job.metadata") {
            errors.push(FieldError::new("job.metadata", "must be a JSON object"));
        }
        // Bounded before parsing: neither is ever long, and both are stored.
        let too_long = [("cron", &self.cron, 256), ("timezone", &self.timezone, 64)];
        for (field, value, max) in too_long {
            if value.len() > max {
                errors.push(FieldError::new(
                    field,
                    format!("must be at most {max} bytes"),
                ));
                return JobError::invalid_if_any(errors);
            }
        }
        match self.cron() {
            Err(e) => errors.extend(e.fields()),
            Ok(cron) => {
                if let Err(e) = cron.next_after(OffsetDateTime::now_utc()) {
                    errors.extend(e.fields());
                }
            }
        }
        JobError::invalid_if_any(errors)
    }

    /// The parsed cron expression in the schedule's time zone.
    pub fn cron(&self) -> Result<CronSchedule, JobError> {
        CronSchedule::parse(&self.cron, &self.timezone)
    }
}

/// A parsed cron expression and time zone: computes slots.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: chrono_tz::Tz,
}

impl CronSchedule {
    /// Names the bad part: `cron` or `timezone`.
    pub fn parse(cron: &str, timezone: &str) -> Result<Self, JobError> {
        let mut errors = Vec::new();
        let parsed = CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|e| errors.push(FieldError::new("cron", e.to_string())));
        let tz = timezone.parse::<chrono_tz::Tz>().map_err(|_| {
            errors.push(FieldError::new(
                "timezone",
                format!("{timezone:?} is not an IANA time zone name"),
            ))
        });
        match (parsed, tz) {
            (Ok(cron), Ok(tz)) => Ok(Self { cron, tz }),
            _ => Err(JobError::Invalid(errors)),
        }
    }

    /// The first slot strictly after `at`.
    pub fn next_after(&self, at: OffsetDateTime) -> Result<OffsetDateTime, JobError> {
        let found = self.cron.find_next_occurrence(&self.zoned(at), false);
        found
            .map(|t| from_chrono(&t))
            .map_err(|e| no_slot(format!("no slot after {}: {e}", rfc3339(at))))
    }

    /// Up to `max` slots in `(after, until]`, newest first.
    fn newest_between(
        &self,
        after: OffsetDateTime,
        until: OffsetDateTime,
        max: usize,
    ) -> Vec<OffsetDateTime> {
        let mut found = Vec::new();
        let mut cursor = self.zoned(until);
        let mut inclusive = true;
        while found.len() < max {
            let Ok(t) = self.cron.find_previous_occurrence(&cursor, inclusive) else {
                break;
            };
            let slot = from_chrono(&t);
            if slot <= after {
                break;
            }
            found.push(slot);
            cursor = t;
            inclusive = false;
        }
        found
    }

    /// What a tick at `now` enqueues for a schedule whose next unenqueued slot is
    /// `next_run_at`, under `catch_up` (see the module documentation), and where
    /// `next_run_at` moves. `None` when nothing is due.
    pub fn due(
        &self,
        next_run_at: OffsetDateTime,
        now: OffsetDateTime,
        catch_up: CatchUp,
    ) -> Result<Option<Due>, JobError> {
        if next_run_at > now {
            return Ok(None);
        }
        // The slots after the first due one, newest first; one is enough unless all are kept.
        let wanted = if catch_up == CatchUp::All {
            CATCH_UP_MAX
        } else {
            1
        };
        let later = self.newest_between(next_run_at, now, wanted);
        let slots = match (later.first(), catch_up) {
            (None, _) => vec![next_run_at],
            (Some(_), CatchUp::Skip) => Vec::new(),
            (Some(latest), CatchUp::Once) => vec![*latest],
            (Some(_), CatchUp::All) => {
                let mut all: Vec<OffsetDateTime> = later.into_iter().rev().collect();
                if all.len() < CATCH_UP_MAX {
                    all.insert(0, next_run_at);
                }
                all
            }
        };
        Ok(Some(Due {
            slots,
            next_run_at: self.next_after(now)?,
        }))
    }

    fn zoned(&self, at: OffsetDateTime) -> chrono::DateTime<chrono_tz::Tz> {
        let nanos = at.unix_timestamp_nanos();
        self.tz
            .timestamp_nanos(nanos.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
    }
}

/// The outcome of one tick for one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The slots to enqueue, oldest first (possibly none, under `skip`).
    pub slots: Vec<OffsetDateTime>,
    /// The first slot after now: the schedule's new `next_run_at`.
    pub next_run_at: OffsetDateTime,
}

fn from_chrono<Tz: chrono::TimeZone>(t: &chrono::DateTime<Tz>) -> OffsetDateTime {
    let nanos = i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos());
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn no_slot(message: String) -> JobError {
    JobError::Invalid(vec![FieldError::new("cron", message)])
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

impl JobError {
    /// The field errors of `Invalid`, or one for `cron` carrying this error's message.
    fn fields(self) -> Vec<FieldError> {
        match self {
            JobError::Invalid(fields) => fields,
            other => vec![FieldError::new("cron", other.to_string())],
        }
    }
}

/// A schedule as stored, with where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleInfo {
    pub schedule: Schedule,
    pub paused_at: Option<OffsetDateTime>,
    /// The next slot not yet enqueued.
    pub next_run_at: OffsetDateTime,
    /// The most recent slot a job was enqueued for.
    pub last_run_at: Option<OffsetDateTime>,
    pub last_job_id: Option<JobId>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// One job a tick enqueued.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledRun {
    pub tenant: String,
    pub schedule: String,
    pub slot: OffsetDateTime,
    pub job_id: JobId,
    pub queue: String,
}

/// Where schedules live, and the one way slots become jobs.
#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// A new schedule, first due at its first slot after now; `Conflict` when the tenant
    /// already has one of this name.
    async fn create_schedule(&self, schedule: &Schedule) -> Result<ScheduleInfo, JobError>;

    /// Defines a schedule from code, at every start: an unchanged cron and time zone keep
    /// `next_run_at` (nothing is enqueued twice or skipped across restarts); a changed one
    /// recomputes it from now. The template and catch-up policy are replaced; a paused
    /// schedule stays paused.
    async fn upsert_schedule(&self, schedule: &Schedule) -> Result<ScheduleInfo, JobError>;

    /// The tenant's schedules by name.
    async fn list_schedules(&self, tenant: &str) -> Result<Vec<ScheduleInfo>, JobError>;

    /// `ScheduleNotFound` when unknown.
    async fn get_schedule(&self, tenant: &str, name: &str) -> Result<ScheduleInfo, JobError>;

    /// Stops enqueueing (idempotent).
    async fn pause_schedule(&self, tenant: &str, name: &str) -> Result<ScheduleInfo, JobError>;

    /// Enqueues again from the first slot after now: paused time is not caught up
    /// (idempotent; a running schedule is unchanged).
    async fn resume_schedule(&self, tenant: &str, name: &str) -> Result<ScheduleInfo, JobError>;

    /// `ScheduleNotFound` when unknown. Jobs it already enqueued stay.
    async fn delete_schedule(&self, tenant: &str, name: &str) -> Result<(), JobError>;

    /// Enqueues the slots due at `now` of at most `limit` schedules (every tenant), each
    /// schedule in one transaction that moves its `next_run_at` by compare-and-set: a
    /// slot another process enqueued first is left alone. Returns what this call enqueued.
    async fn enqueue_due(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ScheduledRun>, JobError>;
}

mod millis_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis().min(u64::MAX as u128) as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    fn fields(s: &Schedule) -> Vec<String> {
        match s.validate() {
            Ok(()) => vec![],
            Err(JobError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            Err(other) => panic!("unexpected {other}"),
        }
    }

    fn every_minute() -> CronSchedule {
        CronSchedule::parse("* * * * *", "UTC").unwrap()
    }

    #[test]
    fn every_bad_field_is_named() {
        let s = Schedule::new(
            "bad name",
            "61 * * * *",
            JobTemplate::new("", json!({})).priority(11),
        )
        .timezone("Mars/Olympus");
        assert_eq!(
            fields(&s),
            ["job.kind", "job.priority", "name", "cron", "timezone"]
        );
        let ok = Schedule::new("nightly", "0 3 * * *", JobTemplate::new("k", json!({})));
        assert_eq!(fields(&ok), Vec::<String>::new());
    }

    #[test]
    fn a_cron_that_never_fires_is_refused() {
        let s = Schedule::new("never", "0 0 30 2 *", JobTemplate::new("k", json!({})));
        assert_eq!(fields(&s), ["cron"]);
    }

    #[test]
    fn seconds_are_optional_and_time_zones_apply() {
        let every_5s = CronSchedule::parse("*/5 * * * * *", "UTC").unwrap();
        let at = datetime!(2026-01-01 00:00:01 UTC);
        assert_eq!(
            every_5s.next_after(at).unwrap(),
            datetime!(2026-01-01 00:00:05 UTC)
        );
        let paris_9am = CronSchedule::parse("0 9 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            paris_9am.next_after(at).unwrap(),
            datetime!(2026-01-01 08:00:00 UTC)
        );
        // Summer time: 09:00 in Paris is 07:00 UTC.
        assert_eq!(
            paris_9am
                .next_after(datetime!(2026-07-01 00:00 UTC))
                .unwrap(),
            datetime!(2026-07-01 07:00:00 UTC)
        );
    }

    #[test]
    fn one_due_slot_is_enqueued_by_every_policy() {
        let next = datetime!(2026-01-01 10:00 UTC);
        let now = datetime!(2026-01-01 10:00:40 UTC);
        for policy in [CatchUp::Skip, CatchUp::Once, CatchUp::All] {
            let due = every_minute().due(next, now, policy).unwrap().unwrap();
            assert_eq!(due.slots, [next], "{policy:?}");
            assert_eq!(due.next_run_at, datetime!(2026-01-01 10:01 UTC));
        }
        assert_eq!(
            every_minute()
                .due(next, datetime!(2026-01-01 09:59:59 UTC), CatchUp::All)
                .unwrap(),
            None
        );
    }

    #[test]
    fn missed_slots_follow_the_policy() {
        let next = datetime!(2026-01-01 10:00 UTC);
        let now = datetime!(2026-01-01 10:09:30 UTC);
        let due = |p| every_minute().due(next, now, p).unwrap().unwrap();
        assert!(due(CatchUp::Skip).slots.is_empty());
        assert_eq!(due(CatchUp::Once).slots, [datetime!(2026-01-01 10:09 UTC)]);
        let all = due(CatchUp::All).slots;
        assert_eq!(all.len(), 10);
        assert_eq!(all[0], next);
        assert_eq!(all[9], datetime!(2026-01-01 10:09 UTC));
        assert_eq!(
            due(CatchUp::Skip).next_run_at,
            datetime!(2026-01-01 10:10 UTC)
        );
    }

    #[test]
    fn catching_up_all_keeps_the_most_recent_hundred() {
        let next = datetime!(2026-01-01 00:00 UTC);
        let now = datetime!(2026-01-02 00:00:30 UTC);
        let all = every_minute()
            .due(next, now, CatchUp::All)
            .unwrap()
            .unwrap()
            .slots;
        assert_eq!(all.len(), CATCH_UP_MAX);
        assert_eq!(all[99], datetime!(2026-01-02 00:00 UTC));
        assert_eq!(all[0], datetime!(2026-01-01 22:21 UTC));
    }

    #[test]
    fn the_template_round_trips_as_create_fields() {
        let t = JobTemplate::new("report", json!({"a": 1}))
            .timeout(Duration::from_millis(1500))
            .retention(Duration::from_secs(60));
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["timeout_ms"], 1500);
        assert_eq!(v["ttl_seconds"], 60);
        assert_eq!(serde_json::from_value::<JobTemplate>(v).unwrap(), t);
        let job = t.new_job("acme", "nightly", datetime!(2026-01-01 03:00 UTC));
        assert_eq!(job.run_at, Some(datetime!(2026-01-01 03:00 UTC)));
        assert_eq!(
            job.metadata,
            json!({"schedule": "nightly", "slot": "2026-01-01T03:00:00Z"})
        );
    }

    proptest::proptest! {
        /// Hostile input (the HTTP API passes it straight here) is refused, never a panic.
        #[test]
        fn any_cron_text_is_parsed_or_refused(
            cron in "[0-9*/,#LW?@A-Za-z -]{0,40}|((\\*|[0-9]{1,2}|[0-9]{1,2}-[0-9]{1,2})(/[0-9]{1,2})?(#[0-9]|L|W)? ){4,5}(\\*|[0-9]{1,2}L?)",
            tz in "[A-Za-z/_+-]{0,20}",
        ) {
            let schedule = Schedule::new("p", cron, JobTemplate::new("k", json!({}))).timezone(tz);
            if schedule.validate().is_ok() {
                let at = datetime!(2026-03-29 00:59:59 UTC);
                let next = schedule.cron().unwrap().next_after(at).unwrap();
                proptest::prop_assert!(next > at);
            }
        }
    }
}
