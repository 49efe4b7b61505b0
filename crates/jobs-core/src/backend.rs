//! The other ports a runtime needs besides `JobStore`: wake-ups, job change signals,
//! leadership, API-key lookups and the schema's fit. jobs-worker and jobs-http depend on
//! these traits, never on a concrete store; a backend implements all of them.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use async_trait::async_trait;
use futures_core::Stream;

use crate::{
    FileStore, JobError, JobId, JobStore, QueueControl, ScheduleStore, WebhookStore, WorkflowStore,
};

/// What woke a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wake {
    /// Jobs arrived in this queue.
    Queue(String),
    /// Wake-ups were missed (a listener reconnected or lagged): look at every queue.
    All,
}

impl Wake {
    pub fn concerns(&self, queue: &str) -> bool {
        match self {
            Wake::Queue(q) => q == queue,
            Wake::All => true,
        }
    }
}

/// An endless stream of signals from a backend; whatever it listens with stops when
/// it is dropped.
pub struct Signals<T> {
    stream: Pin<Box<dyn Stream<Item = T> + Send>>,
}

impl<T> fmt::Debug for Signals<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signals")
    }
}

impl<T> Signals<T> {
    pub fn new(stream: impl Stream<Item = T> + Send + 'static) -> Self {
        Self {
            stream: Box::pin(stream),
        }
    }

    /// The next signal; waits forever once the backend stops sending.
    pub async fn next(&mut self) -> T {
        match std::future::poll_fn(|cx| self.stream.as_mut().poll_next(cx)).await {
            Some(signal) => signal,
            None => std::future::pending().await,
        }
    }
}

impl<T> Stream for Signals<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.stream.as_mut().poll_next(cx)
    }
}

/// Wake-ups for idle workers.
pub type Wakeups = Signals<Wake>;

/// One watched job may have changed (claimed, progressed, ended, cancelled, retried,
/// rescued) through this process: read it again.
pub type JobChanges = Signals<()>;

/// How workers hear of new jobs and waiters of changed ones without polling.
#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// Wake-ups for enqueues in any process that shares the database where the backend
    /// can tell (PostgreSQL's LISTEN), and always for enqueues through this process.
    async fn subscribe(&self) -> Result<Wakeups, JobError>;

    /// Tells this process's workers that `queue` has new jobs.
    fn wake_workers(&self, queue: &str);

    /// Signals each time job `id` may have changed through this process; changes made by
    /// other processes are not signalled, so watchers also re-read now and then.
    fn watch_job(&self, id: JobId) -> JobChanges;
}

/// A role (maintenance) held by one process at a time, for a term that lapses unless
/// renewed, so a frozen holder loses it.
#[async_trait]
pub trait Leadership: Send + Sync + 'static {
    /// True when `holder` leads `role` for `ttl` from now (taken or renewed).
    async fn lead(&self, role: &str, holder: &str, ttl: Duration) -> Result<bool, JobError>;

    /// Gives `role` up at once, if `holder` has it.
    async fn resign(&self, role: &str, holder: &str) -> Result<(), JobError>;
}

/// Live and dead row versions of one of the job tables, as the database's statistics
/// have them (they lag writes by up to a second or so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableHealth {
    pub table: String,
    pub live_rows: u64,
    pub dead_rows: u64,
}

/// Keeping the job tables compact where the database leaves row versions behind
/// (PostgreSQL), for when autovacuum is off or lags behind a queue's churn.
#[async_trait]
pub trait TableUpkeep: Send + Sync + 'static {
    /// Every job table with its row versions; empty where the database keeps no such
    /// statistics (SQLite, which reuses the space of deleted rows itself).
    async fn table_health(&self) -> Result<Vec<TableHealth>, JobError>;

    /// `VACUUM (ANALYZE)` of `table`, one that `table_health` lists, outside any
    /// transaction; it may take long on a large table, and blocks no reads or writes.
    /// A no-op where there is nothing to vacuum (SQLite). Any other name is `Invalid`.
    async fn vacuum_table(&self, table: &str) -> Result<(), JobError>;
}

/// The API keys an HTTP front door authenticates with.
#[async_trait]
pub trait KeyLookup: Send + Sync + 'static {
    /// The tenant of an active key with this secret.
    async fn tenant_for_key(&self, secret: &str) -> Result<Option<String>, JobError>;

    /// Whether any key was ever created (revoked ones included).
    async fn has_any_keys(&self) -> Result<bool, JobError>;

    /// Whether some key is active.
    async fn has_active_keys(&self) -> Result<bool, JobError>;
}

/// How often a binary waiting for its schema, or running on it, checks it again.
pub const SCHEMA_RECHECK: Duration = Duration::from_secs(5);

/// Whether the database's schema fits this binary.
#[async_trait]
pub trait SchemaGate: Send + Sync + 'static {
    /// `Some(reason)` while work must be refused (the schema is older than this binary
    /// needs, or newer than it understands); `Err` when the database did not answer.
    async fn schema_refusal(&self) -> Result<Option<String>, JobError>;

    /// Ready to serve: reachable, with a schema that fits.
    async fn readiness(&self) -> Result<(), String>;
}

/// Everything the worker runtime needs.
pub trait WorkerBackend:
    JobStore
    + ScheduleStore
    + QueueControl
    + WorkflowStore
    + FileStore
    + WebhookStore
    + Notifier
    + Leadership
    + TableUpkeep
{
}
impl<
    T: JobStore
        + ScheduleStore
        + QueueControl
        + WorkflowStore
        + FileStore
        + WebhookStore
        + Notifier
        + Leadership
        + TableUpkeep,
> WorkerBackend for T
{
}

/// Everything the HTTP API needs.
pub trait ApiBackend: WorkerBackend + KeyLookup + SchemaGate {}
impl<T: WorkerBackend + KeyLookup + SchemaGate> ApiBackend for T {}
