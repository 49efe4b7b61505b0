//! Handlers that make the standalone worker useful without writing Rust: `http` calls a
//! webhook; `gather` joins the results of the jobs it depended on; `sleep`, `echo` and
//! `fail` are for trying the system out and for tests.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;
use serde_json::{Value, json};

use jobs_core::storable::{TRUNCATED_MARKER, storable_text};

use crate::{HandlerError, JobContext, Output, WorkerBuilder};

/// Registers `sleep`, `echo`, `fail`, `gather`, and `http` when `http_allowed_hosts` is
/// not empty.
pub fn register(builder: WorkerBuilder, http_allowed_hosts: Vec<String>) -> WorkerBuilder {
    let builder = builder
        .handler("sleep", sleep)
        .handler("echo", echo)
        .handler("fail", fail)
        .handler("gather", gather);
    if http_allowed_hosts.is_empty() {
        tracing::info!("http handler off: no allowed hosts given");
        return builder;
    }
    builder.handler("http", HttpHandler::new(http_allowed_hosts))
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
    allowed_hosts: Vec<String>,
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
    fn new(allowed_hosts: Vec<String>) -> Self {
        // Several crates may race to install it; any installed ring provider is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        Self {
            client,
            allowed_hosts,
        }
    }

    fn check_host(&self, url: &reqwest::Url) -> Result<(), HandlerError> {
        let host = url.host_str().unwrap_or_default();
        if self
            .allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
        {
            Ok(())
        } else {
            Err(HandlerError::permanent(
                "host_not_allowed",
                format!("{host} is not in the allowed hosts"),
            ))
        }
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
        let response = request.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                "timeout"
            } else {
                "connection"
            };
            HandlerError::retryable(kind, e.to_string())
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
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
            429 => Err(match retry_after {
                Some(delay) => HandlerError::retry_after("http_429", message, delay),
                None => HandlerError::retryable("http_429", message),
            }),
            500..=599 => Err(HandlerError::retryable(
                format!("http_{}", status.as_u16()),
                message,
            )),
            _ => Err(HandlerError::permanent(
                format!("http_{}", status.as_u16()),
                message,
            )),
        }
    }
}
