//! Periodic jobs with real processes: every worker process runs the scheduler, and each
//! slot of a schedule still becomes exactly one job, with no gaps, even when the process
//! that enqueued the latest slot is SIGKILLed; and after no worker ran for 10 slots, each
//! catch-up policy yields what it promises (also tested at the store level with a
//! controlled clock, jobs-conformance `schedules`).

use std::{collections::BTreeMap, time::Duration};

use blackbox_tests::{free_port, log_path, spawn, wait_until};
use jobs_core::{CatchUp, JobStore, JobTemplate, ListFilter, PageRequest, Schedule, ScheduleStore};
use jobs_store::{SeaOrmStore, testing::TestDb};
use serde_json::json;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

const SECOND: Duration = Duration::from_secs(1);

/// Every second; `all`, so a tick that comes late on a loaded machine still leaves no gap.
fn every_second() -> Schedule {
    Schedule::new("beat", "* * * * * *", JobTemplate::new("echo", json!({}))).catch_up(CatchUp::All)
}

/// Sleeps until `at` by the wall clock.
async fn sleep_until(at: OffsetDateTime) {
    let left = at - OffsetDateTime::now_utc();
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs()).await;
    }
}

/// How many jobs the schedule enqueued for each slot (the job's `run_at`).
async fn jobs_per_slot(store: &SeaOrmStore) -> BTreeMap<OffsetDateTime, u32> {
    let filter = ListFilter::new().kind("echo");
    let page = store.list(&filter, &PageRequest::first(100)).await.unwrap();
    assert!(page.next_cursor.is_none(), "fewer than 100 jobs");
    let mut per_slot = BTreeMap::new();
    for job in page.items {
        assert_eq!(job.metadata["schedule"], "beat");
        *per_slot.entry(job.run_at).or_insert(0) += 1;
    }
    per_slot
}

/// Exactly one job for each slot from `first` on, none missing up to `through`.
fn assert_one_job_per_slot(
    per_slot: &BTreeMap<OffsetDateTime, u32>,
    first: OffsetDateTime,
    through: OffsetDateTime,
) {
    let twice: Vec<_> = per_slot.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "slots with more than one job: {twice:?}");
    let slots: Vec<OffsetDateTime> = per_slot.keys().copied().collect();
    assert_eq!(slots.first(), Some(&first), "the first slot: {slots:?}");
    assert!(
        slots.last().is_some_and(|last| *last >= through),
        "enqueued through {through}: {slots:?}"
    );
    for pair in slots.windows(2) {
        assert_eq!(pair[1] - pair[0], SECOND, "no gap: {slots:?}");
    }
}

/// Which worker enqueued the latest slot so far, from the scheduler's log lines
/// (`scheduled slot enqueued worker_id=.. slot=..`), with that slot.
fn latest_enqueuer(labels: &[&str]) -> Option<(String, String)> {
    let mut latest: Option<(String, String)> = None;
    for label in labels {
        let log = std::fs::read_to_string(log_path(label)).unwrap_or_default();
        for line in log.lines().map(strip_ansi) {
            if !line.contains("scheduled slot enqueued") {
                continue;
            }
            let (Some(worker), Some(slot)) = (field(&line, "worker_id"), field(&line, "slot"))
            else {
                continue;
            };
            // RFC 3339 UTC instants of one format order as text.
            if latest.as_ref().is_none_or(|(_, s)| slot > *s) {
                latest = Some((worker, slot));
            }
        }
    }
    latest
}

fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let value = line[start..].split_whitespace().next()?;
    Some(value.to_owned())
}

