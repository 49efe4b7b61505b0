//! What operators do to one job: cancel it, or run an ended job again.

use jobs_core::{BulkAction, Job, JobError, JobId, State};

use super::{SeaOrmStore, db_error, errors::unique_violation, job_columns, jobs_of, read};
use crate::sql::{Dialect, state_list};

/// Pending jobs are cancelled at once; running ones get a cancel request, which their
/// worker (or the rescue of their lease) turns into the end.
pub(super) async fn cancel(
    store: &SeaOrmStore,
    tenant: Option<&str>,
    id: JobId,
) -> Result<Job, JobError> {
    read::get(store, tenant, id).await?;
    let mut sql = store.sql();
    let clause = format!(" WHERE id = {}", sql.bind(id.as_uuid()));
    sql.push(&format!(
        "UPDATE jobs SET {set}{clause} AND state IN ({from}) \
         RETURNING id, state, queue, has_dependents",
        set = cancel_set(store.dialect),
        from = state_list(&BulkAction::Cancel.sources()),
    ));
    let moved = store.end_jobs(sql, false).await.map_err(db_error)?;
    let rows = match moved.is_empty() {
        true => Vec::new(),
        false => vec![read::get(store, None, id).await?],
    };
    move_one(store, rows, id, State::Cancelled).await
}

/// From attempt 0, as if new: only an ended job, never one still running.
pub(super) async fn retry(
    store: &SeaOrmStore,
    tenant: Option<&str>,
    id: JobId,
) -> Result<Job, JobError> {
    read::get(store, tenant, id).await?;
    let mut sql = store.sql();
    let clause = format!(" WHERE id = {}", sql.bind(id.as_uuid()));
    sql.push(&format!(
        "UPDATE jobs SET {set}{clause} AND state IN ({from}) RETURNING {columns}",
        set = retry_set(store.dialect),
        columns = job_columns(""),
        from = state_list(&BulkAction::Retry.sources()),
    ));
    let rows = match store.fetch_models(&store.db, sql).await {
        Err(e) if unique_violation(&e) => return Err(key_taken(store, id).await),
        rows => rows.map_err(db_error)?,
    };
    let job = move_one(store, jobs_of(rows)?, id, State::Pending).await?;
    store.changed([id]);
    Ok(job)
}

/// Another job took the unique key while this one had ended, so the index refuses this
/// one back into pending: `Duplicate` naming that job.
async fn key_taken(store: &SeaOrmStore, id: JobId) -> JobError {
    let job = match read::get(store, None, id).await {
        Ok(job) => job,
        Err(e) => return e,
    };
    match store.other_holder(&job).await {
        Ok(Some(holder)) => JobError::Duplicate {
            existing: holder.id,
        },
        // The holder ended in between: the key is free again.
        Ok(None) => JobError::Unavailable(format!(
            "the unique key of job {id} was held by another job, which has just ended; retry again"
        )),
        Err(e) => e,
    }
}

/// The SET of a cancel (one job or many): pending jobs end `cancelled` now; running ones
/// get a cancel request, which their worker (or the rescue of their lease) turns into
/// the end.
pub(super) fn cancel_set(d: Dialect) -> String {
    format!(
        "state = CASE WHEN state IN ('{pending}', '{waiting}') THEN '{cancelled}' ELSE state END, \
           cancel_requested_at = CASE WHEN state = '{running}' \
             THEN COALESCE(cancel_requested_at, {now}) ELSE cancel_requested_at END, \
           finished_at = CASE WHEN state IN ('{pending}', '{waiting}') THEN {now} ELSE finished_at END, \
           expires_at = CASE WHEN state IN ('{pending}', '{waiting}') THEN {expiry} ELSE expires_at END, \
           updated_at = {now}",
        pending = State::Pending,
        waiting = State::Waiting,
        running = State::Running,
        cancelled = State::Cancelled,
        now = d.now(),
        expiry = d.now_plus_ms("retention_ms"),
    )
}

/// The SET of a retry (one job or many): pending from attempt 0, due now, as if new,
/// with no trace of the last attempt but its error history; waiting instead while a
/// parent it requires has not ended as required.
pub(super) fn retry_set(d: Dialect) -> String {
    format!(
        "state = CASE WHEN waiting_on > 0 THEN '{waiting}' ELSE '{pending}' END, attempt = 0, run_at = {now}, progress = 0, \
           stage = NULL, result = NULL, item_errors = NULL, lease_expires_at = NULL, \
           lease_token = NULL, cancel_requested_at = NULL, started_at = NULL, finished_at = NULL, \
           expires_at = NULL, updated_at = {now}",
        pending = State::Pending,
        waiting = State::Waiting,
        now = d.now(),
    )
}

/// Runs an update that targets one job the caller may see (checked by `get` first:
/// a job never changes tenant); if no row matched, the job moved to a state this
/// move cannot start from.
async fn move_one(
    store: &SeaOrmStore,
    mut rows: Vec<Job>,
    id: JobId,
    to: State,
) -> Result<Job, JobError> {
    if let Some(job) = rows.pop() {
        return Ok(job);
    }
    let current = read::get(store, None, id).await?;
    current.state.move_to(to)?;
    // Legal now but not when the update ran: the job moved in between.
    Err(JobError::IllegalTransition {
        from: current.state,
        to,
    })
}
