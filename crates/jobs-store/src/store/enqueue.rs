//! Enqueueing: multi-row inserts in bounded chunks, duplicates found by unique key, and
//! the PostgreSQL wake-up sent with the transaction.

use std::collections::{HashMap, HashSet};

use jobs_core::{Enqueued, FieldError, Job, JobError, JobId, NewJob, OnConflict};
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::{
    SeaOrmStore, db_error, job_columns, millis,
    unique::{KeyOf, key_of},
};
use crate::sql::{Dialect, rows_cte};

/// Rows per multi-row INSERT.
const INSERT_CHUNK: usize = 1_000;
/// Inserts of a job whose key's holder keeps ending between insert and lookup.
const INSERT_ROUNDS: usize = 3;

/// `JobStore::enqueue_many`: one transaction, then a local wake-up per queue.
pub(super) async fn enqueue_many(
    store: &SeaOrmStore,
    jobs: Vec<NewJob>,
) -> Result<Vec<Enqueued>, JobError> {
    validate_all(&jobs)?;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    #[cfg(feature = "postgres")]
    if store.dialect == Dialect::Postgres && super::plain_enqueue::applies(&jobs) {
        let done = super::plain_enqueue::enqueue(store, jobs).await?;
        store.wake_queues(done.iter().map(|e| e.job.queue.as_str()));
        return Ok(done);
    }
    let txn = store.db.begin().await.map_err(db_error)?;
    let done = store.enqueue_many_in(&txn, jobs).await?;
    txn.commit().await.map_err(db_error)?;
    // New jobs, and holders that took a replacement's run time, may be due now.
    let moved: Vec<&Job> = done
        .iter()
        .filter(|e| !e.duplicate || e.replaced)
        .map(|e| &e.job)
        .collect();
    store.wake_queues(moved.iter().map(|j| j.queue.as_str()));
    store.changed(done.iter().filter(|e| e.replaced).map(|e| e.job.id));
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
        jobs_core::dependency::check_batch(&jobs)?;
        // Rows go in one stable order, by (tenant, unique key): concurrent batches then
        // wait on each other's keys in the same order and cannot deadlock.
        let mut ordered: Vec<&NewJob> = jobs.iter().collect();
        ordered.sort_by(|a, b| (&a.tenant, &a.unique_key).cmp(&(&b.tenant, &b.unique_key)));
        let parents_in_batch: HashSet<JobId> = jobs
            .iter()
            .flat_map(|j| j.depends_on.iter().map(|d| d.job_id))
            .collect();
        let (mut inserted, holders) = self
            .insert_or_find_holders(conn, ordered, &parents_in_batch)
            .await?;
        let conflicted: Vec<&NewJob> = jobs
            .iter()
            .filter(|j| !inserted.contains_key(&j.id))
            .collect();
        let replaced = self.replace_holders(conn, &conflicted, &holders).await?;
        let mut changed: Vec<&Job> = inserted.values().collect();
        changed.extend(&replaced);
        self.notify_queues(conn, &changed).await?;
        let replaced: HashMap<JobId, Job> = replaced.into_iter().map(|j| (j.id, j)).collect();
        // A batch's first job of a key, replaced by a later one, shows its final row.
        for (id, job) in &replaced {
            if let Some(first) = inserted.get_mut(id) {
                *first = job.clone();
            }
        }
        if !parents_in_batch.is_empty() {
            self.depend(conn, &jobs, &mut inserted, &holders).await?;
        }
        jobs.iter()
            .map(|new| enqueued(new, &mut inserted, &holders, &replaced))
            .collect()
    }

    /// Records the parents of the inserted jobs; those whose parents all ended already
    /// are pending at once, and show so.
    async fn depend(
        &self,
        conn: &impl ConnectionTrait,
        jobs: &[NewJob],
        inserted: &mut HashMap<JobId, Job>,
        holders: &HashMap<KeyOf, Job>,
    ) -> Result<(), JobError> {
        let batch: HashMap<JobId, JobId> = jobs
            .iter()
            .filter_map(|j| match inserted.contains_key(&j.id) {
                true => Some((j.id, j.id)),
                false => holders.get(&key_of(j)).map(|h| (j.id, h.id)),
            })
            .collect();
        let ids: HashSet<JobId> = inserted.keys().copied().collect();
        let released = self.record_dependencies(conn, jobs, &ids, &batch).await?;
        let now_pending: Vec<JobId> = released
            .ids
            .into_iter()
            .filter(|id| ids.contains(id))
            .collect();
        if !now_pending.is_empty() {
            let mut sql = self.sql();
            let in_ids = sql.in_ids(&now_pending);
            sql.push(&format!(
                "SELECT {} FROM jobs WHERE id{in_ids}",
                job_columns("")
            ));
            for job in self.fetch_jobs(conn, sql).await? {
                inserted.insert(job.id, job);
            }
        }
        Ok(())
    }

    /// Inserts `jobs`; those whose key is held come back with the holder. A key whose
    /// holder left its unique states between the insert and the lookup (it ended) is
    /// free again: those jobs are inserted anew, a few rounds at most.
    async fn insert_or_find_holders(
        &self,
        conn: &impl ConnectionTrait,
        mut todo: Vec<&NewJob>,
        parents: &HashSet<JobId>,
    ) -> Result<(HashMap<JobId, Job>, HashMap<KeyOf, Job>), JobError> {
        let mut inserted: HashMap<JobId, Job> = HashMap::with_capacity(todo.len());
        let mut holders = HashMap::new();
        for _ in 0..INSERT_ROUNDS {
            for chunk in todo.chunks(INSERT_CHUNK) {
                for job in self.insert_chunk(conn, chunk, parents).await? {
                    inserted.insert(job.id, job);
                }
            }
            todo.retain(|j| !inserted.contains_key(&j.id));
            if todo.is_empty() {
                break;
            }
            holders.extend(self.holders(conn, &todo).await?);
            todo.retain(|j| !holders.contains_key(&key_of(j)));
        }
        match todo.first() {
            None => Ok((inserted, holders)),
            Some(job) => Err(JobError::Unavailable(format!(
                "job {} kept colliding with holders of its unique key that ended at once; enqueue again",
                job.id
            ))),
        }
    }

    /// PostgreSQL: one NOTIFY per queue that got jobs, delivered when the transaction commits.
    async fn notify_queues(
        &self,
        conn: &impl ConnectionTrait,
        changed: &[&Job],
    ) -> Result<(), JobError> {
        let queues: HashSet<&str> = changed.iter().map(|j| j.queue.as_str()).collect();
        let queues: Vec<&str> = queues.into_iter().collect();
        self.notify_queue_names(conn, &queues).await
    }

    /// PostgreSQL: one NOTIFY per queue, delivered when the transaction of `conn` commits.
    pub(crate) async fn notify_queue_names(
        &self,
        conn: &impl ConnectionTrait,
        queues: &[&str],
    ) -> Result<(), JobError> {
        if self.dialect != Dialect::Postgres || queues.is_empty() {
            return Ok(());
        }
        let mut sql = self.sql();
        let channel = sql.bind(crate::wake::ENQUEUED_CHANNEL);
        let list = sql.bind_list(queues.iter().map(|q| (*q).to_owned()));
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
        parents: &HashSet<JobId>,
    ) -> Result<Vec<Job>, JobError> {
        let d = self.dialect;
        let mut sql = self.sql();
        let rows = jobs
            .iter()
            .map(|job| insert_row(d, job, parents.contains(&job.id)))
            .collect();
        let r = rows_cte(&mut sql, "r", INSERT_COLUMNS, rows);
        // A JSON null arrives as no value (see `rows_cte`): it is stored as JSON null.
        // `WHERE true` lets SQLite tell the SELECT from the upsert clause.
        sql.push(&format!(
            "WITH {r} \
             INSERT INTO jobs (id, tenant, queue, kind, args, state, priority, run_at, attempt, \
               max_attempts, timeout_ms, deadline, retention_ms, progress, errors, unique_key, \
               unique_states, concurrency_key, trace_id, metadata, created_at, updated_at, \
               parents, waiting_on, on_parent_failure, has_dependents, workflow_id, workflow_step) \
             SELECT id, tenant, queue, kind, COALESCE(args, 'null'), \
               CASE WHEN parents > 0 THEN '{waiting}' ELSE '{pending}' END, priority, \
               COALESCE(run_at, {due}), 0, max_attempts, timeout_ms, deadline, retention_ms, 0, \
               '[]', unique_key, unique_states, concurrency_key, trace_id, COALESCE(metadata, 'null'), {now}, {now}, \
               parents, parents, on_parent_failure, has_dependents, workflow_id, workflow_step \
             FROM r WHERE true \
             ON CONFLICT (tenant, unique_key) WHERE {unique} DO NOTHING RETURNING {columns}",
            unique = migration::m20261205_000008_workflows::UNIQUE_PREDICATE,
            columns = job_columns(""),
            due = d.now_plus_ms("delay_ms"),
            now = d.now(),
            pending = jobs_core::State::Pending,
            waiting = jobs_core::State::Waiting,
        ));
        self.fetch_jobs(db, sql).await
    }
}

