//! Load: N concurrent HTTP clients create and read back jobs for a while against a real
//! `jobs-api` process and a real `jobs-worker` process on PostgreSQL. Prints create and
//! read latencies (p50/p90/p99/max), throughput, errors, how long the worker takes to drain
//! what is left, and the memory (RSS) and CPU of both processes before and after; the
//! last line is a one-line JSON summary of all the figures.
//!
//! The database named by `--database-url` is DROPPED and recreated first.
//!
//! ```sh
//! cargo run --release -p blackbox-tests --example load -- \
//!     [--database-url postgres:///jobs_load?host=/var/run/postgresql&user=me] \
//!     [--clients 64] [--seconds 60] [--worker-concurrency 50] [--drain-timeout 60] \
//!     [--scrape-metrics 0]
//! ```
//!
//! Each option can also be set as `LOAD_DATABASE_URL`, `LOAD_CLIENTS`, `LOAD_SECONDS`,
//! `LOAD_WORKER_CONCURRENCY`, `LOAD_DRAIN_TIMEOUT`, `LOAD_SCRAPE_METRICS`. `--scrape-metrics S`
//! GETs the api's `/metrics` every S seconds during the load, as Prometheus would (0: never,
//! the default, as with no Prometheus configured). Exits 1 on any request error, an
//! incomplete drain, or a process that does not exit 0 on SIGTERM. Process logs (RUST_LOG
//! = warn) go to `$TMPDIR/jobs-load-logs/{api,worker}.log`.

#![allow(clippy::print_stdout)]

use std::{
    collections::BTreeMap,
    error::Error,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio::time::Instant;

type AnyResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// How many error messages are printed (all are counted).
const SHOWN_ERRORS: usize = 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Options {
    database_url: String,
    clients: usize,
    seconds: u64,
    worker_concurrency: usize,
    drain_timeout: u64,
    scrape_metrics: u64,
}

fn parse_options() -> AnyResult<Options> {
    let user = Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|u| !u.is_empty())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "postgres".into());
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut values: BTreeMap<&str, String> = BTreeMap::new();
    let names = [
        ("database-url", "LOAD_DATABASE_URL"),
        ("clients", "LOAD_CLIENTS"),
        ("seconds", "LOAD_SECONDS"),
        ("worker-concurrency", "LOAD_WORKER_CONCURRENCY"),
        ("drain-timeout", "LOAD_DRAIN_TIMEOUT"),
        ("scrape-metrics", "LOAD_SCRAPE_METRICS"),
    ];
    for (flag, var) in names {
        if let Some(v) = env(var) {
            values.insert(flag, v);
        }
    }
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            println!(
                "usage: load [--database-url URL] [--clients N] [--seconds S] \
                 [--worker-concurrency N] [--drain-timeout S] [--scrape-metrics S]\n\
                 The database in URL is dropped and recreated first."
            );
            std::process::exit(0);
        }
        let Some(stripped) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?} (try --help)").into());
        };
        let (flag, value) = match stripped.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), value.to_owned()),
            None => {
                let value = args.next().ok_or(format!("--{stripped} needs a value"))?;
                (stripped.to_owned(), value)
            }
        };
        let Some((known, _)) = names.iter().find(|(f, _)| *f == flag) else {
            return Err(format!("unknown option --{flag} (try --help)").into());
        };
        values.insert(known, value);
    }
    let number = |flag: &str, default: u64, min: u64| -> AnyResult<u64> {
        match values.get(flag) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(format!("--{flag} must be an integer >= {min}, not {v:?}").into()),
            },
        }
    };
    Ok(Options {
        database_url: values.get("database-url").cloned().unwrap_or_else(|| {
            format!("postgres:///jobs_load?host=/var/run/postgresql&user={user}")
        }),
        clients: number("clients", 64, 1)? as usize,
        seconds: number("seconds", 60, 1)?,
        worker_concurrency: number("worker-concurrency", 50, 1)? as usize,
        drain_timeout: number("drain-timeout", 60, 1)?,
        scrape_metrics: number("scrape-metrics", 0, 0)?,
    })
}

