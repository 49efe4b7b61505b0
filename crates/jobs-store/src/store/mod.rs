//! The queries. Each public operation is one statement (or one statement per bounded
//! chunk); conditions on `state`, `worker_id` and `attempt` make every write safe against
//! racing workers, rescuers and cancels.
//!
//! By responsibility: `enqueue`, `read`, `lease` (claims and what running attempts
//! write), `finish`, `control` (cancel, retry), `bulk` (both, and delete, by filter),
//! `maintenance` (sweeps), `queues` (pause and resume); every statement
//! that ends a job takes its next state from `transition`.

mod budgets;
mod bulk;
mod claim;
mod control;
mod dependencies;
mod enqueue;
mod errors;
mod estimates;
mod files;
mod finish;
mod lease;
mod limits;
mod maintenance;
mod outcome;
#[cfg(feature = "postgres")]
mod plain_enqueue;
mod queues;
mod read;
mod schedules;
mod transition;
mod unique;
mod vacuum;
mod webhooks;
mod workflows;

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use jobs_core::{
    AttemptError, BulkRequest, BulkResult, ClaimRequest, Enqueued, Finish, Heartbeat, Job,
    JobError, JobId, JobStore, Lease, LeaseToken, ListFilter, NewJob, Page, PageRequest,
    QueueStats, RescueReport, RetryPolicy, State,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, ExecResult, FromQueryResult, QueryResult};
use tokio::sync::broadcast;
use uuid::Uuid;

pub(crate) use errors::db_error;
#[cfg(feature = "postgres")]
pub(crate) use errors::sqlx_error;
pub use outcome::{OutcomeLimits, TOO_LARGE as RESULT_TOO_LARGE};

use crate::{
    connect::connect_options,
    entity,
    sql::{Dialect, Sql},
};

/// Clones share the connection pool and the in-process wake-up channel.
#[derive(Debug, Clone)]
pub struct SeaOrmStore {
    db: DatabaseConnection,
    dialect: Dialect,
    retry_policy: RetryPolicy,
    local_wake: broadcast::Sender<String>,
    watchers: std::sync::Arc<crate::watchers::Watchers>,
    limited_queues: std::sync::Arc<limits::LimitedQueues>,
    run_stats: std::sync::Arc<estimates::RunStats>,
    outcome_limits: OutcomeLimits,
}

impl SeaOrmStore {
    pub fn new(db: DatabaseConnection) -> Self {
        let dialect = Dialect::of(db.get_database_backend());
        Self {
            db,
            dialect,
            retry_policy: RetryPolicy::default(),
            local_wake: broadcast::channel(1024).0,
            watchers: std::sync::Arc::default(),
            limited_queues: std::sync::Arc::default(),
            run_stats: std::sync::Arc::default(),
            outcome_limits: OutcomeLimits::default(),
        }
    }

    pub(crate) fn local_wake(&self) -> &broadcast::Sender<String> {
        &self.local_wake
    }

    pub(crate) fn watchers(&self) -> &std::sync::Arc<crate::watchers::Watchers> {
        &self.watchers
    }

    /// Connects with the defaults of `connect_options`.
    pub async fn connect(url: &str) -> Result<Self, JobError> {
        Self::connect_with(connect_options(url)).await
    }

    pub async fn connect_with(options: sea_orm::ConnectOptions) -> Result<Self, JobError> {
        let db = sea_orm::Database::connect(options)
            .await
            .map_err(db_error)?;
        Ok(Self::new(db))
    }

