//! Turns due schedule slots into jobs. Runs in every worker process, not only the
//! maintenance leader: the store enqueues each slot by a compare-and-set in the job's own
//! transaction, so concurrent ticks cannot duplicate a slot and a process that dies
//! mid-tick loses nothing another process will not pick up on its next tick.

use async_trait::async_trait;
use jobs_core::ScheduledRun;
use time::OffsetDateTime;

use super::Periodic;
use crate::runtime::Backend;

/// Schedules looked at per tick: bounds one tick's work; the rest are due next tick.
pub(crate) const SCHEDULES_PER_TICK: u32 = 100;

pub(crate) struct Scheduler {
    store: Backend,
    worker_id: String,
}

impl Scheduler {
    pub(crate) fn new(store: Backend, worker_id: &str) -> Self {
        Self {
            store,
            worker_id: worker_id.to_owned(),
        }
    }
}

#[async_trait]
impl Periodic for Scheduler {
    /// The jobs this process enqueued in the round.
    type Report = Vec<ScheduledRun>;

    async fn tick(&mut self) -> Vec<ScheduledRun> {
        let now = OffsetDateTime::now_utc();
        match self.store.enqueue_due(now, SCHEDULES_PER_TICK).await {
            Ok(runs) => {
                for run in &runs {
                    tracing::info!(
                        worker_id = %self.worker_id, tenant = %run.tenant,
                        schedule = %run.schedule, slot = %rfc3339(run.slot), job_id = %run.job_id,
                        "scheduled slot enqueued"
                    );
                }
                runs
            }
            Err(error) => {
                tracing::warn!(%error, "could not enqueue due schedule slots");
                Vec::new()
            }
        }
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}
