//! The HTTP side: batch enqueue into an api process, and K clients creating then reading.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::try_join_all;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{HttpArgs, child::Process, report::Report, setup};

fn client() -> anyhow::Result<reqwest::Client> {
    // Plain HTTP only, but reqwest wants a TLS provider chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()?)
}

fn job_body() -> Value {
    json!({"kind": setup::KIND, "queue": setup::QUEUE, "args": {}})
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
    let http = client()?;
    let url = format!("{base}/v1/jobs/batch");
    let prefer = if minimal {
        "return=minimal"
    } else {
        "return=representation"
    };
    let started = Instant::now();
    let mut sent = 0;
    while sent < n {
        let count = batch.min(n - sent);
        let body = json!({"jobs": vec![job_body(); count]});
        let response = http
            .post(&url)
            .header("prefer", prefer)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let answer = response.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "batch answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
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

/// `clients` loops sending `request` until `seconds` pass.
async fn phase<F, Fut>(clients: usize, seconds: f64, request: F) -> anyhow::Result<Phase>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks = (0..clients).map(|client| {
        let request = request.clone();
        tokio::spawn(async move {
            let mut phase = Phase::default();
            while Instant::now() < until {
                let sent = Instant::now();
                match request(client).await {
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

/// The body of a response with status `want`. It is not parsed here: the load
/// generator shares the machine with what it measures, and parsing every job it reads
/// back took a third of its CPU.
async fn expect_status(response: reqwest::Response, want: u16) -> Result<impl AsRef<[u8]>, String> {
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status == want {
        Ok(body)
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
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
    let http = client()?;
    let created: Arc<Mutex<Vec<String>>> = Arc::default();

    let creates = {
        let (http, created, url) = (http.clone(), created.clone(), format!("{base}/v1/jobs"));
        phase(args.clients, args.seconds, move |_| {
            let (http, created, url) = (http.clone(), created.clone(), url.clone());
            async move {
                let response = http.post(&url).json(&job_body()).send().await;
                let body = expect_status(response.map_err(|e| e.to_string())?, 202).await?;
                let created_job: Created =
                    serde_json::from_slice(body.as_ref()).map_err(|e| e.to_string())?;
                created.lock().expect("ids").push(created_job.id);
                Ok(())
            }
        })
        .await?
    };
    let ids = Arc::new(std::mem::take(&mut *created.lock().expect("ids")));
    anyhow::ensure!(
        !ids.is_empty(),
        "no job was created: {:?}",
        creates.first_error
    );
    let reads = {
        let (http, base) = (http.clone(), base.clone());
        phase(args.clients, args.seconds, move |_| {
            let (http, ids, base) = (http.clone(), ids.clone(), base.clone());
            async move {
                let id = &ids[fastrand::usize(..ids.len())];
                let response = http.get(format!("{base}/v1/jobs/{id}")).send().await;
                expect_status(response.map_err(|e| e.to_string())?, 200).await?;
                Ok(())
            }
        })
        .await?
    };
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
