//! Wake-ups for idle workers.
//!
//! An enqueue on PostgreSQL sends `NOTIFY jobs_enqueued, '<queue>'` inside its transaction,
//! so listeners in every process hear of it when it commits; an enqueue through this store
//! also signals this process directly, the only path on SQLite.

use jobs_core::{JobChanges, JobError, JobId, Signals, Wake, Wakeups};
use tokio::task::JoinHandle;

use crate::SeaOrmStore;

pub const ENQUEUED_CHANNEL: &str = "jobs_enqueued";

impl SeaOrmStore {
    /// Subscribes to enqueue wake-ups; on PostgreSQL this LISTENs on its own connection.
    pub async fn subscribe(&self) -> Result<Wakeups, JobError> {
        let local = self.local_wake().subscribe();
        let listener = if self.is_postgres() {
            Some(listen::spawn(self).await?)
        } else {
            None
        };
        let guard = listener.map(AbortOnDrop);
        Ok(Signals::new(futures::stream::unfold(
            (local, guard),
            |(mut local, guard)| async move {
                let wake = match local.recv().await {
                    Ok(queue) if queue.is_empty() => Wake::All,
                    Ok(queue) => Wake::Queue(queue),
                    Err(_) => Wake::All,
                };
                Some((wake, (local, guard)))
            },
        )))
    }

    /// Signals each time job `id` may have changed through this store (or its clones).
    pub fn watch_job(&self, id: JobId) -> JobChanges {
        self.watchers().watch(id)
    }

    /// Tells this process's watchers that these jobs changed.
    pub(crate) fn changed(&self, ids: impl IntoIterator<Item = JobId>) {
        self.watchers().changed(ids)
    }

    /// Tells this process's workers that `queue` has new jobs (or every queue, for "").
    pub fn wake_workers(&self, queue: &str) {
        // No subscriber is not an error: nobody is idle here.
        let _ = self.local_wake().send(queue.to_owned());
    }

    /// `wake_workers` for each of `queues`, once per queue.
    pub(crate) fn wake_queues<'a>(&self, queues: impl IntoIterator<Item = &'a str>) {
        let distinct: std::collections::HashSet<&str> = queues.into_iter().collect();
        for queue in distinct {
            self.wake_workers(queue);
        }
    }

    /// Wakes the workers of `queues` in every process (NOTIFY on PostgreSQL) and in this
    /// one, after a change that committed already (a resume, a bulk retry). A NOTIFY that
    /// fails is only logged: the change stands, and workers elsewhere find it by polling.
    pub(crate) async fn wake_everywhere(&self, queues: &[&str]) {
        if let Err(error) = self.notify_queue_names(self.connection(), queues).await {
            tracing::warn!(%error, "could not notify other processes' workers; they will poll");
        }
        self.wake_queues(queues.iter().copied());
    }
}

/// The LISTEN task, stopped with the subscription that owns it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(feature = "postgres")]
mod listen {
    use sea_orm::sqlx::postgres::PgListener;
    use tokio::{sync::broadcast, task::JoinHandle};

    use super::ENQUEUED_CHANNEL;
    use crate::{SeaOrmStore, store::sqlx_error};
    use jobs_core::JobError;

    /// LISTENs on a connection of its own and forwards what it hears to the local channel.
    pub(super) async fn spawn(store: &SeaOrmStore) -> Result<JoinHandle<()>, JobError> {
        let pool = store.connection().get_postgres_connection_pool();
        let mut listener = PgListener::connect_with(pool).await.map_err(sqlx_error)?;
        listener
            .listen(ENQUEUED_CHANNEL)
            .await
            .map_err(sqlx_error)?;
        Ok(tokio::spawn(forward(listener, store.local_wake().clone())))
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
}

#[cfg(not(feature = "postgres"))]
mod listen {
    use jobs_core::JobError;
    use tokio::task::JoinHandle;

    use crate::SeaOrmStore;

    pub(super) async fn spawn(_: &SeaOrmStore) -> Result<JoinHandle<()>, JobError> {
        Err(JobError::Unavailable(
            "this build has no PostgreSQL support (feature `postgres`)".into(),
        ))
    }
}
