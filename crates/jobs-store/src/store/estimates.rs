//! Positions in the queue and run-time estimates.
//!
//! Run times are observed where attempts end: each process adds up the wall times of the
//! attempts it finished (completed or partial) per tenant, queue and kind, and merges
//! them into `jobs_run_stats` about once a second (at once for a kind it has not
//! reported yet), so finishing a job never writes a statistics row of its own.
//!
//! A position counts the due jobs of the job's tenant and queue that a claim takes
//! before it, through the claim index and up to `Estimate::POSITION_LIMIT`: reading it
//! costs at most that many index entries, however long the queue is.
//!
//! Counting to the limit is most of what a read of a deep job costs (a thousand index
//! entries against one row), so each process keeps a queue's *depth mark*, read at
//! most `MARK_TTL` ago: the due job at rank `limit`, after which every job has at least
//! `limit` ahead. A job after the mark is answered from it without counting; jobs
//! before it, where a position says most, are always counted.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use jobs_core::{Estimate, Job, JobError, RunTimes, State, estimate::Position};
use time::OffsetDateTime;

use super::{SeaOrmStore, db_error};

/// How often a process merges what it observed into `jobs_run_stats`.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Tenant, queue and kind.
pub(super) type Key = (String, String, String);

/// How long read run times are reused: estimates on creates must not cost a query each.
const TIMES_TTL: Duration = Duration::from_secs(1);

/// Run times per kind of one tenant's queue.
type Times = std::sync::Arc<HashMap<String, RunTimes>>;

/// How long a queue's depth mark is reused: a job after it had `limit` jobs ahead
/// this long ago at most.
const MARK_TTL: Duration = Duration::from_secs(1);

/// A tenant's queue and a position limit.
type MarkKey = (String, String, u64);

/// The claim-order place of the due job at rank `limit` (none while fewer are due), and
/// how many of the tenant's jobs of the queue ran, when the mark was read.
#[derive(Debug, Clone, Copy)]
struct DepthMark {
    place: Option<(i16, OffsetDateTime, uuid::Uuid)>,
    running: u64,
}

impl DepthMark {
    /// The position of `job` when it comes after the mark in claim order (priority
    /// first, then oldest, then id); none when it must be counted.
    fn beyond(&self, job: &Job, limit: u64) -> Option<Position> {
        let (priority, run_at, id) = self.place?;
        let after = (
            std::cmp::Reverse(job.priority),
            job.run_at,
            job.id.as_uuid(),
        ) > (std::cmp::Reverse(priority), run_at, id);
        after.then_some(Position {
            ahead: limit,
            running: self.running,
            limit,
        })
    }
}

/// Wall times observed in this process and not yet merged, run times read lately, and
/// queues' depth marks.
#[derive(Debug)]
pub(crate) struct RunStats {
    observed: Mutex<Observed>,
    /// By tenant and queue; this process's own merges drop their entries.
    read: moka::future::Cache<(String, String), Times>,
    marks: moka::future::Cache<MarkKey, DepthMark>,
}

impl Default for RunStats {
    fn default() -> Self {
        Self {
            observed: Mutex::default(),
            read: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(TIMES_TTL)
                .build(),
            marks: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(MARK_TTL)
                .build(),
        }
    }
}

#[derive(Debug, Default)]
struct Observed {
    pending: HashMap<Key, Sum>,
    reported: HashSet<Key>,
    flushed_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Sum {
    runs: i64,
    total_ms: i64,
    min_ms: i64,
    max_ms: i64,
}

impl RunStats {
    /// Adds attempts' wall times; returns what is due to be merged now.
    fn observe(&self, runs: Vec<(Key, i64)>) -> Vec<(Key, Sum)> {
        let mut observed = self.observed.lock().unwrap();
        let mut new_key = false;
        for (key, ms) in runs {
            let ms = ms.max(0);
            new_key |= !observed.reported.contains(&key);
            observed
                .pending
                .entry(key)
                .and_modify(|s| {
                    s.runs += 1;
                    s.total_ms = s.total_ms.saturating_add(ms);
                    s.min_ms = s.min_ms.min(ms);
                    s.max_ms = s.max_ms.max(ms);
                })
                .or_insert(Sum {
                    runs: 1,
                    total_ms: ms,
                    min_ms: ms,
                    max_ms: ms,
                });
        }
        let due = observed
            .flushed_at
            .is_none_or(|at| at.elapsed() >= FLUSH_EVERY);
        if !(due || new_key) {
            return Vec::new();
        }
        observed.take()
    }

    /// Everything observed and not yet merged.
    fn take(&self) -> Vec<(Key, Sum)> {
        self.observed.lock().unwrap().take()
    }
}

impl Observed {
    fn take(&mut self) -> Vec<(Key, Sum)> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        self.flushed_at = Some(Instant::now());
        let taken: Vec<(Key, Sum)> = self.pending.drain().collect();
        self.reported.extend(taken.iter().map(|(k, _)| k.clone()));
        taken
    }
}

