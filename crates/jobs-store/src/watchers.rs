//! Who in this process waits on which job: a change to a job wakes only its own watchers,
//! and with nobody watching, a change costs one atomic load per statement.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicUsize, Ordering},
    },
};

use jobs_core::{JobChanges, JobId, Signals};
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Watchers {
    /// How many watches are open; checked before taking the lock.
    open: AtomicUsize,
    by_job: Mutex<HashMap<JobId, Vec<Weak<Notify>>>>,
}

impl Watchers {
    /// Signals each time `id` may have changed, until dropped.
    pub(crate) fn watch(self: &Arc<Self>, id: JobId) -> JobChanges {
        let notify = Arc::new(Notify::new());
        self.by_job
            .lock()
            .expect("watchers lock")
            .entry(id)
            .or_default()
            .push(Arc::downgrade(&notify));
        self.open.fetch_add(1, Ordering::Relaxed);
        let watch = Watch {
            watchers: self.clone(),
            id,
            notify,
        };
        Signals::new(futures::stream::unfold(watch, |watch| async move {
            // A permit stored by a change made before this wait is taken at once.
            watch.notify.notified().await;
            Some(((), watch))
        }))
    }

    /// Wakes the watchers of these jobs.
    pub(crate) fn changed(&self, ids: impl IntoIterator<Item = JobId>) {
        if self.open.load(Ordering::Relaxed) == 0 {
            return;
        }
        let by_job = self.by_job.lock().expect("watchers lock");
        for id in ids {
            for notify in by_job.get(&id).into_iter().flatten() {
                if let Some(notify) = notify.upgrade() {
                    notify.notify_one();
                }
            }
        }
    }
}

/// One open watch; unregisters itself when its stream is dropped.
struct Watch {
    watchers: Arc<Watchers>,
    id: JobId,
    notify: Arc<Notify>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut by_job = self.watchers.by_job.lock().expect("watchers lock");
        if let Some(list) = by_job.get_mut(&self.id) {
            list.retain(|w| w.upgrade().is_some_and(|n| !Arc::ptr_eq(&n, &self.notify)));
            if list.is_empty() {
                by_job.remove(&self.id);
            }
        }
        self.watchers.open.fetch_sub(1, Ordering::Relaxed);
    }
}
