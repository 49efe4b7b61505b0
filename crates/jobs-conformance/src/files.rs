//! Rows of job files: recorded only for their owner (the tenant's job, the attempt
//! holding the lease), attached at a job's creation all or none, and orphaned once their
//! job is gone or a staged upload was never attached.

use std::time::Duration;

use jobs_core::{
    FileId, FileOwner, FileRole, JobError, JobFile, JobId, NewFile, Outcome, WorkerBackend,
};
use serde_json::json;

use crate::{
    Harness,
    fixtures::{add, claim_one, job},
};

fn file(tenant: &str, name: &str) -> NewFile {
    NewFile {
        id: FileId::new(),
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        size: 3,
        sha256: "ab".repeat(32),
    }
}

async fn staged(s: &dyn WorkerBackend, tenant: &str, name: &str) -> FileId {
    let recorded = s
        .add_file(file(tenant, name), FileOwner::Staged)
        .await
        .unwrap();
    assert_eq!((recorded.job_id, recorded.role), (None, FileRole::Input));
    recorded.id
}

fn names(files: &[JobFile]) -> Vec<&str> {
    files.iter().map(|f| f.name.as_str()).collect()
}

pub async fn files_are_recorded_only_for_their_owner(h: &dyn Harness) {
    let s = h.backend();
    let id = add(s, job("convert").tenant("acme")).await;
    assert!(!s.get(None, id).await.unwrap().has_files);
    let input = s
        .add_file(file("acme", "in.csv"), FileOwner::Input(id))
        .await
        .unwrap();
    assert_eq!((input.job_id, input.size), (Some(id), 3));
    assert!(
        s.get(None, id).await.unwrap().has_files,
        "marked by its first file"
    );
    let foreign = s.add_file(file("other", "x"), FileOwner::Input(id)).await;
    assert!(matches!(foreign, Err(JobError::NotFound(_))), "{foreign:?}");
    let unknown = s
        .add_file(file("acme", "x"), FileOwner::Input(JobId::new()))
        .await;
    assert!(matches!(unknown, Err(JobError::NotFound(_))), "{unknown:?}");
    let again = s
        .add_file(file("acme", "in.csv"), FileOwner::Input(id))
        .await;
    assert!(matches!(again, Err(JobError::Conflict(_))), "{again:?}");
    let bad = s
        .add_file(file("acme", "../etc"), FileOwner::Input(id))
        .await;
    assert!(matches!(bad, Err(JobError::Invalid(ref f)) if f[0].field == "name"));

    let lease = claim_one(s, "w").await;
    let result = s
        .add_file(file("acme", "out.csv"), FileOwner::Result(lease))
        .await
        .unwrap();
    assert_eq!(result.role, FileRole::Result);
    let again = s
        .add_file(file("acme", "out.csv"), FileOwner::Result(lease))
        .await
        .unwrap();
    let results = s.job_files(None, &[id], FileRole::Result).await.unwrap();
    assert_eq!(
        results.len(),
        1,
        "a result of the same name replaces the first"
    );
    assert_eq!(results[0].id, again.id);
    let week = Duration::from_secs(7 * 24 * 3600);
    let replaced = s.orphan_files(week, 100).await.unwrap();
    assert_eq!(replaced, [result.id], "the replaced one is swept");
    assert_eq!(s.delete_files(&replaced).await.unwrap(), 1);
    let mut stale = lease;
    stale.token = jobs_core::LeaseToken::from(uuid::Uuid::new_v4());
    let lost = s
        .add_file(file("acme", "y"), FileOwner::Result(stale))
        .await;
    assert!(matches!(lost, Err(JobError::LeaseLost(_))), "{lost:?}");
    s.finish(&lease, Outcome::Completed { result: json!(1) })
        .await
        .unwrap();
    let late = s
        .add_file(file("acme", "z"), FileOwner::Result(lease))
        .await;
    assert!(
        matches!(late, Err(JobError::LeaseLost(_))),
        "after its end: {late:?}"
    );

    let inputs = s.job_files(Some("acme"), &[id], FileRole::Input).await;
    assert_eq!(names(&inputs.unwrap()), ["in.csv"]);
    let results = s.job_files(None, &[id], FileRole::Result).await.unwrap();
    assert_eq!(names(&results), ["out.csv"]);
    let other = s.job_files(Some("other"), &[id], FileRole::Input).await;
    assert!(other.unwrap().is_empty(), "another tenant sees none");
}

