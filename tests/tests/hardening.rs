//! The hardening fixes, seen from outside the real binaries:
//!
//! - an `http` job whose response the database cannot store (a NUL character) fails
//!   alone, with kind `unstorable_outcome`, and the worker goes on with the next jobs;
//! - a frozen (SIGSTOPped) maintenance leader is replaced, its jobs are rescued and run by
//!   the new worker, and its late outcomes, once it thaws, are refused (also when its
//!   handlers finish the moment it thaws, so that it really tries to write them);
//! - a remote worker that claimed a job again after its lease expired cannot finish the
//!   new attempt with the old attempt's token (heartbeat, complete and fail all get 409);
//! - a worker whose database went away mid-run still ends in bounded time on SIGTERM.

use std::{
    net::SocketAddr,
    process::{Child, Command, ExitStatus},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use blackbox_tests::{free_port, log_path, spawn, terminate, wait_until};
use jobs_core::{Job, JobId, JobStore, NewJob, State};
use jobs_store::{SeaOrmStore, testing::TestDb};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::AbortHandle,
    time::{Instant, sleep},
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn log_of(label: &str) -> String {
    std::fs::read_to_string(log_path(label)).unwrap_or_default()
}

/// The last `lines` lines of a process's log, for the test output.
fn log_tail(label: &str, lines: usize) -> String {
    let log = log_of(label);
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits (polling, without blocking the runtime) for a child to exit; `None` if it is
/// still running after `limit`.
async fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let give_up = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            return Some(status);
        }
        if Instant::now() >= give_up {
            return None;
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a signal by name (`STOP`, `CONT`, ...).
fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} failed");
}

async fn get(store: &SeaOrmStore, id: JobId) -> Job {
    store.get(None, id).await.expect("read job")
}

/// The jobs of `ids`, in that order, read in one statement.
async fn get_all(store: &SeaOrmStore, ids: &[JobId]) -> Vec<Job> {
    let mut found = store.get_many(ids).await.unwrap();
    ids.iter()
        .map(|id| found.remove(id).expect("the job exists"))
        .collect()
}

async fn enqueue_ids(store: &SeaOrmStore, jobs: Vec<NewJob>) -> Vec<JobId> {
    let done = store.enqueue_many(jobs).await.unwrap();
    done.into_iter().map(|e| e.job.id).collect()
}

/// Enqueues four `sleep` jobs of `ms` and waits until `worker` runs all of them.
async fn four_sleepers_running_on(
    store: &SeaOrmStore,
    worker: &str,
    ms: u64,
    within: Duration,
) -> Vec<JobId> {
    let sleepers = (0..4)
        .map(|_| NewJob::new("sleep", json!({ "ms": ms })))
        .collect();
    let ids = enqueue_ids(store, sleepers).await;
    wait_until(
        &format!("worker {worker} to run all four jobs"),
        within,
        async || {
            get_all(store, &ids)
                .await
                .iter()
                .all(|j| j.state == State::Running && j.worker_id.as_deref() == Some(worker))
        },
    )
    .await;
    ids
}

fn error_kinds(job: &Job) -> Vec<&str> {
    job.errors.iter().map(|e| e.kind.as_str()).collect()
}

async fn maintenance_leader(store: &SeaOrmStore) -> Option<String> {
    let db = store.connection();
    let sql = "SELECT leader_id FROM jobs_leader WHERE name = 'maintenance'";
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap();
    rows.first()
        .map(|row| row.try_get::<String>("", "leader_id").unwrap())
}

// ---------------------------------------------------------------------------------------
// 1. A response holding NUL fails its job alone; the worker goes on.
// ---------------------------------------------------------------------------------------

/// Reads one HTTP/1.1 request (headers and a `content-length` body); returns its
/// request line, e.g. `POST /job-1 HTTP/1.1`.
async fn read_request(socket: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        if buf.len() >= head_end + 4 + length {
            return Ok(head.lines().next().unwrap_or_default().to_owned());
        }
    }
}

