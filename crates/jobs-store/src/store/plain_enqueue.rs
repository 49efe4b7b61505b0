//! Enqueue of batches that need none of what only the general INSERT does (no unique
//! key to check with ON CONFLICT, no parents to record), on PostgreSQL. Their rows are
//! complete when they leave this process: ids are made here and every time derives from
//! the transaction's `now()`, so nothing comes back but that clock, and the jobs are
//! built here from what was sent (no RETURNING, no row decoding).
//!
//! Large batches go through `COPY ... FROM STDIN` (text format); small ones, a single
//! job above all, through one INSERT from one array per column, which also sends the
//! wake-up: one round trip, where COPY needs five (begin, clock, copy, notify, commit).

use jobs_core::{Enqueued, Job, JobError, NewJob, State};
use sea_orm::sqlx;
use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};

use super::{SeaOrmStore, errors::sqlx_error, millis};

/// Rows per COPY data message.
const ROWS_PER_SEND: usize = 1_000;

/// The columns sent; the others take their defaults or stay NULL (a new job has no
/// lease, result, unique key or files).
const COLUMNS: &str = "id, tenant, queue, kind, args, state, priority, run_at, attempt, \
    max_attempts, timeout_ms, deadline, retention_ms, progress, errors, concurrency_key, \
    trace_id, metadata, created_at, updated_at, on_parent_failure, workflow_id, workflow_step";

/// Batches of at least this many jobs go through COPY.
const COPY_FROM: usize = 100;

/// Whether every job of the batch can go in here.
pub(super) fn applies(jobs: &[NewJob]) -> bool {
    jobs.iter()
        .all(|job| job.unique_key.is_none() && job.depends_on.is_empty())
}

/// Inserts `jobs` (which `applies` to) and wakes their queues' listeners at commit.
pub(super) async fn enqueue(
    store: &SeaOrmStore,
    jobs: Vec<NewJob>,
) -> Result<Vec<Enqueued>, JobError> {
    let mut queues: Vec<String> = jobs.iter().map(|j| j.queue.clone()).collect();
    queues.sort_unstable();
    queues.dedup();
    let created = if jobs.len() >= COPY_FROM {
        copy(store, jobs, &queues).await?
    } else {
        let now = insert(store, &jobs, &queues).await?;
        jobs.into_iter().map(|new| pending(new, now)).collect()
    };
    Ok(created
        .into_iter()
        .map(|job| Enqueued {
            job,
            duplicate: false,
            replaced: false,
        })
        .collect())
}

/// One transaction: the clock, the rows, the wake-ups, commit.
async fn copy(
    store: &SeaOrmStore,
    jobs: Vec<NewJob>,
    queues: &[String],
) -> Result<Vec<Job>, JobError> {
    let pool = store.db.get_postgres_connection_pool();
    let mut tx = pool.begin().await.map_err(sqlx_error)?;
    let now: OffsetDateTime = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await
        .map_err(sqlx_error)?;
    let created: Vec<Job> = jobs.into_iter().map(|new| pending(new, now)).collect();
    let mut copy = tx
        .copy_in_raw(&format!("COPY jobs ({COLUMNS}) FROM STDIN"))
        .await
        .map_err(sqlx_error)?;
    let mut data = Vec::new();
    for chunk in created.chunks(ROWS_PER_SEND) {
        data.clear();
        for job in chunk {
            write_row(&mut data, job);
        }
        copy.send(data.as_slice()).await.map_err(sqlx_error)?;
    }
    copy.finish().await.map_err(sqlx_error)?;
    sqlx::query("SELECT pg_notify($1, q) FROM unnest($2::text[]) AS q")
        .bind(crate::wake::ENQUEUED_CHANNEL)
        .bind(queues)
        .execute(&mut *tx)
        .await
        .map_err(sqlx_error)?;
    tx.commit().await.map_err(sqlx_error)?;
    Ok(created)
}

