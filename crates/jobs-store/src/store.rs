//! The queries. Each public operation is one statement (or one statement per bounded
//! chunk); conditions on `state`, `worker_id` and `attempt` make every write safe against
//! racing workers, rescuers and cancels.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use async_trait::async_trait;
use jobs_core::{
    AttemptError, ClaimRequest, Cursor, Enqueued, FieldError, Finish, Heartbeat, Job, JobError,
    JobId, JobStore, Lease, LeaseToken, ListFilter, NewJob, Outcome, Page, PageRequest, QueueStats,
    RescueReport, Retry, RetryPolicy, State,
    storable::{caps, storable_text},
};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult, RuntimeErr, TransactionTrait, sqlx,
};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::{
    connect::connect_options,
    entity,
    sql::{Dialect, Sql, rows_cte, state_list},
};

/// Rows per multi-row INSERT.
const INSERT_CHUNK: usize = 1_000;

/// Clones share the connection pool and the in-process wake-up channel.
#[derive(Debug, Clone)]
pub struct SeaOrmStore {
    db: DatabaseConnection,
    dialect: Dialect,
    retry_policy: RetryPolicy,
    local_wake: broadcast::Sender<String>,
    changes: broadcast::Sender<JobId>,
}

impl SeaOrmStore {
    pub fn new(db: DatabaseConnection) -> Self {
        let dialect = Dialect::of(db.get_database_backend());
        Self {
            db,
            dialect,
            retry_policy: RetryPolicy::default(),
            local_wake: broadcast::channel(1024).0,
            changes: broadcast::channel(4096).0,
        }
    }

    pub(crate) fn local_wake(&self) -> &broadcast::Sender<String> {
        &self.local_wake
    }

    pub(crate) fn changes(&self) -> &broadcast::Sender<JobId> {
        &self.changes
    }