async fn respond(socket: &mut TcpStream, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(body).await;
    let _ = socket.shutdown().await;
}

/// An HTTP server answering every request `200 OK` with the body `ok\0poison`; counts
/// the requests it was sent.
async fn poison_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(30), read_request(&mut socket)).await;
                respond(&mut socket, "text/plain", b"ok\0poison").await;
            });
        }
    });
    (port, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_postgres_tests),
    ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
)]
async fn postgres_nul_body_http_job_fails_alone_and_the_worker_goes_on() {
    let db = TestDb::postgres().await;
    let store = &db.store;
    let (port, requests) = poison_server().await;
    let label = "hardening-nul-worker";
    let mut worker = spawn(
        "jobs-worker",
        label,
        &db.url(),
        &[
            "--worker-id",
            "nul-worker",
            "--http-allow-host",
            "127.0.0.1",
            "--shutdown-grace-secs",
            "5",
            "--poll-interval-ms",
            "200",
        ],
    );

    let poisoned = store
        .enqueue(NewJob::new(
            "http",
            json!({"url": format!("http://127.0.0.1:{port}/"), "body": {"n": 1}}),
        ))
        .await
        .unwrap()
        .job
        .id;
    let echoes = enqueue_ids(
        store,
        (0..20)
            .map(|i| NewJob::new("echo", json!({"i": i})))
            .collect(),
    )
    .await;

    wait_until(
        "the http job and every echo job to end",
        Duration::from_secs(60),
        async || {
            get(store, poisoned).await.state == State::Failed
                && get_all(store, &echoes)
                    .await
                    .iter()
                    .all(|j| j.state == State::Completed)
        },
    )
    .await;

    let job = get(store, poisoned).await;
    eprintln!("the http job: {:?} errors {:?}", job.state, job.errors);
    assert_eq!(job.state, State::Failed);
    assert_eq!(job.attempt, 1, "failed for good, not retried");
    assert_eq!(job.result, None);
    assert_eq!(error_kinds(&job), ["unstorable_outcome"]);
    assert!(
        job.errors[0].message.contains("NUL"),
        "the message says why: {:?}",
        job.errors[0].message
    );
    assert_eq!(job.worker_id.as_deref(), Some("nul-worker"));
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "the server was called once"
    );

    for (i, echo) in get_all(store, &echoes).await.iter().enumerate() {
        assert_eq!(echo.state, State::Completed);
        assert_eq!(echo.result, Some(json!({"i": i})));
        assert_eq!(echo.worker_id.as_deref(), Some("nul-worker"));
        assert!(echo.errors.is_empty());
    }
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still running:\n{}",
        log_tail(label, 40)
    );

    let stopping = Instant::now();
    terminate(&worker);
    let status = wait_exit(&mut worker, Duration::from_secs(5 + 10)).await;
    eprintln!(
        "worker exit {status:?} after {:?}; log tail:\n{}",
        stopping.elapsed(),
        log_tail(label, 15)
    );
    let status = status.expect("the worker exits within the grace period plus a margin");
    assert!(
        status.success(),
        "SIGTERM ends the worker cleanly: {status}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. A frozen leader is replaced; once it thaws, its late writes are refused.
// ---------------------------------------------------------------------------------------

fn leader_args(id: &str) -> Vec<&str> {
    vec![
        "--worker-id",
        id,
        "--queue",
        "default=4",
        "--lease-secs",
        "3",
        "--leader-ttl-secs",
        "3",
        "--maintenance-interval-secs",
        "1",
        "--poll-interval-ms",
        "200",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_postgres_tests),
    ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
)]
async fn postgres_frozen_leader_is_replaced_and_its_late_writes_are_refused() {
    let db = TestDb::postgres().await;
    let store = &db.store;
    let (label_a, label_b) = ("hardening-frozen-a", "hardening-frozen-b");
    let mut a = spawn("jobs-worker", label_a, &db.url(), &leader_args("a"));
    wait_until(
        "worker a to lead maintenance",
        Duration::from_secs(60),
        async || {
            maintenance_leader(store)
                .await
                .is_some_and(|l| l.starts_with("a/"))
        },
    )
    .await;

    let ids = four_sleepers_running_on(store, "a", 8_000, Duration::from_secs(30)).await;

    signal(&a, "STOP");
    let frozen_at = Instant::now();
    let mut b = spawn("jobs-worker", label_b, &db.url(), &leader_args("b"));
    // lease 3 s + leader term 4/3 * 3 s + job 8 s, and a generous margin.
    wait_until(
        "worker b to run all four jobs again",
        Duration::from_secs(60),
        async || {
            get_all(store, &ids)
                .await
                .iter()
                .all(|j| j.state == State::Completed && j.worker_id.as_deref() == Some("b"))
        },
    )
    .await;
    eprintln!(
        "b completed the four jobs {:?} after a froze",
        frozen_at.elapsed()
    );
    let leader = maintenance_leader(store).await;
    assert!(
        leader.as_deref().is_some_and(|l| l.starts_with("b/")),
        "b leads maintenance now: {leader:?}"
    );
    let done_by_b = get_all(store, &ids).await;
    for job in &done_by_b {
        assert_eq!(job.attempt, 2, "a's attempt was rescued: {job:?}");
        assert_eq!(error_kinds(job), ["lease_expired"], "{job:?}");
        assert_eq!(job.errors[0].attempt, 1);
        assert_eq!(job.result.as_ref().unwrap()["slept_ms"], 8_000, "{job:?}");
    }

    signal(&a, "CONT");
    // Let a thaw and try to finish its (long since rescued) attempts; nothing may change.
    let thawed = Instant::now();
    while thawed.elapsed() < Duration::from_secs(6) {
        assert!(
            a.try_wait().unwrap().is_none(),
            "worker a keeps running after it thaws:\n{}",
            log_tail(label_a, 40)
        );
        sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "worker a's log after it thawed (tail):\n{}",
        log_tail(label_a, 40)
    );
    let after = get_all(store, &ids).await;
    for (before, after) in done_by_b.iter().zip(&after) {
        assert_eq!(
            before, after,
            "a's late outcomes were refused: the job is as b left it"
        );
    }
    let leader = maintenance_leader(store).await;
    assert!(
        leader.as_deref().is_some_and(|l| l.starts_with("b/")),
        "b still leads maintenance after a thawed: {leader:?}"
    );

    terminate(&a);
    terminate(&b);
    // Default grace 10 s + flush 5 s, and a margin.
    let status_a = wait_exit(&mut a, Duration::from_secs(30)).await;
    let status_b = wait_exit(&mut b, Duration::from_secs(30)).await;
    eprintln!("exits: a {status_a:?}, b {status_b:?}");
    let status_a = status_a.unwrap_or_else(|| panic!("a exits:\n{}", log_tail(label_a, 40)));
    let status_b = status_b.unwrap_or_else(|| panic!("b exits:\n{}", log_tail(label_b, 40)));
    assert!(status_a.success(), "SIGTERM ends a cleanly: {status_a}");
    assert!(status_b.success(), "SIGTERM ends b cleanly: {status_b}");
}

