//! Scale-out and fault tolerance with real processes on PostgreSQL: 2 api processes and
//! 3 worker processes share one database while jobs arrive through both APIs (single and
//! batch requests); workers are SIGKILLed or SIGTERMed, PostgreSQL is stopped, an api is
//! killed mid-batch. Every job is an `http` job that records each execution in a ledger
//! this test serves, so the ledger tells how often each accepted job really ran.
//!
//! `JOBS_FAULT_JOBS` sets the jobs per scenario (CI: 2,000; by hand: 20,000) and
//! `JOBS_FAULT_SCENARIOS` picks some (steady, sigkill, sigterm, apikill, pgdown). The
//! scenarios run one after another in one test, because one of them stops PostgreSQL.

use std::{
    collections::{HashMap, HashSet},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{App, HttpResponse, HttpServer, web};
use blackbox_tests::{Proc, free_port, spawn, terminate};
use jobs_store::{SeaOrmStore, testing::TestDb};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

type Counts = Arc<Mutex<HashMap<String, u32>>>;

/// Executions per token, as the `http` handler reported them.
struct Ledger {
    url: String,
    counts: Counts,
}

impl Ledger {
    fn start() -> Ledger {
        let counts: Counts = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/run", listener.local_addr().unwrap());
        let data = web::Data::new(counts.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/run", web::post().to(record))
        })
        .workers(2)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Ledger { url, counts }
    }

    fn snapshot(&self) -> HashMap<String, u32> {
        self.counts.lock().unwrap().clone()
    }
}

async fn record(counts: web::Data<Counts>, body: web::Json<Value>) -> HttpResponse {
    // A little work, so that jobs are in flight when faults strike.
    sleep(Duration::from_millis(body["ms"].as_u64().unwrap_or(0))).await;
    let token = body["token"].as_str().unwrap_or_default().to_owned();
    *counts.lock().unwrap().entry(token).or_default() += 1;
    HttpResponse::Ok().json(json!({"ok": true}))
}

/// Two apis and three workers on one PostgreSQL schema.
struct Cluster {
    db: TestDb,
    url: String,
    ledger: Ledger,
    apis: Vec<(String, Proc)>,
    workers: Vec<(String, Proc)>,
    started_workers: usize,
    http: reqwest::Client,
    label: &'static str,
}

impl Cluster {
    async fn start(label: &'static str) -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let db = TestDb::postgres().await;
        let url = db.url();
        let mut cluster = Cluster {
            db,
            url,
            ledger: Ledger::start(),
            apis: Vec::new(),
            workers: Vec::new(),
            started_workers: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            label,
        };
        for i in 0..2 {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let log = format!("{label}-api{i}");
            let child = spawn(
                "jobs-api",
                &log,
                &cluster.url,
                &["--listen", &listen, "--embedded-worker", "off"],
            );
            cluster.apis.push((format!("http://{listen}"), child));
        }
        for _ in 0..3 {
            cluster.start_worker();
        }
        for (base, _) in &cluster.apis {
            wait_ready(&cluster.http, base).await;
        }
        cluster
    }

    fn start_worker(&mut self) -> String {
        let id = format!("w{}", self.started_workers);
        self.started_workers += 1;
        let log = format!("{}-{id}", self.label);
        let args = [
            "--worker-id",
            &id,
            "--queue",
            "default=20",
            "--lease-secs",
            "3",
            "--maintenance-interval-secs",
            "1",
            "--poll-interval-ms",
            "200",
            "--http-allow-host",
            "127.0.0.1",
            "--shutdown-grace-secs",
            "10",
        ];
        let child = spawn("jobs-worker", &log, &self.url, &args);
        self.workers.push((id.clone(), child));
        id
    }

    fn store(&self) -> &SeaOrmStore {
        &self.db.store
    }

    /// What clients need to send jobs, detached from the cluster so they can run while
    /// the test kills and restarts processes.
    fn load(&self) -> Load {
        Load {
            http: self.http.clone(),
            bases: self.apis.iter().map(|(b, _)| b.clone()).collect(),
            ledger_url: self.ledger.url.clone(),
            label: self.label,
        }
    }

    /// Tokens of the jobs a worker holds right now (after it died: was running at the kill).
    async fn running_on(&self, worker: &str) -> HashSet<String> {
        let sql = format!(
            "SELECT args->'body'->>'token' AS t FROM jobs WHERE state = 'running' AND worker_id = '{worker}'"
        );
        self.tokens(&sql).await
    }

