//! `SeaOrmStore` as the runtime's other ports: wake-ups and change signals, leadership,
//! API-key lookups and the schema gate. Each delegates to the module that owns the SQL.

use std::time::Duration;

use async_trait::async_trait;
use jobs_core::{
    JobChanges, JobError, JobId, KeyLookup, Leadership, Notifier, SchemaGate, TableHealth,
    TableUpkeep, Wakeups,
};

use crate::SeaOrmStore;

#[async_trait]
impl Notifier for SeaOrmStore {
    async fn subscribe(&self) -> Result<Wakeups, JobError> {
        SeaOrmStore::subscribe(self).await
    }

    fn wake_workers(&self, queue: &str) {
        SeaOrmStore::wake_workers(self, queue)
    }

    fn watch_job(&self, id: JobId) -> JobChanges {
        SeaOrmStore::watch_job(self, id)
    }
}

#[async_trait]
impl Leadership for SeaOrmStore {
    async fn lead(&self, role: &str, holder: &str, ttl: Duration) -> Result<bool, JobError> {
        SeaOrmStore::lead(self, role, holder, ttl).await
    }

    async fn resign(&self, role: &str, holder: &str) -> Result<(), JobError> {
        SeaOrmStore::resign(self, role, holder).await
    }
}

#[async_trait]
impl TableUpkeep for SeaOrmStore {
    async fn table_health(&self) -> Result<Vec<TableHealth>, JobError> {
        SeaOrmStore::table_health(self).await
    }

    async fn vacuum_table(&self, table: &str) -> Result<(), JobError> {
        SeaOrmStore::vacuum_table(self, table).await
    }
}

#[async_trait]
impl KeyLookup for SeaOrmStore {
    async fn tenant_for_key(&self, secret: &str) -> Result<Option<String>, JobError> {
        SeaOrmStore::tenant_for_key(self, secret).await
    }

    async fn has_any_keys(&self) -> Result<bool, JobError> {
        SeaOrmStore::has_any_keys(self).await
    }

    async fn has_active_keys(&self) -> Result<bool, JobError> {
        SeaOrmStore::has_active_keys(self).await
    }
}

#[async_trait]
impl SchemaGate for SeaOrmStore {
    async fn schema_refusal(&self) -> Result<Option<String>, JobError> {
        let status = crate::schema_check(self.connection()).await;
        if status.is_ready() {
            Ok(None)
        } else if status.blocks_work() {
            Ok(Some(status.to_string()))
        } else {
            Err(JobError::Unavailable(status.to_string()))
        }
    }

    async fn readiness(&self) -> Result<(), String> {
        crate::readiness(self.connection()).await
    }
}
