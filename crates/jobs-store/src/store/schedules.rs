//! Periodic jobs: the `jobs_schedules` rows and the one way a slot becomes a job.
//!
//! A slot is enqueued only by the transaction that moves its schedule's `next_run_at` past
//! it with a compare-and-set (`WHERE next_run_at = <the slot seen>`) and inserts its job:
//! whichever process commits first wins, the others update nothing and insert nothing.
//! No process needs to lead, and no memory of what was enqueued is trusted.

use async_trait::async_trait;
use jobs_core::{JobError, JobId, Schedule, ScheduleInfo, ScheduleStore, ScheduledRun};
use sea_orm::{ConnectionTrait, FromQueryResult, TransactionTrait};
use time::OffsetDateTime;

use super::{SeaOrmStore, db_error};
use crate::sql::Sql;

/// The columns of `jobs_schedules`, in the order of `Row`.
const COLUMNS: &str = "tenant, name, cron, timezone, job, catch_up, paused_at, next_run_at, \
     last_run_at, last_job_id, created_at, updated_at";

/// One row of `jobs_schedules`.
#[derive(Debug, FromQueryResult)]
struct Row {
    tenant: String,
    name: String,
    cron: String,
    timezone: String,
    job: serde_json::Value,
    catch_up: String,
    paused_at: Option<OffsetDateTime>,
    next_run_at: OffsetDateTime,
    last_run_at: Option<OffsetDateTime>,
    last_job_id: Option<uuid::Uuid>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl Row {
    fn into_info(self) -> Result<ScheduleInfo, JobError> {
        let malformed =
            |e: String| JobError::Storage(format!("schedule {:?} is malformed: {e}", self.name));
        let job = serde_json::from_value(self.job.clone()).map_err(|e| malformed(e.to_string()))?;
        let catch_up = self
            .catch_up
            .parse()
            .map_err(|e: JobError| malformed(e.to_string()))?;
        Ok(ScheduleInfo {
            schedule: Schedule {
                tenant: self.tenant,
                name: self.name,
                cron: self.cron,
                timezone: self.timezone,
                job,
                catch_up,
            },
            paused_at: self.paused_at,
            next_run_at: self.next_run_at,
            last_run_at: self.last_run_at,
            last_job_id: self.last_job_id.map(JobId::from),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl SeaOrmStore {
    async fn schedule_rows(
        &self,
        db: &impl ConnectionTrait,
        sql: Sql,
    ) -> Result<Vec<ScheduleInfo>, JobError> {
        let rows = Row::find_by_statement(sql.build())
            .all(db)
            .await
            .map_err(db_error)?;
        rows.into_iter().map(Row::into_info).collect()
    }

    async fn one_schedule(&self, sql: Sql, name: &str) -> Result<ScheduleInfo, JobError> {
        self.schedule_rows(&self.db, sql)
            .await?
            .pop()
            .ok_or_else(|| JobError::ScheduleNotFound(name.to_owned()))
    }

    /// `INSERT ... VALUES (...)` of a new schedule due at its first slot after now,
    /// followed by `on_conflict`.
    async fn insert_schedule(
        &self,
        schedule: &Schedule,
        on_conflict: &str,
    ) -> Result<Option<ScheduleInfo>, JobError> {
        schedule.validate()?;
        let next = schedule.cron()?.next_after(OffsetDateTime::now_utc())?;
        let job = serde_json::to_value(&schedule.job)
            .map_err(|e| JobError::Serialization(e.to_string()))?;
        let mut sql = self.sql();
        let values = [
            sql.bind(schedule.tenant.clone()),
            sql.bind(schedule.name.clone()),
            sql.bind(schedule.cron.clone()),
            sql.bind(schedule.timezone.clone()),
            sql.bind(job),
            sql.bind(schedule.catch_up.as_str()),
            sql.bind_time(Some(next)),
        ];
        sql.push(&format!(
            "INSERT INTO jobs_schedules (tenant, name, cron, timezone, job, catch_up, \
               next_run_at, created_at, updated_at) VALUES ({}, {now}, {now}) \
             ON CONFLICT (tenant, name) {on_conflict} RETURNING {COLUMNS}",
            values.join(", "),
            now = self.dialect.now(),
        ));
        Ok(self.schedule_rows(&self.db, sql).await?.pop())
    }

    /// `WHERE tenant = .. AND name = ..` with its values bound.
    fn by_name(sql: &mut Sql, tenant: &str, name: &str) -> String {
        format!(
            " WHERE tenant = {} AND name = {}",
            sql.bind(tenant.to_owned()),
            sql.bind(name.to_owned())
        )
    }

    /// Enqueues the due slots of one schedule, unless another process moved it first.
    async fn enqueue_schedule(
        &self,
        info: &ScheduleInfo,
        now: OffsetDateTime,
    ) -> Result<Vec<ScheduledRun>, JobError> {
        let s = &info.schedule;
        let Some(due) = s.cron()?.due(info.next_run_at, now, s.catch_up)? else {
            return Ok(Vec::new());
        };
        let jobs: Vec<_> = due
            .slots
            .iter()
            .map(|slot| s.job.new_job(&s.tenant, &s.name, *slot))
            .collect();
        let txn = self.db.begin().await.map_err(db_error)?;
        let mut sql = self.sql();
        let next = sql.bind_time(Some(due.next_run_at));
        let last_run = sql.bind_time(due.slots.last().copied());
        let last_job = sql.bind(jobs.last().map(|j| j.id.as_uuid()));
        let clause = Self::by_name(&mut sql, &s.tenant, &s.name);
        let seen = sql.bind_time(Some(info.next_run_at));
        sql.push(&format!(
            "UPDATE jobs_schedules SET next_run_at = {next}, \
               last_run_at = COALESCE({last_run}, last_run_at), \
               last_job_id = COALESCE({last_job}, last_job_id), updated_at = {now}\
             {clause} AND next_run_at = {seen} AND paused_at IS NULL",
            now = self.dialect.now(),
        ));
        let moved = txn.execute_raw(sql.build()).await.map_err(db_error)?;
        if moved.rows_affected() == 0 {
            // Another process enqueued these slots (or paused or deleted the schedule).
            txn.rollback().await.map_err(db_error)?;
            return Ok(Vec::new());
        }
        let enqueued = self.enqueue_many_in(&txn, jobs).await?;
        txn.commit().await.map_err(db_error)?;
        self.wake_queues(enqueued.iter().map(|e| e.job.queue.as_str()));
        Ok(enqueued
            .iter()
            .zip(&due.slots)
            .map(|(e, slot)| ScheduledRun {
                tenant: s.tenant.clone(),
                schedule: s.name.clone(),
                slot: *slot,
                job_id: e.job.id,
                queue: e.job.queue.clone(),
            })
            .collect())
    }
}

#[async_trait]
impl ScheduleStore for SeaOrmStore {
    async fn create_schedule(&self, schedule: &Schedule) -> Result<ScheduleInfo, JobError> {
        self.insert_schedule(schedule, "DO NOTHING")
            .await?
            .ok_or_else(|| {
                JobError::Conflict(format!(
                    "a schedule named {:?} already exists",
                    schedule.name
                ))
            })
    }

    async fn upsert_schedule(&self, schedule: &Schedule) -> Result<ScheduleInfo, JobError> {
        let update = "DO UPDATE SET job = excluded.job, catch_up = excluded.catch_up, \
             next_run_at = CASE WHEN jobs_schedules.cron = excluded.cron \
               AND jobs_schedules.timezone = excluded.timezone \
               THEN jobs_schedules.next_run_at ELSE excluded.next_run_at END, \
             cron = excluded.cron, timezone = excluded.timezone, \
             updated_at = excluded.updated_at";
        self.insert_schedule(schedule, update)
            .await?
            .ok_or_else(|| JobError::Storage("the schedule upsert returned no row".into()))
    }

    async fn list_schedules(&self, tenant: &str) -> Result<Vec<ScheduleInfo>, JobError> {
        let mut sql = self.sql();
        let t = sql.bind(tenant.to_owned());
        sql.push(&format!(
            "SELECT {COLUMNS} FROM jobs_schedules WHERE tenant = {t} ORDER BY name"
        ));
        self.schedule_rows(&self.db, sql).await
    }

    async fn get_schedule(&self, tenant: &str, name: &str) -> Result<ScheduleInfo, JobError> {
        let mut sql = self.sql();
        let clause = Self::by_name(&mut sql, tenant, name);
        sql.push(&format!("SELECT {COLUMNS} FROM jobs_schedules{clause}"));
        self.one_schedule(sql, name).await
    }

    async fn pause_schedule(&self, tenant: &str, name: &str) -> Result<ScheduleInfo, JobError> {
        let mut sql = self.sql();
        let clause = Self::by_name(&mut sql, tenant, name);
        sql.push(&format!(
            "UPDATE jobs_schedules SET paused_at = COALESCE(paused_at, {now}), \
               updated_at = {now}{clause} RETURNING {COLUMNS}",
            now = self.dialect.now(),
        ));
        self.one_schedule(sql, name).await
    }

    async fn resume_schedule(&self, tenant: &str, name: &str) -> Result<ScheduleInfo, JobError> {
        let current = self.get_schedule(tenant, name).await?;
        if current.paused_at.is_none() {
            return Ok(current);
        }
        let next = current
            .schedule
            .cron()?
            .next_after(OffsetDateTime::now_utc())?;
        let mut sql = self.sql();
        let next = sql.bind_time(Some(next));
        let clause = Self::by_name(&mut sql, tenant, name);
        sql.push(&format!(
            "UPDATE jobs_schedules SET paused_at = NULL, next_run_at = {next}, \
               updated_at = {now}{clause} AND paused_at IS NOT NULL RETURNING {COLUMNS}",
            now = self.dialect.now(),
        ));
        match self.schedule_rows(&self.db, sql).await?.pop() {
            Some(resumed) => Ok(resumed),
            // Resumed (or deleted) meanwhile by someone else.
            None => self.get_schedule(tenant, name).await,
        }
    }

    async fn delete_schedule(&self, tenant: &str, name: &str) -> Result<(), JobError> {
        let mut sql = self.sql();
        let clause = Self::by_name(&mut sql, tenant, name);
        sql.push(&format!("DELETE FROM jobs_schedules{clause}"));
        if self.execute(sql).await?.rows_affected() == 0 {
            return Err(JobError::ScheduleNotFound(name.to_owned()));
        }
        Ok(())
    }

    async fn enqueue_due(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ScheduledRun>, JobError> {
        let mut sql = self.sql();
        let at = sql.bind_time(Some(now));
        let limit = sql.bind(i64::from(limit));
        sql.push(&format!(
            "SELECT {COLUMNS} FROM jobs_schedules WHERE paused_at IS NULL \
             AND next_run_at <= {at} ORDER BY next_run_at LIMIT {limit}"
        ));
        let rows = Row::find_by_statement(sql.build())
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let mut runs = Vec::new();
        for row in rows {
            let (tenant, name) = (row.tenant.clone(), row.name.clone());
            // A row this binary cannot read (edited by hand, or written by a newer
            // release) is skipped, not allowed to stop every other schedule.
            let info = match row.into_info() {
                Ok(info) => info,
                Err(error) => {
                    tracing::warn!(%tenant, schedule = %name, %error, "skipping an unreadable schedule");
                    continue;
                }
            };
            match self.enqueue_schedule(&info, now).await {
                Ok(done) => runs.extend(done),
                // One broken schedule must not stop the others; the database being down does.
                Err(JobError::Unavailable(e)) => return Err(JobError::Unavailable(e)),
                Err(e) => tracing::warn!(
                    tenant = %info.schedule.tenant, schedule = %info.schedule.name,
                    error = %e, "could not enqueue the schedule's due slots"
                ),
            }
        }
        Ok(runs)
    }
}