    async fn tokens(&self, sql: &str) -> HashSet<String> {
        let db = self.store().connection();
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                sql.to_owned(),
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.try_get::<String>("", "t").unwrap())
            .collect()
    }

    async fn unfinished(&self) -> Option<i64> {
        let db = self.store().connection();
        let sql = "SELECT COUNT(*) AS n FROM jobs WHERE state IN ('pending', 'running')";
        let row = db
            .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .ok()??;
        row.try_get::<i64>("", "n").ok()
    }

    async fn wait_drained(&self, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            if self.unfinished().await == Some(0) {
                return;
            }
            assert!(
                Instant::now() < until,
                "jobs still unfinished after {limit:?}: {:?}",
                self.unfinished().await
            );
            sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every accepted job completed and ran at least once; returns the tokens that ran
    /// more than once.
    async fn verify(&self, accepted: &HashSet<String>) -> HashSet<String> {
        let completed = self
            .tokens("SELECT args->'body'->>'token' AS t FROM jobs WHERE state = 'completed'")
            .await;
        let missing: Vec<&String> = accepted.difference(&completed).take(5).collect();
        assert!(
            missing.is_empty(),
            "accepted jobs that did not complete: {missing:?}"
        );
        let ledger = self.ledger.snapshot();
        let never_ran: Vec<&String> = accepted
            .iter()
            .filter(|t| !ledger.contains_key(*t))
            .take(5)
            .collect();
        assert!(
            never_ran.is_empty(),
            "accepted jobs that never ran: {never_ran:?}"
        );
        ledger
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(t, _)| t)
            .collect()
    }

    async fn stop(mut self) {
        for (_, child) in self.apis.iter_mut().chain(self.workers.iter_mut()) {
            terminate(child);
        }
        for (name, child) in self.apis.iter_mut().chain(self.workers.iter_mut()) {
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "{name} exits cleanly on SIGTERM: {status}"
            );
        }
    }
}

#[derive(Clone)]
struct Load {
    http: reqwest::Client,
    bases: Vec<String>,
    ledger_url: String,
    label: &'static str,
}

impl Load {
    /// The token doubles as the unique key, blocking in every state (a resend may come
    /// after the job completed), so a client may safely resend.
    fn job(&self, token: &str) -> Value {
        let every = [
            "pending",
            "running",
            "completed",
            "partial",
            "failed",
            "cancelled",
        ];
        json!({"kind": "http", "unique": {"key": token, "states": every}, "args": {"url": self.ledger_url, "body": {"token": token, "ms": 5}}})
    }