/// An HTTP server that holds the first request for each path until `open`, then answers
/// it `{"answered": "late"}`; later requests for a path it answers at once,
/// `{"answered": "at once"}`.
struct GateServer {
    port: u16,
    held: Arc<AtomicUsize>,
    answered_late: Arc<AtomicUsize>,
    gate: tokio::sync::watch::Sender<bool>,
}

impl GateServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (gate, _) = tokio::sync::watch::channel(false);
        let held = Arc::new(AtomicUsize::new(0));
        let answered_late = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(std::collections::HashMap::<String, usize>::new()));
        let (opened, holding, late) = (gate.clone(), held.clone(), answered_late.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (mut opened, holding, late, seen) = (
                    opened.subscribe(),
                    holding.clone(),
                    late.clone(),
                    seen.clone(),
                );
                tokio::spawn(async move {
                    let Ok(line) = read_request(&mut socket).await else {
                        return;
                    };
                    let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                    let first = {
                        let mut seen = seen.lock().unwrap();
                        let n = seen.entry(path).or_default();
                        *n += 1;
                        *n == 1
                    };
                    if first {
                        holding.fetch_add(1, Ordering::SeqCst);
                        let _ = opened.wait_for(|open| *open).await;
                        respond(&mut socket, "application/json", br#"{"answered":"late"}"#).await;
                        late.fetch_add(1, Ordering::SeqCst);
                    } else {
                        respond(
                            &mut socket,
                            "application/json",
                            br#"{"answered":"at once"}"#,
                        )
                        .await;
                    }
                });
            }
        });
        Self {
            port,
            held,
            answered_late,
            gate,
        }
    }

    fn open(&self) {
        self.gate.send_replace(true);
    }
}

