//! Webhook subscriptions: the `jobs_webhooks` rows. The events themselves are written by
//! the triggers of migration `m20261206_000011_webhooks`, in the transaction of each
//! change to a job; nothing here is on the path of a job.

use async_trait::async_trait;
use jobs_core::{
    CreatedWebhook, JobError, NewWebhook, Webhook, WebhookStore, WebhookTarget, webhook,
};
use sea_orm::FromQueryResult;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{SeaOrmStore, db_error};

#[derive(Debug, FromQueryResult)]
struct Row {
    id: Uuid,
    tenant: String,
    url: String,
    events: serde_json::Value,
    created_at: OffsetDateTime,
}

impl Row {
    fn into_webhook(self) -> Result<Webhook, JobError> {
        let events = serde_json::from_value(self.events).map_err(|e| {
            JobError::Storage(format!("webhook {} has malformed events: {e}", self.id))
        })?;
        Ok(Webhook {
            id: self.id,
            tenant: self.tenant,
            url: self.url,
            events,
            created_at: self.created_at,
        })
    }
}

const COLUMNS: &str = "id, tenant, url, events, created_at";

/// A new secret: `whsec_` and the base64 of random bytes from the OS generator.
fn new_secret() -> Result<String, JobError> {
    let mut key = [0u8; webhook::SECRET_BYTES];
    getrandom::fill(&mut key)
        .map_err(|e| JobError::Unavailable(format!("no random bytes for a secret: {e}")))?;
    Ok(webhook::secret_of(&key))
}

impl SeaOrmStore {
    async fn webhook_rows(&self, sql: crate::sql::Sql) -> Result<Vec<Webhook>, JobError> {
        Row::find_by_statement(sql.build())
            .all(&self.db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(Row::into_webhook)
            .collect()
    }
}

#[async_trait]
impl WebhookStore for SeaOrmStore {
    async fn create_webhook(&self, new: NewWebhook) -> Result<CreatedWebhook, JobError> {
        let secret = match new.secret {
            Some(secret) => secret,
            None => new_secret()?,
        };
        let mut sql = self.sql();
        let values = [
            sql.bind(Uuid::now_v7()),
            sql.bind(new.tenant.clone()),
            sql.bind(new.url),
            sql.bind(serde_json::Value::from(new.events)),
            sql.bind(secret.clone()),
        ];
        let tenant = sql.bind(new.tenant);
        let most = sql.bind(webhook::MAX_PER_TENANT as i64);
        // The count and the insert are one statement; two racing creates may both pass
        // it, which a limit against accidents tolerates.
        sql.push(&format!(
            "INSERT INTO jobs_webhooks (id, tenant, url, events, secret, created_at) \
             SELECT {}, {now} WHERE (SELECT count(*) FROM jobs_webhooks WHERE tenant = {tenant}) < {most} \
             RETURNING {COLUMNS}",
            values.join(", "),
            now = self.dialect.now(),
        ));
        let webhook = self.webhook_rows(sql).await?.pop().ok_or_else(|| {
            JobError::Conflict(format!(
                "the tenant has {} webhooks, the most allowed; delete one first",
                webhook::MAX_PER_TENANT
            ))
        })?;
        Ok(CreatedWebhook { webhook, secret })
    }

    async fn webhooks(&self, tenant: &str) -> Result<Vec<Webhook>, JobError> {
        let mut sql = self.sql();
        let tenant = sql.bind(tenant.to_owned());
        sql.push(&format!(
            "SELECT {COLUMNS} FROM jobs_webhooks WHERE tenant = {tenant} ORDER BY created_at, id"
        ));
        self.webhook_rows(sql).await
    }

    async fn delete_webhook(&self, tenant: &str, id: Uuid) -> Result<(), JobError> {
        let mut sql = self.sql();
        let (tenant, id_param) = (sql.bind(tenant.to_owned()), sql.bind(id));
        sql.push(&format!(
            "DELETE FROM jobs_webhooks WHERE tenant = {tenant} AND id = {id_param}"
        ));
        match self.execute(sql).await?.rows_affected() {
            0 => Err(JobError::WebhookNotFound(id)),
            _ => Ok(()),
        }
    }

    async fn webhook_target(
        &self,
        tenant: &str,
        id: Uuid,
    ) -> Result<Option<WebhookTarget>, JobError> {
        let mut sql = self.sql();
        let (tenant, id) = (sql.bind(tenant.to_owned()), sql.bind(id));
        sql.push(&format!(
            "SELECT url, secret FROM jobs_webhooks WHERE tenant = {tenant} AND id = {id}"
        ));
        let Some(row) = self.query(sql).await?.pop() else {
            return Ok(None);
        };
        Ok(Some(WebhookTarget {
            url: row.try_get("", "url").map_err(db_error)?,
            secret: row.try_get("", "secret").map_err(db_error)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use migration::m20261206_000011_webhooks as triggers;

    #[test]
    fn the_triggers_write_deliveries_of_the_kind_and_queue_workers_serve() {
        assert_eq!(triggers::KIND, jobs_core::webhook::WEBHOOK_KIND);
        assert_eq!(triggers::QUEUE, jobs_core::webhook::WEBHOOK_QUEUE);
        assert_eq!(triggers::ENQUEUED_CHANNEL, crate::wake::ENQUEUED_CHANNEL);
    }
}
