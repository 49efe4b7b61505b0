//! The worker under hostile conditions, on SQLite and PostgreSQL: cancels racing the
//! handler's own stop error, huge and poisonous webhook answers, and configuration that
//! would break the background services.

use std::time::Duration;

use jobs_core::{JobError, JobId, JobStore, NewJob, Outcome, State, limits};
use jobs_store::{SeaOrmStore, backend_tests, testing::TestDb};
use jobs_worker::{Worker, WorkerBuilder, builtins};
use serde_json::json;
use time::OffsetDateTime;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    time::Instant,
};

backend_tests!(
    a_cancelled_running_job_ends_cancelled_whatever_its_handler_returns,
    webhook_answers_are_bounded_and_made_storable,
    the_builder_refuses_configuration_that_would_break_the_worker,
);

fn fast(store: &SeaOrmStore) -> WorkerBuilder {
    Worker::builder(store.clone()).config(|c| {
        c.poll_interval = Duration::from_millis(100);
        c.cancel_check_interval = Duration::from_millis(10);
        c.shutdown_grace = Duration::from_millis(500);
    })
}

async fn ended(store: &SeaOrmStore, id: JobId) -> jobs_core::Job {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let job = store.get(None, id).await.unwrap();
        if job.state.is_ended() {
            return job;
        }
        assert!(Instant::now() < give_up, "job {id} never ended: {job:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_cancelled_running_job_ends_cancelled_whatever_its_handler_returns(db: TestDb) {
    let s = &db.store;
    // The built-in `sleep` answers a cancel with its own permanent error at once, which
    // races the worker's own view of the cancel.
    let worker = builtins::register(fast(s).queue("default", 20), Vec::new())
        .build()
        .unwrap()
        .spawn();
    for _round in 0..3 {
        let jobs: Vec<NewJob> = (0..20)
            .map(|_| NewJob::new("sleep", json!({"ms": 60_000})))
            .collect();
        let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        s.enqueue_many(jobs).await.unwrap();
        for id in &ids {
            while s.get(None, *id).await.unwrap().state != State::Running {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        for id in &ids {
            s.cancel(None, *id).await.unwrap();
        }
        for id in &ids {
            let job = ended(s, *id).await;
            assert_eq!(job.state, State::Cancelled, "{job:?}");
        }
    }
    worker.shutdown().await.unwrap();
}

/// Answers every request on a local port with `response`, as a webhook receiver would.
async fn serve(response: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut request = vec![0; 64 * 1024];
                let _ = conn.read(&mut request).await;
                let _ = conn.write_all(&response).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    url
}

fn answer(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{headers}connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

async fn webhook_answers_are_bounded_and_made_storable(db: TestDb) {
    let s = &db.store;
    let huge = serve(answer("200 OK", "", &vec![b'x'; 5 << 20])).await;
    let poison = serve(answer("200 OK", "", b"ok\0poison")).await;
    let slow_down = serve(answer(
        "429 Too Many Requests",
        "retry-after: 99999999999\r\n",
        &vec![b'y'; 100_000],
    ))
    .await;
    let worker = builtins::register(fast(s), vec!["127.0.0.1".into()])
        .build()
        .unwrap()
        .spawn();
    let http = |url: &str| NewJob::new("http", json!({"url": url}));
    let huge = s.enqueue(http(&huge)).await.unwrap().job.id;
    let poison = s.enqueue(http(&poison)).await.unwrap().job.id;
    let slow_down = s.enqueue(http(&slow_down)).await.unwrap().job.id;
    let after = s
        .enqueue(NewJob::new("echo", json!(1)))
        .await
        .unwrap()
        .job
        .id;

    let job = ended(s, huge).await;
    let body = job.result.unwrap()["body"].as_str().unwrap().to_owned();
    assert!(body.len() <= builtins::HTTP_BODY_MAX);
    assert!(body.ends_with(jobs_core::storable::TRUNCATED_MARKER));

    let job = ended(s, poison).await;
    assert_eq!(job.state, State::Failed);
    assert_eq!(job.errors[0].kind, Outcome::UNSTORABLE);
    assert_eq!(
        ended(s, after).await.state,
        State::Completed,
        "the worker goes on"
    );

    let give_up = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let job = s.get(None, slow_down).await.unwrap();
        if !job.errors.is_empty() {
            break job;
        }
        assert!(Instant::now() < give_up, "the 429 was never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job.state, State::Pending);
    let max = Duration::from_secs(limits::DURATION_MAX_SECS + 86_400);
    assert!(
        job.run_at < OffsetDateTime::now_utc() + max,
        "{}",
        job.run_at
    );
    assert!(
        job.errors[0].message.len() <= 2_048,
        "the error quotes a bounded body"
    );
    worker.shutdown().await.unwrap();
}

async fn the_builder_refuses_configuration_that_would_break_the_worker(db: TestDb) {
    let built = Worker::builder(db.store.clone())
        .queue("default", 0)
        .config(|c| {
            c.lease = Duration::ZERO;
            c.poll_interval = Duration::ZERO;
            c.maintenance_batch = 0;
            c.vacuum_interval = Duration::ZERO;
            c.vacuum_min_dead_rows = 0;
            c.vacuum_dead_fraction = f64::NAN;
        })
        .build();
    let Err(JobError::Invalid(errors)) = built else {
        panic!("a zero lease, poll interval, concurrency or vacuum threshold must be refused");
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "poll_interval",
            "lease",
            "vacuum_interval",
            "maintenance_batch",
            "vacuum_min_dead_rows",
            "vacuum_dead_fraction",
            "queues"
        ]
    );
}
