//! Reads: jobs by id, pages of a listing, and per-queue counts.

use std::{collections::HashMap, time::Duration};

use jobs_core::{
    Cursor, EndedInMinute, Job, JobError, JobId, ListFilter, Page, PageRequest, QueueStats, State,
};
use sea_orm::QueryResult;

use super::{SeaOrmStore, db_error, job_columns};
use crate::sql::{Dialect, Sql};

pub(super) async fn get(
    store: &SeaOrmStore,
    tenant: Option<&str>,
    id: JobId,
) -> Result<Job, JobError> {
    // By primary key alone, tenant compared here: with `AND tenant = $` a cached
    // generic plan on PostgreSQL may walk a tenant index instead.
    get_many(store, &[id])
        .await?
        .remove(&id)
        .filter(|job| job.visible_to(tenant))
        .ok_or(JobError::NotFound(id))
}

pub(super) async fn get_many(
    store: &SeaOrmStore,
    ids: &[JobId],
) -> Result<HashMap<JobId, Job>, JobError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sql = store.sql();
    let ids = sql.in_ids(ids);
    sql.push(&format!(
        "SELECT {} FROM jobs WHERE id{ids}",
        job_columns("")
    ));
    let jobs = store.fetch_jobs(&store.db, sql).await?;
    Ok(jobs.into_iter().map(|job| (job.id, job)).collect())
}