/// One statement, rows and wake-ups; returns the clock the rows were stamped with.
async fn insert(
    store: &SeaOrmStore,
    jobs: &[NewJob],
    queues: &[String],
) -> Result<OffsetDateTime, JobError> {
    let c = Columns::of(jobs);
    sqlx::query_scalar(INSERT)
        .bind(c.id)
        .bind(c.tenant)
        .bind(c.queue)
        .bind(c.kind)
        .bind(c.args)
        .bind(c.priority)
        .bind(c.run_at)
        .bind(c.delay_ms)
        .bind(c.max_attempts)
        .bind(c.timeout_ms)
        .bind(c.deadline)
        .bind(c.retention_ms)
        .bind(c.concurrency_key)
        .bind(c.trace_id)
        .bind(c.metadata)
        .bind(c.on_parent_failure)
        .bind(c.workflow_id)
        .bind(c.workflow_step)
        .bind(crate::wake::ENQUEUED_CHANNEL)
        .bind(queues)
        .fetch_one(store.db.get_postgres_connection_pool())
        .await
        .map_err(sqlx_error)
}

/// The rows of `Columns`, as `pending` builds them; the data-modifying CTE runs whether
/// or not it is read, and `count` makes every queue's `pg_notify` run.
const INSERT: &str = "WITH ins AS (INSERT INTO jobs (id, tenant, queue, kind, args, state, \
    priority, run_at, attempt, max_attempts, timeout_ms, deadline, retention_ms, progress, errors, \
    concurrency_key, trace_id, metadata, created_at, updated_at, on_parent_failure, workflow_id, \
    workflow_step) \
  SELECT id, tenant, queue, kind, args, 'pending', priority, \
    COALESCE(run_at, now() + delay_ms * interval '1 millisecond'), 0, max_attempts, timeout_ms, \
    deadline, retention_ms, 0, '[]', concurrency_key, trace_id, metadata, now(), now(), \
    on_parent_failure, workflow_id, workflow_step \
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::int2[], \
    $7::timestamptz[], $8::int8[], $9::int4[], $10::int8[], $11::timestamptz[], $12::int8[], \
    $13::text[], $14::text[], $15::jsonb[], $16::text[], $17::uuid[], $18::text[]) \
    AS r(id, tenant, queue, kind, args, priority, run_at, delay_ms, max_attempts, timeout_ms, \
    deadline, retention_ms, concurrency_key, trace_id, metadata, on_parent_failure, workflow_id, \
    workflow_step)) \
SELECT now() FROM (SELECT count(pg_notify($19, q)) FROM unnest($20::text[]) AS q) AS woke";

/// The values of `INSERT`, one vector per column.
#[derive(Default)]
struct Columns {
    id: Vec<uuid::Uuid>,
    tenant: Vec<String>,
    queue: Vec<String>,
    kind: Vec<String>,
    args: Vec<serde_json::Value>,
    priority: Vec<i16>,
    run_at: Vec<Option<OffsetDateTime>>,
    delay_ms: Vec<i64>,
    max_attempts: Vec<i32>,
    timeout_ms: Vec<Option<i64>>,
    deadline: Vec<Option<OffsetDateTime>>,
    retention_ms: Vec<i64>,
    concurrency_key: Vec<Option<String>>,
    trace_id: Vec<Option<String>>,
    metadata: Vec<serde_json::Value>,
    on_parent_failure: Vec<&'static str>,
    workflow_id: Vec<Option<uuid::Uuid>>,
    workflow_step: Vec<Option<String>>,
}

impl Columns {
    fn of(jobs: &[NewJob]) -> Self {
        let mut c = Self::default();
        for job in jobs {
            c.id.push(job.id.as_uuid());
            c.tenant.push(job.tenant.clone());
            c.queue.push(job.queue.clone());
            c.kind.push(job.kind.clone());
            c.args.push(job.args.clone());
            c.priority.push(job.priority);
            c.run_at.push(job.run_at.map(stored_time));
            c.delay_ms.push(job.delay.map(millis).unwrap_or(0));
            c.max_attempts.push(job.max_attempts);
            c.timeout_ms.push(job.timeout.map(millis));
            c.deadline.push(job.deadline.map(stored_time));
            c.retention_ms.push(millis(job.retention));
            c.concurrency_key.push(job.concurrency_key.clone());
            c.trace_id.push(job.trace_id.clone());
            c.metadata.push(job.metadata.clone());
            c.on_parent_failure.push(job.on_parent_failure.as_str());
            c.workflow_id
                .push(job.workflow.as_ref().map(|(id, _)| id.as_uuid()));
            c.workflow_step
                .push(job.workflow.as_ref().map(|(_, s)| s.clone()));
        }
        c
    }
}

