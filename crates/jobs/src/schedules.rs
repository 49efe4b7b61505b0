//! Managing periodic jobs from a service. Workers enqueue their slots; defining a
//! schedule here does not need a worker in this process.

use jobs_core::{JobError, Schedule, ScheduleInfo, ScheduleStore};

use crate::Client;

impl Client {
    /// A new schedule; `Conflict` when its tenant already has one of this name.
    pub async fn create_schedule(&self, schedule: &Schedule) -> Result<ScheduleInfo, JobError> {
        self.store().create_schedule(schedule).await
    }

    /// Creates the schedule or updates its definition; an unchanged cron and time zone
    /// keep its next slot, a paused schedule stays paused.
    pub async fn upsert_schedule(&self, schedule: &Schedule) -> Result<ScheduleInfo, JobError> {
        self.store().upsert_schedule(schedule).await
    }

    /// The tenant's schedules by name, with their next run times.
    pub async fn schedules(&self, tenant: &str) -> Result<Vec<ScheduleInfo>, JobError> {
        self.store().list_schedules(tenant).await
    }

    pub async fn schedule(&self, tenant: &str, name: &str) -> Result<ScheduleInfo, JobError> {
        self.store().get_schedule(tenant, name).await
    }

    pub async fn pause_schedule(&self, tenant: &str, name: &str) -> Result<ScheduleInfo, JobError> {
        self.store().pause_schedule(tenant, name).await
    }

    /// Enqueues again from the first slot after now; paused time is not caught up.
    pub async fn resume_schedule(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<ScheduleInfo, JobError> {
        self.store().resume_schedule(tenant, name).await
    }

    /// Jobs it already enqueued stay.
    pub async fn delete_schedule(&self, tenant: &str, name: &str) -> Result<(), JobError> {
        self.store().delete_schedule(tenant, name).await
    }
}
