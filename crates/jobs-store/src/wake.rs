//! Wake-ups for idle workers.
//!
//! An enqueue on PostgreSQL sends `NOTIFY jobs_enqueued, '<queue>'` inside its transaction,
//! so listeners in every process hear of it when it commits; an enqueue through this store
//! also signals this process directly, the only path on SQLite.

use sea_orm::sqlx::{self, postgres::PgListener};
use tokio::{sync::broadcast, task::JoinHandle};

use crate::{SeaOrmStore, store::db_error};
use jobs_core::JobError;

pub const ENQUEUED_CHANNEL: &str = "jobs_enqueued";

/// What woke a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A subscription to wake-ups; stops listening when dropped.
#[derive(Debug)]
pub struct Wakeups {
    local: broadcast::Receiver<String>,
    listener: Option<JoinHandle<()>>,
}

impl Wakeups {
    pub async fn next(&mut self) -> Wake {
        match self.local.recv().await {
            Ok(queue) if queue.is_empty() => Wake::All,
            Ok(queue) => Wake::Queue(queue),
            Err(_) => Wake::All,
        }
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
    }
}

impl SeaOrmStore {
    /// Subscribes to enqueue wake-ups; on PostgreSQL this LISTENs on its own connection.
    pub async fn subscribe(&self) -> Result<Wakeups, JobError> {
        let local = self.local_wake().subscribe();
        let listener = if self.is_postgres() {
            let pool = self.connection().get_postgres_connection_pool();
            let mut listener = PgListener::connect_with(pool).await.map_err(sqlx_error)?;
            listener
                .listen(ENQUEUED_CHANNEL)
                .await
                .map_err(sqlx_error)?;
            Some(tokio::spawn(forward(listener, self.local_wake().clone())))
        } else {
            None
        };
        Ok(Wakeups { local, listener })
    }

    /// Tells this process's workers that `queue` has new jobs (or every queue, for "").
    pub fn wake_workers(&self, queue: &str) {
        // No subscriber is not an error: nobody is idle here.
        let _ = self.local_wake().send(queue.to_owned());
    }
}

async fn forward(mut listener: PgListener, local: broadcast::Sender<String>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(note)) => {
                let _ = local.send(note.payload().to_owned());
            }
            // Reconnected: notifications in between are lost, so look everywhere.
            Ok(None) => {
                let _ = local.send(String::new());
            }
            Err(error) => {
                tracing::warn!(%error, "LISTEN connection failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

fn sqlx_error(error: sqlx::Error) -> JobError {
    db_error(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(
        error.into(),
    )))
}