pub(super) async fn list(
    store: &SeaOrmStore,
    filter: &ListFilter,
    page: &PageRequest,
) -> Result<Page, JobError> {
    page.validate()?;
    filter.validate()?;
    let sql = list_sql(store.dialect, filter, page);
    let mut items = store.fetch_jobs(&store.db, sql).await?;
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

const NEWEST_FIRST: &str = "ORDER BY created_at DESC, id DESC";

/// The statement of a listing page, and one job more to tell whether another page
/// follows. A tenant's listing of every state reads the index `(tenant, state,
/// created_at, id)` once per state and merges the newest of each: there is no index on
/// `(tenant, created_at, id)`, since each index costs every insert and state change a
/// write. On PostgreSQL that index leaves out running jobs (claims write no entry):
/// their member reads the lease index and sorts them. Across tenants no index orders the
/// jobs: one query, sorted.
pub(super) fn list_sql(dialect: Dialect, filter: &ListFilter, page: &PageRequest) -> Sql {
    let mut sql = Sql::new(dialect);
    let columns = job_columns("");
    let wanted = page.limit as i64 + 1;
    let offset = page.offset.min(i64::MAX as u64) as i64;
    let from = if merges_states(filter) {
        let newest = newest_of_each_state(&mut sql, filter, page, wanted.saturating_add(offset));
        format!("({newest}) AS listed")
    } else {
        format!("jobs WHERE {}", list_conditions(&mut sql, filter, page))
    };
    let limit = sql.bind(wanted);
    let offset = sql.bind(offset);
    sql.push(&format!(
        "SELECT {columns} FROM {from} {NEWEST_FIRST} LIMIT {limit} OFFSET {offset}"
    ));
    sql
}

/// Whether the listing merges the newest of each state: a tenant's listing of every
/// state, unless it searches for a job id, which the primary key finds in any state.
fn merges_states(filter: &ListFilter) -> bool {
    filter.tenant.is_some() && filter.state.is_none() && searched_id(filter).is_none()
}

/// The `per_state` newest jobs of each state that the filter (with a tenant) matches,
/// one `UNION ALL` member per state, each a range of the per-state index.
fn newest_of_each_state(
    sql: &mut Sql,
    filter: &ListFilter,
    page: &PageRequest,
    per_state: i64,
) -> String {
    let members: Vec<String> = State::ALL
        .iter()
        .map(|state| {
            let conditions = list_conditions(sql, &filter.clone().state(*state), page);
            let limit = sql.bind(per_state);
            // Wrapped: SQLite takes no ORDER BY or LIMIT on a member of a UNION.
            format!(
                "SELECT * FROM (SELECT {} FROM jobs WHERE {conditions} {NEWEST_FIRST} \
                 LIMIT {limit}) AS {state}_jobs",
                job_columns("")
            )
        })
        .collect();
    members.join(" UNION ALL ")
}

/// The WHERE of a listing: the filter's fields, then the position after the cursor.
fn list_conditions(sql: &mut Sql, filter: &ListFilter, page: &PageRequest) -> String {
    let mut conditions = filter_conditions(sql, filter);
    if let Some(cursor) = page.cursor {
        // `created_at <= at` alone bounds the index range where the page starts; the
        // rest, an OR, only filters.
        let at = [(); 3].map(|_| sql.bind_time(Some(cursor.created_at)));
        let id = sql.bind(cursor.id.as_uuid());
        conditions.push(format!(
            "created_at <= {} AND (created_at < {} OR (created_at = {} AND id < {id}))",
            at[0], at[1], at[2]
        ));
    }
    conditions.join(" AND ")
}

/// The conditions of the filter's fields (at least one, `1 = 1`), for any statement on
/// `jobs`: listings and bulk actions select the same jobs.
pub(super) fn filter_conditions(sql: &mut Sql, filter: &ListFilter) -> Vec<String> {
    let mut conditions = vec!["1 = 1".to_owned()];
    // A literal, not a parameter: PostgreSQL's planner proves from it that the listing
    // index, which leaves out running jobs, holds the rows (migration 15).
    if let Some(state) = filter.state {
        conditions.push(format!("state = '{state}'"));
    }
    let equals = [
        ("tenant", filter.tenant.clone()),
        ("kind", filter.kind.clone()),
        ("queue", filter.queue.clone()),
    ];
    for (column, value) in equals {
        if let Some(value) = value {
            conditions.push(format!("{column} = {}", sql.bind(value)));
        }
    }
    if let Some(kind) = &filter.error_kind {
        let last = sql.dialect().last_error_kind("errors");
        conditions.push(format!("{last} = {}", sql.bind(kind.clone())));
    }
    if let Some(from) = filter.created_from {
        conditions.push(format!("created_at >= {}", sql.bind_time(Some(from))));
    }
    if let Some(to) = filter.created_to {
        conditions.push(format!("created_at < {}", sql.bind_time(Some(to))));
    }
    if let Some(text) = &filter.id_or_key {
        // A UUID is looked up by primary key; other text is a unique key, compared
        // exactly while walking the tenant's newest-first ranges of the per-state
        // index (no index on keys of every state: each would cost every claim and
        // outcome a write).
        match searched_id(filter) {
            Some(id) => conditions.push(format!("id = {}", sql.bind(id))),
            None => conditions.push(format!("unique_key = {}", sql.bind(text.clone()))),
        }
    }
    conditions
}

/// The job id the filter searches for, when its `id_or_key` is one.
fn searched_id(filter: &ListFilter) -> Option<uuid::Uuid> {
    filter.id_or_key.as_deref()?.parse().ok()
}

/// Jobs of the tenant and queue ended per minute since `since`, by end state; reads the
/// index `jobs_tenant_queue_finished_idx`.
pub(super) async fn ended_per_minute(
    store: &SeaOrmStore,
    tenant: &str,
    queue: &str,
    since: time::OffsetDateTime,
) -> Result<Vec<EndedInMinute>, JobError> {
    let since = since
        .replace_second(0)
        .unwrap_or(since)
        .replace_nanosecond(0)
        .unwrap_or(since);
    let mut sql = store.sql();
    let tenant = sql.bind(tenant.to_owned());
    let queue = sql.bind(queue.to_owned());
    let since = sql.bind_time(Some(since));
    let minute = store.dialect.minute_text("finished_at");
    sql.push(&format!(
        "SELECT {minute} AS minute, state, COUNT(*) AS n FROM jobs \
         WHERE tenant = {tenant} AND queue = {queue} AND finished_at IS NOT NULL \
           AND finished_at >= {since} \
         GROUP BY {minute}, state ORDER BY minute, state"
    ));
    store.query(sql).await?.iter().map(ended_row).collect()
}

fn ended_row(row: &QueryResult) -> Result<EndedInMinute, JobError> {
    const MINUTE: &[time::format_description::BorrowedFormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let minute: String = row.try_get("", "minute").map_err(db_error)?;
    let minute = time::PrimitiveDateTime::parse(&minute, MINUTE)
        .map_err(|e| JobError::Storage(format!("minute {minute:?}: {e}")))?
        .assume_utc();
    let state = row
        .try_get::<String>("", "state")
        .map_err(db_error)?
        .parse()?;
    let count: i64 = row.try_get("", "n").map_err(db_error)?;
    Ok(EndedInMinute {
        minute,
        state,
        count: count as u64,
    })
}

pub(super) async fn queue_stats(
    store: &SeaOrmStore,
    tenant: Option<&str>,
) -> Result<Vec<QueueStats>, JobError> {
    let mut sql = store.sql();
    let filter = match tenant {
        Some(t) => format!("WHERE tenant = {}", sql.bind(t.to_owned())),
        None => String::new(),
    };
    // The oldest due pending job per queue; its age is measured by the database clock.
    sql.push(&format!(
        "SELECT queue, state, COUNT(*) AS n, \
           MIN(CASE WHEN state = '{pending}' AND run_at <= {now} THEN run_at END) AS oldest, \
           {now} AS now FROM jobs {filter} GROUP BY queue, state ORDER BY queue",
        now = store.dialect.now(),
        pending = State::Pending,
    ));
    let rows = store.query(sql).await?;
    let mut stats: Vec<QueueStats> = Vec::new();
    for row in rows {
        add_stats_row(&mut stats, &row)?;
    }
    for queue in super::queues::paused_queues(store, tenant).await? {
        match stats.iter_mut().find(|s| s.queue == queue) {
            Some(entry) => entry.paused = true,
            None => {
                let mut entry = QueueStats::empty(queue);
                entry.paused = true;
                stats.push(entry);
            }
        }
    }
    for (queue, limits, everyone, throttled) in
        super::budgets::limited_queues_view(store, tenant).await?
    {
        let index = match stats.iter().position(|s| s.queue == queue) {
            Some(index) => index,
            None => {
                stats.push(QueueStats::empty(queue));
                stats.len() - 1
            }
        };
        let entry = &mut stats[index];
        entry.limits = limits;
        entry.all_tenants_limits = everyone;
        entry.throttled = throttled;
    }
    stats.sort_by(|a, b| a.queue.cmp(&b.queue));
    Ok(stats)
}

/// One (queue, state) row into `stats`, which the query orders by queue.
fn add_stats_row(stats: &mut Vec<QueueStats>, row: &QueryResult) -> Result<(), JobError> {
    let queue: String = row.try_get("", "queue").map_err(db_error)?;
    let state: State = row
        .try_get::<String>("", "state")
        .map_err(db_error)?
        .parse()?;
    let count: i64 = row.try_get("", "n").map_err(db_error)?;
    let oldest: Option<time::OffsetDateTime> = row.try_get("", "oldest").map_err(db_error)?;
    let now: time::OffsetDateTime = row.try_get("", "now").map_err(db_error)?;
    if stats.last().is_none_or(|s| s.queue != queue) {
        stats.push(QueueStats::empty(queue));
    }
    let entry = stats.last_mut().expect("just pushed");
    entry.counts.insert(state, count as u64);
    if let Some(oldest) = oldest {
        entry.oldest_pending_age = Duration::try_from(now - oldest).ok();
    }
    Ok(())
}
