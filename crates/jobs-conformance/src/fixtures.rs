//! Small pieces the suite's tests share, public for a backend's own tests too.

use std::time::Duration;

use jobs_core::{ClaimRequest, JobId, Lease, NewJob, RescueReport, Wake, Wakeups, WorkerBackend};
use serde_json::json;

/// A valid job of `kind` with small arguments.
pub fn job(kind: &str) -> NewJob {
    NewJob::new(kind, json!({"n": 1}))
}

/// A claim of up to `limit` jobs of the default queue, with a 30 s lease.
pub fn claim_req(worker: &str, limit: u32) -> ClaimRequest {
    ClaimRequest {
        worker_id: worker.to_owned(),
        queues: vec!["default".to_owned()],
        kinds: None,
        tenant: None,
        limit,
        lease: Duration::from_secs(30),
    }
}

/// Enqueues one job and returns its id.
pub async fn add(store: &dyn WorkerBackend, job: NewJob) -> JobId {
    store.enqueue(job).await.unwrap().job.id
}

/// Claims the one job there is to claim, and returns its lease.
pub async fn claim_one(store: &dyn WorkerBackend, worker: &str) -> Lease {
    let jobs = store.claim(&claim_req(worker, 1)).await.unwrap();
    assert_eq!(jobs.len(), 1, "one job to claim");
    Lease::of(&jobs[0]).unwrap()
}

/// How many jobs the backend holds, in any state and tenant.
pub async fn count(store: &dyn WorkerBackend) -> u64 {
    let stats = store.queue_stats(None).await.unwrap();
    stats.iter().flat_map(|q| q.counts.values()).sum()
}

/// Every maintenance move but retention, in one call.
pub async fn rescue_all(s: &dyn WorkerBackend) -> RescueReport {
    let leases = s.rescue_expired(10_000).await.unwrap();
    let pending = s.end_unrunnable(10_000).await.unwrap();
    RescueReport {
        retried: leases.retried + pending.retried,
        failed: leases.failed + pending.failed,
        cancelled: leases.cancelled + pending.cancelled,
    }
}

/// Waits for a wake-up naming `queue`. Tests sharing a database hear each other's
/// wake-ups, so others are skipped; a wake-up for every queue does not count, since it
/// would not show that `queue` was named.
pub async fn wake_for(wakeups: &mut Wakeups, queue: &str) {
    loop {
        if matches!(wakeups.next().await, Wake::Queue(q) if q == queue) {
            return;
        }
    }
}
