//! Handlers that make the standalone worker useful without writing Rust: `http` calls a
//! webhook; `gather` joins the results of the jobs it depended on; `sleep`, `echo` and
//! `fail` are for trying the system out and for tests.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;
use serde_json::{Value, json};

use jobs_core::{
    AllowedHosts,
    storable::{TRUNCATED_MARKER, storable_text},
    webhook::{self, Delivery},
};

use crate::{HandlerError, JobContext, Output, WorkerBuilder};

/// Registers `sleep`, `echo`, `fail`, `gather`, `webhook` (deliveries of webhook
/// events, to allowed hosts only), and `http` when `http_allowed_hosts` is not empty.
pub fn register(builder: WorkerBuilder, http_allowed_hosts: Vec<String>) -> WorkerBuilder {
    let hosts = AllowedHosts::new(http_allowed_hosts);
    let client = http_client();
    let builder = builder
        .handler("sleep", sleep)
        .handler("echo", echo)
        .handler("fail", fail)
        .handler("gather", gather)
        .handler(
            jobs_core::webhook::WEBHOOK_KIND,
            WebhookHandler {
                client: client.clone(),
                allowed_hosts: hosts.clone(),
            },
        );
    if hosts.is_empty() {
        tracing::info!("http handler off: no allowed hosts given");
        return builder;
    }
    builder.handler(
        "http",
        HttpHandler {
            client,
            allowed_hosts: hosts,
        },
    )
}

/// Serves the queue of webhook deliveries (`webhooks`) with `concurrency` slots, unless
/// it is 0 or the builder serves it already.
pub fn serve_webhooks(builder: WorkerBuilder, concurrency: usize) -> WorkerBuilder {
    let queue = jobs_core::webhook::WEBHOOK_QUEUE;
    if concurrency == 0 || builder.serves(queue) {
        return builder;
    }
    builder.queue(queue, concurrency)
}

/// One client for outgoing requests: no redirects (a redirect could leave the allowed
/// hosts).
fn http_client() -> reqwest::Client {
    // Several crates may race to install it; any installed ring provider is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

fn parse<T: for<'de> Deserialize<'de>>(args: Value) -> Result<T, HandlerError> {
    serde_json::from_value(args).map_err(|e| HandlerError::permanent("invalid_args", e.to_string()))
}

/// `{"ms": 500}`: sleeps, reporting progress; stops early when cancelled. The result says
/// when the handler itself started and ended (`started_at_us`, `ended_at_us`: microseconds
/// since the Unix epoch on this host's clock): a ledger of when jobs really ran, which the
/// claim times in the database cannot give.
async fn sleep(args: Value, ctx: JobContext) -> Result<Output<Value>, HandlerError> {
    #[derive(Deserialize)]
    struct Args {
        ms: u64,
    }
    let started_at_us = epoch_micros();
    let Args { ms } = parse(args)?;
    const STEPS: u64 = 10;
    for step in 1..=STEPS {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms / STEPS)) => {}
            _ = ctx.cancelled() => return Err(HandlerError::permanent("cancelled", "stopped on request")),
        }
        let slept = ms * step / STEPS;
        ctx.progress(
            step as f64 / STEPS as f64,
            format!("slept {slept} of {ms} ms"),
        );
    }
    let ended_at_us = epoch_micros();
    Ok(json!({"slept_ms": ms, "started_at_us": started_at_us, "ended_at_us": ended_at_us}).into())
}

fn epoch_micros() -> i64 {
    let micros = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
    i64::try_from(micros).expect("the clock is within 292,000 years of 1970")
}

/// Returns its arguments.
async fn echo(args: Value, _ctx: JobContext) -> Result<Output<Value>, HandlerError> {
    Ok(args.into())
}

/// The fan-in of a workflow: completes with its parents counted by state and their
/// results, oldest parent first (`{"parents": N, "counts": {...}, "results": [...]}`).
async fn gather(_args: Value, ctx: JobContext) -> Result<Output<Value>, HandlerError> {
    let unavailable =
        |e: jobs_core::JobError| HandlerError::retryable("parents_unavailable", e.to_string());
    let parents = ctx.parent_results().await.map_err(unavailable)?;
    let counts = ctx.parent_counts().await.map_err(unavailable)?;
    let results: Vec<Value> = parents
        .into_iter()
        .map(|p| p.result.unwrap_or(Value::Null))
        .collect();
    Ok(json!({"parents": results.len(), "counts": counts, "results": results}).into())
}

/// `{"times": N}`: fails the first N attempts (retryably), then succeeds.
async fn fail(args: Value, ctx: JobContext) -> Result<Output<Value>, HandlerError> {
    #[derive(Deserialize)]
    struct Args {
        times: i32,
        #[serde(default)]
        permanent: bool,
    }
    let Args { times, permanent } = parse(args)?;
    if ctx.attempt() <= times {
        let message = format!("failing attempt {} of the first {times}", ctx.attempt());
        return Err(if permanent {
            HandlerError::permanent("fail", message)
        } else {
            HandlerError::retryable("fail", message)
        });
    }
    Ok(json!({"succeeded_on_attempt": ctx.attempt()}).into())
}

/// Most bytes of a response body that are read and kept; the rest is dropped and the body
/// ends with `storable::TRUNCATED_MARKER`.
pub const HTTP_BODY_MAX: usize = 1 << 20;
/// Most bytes of a response body quoted in a failed attempt's error message.
const HTTP_BODY_IN_ERROR: usize = 1024;

