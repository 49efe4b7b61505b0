//! Bulk actions (retry, cancel, delete every job a filter matches) in bounded batches.
//!
//! Each round picks at most `BULK_BATCH` ids in id order after a cursor, then moves them
//! in one statement that re-checks the filter and the source states: a job a worker
//! claimed, or another request retried, since it was picked is left alone, never half
//! moved. The cursor only advances and stops at the last id that matched when the
//! request began, so the loop ends however busy the table is.

use std::collections::HashSet;

use jobs_core::{BulkAction, BulkRequest, BulkResult, JobError};
use sea_orm::DbErr;
use uuid::Uuid;

use super::{
    SeaOrmStore,
    control::{cancel_set, retry_set},
    db_error,
    errors::unique_violation,
    read::filter_conditions,
};
use crate::sql::{Sql, state_list};

/// Most rows one statement of a bulk action touches.
pub(crate) const BULK_BATCH: usize = 1_000;

pub(super) async fn bulk(
    store: &SeaOrmStore,
    request: &BulkRequest,
) -> Result<BulkResult, JobError> {
    request.validate()?;
    if request.dry_run {
        let matched = count(store, request).await?;
        return Ok(BulkResult {
            matched,
            ..BulkResult::default()
        });
    }
    let mut result = BulkResult::default();
    let Some(last) = pick(store, request, None, None).await?.pop() else {
        return Ok(result);
    };
    let mut after = None;
    loop {
        let ids = pick(store, request, after, Some(last)).await?;
        let Some(&tail) = ids.last() else { break };
        after = Some(tail);
        result.matched += ids.len() as u64;
        let (changed, statements) = apply(store, request, &ids).await?;
        result.changed += changed;
        result.batches += statements;
        if ids.len() < BULK_BATCH {
            break;
        }
    }
    Ok(result)
}

/// `WHERE` of every statement of the request: the filter and the action's source states.
fn matching(sql: &mut Sql, request: &BulkRequest) -> String {
    let conditions = filter_conditions(sql, &request.filter).join(" AND ");
    let sources = state_list(&request.action.sources());
    format!("{conditions} AND state IN ({sources})")
}

async fn count(store: &SeaOrmStore, request: &BulkRequest) -> Result<u64, JobError> {
    let mut sql = store.sql();
    let matching = matching(&mut sql, request);
    sql.push(&format!("SELECT COUNT(*) AS n FROM jobs WHERE {matching}"));
    let rows = store.query(sql).await?;
    let n: i64 = match rows.first() {
        Some(row) => row.try_get("", "n").map_err(db_error)?,
        None => 0,
    };
    Ok(n as u64)
}

/// The next ids that match, in id order, after `after` and up to `last`. Without
/// `last`: the greatest matching id alone (where the loop stops).
async fn pick(
    store: &SeaOrmStore,
    request: &BulkRequest,
    after: Option<Uuid>,
    last: Option<Uuid>,
) -> Result<Vec<Uuid>, JobError> {
    let mut sql = store.sql();
    let mut conditions = matching(&mut sql, request);
    if let Some(after) = after {
        conditions.push_str(&format!(" AND id > {}", sql.bind(after)));
    }
    let (order, limit) = match last {
        Some(last) => {
            conditions.push_str(&format!(" AND id <= {}", sql.bind(last)));
            ("ASC", BULK_BATCH)
        }
        None => ("DESC", 1),
    };
    sql.push(&format!(
        "SELECT id FROM jobs WHERE {conditions} ORDER BY id {order} LIMIT {limit}"
    ));
    let rows = store.query(sql).await?;
    rows.iter()
        .map(|row| row.try_get::<Uuid>("", "id").map_err(db_error))
        .collect()
}

/// Moves one batch in one statement; if a unique index refuses it (a retried job's key
/// is held by another job now), row by row, skipping the rows refused. Returns how many
/// jobs moved and in how many statements.
async fn apply(
    store: &SeaOrmStore,
    request: &BulkRequest,
    ids: &[Uuid],
) -> Result<(u64, u64), JobError> {
    match apply_statement(store, request, ids).await {
        Ok(moved) => Ok((moved, 1)),
        Err(e) if unique_violation(&e) => {
            let mut moved = 0;
            for id in ids {
                match apply_statement(store, request, std::slice::from_ref(id)).await {
                    Ok(n) => moved += n,
                    Err(e) if unique_violation(&e) => {
                        tracing::info!(job_id = %id, action = %request.action, "skipped: its unique key is held by another job");
                    }
                    Err(e) => return Err(db_error(e)),
                }
            }
            Ok((moved, ids.len() as u64))
        }
        Err(e) => Err(db_error(e)),
    }
}

/// One statement over `ids`, conditional on each still matching; then wakes workers of
/// the queues that got pending jobs and this process's watchers of the moved jobs.
async fn apply_statement(
    store: &SeaOrmStore,
    request: &BulkRequest,
    ids: &[Uuid],
) -> Result<u64, DbErr> {
    let d = store.dialect();
    let mut sql = store.sql();
    let matching = matching(&mut sql, request);
    let in_ids = sql.in_uuids(ids.iter().copied());
    let target =
        format!("WHERE id{in_ids} AND {matching} RETURNING id, queue, state, has_dependents");
    sql.push(&match request.action {
        BulkAction::Retry => format!("UPDATE jobs SET {} {target}", retry_set(d)),
        BulkAction::Cancel => format!("UPDATE jobs SET {} {target}", cancel_set(d)),
        BulkAction::Delete => format!("DELETE FROM jobs {target}"),
    });
    let moved = store
        .end_jobs(sql, request.action == BulkAction::Delete)
        .await?;
    if request.action == BulkAction::Retry {
        let queues: HashSet<&str> = moved.iter().map(|m| m.queue.as_str()).collect();
        let names: Vec<&str> = queues.into_iter().collect();
        store.wake_everywhere(&names).await;
    }
    Ok(moved.len() as u64)
}
