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

use jobs_core::{ClaimRequest, Job, JobError, QueueScope, State};
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::{
    SeaOrmStore,
    budgets::{self, Budgets},
    db_error, job_columns,
    limits::limited_row,
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
        let pairs = open_pairs(store, &store.db, request, None).await?;
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let sql = claim_statement(store, request, &pairs, None);
        store.fetch_jobs(&store.db, sql).await?
    } else {
        claim_limited(store, request).await?
    };
    store.changed(jobs.iter().map(|job| job.id));
    // RETURNING does not keep the subquery's order.
    jobs.sort_by(|a, b| (b.priority, a.run_at, a.id).cmp(&(a.priority, b.run_at, b.id)));
    Ok(jobs)
}

async fn claim_limited(store: &SeaOrmStore, request: &ClaimRequest) -> Result<Vec<Job>, JobError> {
    let txn = store.db.begin().await.map_err(db_error)?;
    let tenant = request.tenant.as_deref();
    let settings = budgets::read_settings(store, &txn, Some(&request.queues), tenant, true).await?;
    let usage = budgets::read_usage(store, &txn, &settings).await?;
    let budgets = Budgets::new(&settings, &usage);
    let pairs = open_pairs(store, &txn, request, Some(&budgets)).await?;
    let jobs = if pairs.is_empty() {
        Vec::new()
    } else {
        let sql = claim_statement(store, request, &pairs, Some(&budgets));
        store.fetch_jobs(&txn, sql).await?
    };
    budgets::log_starts(store, &txn, &settings, &jobs).await?;
    budgets::prune_starts(store, &txn, &settings).await?;
    txn.commit().await.map_err(db_error)?;
    Ok(jobs)
}

/// Moves up to `limit` due jobs of `pairs` (of the request's kinds) to running, taking
/// turns between tenants; with `budgets`, within them.
fn claim_statement(
    store: &SeaOrmStore,
    request: &ClaimRequest,
    pairs: &[(String, String)],
    budgets: Option<&Budgets>,
) -> Sql {
    let d = store.dialect;
    // The statement's own time: a limited claim may have waited for its lock, and its
    // starts must not look older than they are.
    let now = d.statement_now();
    let mut sql = store.sql();
    let n = request.limit as i64;
    let mut ctes = Vec::new();
    if let Some(budgets) = budgets {
        ctes.extend(budget_ctes(&mut sql, budgets));
    }
    let rows = pairs
        .iter()
        .map(|(q, t)| vec![q.clone().into(), t.clone().into()])
        .collect();
    ctes.push(rows_cte(
        &mut sql,
        "pairs",
        &[("queue", "text"), ("tenant", "text")],
        rows,
    ));
    // An equal share of the claim per pair (rounded up): a literal, so the planner reads
    // each pair's first jobs from the index instead of sorting its whole backlog.
    let share = (request.limit as usize).div_ceil(pairs.len()) as i64;
    ctes.push(candidates(&mut sql, request, share, budgets.is_some()));
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
         WHERE jobs.id{picked} AND jobs.state IN ({from}) \
         RETURNING {returning}",
        ctes = ctes.join(", "),
        from = state_list(&State::sources_of(State::Running)),
        running = State::Running,
        returning = job_columns("jobs."),
        picked = d.in_cte_ids("picked"),
        token = d.random_uuid(),
        lease_end = d.statement_now_plus_ms(&lease),
    ));
    sql
}

/// The (queue, tenant) pairs to claim from: neither paused nor (without `budgets`, so
/// without the limits locked) limited, nor out of budget. For a tenant's claim they are
/// given; else each queue's tenants with pending jobs are found one index probe at a time.
async fn open_pairs(
    store: &SeaOrmStore,
    conn: &impl ConnectionTrait,
    request: &ClaimRequest,
    budgets: Option<&Budgets>,
) -> Result<Vec<(String, String)>, JobError> {
    let pending = State::Pending;
    let mut sql = store.sql();
    let mut ctes = Vec::new();
    if let Some(budgets) = budgets {
        let spent = budgets
            .pair
            .iter()
            .filter(|(_, n)| **n <= 0)
            .map(|((q, t), _)| vec![q.clone().into(), t.clone().into()])
            .collect();
        let columns = &[("queue", "text"), ("tenant", "text")];
        ctes.push(rows_cte(&mut sql, "spent", columns, spent));
    }
    let queues: Vec<String> = request
        .queues
        .iter()
        .filter(|q| budgets.is_none_or(|b| b.queue.get(*q).is_none_or(|n| *n > 0)))
        .map(|q| format!("({})", sql.bind(q.clone())))
        .collect();
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    ctes.push(format!(
        "claim_queues(queue) AS (VALUES {})",
        queues.join(", ")
    ));
    ctes.push(match &request.tenant {
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
    });
    let all = QueueScope::ALL_TENANTS;
    let held = match budgets {
        Some(_) => "c.paused_at IS NOT NULL".to_owned(),
        None => format!("(c.paused_at IS NOT NULL OR {})", limited_row("c.")),
    };
    let in_budget = match budgets {
        Some(_) => {
            " AND NOT EXISTS (SELECT 1 FROM spent s \
           WHERE s.queue = f.queue AND s.tenant = f.tenant)"
        }
        None => "",
    };
    sql.push(&format!(
        "WITH RECURSIVE {ctes} \
         SELECT queue, tenant FROM found f WHERE f.tenant IS NOT NULL \
           AND NOT EXISTS (SELECT 1 FROM jobs_queues c WHERE c.name = f.queue \
             AND c.tenant IN ('{all}', f.tenant) AND {held}){in_budget}",
        ctes = ctes.join(", "),
    ));
    let rows = conn.query_all_raw(sql.build()).await.map_err(db_error)?;
    rows.iter()
        .map(|row| {
            let queue = row.try_get("", "queue").map_err(db_error)?;
            let tenant = row.try_get("", "tenant").map_err(db_error)?;
            Ok((queue, tenant))
        })
        .collect()
}

/// `candidates`: each pair's first due jobs in claim order, as many as an equal share of
/// the claim (locked on PostgreSQL, so racing claims take the next ones). Keys out of
/// budget are skipped here, so their backlog is never read.
fn candidates(sql: &mut Sql, request: &ClaimRequest, share: i64, locked: bool) -> String {
    let d = sql.dialect();
    let now = d.statement_now();
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
