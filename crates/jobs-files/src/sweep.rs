//! Files follow their jobs out: once a job is deleted (retention, bulk delete, a purge),
//! or a staged upload was never attached, its objects are deleted and then its rows.
//! Rows go only after their objects, so a failed deletion is tried again next time.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use jobs_core::{FileStore, Leadership, files::STAGED_FILE_SWEEP_AFTER};
use tokio_util::sync::CancellationToken;

use crate::{FileError, FileStorage};

/// The role of the process that sweeps files: one at a time, whichever has the storage.
pub const FILES_ROLE: &str = "files";
/// Files looked at per sweep statement.
pub const SWEEP_BATCH: u32 = 1_000;
/// Object deletions under way at once.
const DELETES_AT_ONCE: usize = 16;
/// Longer than any sweep interval in use: the leader renews at each sweep.
const LEAD_FOR: Duration = Duration::from_secs(600);

/// Removes up to `limit` orphaned files (of jobs gone, or staged longer than
/// `staged_for`): their objects, then the rows of those whose object is gone. Returns
/// how many rows were deleted.
pub async fn sweep(
    store: &(impl FileStore + ?Sized),
    storage: &FileStorage,
    staged_for: Duration,
    limit: u32,
) -> Result<u64, FileError> {
    let orphans = store.orphan_files(staged_for, limit).await?;
    let results: Vec<_> = futures::stream::iter(orphans)
        .map(|id| async move { (id, storage.delete(id).await) })
        .buffer_unordered(DELETES_AT_ONCE)
        .collect()
        .await;
    let mut deleted = Vec::with_capacity(results.len());
    for (id, result) in results {
        match result {
            Ok(()) => deleted.push(id),
            Err(error) => {
                tracing::warn!(%error, file = %id, "could not delete a file; retried at the next sweep")
            }
        }
    }
    Ok(store.delete_files(&deleted).await?)
}

/// Sweeps `every` so often while this process leads `FILES_ROLE`, until `stop`.
pub async fn run_sweeper<B>(
    backend: Arc<B>,
    storage: FileStorage,
    holder: String,
    every: Duration,
    stop: CancellationToken,
) where
    B: FileStore + Leadership + ?Sized,
{
    loop {
        match backend.lead(FILES_ROLE, &holder, LEAD_FOR).await {
            Ok(true) => sweep_all(&*backend, &storage).await,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "file sweeper: could not read leadership"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    let _ = backend.resign(FILES_ROLE, &holder).await;
}

/// Sweeps batch after batch until one comes back short.
async fn sweep_all(store: &(impl FileStore + ?Sized), storage: &FileStorage) {
    loop {
        match sweep(store, storage, STAGED_FILE_SWEEP_AFTER, SWEEP_BATCH).await {
            Ok(n) if n >= u64::from(SWEEP_BATCH) => continue,
            Ok(0) => return,
            Ok(n) => {
                tracing::info!(files = n, "swept the files of deleted jobs");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "file sweep failed; retried in a minute");
                return;
            }
        }
    }
}