/// As above, with jobs whose first attempt is still waiting for its HTTP answer when the
/// worker freezes: once it thaws the answer is there at once, so the frozen worker really
/// tries to write its late outcome (with its stale lease token) instead of only hearing
/// from a heartbeat that its leases are gone. The late results (`late`) never replace the
/// new worker's (`at once`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_postgres_tests),
    ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
)]
async fn postgres_thawed_workers_late_http_outcomes_are_refused() {
    let db = TestDb::postgres().await;
    let store = &db.store;
    let server = GateServer::start().await;
    let (label_a, label_b) = ("hardening-thawed-a", "hardening-thawed-b");
    let args = |id: &'static str| {
        let mut args = leader_args(id);
        args.extend(["--http-allow-host", "127.0.0.1"]);
        args
    };
    let mut a = spawn("jobs-worker", label_a, &db.url(), &args("a"));
    wait_until(
        "worker a to lead maintenance",
        Duration::from_secs(60),
        async || {
            maintenance_leader(store)
                .await
                .is_some_and(|l| l.starts_with("a/"))
        },
    )
    .await;

    let ids: Vec<JobId> = store
        .enqueue_many(
            (0..4)
                .map(|i| {
                    NewJob::new(
                        "http",
                        json!({
                            "url": format!("http://127.0.0.1:{}/job-{i}", server.port),
                            // Longer than the freeze: a's attempts wait, they do not time out.
                            "timeout_ms": 600_000,
                        }),
                    )
                })
                .collect(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.job.id)
        .collect();
    wait_until(
        "worker a to wait on four held HTTP calls",
        Duration::from_secs(30),
        async || {
            server.held.load(Ordering::SeqCst) == 4
                && get_all(store, &ids)
                    .await
                    .iter()
                    .all(|j| j.state == State::Running && j.worker_id.as_deref() == Some("a"))
        },
    )
    .await;

    signal(&a, "STOP");
    let frozen_at = Instant::now();
    let mut b = spawn("jobs-worker", label_b, &db.url(), &args("b"));
    let at_once = json!({"status": 200, "body": {"answered": "at once"}});
    wait_until(
        "worker b to run all four jobs again",
        Duration::from_secs(60),
        async || {
            get_all(store, &ids)
                .await
                .iter()
                .all(|j| j.state == State::Completed && j.worker_id.as_deref() == Some("b"))
        },
    )
    .await;
    eprintln!(
        "b completed the four jobs {:?} after a froze",
        frozen_at.elapsed()
    );
    let done_by_b = get_all(store, &ids).await;
    for job in &done_by_b {
        assert_eq!(job.attempt, 2, "{job:?}");
        assert_eq!(job.result.as_ref(), Some(&at_once), "{job:?}");
        assert_eq!(error_kinds(job), ["lease_expired"], "{job:?}");
    }

    // a's held calls are answered while it is frozen: the answers wait in its sockets.
    server.open();
    wait_until(
        "the held calls to be answered",
        Duration::from_secs(30),
        async || server.answered_late.load(Ordering::SeqCst) == 4,
    )
    .await;
    signal(&a, "CONT");
    let thawed = Instant::now();
    while thawed.elapsed() < Duration::from_secs(6) {
        assert!(
            a.try_wait().unwrap().is_none(),
            "worker a keeps running after it thaws:\n{}",
            log_tail(label_a, 40)
        );
        sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "worker a's log after it thawed (tail):\n{}",
        log_tail(label_a, 20)
    );
    let after = get_all(store, &ids).await;
    for (before, after) in done_by_b.iter().zip(&after) {
        assert_eq!(
            before, after,
            "a's late outcomes were refused: the job is as b left it"
        );
    }

    terminate(&a);
    terminate(&b);
    let status_a = wait_exit(&mut a, Duration::from_secs(30)).await;
    let status_b = wait_exit(&mut b, Duration::from_secs(30)).await;
    eprintln!("exits: a {status_a:?}, b {status_b:?}");
    let status_a = status_a.unwrap_or_else(|| panic!("a exits:\n{}", log_tail(label_a, 40)));
    let status_b = status_b.unwrap_or_else(|| panic!("b exits:\n{}", log_tail(label_b, 40)));
    assert!(status_a.success(), "SIGTERM ends a cleanly: {status_a}");
    assert!(status_b.success(), "SIGTERM ends b cleanly: {status_b}");
}

