//! Files through the library on both backends: a client inserts a job with its input
//! files, an embedded handler reads them (`JobContext::input_file`) and attaches a result
//! file (`JobContext::attach_file`), and the client reads it back.

use std::time::Duration;

use jobs::{Client, FileStorage, NewJob, State, Worker};
use jobs_store::{backend_tests, testing::TestDb};
use serde_json::json;

backend_tests!(a_handler_reads_its_inputs_and_attaches_a_result,);

async fn a_handler_reads_its_inputs_and_attaches_a_result(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::local(dir.path()).unwrap();
    let client = Client::new(db.store.clone());
    let worker = Worker::builder(client.store().clone())
        .files(storage.clone())
        .handler(
            "upper",
            |_args: serde_json::Value, ctx: jobs::JobContext| async move {
                let text = ctx.input_file("in.txt").await?;
                let missing = ctx.input_file("nope").await;
                assert!(
                    matches!(missing, Err(jobs::JobError::Invalid(_))),
                    "{missing:?}"
                );
                ctx.attach_file("out.txt", text.to_ascii_uppercase())
                    .await?;
                Ok(json!({"bytes": text.len()}).into())
            },
        )
        .config(|c| c.maintenance = false)
        .build()
        .unwrap()
        .spawn();
    let files = vec![("in.txt".to_owned(), b"hello files".to_vec())];
    let job = NewJob::new("upper", json!({}));
    let id = client
        .insert_with_files(&storage, job, files)
        .await
        .unwrap()
        .job
        .id;
    let ended = tokio::time::timeout(Duration::from_secs(20), client.wait(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.state, State::Completed, "{ended:?}");
    let out = client.result_file(&storage, id, "out.txt").await.unwrap();
    assert_eq!(out, b"HELLO FILES");
    worker.shutdown().await.unwrap();
}
