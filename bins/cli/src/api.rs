//! The HTTP client: requests to the api, and its answers mapped to data or to an error
//! that carries the exit code scripts rely on.

use std::{fmt, time::Duration};

use reqwest::{Method, Response, StatusCode, Url};
use serde_json::Value;

/// A long-poll waits up to 60 s; a read stalls for longer only when the api is stuck.
const READ_TIMEOUT: Duration = Duration::from_secs(90);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    key: Option<String>,
}

/// A successful answer: its text as sent (what `--json` prints) and its JSON.
#[derive(Debug)]
pub struct Reply {
    pub text: String,
    pub value: Value,
}

/// Why a request did not succeed.
#[derive(Debug)]
pub enum Error {
    /// No answer: refused connection, unknown host, timeout, or not the api.
    Unreachable { url: String, reason: String },
    /// 401 or 403.
    Auth(Problem),
    /// Any other 4xx.
    Refused(Problem),
    /// 5xx.
    Failed { url: String, problem: Problem },
    /// A URL given on the command line that is not one.
    BadUrl(String),
}

/// The api's problem document (RFC 9457), or what stands for it when the body is not one.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub title: Option<String>,
    pub detail: String,
    pub fields: Vec<(String, String)>,
}

impl Error {
    /// The process's exit code for this error (see `jobs --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Auth(_) => 3,
            Error::Refused(_) => 4,
            Error::Unreachable { .. } | Error::Failed { .. } => 5,
            Error::BadUrl(_) => 2,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unreachable { url, reason } => {
                write!(f, "cannot reach the api at {url}: {reason}")
            }
            Error::Auth(p) => write!(
                f,
                "the api refused the API key ({p}); set JOBS_API_KEY or pass --key with a valid key"
            ),
            Error::Refused(p) => write!(f, "{p}"),
            Error::Failed { url, problem } => write!(f, "the api at {url} failed ({problem})"),
            Error::BadUrl(reason) => write!(f, "invalid --url / JOBS_URL: {reason}"),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // With fields, the detail only repeats them: the title heads their list.
        match (&self.title, self.fields.is_empty()) {
            (Some(title), false) => write!(f, "{}: {title}", self.status)?,
            _ => write!(f, "{}: {}", self.status, self.detail)?,
        }
        for (field, message) in &self.fields {
            write!(f, "\n  {field}: {message}")?;
        }
        Ok(())
    }
}

impl Problem {
    fn of(status: StatusCode, text: &str) -> Self {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let detail = match body["detail"].as_str() {
            Some(detail) if !detail.is_empty() => detail.to_owned(),
            _ if !text.trim().is_empty() && body.is_null() => text.trim().to_owned(),
            _ => status.canonical_reason().unwrap_or("error").to_owned(),
        };
        let fields = body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (text_of(&e["field"]), text_of(&e["message"])))
            .collect();
        Self {
            status,
            title: body["title"].as_str().map(str::to_owned),
            detail,
            fields,
        }
    }
}

fn text_of(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// A query string: each pair whose value is given.
pub type Query<'a> = [(&'a str, Option<String>)];

impl Api {
    pub fn new(base: &str, key: Option<String>) -> Result<Self, Error> {
        let base = Url::parse(base).map_err(|e| Error::BadUrl(format!("{base}: {e}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(Error::BadUrl(format!("{base}: not an http(s) URL")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| Error::Unreachable {
                url: base.to_string(),
                reason: format!("no HTTP client: {}", chain(&e)),
            })?;
        Ok(Self { http, base, key })
    }

    pub async fn get(&self, path: &[&str], query: &Query<'_>) -> Result<Reply, Error> {
        self.call(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &[&str], body: Option<&Value>) -> Result<Reply, Error> {
        self.call(Method::POST, path, &[], body).await
    }

    pub async fn post_with(
        &self,
        path: &[&str],
        query: &Query<'_>,
        body: &Value,
    ) -> Result<Reply, Error> {
        self.call(Method::POST, path, query, Some(body)).await
    }

    pub async fn delete(&self, path: &[&str]) -> Result<Reply, Error> {
        self.call(Method::DELETE, path, &[], None).await
    }

    async fn call(
        &self,
        method: Method,
        path: &[&str],
        query: &Query<'_>,
        body: Option<&Value>,
    ) -> Result<Reply, Error> {
        let mut request = self.http.request(method, self.url(path, query));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(request).await?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        match status.is_success() {
            true => self.reply(text),
            false => Err(self.refusal(status, &text)),
        }
    }

    /// An open stream of Server-Sent Events; its body is read as it comes.
    pub async fn stream(&self, path: &[&str]) -> Result<Response, Error> {
        let request = self
            .http
            .get(self.url(path, &[]))
            .header("Accept", "text/event-stream");
        let response = self.send(request).await?;
        match response.status().is_success() {
            true => Ok(response),
            false => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                Err(self.refusal(status, &text))
            }
        }
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> Result<Response, Error> {
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        request.send().await.map_err(|e| self.unreachable(&e))
    }

    /// The base URL with `path` appended segment by segment (each percent-encoded: a
    /// queue name may hold `/`) and the given query pairs.
    fn url(&self, path: &[&str], query: &Query<'_>) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in Api::new: a base URL")
            .pop_if_empty()
            .extend(path);
        let given: Vec<(&str, &String)> = query
            .iter()
            .filter_map(|(name, value)| value.as_ref().map(|v| (*name, v)))
            .collect();
        if !given.is_empty() {
            url.query_pairs_mut().extend_pairs(given);
        }
        url
    }

    fn reply(&self, text: String) -> Result<Reply, Error> {
        if text.is_empty() {
            return Ok(Reply {
                text,
                value: Value::Null,
            });
        }
        match serde_json::from_str(&text) {
            Ok(value) => Ok(Reply { text, value }),
            Err(_) => Err(Error::Unreachable {
                url: self.base.to_string(),
                reason: "it answered, but not with JSON: is it the jobs api?".into(),
            }),
        }
    }

    fn refusal(&self, status: StatusCode, text: &str) -> Error {
        let problem = Problem::of(status, text);
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Auth(problem),
            s if s.is_client_error() => Error::Refused(problem),
            _ => Error::Failed {
                url: self.base.to_string(),
                problem,
            },
        }
    }

    pub fn unreachable(&self, e: &reqwest::Error) -> Error {
        let reason = match e.is_timeout() {
            true => format!("no answer within {} s", READ_TIMEOUT.as_secs()),
            false => chain(e),
        };
        Error::Unreachable {
            url: self.base.to_string(),
            reason,
        }
    }
}

/// An error and its causes, innermost last, without the outer message (which repeats
/// the URL).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut causes = Vec::new();
    let mut source = e.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    match causes.is_empty() {
        true => e.to_string(),
        false => causes.join(": "),
    }
}
