//! `TestJobs`: a throwaway SQLite database with a client, asserts and `drain`.

use jobs_core::{Job, JobArgs, JobError, ListFilter, PageRequest, State};

use crate::Client;

/// A fresh, migrated SQLite database in a temporary directory (deleted on drop).
#[derive(Debug)]
pub struct TestJobs {
    client: Client,
    _dir: tempfile::TempDir,
}

impl TestJobs {
    pub async fn new() -> Result<Self, JobError> {
        let dir = tempfile::tempdir()
            .map_err(|e| JobError::Storage(format!("temporary directory: {e}")))?;
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display());
        let client = Client::connect(&url).await?;
        client.migrate().await?;
        Ok(Self { client, _dir: dir })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The arguments of every pending job of `A`'s kind, oldest first.
    pub async fn enqueued<A: JobArgs>(&self) -> Result<Vec<A>, JobError> {
        let jobs = self.jobs(Some(State::Pending), Some(A::KIND)).await?;
        jobs.into_iter()
            .map(|job| {
                serde_json::from_value(job.args)
                    .map_err(|e| JobError::Serialization(format!("a pending {} job: {e}", A::KIND)))
            })
            .collect()
    }

    /// Panics, listing what is pending, unless a pending job of `A`'s kind has arguments
    /// equal to `expected` (compared as JSON).
    pub async fn assert_enqueued<A: JobArgs>(&self, expected: &A) {
        let want = serde_json::to_value(expected).expect("arguments serialize");
        let pending = self
            .jobs(Some(State::Pending), None)
            .await
            .expect("list pending jobs");
        let found = pending.iter().any(|j| j.kind == A::KIND && j.args == want);
        let seen: Vec<String> = pending
            .iter()
            .map(|j| format!("{} {}", j.kind, j.args))
            .collect();
        assert!(
            found,
            "no pending {} job with args {want}; pending: {seen:#?}",
            A::KIND
        );
    }

    /// Every job, or those in `state` and of `kind`, oldest first.
    pub async fn jobs(
        &self,
        state: Option<State>,
        kind: Option<&str>,
    ) -> Result<Vec<Job>, JobError> {
        use jobs_core::JobStore;
        let mut filter = ListFilter::new();
        filter.state = state;
        filter.kind = kind.map(str::to_owned);
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        let mut all = Vec::new();
        loop {
            let found = self.client.store().list(&filter, &page).await?;
            all.extend(found.items);
            match found.next_cursor {
                Some(cursor) => page = PageRequest::after(PageRequest::MAX_LIMIT, cursor),
                None => break,
            }
        }
        all.reverse();
        Ok(all)
    }
}

#[cfg(feature = "worker")]
mod drain {
    use std::time::Duration;

    use jobs_core::{Job, JobError, State};
    use time::OffsetDateTime;

    use super::TestJobs;
    use crate::{Worker, WorkerBuilder};

    /// Longest a `drain` waits for the due jobs to end.
    const DRAIN_LIMIT: Duration = Duration::from_secs(60);
    /// Pending jobs due sooner than this are waited for; later ones stay pending.
    const HORIZON: Duration = Duration::from_secs(5);

    impl TestJobs {
        /// Runs a worker made by `build` (register your kinds and the queues they use on
        /// it) until no job is running or due within 5 s, and returns the jobs that ended
        /// meanwhile, in the order they were created. Jobs scheduled later stay pending; a
        /// failing job is retried while its backoff stays under 5 s (give such kinds a
        /// short backoff in tests) and is returned once its attempts are spent.
        pub async fn drain(
            &self,
            build: impl FnOnce(WorkerBuilder) -> WorkerBuilder,
        ) -> Result<Vec<Job>, JobError> {
            let before = self.jobs(None, None).await?;
            let builder = Worker::builder(self.client.store().clone()).config(|c| {
                c.poll_interval = Duration::from_millis(20);
                c.maintenance = false;
            });
            let worker = build(builder).build()?.spawn();
            let settled = self.wait_settled().await;
            worker.shutdown().await?;
            settled?;
            let ended_before: Vec<_> = before
                .iter()
                .filter(|j| j.state.is_ended())
                .map(|j| (j.id, j.updated_at))
                .collect();
            let after = self.jobs(None, None).await?;
            Ok(after
                .into_iter()
                .filter(|j| j.state.is_ended() && !ended_before.contains(&(j.id, j.updated_at)))
                .collect())
        }

        /// Until nothing is running and no pending job is due within `HORIZON` (a retry
        /// after a short backoff is waited for), or `DRAIN_LIMIT` passes (a due job of a
        /// kind the worker does not run would otherwise hold it forever).
        async fn wait_settled(&self) -> Result<(), JobError> {
            let until = tokio::time::Instant::now() + DRAIN_LIMIT;
            loop {
                // One listing of the jobs (a single statement below 100 jobs), so a job
                // claimed or retried between two reads cannot look settled.
                let soon = OffsetDateTime::now_utc() + HORIZON;
                let jobs = self.jobs(None, None).await?;
                let busy: Vec<&Job> = jobs
                    .iter()
                    .filter(|job| match job.state {
                        State::Running => true,
                        State::Pending => job.run_at <= soon,
                        _ => false,
                    })
                    .collect();
                if busy.is_empty() {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= until {
                    let busy: Vec<String> = busy
                        .iter()
                        .map(|j| format!("{} {} in {} ({})", j.kind, j.id, j.queue, j.state))
                        .collect();
                    return Err(JobError::Storage(format!(
                        "drain: jobs still due or running after {DRAIN_LIMIT:?}; is every kind registered and every queue worked? {busy:?}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