pub async fn a_job_is_created_with_its_staged_files_all_or_none(h: &dyn Harness) {
    let s = h.backend();
    let (a, b) = (
        staged(s, "acme", "a.txt").await,
        staged(s, "acme", "b.txt").await,
    );
    let theirs = staged(s, "other", "c.txt").await;
    let refused = s
        .enqueue_with_files(job("convert").tenant("acme"), &[a, theirs, FileId::new()])
        .await;
    let Err(JobError::Invalid(fields)) = refused else {
        panic!("foreign and unknown files are refused: {refused:?}");
    };
    let fields: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(fields, ["files[1]", "files[2]"]);
    assert_eq!(
        crate::fixtures::count(s).await,
        0,
        "no job without its files"
    );
    let twice = s
        .enqueue_with_files(job("convert").tenant("acme"), &[a, a])
        .await;
    assert!(matches!(twice, Err(JobError::Invalid(ref f)) if f[0].field == "files[1]"));

    let made = s
        .enqueue_with_files(job("convert").tenant("acme"), &[a, b])
        .await
        .unwrap();
    assert!(made.job.has_files);
    let id = made.job.id;
    let files = s.job_files(Some("acme"), &[id], FileRole::Input).await;
    assert_eq!(names(&files.unwrap()), ["a.txt", "b.txt"]);
    let reused = s
        .enqueue_with_files(job("convert").tenant("acme"), &[b])
        .await;
    assert!(
        matches!(reused, Err(JobError::Invalid(ref f)) if f[0].field == "files[0]"),
        "a file belongs to one job: {reused:?}"
    );
    let claimed = s.claim(&crate::fixtures::claim_req("w", 10)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        claimed[0].has_files,
        "the claim tells which jobs have files"
    );
}

pub async fn files_of_deleted_jobs_and_stale_staged_files_are_orphans(h: &dyn Harness) {
    let s = h.backend();
    let kept = add(s, job("keep")).await;
    let gone = add(s, job("purge").retention(Duration::ZERO)).await;
    let keep_file = s
        .add_file(file("default", "k"), FileOwner::Input(kept))
        .await;
    let gone_file = s
        .add_file(file("default", "g"), FileOwner::Input(gone))
        .await;
    let (keep_file, gone_file) = (keep_file.unwrap().id, gone_file.unwrap().id);
    let fresh = staged(s, "default", "fresh").await;
    let week = Duration::from_secs(7 * 24 * 3600);
    assert!(s.orphan_files(week, 100).await.unwrap().is_empty());

    let claimed = s.claim(&crate::fixtures::claim_req("w", 10)).await.unwrap();
    for j in claimed.iter().filter(|j| j.id == gone) {
        let lease = jobs_core::Lease::of(j).unwrap();
        s.finish(&lease, Outcome::Completed { result: json!(1) })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.purge_expired(100).await.unwrap(), 1);
    assert_eq!(s.orphan_files(week, 100).await.unwrap(), [gone_file]);
    let mut stale = s.orphan_files(Duration::ZERO, 100).await.unwrap();
    stale.sort();
    let mut expected = vec![gone_file, fresh];
    expected.sort();
    assert_eq!(stale, expected, "staged files count once old enough");
    assert!(!stale.contains(&keep_file));
    assert_eq!(s.delete_files(&stale).await.unwrap(), 2);
    assert!(
        s.orphan_files(Duration::ZERO, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let left = s.job_files(None, &[kept], FileRole::Input).await.unwrap();
    assert_eq!(names(&left), ["k"]);
}
