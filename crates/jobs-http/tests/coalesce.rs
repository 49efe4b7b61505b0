//! Grouped enqueues and reads on both backends: many concurrent callers, each answered
//! as if alone.

use std::sync::Arc;

use futures::future::join_all;
use jobs_core::{JobError, JobStore, NewJob, State};
use jobs_http::{EnqueueCoalescer, GetCoalescer};
use jobs_store::{backend_tests, testing::TestDb};
use serde_json::json;

backend_tests!(
    concurrent_enqueues_each_get_their_own_answer,
    concurrent_reads_of_the_same_job_all_find_it,
);

async fn concurrent_enqueues_each_get_their_own_answer(db: TestDb) {
    let coalescer = EnqueueCoalescer::spawn(Arc::new(db.store.clone()));
    let jobs: Vec<NewJob> = (0..200)
        .map(|i| {
            let job = NewJob::new("grouped", json!({"i": i}));
            // Every tenth shares a unique key with the one before: a duplicate in a group.
            job.unique_key(format!("key-{}", i - i % 10 / 9))
        })
        .collect();
    let invalid = NewJob::new("grouped", json!({})).priority(99);
    let mut calls: Vec<_> = jobs.iter().cloned().map(|j| coalescer.enqueue(j)).collect();
    calls.push(coalescer.enqueue(invalid));
    let answers = join_all(calls).await;

    let (last, answers) = answers.split_last().unwrap();
    assert!(
        matches!(last, Err(JobError::Invalid(_))),
        "the invalid job fails alone: {last:?}"
    );
    let duplicates = answers
        .iter()
        .filter(|a| a.as_ref().unwrap().duplicate)
        .count();
    assert_eq!(duplicates, 20, "i = 9, 19, ... repeat the key of i - 1");
    for (job, answer) in jobs.iter().zip(answers) {
        let enqueued = answer.as_ref().unwrap();
        assert_eq!(enqueued.job.unique_key, job.unique_key);
        if !enqueued.duplicate {
            assert_eq!(enqueued.job.id, job.id);
            assert_eq!(enqueued.job.args, job.args);
        }
    }
}

async fn concurrent_reads_of_the_same_job_all_find_it(db: TestDb) {
    let s = &db.store;
    let job = s
        .enqueue(NewJob::new("read", json!({})).tenant("acme"))
        .await
        .unwrap()
        .job;
    let other = s.enqueue(NewJob::new("read", json!({}))).await.unwrap().job;
    let reader = GetCoalescer::spawn(Arc::new(s.clone()));
    let reads = join_all((0..100).map(|i| {
        let id = if i % 2 == 0 { job.id } else { other.id };
        let reader = reader.clone();
        async move { reader.get(None, id).await }
    }))
    .await;
    for read in &reads {
        assert_eq!(read.as_ref().unwrap().state, State::Pending);
    }
    assert_eq!(reader.get(Some("acme"), job.id).await.unwrap().id, job.id);
    assert!(matches!(
        reader.get(Some("other"), job.id).await,
        Err(JobError::NotFound(_))
    ));
    assert!(matches!(
        reader.get(None, jobs_core::JobId::new()).await,
        Err(JobError::NotFound(_))
    ));
}