/// POSTs `body` to `url`. 2xx completes with status and body (JSON when it parses, else
/// text; cut at `HTTP_BODY_MAX`); 5xx, 429, timeouts and connection errors are retried
/// (429 after its `Retry-After`, clamped by the store); other 4xx fail for good. Only
/// allowed hosts are called.
struct HttpHandler {
    client: reqwest::Client,
    allowed_hosts: AllowedHosts,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpArgs {
    url: String,
    #[serde(default)]
    body: Value,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_http_timeout_ms")]
    timeout_ms: u64,
}

fn default_http_timeout_ms() -> u64 {
    10_000
}

impl HttpHandler {
    fn check_host(&self, url: &reqwest::Url) -> Result<(), HandlerError> {
        self.allowed_hosts
            .check(url)
            .map_err(|reason| HandlerError::permanent("host_not_allowed", reason))
    }
}

/// A request that got no answer: retried.
fn send_error(e: reqwest::Error) -> HandlerError {
    let kind = if e.is_timeout() {
        "timeout"
    } else {
        "connection"
    };
    HandlerError::retryable(kind, e.to_string())
}

/// The `Retry-After` of a response, in seconds.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A retryable error for a non-2xx answer, after its `Retry-After` when it is a 429.
fn retry_status(
    status: reqwest::StatusCode,
    message: String,
    after: Option<Duration>,
) -> HandlerError {
    let kind = format!("http_{}", status.as_u16());
    match after {
        Some(delay) if status.as_u16() == 429 => HandlerError::retry_after(kind, message, delay),
        _ => HandlerError::retryable(kind, message),
    }
}

/// The body as text, read up to `cap` bytes (cut at a character boundary); true when
/// more followed.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(String, bool), HandlerError> {
    let mut bytes = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HandlerError::retryable("connection", e.to_string()))?
    {
        let room = cap - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if truncated {
        // A multi-byte character cut in two decodes as U+FFFD at the end: drop it.
        while text.len() > cap.saturating_sub(TRUNCATED_MARKER.len()) {
            text.pop();
        }
    }
    Ok((text, truncated))
}

#[async_trait::async_trait]
impl crate::Handler for HttpHandler {
    async fn run(&self, args: Value, _ctx: JobContext) -> Result<Output<Value>, HandlerError> {
        let args: HttpArgs = parse(args)?;
        let url = reqwest::Url::parse(&args.url)
            .map_err(|e| HandlerError::permanent("invalid_args", format!("url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HandlerError::permanent(
                "invalid_args",
                "url must be http or https",
            ));
        }
        self.check_host(&url)?;
        let mut request = self
            .client
            .post(url)
            .timeout(Duration::from_millis(args.timeout_ms))
            .json(&args.body);
        for (name, value) in &args.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(send_error)?;
        let status = response.status();
        let retry_after = retry_after(&response);
        let (text, truncated) = read_capped(response, HTTP_BODY_MAX).await?;
        let message = format!(
            "HTTP {status}: {}",
            storable_text(&text, HTTP_BODY_IN_ERROR)
        );
        let body = match truncated {
            false => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            true => Value::String(format!("{text}{TRUNCATED_MARKER}")),
        };
        let result = json!({"status": status.as_u16(), "body": body});
        match status.as_u16() {
            200..=299 => Ok(result.into()),
            429 | 500..=599 => Err(retry_status(status, message, retry_after)),
            _ => Err(HandlerError::permanent(
                format!("http_{}", status.as_u16()),
                message,
            )),
        }
    }
}

/// How long a webhook receiver has to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Delivers one webhook event (`jobs_core::webhook::Delivery`): POSTs it as JSON with the
/// Standard Webhooks headers, the job's id as `webhook-id` (the same on every retry).
/// 2xx completes; any other answer or no answer is retried with backoff. A deleted
/// subscription completes unsent; a host no longer allowed fails for good.
struct WebhookHandler {
    client: reqwest::Client,
    allowed_hosts: AllowedHosts,
}

#[async_trait::async_trait]
impl crate::Handler for WebhookHandler {
    async fn run(&self, args: Value, ctx: JobContext) -> Result<Output<Value>, HandlerError> {
        let delivery: Delivery = parse(args)?;
        let target = ctx
            .webhook_target(delivery.webhook_id)
            .await
            .map_err(|e| HandlerError::retryable("webhook_unavailable", e.to_string()))?;
        let Some(target) = target else {
            return Ok(json!({"sent": false, "reason": "webhook deleted"}).into());
        };
        let url = self
            .allowed_hosts
            .parse(&target.url)
            .map_err(|reason| HandlerError::permanent("host_not_allowed", reason))?;
        let body = serde_json::to_vec(&delivery.event)
            .map_err(|e| HandlerError::permanent("invalid_args", e.to_string()))?;
        let id = ctx.id().to_string();
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = webhook::signature(&target.secret, &id, timestamp, &body)
            .map_err(|reason| HandlerError::permanent("invalid_secret", reason))?;
        let response = self
            .client
            .post(url)
            .timeout(WEBHOOK_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(send_error)?;
        let status = response.status();
        let after = retry_after(&response);
        if status.is_success() {
            return Ok(json!({"sent": true, "status": status.as_u16()}).into());
        }
        let (text, _) = read_capped(response, HTTP_BODY_IN_ERROR).await?;
        let message = format!(
            "HTTP {status}: {}",
            storable_text(&text, HTTP_BODY_IN_ERROR)
        );
        Err(retry_status(status, message, after))
    }
}
