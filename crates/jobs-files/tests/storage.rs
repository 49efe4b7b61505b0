//! The file storage on a directory and on an S3-compatible server (moto, at
//! `JOBS_TEST_S3_URL`; see scripts/moto.sh): streamed writes with their size and SHA-256,
//! the limit, reads and deletes; and the sweep that removes the files of deleted jobs,
//! objects and rows, on SQLite and PostgreSQL.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use jobs_core::{
    ClaimRequest, FileId, FileOwner, FileRole, FileStore, JobId, JobStore, Lease, NewJob, Outcome,
};
use jobs_files::{FileError, FileStorage, sweep};
use jobs_store::testing::TestDb;
use serde_json::json;
use sha2::{Digest, Sha256};

fn local() -> (FileStorage, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (FileStorage::local(dir.path().join("files")).unwrap(), dir)
}

/// A fresh bucket on the test server, with a prefix.
async fn s3() -> FileStorage {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let endpoint = std::env::var("JOBS_TEST_S3_URL").expect("JOBS_TEST_S3_URL");
    let bucket = format!("jobs-test-{}", uuid::Uuid::new_v4().simple());
    // moto creates buckets on an unsigned PUT.
    reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("creating the test bucket");
    let options = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ];
    FileStorage::open_with(&format!("s3://{bucket}/jobs/files"), options).unwrap()
}

fn chunks(data: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    let parts: Vec<_> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(parts)
}

async fn writes_are_streamed_bounded_and_read_back(storage: FileStorage) {
    // Past the writer's buffer, so a multipart upload on S3.
    let data: Vec<u8> = (0..12_000_000u32).map(|i| (i % 251) as u8).collect();
    let id = FileId::new();
    let stored = storage
        .put_stream(id, chunks(&data), 20_000_000)
        .await
        .unwrap();
    assert_eq!(stored.size, data.len() as u64);
    assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
    let mut read = Vec::new();
    let mut stream = storage.get(id).await.unwrap();
    while let Some(chunk) = stream.next().await {
        read.extend_from_slice(&chunk.unwrap());
    }
    assert!(read == data, "the bytes come back as written");

    let big = FileId::new();
    let refused = storage.put_stream(big, chunks(&data), 1_000_000).await;
    assert!(
        matches!(refused, Err(FileError::TooLarge(1_000_000))),
        "{refused:?}"
    );
    assert!(
        !storage.exists(big).await.unwrap(),
        "nothing stays of a refused upload"
    );

    storage.delete(id).await.unwrap();
    assert!(!storage.exists(id).await.unwrap());
    storage
        .delete(id)
        .await
        .expect("deleting twice is no error");
    assert!(matches!(storage.read(id).await, Err(FileError::Missing)));
}

fn body(
    bytes: &'static [u8],
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    futures::stream::iter([Ok(Bytes::from_static(bytes))])
}

/// Stores a small input of `job`.
async fn input(db: &TestDb, storage: &FileStorage, job: JobId, name: &str) -> FileId {
    let owner = FileOwner::Input(job);
    let file = storage.store_file(&db.store, owner, "default", name, body(b"data"), 1024);
    file.await.unwrap().id
}

fn claim_request() -> ClaimRequest {
    ClaimRequest {
        worker_id: "w".into(),
        queues: vec!["default".into()],
        kinds: None,
        tenant: None,
        limit: 10,
        lease: Duration::from_secs(30),
    }
}

async fn files_of_deleted_jobs_are_swept(db: TestDb, storage: FileStorage) {
    let kept = db.store.enqueue(NewJob::new("keep", json!({}))).await;
    let kept = kept.unwrap().job.id;
    let purged = NewJob::new("purge", json!({})).retention(Duration::ZERO);
    let purged = db.store.enqueue(purged).await.unwrap().job.id;
    let kept_file = input(&db, &storage, kept, "k").await;
    let gone_files = [
        input(&db, &storage, purged, "a").await,
        input(&db, &storage, purged, "b").await,
    ];
    let unknown = FileOwner::Input(JobId::new());
    let refused = storage.store_file(&db.store, unknown, "default", "x", body(b"x"), 1024);
    assert!(matches!(refused.await, Err(FileError::Store(_))));

    for job in db.store.claim(&claim_request()).await.unwrap() {
        if job.id == purged {
            let outcome = Outcome::Completed { result: json!(1) };
            db.store
                .finish(&Lease::of(&job).unwrap(), outcome)
                .await
                .unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(db.store.purge_expired(100).await.unwrap(), 1);
    let week = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(sweep(&db.store, &storage, week, 100).await.unwrap(), 2);
    for id in gone_files {
        assert!(
            !storage.exists(id).await.unwrap(),
            "the object of a purged job is gone"
        );
    }
    let rows = db.store.job_files(None, &[purged], FileRole::Input).await;
    assert!(rows.unwrap().is_empty(), "and so are its rows");
    assert!(
        storage.exists(kept_file).await.unwrap(),
        "a live job keeps its files"
    );
    let rows = db.store.job_files(None, &[kept], FileRole::Input).await;
    assert_eq!(rows.unwrap().len(), 1);
    assert_eq!(sweep(&db.store, &storage, week, 100).await.unwrap(), 0);
}

mod directory {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_are_streamed_bounded_and_read_back() {
        let (storage, _dir) = local();
        super::writes_are_streamed_bounded_and_read_back(storage).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_of_deleted_jobs_are_swept_sqlite() {
        let (storage, _dir) = local();
        super::files_of_deleted_jobs_are_swept(TestDb::sqlite().await, storage).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(jobs_postgres_tests),
        ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
    )]
    async fn files_of_deleted_jobs_are_swept_postgres() {
        let (storage, _dir) = local();
        super::files_of_deleted_jobs_are_swept(TestDb::postgres().await, storage).await;
    }
}

mod s3 {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(jobs_s3_tests),
        ignore = "S3 half NOT RUN: JOBS_TEST_S3_URL is not set"
    )]
    async fn writes_are_streamed_bounded_and_read_back() {
        super::writes_are_streamed_bounded_and_read_back(s3().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(jobs_s3_tests),
        ignore = "S3 half NOT RUN: JOBS_TEST_S3_URL is not set"
    )]
    async fn files_of_deleted_jobs_are_swept_sqlite() {
        super::files_of_deleted_jobs_are_swept(TestDb::sqlite().await, s3().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(all(jobs_s3_tests, jobs_postgres_tests)),
        ignore = "S3 or PostgreSQL half NOT RUN: JOBS_TEST_S3_URL or JOBS_TEST_POSTGRES_URL is not set"
    )]
    async fn files_of_deleted_jobs_are_swept_postgres() {
        super::files_of_deleted_jobs_are_swept(TestDb::postgres().await, s3().await).await;
    }
}
