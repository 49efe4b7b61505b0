//! Configuring a worker: its handlers, queues and settings, checked at `build`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use jobs_core::{FieldError, JobError, QueueLimits, RetryPolicy, Schedule, WorkerBackend};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    Handler, TypedJob, Worker, WorkerConfig,
    handler::Typed,
    runtime::{Backend, QueueSlots, Registered, Shared},
};

pub struct WorkerBuilder {
    store: Backend,
    handlers: HashMap<String, Registered>,
    /// Kinds registered more than once: refused at `build`, since only one would run.
    twice: Vec<String>,
    config: WorkerConfig,
    files: Option<jobs_files::FileStorage>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<&String> = self.handlers.keys().collect();
        f.debug_struct("WorkerBuilder")
            .field("kinds", &kinds)
            .field("config", &self.config)
            .finish()
    }
}

impl WorkerBuilder {
    pub(crate) fn new(store: impl WorkerBackend) -> Self {
        Self {
            store: Arc::new(store),
            handlers: HashMap::new(),
            twice: Vec::new(),
            config: WorkerConfig::default(),
            files: None,
        }
    }

    /// A typed job kind, with the timeout and backoff its `JobArgs::options` declare.
    pub fn register<J: TypedJob>(self) -> Self {
        let options = J::options();
        self.insert(
            J::KIND.into(),
            Arc::new(Typed::<J>::new()),
            options.timeout,
            options.backoff,
        )
    }

    /// An untyped handler (a closure or a `Handler`) for `kind`.
    pub fn handler(self, kind: impl Into<String>, handler: impl Handler) -> Self {
        self.handler_with_timeout(kind, handler, None)
    }

    pub fn handler_with_timeout(
        self,
        kind: impl Into<String>,
        handler: impl Handler,
        timeout: Option<Duration>,
    ) -> Self {
        self.insert(kind.into(), Arc::new(handler), timeout, None)
    }

    fn insert(
        mut self,
        kind: String,
        handler: Arc<dyn Handler>,
        timeout: Option<Duration>,
        backoff: Option<RetryPolicy>,
    ) -> Self {
        let registered = Registered {
            handler,
            timeout,
            backoff,
        };
        if self.handlers.insert(kind.clone(), registered).is_some() {
            self.twice.push(kind);
        }
        self
    }

    pub fn queue(mut self, name: impl Into<String>, concurrency: usize) -> Self {
        self.config.queues.push((name.into(), concurrency));
        self
    }

    /// Whether `queue` was added.
    pub fn serves(&self, queue: &str) -> bool {
        self.config.queues.iter().any(|(name, _)| name == queue)
    }

    /// A periodic job defined in code, created or updated at start: an unchanged cron
    /// and time zone keep the next slot, so restarts neither repeat nor skip one.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.config.schedules.push(schedule);
        self
    }

    /// Limits of a queue for every tenant together (`QueueScope::AllTenants`), set at start
    /// in the database, where every process honours them; they replace limits set
    /// earlier in that scope (over HTTP a tenant sets its own).
    pub fn limit(mut self, queue: impl Into<String>, limits: QueueLimits) -> Self {
        self.config.limits.push((queue.into(), limits));
        self
    }

    /// Where job files are kept: handlers read inputs (`JobContext::input_file`) and
    /// attach results (`JobContext::attach_file`) there, and, with `maintenance`, this
    /// process takes part in sweeping the files of deleted jobs.
    pub fn files(mut self, storage: jobs_files::FileStorage) -> Self {
        self.files = Some(storage);
        self
    }

    pub fn config(mut self, edit: impl FnOnce(&mut WorkerConfig)) -> Self {
        edit(&mut self.config);
        self
    }

    /// The worker, or `Invalid` naming each field at fault: configuration fields, and
    /// `handlers.<kind>` for a kind registered twice.
    pub fn build(mut self) -> Result<Worker, JobError> {
        let mut errors = match self.config.validate() {
            Err(JobError::Invalid(errors)) => errors,
            Err(other) => return Err(other),
            Ok(()) => Vec::new(),
        };
        self.twice.sort();
        self.twice.dedup();
        errors.extend(
            self.twice.iter().map(|kind| {
                FieldError::new(format!("handlers.{kind}"), "registered more than once")
            }),
        );
        JobError::invalid_if_any(errors)?;
        if self.config.queues.is_empty() {
            self.config
                .queues
                .push((jobs_core::limits::DEFAULT_QUEUE.to_owned(), 10));
        }
        let prefetch = self.config.prefetch;
        let queues = self.config.queues.iter();
        let queues = queues
            .map(|(name, concurrency)| {
                Arc::new(QueueSlots::new(name.clone(), *concurrency, prefetch))
            })
            .collect();
        let (completions, completed) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            store: self.store,
            handlers: self.handlers,
            config: self.config,
            queues,
            attempts: Arc::default(),
            completions,
            stopping: CancellationToken::new(),
            files: self.files,
        });
        Ok(Worker { shared, completed })
    }
}
