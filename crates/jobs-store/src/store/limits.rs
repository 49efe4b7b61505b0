//! Queue limits: stored on the queue's `jobs_queues` row (per tenant, or `*` for every
//! tenant), read by the claim statement (see `lease`), which enforces them.

use std::{
    collections::HashSet,
    sync::Mutex,
    time::{Duration, Instant},
};

use jobs_core::{JobError, QueueLimits, QueueScope, Rate, validate_queue_name};
use sea_orm::QueryResult;

use super::{SeaOrmStore, db_error, millis};

/// The columns that hold limits, in the order `limit_values` binds them.
pub(super) const LIMIT_COLUMNS: [&str; 6] = [
    "concurrency",
    "key_concurrency",
    "rate_limit",
    "rate_period_ms",
    "key_rate_limit",
    "key_rate_period_ms",
];

/// A row of `jobs_queues` holds a limit.
pub(super) fn limited_row(alias: &str) -> String {
    let any: Vec<String> = LIMIT_COLUMNS
        .iter()
        .map(|c| format!("{alias}{c} IS NOT NULL"))
        .collect();
    format!("({})", any.join(" OR "))
}

fn limit_values(limits: &QueueLimits) -> [sea_orm::Value; 6] {
    let count = |n: Option<u32>| n.map(i64::from);
    let rate = |r: Option<Rate>| (r.map(|r| i64::from(r.limit)), r.map(|r| millis(r.period)));
    let (rate_limit, rate_period) = rate(limits.rate);
    let (key_rate_limit, key_rate_period) = rate(limits.key_rate);
    [
        count(limits.concurrency).into(),
        count(limits.key_concurrency).into(),
        rate_limit.into(),
        rate_period.into(),
        key_rate_limit.into(),
        key_rate_period.into(),
    ]
}

/// The limits in a row that has the `LIMIT_COLUMNS`.
pub(super) fn limits_of(row: &QueryResult) -> Result<QueueLimits, JobError> {
    let get = |c: &str| row.try_get::<Option<i64>>("", c).map_err(db_error);
    let count = |c: &str| Ok::<_, JobError>(get(c)?.map(|n| n.clamp(0, u32::MAX as i64) as u32));
    let rate = |limit: &str, period: &str| -> Result<Option<Rate>, JobError> {
        Ok(match (count(limit)?, get(period)?) {
            (Some(limit), Some(ms)) => {
                Some(Rate::new(limit, Duration::from_millis(ms.max(0) as u64)))
            }
            _ => None,
        })
    };
    Ok(QueueLimits {
        concurrency: count("concurrency")?,
        key_concurrency: count("key_concurrency")?,
        rate: rate("rate_limit", "rate_period_ms")?,
        key_rate: rate("key_rate_limit", "key_rate_period_ms")?,
    })
}

pub(super) async fn set_queue_limits(
    store: &SeaOrmStore,
    scope: QueueScope<'_>,
    queue: &str,
    limits: &QueueLimits,
) -> Result<(), JobError> {
    validate_queue_name("queue", queue)?;
    limits.validate()?;
    let now = store.dialect.now();
    let mut sql = store.sql();
    let tenant = sql.bind(scope.as_stored().to_owned());
    let name = sql.bind(queue.to_owned());
    let values: Vec<String> = limit_values(limits)
        .into_iter()
        .map(|v| sql.bind(v))
        .collect();
    let updates: Vec<String> = LIMIT_COLUMNS
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    sql.push(&format!(
        "INSERT INTO jobs_queues (tenant, name, created_at, updated_at, {columns}) \
         VALUES ({tenant}, {name}, {now}, {now}, {values}) \
         ON CONFLICT (tenant, name) DO UPDATE SET updated_at = {now}, {updates}",
        columns = LIMIT_COLUMNS.join(", "),
        values = values.join(", "),
        updates = updates.join(", "),
    ));
    store.execute(sql).await?;
    store.forget_limited_queues();
    // Raised or lifted limits may let waiting jobs start now.
    store.wake_everywhere(&[queue]).await;
    Ok(())
}

pub(super) async fn queue_limits(
    store: &SeaOrmStore,
    scope: QueueScope<'_>,
    queue: &str,
) -> Result<QueueLimits, JobError> {
    validate_queue_name("queue", queue)?;
    let mut sql = store.sql();
    let tenant = sql.bind(scope.as_stored().to_owned());
    let name = sql.bind(queue.to_owned());
    sql.push(&format!(
        "SELECT {columns} FROM jobs_queues WHERE tenant = {tenant} AND name = {name}",
        columns = LIMIT_COLUMNS.join(", "),
    ));
    match store.query(sql).await?.first() {
        Some(row) => limits_of(row),
        None => Ok(QueueLimits::default()),
    }
}

/// Which queues have limits, as this process last read it: only a hint that picks the
/// claim's path. A claim without the queue rows locked never takes a limited queue's jobs,
/// so a stale hint delays a newly limited queue's claims (by `HINT_AGE` at most) and
/// never lets a limit be passed.
#[derive(Debug, Default)]
pub(crate) struct LimitedQueues(Mutex<Option<(Instant, HashSet<String>)>>);

const HINT_AGE: Duration = Duration::from_secs(1);

impl SeaOrmStore {
    pub(super) fn forget_limited_queues(&self) {
        *self.limited_queues.0.lock().unwrap() = None;
    }

    /// The queues among `queues` that have limits in some scope.
    pub(super) async fn limited_among(
        &self,
        queues: &[String],
    ) -> Result<HashSet<String>, JobError> {
        let cached = self.limited_queues.0.lock().unwrap().clone();
        let names = match cached {
            Some((read_at, names)) if read_at.elapsed() < HINT_AGE => names,
            _ => {
                let mut sql = self.sql();
                sql.push(&format!(
                    "SELECT DISTINCT name FROM jobs_queues WHERE {}",
                    limited_row("")
                ));
                let names: HashSet<String> = self
                    .query(sql)
                    .await?
                    .iter()
                    .map(|row| row.try_get::<String>("", "name").map_err(db_error))
                    .collect::<Result<_, _>>()?;
                *self.limited_queues.0.lock().unwrap() = Some((Instant::now(), names.clone()));
                names
            }
        };
        Ok(queues
            .iter()
            .filter(|q| names.contains(*q))
            .cloned()
            .collect())
    }
}