/// Drops and recreates the database of `url`, through psql connected to the `postgres`
/// database of the same server (psql takes the URL itself, socket `host=` included).
/// Returns the URL of that `postgres` database.
fn recreate_database(url: &str) -> AnyResult<String> {
    let scheme_end = ["postgres://", "postgresql://"]
        .iter()
        .find(|s| url.starts_with(**s))
        .map(|s| s.len())
        .ok_or("--database-url must be a postgres:// URL: the load runs on PostgreSQL")?;
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let slash = before_query[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .ok_or("the database URL names no database")?;
    let name = &before_query[slash + 1..];
    if name.is_empty()
        || name == "postgres"
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "refusing to drop database {name:?}: use a dedicated name of letters, digits and _"
        )
        .into());
    }
    let mut admin = format!("{}postgres", &before_query[..=slash]);
    if let Some(q) = query {
        admin = format!("{admin}?{q}");
    }
    let status = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &admin])
        .args([
            "-c",
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        ])
        .args(["-c", &format!("CREATE DATABASE \"{name}\"")])
        .status()
        .map_err(|e| format!("running psql: {e}"))?;
    if !status.success() {
        return Err(format!("psql could not recreate database {name}: {status}").into());
    }
    println!("database {name}: dropped and recreated");
    Ok(admin)
}

/// The server settings that the figures depend on, for the record.
fn server_settings(admin_url: &str) -> BTreeMap<String, String> {
    let names = [
        "server_version",
        "autovacuum",
        "fsync",
        "synchronous_commit",
        "shared_buffers",
        "max_connections",
    ];
    let query = format!(
        "SELECT name || '=' || setting FROM pg_settings WHERE name IN ({})",
        names.map(|n| format!("'{n}'")).join(", ")
    );
    let output = Command::new("psql")
        .args(["-X", "-A", "-t", "-d", admin_url, "-c", &query])
        .output();
    let mut settings = BTreeMap::new();
    if let Ok(output) = output {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some((name, value)) = line.split_once('=') {
                settings.insert(name.to_owned(), value.to_owned());
            }
        }
    }
    settings
}

/// The commit the binaries were built from, `-dirty` with uncommitted changes to tracked files.
fn source_version() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{commit}-dirty"),
            _ => commit,
        },
        None => "unknown".into(),
    }
}

/// Builds the binaries in the profile this program was built in (release under
/// `cargo run --release`) and returns that profile's directory.
fn build_binaries() -> AnyResult<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/examples/load -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target directory")?
        .to_path_buf();
    let release = dir.file_name().is_some_and(|n| n == "release");
    if !release {
        println!("WARNING: not a release build; the figures are for debug binaries");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--workspace", "--bins"]);
    if release {
        build.arg("--release");
    }
    let status = build.status()?;
    if !status.success() {
        return Err("building the binaries failed".into());
    }
    Ok(dir)
}

