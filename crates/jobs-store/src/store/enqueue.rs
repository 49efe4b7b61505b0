//! Enqueueing: multi-row inserts in bounded chunks, duplicates found by unique key, and
//! the PostgreSQL wake-up sent with the transaction.

use std::collections::{HashMap, HashSet};

use jobs_core::{Enqueued, FieldError, Job, JobError, JobId, NewJob};
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::{SeaOrmStore, db_error, job_columns, millis};
use crate::sql::{Dialect, rows_cte};

/// Rows per multi-row INSERT.
const INSERT_CHUNK: usize = 1_000;

/// `JobStore::enqueue_many`: one transaction, then a local wake-up per queue.
pub(super) async fn enqueue_many(
    store: &SeaOrmStore,
    jobs: Vec<NewJob>,
) -> Result<Vec<Enqueued>, JobError> {
    validate_all(&jobs)?;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let txn = store.db.begin().await.map_err(db_error)?;
    let done = store.enqueue_many_in(&txn, jobs).await?;
    txn.commit().await.map_err(db_error)?;
    let queues: HashSet<&str> = done
        .iter()
        .filter(|e| !e.duplicate)
        .map(|e| e.job.queue.as_str())
        .collect();
    for queue in queues {
        store.wake_workers(queue);
    }
    Ok(done)
}

impl SeaOrmStore {
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
        let queues: HashSet<&str> = inserted.values().map(|j| j.queue.as_str()).collect();
        self.notify_queues(conn, &queues).await?;
        jobs.iter()
            .map(|new| enqueued(new, &mut inserted, &existing))
            .collect()
    }

    /// PostgreSQL: one NOTIFY per queue that got pending jobs, delivered when the
    /// transaction commits (at once outside one).
    pub(super) async fn notify_queues(
        &self,
        conn: &impl ConnectionTrait,
        queues: &HashSet<&str>,
    ) -> Result<(), JobError> {
        if self.dialect != Dialect::Postgres || queues.is_empty() {
            return Ok(());
        }
        let mut sql = self.sql();
        let channel = sql.bind(crate::wake::ENQUEUED_CHANNEL);
        let list = sql.bind_list(queues.iter().map(|q| q.to_string()));
        sql.push(&format!(
            "SELECT pg_notify({channel}, q) FROM unnest(ARRAY[{list}]::text[]) AS q"
        ));
        conn.execute_raw(sql.build()).await.map_err(db_error)?;
        Ok(())
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
               unique_states, trace_id, metadata, created_at, updated_at) \
             SELECT id, tenant, queue, kind, COALESCE(args, 'null'), '{pending}', priority, \
               COALESCE(run_at, {due}), 0, max_attempts, timeout_ms, deadline, retention_ms, 0, \
               '[]', unique_key, unique_states, trace_id, COALESCE(metadata, 'null'), {now}, {now} \
             FROM r WHERE true \
             ON CONFLICT (tenant, unique_key) WHERE {unique} DO NOTHING RETURNING {columns}",
            unique = migration::m20261203_000006_operations::UNIQUE_PREDICATE,
            columns = job_columns(""),
            due = d.now_plus_ms("delay_ms"),
            now = d.now(),
            pending = jobs_core::State::Pending,
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
}

/// What enqueueing `new` produced: the row it inserted, or the one holding its key.
fn enqueued(
    new: &NewJob,
    inserted: &mut HashMap<JobId, Job>,
    existing: &HashMap<(String, String), Job>,
) -> Result<Enqueued, JobError> {
    if let Some(job) = inserted.remove(&new.id) {
        return Ok(Enqueued {
            job,
            duplicate: false,
        });
    }
    let key = (
        new.tenant.clone(),
        new.unique_key.clone().unwrap_or_default(),
    );
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
    ("unique_states", "integer"),
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
        job.unique_key
            .as_ref()
            .map(|_| migration::m20261203_000006_operations::ALL_STATES_MASK)
            .into(),
        job.trace_id.clone().into(),
        job.metadata.clone().into(),
    ]
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
