//! Periodic jobs: schedule management, exactly one job per slot across processes, and
//! the catch-up policies. `enqueue_due` takes the time to act at, so missed slots are
//! made by ticking later than the schedule's next slot.

use std::time::Duration;

use futures::future::join_all;
use jobs_core::{
    CATCH_UP_MAX, CatchUp, JobError, JobTemplate, Schedule, ScheduleInfo, ScheduledRun,
    WorkerBackend,
};
use serde_json::json;
use time::OffsetDateTime;

use crate::{Harness, fixtures::count};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

fn every_second(name: &str) -> Schedule {
    Schedule::new(
        name,
        "* * * * * *",
        JobTemplate::new("tick", json!({"n": 1})),
    )
}

fn every_minute(name: &str) -> Schedule {
    Schedule::new(name, "* * * * *", JobTemplate::new("tick", json!({})))
}

async fn tick(s: &dyn WorkerBackend, at: OffsetDateTime) -> Vec<ScheduledRun> {
    s.enqueue_due(at, 100).await.unwrap()
}

fn slots(runs: &[ScheduledRun], name: &str) -> Vec<OffsetDateTime> {
    runs.iter()
        .filter(|r| r.schedule == name)
        .map(|r| r.slot)
        .collect()
}

fn invalid_fields(e: JobError) -> Vec<String> {
    match e {
        JobError::Invalid(fields) => fields.into_iter().map(|f| f.field).collect(),
        other => panic!("expected Invalid, got {other}"),
    }
}

pub async fn schedules_are_created_listed_paused_and_deleted_per_tenant(h: &dyn Harness) {
    let s = h.backend();
    let before = OffsetDateTime::now_utc();
    let created = s.create_schedule(&every_minute("nightly")).await.unwrap();
    assert!(created.next_run_at > before && created.next_run_at <= before + MINUTE);
    assert_eq!(created.schedule, every_minute("nightly"));
    assert_eq!((created.paused_at, created.last_run_at), (None, None));
    assert!(matches!(
        s.create_schedule(&every_minute("nightly")).await,
        Err(JobError::Conflict(_))
    ));
    s.create_schedule(&every_minute("nightly").tenant("acme"))
        .await
        .expect("names are per tenant");
    s.create_schedule(&every_minute("alpha")).await.unwrap();
    let names = |list: Vec<ScheduleInfo>| -> Vec<String> {
        list.into_iter().map(|i| i.schedule.name).collect()
    };
    assert_eq!(
        names(s.list_schedules("default").await.unwrap()),
        ["alpha", "nightly"]
    );
    assert_eq!(names(s.list_schedules("acme").await.unwrap()), ["nightly"]);
    assert_eq!(s.get_schedule("default", "nightly").await.unwrap(), created);

    let paused = s.pause_schedule("default", "nightly").await.unwrap();
    assert!(paused.paused_at.is_some());
    let again = s.pause_schedule("default", "nightly").await.unwrap();
    assert_eq!(again.paused_at, paused.paused_at, "pausing is idempotent");
    let runs = tick(s, OffsetDateTime::now_utc() + 10 * MINUTE).await;
    let mut due: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| (r.tenant.as_str(), r.schedule.as_str()))
        .collect();
    due.sort();
    assert_eq!(
        due,
        [("acme", "nightly"), ("default", "alpha")],
        "not the paused one"
    );

    s.delete_schedule("default", "nightly").await.unwrap();
    assert!(matches!(
        s.get_schedule("default", "nightly").await,
        Err(JobError::ScheduleNotFound(_))
    ));
    for missing in [
        s.delete_schedule("default", "nightly").await.err(),
        s.pause_schedule("other", "alpha").await.err(),
        s.resume_schedule("other", "alpha").await.err(),
    ] {
        assert!(matches!(missing, Some(JobError::ScheduleNotFound(_))));
    }
    assert!(s.get_schedule("acme", "nightly").await.is_ok());
}

