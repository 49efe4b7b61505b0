//! Queue control: a row in `jobs_queues` per (tenant, queue) ever paused, with `paused_at`
//! set while paused. A claim skips the (queue, tenant) pairs that a pause holds (see `claim`), so a
//! pause holds in every process from its commit on, remote workers included.

use jobs_core::{JobError, QueueLimits, QueueScope, validate_queue_name};

use super::{SeaOrmStore, db_error};

/// Pauses (keeping an earlier pause's time) or resumes the queue in `scope`. A resume
/// then wakes idle workers: on PostgreSQL those of every process.
async fn set_paused(
    store: &SeaOrmStore,
    scope: QueueScope<'_>,
    queue: &str,
    paused: bool,
) -> Result<(), JobError> {
    validate_queue_name("queue", queue)?;
    let now = store.dialect.now();
    let mut sql = store.sql();
    let tenant = sql.bind(scope.as_stored().to_owned());
    let name = sql.bind(queue.to_owned());
    let paused_at = if paused {
        format!("COALESCE(jobs_queues.paused_at, {now})")
    } else {
        "NULL".to_owned()
    };
    sql.push(&format!(
        "INSERT INTO jobs_queues (tenant, name, paused_at, created_at, updated_at) \
         VALUES ({tenant}, {name}, {initial}, {now}, {now}) \
         ON CONFLICT (tenant, name) DO UPDATE SET paused_at = {paused_at}, updated_at = {now}",
        initial = if paused { now } else { "NULL" },
    ));
    store.execute(sql).await?;
    if !paused {
        store.wake_everywhere(&[queue]).await;
    }
    Ok(())
}

/// Which queues are paused for `tenant` (its own pauses and every tenant's), or, for
/// `None`, for every tenant.
pub(super) async fn paused_queues(
    store: &SeaOrmStore,
    tenant: Option<&str>,
) -> Result<Vec<String>, JobError> {
    let mut sql = store.sql();
    let all = sql.bind(QueueScope::ALL_TENANTS);
    let scopes = match tenant {
        Some(tenant) => format!("{all}, {}", sql.bind(tenant.to_owned())),
        None => all,
    };
    sql.push(&format!(
        "SELECT DISTINCT name FROM jobs_queues \
         WHERE tenant IN ({scopes}) AND paused_at IS NOT NULL ORDER BY name"
    ));
    store
        .query(sql)
        .await?
        .iter()
        .map(|row| row.try_get::<String>("", "name").map_err(db_error))
        .collect()
}

#[async_trait::async_trait]
impl jobs_core::QueueControl for SeaOrmStore {
    async fn pause_queue(&self, scope: QueueScope<'_>, queue: &str) -> Result<(), JobError> {
        set_paused(self, scope, queue, true).await
    }

    async fn resume_queue(&self, scope: QueueScope<'_>, queue: &str) -> Result<(), JobError> {
        set_paused(self, scope, queue, false).await
    }

    async fn set_queue_limits(
        &self,
        scope: QueueScope<'_>,
        queue: &str,
        limits: &QueueLimits,
    ) -> Result<(), JobError> {
        super::limits::set_queue_limits(self, scope, queue, limits).await
    }

    async fn queue_limits(
        &self,
        scope: QueueScope<'_>,
        queue: &str,
    ) -> Result<QueueLimits, JobError> {
        super::limits::queue_limits(self, scope, queue).await
    }

    async fn ended_per_minute(
        &self,
        tenant: &str,
        queue: &str,
        since: time::OffsetDateTime,
    ) -> Result<Vec<jobs_core::EndedInMinute>, JobError> {
        super::read::ended_per_minute(self, tenant, queue, since).await
    }
}
