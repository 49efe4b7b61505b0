//! Schedules through the facade: defined in code on a worker, managed through the client,
//! and the worker's scheduler turning a slot into a job that runs.

use std::time::Duration;

use jobs::{CatchUp, Client, JobTemplate, Schedule, State, Worker};
use jobs_store::{backend_tests, testing::TestDb};
use serde_json::json;

backend_tests!(a_worker_defines_its_schedules_and_runs_their_slots);

async fn a_worker_defines_its_schedules_and_runs_their_slots(db: TestDb) {
    let client = Client::new(db.store.clone());
    let every_second = Schedule::new(
        "heartbeat",
        "* * * * * *",
        JobTemplate::new("beat", json!({"from": "code"})),
    )
    .catch_up(CatchUp::Skip);
    let worker = Worker::builder(client.store().clone())
        .handler("beat", |args: serde_json::Value, _ctx| async move {
            Ok(args.into())
        })
        .schedule(every_second)
        .config(|c| {
            c.maintenance = false;
            c.scheduler_interval = Duration::from_millis(100);
        })
        .build()
        .unwrap()
        .spawn();
    let mut ran = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let info = client.schedule("default", "heartbeat").await.unwrap();
        if let Some(id) = info.last_job_id {
            ran = Some(client.wait(id).await.unwrap());
            break;
        }
    }
    worker.shutdown().await.unwrap();
    let job = ran.expect("a slot was enqueued within 5 s");
    assert_eq!(job.state, State::Completed);
    assert_eq!(job.metadata["schedule"], "heartbeat");
    let paused = client.pause_schedule("default", "heartbeat").await.unwrap();
    assert!(paused.paused_at.is_some());
    assert_eq!(client.schedules("default").await.unwrap().len(), 1);
    client
        .delete_schedule("default", "heartbeat")
        .await
        .unwrap();
    assert!(client.schedules("default").await.unwrap().is_empty());
}