impl SeaOrmStore {
    /// Records the wall times of attempts that ended (`run_ms` per key), merging them
    /// into the table when due. A failure to merge loses only statistics.
    pub(super) async fn observe_runs(&self, runs: Vec<(Key, i64)>) {
        if runs.is_empty() {
            return;
        }
        let due = self.run_stats.observe(runs);
        self.merge_run_stats(due).await;
    }

    /// Merges what this process observed; a failure loses only statistics.
    async fn merge_run_stats(&self, sums: Vec<(Key, Sum)>) {
        if sums.is_empty() {
            return;
        }
        let keys: HashSet<(String, String)> = sums
            .iter()
            .map(|((tenant, queue, _), _)| (tenant.clone(), queue.clone()))
            .collect();
        if let Err(error) = self.upsert_run_stats(sums).await {
            tracing::warn!(%error, "run-time statistics not recorded");
        }
        for key in keys {
            self.run_stats.read.invalidate(&key).await;
        }
    }

    async fn upsert_run_stats(&self, sums: Vec<(Key, Sum)>) -> Result<(), JobError> {
        let d = self.dialect;
        let mut sql = self.sql();
        let now = d.now();
        let rows: Vec<String> = sums
            .into_iter()
            .map(|((tenant, queue, kind), s)| {
                let mean = s.total_ms as f64 / s.runs as f64;
                format!(
                    "({}, {}, {}, {}, {}, {}, {}, {now})",
                    sql.bind(tenant),
                    sql.bind(queue),
                    sql.bind(kind),
                    sql.bind(s.runs),
                    sql.bind(mean),
                    sql.bind(s.min_ms),
                    sql.bind(s.max_ms),
                )
            })
            .collect();
        let (least, greatest) = match d {
            crate::sql::Dialect::Postgres => ("LEAST", "GREATEST"),
            crate::sql::Dialect::Sqlite => ("MIN", "MAX"),
        };
        // The mean moves toward the new runs' mean by their share of the last 100 runs:
        // exact while fewer than 100 were seen, a rolling mean after.
        sql.push(&format!(
            "INSERT INTO jobs_run_stats AS s \
               (tenant, queue, kind, runs, mean_ms, min_ms, max_ms, updated_at) \
             VALUES {rows} \
             ON CONFLICT (tenant, queue, kind) DO UPDATE SET \
               runs = s.runs + excluded.runs, \
               mean_ms = s.mean_ms + (excluded.mean_ms - s.mean_ms) * {least}(1.0, \
                 CAST(excluded.runs AS DOUBLE PRECISION) / {least}(s.runs + excluded.runs, 100)), \
               min_ms = {least}(s.min_ms, excluded.min_ms), \
               max_ms = {greatest}(s.max_ms, excluded.max_ms), \
               updated_at = excluded.updated_at",
            rows = rows.join(", "),
        ));
        self.execute(sql).await?;
        Ok(())
    }

    /// The run times observed for each kind of a tenant's queue, read at most a second ago.
    async fn run_times(&self, tenant: &str, queue: &str) -> Result<Times, JobError> {
        let key = (tenant.to_owned(), queue.to_owned());
        if let Some(times) = self.run_stats.read.get(&key).await {
            return Ok(times);
        }
        let times = std::sync::Arc::new(self.read_run_times(tenant, queue).await?);
        self.run_stats.read.insert(key, times.clone()).await;
        Ok(times)
    }

    async fn read_run_times(
        &self,
        tenant: &str,
        queue: &str,
    ) -> Result<HashMap<String, RunTimes>, JobError> {
        let mut sql = self.sql();
        let (tenant, queue) = (sql.bind(tenant.to_owned()), sql.bind(queue.to_owned()));
        sql.push(&format!(
            "SELECT kind, runs, mean_ms, min_ms, max_ms FROM jobs_run_stats \
             WHERE tenant = {tenant} AND queue = {queue}"
        ));
        let rows = self.query(sql).await?;
        rows.iter()
            .map(|row| {
                let get_i64 = |c: &str| row.try_get::<i64>("", c).map_err(db_error);
                let times = RunTimes {
                    runs: get_i64("runs")?.max(0) as u64,
                    mean_ms: row.try_get("", "mean_ms").map_err(db_error)?,
                    min_ms: get_i64("min_ms")?,
                    max_ms: get_i64("max_ms")?,
                };
                Ok((row.try_get("", "kind").map_err(db_error)?, times))
            })
            .collect()
    }

    /// How many due jobs a claim takes before `job` (up to `limit`), and how many of its
    /// tenant's jobs of the queue run now: from the queue's depth mark when the job
    /// comes after it, else counted.
    async fn queue_position(&self, job: &Job, limit: u64) -> Result<Position, JobError> {
        let mark = self.depth_mark(&job.tenant, &job.queue, limit).await?;
        match mark.beyond(job, limit) {
            Some(position) => Ok(position),
            None => self.count_position(job, limit).await,
        }
    }