/// Log lines may carry colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_postgres_tests),
    ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
)]
async fn postgres_three_workers_enqueue_each_slot_once_through_a_sigkill() {
    let db = TestDb::postgres().await;
    let url = db.url();
    let labels = ["schedules-w0", "schedules-w1", "schedules-w2"];
    let mut workers = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        let id = format!("w{i}");
        let args = [
            "--worker-id",
            &id,
            "--queue",
            "default=10",
            "--poll-interval-ms",
            "200",
        ];
        workers.push((id.clone(), spawn("jobs-worker", label, &url, &args)));
    }
    for label in labels {
        wait_until(
            "the workers to start",
            Duration::from_secs(60),
            async || {
                std::fs::read_to_string(log_path(label))
                    .is_ok_and(|l| l.contains("worker starting"))
            },
        )
        .await;
    }
    let first = db
        .store
        .create_schedule(&every_second())
        .await
        .unwrap()
        .next_run_at;
    sleep_until(first + 10 * SECOND).await;

    let (victim, slot) = latest_enqueuer(&labels).expect("slots were enqueued");
    let (_, child) = workers.iter_mut().find(|(id, _)| *id == victim).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = OffsetDateTime::parse(&slot, &Rfc3339).unwrap();

    let through = first + 19 * SECOND;
    sleep_until(through + 2 * SECOND).await;
    let per_slot = jobs_per_slot(&db.store).await;
    assert_one_job_per_slot(&per_slot, first, through);
    let (_, after) = latest_enqueuer(&labels).unwrap();
    assert!(
        OffsetDateTime::parse(&after, &Rfc3339).unwrap() >= through,
        "the survivors went on after {victim} was killed at slot {killed_at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_api_with_embedded_worker_enqueues_each_slot_once_across_a_sigkill() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDb::sqlite().await;
    let url = db.url();
    let port = free_port();
    let (listen, base) = (
        format!("127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}"),
    );
    let http = reqwest::Client::new();
    let start = |label: &str| spawn("jobs-api", label, &url, &["--listen", &listen]);
    let ready = async || {
        wait_until("the api to be ready", Duration::from_secs(60), async || {
            let r = http.get(format!("{base}/readyz")).send().await;
            r.is_ok_and(|r| r.status().is_success())
        })
        .await
    };
    let mut api = start("schedules-api-1");
    ready().await;
    let body =
        json!({"name": "beat", "cron": "* * * * * *", "catch_up": "all", "job": {"kind": "echo"}});
    let created = http
        .post(format!("{base}/v1/schedules"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let first = db
        .store
        .get_schedule("default", "beat")
        .await
        .unwrap()
        .next_run_at;

    sleep_until(first + 4 * SECOND).await;
    api.kill().unwrap();
    api.wait().unwrap();
    let _api = start("schedules-api-2");
    ready().await;
    let through = first + 9 * SECOND;
    sleep_until(through + 2 * SECOND).await;
    assert_one_job_per_slot(&jobs_per_slot(&db.store).await, first, through);
}

/// No worker runs for the first 10 slots of three schedules, one per catch-up policy; then
/// one starts. Its first tick finds every missed slot due at once: `all` enqueues each of
/// them, `once` only the latest, `skip` none (its first job is for a slot after that tick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_missed_slots_follow_each_catch_up_policy() {
    let db = TestDb::sqlite().await;
    let policies = [
        ("all", CatchUp::All),
        ("once", CatchUp::Once),
        ("skip", CatchUp::Skip),
    ];
    let mut first = None;
    for (name, policy) in policies {
        let template = JobTemplate::new("echo", json!({}));
        let schedule = Schedule::new(name, "* * * * * *", template).catch_up(policy);
        let created = db.store.create_schedule(&schedule).await.unwrap();
        first = first.or(Some(created.next_run_at));
    }
    let first = first.unwrap();
    // Slots first .. first + 9 s pass with no worker at all.
    sleep_until(first + 10 * SECOND).await;
    let _worker = spawn("jobs-worker", "schedules-catch-up", &db.url(), &[]);
    wait_until(
        "the worker to catch up",
        Duration::from_secs(60),
        async || {
            let info = db.store.get_schedule("default", "skip").await.unwrap();
            info.last_run_at.is_some()
        },
    )
    .await;

    let page = db
        .store
        .list(&ListFilter::new().kind("echo"), &PageRequest::first(100))
        .await
        .unwrap();
    let of = |name: &str| {
        let mut jobs: Vec<_> = page
            .items
            .iter()
            .filter(|j| j.metadata["schedule"] == name)
            .collect();
        jobs.sort_by_key(|j| j.run_at);
        jobs
    };
    let all = of("all");
    // The jobs of the catch-up tick: enqueued together, before any later tick (500 ms on).
    let tick = all[0].created_at;
    let in_tick = |jobs: &[&jobs_core::Job]| {
        jobs.iter()
            .filter(|j| j.created_at - tick < Duration::from_millis(300))
            .map(|j| j.run_at)
            .collect::<Vec<_>>()
    };
    let caught_up = in_tick(&all);
    assert_eq!(caught_up[0], first, "all: from the first missed slot");
    assert!(
        caught_up.len() >= 10,
        "all: every missed slot: {caught_up:?}"
    );
    for pair in caught_up.windows(2) {
        assert_eq!(pair[1] - pair[0], SECOND, "all: no gap: {caught_up:?}");
    }
    let latest = *caught_up.last().unwrap();
    assert_eq!(in_tick(&of("once")), [latest], "once: the latest slot only");
    assert!(
        of("once")[0].run_at == latest,
        "once: no job for an earlier slot"
    );
    assert!(in_tick(&of("skip")).is_empty(), "skip: none of them");
    assert!(
        of("skip").iter().all(|j| j.run_at > latest),
        "skip: only slots after the catch-up"
    );
}
