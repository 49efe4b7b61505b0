//! The database side of every scenario: connect, start from an empty table, fill it.

use jobs_core::{JobId, JobStore, NewJob};
use jobs_store::{SeaOrmStore, migrate_up};
use sea_orm::ConnectionTrait;

use crate::report::progress;

/// The queue and kind of every benchmark job; the worker children run a no-op for it.
pub const QUEUE: &str = "bench";
pub const KIND: &str = "bench_noop";

pub fn job() -> NewJob {
    job_with(serde_json::json!({}))
}

/// A benchmark job carrying `args` (the no-op handler ignores them; `soak` reads its own).
pub fn job_with(args: serde_json::Value) -> NewJob {
    NewJob::new(KIND, args).queue(QUEUE)
}

pub async fn connect(url: &str) -> anyhow::Result<SeaOrmStore> {
    Ok(SeaOrmStore::connect(url).await?)
}

/// Migrated, with no jobs: each scenario starts from the same empty table.
pub async fn fresh(url: &str) -> anyhow::Result<SeaOrmStore> {
    let store = connect(url).await?;
    migrate_up(store.connection()).await?;
    // The edges go too: a million left by `scale --waiting` would slow the next run.
    let jobs = ["jobs", "jobs_dependencies", "jobs_workflows"];
    // No pause or limit of an earlier run applies.
    let queues = ["jobs_queues", "jobs_queue_starts"];
    let mut empty = vec![];
    if store.is_postgres() {
        empty.push(format!("TRUNCATE {}", jobs.join(", ")));
    } else {
        empty.extend(jobs.iter().map(|t| format!("DELETE FROM {t}")));
    }
    empty.extend(queues.iter().map(|t| format!("DELETE FROM {t}")));
    for sql in empty {
        store.connection().execute_unprepared(&sql).await?;
    }
    Ok(store)
}

pub fn backend(store: &SeaOrmStore) -> &'static str {
    if store.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    }
}

/// Enqueues `n` jobs in calls of `batch`; returns their ids.
pub async fn fill(store: &SeaOrmStore, n: usize, batch: usize) -> anyhow::Result<Vec<JobId>> {
    let bar = progress(n, "enqueue");
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let count = batch.min(n - ids.len());
        let jobs = store
            .enqueue_many((0..count).map(|_| job()).collect())
            .await?;
        ids.extend(jobs.into_iter().map(|e| e.job.id));
        bar.set_position(ids.len() as u64);
    }
    bar.finish_and_clear();
    Ok(ids)
}

/// Per call when adding waiting jobs: each call locks their one parent once.
const WAITING_BATCH: usize = 10_000;

/// `n` jobs waiting for one parent delayed an hour, so none of them runs during a
/// benchmark; returns the ids of the parent and of the waiting jobs.
pub async fn fill_waiting(store: &SeaOrmStore, n: usize) -> anyhow::Result<Vec<JobId>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let parent = store
        .enqueue(job().delay(std::time::Duration::from_secs(3600)))
        .await?
        .job
        .id;
    let bar = progress(n, "waiting");
    let mut ids = vec![parent];
    while ids.len() <= n {
        let count = WAITING_BATCH.min(n + 1 - ids.len());
        let jobs = (0..count).map(|_| job().after(parent)).collect();
        let enqueued = store.enqueue_many(jobs).await?;
        ids.extend(enqueued.into_iter().map(|e| e.job.id));
        bar.set_position(ids.len() as u64 - 1);
    }
    bar.finish_and_clear();
    Ok(ids)
}

/// Fresh statistics, as autovacuum would have them on a table that has been in use.
pub async fn analyze(store: &SeaOrmStore) -> anyhow::Result<()> {
    store
        .connection()
        .execute_unprepared("ANALYZE jobs")
        .await?;
    Ok(())
}

/// A table in steady use: autovacuum has removed the row versions that claims and
/// outcomes left behind (this machine runs with autovacuum off, so it is done here).
pub async fn vacuum(store: &SeaOrmStore) -> anyhow::Result<()> {
    store
        .connection()
        .execute_unprepared("VACUUM ANALYZE jobs")
        .await?;
    Ok(())
}

/// Whether any job is still pending or running; each probe reads one partial index.
/// Their ORDER BY is the index's: without it, PostgreSQL, counting many pending rows,
/// reads the table from its start instead, past every job already done, and this probe
/// (every 20 ms) took a core from the drain it measures.
pub async fn unfinished(store: &SeaOrmStore) -> anyhow::Result<bool> {
    for probe in [
        "SELECT id FROM jobs WHERE queue = 'bench' AND state = 'pending' \
         ORDER BY queue, tenant, priority DESC, run_at, id LIMIT 1",
        "SELECT id FROM jobs WHERE state = 'running' ORDER BY lease_expires_at LIMIT 1",
    ] {
        if store
            .connection()
            .query_one_raw(sea_orm::Statement::from_string(
                store.connection().get_database_backend(),
                probe,
            ))
            .await?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}