// ---------------------------------------------------------------------------------------
// 3. A remote worker's old token cannot finish its new attempt.
// ---------------------------------------------------------------------------------------

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let response = http.post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn get_job(http: &reqwest::Client, base: &str, id: &str) -> Value {
    let response = http
        .get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn assert_lease_lost(what: &str, (status, problem): &(u16, Value)) {
    assert_eq!(*status, 409, "{what}: {problem}");
    assert_eq!(
        problem["type"], "urn:jobs:problem:lease-lost",
        "{what}: {problem}"
    );
}

async fn old_token_cannot_finish_the_new_attempt(db: TestDb) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let backend = if db.store.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let label = format!("hardening-remote-api-{backend}");
    // The embedded worker does maintenance (it rescues the expired lease) and never
    // claims `remote-resize`: it has no handler for that kind.
    let mut api = spawn(
        "jobs-api",
        &label,
        &db.url(),
        &["--listen", &listen, "--embedded-worker", "on"],
    );
    let http = reqwest::Client::new();
    wait_until("the api to be ready", Duration::from_secs(60), async || {
        matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
    })
    .await;

    let (status, created) = post(
        &http,
        format!("{base}/v1/jobs"),
        json!({"kind": "remote-resize", "args": {"image": "cat.png"}}),
    )
    .await;
    assert!((200..300).contains(&status), "created: {status} {created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let claim = |lease_seconds: u64| {
        post(
            &http,
            format!("{base}/v1/claims"),
            json!({
                "worker_id": "host-1",
                "kinds": ["remote-resize"],
                "max_jobs": 1,
                "lease_seconds": lease_seconds,
            }),
        )
    };
    let (status, first) = claim(1).await;
    assert_eq!(status, 200, "{first}");
    let jobs = first["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{first}");
    assert_eq!(jobs[0]["id"], id.as_str());
    assert_eq!(jobs[0]["attempt"], 1);
    let token1 = jobs[0]["lease_token"].as_str().unwrap().to_owned();

    // host-1 "restarts": its lease of 1 s expires and the rescuer returns the job.
    wait_until(
        "the rescuer to return the job to pending",
        Duration::from_secs(30),
        async || get_job(&http, &base, &id).await["state"] == "pending",
    )
    .await;
    let rescued = get_job(&http, &base, &id).await;
    assert_eq!(rescued["attempt"], 1, "{rescued}");
    assert_eq!(rescued["errors"][0]["kind"], "lease_expired", "{rescued}");
    assert!(
        rescued.get("lease_token").is_none(),
        "GET never shows a token"
    );

    // The restarted host-1 claims it again, with a lease that outlasts the test.
    let (status, second) = claim(300).await;
    assert_eq!(status, 200, "{second}");
    let jobs = second["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{second}");
    assert_eq!(jobs[0]["id"], id.as_str());
    assert_eq!(jobs[0]["attempt"], 2);
    let token2 = jobs[0]["lease_token"].as_str().unwrap().to_owned();
    assert_ne!(token1, token2);

    let job_url = |action: &str| format!("{base}/v1/jobs/{id}/{action}");
    let old_complete = post(
        &http,
        job_url("complete"),
        json!({"worker_id": "host-1", "lease_token": token1, "result": "old"}),
    )
    .await;
    assert_lease_lost("complete with the old token", &old_complete);
    let running = get_job(&http, &base, &id).await;
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(running["attempt"], 2, "{running}");
    assert_eq!(running["result"], Value::Null, "{running}");
    assert_eq!(running["worker_id"], "host-1", "{running}");

    let old_heartbeat = post(
        &http,
        job_url("heartbeat"),
        json!({"worker_id": "host-1", "lease_token": token1, "progress": 0.5}),
    )
    .await;
    assert_lease_lost("heartbeat with the old token", &old_heartbeat);
    let old_fail = post(
        &http,
        job_url("fail"),
        json!({
            "worker_id": "host-1",
            "lease_token": token1,
            "error": {"kind": "crash", "message": "the old attempt died"},
            "retryable": false,
        }),
    )
    .await;
    assert_lease_lost("fail with the old token", &old_fail);
    let unchanged = get_job(&http, &base, &id).await;
    for field in ["state", "attempt", "result", "errors", "progress", "stage"] {
        assert_eq!(
            unchanged[field], running[field],
            "the old token changed {field}: {unchanged}"
        );
    }

    let (status, ended) = post(
        &http,
        job_url("complete"),
        json!({"worker_id": "host-1", "lease_token": token2, "result": "new"}),
    )
    .await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["state"], "completed");
    let done = get_job(&http, &base, &id).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["result"], "new", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");

    terminate(&api);
    let status = wait_exit(&mut api, Duration::from_secs(30)).await;
    let status = status.unwrap_or_else(|| panic!("the api exits:\n{}", log_tail(&label, 40)));
    assert!(status.success(), "SIGTERM ends the api cleanly: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restarted_remote_worker_cannot_finish_its_new_attempt_with_the_old_result() {
    old_token_cannot_finish_the_new_attempt(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_postgres_tests),
    ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
)]
async fn postgres_restarted_remote_worker_cannot_finish_its_new_attempt_with_the_old_result() {
    old_token_cannot_finish_the_new_attempt(TestDb::postgres().await).await;
}

