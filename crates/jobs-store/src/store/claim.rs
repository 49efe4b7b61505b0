//! Claims: moving due jobs to running, fairly between tenants and within the queues'
//! limits.
//!
//! Fairness: a claim walks the (queue, tenant) pairs that have pending jobs (a loose index
//! scan of `jobs_claim_idx`, one probe per pair), takes each pair's first jobs in claim
//! order (priority, then oldest), and interleaves them: every tenant's first job, then
//! every tenant's second, and so on. A tenant with a million pending jobs therefore delays
//! another tenant's jobs by one turn, not by its backlog. Paused pairs are skipped before
//! their jobs are read.
//!
//! Limits: a claim that concerns a limited queue runs in a transaction that first locks the
//! queue's `jobs_queues` rows, so claims of one limited queue take turns; then it counts
//! running jobs and recent starts (statements after the lock see every claim that
//! committed before it), computes how many jobs each queue, tenant and key may still
//! start, claims within those budgets and logs its starts for rate limits, all before
//! the lock is released. A claim that locks nothing never takes a limited queue's jobs.

use std::collections::{HashMap, HashSet};

use jobs_core::{ClaimRequest, Job, JobError, QueueLimits, QueueScope, State};
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::{
    SeaOrmStore, db_error, job_columns,
    limits::{LIMIT_COLUMNS, limited_row, limits_of},
    millis,
};
use crate::sql::{Dialect, Sql, rows_cte, state_list};

pub(super) async fn claim(
    store: &SeaOrmStore,
    request: &ClaimRequest,
) -> Result<Vec<Job>, JobError> {
    request.validate()?;
    if request.limit == 0 || request.queues.is_empty() {
        return Ok(Vec::new());
    }
    if request.kinds.as_ref().is_some_and(Vec::is_empty) {
        return Ok(Vec::new());
    }
    let mut jobs = if store.limited_among(&request.queues).await?.is_empty() {
        let sql = claim_statement(store, request, None);
        store.fetch_jobs(&store.db, sql).await?
    } else {
        claim_limited(store, request).await?
    };
    store.changed(jobs.iter().map(|job| job.id));
    // RETURNING does not keep the subquery's order.
    jobs.sort_by(|a, b| (b.priority, a.run_at, a.id).cmp(&(a.priority, b.run_at, b.id)));
    Ok(jobs)
}

/// The limits of one queue in one scope (`*` or a tenant), as locked by a claim.
struct Setting {
    scope: String,
    queue: String,
    limits: QueueLimits,
}

