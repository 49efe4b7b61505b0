//! Schedule rows as SQL sees them, on SQLite and PostgreSQL: a row this binary cannot read
//! does not stop the others.

use jobs_core::{JobTemplate, Schedule, ScheduleStore};
use jobs_store::{backend_tests, testing::TestDb};
use sea_orm::ConnectionTrait;
use serde_json::json;

backend_tests!(an_unreadable_schedule_is_skipped_and_the_others_run);

async fn an_unreadable_schedule_is_skipped_and_the_others_run(db: TestDb) {
    let s = &db.store;
    let every_minute =
        |name: &str| Schedule::new(name, "* * * * *", JobTemplate::new("tick", json!({})));
    let good = s.create_schedule(&every_minute("good")).await.unwrap();
    s.create_schedule(&every_minute("broken")).await.unwrap();
    s.connection()
        .execute_unprepared(
            r#"UPDATE jobs_schedules SET job = '{"kind": 1}' WHERE name = 'broken'"#,
        )
        .await
        .unwrap();
    let runs = s.enqueue_due(good.next_run_at, 10).await.unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r.schedule.as_str()).collect();
    assert_eq!(names, ["good"]);
    assert!(s.get_schedule("default", "broken").await.is_err());
}
