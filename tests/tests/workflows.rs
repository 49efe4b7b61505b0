//! Workflows and remote completions with real processes on PostgreSQL.
//!
//! - A fan-out and fan-in of 1,002 steps (a root, 1,000 leaves, a `gather` join) run by
//!   three `jobs-worker` processes: the join runs once, after every leaf, with every
//!   leaf's result; no leaf starts before the root ended.
//! - A remote worker completes jobs over HTTP with two follow-ups each while the api
//!   process is SIGKILLed and restarted again and again: at every moment a job's
//!   follow-ups exist if and only if its completion was stored (both or none), and in
//!   the end every job completed once with exactly one of each follow-up.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use blackbox_tests::{Proc, free_port, log_path, spawn};
use futures::{StreamExt, stream};
use jobs_store::testing::TestDb;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::time::{Instant, sleep};

/// One test at a time: each starts several processes on a 2-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LEAVES: usize = 1_000;

/// A random number in `range`, from the OS's randomness (v4 UUIDs).
fn random(range: std::ops::Range<u64>) -> u64 {
    range.start + (uuid::Uuid::new_v4().as_u128() % u128::from(range.end - range.start)) as u64
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < give_up, "{base} never became ready");
        sleep(Duration::from_millis(50)).await;
    }
}

fn start_api(url: &str, label: &str, listen: &str) -> Proc {
    spawn(
        "jobs-api",
        label,
        url,
        &["--listen", listen, "--embedded-worker", "off"],
    )
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    response.json().await.unwrap()
}

fn instant(job: &Value, field: &str) -> OffsetDateTime {
    let text = job[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} of {job}"));
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("{field} {text}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_postgres_tests),
    ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
)]
async fn fan_out_and_in_with_three_worker_processes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDb::postgres().await;
    let url = db.url();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _api = start_api(&url, "workflows-fan-api", &format!("127.0.0.1:{port}"));
    let _workers: Vec<Proc> = (1..=3)
        .map(|i| {
            let id = format!("fan-w{i}");
            let args = [
                "--worker-id",
                &id,
                "--queue",
                "default=20",
                "--poll-interval-ms",
                "200",
            ];
            spawn("jobs-worker", &format!("workflows-{id}"), &url, &args)
        })
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_ready(&http, &base).await;

    let mut steps = vec![json!({"name": "root", "kind": "echo", "args": {"root": true}})];
    let leaves: Vec<String> = (0..LEAVES).map(|i| format!("leaf-{i}")).collect();
    for (i, name) in leaves.iter().enumerate() {
        steps.push(json!({"name": name, "kind": "echo", "args": {"n": i}, "depends_on": ["root"]}));
    }
    steps.push(json!({"name": "join", "kind": "gather", "depends_on": leaves}));
    let began = Instant::now();
    let response = http
        .post(format!("{base}/v1/workflows"))
        .json(&json!({"name": "fan", "steps": steps}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    // The view is read after the steps were committed: the workers may be on it already.
    let listed = created["steps"].as_array().unwrap();
    assert_eq!(listed.len(), LEAVES + 2);
    assert_eq!(listed[0]["depends_on"], json!([]));
    assert_eq!(listed[1]["depends_on"], json!(["root"]));
    assert_eq!(listed[LEAVES + 1]["depends_on"], json!(leaves));
    assert_eq!(listed[LEAVES + 1]["state"], "waiting");

    let give_up = began + Duration::from_secs(180);
    let done = loop {
        let flow = get(&http, format!("{base}/v1/workflows/{id}")).await;
        if flow["state"] != "running" {
            break flow;
        }
        assert!(
            Instant::now() < give_up,
            "the workflow did not finish in 180 s: {}; worker logs in {}",
            flow["counts"],
            log_path("workflows-fan-w1").display()
        );
        sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "1,002 steps ran in {:?} on 3 worker processes",
        began.elapsed()
    );
    assert_eq!(done["state"], "completed", "{}", done["counts"]);
    assert_eq!(done["counts"], json!({"completed": LEAVES + 2}));

    let step_ids: HashMap<String, String> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["job_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(step_ids.len(), LEAVES + 2);
    let jobs: HashMap<String, Value> = stream::iter(step_ids.clone())
        .map(|(name, job_id)| {
            let (http, base) = (http.clone(), base.clone());
            async move { (name, get(&http, format!("{base}/v1/jobs/{job_id}")).await) }
        })
        .buffer_unordered(8)
        .collect()
        .await;

    let root = &jobs["root"];
    let join = &jobs["join"];
    assert_eq!(root["state"], "completed", "{root}");
    assert_eq!(join["state"], "completed", "{join}");
    assert_eq!(join["attempt"], 1, "the join ran exactly once: {join}");
    assert_eq!(join["errors"], json!([]), "{join}");
    let result = &join["result"];
    assert_eq!(result["parents"], LEAVES, "{}", result["counts"]);
    assert_eq!(result["counts"], json!({"completed": LEAVES}));
    let ns: Vec<u64> = result["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["n"]
                .as_u64()
                .unwrap_or_else(|| panic!("a leaf's result: {r}"))
        })
        .collect();
    let mut sorted = ns.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..LEAVES as u64).collect::<Vec<_>>(),
        "every leaf's result, once"
    );
    assert_eq!(
        ns, sorted,
        "the results come oldest parent first, in the order the steps were given"
    );

    let root_finished = instant(root, "finished_at");
    let join_started = instant(join, "started_at");
    let mut last_leaf_finished = root_finished;
    for name in &leaves {
        let leaf = &jobs[name];
        assert_eq!(leaf["state"], "completed", "{leaf}");
        let started = instant(leaf, "started_at");
        let finished = instant(leaf, "finished_at");
        assert!(
            started >= root_finished,
            "{name} started at {started} before the root finished at {root_finished}"
        );
        assert!(
            join_started >= finished,
            "the join started at {join_started} before {name} finished at {finished}"
        );
        last_leaf_finished = last_leaf_finished.max(finished);
    }
    let workers: BTreeMap<&str, usize> = jobs.values().fold(BTreeMap::new(), |mut by, job| {
        *by.entry(job["worker_id"].as_str().unwrap_or("?"))
            .or_default() += 1;
        by
    });
    eprintln!(
        "steps per worker: {workers:?}; the join started {:.1} ms after the last leaf finished",
        (join_started - last_leaf_finished).as_seconds_f64() * 1e3
    );
}