// ---------------------------------------------------------------------------------------
// 4. With the database gone, shutdown still ends in bounded time.
// ---------------------------------------------------------------------------------------

/// Where the proxy forwards to: PostgreSQL's TCP port, or its unix socket (as CI connects).
#[derive(Clone)]
enum Upstream {
    Tcp(String),
    Unix(String),
}

impl Upstream {
    /// The server behind `url`, and `url` changed to reach it through `proxy` instead.
    fn of(url: &str, proxy: SocketAddr) -> (Self, String) {
        let mut url = reqwest::Url::parse(url).expect("a PostgreSQL URL");
        let port = url.port().unwrap_or(5432);
        let socket_dir = url
            .query_pairs()
            .find(|(key, value)| key == "host" && value.starts_with('/'))
            .map(|(_, dir)| dir.into_owned());
        let upstream = match socket_dir {
            Some(dir) => Upstream::Unix(format!("{dir}/.s.PGSQL.{port}")),
            None => {
                let host = url
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .unwrap_or("127.0.0.1");
                Upstream::Tcp(format!("{host}:{port}"))
            }
        };
        let rest: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(key, _)| key != "host")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut().clear().extend_pairs(rest);
        url.set_host(Some(&proxy.ip().to_string())).unwrap();
        url.set_port(Some(proxy.port())).unwrap();
        (upstream, url.to_string())
    }

    async fn pipe(&self, mut client: TcpStream) {
        let _ = match self {
            Upstream::Tcp(addr) => match TcpStream::connect(addr).await {
                Ok(mut server) => tokio::io::copy_bidirectional(&mut client, &mut server).await,
                Err(_) => return,
            },
            Upstream::Unix(path) => match tokio::net::UnixStream::connect(path).await {
                Ok(mut server) => tokio::io::copy_bidirectional(&mut client, &mut server).await,
                Err(_) => return,
            },
        };
    }
}