pub async fn invalid_schedules_are_refused_naming_the_field(h: &dyn Harness) {
    let s = h.backend();
    let bad = every_minute("x").timezone("Mars/Olympus");
    assert_eq!(
        invalid_fields(s.create_schedule(&bad).await.unwrap_err()),
        ["timezone"]
    );
    let bad = Schedule::new(
        "bad name",
        "not cron",
        JobTemplate::new("k", json!({})).priority(11),
    );
    assert_eq!(
        invalid_fields(s.upsert_schedule(&bad).await.unwrap_err()),
        ["job.priority", "name", "cron"]
    );
    assert!(s.list_schedules("default").await.unwrap().is_empty());
}

pub async fn each_slot_enqueues_one_job_due_at_the_slot(h: &dyn Harness) {
    let s = h.backend();
    let mut schedule = every_minute("report");
    schedule.job = schedule
        .job
        .queue("reports")
        .priority(8)
        .metadata(json!({"team": "ops"}));
    let info = s.create_schedule(&schedule).await.unwrap();
    let slot = info.next_run_at;
    assert!(tick(s, slot - SECOND).await.is_empty(), "not due yet");
    let runs = tick(s, slot + 3 * SECOND).await;
    assert_eq!(slots(&runs, "report"), [slot]);
    let job = s.get(Some("default"), runs[0].job_id).await.unwrap();
    assert_eq!(job.run_at, slot);
    assert_eq!((job.queue.as_str(), job.priority), ("reports", 8));
    let slot_text = slot
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(
        job.metadata,
        json!({"team": "ops", "schedule": "report", "slot": slot_text})
    );
    let after = s.get_schedule("default", "report").await.unwrap();
    assert_eq!(after.next_run_at, slot + MINUTE);
    assert_eq!(after.last_run_at, Some(slot));
    assert_eq!(after.last_job_id, Some(job.id));
    assert!(
        tick(s, slot + 3 * SECOND).await.is_empty(),
        "a slot is enqueued once"
    );
    assert_eq!(count(s).await, 1);
}

pub async fn concurrent_ticks_enqueue_each_slot_exactly_once(h: &dyn Harness) {
    let s = h.backend();
    let first = s
        .create_schedule(&every_second("race"))
        .await
        .unwrap()
        .next_run_at;
    let mut processes = Vec::new();
    for _ in 0..6 {
        processes.push(h.connect_again().await);
    }
    let mut enqueued = Vec::new();
    for n in 0..5u32 {
        let at = first + n * SECOND;
        let ticks = processes.iter().map(|p| {
            let p = p.clone();
            async move { p.enqueue_due(at, 100).await.unwrap() }
        });
        for runs in join_all(ticks).await {
            enqueued.extend(slots(&runs, "race"));
        }
    }
    let expected: Vec<OffsetDateTime> = (0..5u32).map(|n| first + n * SECOND).collect();
    enqueued.sort();
    assert_eq!(enqueued, expected, "one job per slot, none missed");
    assert_eq!(count(s).await, 5);
}

pub async fn missed_slots_follow_the_catch_up_policy(h: &dyn Harness) {
    let s = h.backend();
    let mut first = None;
    for policy in [CatchUp::Skip, CatchUp::Once, CatchUp::All] {
        let info = s
            .create_schedule(&every_second(policy.as_str()).catch_up(policy))
            .await
            .unwrap();
        first = first.or(Some(info.next_run_at));
        assert_eq!(Some(info.next_run_at), first, "created within one second");
    }
    let first = first.unwrap();
    // Ten slots, first..first+9s, were missed.
    let now = first + Duration::from_millis(9_500);
    let runs = tick(s, now).await;
    assert!(slots(&runs, "skip").is_empty());
    assert_eq!(slots(&runs, "once"), [first + 9 * SECOND]);
    let all: Vec<OffsetDateTime> = (0..10u32).map(|n| first + n * SECOND).collect();
    assert_eq!(slots(&runs, "all"), all);
    for policy in ["skip", "once", "all"] {
        let info = s.get_schedule("default", policy).await.unwrap();
        assert_eq!(info.next_run_at, first + 10 * SECOND, "{policy}");
    }
    assert_eq!(
        s.get_schedule("default", "skip").await.unwrap().last_run_at,
        None
    );
    // Back to normal: one due slot is enqueued whatever the policy.
    let runs = tick(s, first + Duration::from_millis(10_200)).await;
    assert_eq!(runs.len(), 3);
    assert_eq!(count(s).await, 1 + 10 + 3);
}