    /// Enqueues inside the caller's transaction (or on any connection): the jobs exist
    /// if and only if that transaction commits. On PostgreSQL the wake-up is sent at
    /// commit; on SQLite call `wake_workers` after committing.
    pub async fn enqueue_many_in(
        &self,
        conn: &impl ConnectionTrait,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Enqueued>, JobError> {
        validate_all(&jobs)?;
        let mut inserted: HashMap<JobId, Job> = HashMap::with_capacity(jobs.len());
        // Rows go in one stable order, by (tenant, unique key): concurrent batches then
        // wait on each other's keys in the same order and cannot deadlock.
        let mut ordered: Vec<&NewJob> = jobs.iter().collect();
        ordered.sort_by(|a, b| (&a.tenant, &a.unique_key).cmp(&(&b.tenant, &b.unique_key)));
        for chunk in ordered.chunks(INSERT_CHUNK) {
            for job in self.insert_chunk(conn, chunk).await? {
                inserted.insert(job.id, job);
            }
        }
        let conflicted: Vec<&NewJob> = jobs
            .iter()
            .filter(|j| !inserted.contains_key(&j.id))
            .collect();
        let existing = if conflicted.is_empty() {
            HashMap::new()
        } else {
            self.existing_by_key(conn, &conflicted).await?
        };
        self.notify_queues(conn, &inserted).await?;
        jobs.iter()
            .map(|new| {
                if let Some(job) = inserted.remove(&new.id) {
                    return Ok(Enqueued { job, duplicate: false });
                }
                let key = (new.tenant.clone(), new.unique_key.clone().unwrap_or_default());
                match existing.get(&key) {
                    Some(job) => Ok(Enqueued {
                        job: job.clone(),
                        duplicate: true,
                    }),
                    // Only possible if retention deleted the holder between the two statements.
                    None => Err(JobError::Storage(format!(
                        "job {} conflicted on its unique key but the holder vanished; enqueue again",
                        new.id
                    ))),
                }
            })
            .collect()
    }

    /// PostgreSQL: one NOTIFY per queue that got jobs, delivered when the transaction commits.
    async fn notify_queues(
        &self,
        conn: &impl ConnectionTrait,
        inserted: &HashMap<JobId, Job>,
    ) -> Result<(), JobError> {
        if self.dialect != Dialect::Postgres || inserted.is_empty() {
            return Ok(());
        }
        let queues: HashSet<&str> = inserted.values().map(|j| j.queue.as_str()).collect();
        let mut sql = self.sql();
        let channel = sql.bind(crate::wake::ENQUEUED_CHANNEL);
        let list = sql.bind_list(queues.into_iter().map(str::to_owned));
        sql.push(&format!(
            "SELECT pg_notify({channel}, q) FROM unnest(ARRAY[{list}]::text[]) AS q"
        ));
        conn.execute_raw(sql.build()).await.map_err(db_error)?;
        Ok(())
    }

    /// Connects with the defaults of `connect_options`.
    pub async fn connect(url: &str) -> Result<Self, JobError> {
        Self::connect_with(connect_options(url)).await
    }

    pub async fn connect_with(options: sea_orm::ConnectOptions) -> Result<Self, JobError> {
        let db = sea_orm::Database::connect(options)
            .await
            .map_err(db_error)?;
        Ok(Self::new(db))
    }

    /// The backoff used by `Retry::Backoff`.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
        self
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn is_postgres(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    pub(crate) fn sql(&self) -> Sql {
        Sql::new(self.dialect)
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn fetch_jobs(&self, db: &impl ConnectionTrait, sql: Sql) -> Result<Vec<Job>, JobError> {
        let models = entity::Model::find_by_statement(sql.build())
            .all(db)
            .await
            .map_err(db_error)?;
        models.into_iter().map(to_job).collect()
    }

    /// One chunk of an enqueue: inserted rows come back; rows whose unique key exists do not.
    async fn insert_chunk(
        &self,
        db: &impl ConnectionTrait,
        jobs: &[&NewJob],
    ) -> Result<Vec<Job>, JobError> {
        let d = self.dialect;
        let mut sql = self.sql();
        let rows = jobs.iter().map(|job| insert_row(d, job)).collect();
        let r = rows_cte(&mut sql, "r", INSERT_COLUMNS, rows);
        // A JSON null arrives as no value (see `rows_cte`): it is stored as JSON null.
        // `WHERE true` lets SQLite tell the SELECT from the upsert clause.
        sql.push(&format!(
            "WITH {r} \
             INSERT INTO jobs (id, tenant, queue, kind, args, state, priority, run_at, attempt, \
               max_attempts, timeout_ms, deadline, retention_ms, progress, errors, unique_key, \
               trace_id, metadata, created_at, updated_at) \
             SELECT id, tenant, queue, kind, COALESCE(args, 'null'), 'pending', priority, \
               COALESCE(run_at, {due}), 0, max_attempts, timeout_ms, deadline, retention_ms, 0, \
               '[]', unique_key, trace_id, COALESCE(metadata, 'null'), {now}, {now} \
             FROM r WHERE true \
             ON CONFLICT (tenant, unique_key) WHERE unique_key IS NOT NULL DO NOTHING RETURNING {columns}",
            columns = job_columns(""),
            due = d.now_plus_ms("delay_ms"),
            now = d.now(),
        ));
        self.fetch_jobs(db, sql).await
    }

    /// The jobs already holding the unique keys of `jobs`, by (tenant, key).
    async fn existing_by_key(
        &self,
        db: &impl ConnectionTrait,
        jobs: &[&NewJob],
    ) -> Result<HashMap<(String, String), Job>, JobError> {
        let mut found = HashMap::new();
        for chunk in jobs.chunks(INSERT_CHUNK) {
            let mut sql = self.sql();
            let conditions: Vec<String> = chunk
                .iter()
                .map(|job| {
                    format!(
                        "(tenant = {} AND unique_key = {})",
                        sql.bind(job.tenant.clone()),
                        sql.bind(job.unique_key.clone())
                    )
                })
                .collect();
            sql.push(&format!("SELECT {} FROM jobs WHERE ", job_columns("")))
                .push(&conditions.join(" OR "));
            for job in self.fetch_jobs(db, sql).await? {
                if let Some(key) = job.unique_key.clone() {
                    found.insert((job.tenant.clone(), key), job);
                }
            }
        }
        Ok(found)
    }

    /// Runs an update that targets one job the caller may see (checked by `get` first:
    /// a job never changes tenant); if no row matched, the job moved to a state this
    /// move cannot start from.
    async fn move_one(&self, sql: Sql, id: JobId, to: State) -> Result<Job, JobError> {
        if let Some(job) = self.fetch_jobs(&self.db, sql).await?.pop() {
            return Ok(job);
        }
        let current = self.get(None, id).await?;
        current.state.move_to(to)?;
        // Legal now but not when the update ran: the job moved in between.
        Err(JobError::IllegalTransition {
            from: current.state,
            to,
        })
    }

    /// Never longer than `limits::DURATION_MAX_SECS`, however the delay was asked for.
    fn retry_delay(&self, attempt: i32, retry: Retry) -> Option<Duration> {
        let max = Duration::from_secs(jobs_core::limits::DURATION_MAX_SECS);
        self.requested_delay(attempt, retry).map(|d| d.min(max))
    }

    fn requested_delay(&self, attempt: i32, retry: Retry) -> Option<Duration> {
        match retry {
            Retry::Backoff => Some(self.retry_policy.backoff(attempt)),
            Retry::After(delay) => Some(delay),
            Retry::Never => None,
        }
    }

    /// Counts the states that a maintenance statement `RETURNING state` moved jobs to.
    async fn report(&self, sql: Sql) -> Result<RescueReport, JobError> {
        let rows = self.db.query_all_raw(sql.build()).await.map_err(db_error)?;
        let mut report = RescueReport::default();
        for row in rows {
            match row
                .try_get::<String>("", "state")
                .map_err(db_error)?
                .as_str()
            {
                "pending" => report.retried += 1,
                "cancelled" => report.cancelled += 1,
                _ => report.failed += 1,
            }
        }
        Ok(report)
    }

    /// Writes outcomes in one statement; the database's own error if it refuses it.
    async fn finish_rows(&self, items: &[Finish]) -> Result<Vec<Result<State, JobError>>, DbErr> {
        let d = self.dialect;
        let now = d.now();
        let mut sql = self.sql();
        let rows = items
            .iter()
            .map(|item| {
                finish_row(
                    item,
                    self.retry_delay(item.lease.attempt, retry_of(&item.outcome)),
                )
            })
            .collect();
        let v = rows_cte(&mut sql, "v", FINISH_COLUMNS, rows);
        // Every decision reads the row as locked (`jobs.`), never a snapshot taken before
        // the lock: a cancel that commits while this statement waits is seen.
        let next = format!(
            "(CASE \
               WHEN t.outcome IN ('retry', 'released', 'snoozed', 'failed') \
                 AND jobs.cancel_requested_at IS NOT NULL THEN 'cancelled' \
               WHEN t.outcome IN ('released', 'snoozed') THEN 'pending' \
               WHEN t.outcome <> 'retry' THEN t.outcome \
               WHEN jobs.attempt < jobs.max_attempts \
                 AND (jobs.deadline IS NULL OR jobs.deadline > {retry_at}) THEN 'pending' \
               ELSE 'failed' END)",
            retry_at = d.now_plus_ms("t.delay_ms"),
        );
        sql.push(&format!(
            "WITH {v} \
             UPDATE jobs SET state = {next}, \
               attempt = CASE WHEN {next} = 'pending' AND t.outcome IN ('released', 'snoozed') \
                 THEN jobs.attempt - 1 ELSE jobs.attempt END, \
               run_at = CASE WHEN {next} <> 'pending' THEN jobs.run_at \
                 WHEN t.outcome IN ('retry', 'snoozed') THEN {retry_at} ELSE {now} END, \
               result = CASE WHEN t.outcome IN ('completed', 'partial') THEN t.result ELSE jobs.result END, \
               item_errors = CASE WHEN t.outcome = 'partial' THEN t.item_errors ELSE jobs.item_errors END, \
               errors = CASE WHEN t.err_kind IS NULL THEN jobs.errors ELSE {errors} END, \
               progress = CASE WHEN t.outcome IN ('completed', 'partial') THEN 1.0 ELSE jobs.progress END, \
               lease_expires_at = NULL, lease_token = NULL, \
               finished_at = CASE WHEN {next} = 'pending' THEN NULL ELSE {now} END, \
               expires_at = CASE WHEN {next} = 'pending' THEN NULL ELSE {expiry} END, \
               updated_at = {now} \
             FROM v AS t \
             WHERE jobs.id = t.id AND jobs.state = 'running' AND jobs.lease_token = t.lease_token \
             RETURNING jobs.id, jobs.state",
            retry_at = d.now_plus_ms("t.delay_ms"),
            errors = d.append_attempt_error("jobs.errors", "jobs.attempt", "t.err_kind", "t.err_message"),
            expiry = d.now_plus_ms("jobs.retention_ms"),
        ));
        let returned = self.db.query_all_raw(sql.build()).await?;
        let mut moved = HashMap::with_capacity(returned.len());
        for row in returned {
            let id = JobId::from(row.try_get::<Uuid>("", "id")?);
            let state: String = row.try_get("", "state")?;
            moved.insert(id, state);
        }
        Ok(items
            .iter()
            .map(|item| match moved.get(&item.lease.job_id) {
                Some(state) => state.parse(),
                None => Err(JobError::LeaseLost(item.lease.job_id)),
            })
            .collect())
    }

    /// After the database failed a batch: each outcome alone, so one bad row fails only
    /// its own job. A transient failure on the way stops here, to be retried whole
    /// (outcomes already written then answer `LeaseLost`).
    async fn finish_each(
        &self,
        items: Vec<Finish>,
    ) -> Result<Vec<Result<State, JobError>>, JobError> {
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let result = match self.finish_rows(std::slice::from_ref(&item)).await {
                Ok(mut one) => one.remove(0),
                Err(error) if transient(&error) => return Err(db_error(error)),
                Err(error) => self.finish_refused(item, error).await?.remove(0),
            };
            results.push(result);
        }
        Ok(results)
    }

    /// One outcome the database failed alone. A value it refuses ends the job `failed`
    /// with kind `unstorable_outcome` and the database's reason; any other failure is
    /// answered for this item only (its lease then expires and the job runs again).
    async fn finish_refused(
        &self,
        item: Finish,
        error: DbErr,
    ) -> Result<Vec<Result<State, JobError>>, JobError> {
        if !refused_value(&error) {
            tracing::error!(job = %item.lease.job_id, %error, "the database failed an outcome; the job will run again after its lease");
            return Ok(vec![Err(db_error(error))]);
        }
        tracing::warn!(job = %item.lease.job_id, %error, "the database refused an outcome; failing the job");
        let failed = Finish {
            lease: item.lease,
            outcome: Outcome::Failed {
                kind: Outcome::UNSTORABLE.into(),
                message: storable_text(
                    &format!("the database refused the outcome: {error}"),
                    caps::ERROR_MESSAGE,
                ),
                retry: Retry::Never,
            },
        };
        match self.finish_rows(&[failed]).await {
            Ok(results) => Ok(results),
            Err(error) if transient(&error) => Err(db_error(error)),
            Err(error) => Ok(vec![Err(db_error(error))]),
        }
    }
}

#[async_trait]
impl JobStore for SeaOrmStore {
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, JobError> {
        validate_all(&jobs)?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin().await.map_err(db_error)?;
        let done = self.enqueue_many_in(&txn, jobs).await?;
        txn.commit().await.map_err(db_error)?;
        let queues: HashSet<&str> = done
            .iter()
            .filter(|e| !e.duplicate)
            .map(|e| e.job.queue.as_str())
            .collect();
        for queue in queues {
            self.wake_workers(queue);
        }
        Ok(done)
    }

    async fn get(&self, tenant: Option<&str>, id: JobId) -> Result<Job, JobError> {
        // By primary key alone, tenant compared here: with `AND tenant = $` a cached
        // generic plan on PostgreSQL may walk a tenant index instead.
        self.get_many(&[id])
            .await?
            .remove(&id)
            .filter(|job| job.visible_to(tenant))
            .ok_or(JobError::NotFound(id))
    }

    async fn get_many(&self, ids: &[JobId]) -> Result<HashMap<JobId, Job>, JobError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut sql = self.sql();
        let ids = sql.in_ids(ids);
        sql.push(&format!(
            "SELECT {} FROM jobs WHERE id{ids}",
            job_columns("")
        ));
        let jobs = self.fetch_jobs(&self.db, sql).await?;
        Ok(jobs.into_iter().map(|job| (job.id, job)).collect())
    }

    async fn cancel_requests(&self, leases: &[Lease]) -> Result<Vec<LeaseToken>, JobError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = self.sql();
        let ids = sql.in_uuids(leases.iter().map(|l| l.job_id.as_uuid()));
        let tokens = sql.in_uuids(leases.iter().map(|l| l.token.as_uuid()));
        sql.push(&format!(
            "SELECT lease_token FROM jobs WHERE id{ids} AND lease_token{tokens} \
             AND state = 'running' AND cancel_requested_at IS NOT NULL"
        ));
        let rows = self.db.query_all_raw(sql.build()).await.map_err(db_error)?;
        rows.iter().map(token_of).collect()
    }