    /// The backoff used by `Retry::Backoff`.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
        self
    }

    /// When results are compressed, and the largest kept.
    pub fn with_outcome_limits(mut self, limits: OutcomeLimits) -> Self {
        self.outcome_limits = limits;
        self
    }

    pub fn outcome_limits(&self) -> OutcomeLimits {
        self.outcome_limits
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The statement behind `list`, for tests that read its plan.
    #[cfg(feature = "testing")]
    pub(crate) fn listing_statement(
        &self,
        filter: &ListFilter,
        page: &PageRequest,
    ) -> sea_orm::Statement {
        read::list_sql(self.dialect, filter, page).build()
    }

    pub fn is_postgres(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    pub(crate) fn sql(&self) -> Sql {
        Sql::new(self.dialect)
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn fetch_jobs(&self, db: &impl ConnectionTrait, sql: Sql) -> Result<Vec<Job>, JobError> {
        jobs_of(self.fetch_models(db, sql).await.map_err(db_error)?)
    }

    /// The rows of a statement returning `job_columns`, with the database's own error.
    async fn fetch_models(
        &self,
        db: &impl ConnectionTrait,
        sql: Sql,
    ) -> Result<Vec<entity::Model>, sea_orm::DbErr> {
        entity::Model::find_by_statement(sql.build()).all(db).await
    }

    async fn query(&self, sql: Sql) -> Result<Vec<QueryResult>, JobError> {
        self.db.query_all_raw(sql.build()).await.map_err(db_error)
    }

    async fn execute(&self, sql: Sql) -> Result<ExecResult, JobError> {
        self.db.execute_raw(sql.build()).await.map_err(db_error)
    }
}

/// Each operation lives in the module of its responsibility.
#[async_trait]
impl JobStore for SeaOrmStore {
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, JobError> {
        enqueue::enqueue_many(self, jobs).await
    }

    async fn get(&self, tenant: Option<&str>, id: JobId) -> Result<Job, JobError> {
        read::get(self, tenant, id).await
    }

    async fn get_many(&self, ids: &[JobId]) -> Result<HashMap<JobId, Job>, JobError> {
        read::get_many(self, ids).await
    }

    async fn estimate(&self, job: &Job, limit: u64) -> Result<jobs_core::Estimate, JobError> {
        estimates::estimate(self, job, limit).await
    }

    async fn cancel_requests(&self, leases: &[Lease]) -> Result<Vec<LeaseToken>, JobError> {
        lease::cancel_requests(self, leases).await
    }

    async fn list(&self, filter: &ListFilter, page: &PageRequest) -> Result<Page, JobError> {
        read::list(self, filter, page).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Job>, JobError> {
        claim::claim(self, request).await
    }

    async fn heartbeat(&self, leases: &[Lease], lease: Duration) -> Result<Heartbeat, JobError> {
        lease::heartbeat(self, leases, lease).await
    }

    async fn progress(
        &self,
        lease: &Lease,
        fraction: f64,
        stage: Option<&str>,
    ) -> Result<(), JobError> {
        lease::progress(self, lease, fraction, stage).await
    }

    async fn finish_many(
        &self,
        items: Vec<Finish>,
    ) -> Result<Vec<Result<State, JobError>>, JobError> {
        finish::finish_many(self, items).await
    }

    async fn cancel(&self, tenant: Option<&str>, id: JobId) -> Result<Job, JobError> {
        control::cancel(self, tenant, id).await
    }

    async fn retry(&self, tenant: Option<&str>, id: JobId) -> Result<Job, JobError> {
        control::retry(self, tenant, id).await
    }

    async fn bulk(&self, request: &BulkRequest) -> Result<BulkResult, JobError> {
        bulk::bulk(self, request).await
    }

    async fn rescue_expired(&self, limit: u32) -> Result<RescueReport, JobError> {
        maintenance::rescue_expired(self, limit).await
    }

    async fn end_unrunnable(&self, limit: u32) -> Result<RescueReport, JobError> {
        maintenance::end_unrunnable(self, limit).await
    }

    async fn queue_stats(&self, tenant: Option<&str>) -> Result<Vec<QueueStats>, JobError> {
        read::queue_stats(self, tenant).await
    }

    async fn purge_expired(&self, limit: u32) -> Result<u64, JobError> {
        maintenance::purge_expired(self, limit).await
    }
}

fn millis(duration: Duration) -> i64 {
    duration.as_millis().min(i64::MAX as u128) as i64
}

fn jobs_of(models: Vec<entity::Model>) -> Result<Vec<Job>, JobError> {
    models.into_iter().map(to_job).collect()
}

fn to_job(m: entity::Model) -> Result<Job, JobError> {
    let errors: Vec<AttemptError> = serde_json::from_value(m.errors).map_err(|e| {
        JobError::Storage(format!("job {} has a malformed error history: {e}", m.id))
    })?;
    let (result, item_errors) =
        outcome::expand(m.result, m.item_errors, m.outcome_zstd.as_deref())?;
    Ok(Job {
        id: m.id.into(),
        tenant: m.tenant,
        queue: m.queue,
        kind: m.kind,
        args: m.args,
        state: m.state.parse()?,
        priority: m.priority,
        run_at: m.run_at,
        attempt: m.attempt,
        max_attempts: m.max_attempts,
        timeout_ms: m.timeout_ms,
        deadline: m.deadline,
        retention_ms: m.retention_ms,
        progress: m.progress,
        stage: m.stage,
        result,
        item_errors,
        errors,
        worker_id: m.worker_id,
        lease_token: m.lease_token.map(LeaseToken::from),
        lease_expires_at: m.lease_expires_at,
        cancel_requested_at: m.cancel_requested_at,
        unique_states: m.unique_states.map(jobs_core::UniqueStates::from_bits),
        unique_key: m.unique_key,
        concurrency_key: m.concurrency_key,
        trace_id: m.trace_id,
        metadata: m.metadata,
        created_at: m.created_at,
        updated_at: m.updated_at,
        started_at: m.started_at,
        finished_at: m.finished_at,
        expires_at: m.expires_at,
        parents: m.parents,
        waiting_on: m.waiting_on,
        on_parent_failure: jobs_core::OnParentFailure::parse(&m.on_parent_failure)
            .unwrap_or_default(),
        workflow_id: m.workflow_id.map(jobs_core::WorkflowId::from),
        workflow_step: m.workflow_step,
        has_files: m.has_files,
    })
}

/// The columns of `Job`, by name (each optionally prefixed, as `jobs.`): never `*`, so a
/// schema with columns this binary does not know still reads, and SQLite's prepared
/// statements never disagree with the table about how many columns a row has.
fn job_columns(prefix: &str) -> String {
    use sea_orm::{IdenStatic, Iterable};
    let names: Vec<String> = entity::Column::iter()
        .map(|c| format!("{prefix}{}", c.as_str()))
        .collect();
    names.join(", ")
}

fn token_of(row: &sea_orm::QueryResult) -> Result<LeaseToken, JobError> {
    Ok(LeaseToken::from(
        row.try_get::<Uuid>("", "lease_token").map_err(db_error)?,
    ))
}