pub async fn catching_up_all_keeps_the_most_recent_slots(h: &dyn Harness) {
    let s = h.backend();
    let schedule = every_second("all").catch_up(CatchUp::All);
    let first = s.create_schedule(&schedule).await.unwrap().next_run_at;
    let missed = CATCH_UP_MAX as u32 + 50;
    let runs = tick(s, first + (missed - 1) * SECOND).await;
    let got = slots(&runs, "all");
    assert_eq!(got.len(), CATCH_UP_MAX);
    assert_eq!(got[0], first + 50 * SECOND);
    assert_eq!(got[CATCH_UP_MAX - 1], first + (missed - 1) * SECOND);
}

pub async fn paused_schedules_enqueue_nothing_and_resume_from_now(h: &dyn Harness) {
    let s = h.backend();
    let first = s
        .create_schedule(&every_second("p"))
        .await
        .unwrap()
        .next_run_at;
    s.pause_schedule("default", "p").await.unwrap();
    assert!(tick(s, first + 30 * SECOND).await.is_empty());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before = OffsetDateTime::now_utc();
    let resumed = s.resume_schedule("default", "p").await.unwrap();
    assert_eq!(resumed.paused_at, None);
    assert!(
        resumed.next_run_at > before && resumed.next_run_at > first,
        "the paused slots are not caught up"
    );
    let again = s.resume_schedule("default", "p").await.unwrap();
    assert_eq!(
        again.next_run_at, resumed.next_run_at,
        "resuming is idempotent"
    );
    let runs = tick(s, resumed.next_run_at).await;
    assert_eq!(slots(&runs, "p"), [resumed.next_run_at]);
}

pub async fn upsert_from_code_keeps_the_next_slot_of_an_unchanged_cron(h: &dyn Harness) {
    let s = h.backend();
    let first = s
        .upsert_schedule(&every_minute("u"))
        .await
        .unwrap()
        .next_run_at;
    // Five minutes on, with catch-up `skip` nothing runs; the next slot moves on.
    let mut skip = every_minute("u").catch_up(CatchUp::Skip);
    s.upsert_schedule(&skip).await.unwrap();
    assert!(tick(s, first + 5 * MINUTE).await.is_empty());
    let moved = first + 6 * MINUTE;
    skip.job = skip.job.priority(9);
    let same = s.upsert_schedule(&skip).await.unwrap();
    assert_eq!(
        same.next_run_at, moved,
        "an unchanged cron keeps its next slot"
    );
    assert_eq!(same.schedule.job.priority, 9, "the template is replaced");

    s.pause_schedule("default", "u").await.unwrap();
    let mut hourly = skip.clone();
    hourly.cron = "0 * * * *".into();
    let before = OffsetDateTime::now_utc();
    let changed = s.upsert_schedule(&hourly).await.unwrap();
    assert!(
        changed.paused_at.is_some(),
        "a paused schedule stays paused"
    );
    assert!(changed.next_run_at > before && changed.next_run_at <= before + 60 * MINUTE);
    assert_eq!(
        changed.next_run_at.minute(),
        0,
        "recomputed for the new cron"
    );
    let zoned = s
        .upsert_schedule(&hourly.clone().timezone("Asia/Kolkata"))
        .await
        .unwrap();
    assert_eq!(zoned.next_run_at.minute(), 30, "and for a new time zone");
}