    async fn list(&self, filter: &ListFilter, page: &PageRequest) -> Result<Page, JobError> {
        page.validate()?;
        filter.validate()?;
        let mut sql = self.sql();
        let mut conditions = vec!["1 = 1".to_owned()];
        let mut equals = |column: &str, value: Option<String>, sql: &mut Sql| {
            if let Some(value) = value {
                conditions.push(format!("{column} = {}", sql.bind(value)));
            }
        };
        equals("tenant", filter.tenant.clone(), &mut sql);
        equals(
            "state",
            filter.state.map(|s| s.as_str().to_owned()),
            &mut sql,
        );
        equals("kind", filter.kind.clone(), &mut sql);
        equals("queue", filter.queue.clone(), &mut sql);
        if let Some(from) = filter.created_from {
            conditions.push(format!("created_at >= {}", sql.bind_time(Some(from))));
        }
        if let Some(to) = filter.created_to {
            conditions.push(format!("created_at < {}", sql.bind_time(Some(to))));
        }
        if let Some(cursor) = page.cursor {
            let at = sql.bind_time(Some(cursor.created_at));
            let at_again = sql.bind_time(Some(cursor.created_at));
            let id = sql.bind(cursor.id.as_uuid());
            conditions.push(format!(
                "(created_at < {at} OR (created_at = {at_again} AND id < {id}))"
            ));
        }
        let limit = sql.bind(page.limit as i64 + 1);
        let offset = sql.bind(page.offset.min(i64::MAX as u64) as i64);
        sql.push(&format!(
            "SELECT {} FROM jobs WHERE {} ORDER BY created_at DESC, id DESC LIMIT {limit} OFFSET {offset}",
            job_columns(""),
            conditions.join(" AND ")
        ));
        let mut items = self.fetch_jobs(&self.db, sql).await?;
        let more = items.len() > page.limit as usize;
        items.truncate(page.limit as usize);
        let next_cursor = match items.last() {
            Some(last) if more => Some(Cursor {
                created_at: last.created_at,
                id: last.id,
            }),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Job>, JobError> {
        request.validate()?;
        if request.limit == 0 || request.queues.is_empty() {
            return Ok(Vec::new());
        }
        let d = self.dialect;
        let now = d.now();
        let mut sql = self.sql();
        let worker = sql.bind(request.worker_id.clone());
        let lease = sql.bind(millis(request.lease));
        let queues = sql.bind_list(request.queues.iter().cloned());
        let mut kinds = match &request.kinds {
            Some(kinds) if kinds.is_empty() => return Ok(Vec::new()),
            Some(kinds) => format!(" AND kind IN ({})", sql.bind_list(kinds.iter().cloned())),
            None => String::new(),
        };
        if let Some(tenant) = &request.tenant {
            kinds.push_str(&format!(" AND tenant = {}", sql.bind(tenant.clone())));
        }
        let limit = sql.bind(request.limit as i64);
        // The picked rows are materialized once: PostgreSQL may otherwise re-run a
        // `LIMIT ... SKIP LOCKED` subquery per row and claim more than `limit`.
        sql.push(&format!(
            "WITH picked AS MATERIALIZED (SELECT id FROM jobs \
               WHERE state = 'pending' AND queue IN ({queues}){kinds} AND run_at <= {now} \
                 AND (deadline IS NULL OR deadline > {now}) AND cancel_requested_at IS NULL \
               ORDER BY priority DESC, run_at, id LIMIT {limit}{lock}) \
             UPDATE jobs SET state = 'running', worker_id = {worker}, attempt = attempt + 1, \
               lease_token = {token}, lease_expires_at = {lease_end}, started_at = {now}, \
               updated_at = {now}, progress = 0, stage = NULL \
             FROM picked WHERE jobs.id = picked.id AND jobs.state = 'pending' \
             RETURNING {returning}",
            returning = job_columns("jobs."),
            token = d.random_uuid(),
            lease_end = d.now_plus_ms(&lease),
            lock = d.skip_locked(),
        ));
        let mut jobs = self.fetch_jobs(&self.db, sql).await?;
        self.changed(jobs.iter().map(|job| job.id));
        // RETURNING does not keep the subquery's order.
        jobs.sort_by(|a, b| (b.priority, a.run_at, a.id).cmp(&(a.priority, b.run_at, b.id)));
        Ok(jobs)
    }

    async fn heartbeat(&self, leases: &[Lease], lease: Duration) -> Result<Heartbeat, JobError> {
        if leases.is_empty() {
            return Ok(Heartbeat::default());
        }
        let d = self.dialect;
        let mut sql = self.sql();
        let lease = sql.bind(millis(lease));
        let ids = sql.in_uuids(leases.iter().map(|l| l.job_id.as_uuid()));
        let tokens = sql.in_uuids(leases.iter().map(|l| l.token.as_uuid()));
        sql.push(&format!(
            "UPDATE jobs SET lease_expires_at = {lease_end}, updated_at = {now} \
             WHERE state = 'running' AND id{ids} AND lease_token{tokens} \
             RETURNING lease_token, cancel_requested_at IS NOT NULL AS cancel_requested",
            lease_end = d.now_plus_ms(&lease),
            now = d.now(),
        ));
        let rows = self.db.query_all_raw(sql.build()).await.map_err(db_error)?;
        let mut beat = Heartbeat::default();
        for row in rows {
            let token = token_of(&row)?;
            beat.renewed.push(token);
            if row
                .try_get::<bool>("", "cancel_requested")
                .map_err(db_error)?
            {
                beat.cancel_requested.push(token);
            }
        }
        let renewed: HashSet<LeaseToken> = beat.renewed.iter().copied().collect();
        beat.lost = leases
            .iter()
            .map(|l| l.token)
            .filter(|token| !renewed.contains(token))
            .collect();
        Ok(beat)
    }

    async fn progress(
        &self,
        lease: &Lease,
        fraction: f64,
        stage: Option<&str>,
    ) -> Result<(), JobError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(JobError::Invalid(vec![FieldError::new(
                "progress",
                "must be between 0.0 and 1.0",
            )]));
        }
        let mut sql = self.sql();
        let stage = stage.map(|s| storable_text(s, caps::STAGE));
        let text = format!(
            "UPDATE jobs SET progress = {}, stage = {}, updated_at = {} \
             WHERE id = {} AND lease_token = {} AND state = 'running'",
            sql.bind(fraction),
            sql.bind(stage),
            self.dialect.now(),
            sql.bind(lease.job_id.as_uuid()),
            sql.bind(lease.token.as_uuid()),
        );
        sql.push(&text);
        let done = self.db.execute_raw(sql.build()).await.map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(JobError::LeaseLost(lease.job_id));
        }
        self.changed([lease.job_id]);
        Ok(())
    }

    async fn finish_many(
        &self,
        items: Vec<Finish>,
    ) -> Result<Vec<Result<State, JobError>>, JobError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut items: Vec<Finish> = items
            .into_iter()
            .map(|item| Finish {
                lease: item.lease,
                outcome: item.outcome.into_storable(),
            })
            .collect();
        let ids: Vec<JobId> = items.iter().map(|item| item.lease.job_id).collect();
        let results = match self.finish_rows(&items).await {
            Ok(results) => results,
            // Worth retrying as it is (the caller does): the database is away or busy.
            Err(error) if transient(&error) => return Err(db_error(error)),
            // Anything else would fail the same batch forever: find the row at fault.
            Err(_) if items.len() > 1 => self.finish_each(items).await?,
            Err(error) => self.finish_refused(items.remove(0), error).await?,
        };
        let written = ids.iter().zip(&results).filter(|(_, r)| r.is_ok());
        self.changed(written.map(|(id, _)| *id));
        Ok(results)
    }

    async fn cancel(&self, tenant: Option<&str>, id: JobId) -> Result<Job, JobError> {
        let d = self.dialect;
        let now = d.now();
        self.get(tenant, id).await?;
        let mut sql = self.sql();
        let clause = format!(" WHERE id = {}", sql.bind(id.as_uuid()));
        sql.push(&format!(
            "UPDATE jobs SET \
               state = CASE WHEN state = 'pending' THEN 'cancelled' ELSE state END, \
               cancel_requested_at = CASE WHEN state = 'running' \
                 THEN COALESCE(cancel_requested_at, {now}) ELSE cancel_requested_at END, \
               finished_at = CASE WHEN state = 'pending' THEN {now} ELSE finished_at END, \
               expires_at = CASE WHEN state = 'pending' THEN {expiry} ELSE expires_at END, \
               updated_at = {now}{clause} AND state IN ({from}) RETURNING {columns}",
            columns = job_columns(""),
            expiry = d.now_plus_ms("retention_ms"),
            from = state_list(&State::sources_of(State::Cancelled)),
        ));
        let job = self.move_one(sql, id, State::Cancelled).await?;
        self.changed([id]);
        Ok(job)
    }

    async fn retry(&self, tenant: Option<&str>, id: JobId) -> Result<Job, JobError> {
        let d = self.dialect;
        let now = d.now();
        self.get(tenant, id).await?;
        let mut sql = self.sql();
        let clause = format!(" WHERE id = {}", sql.bind(id.as_uuid()));
        sql.push(&format!(
            "UPDATE jobs SET state = 'pending', attempt = 0, run_at = {now}, progress = 0, \
               stage = NULL, result = NULL, item_errors = NULL, lease_expires_at = NULL, \
               lease_token = NULL, cancel_requested_at = NULL, started_at = NULL, finished_at = NULL, \
               expires_at = NULL, updated_at = {now}{clause} AND state IN ({from}) RETURNING {columns}",
            columns = job_columns(""),
            from = state_list(&State::ENDED),
        ));
        let job = self.move_one(sql, id, State::Pending).await?;
        self.changed([id]);
        Ok(job)
    }

    async fn rescue_expired(&self, limit: u32) -> Result<RescueReport, JobError> {
        let d = self.dialect;
        let now = d.now();
        let mut sql = self.sql();
        let limit = sql.bind(limit.max(1) as i64);
        sql.push(&format!(
            "WITH t AS MATERIALIZED (SELECT id, CASE \
               WHEN cancel_requested_at IS NOT NULL THEN 'cancelled' \
               WHEN attempt < max_attempts AND (deadline IS NULL OR deadline > {now}) THEN 'pending' \
               ELSE 'failed' END AS next_state \
             FROM jobs WHERE state = 'running' AND lease_expires_at < {now} \
             ORDER BY lease_expires_at LIMIT {limit}{lock}) \
             UPDATE jobs SET state = t.next_state, \
               errors = {errors}, \
               run_at = CASE WHEN t.next_state = 'pending' THEN {now} ELSE jobs.run_at END, \
               lease_expires_at = NULL, lease_token = NULL, \
               finished_at = CASE WHEN t.next_state = 'pending' THEN NULL ELSE {now} END, \
               expires_at = CASE WHEN t.next_state = 'pending' THEN NULL ELSE {expiry} END, \
               updated_at = {now} \
             FROM t WHERE jobs.id = t.id AND jobs.state = 'running' \
             RETURNING jobs.state",
            lock = d.skip_locked(),
            errors = d.append_attempt_error(
                "jobs.errors",
                "jobs.attempt",
                "'lease_expired'",
                "'the lease expired: the worker stopped heartbeating'"
            ),
            expiry = d.now_plus_ms("jobs.retention_ms"),
        ));
        self.report(sql).await
    }

    async fn end_unrunnable(&self, limit: u32) -> Result<RescueReport, JobError> {
        let d = self.dialect;
        let now = d.now();
        let mut sql = self.sql();
        let limit = sql.bind(limit.max(1) as i64);
        sql.push(&format!(
            "WITH t AS MATERIALIZED (SELECT id, CASE \
                 WHEN cancel_requested_at IS NOT NULL THEN 'cancelled' ELSE 'failed' END AS next_state \
               FROM jobs WHERE state = 'pending' AND (cancel_requested_at IS NOT NULL \
                 OR (deadline IS NOT NULL AND deadline <= {now})) LIMIT {limit}{lock}) \
             UPDATE jobs SET state = t.next_state, \
               errors = CASE WHEN t.next_state = 'failed' THEN {errors} ELSE jobs.errors END, \
               finished_at = {now}, expires_at = {expiry}, updated_at = {now} \
             FROM t WHERE jobs.id = t.id AND jobs.state = 'pending' \
             RETURNING jobs.state",
            errors = d.append_attempt_error(
                "jobs.errors",
                "jobs.attempt",
                "'deadline'",
                "'the deadline passed before the job could run'"
            ),
            expiry = d.now_plus_ms("jobs.retention_ms"),
            lock = d.skip_locked(),
        ));
        self.report(sql).await
    }

    async fn queue_stats(&self, tenant: Option<&str>) -> Result<Vec<QueueStats>, JobError> {
        let d = self.dialect;
        let mut sql = self.sql();
        let filter = match tenant {
            Some(t) => format!("WHERE tenant = {}", sql.bind(t.to_owned())),
            None => String::new(),
        };
        // The oldest due pending job per queue; its age is measured by the database clock.
        sql.push(&format!(
            "SELECT queue, state, COUNT(*) AS n, \
               MIN(CASE WHEN state = 'pending' AND run_at <= {now} THEN run_at END) AS oldest, \
               {now} AS now FROM jobs {filter} GROUP BY queue, state ORDER BY queue",
            now = d.now()
        ));
        let rows = self.db.query_all_raw(sql.build()).await.map_err(db_error)?;
        let mut stats: Vec<QueueStats> = Vec::new();
        for row in rows {
            let queue: String = row.try_get("", "queue").map_err(db_error)?;
            let state: State = row
                .try_get::<String>("", "state")
                .map_err(db_error)?
                .parse()?;
            let count: i64 = row.try_get("", "n").map_err(db_error)?;
            let oldest: Option<time::OffsetDateTime> =
                row.try_get("", "oldest").map_err(db_error)?;
            let now: time::OffsetDateTime = row.try_get("", "now").map_err(db_error)?;
            if stats.last().is_none_or(|s| s.queue != queue) {
                stats.push(QueueStats {
                    queue,
                    counts: Default::default(),
                    oldest_pending_age: None,
                });
            }
            let entry = stats.last_mut().expect("just pushed");
            entry.counts.insert(state, count as u64);
            if let Some(oldest) = oldest {
                entry.oldest_pending_age = Duration::try_from(now - oldest).ok();
            }
        }
        Ok(stats)
    }

    async fn purge_expired(&self, limit: u32) -> Result<u64, JobError> {
        let mut sql = self.sql();
        let limit = sql.bind(limit.max(1) as i64);
        sql.push(&format!(
            "WITH picked AS MATERIALIZED (SELECT id FROM jobs \
             WHERE expires_at <= {now} AND state IN ({ended}) LIMIT {limit}{lock}) \
             DELETE FROM jobs WHERE id IN (SELECT id FROM picked)",
            now = self.dialect.now(),
            ended = state_list(&State::ENDED),
            lock = self.dialect.skip_locked(),
        ));
        let done = self.db.execute_raw(sql.build()).await.map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

/// The columns of one new job in `insert_chunk`, with their PostgreSQL types.
const INSERT_COLUMNS: &[(&str, &str)] = &[
    ("id", "uuid"),
    ("tenant", "text"),
    ("queue", "text"),
    ("kind", "text"),
    ("args", "jsonb"),
    ("priority", "smallint"),
    ("run_at", "timestamptz"),
    ("delay_ms", "bigint"),
    ("max_attempts", "integer"),
    ("timeout_ms", "bigint"),
    ("deadline", "timestamptz"),
    ("retention_ms", "bigint"),
    ("unique_key", "text"),
    ("trace_id", "text"),
    ("metadata", "jsonb"),
];

/// `run_at` when given, else `delay_ms` (0 when neither) from the database clock.
fn insert_row(d: Dialect, job: &&NewJob) -> Vec<sea_orm::Value> {
    vec![
        job.id.as_uuid().into(),
        job.tenant.clone().into(),
        job.queue.clone().into(),
        job.kind.clone().into(),
        job.args.clone().into(),
        job.priority.into(),
        d.time_text(job.run_at),
        job.delay.map(millis).unwrap_or(0).into(),
        job.max_attempts.into(),
        job.timeout.map(millis).into(),
        d.time_text(job.deadline),
        millis(job.retention).into(),
        job.unique_key.clone().into(),
        job.trace_id.clone().into(),
        job.metadata.clone().into(),
    ]
}

/// The columns of one outcome in `finish_many`, with their PostgreSQL types.
const FINISH_COLUMNS: &[(&str, &str)] = &[
    ("id", "uuid"),
    ("lease_token", "uuid"),
    ("outcome", "text"),
    ("result", "jsonb"),
    ("item_errors", "jsonb"),
    ("err_kind", "text"),
    ("err_message", "text"),
    ("delay_ms", "bigint"),
];

/// One row of `finish_many`, with the outcome spelled as the SQL expects it.
fn finish_row(item: &Finish, delay: Option<Duration>) -> Vec<sea_orm::Value> {
    let (outcome, result, item_errors, error) = match &item.outcome {
        Outcome::Completed { result } => ("completed", Some(result.clone()), None, None),
        Outcome::Partial {
            result,
            item_errors,
        } => (
            "partial",
            Some(result.clone()),
            Some(item_errors.clone()),
            None,
        ),
        Outcome::Failed { kind, message, .. } => {
            let outcome = if delay.is_some() { "retry" } else { "failed" };
            (outcome, None, None, Some((kind.clone(), message.clone())))
        }
        Outcome::Cancelled => ("cancelled", None, None, None),
        Outcome::Released => ("released", None, None, None),
        Outcome::Snoozed { .. } => ("snoozed", None, None, None),
    };
    let (err_kind, err_message) = error.unzip();
    vec![
        item.lease.job_id.as_uuid().into(),
        item.lease.token.as_uuid().into(),
        outcome.into(),
        result.into(),
        item_errors.into(),
        err_kind.into(),
        err_message.into(),
        delay.map(millis).unwrap_or(0).into(),
    ]
}

fn retry_of(outcome: &Outcome) -> Retry {
    match outcome {
        Outcome::Failed { retry, .. } => *retry,
        Outcome::Snoozed { delay } => Retry::After(*delay),
        _ => Retry::Never,
    }
}

fn validate_all(jobs: &[NewJob]) -> Result<(), JobError> {
    let mut errors = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if let Err(JobError::Invalid(fields)) = job.validate() {
            errors.extend(fields.into_iter().map(|f| FieldError {
                field: format!("jobs[{i}].{}", f.field),
                message: f.message,
            }));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(JobError::Invalid(errors))
    }
}

fn millis(duration: Duration) -> i64 {
    duration.as_millis().min(i64::MAX as u128) as i64
}

fn to_job(m: entity::Model) -> Result<Job, JobError> {
    let errors: Vec<AttemptError> = serde_json::from_value(m.errors).map_err(|e| {
        JobError::Storage(format!("job {} has a malformed error history: {e}", m.id))
    })?;
    Ok(Job {
        id: m.id.into(),
        tenant: m.tenant,
        queue: m.queue,
        kind: m.kind,
        args: m.args,
        state: m.state.parse()?,
        priority: m.priority,
        run_at: m.run_at,
        attempt: m.attempt,
        max_attempts: m.max_attempts,
        timeout_ms: m.timeout_ms,
        deadline: m.deadline,
        retention_ms: m.retention_ms,
        progress: m.progress,
        stage: m.stage,
        result: m.result,
        item_errors: m.item_errors,
        errors,
        worker_id: m.worker_id,
        lease_token: m.lease_token.map(LeaseToken::from),
        lease_expires_at: m.lease_expires_at,
        cancel_requested_at: m.cancel_requested_at,
        unique_key: m.unique_key,
        trace_id: m.trace_id,
        metadata: m.metadata,
        created_at: m.created_at,
        updated_at: m.updated_at,
        started_at: m.started_at,
        finished_at: m.finished_at,
        expires_at: m.expires_at,
    })
}

/// The columns of `Job`, by name (each optionally prefixed, as `jobs.`): never `*`, so a
/// schema with columns this binary does not know still reads, and SQLite's prepared
/// statements never disagree with the table about how many columns a row has.
fn job_columns(prefix: &str) -> String {
    use sea_orm::{IdenStatic, Iterable};
    let names: Vec<String> = entity::Column::iter()
        .map(|c| format!("{prefix}{}", c.as_str()))
        .collect();
    names.join(", ")
}

fn token_of(row: &sea_orm::QueryResult) -> Result<LeaseToken, JobError> {
    Ok(LeaseToken::from(
        row.try_get::<Uuid>("", "lease_token").map_err(db_error)?,
    ))
}

/// The database cannot serve now (503: unreachable, shutting down, a deadlock or
/// serialization failure; the same request may succeed when retried), or it failed the
/// statement (500).
pub(crate) fn db_error(error: DbErr) -> JobError {
    if transient(&error) {
        JobError::Unavailable(error.to_string())
    } else {
        JobError::Storage(error.to_string())
    }
}

/// The error code a database answered with, if it answered.
enum Code {
    /// A PostgreSQL SQLSTATE.
    Postgres(String),
    /// An SQLite extended result code.
    Sqlite(u32),
}

fn code_of(error: &DbErr) -> Option<Code> {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = error
    else {
        return None;
    };
    let sqlx::Error::Database(e) = e.as_ref() else {
        return None;
    };
    let code = e.code()?;
    if e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        Some(Code::Postgres(code.into_owned()))
    } else {
        code.parse().ok().map(Code::Sqlite)
    }
}

