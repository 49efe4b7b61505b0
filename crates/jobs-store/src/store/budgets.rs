//! What limits leave: how many more jobs may start now per queue, tenant and key, from
//! the queues' limit rows, their running jobs and the start log of rate limits.

use std::collections::{HashMap, HashSet};

use jobs_core::{Job, JobError, QueueLimits, QueueScope, State};
use sea_orm::ConnectionTrait;

use super::{
    SeaOrmStore, db_error,
    limits::{LIMIT_COLUMNS, limited_row, limits_of},
    millis,
};
use crate::sql::{Dialect, rows_cte};

/// The limits of one queue in one scope (`*` or a tenant), as locked by a claim.
pub(super) struct Setting {
    pub(super) scope: String,
    pub(super) queue: String,
    pub(super) limits: QueueLimits,
}

/// How a queue is being used: running jobs and recent starts, per tenant and key.
#[derive(Default)]
pub(super) struct Usage {
    running: Vec<(Group, u64)>,
    /// Starts with their age in milliseconds.
    starts: Vec<(Group, i64, u64)>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Group {
    pub(super) queue: String,
    pub(super) tenant: String,
    pub(super) key: Option<String>,
}

/// The limit rows of `queues` (or every queue) (for every tenant, and `tenant`'s or, for `None`, every
/// tenant's own). With `lock`, they stay locked until the transaction of `conn` ends, in
/// one order in every claim (so two claims never wait on each other crosswise); SQLite
/// has one writer, and a write to the rows takes its lock for the whole transaction.
pub(super) async fn read_settings(
    store: &SeaOrmStore,
    conn: &impl ConnectionTrait,
    queues: Option<&[String]>,
    tenant: Option<&str>,
    lock: bool,
) -> Result<Vec<Setting>, JobError> {
    let mut sql = store.sql();
    let mut scopes = String::new();
    if let Some(queues) = queues {
        scopes = format!(" AND name IN ({})", sql.bind_list(queues.iter().cloned()));
    }
    if let Some(tenant) = tenant {
        scopes += &format!(
            " AND tenant IN ('{}', {})",
            QueueScope::ALL_TENANTS,
            sql.bind(tenant.to_owned())
        );
    }
    let rows = format!("{}{scopes}", limited_row(""));
    let columns = LIMIT_COLUMNS.join(", ");
    sql.push(&match (lock, store.dialect) {
        (false, _) => format!("SELECT tenant, name, {columns} FROM jobs_queues WHERE {rows}"),
        (true, Dialect::Postgres) => format!(
            "SELECT tenant, name, {columns} FROM jobs_queues WHERE {rows} \
             ORDER BY tenant, name FOR UPDATE"
        ),
        (true, Dialect::Sqlite) => format!(
            "UPDATE jobs_queues SET tenant = tenant WHERE {rows} RETURNING tenant, name, {columns}"
        ),
    });
    let rows = conn.query_all_raw(sql.build()).await.map_err(db_error)?;
    rows.iter()
        .map(|row| {
            Ok(Setting {
                scope: row.try_get("", "tenant").map_err(db_error)?,
                queue: row.try_get("", "name").map_err(db_error)?,
                limits: limits_of(row)?,
            })
        })
        .collect()
}

/// Running jobs of the queues with concurrency limits, and the starts within the longest
/// rate period of those with rate limits, grouped by tenant and key.
pub(super) async fn read_usage(
    store: &SeaOrmStore,
    conn: &impl ConnectionTrait,
    settings: &[Setting],
) -> Result<Usage, JobError> {
    let mut usage = Usage::default();
    let counted: HashSet<&str> = settings
        .iter()
        .filter(|s| s.limits.concurrency.is_some() || s.limits.key_concurrency.is_some())
        .map(|s| s.queue.as_str())
        .collect();
    if !counted.is_empty() {
        let mut sql = store.sql();
        let queues = sql.bind_list(counted.iter().map(|q| q.to_string()));
        sql.push(&format!(
            "SELECT queue, tenant, concurrency_key, COUNT(*) AS n FROM jobs \
             WHERE state = '{running}' AND queue IN ({queues}) \
             GROUP BY queue, tenant, concurrency_key",
            running = State::Running,
        ));
        for row in conn.query_all_raw(sql.build()).await.map_err(db_error)? {
            let n: i64 = row.try_get("", "n").map_err(db_error)?;
            usage.running.push((group_of(&row)?, n as u64));
        }
    }
    if let Some(longest) = longest_period(settings) {
        let rated = rated_queues(settings);
        let d = store.dialect;
        let mut sql = store.sql();
        let queues = sql.bind_list(rated.iter().map(|q| q.to_string()));
        let window = sql.bind(-longest);
        sql.push(&format!(
            "SELECT queue, tenant, concurrency_key, started, {age} AS age_ms \
             FROM jobs_queue_starts WHERE queue IN ({queues}) AND started_at > {since}",
            age = d.age_ms("started_at"),
            since = d.now_plus_ms(&window),
        ));
        for row in conn.query_all_raw(sql.build()).await.map_err(db_error)? {
            let n: i64 = row.try_get("", "started").map_err(db_error)?;
            let age: i64 = row.try_get("", "age_ms").map_err(db_error)?;
            usage.starts.push((group_of(&row)?, age, n as u64));
        }
    }
    Ok(usage)
}

/// Deletes the starts that no window of these limits can see any more.
pub(super) async fn prune_starts(
    store: &SeaOrmStore,
    conn: &impl ConnectionTrait,
    settings: &[Setting],
) -> Result<(), JobError> {
    let Some(longest) = longest_period(settings) else {
        return Ok(());
    };
    let rated = rated_queues(settings);
    let mut sql = store.sql();
    let queues = sql.bind_list(rated.iter().map(|q| q.to_string()));
    let window = sql.bind(-longest);
    sql.push(&format!(
        "DELETE FROM jobs_queue_starts WHERE queue IN ({queues}) AND started_at <= {since}",
        since = store.dialect.now_plus_ms(&window),
    ));
    conn.execute_raw(sql.build()).await.map_err(db_error)?;
    Ok(())
}

fn longest_period(settings: &[Setting]) -> Option<i64> {
    settings
        .iter()
        .flat_map(|s| [s.limits.rate, s.limits.key_rate])
        .flatten()
        .map(|rate| millis(rate.period))
        .max()
}

fn group_of(row: &sea_orm::QueryResult) -> Result<Group, JobError> {
    Ok(Group {
        queue: row.try_get("", "queue").map_err(db_error)?,
        tenant: row.try_get("", "tenant").map_err(db_error)?,
        key: row.try_get("", "concurrency_key").map_err(db_error)?,
    })
}

fn rated_queues(settings: &[Setting]) -> HashSet<&str> {
    settings
        .iter()
        .filter(|s| s.limits.rate.is_some() || s.limits.key_rate.is_some())
        .map(|s| s.queue.as_str())
        .collect()
}

/// Logs the claim's starts in its rate-limited queues: one row per tenant and key (the key
/// only where a per-key rate needs it).
pub(super) async fn log_starts(
    store: &SeaOrmStore,
    conn: &impl ConnectionTrait,
    settings: &[Setting],
    jobs: &[Job],
) -> Result<(), JobError> {
    let rated = rated_queues(settings);
    let keyed: HashSet<&str> = settings
        .iter()
        .filter(|s| s.limits.key_rate.is_some())
        .map(|s| s.queue.as_str())
        .collect();
    let mut counts: HashMap<Group, i64> = HashMap::new();
    for job in jobs.iter().filter(|j| rated.contains(j.queue.as_str())) {
        let key = keyed
            .contains(job.queue.as_str())
            .then(|| job.concurrency_key.clone())
            .flatten();
        let group = Group {
            queue: job.queue.clone(),
            tenant: job.tenant.clone(),
            key,
        };
        *counts.entry(group).or_default() += 1;
    }
    if counts.is_empty() {
        return Ok(());
    }
    let rows = counts
        .into_iter()
        .map(|(g, n)| vec![g.queue.into(), g.tenant.into(), g.key.into(), n.into()])
        .collect();
    let mut sql = store.sql();
    let starts = rows_cte(&mut sql, "s", STARTS_COLUMNS, rows);
    sql.push(&format!(
        "WITH {starts} INSERT INTO jobs_queue_starts \
           (queue, tenant, concurrency_key, started_at, started) \
         SELECT queue, tenant, concurrency_key, {now}, started FROM s",
        now = store.dialect.now(),
    ));
    conn.execute_raw(sql.build()).await.map_err(db_error)?;
    Ok(())
}

const STARTS_COLUMNS: &[(&str, &str)] = &[
    ("queue", "text"),
    ("tenant", "text"),
    ("concurrency_key", "text"),
    ("started", "bigint"),
];

/// How many more jobs may start now: per queue (limits for every tenant), per queue and
/// tenant (a tenant's own limits), per key in use, and per key not yet in use (the
/// default of a queue and scope). Missing entries are unlimited.
#[derive(Default)]
pub(super) struct Budgets {
    pub(super) queue: HashMap<String, i64>,
    pub(super) pair: HashMap<(String, String), i64>,
    pub(super) key: HashMap<Group, i64>,
    /// By (queue, scope): what a key without running jobs or recent starts may start.
    pub(super) key_default: HashMap<(String, String), i64>,
}

impl Budgets {
    pub(super) fn new(settings: &[Setting], usage: &Usage) -> Self {
        let all = QueueScope::ALL_TENANTS;
        let mut budgets = Budgets::default();
        let of = |queue: &str, scope: &str| {
            settings
                .iter()
                .find(|s| s.queue == queue && s.scope == scope)
                .map(|s| &s.limits)
        };
        for s in settings {
            let in_scope =
                |g: &Group| g.queue == s.queue && (s.scope == all || g.tenant == s.scope);
            if let Some(left) = aggregate_budget(&s.limits, usage, in_scope) {
                if s.scope == all {
                    budgets.queue.insert(s.queue.clone(), left);
                } else {
                    budgets
                        .pair
                        .insert((s.queue.clone(), s.scope.clone()), left);
                }
            }
            let everyone = of(&s.queue, all);
            let defaults = [Some(&s.limits), everyone.filter(|_| s.scope != all)]
                .into_iter()
                .flatten()
                .filter_map(key_default)
                .min();
            if let Some(default) = defaults {
                budgets
                    .key_default
                    .insert((s.queue.clone(), s.scope.clone()), default);
            }
        }
        let keys: HashSet<&Group> = usage
            .running
            .iter()
            .map(|(g, _)| g)
            .chain(usage.starts.iter().map(|(g, _, _)| g))
            .filter(|g| g.key.is_some())
            .collect();
        for group in keys {
            let scopes = [of(&group.queue, all), of(&group.queue, &group.tenant)];
            let left = scopes
                .into_iter()
                .flatten()
                .filter_map(|limits| key_budget(limits, usage, group))
                .min();
            if let Some(left) = left {
                budgets.key.insert(group.clone(), left);
            }
        }
        budgets
    }
}

/// What the queue-wide (or tenant-wide) concurrency and rate of `limits` leave, counting
/// the usage of the groups `in_scope`.
fn aggregate_budget(
    limits: &QueueLimits,
    usage: &Usage,
    in_scope: impl Fn(&Group) -> bool,
) -> Option<i64> {
    let running = || sum_running(usage, &in_scope);
    let concurrency = limits.concurrency.map(|n| i64::from(n) - running());
    let rate = limits
        .rate
        .map(|r| i64::from(r.limit) - sum_starts(usage, millis(r.period), &in_scope));
    [concurrency, rate].into_iter().flatten().min()
}

fn key_budget(limits: &QueueLimits, usage: &Usage, key: &Group) -> Option<i64> {
    let same = |g: &Group| g == key;
    let concurrency = limits
        .key_concurrency
        .map(|n| i64::from(n) - sum_running(usage, same));
    let rate = limits
        .key_rate
        .map(|r| i64::from(r.limit) - sum_starts(usage, millis(r.period), same));
    [concurrency, rate].into_iter().flatten().min()
}

fn key_default(limits: &QueueLimits) -> Option<i64> {
    let concurrency = limits.key_concurrency.map(i64::from);
    let rate = limits.key_rate.map(|r| i64::from(r.limit));
    [concurrency, rate].into_iter().flatten().min()
}

fn sum_running(usage: &Usage, in_scope: impl Fn(&Group) -> bool) -> i64 {
    let n: u64 = usage
        .running
        .iter()
        .filter(|(g, _)| in_scope(g))
        .map(|(_, n)| n)
        .sum();
    n as i64
}

fn sum_starts(usage: &Usage, period_ms: i64, in_scope: impl Fn(&Group) -> bool) -> i64 {
    let n: u64 = usage
        .starts
        .iter()
        .filter(|(g, age, _)| *age < period_ms && in_scope(g))
        .map(|(_, _, n)| n)
        .sum();
    n as i64
}

/// Per limited queue that `tenant` (or, for `None`, anyone) sees: its limits in the view's
/// scope and for every tenant, and how many due pending jobs a limit holds back now.
pub(super) async fn limited_queues_view(
    store: &SeaOrmStore,
    tenant: Option<&str>,
) -> Result<Vec<(String, QueueLimits, QueueLimits, u64)>, JobError> {
    let settings = read_settings(store, &store.db, None, tenant, false).await?;
    if settings.is_empty() {
        return Ok(Vec::new());
    }
    let usage = read_usage(store, &store.db, &settings).await?;
    let budgets = Budgets::new(&settings, &usage);
    let queues: HashSet<&str> = settings.iter().map(|s| s.queue.as_str()).collect();
    let mut view = Vec::new();
    for queue in queues {
        let of = |scope: &str| {
            settings
                .iter()
                .find(|s| s.queue == queue && s.scope == scope)
                .map(|s| s.limits.clone())
                .unwrap_or_default()
        };
        let everyone = of(QueueScope::ALL_TENANTS);
        let own = tenant.map(of).unwrap_or_else(|| everyone.clone());
        let throttled = throttled(store, &budgets, tenant, queue).await?;
        view.push((queue.to_owned(), own, everyone, throttled));
    }
    Ok(view)
}

/// Due pending jobs of `queue` (of `tenant`) that a limit holds back: all of them while
/// the queue's budget is used up, else those of tenants and keys out of budget.
async fn throttled(
    store: &SeaOrmStore,
    budgets: &Budgets,
    tenant: Option<&str>,
    queue: &str,
) -> Result<u64, JobError> {
    let spent = |n: &i64| *n <= 0;
    let blocked_pairs: Vec<Vec<sea_orm::Value>> = budgets
        .pair
        .iter()
        .filter(|((q, _), n)| q == queue && spent(n))
        .map(|((_, t), _)| vec![t.clone().into()])
        .collect();
    let blocked_keys: Vec<Vec<sea_orm::Value>> = budgets
        .key
        .iter()
        .filter(|(g, n)| g.queue == queue && spent(n))
        .map(|(g, _)| vec![g.tenant.clone().into(), g.key.clone().into()])
        .collect();
    let all = budgets.queue.get(queue).is_some_and(spent);
    if !all && blocked_pairs.is_empty() && blocked_keys.is_empty() {
        return Ok(0);
    }
    let mut sql = store.sql();
    let pairs = rows_cte(&mut sql, "bp", &[("tenant", "text")], blocked_pairs);
    let keys = rows_cte(
        &mut sql,
        "bk",
        &[("tenant", "text"), ("concurrency_key", "text")],
        blocked_keys,
    );
    let mut only = format!(" AND queue = {}", sql.bind(queue.to_owned()));
    if let Some(tenant) = tenant {
        only += &format!(" AND tenant = {}", sql.bind(tenant.to_owned()));
    }
    let held = if all {
        "TRUE".to_owned()
    } else {
        "(tenant IN (SELECT tenant FROM bp) OR EXISTS (SELECT 1 FROM bk \
           WHERE bk.tenant = jobs.tenant AND bk.concurrency_key = jobs.concurrency_key))"
            .to_owned()
    };
    sql.push(&format!(
        "WITH {pairs}, {keys} SELECT COUNT(*) AS n FROM jobs \
         WHERE state = '{pending}'{only} AND run_at <= {now} AND {held}",
        pending = State::Pending,
        now = store.dialect.now(),
    ));
    let rows = store.query(sql).await?;
    let n: i64 = match rows.first() {
        Some(row) => row.try_get("", "n").map_err(db_error)?,
        None => 0,
    };
    Ok(n as u64)
}