/// The row `new` becomes, as the database will hold it. Times are cut to microseconds,
/// the database's precision, before they are sent, so both sides agree.
fn pending(new: NewJob, now: OffsetDateTime) -> Job {
    let run_at = match new.run_at {
        Some(at) => stored_time(at),
        None => now + new.delay.unwrap_or_default(),
    };
    let (workflow_id, workflow_step) = new.workflow.unzip();
    Job {
        id: new.id,
        tenant: new.tenant,
        queue: new.queue,
        kind: new.kind,
        args: new.args,
        state: State::Pending,
        priority: new.priority,
        run_at,
        attempt: 0,
        max_attempts: new.max_attempts,
        timeout_ms: new.timeout.map(millis),
        deadline: new.deadline.map(stored_time),
        retention_ms: millis(new.retention),
        progress: 0.0,
        stage: None,
        result: None,
        item_errors: None,
        errors: Vec::new(),
        worker_id: None,
        lease_token: None,
        lease_expires_at: None,
        cancel_requested_at: None,
        unique_key: None,
        unique_states: None,
        concurrency_key: new.concurrency_key,
        trace_id: new.trace_id,
        metadata: new.metadata,
        parents: 0,
        waiting_on: 0,
        on_parent_failure: new.on_parent_failure,
        workflow_id,
        workflow_step,
        has_files: false,
        created_at: now,
        updated_at: now,
        started_at: None,
        finished_at: None,
        expires_at: None,
    }
}

fn stored_time(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(UtcOffset::UTC);
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at)
}

/// One line of COPY's text format, in the order of `COLUMNS`.
fn write_row(out: &mut Vec<u8>, job: &Job) {
    let mut row = Row(out);
    row.text(&job.id.as_uuid().to_string());
    row.text(&job.tenant);
    row.text(&job.queue);
    row.text(&job.kind);
    row.json(&job.args);
    row.text(&job.state.to_string());
    row.text(&job.priority.to_string());
    row.time(Some(job.run_at));
    row.text("0");
    row.text(&job.max_attempts.to_string());
    row.optional(job.timeout_ms.map(|ms| ms.to_string()).as_deref());
    row.time(job.deadline);
    row.text(&job.retention_ms.to_string());
    row.text("0");
    row.text("[]");
    row.optional(job.concurrency_key.as_deref());
    row.optional(job.trace_id.as_deref());
    row.json(&job.metadata);
    row.time(Some(job.created_at));
    row.time(Some(job.updated_at));
    row.text(job.on_parent_failure.as_str());
    row.optional(
        job.workflow_id
            .map(|id| id.as_uuid().to_string())
            .as_deref(),
    );
    row.last(job.workflow_step.as_deref());
}

/// Fields of one line: tab-separated, `\N` for NULL, backslash escapes for the
/// characters the format gives a meaning (NUL never reaches here: jobs are validated).
struct Row<'a>(&'a mut Vec<u8>);

impl Row<'_> {
    fn text(&mut self, value: &str) {
        self.value(Some(value));
        self.0.push(b'\t');
    }

    fn optional(&mut self, value: Option<&str>) {
        self.value(value);
        self.0.push(b'\t');
    }

    fn json(&mut self, value: &serde_json::Value) {
        self.text(&value.to_string());
    }

    fn time(&mut self, at: Option<OffsetDateTime>) {
        let text = at.map(|at| at.format(&Rfc3339).unwrap_or_default());
        self.optional(text.as_deref());
    }

    fn last(&mut self, value: Option<&str>) {
        self.value(value);
        self.0.push(b'\n');
    }

    fn value(&mut self, value: Option<&str>) {
        let Some(value) = value else {
            self.0.extend_from_slice(b"\\N");
            return;
        };
        for b in value.bytes() {
            match b {
                b'\\' => self.0.extend_from_slice(b"\\\\"),
                b'\n' => self.0.extend_from_slice(b"\\n"),
                b'\r' => self.0.extend_from_slice(b"\\r"),
                b'\t' => self.0.extend_from_slice(b"\\t"),
                _ => self.0.push(b),
            }
        }
    }
}