fn free_port() -> AnyResult<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn log_dir() -> AnyResult<PathBuf> {
    let dir = std::env::temp_dir().join("jobs-load-logs");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn spawn(binary: &Path, log: &Path, database_url: &str, args: &[&str]) -> AnyResult<Child> {
    let file = std::fs::File::create(log)?;
    let child = Command::new(binary)
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    Ok(child)
}

/// The two processes; killed if this program stops early, so none is left behind.
struct Processes {
    api: Child,
    worker: Option<Child>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in [Some(&mut self.api), self.worker.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// SIGTERM, as a deploy would; then waits up to `limit` for the exit.
fn terminate(child: &mut Child, limit: Duration) -> AnyResult<ExitStatus> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    if !status.success() {
        return Err(format!("kill -TERM {} failed", child.id()).into());
    }
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if started.elapsed() > limit {
            return Err(format!(
                "process {} still running {limit:?} after SIGTERM",
                child.id()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `VmRSS` (or another `Vm*` line) of a process, in KiB.
fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn rss_kib(pid: u32) -> u64 {
    vm_kib(pid, "VmRSS").unwrap_or(0)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds a process has used so far.
fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the `(comm)` start at field 3 (state); utime and stime are 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / ticks
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

async fn wait_ready(http: &reqwest::Client, base: &str, api: &mut Child) -> AnyResult<()> {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if let Some(status) = api.try_wait()? {
            return Err(format!("jobs-api exited before it was ready: {status}").into());
        }
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("jobs-api was not ready within 60 s".into())
}

/// Counts of the `default` queue by state.
async fn queue_counts(http: &reqwest::Client, base: &str) -> AnyResult<BTreeMap<String, u64>> {
    let body: Value = http
        .get(format!("{base}/v1/queues"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let queue = body["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["queue"] == "default"));
    let mut counts = BTreeMap::new();
    if let Some(map) = queue.and_then(|q| q["counts"].as_object()) {
        for (state, n) in map {
            counts.insert(state.clone(), n.as_u64().unwrap_or(0));
        }
    }
    Ok(counts)
}

fn count(counts: &BTreeMap<String, u64>, state: &str) -> u64 {
    counts.get(state).copied().unwrap_or(0)
}

/// What all clients share: live counters for progress lines, and the errors.
#[derive(Default)]
struct Shared {
    next_n: AtomicU64,
    created: AtomicU64,
    read: AtomicU64,
    errors: AtomicU64,
    shown: Mutex<Vec<String>>,
    by_kind: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn error(&self, kind: String, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.by_kind.lock().unwrap().entry(kind).or_default() += 1;
        let mut shown = self.shown.lock().unwrap();
        if shown.len() < SHOWN_ERRORS {
            shown.push(message);
        }
    }
}

/// Latencies in microseconds of the requests that got the expected answer.
#[derive(Default)]
struct ClientResult {
    create_us: Vec<u32>,
    read_us: Vec<u32>,
}

fn micros(since: Instant) -> u32 {
    since.elapsed().as_micros().min(u32::MAX as u128) as u32
}

fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

/// One client: create a job, read it back, repeat until the deadline.
async fn client(base: Arc<str>, deadline: Instant, shared: Arc<Shared>) -> ClientResult {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("HTTP client");
    let mut result = ClientResult::default();
    while Instant::now() < deadline {
        let n = shared.next_n.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let response = http
            .post(format!("{base}/v1/jobs"))
            .json(&json!({"kind": "echo", "args": {"n": n}}))
            .send()
            .await;
        let id = match response {
            Ok(r) if r.status() == 202 => match r.json::<Value>().await {
                Ok(body) => match body["id"].as_str() {
                    Some(id) => id.to_owned(),
                    None => {
                        shared.error("create: no id".into(), format!("create: no id in {body}"));
                        continue;
                    }
                },
                Err(e) => {
                    shared.error("create: body".into(), format!("create: reading body: {e}"));
                    continue;
                }
            },
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                shared.error(
                    format!("create: HTTP {}", status.as_u16()),
                    format!("create: HTTP {status}: {}", short(&body)),
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => {
                shared.error(
                    "create: transport".into(),
                    format!(
                        "create: transport error after {} ms: {e:?}",
                        started.elapsed().as_millis()
                    ),
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        result.create_us.push(micros(started));
        shared.created.fetch_add(1, Ordering::Relaxed);

        let started = Instant::now();
        let response = http.get(format!("{base}/v1/jobs/{id}")).send().await;
        match response {
            Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                Ok(body) if body["id"] == id.as_str() => {
                    result.read_us.push(micros(started));
                    shared.read.fetch_add(1, Ordering::Relaxed);
                }
                Ok(body) => shared.error(
                    "read: wrong job".into(),
                    format!(
                        "read {id}: another job came back: {}",
                        short(&body.to_string())
                    ),
                ),
                Err(e) => {
                    shared.error("read: body".into(), format!("read {id}: reading body: {e}"))
                }
            },
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                shared.error(
                    format!("read: HTTP {}", status.as_u16()),
                    format!("read {id}: HTTP {status}: {}", short(&body)),
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                shared.error(
                    "read: transport".into(),
                    format!(
                        "read {id}: transport error after {} ms: {e:?}",
                        started.elapsed().as_millis()
                    ),
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    result
}

#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    count: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

/// Nearest-rank percentiles, in milliseconds.
fn percentiles(mut us: Vec<u32>) -> Percentiles {
    if us.is_empty() {
        return Percentiles::default();
    }
    us.sort_unstable();
    let at = |p: f64| {
        let rank = ((p / 100.0) * us.len() as f64).ceil() as usize;
        f64::from(us[rank.clamp(1, us.len()) - 1]) / 1000.0
    };
    let sum: u64 = us.iter().map(|&u| u64::from(u)).sum();
    Percentiles {
        count: us.len(),
        p50: at(50.0),
        p90: at(90.0),
        p99: at(99.0),
        max: f64::from(*us.last().unwrap()) / 1000.0,
        mean: sum as f64 / us.len() as f64 / 1000.0,
    }
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn percentiles_json(p: &Percentiles) -> Value {
    json!({
        "count": p.count,
        "p50": round(p.p50, 2),
        "p90": round(p.p90, 2),
        "p99": round(p.p99, 2),
        "max": round(p.max, 2),
        "mean": round(p.mean, 2),
    })
}

#[tokio::main]
async fn main() {
    match run().await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            println!("load: {e}");
            std::process::exit(2);
        }
    }
}

/// Ok(true) when the run was clean.
async fn run() -> AnyResult<bool> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = parse_options()?;
    println!(
        "load: {} clients x {} s, worker concurrency {}, /metrics scraped {}, database {}",
        options.clients,
        options.seconds,
        options.worker_concurrency,
        match options.scrape_metrics {
            0 => "never".to_owned(),
            s => format!("every {s} s"),
        },
        options.database_url
    );
    let admin_url = recreate_database(&options.database_url)?;
    let settings = server_settings(&admin_url);
    println!(
        "PostgreSQL: {}",
        settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if settings.get("autovacuum").is_some_and(|v| v == "off") {
        println!(
            "  note: autovacuum is off: the jobs table is never vacuumed or analyzed during the run"
        );
    }
    let bin_dir = build_binaries()?;
    let source = source_version();
    println!("binaries built from {source}");
    let logs = log_dir()?;
    let ticks = clock_ticks();

    let port = free_port()?;
    let base: Arc<str> = format!("http://127.0.0.1:{port}").into();
    let listen = format!("127.0.0.1:{port}");
    let api = spawn(
        &bin_dir.join("jobs-api"),
        &logs.join("api.log"),
        &options.database_url,
        &["--listen", &listen, "--embedded-worker", "off"],
    )?;
    let mut processes = Processes { api, worker: None };
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    wait_ready(&http, &base, &mut processes.api).await?;
    // After the api has migrated, so the worker finds the schema in place.
    let queue = format!("default={}", options.worker_concurrency);
    let worker = spawn(
        &bin_dir.join("jobs-worker"),
        &logs.join("worker.log"),
        &options.database_url,
        &["--queue", &queue],
    )?;
    processes.worker = Some(worker);

    // One job end to end: the worker is up and running jobs before the clock starts.
    let warmup = http
        .post(format!("{base}/v1/jobs?wait=30"))
        .json(&json!({"kind": "echo", "args": {"warmup": true}}))
        .send()
        .await?;
    let warmup: Value = warmup.json().await?;
    if warmup["state"] != "completed" {
        return Err(format!(
            "the warm-up job did not complete within 30 s (see {}): {warmup}",
            logs.join("worker.log").display()
        )
        .into());
    }
    let api_pid = processes.api.id();
    let worker_pid = processes.worker.as_ref().map(Child::id).unwrap_or(0);
    println!(
        "jobs-api pid {api_pid} on {base}, jobs-worker pid {worker_pid}; logs in {}",
        logs.display()
    );

    let rss_before = (rss_kib(api_pid), rss_kib(worker_pid));
    println!(
        "RSS before: api {}, worker {}",
        mib(rss_before.0),
        mib(rss_before.1)
    );
    let cpu_before = (cpu_seconds(api_pid, ticks), cpu_seconds(worker_pid, ticks));

    // The load.
    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.seconds);
    let tasks: Vec<_> = (0..options.clients)
        .map(|_| tokio::spawn(client(base.clone(), deadline, shared.clone())))
        .collect();

    // As Prometheus would, when asked: rendering /metrics also drains the api's histograms.
    let scraper = (options.scrape_metrics > 0).then(|| {
        let http = http.clone();
        let base = base.clone();
        let every = Duration::from_secs(options.scrape_metrics);
        tokio::spawn(async move {
            while Instant::now() + every < deadline {
                tokio::time::sleep(every).await;
                if let Ok(r) = http.get(format!("{base}/metrics")).send().await {
                    let _ = r.bytes().await;
                }
            }
        })
    });

    // Progress every 10 s; RSS sampled every second for the peak.
    let done = Arc::new(AtomicBool::new(false));
    let monitor = tokio::spawn({
        let done = done.clone();
        let shared = shared.clone();
        let http = http.clone();
        let base = base.clone();
        async move {
            let mut peak = (0u64, 0u64);
            let mut series = Vec::new();
            let mut tick = 0u64;
            let mut previous = (0u64, 0u64);
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                tick += 1;
                let rss = (rss_kib(api_pid), rss_kib(worker_pid));
                peak = (peak.0.max(rss.0), peak.1.max(rss.1));
                if tick % 10 == 0 && !done.load(Ordering::Relaxed) {
                    let created = shared.created.load(Ordering::Relaxed);
                    let read = shared.read.load(Ordering::Relaxed);
                    let backlog = match queue_counts(&http, &base).await {
                        Ok(c) => format!("{}", count(&c, "pending") + count(&c, "running")),
                        Err(e) => format!("? ({e})"),
                    };
                    println!(
                        "  t={:>3}s  created {created:>7} (+{:>5}/s)  read {read:>7} (+{:>5}/s)  errors {}  backlog {backlog}  RSS api {} worker {}",
                        tick,
                        (created - previous.0) / 10,
                        (read - previous.1) / 10,
                        shared.errors.load(Ordering::Relaxed),
                        mib(rss.0),
                        mib(rss.1),
                    );
                    series.push(((created - previous.0) / 10, rss.0, rss.1));
                    previous = (created, read);
                }
            }
            (peak, series)
        }
    });

    let mut create_us = Vec::new();
    let mut read_us = Vec::new();
    for task in tasks {
        let result = task.await?;
        create_us.extend(result.create_us);
        read_us.extend(result.read_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    if let Some(scraper) = scraper {
        scraper.abort();
    }
    let cpu_load = (
        cpu_seconds(api_pid, ticks) - cpu_before.0,
        cpu_seconds(worker_pid, ticks) - cpu_before.1,
    );
    let rss_end_of_load = (rss_kib(api_pid), rss_kib(worker_pid));
    let (peak, series) = monitor.await?;
    let peak = (peak.0.max(rss_end_of_load.0), peak.1.max(rss_end_of_load.1));

    let created = shared.created.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let create = percentiles(create_us);
    let read = percentiles(read_us);
    let requests = create.count + read.count;
    println!();
    println!("load done in {elapsed:.1} s");
    println!(
        "  throughput: {:.0} requests/s ({} ok), {:.0} jobs created/s ({created} jobs)",
        requests as f64 / elapsed,
        requests,
        created as f64 / elapsed,
    );
    for (name, p) in [("create", &create), ("read  ", &read)] {
        println!(
            "  {name} latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}  (n={})",
            p.p50, p.p90, p.p99, p.max, p.mean, p.count
        );
    }
    println!("  errors: {errors}");
    if errors > 0 {
        for (kind, n) in shared.by_kind.lock().unwrap().iter() {
            println!("    {kind}: {n}");
        }
        println!("  first errors:");
        for message in shared.shown.lock().unwrap().iter() {
            println!("    {message}");
        }
    }
    println!(
        "  CPU during load: api {:.1} s ({:.2} cores), worker {:.1} s ({:.2} cores)",
        cpu_load.0,
        cpu_load.0 / elapsed,
        cpu_load.1,
        cpu_load.1 / elapsed
    );

    // The drain: the worker finishes whatever is still pending or running.
    let drain_started = Instant::now();
    let at_end = queue_counts(&http, &base).await?;
    let backlog_at_end = count(&at_end, "pending") + count(&at_end, "running");
    let drain_limit = Duration::from_secs(options.drain_timeout);
    let mut last = at_end;
    let mut drained = backlog_at_end == 0;
    while !drained && drain_started.elapsed() < drain_limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = queue_counts(&http, &base).await?;
        drained = count(&last, "pending") + count(&last, "running") == 0;
    }
    let drain = drain_started.elapsed().as_secs_f64();
    let completed = count(&last, "completed");
    let failed = count(&last, "failed");
    let total = elapsed + drain;
    let expected = created + 1; // the warm-up job too
    println!();
    if drained {
        println!(
            "drain: {backlog_at_end} jobs pending or running at the end of the load, all done {drain:.2} s later"
        );
    } else {
        println!(
            "drain: NOT DONE after {drain:.0} s: {} pending, {} running (backlog at the end of the load {backlog_at_end})",
            count(&last, "pending"),
            count(&last, "running")
        );
    }
    println!(
        "  completed {completed} of {expected} jobs (failed {failed}), {:.0} jobs completed/s over load + drain ({total:.1} s)",
        completed as f64 / total
    );
    println!("  queue counts: {last:?}");

    let rss_after = (rss_kib(api_pid), rss_kib(worker_pid));
    let hwm = (
        vm_kib(api_pid, "VmHWM").unwrap_or(0),
        vm_kib(worker_pid, "VmHWM").unwrap_or(0),
    );
    println!();
    println!(
        "RSS api:    before {}  end of load {}  after drain {}  peak sampled {}  VmHWM {}",
        mib(rss_before.0),
        mib(rss_end_of_load.0),
        mib(rss_after.0),
        mib(peak.0),
        mib(hwm.0)
    );
    println!(
        "RSS worker: before {}  end of load {}  after drain {}  peak sampled {}  VmHWM {}",
        mib(rss_before.1),
        mib(rss_end_of_load.1),
        mib(rss_after.1),
        mib(peak.1),
        mib(hwm.1)
    );

    let api_exit = terminate(&mut processes.api, Duration::from_secs(30))?;
    let worker_exit = match processes.worker.as_mut() {
        Some(w) => terminate(w, Duration::from_secs(30))?,
        None => return Err("no worker process".into()),
    };
    println!("SIGTERM: api exited {api_exit}, worker exited {worker_exit}");

    let clean = errors == 0
        && drained
        && completed == expected
        && failed == 0
        && api_exit.success()
        && worker_exit.success();
    println!(
        "result: {}",
        if clean { "OK" } else { "PROBLEMS (see above)" }
    );
    let summary = json!({
        "clients": options.clients,
        "seconds": options.seconds,
        "worker_concurrency": options.worker_concurrency,
        "source": source,
        "postgres": settings,
        "scrape_metrics_s": options.scrape_metrics,
        "elapsed_s": round(elapsed, 2),
        "requests_ok": requests,
        "requests_per_s": round(requests as f64 / elapsed, 1),
        "jobs_created": created,
        "jobs_created_per_s": round(created as f64 / elapsed, 1),
        "errors": errors,
        "errors_by_kind": *shared.by_kind.lock().unwrap(),
        "create_ms": percentiles_json(&create),
        "read_ms": percentiles_json(&read),
        "backlog_at_end": backlog_at_end,
        "drained": drained,
        "drain_s": round(drain, 2),
        "jobs_completed": completed,
        "jobs_failed": failed,
        "completed_per_s": round(completed as f64 / total, 1),
        "cpu_s": {"api": round(cpu_load.0, 1), "worker": round(cpu_load.1, 1)},
        "rss_kib": {
            "api": {"before": rss_before.0, "end_of_load": rss_end_of_load.0, "after": rss_after.0, "peak": peak.0, "hwm": hwm.0},
            "worker": {"before": rss_before.1, "end_of_load": rss_end_of_load.1, "after": rss_after.1, "peak": peak.1, "hwm": hwm.1},
        },
        "every_10s": {
            "created_per_s": series.iter().map(|s| s.0).collect::<Vec<_>>(),
            "rss_api_kib": series.iter().map(|s| s.1).collect::<Vec<_>>(),
            "rss_worker_kib": series.iter().map(|s| s.2).collect::<Vec<_>>(),
        },
        "exit": {"api": api_exit.code(), "worker": worker_exit.code()},
        "ok": clean,
    });
    println!("{summary}");
    Ok(clean)
}