/// What the remote workers saw, for the report.
#[derive(Default)]
struct Tally {
    completed: AtomicU64,
    /// Completions answered 409: the lease was lost (rescued after expiry), or an
    /// earlier try whose answer was lost had stored it.
    lease_lost: AtomicU64,
    /// Requests that got no answer (the api was dead or died during the request).
    no_answer: AtomicU64,
    /// Completions retried after a request that got no answer.
    retried_completions: AtomicU64,
}

const PARENTS: usize = 200;
const REMOTE_WORKERS: usize = 2;
const KILLS: usize = 6;

/// One follow-up of the job `parent`: `part` is `a` or `b`. No unique key: a second
/// creation would show as a second job rather than be folded into the first.
fn follow_up(parent: &str, part: &str) -> Value {
    json!({"kind": "audit", "queue": "audit", "args": {"parent": parent, "part": part}})
}

/// A remote worker: claims jobs of the `remote` queue with a 2 s lease, "works" a little,
/// completes each with its two follow-ups; a request without answer is retried (with the
/// same token) until the api answers; a 409 means someone else's attempt now.
async fn remote_worker(
    http: reqwest::Client,
    base: String,
    name: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    while !stop.load(Ordering::SeqCst) {
        let claim = json!({"worker_id": name, "queues": ["remote"], "max_jobs": 1,
            "lease_seconds": 2, "wait_seconds": 0.5});
        let jobs = match http
            .post(format!("{base}/v1/claims"))
            .json(&claim)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                Ok(body) => body["jobs"].as_array().cloned().unwrap_or_default(),
                Err(_) => {
                    tally.no_answer.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
            },
            Ok(r) if r.status() == 503 => {
                tally.no_answer.fetch_add(1, Ordering::SeqCst);
                sleep(Duration::from_millis(100)).await;
                continue;
            }
            Ok(r) => panic!("a claim answered {}", r.status()),
            Err(_) => {
                tally.no_answer.fetch_add(1, Ordering::SeqCst);
                sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        for job in jobs {
            let id = job["id"].as_str().unwrap().to_owned();
            sleep(Duration::from_millis(random(50..150))).await;
            let body = json!({
                "worker_id": name,
                "lease_token": job["lease_token"],
                "result": {"by": name, "attempt": job["attempt"]},
                "follow_ups": [follow_up(&id, "a"), follow_up(&id, "b")],
            });
            let mut tries = 0;
            loop {
                tries += 1;
                if tries > 1 {
                    tally.retried_completions.fetch_add(1, Ordering::SeqCst);
                }
                let sent = http
                    .post(format!("{base}/v1/jobs/{id}/complete"))
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        tally.completed.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    Ok(r) if r.status() == 409 => {
                        tally.lease_lost.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    Ok(r) if r.status() == 503 => {
                        tally.no_answer.fetch_add(1, Ordering::SeqCst);
                        sleep(Duration::from_millis(100)).await;
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        panic!("completing {id} answered {status}: {text}");
                    }
                    Err(_) => {
                        tally.no_answer.fetch_add(1, Ordering::SeqCst);
                        assert!(tries < 600, "completing {id}: no answer for a minute");
                        sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}

/// Per parent job: its state and how many of each follow-up exist, read in one
/// statement (one snapshot).
async fn parents_and_follow_ups(db: &TestDb) -> Vec<(String, String, i64, i64)> {
    let conn = db.store.connection();
    let sql = "SELECT CAST(p.id AS text) AS id, p.state, \
         (SELECT COUNT(*) FROM jobs f WHERE f.kind = 'audit' \
            AND f.args->>'parent' = CAST(p.id AS text) AND f.args->>'part' = 'a') AS a, \
         (SELECT COUNT(*) FROM jobs f WHERE f.kind = 'audit' \
            AND f.args->>'parent' = CAST(p.id AS text) AND f.args->>'part' = 'b') AS b \
       FROM jobs p WHERE p.kind = 'remote' ORDER BY p.id";
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.try_get::<String>("", "id").unwrap(),
                r.try_get::<String>("", "state").unwrap(),
                r.try_get::<i64>("", "a").unwrap(),
                r.try_get::<i64>("", "b").unwrap(),
            )
        })
        .collect()
}

/// Follow-ups exist if and only if their job completed: both or none, never one, never
/// for a job not completed. Returns how many jobs completed.
async fn assert_follow_ups_iff_completed(db: &TestDb, when: &str) -> usize {
    let rows = parents_and_follow_ups(db).await;
    assert_eq!(rows.len(), PARENTS, "{when}");
    let audits = {
        let conn = db.store.connection();
        let sql = "SELECT COUNT(*) AS n FROM jobs WHERE kind = 'audit'";
        let row = conn
            .query_one_raw(Statement::from_string(
                conn.get_database_backend(),
                sql.to_owned(),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap()
    };
    let mut completed = 0;
    for (id, state, a, b) in &rows {
        if state == "completed" {
            completed += 1;
            assert_eq!(
                (*a, *b),
                (1, 1),
                "{when}: job {id} completed: exactly one of each follow-up"
            );
        } else {
            assert_eq!(
                (*a, *b),
                (0, 0),
                "{when}: job {id} is {state}: no follow-up"
            );
        }
    }
    // Read after the per-job counts: may only have grown, never hold strays.
    assert!(
        audits >= 2 * completed as i64,
        "{when}: {audits} follow-ups for {completed} completed jobs"
    );
    completed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_postgres_tests),
    ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
)]
async fn remote_completion_and_follow_ups_survive_api_kills() {
    let _one = ONE_AT_A_TIME.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDb::postgres().await;
    let url = db.url();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    let mut api = start_api(&url, "workflows-kill-api-0", &listen);
    // Rescues expired leases (every second) and runs nothing of ours: it works another queue.
    let _rescuer = spawn(
        "jobs-worker",
        "workflows-kill-rescuer",
        &url,
        &[
            "--worker-id",
            "rescuer",
            "--queue",
            "idle=1",
            "--maintenance-interval-secs",
            "1",
            "--poll-interval-ms",
            "1000",
        ],
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    wait_ready(&http, &base).await;

    let jobs: Vec<Value> = (0..PARENTS)
        .map(|i| json!({"kind": "remote", "queue": "remote", "args": {"i": i}}))
        .collect();
    let response = http
        .post(format!("{base}/v1/jobs/batch"))
        .json(&json!({"jobs": jobs}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..REMOTE_WORKERS)
        .map(|i| {
            tokio::spawn(remote_worker(
                http.clone(),
                base.clone(),
                format!("remote-{i}"),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();

    // The storm: SIGKILL the api at random moments; right after each kill (nothing of
    // the dead process can commit any more) the follow-ups match the completions.
    let began = Instant::now();
    let mut completed_at_kills = Vec::new();
    // Up to KILLS kills, while at least a quarter of the jobs remain.
    while completed_at_kills.len() < KILLS
        && completed_at_kills
            .last()
            .is_none_or(|&n| n < PARENTS * 3 / 4)
    {
        let round = completed_at_kills.len() + 1;
        sleep(Duration::from_millis(random(200..1_200))).await;
        api.kill().unwrap();
        api.wait().unwrap();
        let completed =
            assert_follow_ups_iff_completed(&db, &format!("right after kill {round}")).await;
        completed_at_kills.push(completed);
        // Down for up to 3 s: longer than a lease, at times.
        sleep(Duration::from_millis(random(0..3_000))).await;
        api = start_api(&url, &format!("workflows-kill-api-{round}"), &listen);
        wait_ready(&http, &base).await;
    }
    let completed = assert_follow_ups_iff_completed(&db, "after the storm").await;
    eprintln!(
        "{} kills in {:?}; jobs completed at each kill: {completed_at_kills:?}, \
         after the storm: {completed}",
        completed_at_kills.len(),
        began.elapsed()
    );
    assert!(
        completed_at_kills.len() >= 4 && completed < PARENTS,
        "the work ended before the storm: make the work slower"
    );

    // Calm: the workers finish every job (those whose lease was lost come back after
    // the rescuer returned them).
    let give_up = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = parents_and_follow_ups(&db).await;
        if rows.iter().all(|(_, state, _, _)| state == "completed") {
            break;
        }
        let states: BTreeMap<&str, usize> = rows.iter().fold(BTreeMap::new(), |mut by, r| {
            *by.entry(r.1.as_str()).or_default() += 1;
            by
        });
        assert!(
            Instant::now() < give_up,
            "jobs did not all complete after the storm: {states:?}"
        );
        sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("a remote worker failed");
    }

    let completed = assert_follow_ups_iff_completed(&db, "in the end").await;
    assert_eq!(completed, PARENTS);
    let conn = db.store.connection();
    let sql = "SELECT COUNT(*) AS n FROM jobs WHERE kind = 'audit'";
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get::<i64>("", "n").unwrap(),
        2 * PARENTS as i64,
        "exactly two follow-ups per job, no strays"
    );
    let sql = "SELECT attempt, COUNT(*) AS n FROM jobs WHERE kind = 'remote' GROUP BY attempt";
    let attempts: BTreeMap<i32, i64> = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get::<i32>("", "attempt").unwrap(),
                r.try_get::<i64>("", "n").unwrap(),
            )
        })
        .collect();
    let tally = &*tally;
    eprintln!(
        "in {:?}: completions stored {}, answered 409 {}, requests without answer {}, \
         completions retried {}; jobs by attempt {attempts:?}",
        began.elapsed(),
        tally.completed.load(Ordering::SeqCst),
        tally.lease_lost.load(Ordering::SeqCst),
        tally.no_answer.load(Ordering::SeqCst),
        tally.retried_completions.load(Ordering::SeqCst),
    );
    assert!(
        tally.no_answer.load(Ordering::SeqCst) > 0,
        "the kills cut requests of the remote workers"
    );
    assert!(
        tally.completed.load(Ordering::SeqCst) <= PARENTS as u64,
        "a job's completion was stored twice"
    );
}