    /// The queue's depth mark for `limit`, read at most `MARK_TTL` ago.
    async fn depth_mark(
        &self,
        tenant: &str,
        queue: &str,
        limit: u64,
    ) -> Result<DepthMark, JobError> {
        let key = (tenant.to_owned(), queue.to_owned(), limit);
        // Concurrent readers of an expired mark wait for one read of it.
        self.run_stats
            .marks
            .try_get_with(key, self.read_depth_mark(tenant, queue, limit))
            .await
            .map_err(|error| (*error).clone())
    }

    async fn read_depth_mark(
        &self,
        tenant: &str,
        queue: &str,
        limit: u64,
    ) -> Result<DepthMark, JobError> {
        let mut sql = self.sql();
        let (t, q) = (sql.bind(tenant.to_owned()), sql.bind(queue.to_owned()));
        // The rank is read from the claim index alone; only the marked row is fetched.
        sql.push(&format!(
            "SELECT {columns} FROM jobs WHERE id = (SELECT id FROM jobs \
               WHERE state = '{pending}' AND queue = {q} AND tenant = {t} \
                 AND run_at <= {now} \
               ORDER BY priority DESC, run_at, id LIMIT 1 OFFSET {offset})",
            columns = super::job_columns(""),
            pending = State::Pending,
            now = self.dialect.now(),
            offset = limit - 1,
        ));
        let place = self
            .fetch_jobs(&self.db, sql)
            .await?
            .first()
            .map(|job| (job.priority, job.run_at, job.id.as_uuid()));
        let mut sql = self.sql();
        let (t, q) = (sql.bind(tenant.to_owned()), sql.bind(queue.to_owned()));
        sql.push(&format!("SELECT {} AS running", running_count(&q, &t)));
        let rows = self.query(sql).await?;
        let running = match rows.first() {
            Some(row) => row.try_get::<i64>("", "running").map_err(db_error)?.max(0) as u64,
            None => 0,
        };
        Ok(DepthMark { place, running })
    }

    /// Counts the due jobs a claim takes before `job`, up to `limit`.
    async fn count_position(&self, job: &Job, limit: u64) -> Result<Position, JobError> {
        let d = self.dialect;
        let mut sql = self.sql();
        let pending = State::Pending;
        let now = d.now();
        let queue = sql.bind(job.queue.clone());
        let tenant = sql.bind(job.tenant.clone());
        let priority = sql.bind(job.priority);
        let run_at = sql.bind_time(Some(job.run_at));
        let id = sql.bind(job.id.as_uuid());
        // Only columns of the claim index, so PostgreSQL counts without reading the table
        // (pending jobs with a cancel request, ended by the next sweep, count meanwhile).
        let due = format!(
            "FROM jobs WHERE state = '{pending}' AND queue = {queue} AND tenant = {tenant} \
               AND run_at <= {now}"
        );
        // Two ranges of the claim index (higher priority; same priority and older), each
        // read no further than the limit. The claim order is spelled out so the planner
        // walks the index: without it, it may scan the table for rows that all match.
        let order = "ORDER BY priority DESC, run_at, id";
        sql.push(&format!(
            "SELECT \
               (SELECT COUNT(*) FROM (SELECT 1 AS one {due} AND priority > {priority} \
                 {order} LIMIT {limit}) a) AS higher, \
               (SELECT COUNT(*) FROM (SELECT 1 AS one {due} AND priority = {priority} \
                 AND (run_at, id) < ({run_at}, {id}) {order} LIMIT {limit}) b) AS older, \
               {running} AS running",
            running = running_count(&queue, &tenant),
        ));
        let rows = self.query(sql).await?;
        let row = rows
            .first()
            .ok_or_else(|| JobError::Storage("no row".into()))?;
        let count = |c: &str| -> Result<u64, JobError> {
            Ok(row.try_get::<i64>("", c).map_err(db_error)?.max(0) as u64)
        };
        Ok(Position {
            ahead: count("higher")? + count("older")?,
            running: count("running")?,
            limit,
        })
    }
}

pub(super) async fn estimate(
    store: &SeaOrmStore,
    job: &Job,
    limit: u64,
) -> Result<Estimate, JobError> {
    let now = OffsetDateTime::now_utc();
    let watched = matches!(job.state, State::Pending | State::Running);
    if !watched {
        return Ok(Estimate::default());
    }
    // What this process saw last counts at once, not a second later.
    store.merge_run_stats(store.run_stats.take()).await;
    let times = store.run_times(&job.tenant, &job.queue).await?;
    let position = match job.state == State::Pending && job.run_at <= now {
        true => Some(store.queue_position(job, limit.max(1)).await?),
        false => None,
    };
    Ok(jobs_core::estimate::estimate(job, now, position, &times))
}

/// How many of a tenant's jobs of a queue run now (`queue` and `tenant` bound already).
fn running_count(queue: &str, tenant: &str) -> String {
    format!(
        "(SELECT COUNT(*) FROM jobs WHERE state = '{}' AND queue = {queue} AND tenant = {tenant})",
        State::Running
    )
}
