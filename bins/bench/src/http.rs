//! The HTTP side: batch enqueue into an api process, and K clients creating then reading.
//!
//! Each client owns one HTTP/1.1 connection (hyper's connection API, no pool): the load
//! generator shares the two cores with the api and the database it measures, so it
//! should spend as little of them as it can. Through reqwest's pooled client it took
//! more CPU than the api itself.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use bytes::Bytes;
use futures::future::{BoxFuture, try_join_all};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, client::conn::http1, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{HttpArgs, child::Process, report::Report, setup};

/// Longest a request may take before the benchmark gives up on the api.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn job_body() -> Value {
    json!({"kind": setup::KIND, "queue": setup::QUEUE, "args": {}})
}

/// One HTTP/1.1 connection to the api, one request at a time.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    /// To `base`, `http://host:port`.
    async fn open(base: &str) -> anyhow::Result<Self> {
        let host = base.strip_prefix("http://").context("an http:// base")?;
        let stream = tokio::net::TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        // Drives the connection; ends when `sender` is dropped.
        tokio::spawn(connection);
        Ok(Self {
            sender,
            host: host.to_owned(),
        })
    }

    /// The response's status and whole body, or the error as text. A JSON `body` is sent
    /// with `headers`.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Bytes), String> {
        let call = async {
            self.sender.ready().await.map_err(|e| e.to_string())?;
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, &self.host);
            if body.is_some() {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request
                .body(Full::new(body.unwrap_or_default()))
                .map_err(|e| e.to_string())?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")))
    }

    /// The body of a response with status `want`; otherwise an error with both.
    async fn expect(
        &mut self,
        want: u16,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<Bytes, String> {
        let (status, answer) = self.send(method, path, body, headers).await?;
        match status == want {
            true => Ok(answer),
            false => Err(format!("{status}: {}", String::from_utf8_lossy(&answer))),
        }
    }
}

/// `POST /v1/jobs/batch` calls of `batch` jobs from one client, each answer read whole;
/// with `minimal`, asking for the ids alone (`Prefer: return=minimal`). Returns the time
/// taken.
pub async fn enqueue_batches(
    base: &str,
    n: usize,
    batch: usize,
    minimal: bool,
) -> anyhow::Result<Duration> {
    let mut connection = Connection::open(base).await?;
    let prefer = match minimal {
        true => "return=minimal",
        false => "return=representation",
    };
    let started = Instant::now();
    let mut sent = 0;
    while sent < n {
        let count = batch.min(n - sent);
        let body = serde_json::to_vec(&json!({"jobs": vec![job_body(); count]}))?;
        connection
            .expect(
                202,
                Method::POST,
                "/v1/jobs/batch",
                Some(body.into()),
                &[("prefer", prefer)],
            )
            .await
            .map_err(|e| anyhow::anyhow!("batch answered {e}"))?;
        sent += count;
    }
    Ok(started.elapsed())
}

/// Samples of one phase: latencies of successful requests, and failures.
#[derive(Debug, Default)]
struct Phase {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    took: Duration,
}

/// `clients` loops, each on its own connection, sending `request` until `seconds` pass.
async fn phase<F>(base: &str, clients: usize, seconds: f64, request: F) -> anyhow::Result<Phase>
where
    F: for<'c> Fn(&'c mut Connection) -> BoxFuture<'c, Result<(), String>> + Clone + Send + 'static,
{
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(Connection::open(base).await?);
    }
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks = connections.into_iter().map(|mut connection| {
        let request = request.clone();
        tokio::spawn(async move {
            let mut phase = Phase::default();
            while Instant::now() < until {
                let sent = Instant::now();
                match request(&mut connection).await {
                    Ok(()) => phase.latencies.push(sent.elapsed()),
                    Err(error) => {
                        phase.errors += 1;
                        phase.first_error.get_or_insert(error);
                    }
                }
            }
            phase
        })
    });
    let mut total = Phase::default();
    for phase in try_join_all(tasks).await? {
        total.latencies.extend(phase.latencies);
        total.errors += phase.errors;
        total.first_error = total.first_error.or(phase.first_error);
    }
    total.took = started.elapsed();
    Ok(total)
}

/// What a create answers that the benchmark needs.
#[derive(serde::Deserialize)]
struct Created {
    id: String,
}

/// Creates for `seconds`, then reads back random created jobs for as long.
pub async fn run(url: &str, args: &HttpArgs) -> anyhow::Result<()> {
    let store = setup::fresh(url).await?;
    let (api, base) = Process::api(url)?;
    let created: Arc<Mutex<Vec<String>>> = Arc::default();

    let creates = {
        let created = created.clone();
        let body = Bytes::from(serde_json::to_vec(&job_body())?);
        phase(&base, args.clients, args.seconds, move |connection| {
            let (created, body) = (created.clone(), body.clone());
            Box::pin(async move {
                let answer = connection
                    .expect(202, Method::POST, "/v1/jobs", Some(body), &[])
                    .await?;
                // Only the id is parsed: the load generator shares the machine with what
                // it measures, and parsing every job it reads back took a third of its CPU.
                let job: Created = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
                created.lock().expect("ids").push(job.id);
                Ok(())
            })
        })
        .await?
    };
    let ids = Arc::new(std::mem::take(&mut *created.lock().expect("ids")));
    anyhow::ensure!(
        !ids.is_empty(),
        "no job was created: {:?}",
        creates.first_error
    );
    let reads = phase(&base, args.clients, args.seconds, move |connection| {
        let path = format!("/v1/jobs/{}", ids[fastrand::usize(..ids.len())]);
        Box::pin(async move {
            connection
                .expect(200, Method::GET, &path, None, &[])
                .await?;
            Ok(())
        })
    })
    .await?;
    let clean_exit = api.stop()?;

    let mut report = Report::new("http", setup::backend(&store), "http");
    report
        .param("clients", json!(args.clients))
        .param("seconds", json!(args.seconds));
    for (name, mut phase) in [("create", creates), ("get", reads)] {
        report
            .rate(&format!("{name}_per_s"), phase.latencies.len(), phase.took)
            .latencies(name, &mut phase.latencies)
            .add(
                &format!("{name}_errors"),
                json!(phase.errors),
                match &phase.first_error {
                    Some(e) => format!("{} (first: {e})", phase.errors),
                    None => "0".into(),
                },
            );
    }
    report.print();
    anyhow::ensure!(clean_exit, "the api did not exit cleanly");
    Ok(())
}
