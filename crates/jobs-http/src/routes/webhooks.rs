//! Webhook subscriptions over HTTP: `/v1/webhooks`, per tenant. Events are delivered as
//! jobs of kind `webhook` (`GET /v1/jobs?kind=webhook` is the delivery log); URLs must
//! name a host of the api's allow list (`--http-allow-host`).

use actix_web::{HttpResponse, delete, get, post, web};
use jobs_core::{CreatedWebhook, JobError, NewWebhook, Webhook, webhook};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    ApiState,
    dto::{Created, JobView},
    error::{ApiError, Problem},
    extract::{Json, Tenant},
};

type Data = web::Data<ApiState>;

/// A subscription to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where events are POSTed; its host must be one the api allows (`--http-allow-host`).
    #[schema(max_length = 2048, example = "https://hooks.example.com/jobs")]
    pub url: String,
    /// The events to send, each once.
    #[schema(min_items = 1, max_items = 8, inline)]
    pub events: Vec<EventName>,
    /// `whsec_` and the base64 of a 24 to 64 byte key; generated when not given.
    #[schema(
        pattern = "^whsec_[A-Za-z0-9+/]+={0,2}$",
        example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    )]
    pub secret: Option<String>,
}

/// An event a subscription may name.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub enum EventName {
    #[serde(rename = "job.created")]
    #[schema(rename = "job.created")]
    Created,
    #[serde(rename = "job.started")]
    #[schema(rename = "job.started")]
    Started,
    #[serde(rename = "job.progress")]
    #[schema(rename = "job.progress")]
    Progress,
    #[serde(rename = "job.completed")]
    #[schema(rename = "job.completed")]
    Completed,
    #[serde(rename = "job.partial")]
    #[schema(rename = "job.partial")]
    Partial,
    #[serde(rename = "job.failed")]
    #[schema(rename = "job.failed")]
    Failed,
    #[serde(rename = "job.cancelled")]
    #[schema(rename = "job.cancelled")]
    Cancelled,
    #[serde(rename = "job.retrying")]
    #[schema(rename = "job.retrying")]
    Retrying,
}

/// A subscription; its secret is shown only when it is created.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url,
            events: w.events,
            created_at: w.created_at,
        }
    }
}

/// A new subscription with the secret its deliveries are signed with (Standard Webhooks:
/// `webhook-signature` is `v1,` and the base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`
/// under the base64-decoded part after `whsec_`). Shown only now.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: WebhookView,
    pub secret: String,
}

impl From<CreatedWebhook> for WebhookCreated {
    fn from(c: CreatedWebhook) -> Self {
        Self {
            webhook: c.webhook.into(),
            secret: c.secret,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub items: Vec<WebhookView>,
}

/// A path id that no subscription can have names none: 404.
fn webhook_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("webhook {raw} not found")))
}

/// Subscribe to job events.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses(
        (status = 201, body = WebhookCreated),
        (status = 400, description = "Malformed JSON, unknown field, or invalid values (`errors` names each: `url` (not http(s), or a host not allowed), `events[i]`, `secret`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant has 100 subscriptions, the most allowed", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/webhooks")]
pub async fn create_webhook(
    state: Data,
    Tenant(tenant): Tenant,
    Json(body): Json<CreateWebhook>,
) -> Result<HttpResponse, ApiError> {
    let events = body.events.iter().map(event_name).collect();
    let new = NewWebhook {
        tenant: tenant.clone(),
        url: body.url,
        events,
        secret: body.secret,
    };
    new.validate(&state.config.webhook_hosts)?;
    let created = state.store.create_webhook(new).await?;
    tracing::info!(%tenant, webhook_id = %created.webhook.id, url = %created.webhook.url, "webhook created");
    Ok(HttpResponse::Created().json(WebhookCreated::from(created)))
}

fn event_name(event: &EventName) -> String {
    serde_json::to_value(event)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("an event name serializes as a string")
}

/// The tenant's subscriptions, without their secrets.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses(
        (status = 200, body = WebhookList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[get("/v1/webhooks")]
pub async fn list_webhooks(state: Data, Tenant(tenant): Tenant) -> Result<HttpResponse, ApiError> {
    let items = state.store.webhooks(&tenant).await?;
    Ok(HttpResponse::Ok().json(WebhookList {
        items: items.into_iter().map(Into::into).collect(),
    }))
}

/// Unsubscribe: 204. Deliveries not yet sent end without sending.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[delete("/v1/webhooks/{id}")]
pub async fn delete_webhook(
    state: Data,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&path)?;
    state.store.delete_webhook(&tenant, id).await?;
    tracing::info!(%tenant, webhook_id = %id, "webhook deleted");
    Ok(HttpResponse::NoContent().finish())
}

/// Send a `webhook.test` event: 202 with its delivery job (poll it at `/v1/jobs/{id}`;
/// its id is the delivery's `webhook-id`).
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path)),
    responses(
        (status = 202, body = Created),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
#[post("/v1/webhooks/{id}/test")]
pub async fn test_webhook(
    state: Data,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&path)?;
    if state.store.webhook_target(&tenant, id).await?.is_none() {
        return Err(JobError::WebhookNotFound(id).into());
    }
    let data = json!({"webhook_id": id});
    let job = webhook::delivery_job(&tenant, id, webhook::TEST_EVENT, data);
    let enqueued = state.store.enqueue(job).await?;
    Ok(HttpResponse::Accepted().json(Created {
        duplicate: false,
        replaced: false,
        job: JobView::from(enqueued.job),
    }))
}