    /// Sends `total` jobs through both apis from 8 clients, alternating single requests and
    /// batches of 50. Returns the tokens of the jobs a 2xx accepted.
    async fn enqueue(self, total: usize) -> HashSet<String> {
        let accepted = Arc::new(Mutex::new(HashSet::new()));
        let clients = 8;
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (load, accepted) = (self.clone(), accepted.clone());
            let jobs: Vec<(String, Value)> = (0..total)
                .filter(|i| i % clients == c)
                .map(|i| {
                    let token = format!("{}-{i}", self.label);
                    (token.clone(), self.job(&token))
                })
                .collect();
            tasks.push(tokio::spawn(async move {
                for (round, chunk) in jobs.chunks(50).enumerate() {
                    let base = &load.bases[(c + round) % load.bases.len()];
                    if round % 2 == 0 {
                        let body =
                            json!({"jobs": chunk.iter().map(|(_, j)| j).collect::<Vec<_>>()});
                        if post_ok(&load.http, &format!("{base}/v1/jobs/batch"), &body).await {
                            accepted
                                .lock()
                                .unwrap()
                                .extend(chunk.iter().map(|(t, _)| t.clone()));
                        }
                    } else {
                        for (token, job) in chunk {
                            if post_ok(&load.http, &format!("{base}/v1/jobs"), job).await {
                                accepted.lock().unwrap().insert(token.clone());
                            }
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(accepted).unwrap().into_inner().unwrap()
    }
}

/// Posts like a careful client: a 503 or a lost connection is retried (jobs carry unique
/// keys, so a resend cannot create a second job), three tries in all.
async fn post_ok(http: &reqwest::Client, url: &str, body: &Value) -> bool {
    for _ in 0..3 {
        match http.post(url).json(body).send().await {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) if r.status() != 503 => return false,
            _ => sleep(Duration::from_millis(200)).await,
        }
    }
    false
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..400 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} never became ready");
}

fn jobs_per_scenario() -> usize {
    std::env::var("JOBS_FAULT_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000)
}

fn drain_limit(jobs: usize) -> Duration {
    Duration::from_secs(60 + jobs as u64 / 50)
}

/// A figure for docs/RELIABILITY.md.
fn report(scenario: &str, figures: Value) {
    eprintln!(
        "FAULT-REPORT {}",
        json!({"scenario": scenario, "figures": figures})
    );
}

async fn steady_state() {
    let n = jobs_per_scenario();
    let cluster = Cluster::start("steady").await;
    let started = Instant::now();
    let accepted = cluster.load().enqueue(n).await;
    assert_eq!(
        accepted.len(),
        n,
        "without faults every request is accepted"
    );
    cluster.wait_drained(drain_limit(n)).await;
    let twice = cluster.verify(&accepted).await;
    assert!(
        twice.is_empty(),
        "no job runs twice without faults: {twice:?}"
    );
    report(
        "steady",
        json!({"jobs": n, "seconds": started.elapsed().as_secs_f64(), "ran_twice": 0}),
    );
    cluster.stop().await;
}

async fn sigkill_workers() {
    let n = jobs_per_scenario();
    let mut cluster = Cluster::start("sigkill").await;
    let started = Instant::now();
    let sending = tokio::spawn(cluster.load().enqueue(n));
    // Kill a random worker every 2 s while jobs arrive and run, and start a new one.
    let mut in_flight = HashSet::new();
    let mut kills = 0;
    sleep(Duration::from_millis(700)).await;
    while kills < 4 {
        sleep(Duration::from_secs(2)).await;
        let victim = random_index(cluster.workers.len());
        let (id, mut child) = cluster.workers.remove(victim);
        child.kill().unwrap();
        child.wait().unwrap();
        in_flight.extend(cluster.running_on(&id).await);
        kills += 1;
        cluster.start_worker();
    }
    let accepted = sending.await.unwrap();
    assert_eq!(
        accepted.len(),
        n,
        "killing workers does not disturb the apis"
    );
    cluster.wait_drained(drain_limit(n)).await;
    let twice = cluster.verify(&accepted).await;
    let unexplained: Vec<&String> = twice.difference(&in_flight).take(5).collect();
    assert!(
        unexplained.is_empty(),
        "only jobs in flight at a kill may run twice: {unexplained:?}"
    );
    report(
        "sigkill_workers",
        json!({"jobs": n, "kills": kills, "in_flight_at_kills": in_flight.len(), "ran_twice": twice.len(), "seconds": started.elapsed().as_secs_f64()}),
    );
    cluster.stop().await;
}

fn random_index(len: usize) -> usize {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize)
        % len
}

async fn sigterm_rolling_deploy() {
    let n = jobs_per_scenario();
    let mut cluster = Cluster::start("sigterm").await;
    let started = Instant::now();
    let sending = tokio::spawn(cluster.load().enqueue(n));
    // Replace each worker in turn, as a rolling deploy does: SIGTERM, wait, start anew.
    for _ in 0..3 {
        sleep(Duration::from_millis(800)).await;
        let (id, mut child) = cluster.workers.remove(0);
        terminate(&child);
        let status = child.wait().unwrap();
        assert!(status.success(), "{id} exits 0 on SIGTERM: {status}");
        assert!(
            cluster.running_on(&id).await.is_empty(),
            "{id} left nothing running behind"
        );
        cluster.start_worker();
    }
    let accepted = sending.await.unwrap();
    cluster.wait_drained(drain_limit(n)).await;
    let twice = cluster.verify(&accepted).await;
    assert!(
        twice.is_empty(),
        "a graceful stop runs nothing twice: {twice:?}"
    );
    // With its state and error history, so a failure says how the attempt was charged.
    let charged = cluster
        .tokens(
            "SELECT concat_ws(' ', args->'body'->>'token', state, attempt, errors::text) AS t \
             FROM jobs WHERE attempt <> 1",
        )
        .await;
    assert!(
        charged.is_empty(),
        "every job completed on its first charged attempt: {charged:?}"
    );
    report(
        "sigterm_rolling",
        json!({"jobs": n, "restarts": 3, "ran_twice": 0, "seconds": started.elapsed().as_secs_f64()}),
    );
    cluster.stop().await;
}

fn pg_cluster(action: &str) -> bool {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max()
        .expect("a cluster version");
    let status = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .status()
        .expect("run pg_ctlcluster");
    status.success()
}

struct StartOnDrop;

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        if !pg_cluster("start") {
            eprintln!("pg_ctlcluster start failed: start PostgreSQL by hand");
        }
    }
}

async fn postgres_restart() {
    let n = jobs_per_scenario();
    let cluster = Cluster::start("pgdown").await;
    let started = Instant::now();
    let load = cluster.load();
    let first = Load {
        label: "pgdown-before",
        ..load.clone()
    }
    .enqueue(n / 2)
    .await;
    sleep(Duration::from_millis(300)).await;

    assert!(pg_cluster("stop"), "pg_ctlcluster stop");
    // Whatever happens below, PostgreSQL comes back for the tests that follow.
    let _restart = StartOnDrop;
    let down_at = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    let mut reasons = Vec::new();
    while down_at.elapsed() < Duration::from_secs(10) {
        for base in &load.bases {
            let asked = Instant::now();
            let create = load
                .http
                .post(format!("{base}/v1/jobs"))
                .json(&load.job("while-down"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                create.status(),
                503,
                "a create while the database is down is refused"
            );
            slowest = slowest.max(asked.elapsed());
            let asked = Instant::now();
            let ready = load
                .http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .unwrap();
            assert_eq!(ready.status(), 503);
            let problem: Value = ready.json().await.unwrap();
            reasons.push(problem["detail"].as_str().unwrap_or_default().to_owned());
            slowest = slowest.max(asked.elapsed());
            answered += 2;
        }
        sleep(Duration::from_millis(500)).await;
    }
    drop(_restart);
    let up_at = Instant::now();
    for base in &load.bases {
        wait_ready(&load.http, base).await;
    }
    let recovered = up_at.elapsed();
    let second = Load {
        label: "pgdown-after",
        ..load.clone()
    }
    .enqueue(n - n / 2)
    .await;
    assert!(
        slowest < Duration::from_secs(6),
        "no request hung while the database was down: {slowest:?}"
    );
    assert!(
        reasons.iter().all(|r| r.contains("unreachable")),
        "readyz says why: {:?}",
        reasons.first()
    );

    cluster.wait_drained(drain_limit(n)).await;
    let accepted: HashSet<String> = first.union(&second).cloned().collect();
    assert_eq!(
        accepted.len(),
        n,
        "before and after the outage every request is accepted"
    );
    let twice = cluster.verify(&accepted).await;
    report(
        "postgres_stopped_10s",
        json!({"jobs": n, "requests_while_down": answered, "slowest_answer_ms": slowest.as_millis(), "apis_ready_after_start_ms": recovered.as_millis(), "ran_twice": twice.len(), "seconds": started.elapsed().as_secs_f64()}),
    );
    cluster.stop().await;
}

async fn api_killed_mid_batch() {
    let mut cluster = Cluster::start("apikill").await;
    let load = cluster.load();
    let base = load.bases[0].clone();
    // Batches of 500 tagged in metadata; the api is killed while they stream in.
    let sender = tokio::spawn(async move {
        let mut sent = Vec::new();
        for batch in 0.. {
            let jobs: Vec<Value> = (0..500)
                .map(|_| json!({"kind": "nobody_runs_this", "queue": "parked", "metadata": {"batch": batch}}))
                .collect();
            let ok = post_ok(
                &load.http,
                &format!("{base}/v1/jobs/batch"),
                &json!({"jobs": jobs}),
            )
            .await;
            sent.push((batch, ok));
            if !ok {
                return sent;
            }
        }
        unreachable!()
    });
    sleep(Duration::from_millis(1_500)).await;
    let (_, mut api) = cluster.apis.remove(0);
    api.kill().unwrap();
    api.wait().unwrap();
    let sent = sender.await.unwrap();
    let db = cluster.store().connection();
    let sql = "SELECT metadata->>'batch' AS b, COUNT(*) AS n FROM jobs GROUP BY 1";
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap();
    let present: HashMap<String, i64> = rows
        .iter()
        .map(|r| (r.try_get("", "b").unwrap(), r.try_get("", "n").unwrap()))
        .collect();
    assert!(
        present.values().all(|n| *n == 500),
        "every batch is whole or absent: {present:?}"
    );
    for (batch, ok) in &sent {
        if *ok {
            assert_eq!(
                present.get(&batch.to_string()),
                Some(&500),
                "accepted batch {batch} is present"
            );
        }
    }
    let accepted = sent.iter().filter(|(_, ok)| *ok).count();
    report(
        "api_killed_mid_batch",
        json!({"batches_accepted": accepted, "batches_present": present.len(), "batch_size": 500}),
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(jobs_postgres_tests),
    ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
)]
async fn postgres_fault_scenarios() {
    // `JOBS_FAULT_SCENARIOS=steady,sigkill` runs a subset by hand; CI runs them all.
    let chosen = std::env::var("JOBS_FAULT_SCENARIOS").unwrap_or_default();
    let wanted = |name: &str| chosen.is_empty() || chosen.split(',').any(|c| c.trim() == name);
    if wanted("steady") {
        steady_state().await;
    }
    if wanted("sigkill") {
        sigkill_workers().await;
    }
    if wanted("sigterm") {
        sigterm_rolling_deploy().await;
    }
    if wanted("apikill") {
        api_killed_mid_batch().await;
    }
    if wanted("pgdown") {
        postgres_restart().await;
    }
}
