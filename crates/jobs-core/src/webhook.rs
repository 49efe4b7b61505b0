//! Webhooks: per-tenant subscriptions to job events, delivered as jobs of the built-in
//! kind `webhook` on the queue `webhooks`, signed the Standard Webhooks way.
//!
//! Events are written by the database itself, in the transaction of the change (see
//! migration `m20261206_000011_webhooks`): one delivery job per subscribed event, whose
//! arguments are `{"webhook_id", "event": {"type", "timestamp", "data"}}`. The delivery
//! job's id is the event's `webhook-id`, the same on every retry.

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{FieldError, JobError, NewJob};

/// The kind of delivery jobs; jobs of this kind emit no events themselves.
pub const WEBHOOK_KIND: &str = "webhook";
/// The queue of delivery jobs, served by default by the api's embedded worker and by
/// `jobs-worker`.
pub const WEBHOOK_QUEUE: &str = "webhooks";
/// What a test delivery (`POST /v1/webhooks/{id}/test`) is called.
pub const TEST_EVENT: &str = "webhook.test";
/// The events a subscription may name.
pub const EVENTS: [&str; 8] = [
    "job.created",
    "job.started",
    "job.progress",
    "job.completed",
    "job.partial",
    "job.failed",
    "job.cancelled",
    "job.retrying",
];
/// Every secret starts with this; the rest is the base64 of the signing key.
pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of a generated signing key.
pub const SECRET_BYTES: usize = 32;
const SECRET_MIN_BYTES: usize = 24;
const SECRET_MAX_BYTES: usize = 64;
pub const URL_MAX_LEN: usize = 2048;
/// Subscriptions per tenant.
pub const MAX_PER_TENANT: usize = 100;