/// What enqueueing `new` produced: the row it inserted, or the one holding its key
/// (as `OnConflict::Replace` left it: when several jobs of one call replace one holder,
/// the last one's arguments and run time win, and each of them says `replaced`).
fn enqueued(
    new: &NewJob,
    inserted: &mut HashMap<JobId, Job>,
    holders: &HashMap<KeyOf, Job>,
    replaced: &HashMap<JobId, Job>,
) -> Result<Enqueued, JobError> {
    if let Some(job) = inserted.remove(&new.id) {
        return Ok(Enqueued {
            job,
            duplicate: false,
            replaced: false,
        });
    }
    let holder = holders.get(&key_of(new)).ok_or_else(|| {
        JobError::Storage(format!(
            "job {} was neither inserted nor a duplicate",
            new.id
        ))
    })?;
    // Every duplicate of one holder shows it as the enqueue left it.
    let replacement = replaced.get(&holder.id);
    Ok(Enqueued {
        job: replacement.unwrap_or(holder).clone(),
        duplicate: true,
        replaced: replacement.is_some() && new.on_conflict == OnConflict::Replace,
    })
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
    ("concurrency_key", "text"),
    ("trace_id", "text"),
    ("metadata", "jsonb"),
    ("parents", "integer"),
    ("on_parent_failure", "text"),
    ("has_dependents", "boolean"),
    ("workflow_id", "uuid"),
    ("workflow_step", "text"),
];

/// `run_at` when given, else `delay_ms` (0 when neither) from the database clock.
fn insert_row(d: Dialect, job: &&NewJob, has_dependents: bool) -> Vec<sea_orm::Value> {
    let (workflow_id, workflow_step) = job
        .workflow
        .as_ref()
        .map(|(id, step)| (id.as_uuid(), step.clone()))
        .unzip();
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
            .map(|_| job.unique_states.bits())
            .into(),
        job.concurrency_key.clone().into(),
        job.trace_id.clone().into(),
        job.metadata.clone().into(),
        (job.depends_on.len() as i32).into(),
        job.on_parent_failure.as_str().into(),
        has_dependents.into(),
        workflow_id.into(),
        workflow_step.into(),
    ]
}

pub(super) fn validate_all(jobs: &[NewJob]) -> Result<(), JobError> {
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