/// How a queue is being used: running jobs and recent starts, per tenant and key.
#[derive(Default)]
struct Usage {
    running: Vec<(Group, u64)>,
    /// Starts with their age in milliseconds.
    starts: Vec<(Group, i64, u64)>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Group {
    queue: String,
    tenant: String,
    key: Option<String>,
}

async fn claim_limited(store: &SeaOrmStore, request: &ClaimRequest) -> Result<Vec<Job>, JobError> {
    let txn = store.db.begin().await.map_err(db_error)?;
    let settings = lock_settings(store, &txn, request).await?;
    let usage = read_usage(store, &txn, &settings).await?;
    let budgets = Budgets::new(&settings, &usage);
    let mut request = request.clone();
    request
        .queues
        .retain(|queue| budgets.queue.get(queue).is_none_or(|n| *n > 0));
    let jobs = if request.queues.is_empty() {
        Vec::new()
    } else {
        let sql = claim_statement(store, &request, Some(&budgets));
        store.fetch_jobs(&txn, sql).await?
    };
    log_starts(store, &txn, &settings, &jobs).await?;
    txn.commit().await.map_err(db_error)?;
    Ok(jobs)
}

/// Locks and reads the limit rows of the request's queues, in one order in every claim
/// (so two claims never wait on each other crosswise). SQLite has one writer: a write to
/// the rows takes its lock for the whole transaction.
async fn lock_settings(
    store: &SeaOrmStore,
    txn: &impl ConnectionTrait,
    request: &ClaimRequest,
) -> Result<Vec<Setting>, JobError> {
    let mut sql = store.sql();
    let queues = sql.bind_list(request.queues.iter().cloned());
    let mut scopes = String::new();
    if let Some(tenant) = &request.tenant {
        scopes = format!(
            " AND tenant IN ('{}', {})",
            QueueScope::ALL_TENANTS,
            sql.bind(tenant.clone())
        );
    }
    let rows = format!("name IN ({queues}){scopes} AND {}", limited_row(""));
    let columns = LIMIT_COLUMNS.join(", ");
    sql.push(&match store.dialect {
        Dialect::Postgres => format!(
            "SELECT tenant, name, {columns} FROM jobs_queues WHERE {rows} \
             ORDER BY tenant, name FOR UPDATE"
        ),
        Dialect::Sqlite => format!(
            "UPDATE jobs_queues SET tenant = tenant WHERE {rows} RETURNING tenant, name, {columns}"
        ),
    });
    let rows = txn.query_all_raw(sql.build()).await.map_err(db_error)?;
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
async fn read_usage(
    store: &SeaOrmStore,
    txn: &impl ConnectionTrait,
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
        for row in txn.query_all_raw(sql.build()).await.map_err(db_error)? {
            let n: i64 = row.try_get("", "n").map_err(db_error)?;
            usage.running.push((group_of(&row)?, n as u64));
        }
    }
    let longest = settings
        .iter()
        .flat_map(|s| [s.limits.rate, s.limits.key_rate])
        .flatten()
        .map(|rate| millis(rate.period))
        .max();
    if let Some(longest) = longest {
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
        for row in txn.query_all_raw(sql.build()).await.map_err(db_error)? {
            let n: i64 = row.try_get("", "started").map_err(db_error)?;
            let age: i64 = row.try_get("", "age_ms").map_err(db_error)?;
            usage.starts.push((group_of(&row)?, age, n as u64));
        }
        // The log keeps only what a window can still see.
        let mut sql = store.sql();
        let queues = sql.bind_list(rated.iter().map(|q| q.to_string()));
        let window = sql.bind(-longest);
        sql.push(&format!(
            "DELETE FROM jobs_queue_starts WHERE queue IN ({queues}) AND started_at <= {since}",
            since = d.now_plus_ms(&window),
        ));
        txn.execute_raw(sql.build()).await.map_err(db_error)?;
    }
    Ok(usage)
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
async fn log_starts(
    store: &SeaOrmStore,
    txn: &impl ConnectionTrait,
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
    txn.execute_raw(sql.build()).await.map_err(db_error)?;
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
struct Budgets {
    queue: HashMap<String, i64>,
    pair: HashMap<(String, String), i64>,
    key: HashMap<Group, i64>,
    /// By (queue, scope): what a key without running jobs or recent starts may start.
    key_default: HashMap<(String, String), i64>,
}

impl Budgets {
    fn new(settings: &[Setting], usage: &Usage) -> Self {
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

/// Moves up to `limit` due jobs of the request's queues (kinds, tenant) to running, taking
/// turns between tenants; with `budgets`, within them. Without budgets it leaves limited
/// queues alone (their rows are not locked).
fn claim_statement(store: &SeaOrmStore, request: &ClaimRequest, budgets: Option<&Budgets>) -> Sql {
    let d = store.dialect;
    let now = d.now();
    let mut sql = store.sql();
    let n = request.limit as i64;
    let mut ctes = Vec::new();
    if let Some(budgets) = budgets {
        ctes.extend(budget_ctes(&mut sql, budgets));
    }
    ctes.push(pairs(&mut sql, request, budgets.is_some()));
    ctes.push(candidates(&mut sql, request, budgets.is_some()));
    let order = "priority DESC, run_at, id";
    let ranked = if budgets.is_some() {
        format!(
            "ranked AS (SELECT c.*, \
               row_number() OVER (PARTITION BY tenant ORDER BY {order}) AS turn, \
               row_number() OVER (PARTITION BY queue, tenant ORDER BY {order}) AS pair_nth, \
               row_number() OVER (PARTITION BY queue, tenant, concurrency_key ORDER BY {order}) AS key_nth \
             FROM candidates c), \
             allowed AS (SELECT r.*, \
               row_number() OVER (PARTITION BY r.queue ORDER BY turn, {order}) AS queue_nth \
             FROM ranked r \
             LEFT JOIN pair_budget pb ON pb.queue = r.queue AND pb.tenant = r.tenant \
             LEFT JOIN key_budget kb ON kb.queue = r.queue AND kb.tenant = r.tenant \
               AND kb.concurrency_key = r.concurrency_key \
             LEFT JOIN key_default kt ON kt.queue = r.queue AND kt.scope = r.tenant \
             LEFT JOIN key_default ka ON ka.queue = r.queue AND ka.scope = '{all}' \
             WHERE r.pair_nth <= COALESCE(pb.budget, {n}) AND (r.concurrency_key IS NULL \
               OR r.key_nth <= COALESCE(kb.budget, kt.budget, ka.budget, {n}))), \
             picked AS MATERIALIZED (SELECT a.id FROM allowed a \
               LEFT JOIN queue_budget qb ON qb.queue = a.queue \
             WHERE a.queue_nth <= COALESCE(qb.budget, {n}) \
             ORDER BY a.turn, {order} LIMIT {n})",
            all = QueueScope::ALL_TENANTS,
        )
    } else {
        format!(
            "ranked AS (SELECT c.*, \
               row_number() OVER (PARTITION BY tenant ORDER BY {order}) AS turn \
             FROM candidates c), \
             picked AS MATERIALIZED (SELECT id FROM ranked ORDER BY turn, {order} LIMIT {n})"
        )
    };
    ctes.push(ranked);
    let worker = sql.bind(request.worker_id.clone());
    let lease = sql.bind(millis(request.lease));
    sql.push(&format!(
        "WITH RECURSIVE {ctes} \
         UPDATE jobs SET state = '{running}', worker_id = {worker}, attempt = attempt + 1, \
           lease_token = {token}, lease_expires_at = {lease_end}, started_at = {now}, \
           updated_at = {now}, progress = 0, stage = NULL \
         FROM picked WHERE jobs.id = picked.id AND jobs.state IN ({from}) \
         RETURNING {returning}",
        ctes = ctes.join(", "),
        from = state_list(&State::sources_of(State::Running)),
        running = State::Running,
        returning = job_columns("jobs."),
        token = d.random_uuid(),
        lease_end = d.now_plus_ms(&lease),
    ));
    sql
}

/// `pairs(queue, tenant)`: the pairs to claim from, neither paused nor (without the
/// limits locked) limited, nor out of budget. For a tenant's claim they are given; else
/// each queue's tenants with pending jobs are found one index probe at a time.
fn pairs(sql: &mut Sql, request: &ClaimRequest, locked: bool) -> String {
    let pending = State::Pending;
    let queues: Vec<String> = request
        .queues
        .iter()
        .map(|q| format!("({})", sql.bind(q.clone())))
        .collect();
    let queues = queues.join(", ");
    let found = match &request.tenant {
        Some(tenant) => {
            let tenant = sql.bind(tenant.clone());
            format!("found(queue, tenant) AS (SELECT queue, {tenant} FROM claim_queues)")
        }
        None => format!(
            "found(queue, tenant) AS (\
               SELECT q.queue, (SELECT MIN(tenant) FROM jobs \
                 WHERE state = '{pending}' AND jobs.queue = q.queue) FROM claim_queues q \
               UNION ALL \
               SELECT f.queue, (SELECT MIN(tenant) FROM jobs \
                 WHERE state = '{pending}' AND jobs.queue = f.queue AND jobs.tenant > f.tenant) \
               FROM found f WHERE f.tenant IS NOT NULL)"
        ),
    };
    let all = QueueScope::ALL_TENANTS;
    let held = if locked {
        "c.paused_at IS NOT NULL".to_owned()
    } else {
        format!("(c.paused_at IS NOT NULL OR {})", limited_row("c."))
    };
    let in_budget = if locked {
        " AND NOT EXISTS (SELECT 1 FROM pair_budget b \
           WHERE b.queue = f.queue AND b.tenant = f.tenant AND b.budget <= 0)"
    } else {
        ""
    };
    format!(
        "claim_queues(queue) AS (VALUES {queues}), {found}, \
         pairs AS (SELECT queue, tenant FROM found f WHERE f.tenant IS NOT NULL \
           AND NOT EXISTS (SELECT 1 FROM jobs_queues c WHERE c.name = f.queue \
             AND c.tenant IN ('{all}', f.tenant) AND {held}){in_budget})"
    )
}

/// `candidates`: each pair's first due jobs in claim order, as many as an equal share of
/// the claim (locked on PostgreSQL, so racing claims take the next ones). Keys out of
/// budget are skipped here, so their backlog is never read.
fn candidates(sql: &mut Sql, request: &ClaimRequest, locked: bool) -> String {
    let d = sql.dialect();
    let now = d.now();
    let n = request.limit as i64;
    let mut only = String::new();
    if let Some(kinds) = &request.kinds {
        only = format!(" AND kind IN ({})", sql.bind_list(kinds.iter().cloned()));
    }
    if locked {
        only.push_str(
            " AND (concurrency_key IS NULL OR concurrency_key NOT IN (\
               SELECT concurrency_key FROM key_budget b \
               WHERE b.queue = p.queue AND b.tenant = p.tenant AND b.budget <= 0))",
        );
    }
    let share = format!(
        "(SELECT CASE WHEN COUNT(*) = 0 THEN {n} ELSE ({n} + COUNT(*) - 1) / COUNT(*) END FROM pairs)"
    );
    let due = format!(
        "SELECT id, queue, tenant, concurrency_key, priority, run_at FROM jobs \
         WHERE state = '{pending}' AND queue = p.queue AND tenant = p.tenant \
           AND run_at <= {now} AND (deadline IS NULL OR deadline > {now}) \
           AND cancel_requested_at IS NULL{only} \
         ORDER BY priority DESC, run_at, id LIMIT {share}",
        pending = State::Pending,
    );
    match d {
        Dialect::Postgres => format!(
            "candidates AS MATERIALIZED (SELECT c.* FROM pairs p, \
               LATERAL ({due} FOR UPDATE SKIP LOCKED) c)"
        ),
        Dialect::Sqlite => {
            let due = due.replacen(
                "SELECT id, queue, tenant, concurrency_key, priority, run_at",
                "SELECT id",
                1,
            );
            format!(
                "candidates AS MATERIALIZED (SELECT c.id, c.queue, c.tenant, c.concurrency_key, \
                   c.priority, c.run_at FROM pairs p JOIN jobs c ON c.id IN ({due}))"
            )
        }
    }
}

/// The budgets as CTEs: `queue_budget`, `pair_budget`, `key_budget`, `key_default`.
fn budget_ctes(sql: &mut Sql, budgets: &Budgets) -> Vec<String> {
    let queue = budgets
        .queue
        .iter()
        .map(|(q, n)| vec![q.clone().into(), (*n).into()])
        .collect();
    let pair = budgets
        .pair
        .iter()
        .map(|((q, t), n)| vec![q.clone().into(), t.clone().into(), (*n).into()])
        .collect();
    let key = budgets
        .key
        .iter()
        .map(|(g, n)| {
            vec![
                g.queue.clone().into(),
                g.tenant.clone().into(),
                g.key.clone().into(),
                (*n).into(),
            ]
        })
        .collect();
    let default = budgets
        .key_default
        .iter()
        .map(|((q, s), n)| vec![q.clone().into(), s.clone().into(), (*n).into()])
        .collect();
    vec![
        rows_cte(
            sql,
            "queue_budget",
            &[("queue", "text"), ("budget", "bigint")],
            queue,
        ),
        rows_cte(
            sql,
            "pair_budget",
            &[("queue", "text"), ("tenant", "text"), ("budget", "bigint")],
            pair,
        ),
        rows_cte(
            sql,
            "key_budget",
            &[
                ("queue", "text"),
                ("tenant", "text"),
                ("concurrency_key", "text"),
                ("budget", "bigint"),
            ],
            key,
        ),
        rows_cte(
            sql,
            "key_default",
            &[("queue", "text"), ("scope", "text"), ("budget", "bigint")],
            default,
        ),
    ]
}