/// The hosts that outgoing requests (the `http` handler, webhook deliveries) may call;
/// empty allows none. Names compare without regard to ASCII case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    pub fn new(hosts: Vec<String>) -> Self {
        Self(hosts)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Err` with the reason when `url` may not be called.
    pub fn check(&self, url: &url::Url) -> Result<(), String> {
        let host = url.host_str().unwrap_or_default();
        if self
            .0
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
        {
            Ok(())
        } else {
            Err(format!("{host} is not in the allowed hosts"))
        }
    }

    /// Parses `raw` as an http(s) URL this list allows.
    pub fn parse(&self, raw: &str) -> Result<url::Url, String> {
        let url = url::Url::parse(raw).map_err(|e| e.to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be http or https".into());
        }
        self.check(&url)?;
        Ok(url)
    }
}

/// A subscription to create. `secret`, when given, must be `whsec_` and the base64 of
/// 24 to 64 bytes; when not, one is generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    pub tenant: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: Option<String>,
}

impl NewWebhook {
    /// Every bad field named: `url`, `events`, `events[i]`, `secret`.
    pub fn validate(&self, hosts: &AllowedHosts) -> Result<(), JobError> {
        let mut errors = Vec::new();
        if self.url.len() > URL_MAX_LEN {
            errors.push(FieldError::new(
                "url",
                format!("at most {URL_MAX_LEN} bytes"),
            ));
        } else if let Err(reason) = hosts.parse(&self.url) {
            errors.push(FieldError::new("url", reason));
        }
        if self.events.is_empty() {
            errors.push(FieldError::new("events", "name at least one event"));
        }
        for (i, event) in self.events.iter().enumerate() {
            if !EVENTS.contains(&event.as_str()) {
                errors.push(FieldError::new(
                    format!("events[{i}]"),
                    format!("unknown event; expected one of {}", EVENTS.join(", ")),
                ));
            } else if self.events[..i].contains(event) {
                errors.push(FieldError::new(format!("events[{i}]"), "named twice"));
            }
        }
        if let Some(Err(reason)) = self.secret.as_deref().map(signing_key) {
            errors.push(FieldError::new("secret", reason));
        }
        JobError::invalid_if_any(errors)
    }
}

/// A subscription as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: Uuid,
    pub tenant: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: OffsetDateTime,
}

/// A new subscription with its secret, shown only at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedWebhook {
    pub webhook: Webhook,
    pub secret: String,
}

/// Where and how a delivery is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: String,
}

/// Subscriptions, per tenant.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Stores a validated subscription (`NewWebhook::validate`); a secret is generated
    /// when none is given. `Conflict` past `MAX_PER_TENANT`.
    async fn create_webhook(&self, webhook: NewWebhook) -> Result<CreatedWebhook, JobError>;

    /// The tenant's subscriptions, oldest first.
    async fn webhooks(&self, tenant: &str) -> Result<Vec<Webhook>, JobError>;

    /// `WebhookNotFound` unless the tenant has it. Deliveries not yet sent end unsent.
    async fn delete_webhook(&self, tenant: &str, id: Uuid) -> Result<(), JobError>;

    /// The URL and secret of the tenant's subscription, `None` once deleted.
    async fn webhook_target(
        &self,
        tenant: &str,
        id: Uuid,
    ) -> Result<Option<WebhookTarget>, JobError>;
}

/// What a delivery job carries: the subscription and the event, exactly as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    pub webhook_id: Uuid,
    pub event: Value,
}

/// A delivery job of `event_type` to subscription `webhook_id`, as the database's
/// triggers write them for job events.
pub fn delivery_job(tenant: &str, webhook_id: Uuid, event_type: &str, data: Value) -> NewJob {
    let timestamp = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("now formats");
    let event = json!({"type": event_type, "timestamp": timestamp, "data": data});
    let args = serde_json::to_value(Delivery { webhook_id, event }).expect("a delivery is JSON");
    NewJob::new(WEBHOOK_KIND, args)
        .tenant(tenant)
        .queue(WEBHOOK_QUEUE)
}

/// The signing key of a secret (`whsec_` + base64), or why it is not one.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| format!("must start with {SECRET_PREFIX}"))?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|e| format!("after {SECRET_PREFIX}, must be base64: {e}"))?;
    if !(SECRET_MIN_BYTES..=SECRET_MAX_BYTES).contains(&key.len()) {
        return Err(format!(
            "must encode {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes"
        ));
    }
    Ok(key)
}

/// A secret for `key` (random bytes of the caller's choosing).
pub fn secret_of(key: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` header: `v1,` and the base64 of the HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under the key of `secret`.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key = signing_key(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(url: &str, events: &[&str], secret: Option<&str>) -> NewWebhook {
        NewWebhook {
            tenant: "t".into(),
            url: url.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            secret: secret.map(str::to_owned),
        }
    }

    fn fields(result: Result<(), JobError>) -> Vec<String> {
        match result {
            Err(JobError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn validation_names_each_field() {
        let hosts = AllowedHosts::new(vec!["hooks.example".into()]);
        let ok = new("https://HOOKS.example/in", &["job.completed"], None);
        assert!(ok.validate(&hosts).is_ok());
        let bad = new(
            "https://evil.example/",
            &["job.completed", "job.nope", "job.completed"],
            Some("whsec_short"),
        );
        assert_eq!(
            fields(bad.validate(&hosts)),
            ["url", "events[1]", "events[2]", "secret"]
        );
        assert_eq!(
            fields(new("ftp://hooks.example/", &[], None).validate(&hosts)),
            ["url", "events"]
        );
        // The host is the URL's, not text that merely looks like it.
        let userinfo = new("http://hooks.example@evil.example/", &["job.failed"], None);
        assert_eq!(fields(userinfo.validate(&hosts)), ["url"]);
    }

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let signed = signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(
            signed.unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn generated_secrets_are_valid() {
        let secret = secret_of(&[7u8; SECRET_BYTES]);
        assert_eq!(signing_key(&secret).unwrap(), vec![7u8; SECRET_BYTES]);
    }
}