/// A TCP proxy to `upstream` that can be cut: every open connection is aborted and new
/// ones are closed at once.
struct Proxy {
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<AbortHandle>>>,
    accepted: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(listener: TcpListener, upstream: Upstream) -> Self {
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::<AbortHandle>::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (is_cut, conns, count) = (cut.clone(), open.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                // Under the lock, so that a connection is either refused here or
                // aborted by `cut`.
                let mut conns = conns.lock().unwrap();
                if is_cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move { upstream.pipe(client).await });
                conns.retain(|c| !c.is_finished());
                conns.push(task.abort_handle());
            }
        });
        Self {
            cut,
            open,
            accepted,
        }
    }

    /// Aborts every open connection (dropping both its sockets) and closes new ones.
    fn cut(&self) -> usize {
        self.cut.store(true, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        let n = open.iter().filter(|c| !c.is_finished()).count();
        open.drain(..).for_each(|c| c.abort());
        n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_postgres_tests),
    ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
)]
async fn postgres_shutdown_with_the_database_gone_ends_in_bounded_time() {
    let db = TestDb::postgres().await;
    let store = &db.store;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (upstream, url) = Upstream::of(&db.url(), listener.local_addr().unwrap());
    let proxy = Proxy::start(listener, upstream).await;
    let label = "hardening-db-gone-worker";
    let mut worker = spawn(
        "jobs-worker",
        label,
        &url,
        &[
            "--worker-id",
            "cut-off",
            "--queue",
            "default=4",
            "--shutdown-grace-secs",
            "2",
            "--flush-timeout-secs",
            "3",
            "--poll-interval-ms",
            "200",
        ],
    );

    let ids = four_sleepers_running_on(store, "cut-off", 1_500, Duration::from_secs(60)).await;
    let aborted = proxy.cut();
    eprintln!(
        "cut the proxy: aborted {aborted} open connections of {} accepted",
        proxy.accepted.load(Ordering::SeqCst)
    );
    // What the database holds once the worker can no longer write.
    let at_cut = get_all(store, &ids).await;
    let running_at_cut: Vec<JobId> = at_cut
        .iter()
        .filter(|j| j.state == State::Running)
        .map(|j| j.id)
        .collect();
    assert_eq!(
        running_at_cut.len(),
        4,
        "all four were running at the cut: {:?}",
        at_cut.iter().map(|j| j.state).collect::<Vec<_>>()
    );

    // The jobs finish, but their outcomes cannot be written.
    sleep(Duration::from_secs(2)).await;
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker is still up before SIGTERM:\n{}",
        log_tail(label, 40)
    );
    let stopping = Instant::now();
    terminate(&worker);
    // grace 2 s + flush 3 s, and a margin.
    let status = wait_exit(&mut worker, Duration::from_secs(2 + 3 + 10)).await;
    let took = stopping.elapsed();
    eprintln!(
        "worker exit {status:?} {took:?} after SIGTERM; log tail:\n{}",
        log_tail(label, 40)
    );
    assert!(
        status.is_some(),
        "with the database gone the worker still exits within grace + flush + margin"
    );

    let after = get_all(store, &ids).await;
    for job in &after {
        assert_eq!(
            job.state,
            State::Running,
            "the outcome was never written: the row still shows the attempt running \
             (the rescuer runs it again once its lease expires): {job:?}"
        );
        assert_eq!(job.worker_id.as_deref(), Some("cut-off"));
        assert_eq!(job.attempt, 1);
        assert_eq!(job.result, None);
    }
}