/// Lost connections, exhausted pools, a server shutting down, transaction rollbacks.
fn transient(error: &DbErr) -> bool {
    if let DbErr::ConnectionAcquire(_) | DbErr::Conn(_) = error {
        return true;
    }
    if let DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) = error {
        if let sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed = e.as_ref()
        {
            return true;
        }
    }
    match code_of(error) {
        // Connection exceptions, transaction rollback (deadlock, serialization),
        // insufficient resources, operator intervention (shutdown, statement timeout),
        // lock timeout, a read-only standby after a failover.
        Some(Code::Postgres(code)) => ["08", "40", "53", "57", "55P03", "25006"]
            .iter()
            .any(|c| code.starts_with(c)),
        // Busy, locked, I/O error, full, cannot open.
        Some(Code::Sqlite(code)) => matches!(code & 0xff, 5 | 6 | 10 | 13 | 14),
        None => false,
    }
}

/// The database refused a value of the statement (a character or number it cannot
/// store, a value too large, a check): the same statement would fail again.
fn refused_value(error: &DbErr) -> bool {
    match code_of(error) {
        // Data exception, integrity violation, program limit exceeded, raised by a trigger.
        Some(Code::Postgres(code)) => ["22", "23", "54", "P0001"]
            .iter()
            .any(|c| code.starts_with(c)),
        // Too big, constraint (a check or a trigger's RAISE), datatype mismatch.
        Some(Code::Sqlite(code)) => matches!(code & 0xff, 18..=20),
        None => false,
    }
}
