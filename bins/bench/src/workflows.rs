//! Jobs that wait for others. `chain` times the round trip that releases each job of a
//! chain (its parent's claim and completion, whose transaction makes it pending);
//! `fanout` the release of many children at once and the join that waits for them all.
//! A worker process runs the jobs with the no-op handler, as in `drain`.

use std::time::Duration;

use jobs_core::{Job, JobId, JobStore, NewJob, State, dependency::MAX_PARENTS};
use jobs_store::SeaOrmStore;
use serde_json::json;
use tokio::time::Instant;

use crate::{
    ChainArgs, FanoutArgs,
    child::Process,
    report::{Report, spinner},
    scenarios::count,
    setup,
};

/// How often the last job is looked at while the worker runs: the wall times are this
/// coarse, the database-clock figures are not.
const POLL: Duration = Duration::from_millis(10);

/// For each concurrency: a chain of N jobs, then a worker process started; timed until
/// the last job completed.
pub async fn chain(url: &str, args: &ChainArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.n > 0 && args.batch > 0,
        "-n and --batch must be at least 1"
    );
    for &concurrency in &args.worker.concurrency {
        chain_once(url, args, concurrency).await?;
    }
    Ok(())
}

async fn chain_once(url: &str, args: &ChainArgs, concurrency: usize) -> anyhow::Result<()> {
    let store = setup::fresh(url).await?;
    let jobs = chain_jobs(args.n);
    let (first, last) = (jobs[0].id, jobs[args.n - 1].id);
    let started = Instant::now();
    for batch in jobs.chunks(args.batch) {
        store.enqueue_many(batch.to_vec()).await?;
    }
    let enqueued = started.elapsed();
    let run = run_until_ended(url, &store, concurrency, args.worker.prefetch, args.n, last).await?;
    // From the first job's completion to the last's: N - 1 whole rounds of release,
    // claim and completion, without the worker's start-up.
    let first = store.get(None, first).await?;
    let rounds = gap(first.finished_at, run.last.finished_at)?;
    let steps = (args.n - 1).max(1) as u32;

    let mut report = Report::new("chain", setup::backend(&store), "chain");
    report
        .param("n", json!(args.n))
        .param("batch", json!(args.batch))
        .param("concurrency", json!(concurrency))
        .param("prefetch", json!(args.worker.prefetch))
        .rate("enqueue_jobs_per_s", args.n, enqueued)
        .rate("jobs_per_s", args.n, run.took)
        .ms("step_ms", rounds / steps);
    cpu_row(&mut report, run.cpu).print();
    Ok(())
}

/// N jobs, each waiting for the one before. Enqueued in calls, a call's first job waits
/// for the previous call's last, which then exists: both kinds of parent are used.
fn chain_jobs(n: usize) -> Vec<NewJob> {
    let mut jobs: Vec<NewJob> = Vec::with_capacity(n);
    for _ in 0..n {
        let job = match jobs.last() {
            Some(previous) => setup::job().after(previous.id),
            None => setup::job(),
        };
        jobs.push(job);
    }
    jobs
}

/// For each concurrency: root, N children and join enqueued in one call, then a worker
/// process started; timed until the join completed.
pub async fn fanout(url: &str, args: &FanoutArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_PARENTS).contains(&args.n),
        "-n must be 1 to {MAX_PARENTS}: every child is a parent of the join"
    );
    for &concurrency in &args.worker.concurrency {
        fanout_once(url, args, concurrency).await?;
    }
    Ok(())
}

async fn fanout_once(url: &str, args: &FanoutArgs, concurrency: usize) -> anyhow::Result<()> {
    let store = setup::fresh(url).await?;
    let jobs = fanout_jobs(args.n);
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let total = jobs.len();
    let started = Instant::now();
    store.enqueue_many(jobs).await?;
    let enqueued = started.elapsed();
    let run = run_until_ended(
        url,
        &store,
        concurrency,
        args.worker.prefetch,
        total,
        ids[total - 1],
    )
    .await?;
    let root = store.get(None, ids[0]).await?;
    let children: Vec<Job> = store
        .get_many(&ids[1..total - 1])
        .await?
        .into_values()
        .collect();
    let phases = FanoutPhases::of(&root, &children, &run.last)?;

    let mut report = Report::new("fanout", setup::backend(&store), "fan-out and join");
    report
        .param("n", json!(args.n))
        .param("concurrency", json!(concurrency))
        .param("prefetch", json!(args.worker.prefetch))
        .rate("enqueue_jobs_per_s", total, enqueued)
        .secs("total_s", run.took)
        .secs("root_to_join_s", phases.root_to_join)
        .ms("first_child_start_ms", phases.first_child_start)
        .rate("children_per_s", args.n, phases.children)
        .ms("join_ms", phases.join);
    cpu_row(&mut report, run.cpu).print();
    Ok(())
}

/// The root, its N children, and the join that waits for all of them: one batch, so the
/// children and the join name parents of the same call.
fn fanout_jobs(n: usize) -> Vec<NewJob> {
    let root = setup::job();
    let children: Vec<NewJob> = (0..n).map(|_| setup::job().after(root.id)).collect();
    let join = children
        .iter()
        .fold(setup::job(), |join, child| join.after(child.id));
    let mut jobs = Vec::with_capacity(n + 2);
    jobs.push(root);
    jobs.extend(children);
    jobs.push(join);
    jobs
}

/// Where a fan-out's time goes, by the database clock, from the root's completion.
#[derive(Debug)]
struct FanoutPhases {
    /// Until the first child started: the transaction that released all N, then a claim.
    first_child_start: Duration,
    /// Until the last child completed.
    children: Duration,
    /// From the last child's completion to the join's: its release, claim and completion.
    join: Duration,
    root_to_join: Duration,
}

impl FanoutPhases {
    fn of(root: &Job, children: &[Job], join: &Job) -> anyhow::Result<Self> {
        let first_start = children.iter().filter_map(|j| j.started_at).min();
        let last_end = children.iter().filter_map(|j| j.finished_at).max();
        Ok(Self {
            first_child_start: gap(root.finished_at, first_start)?,
            children: gap(root.finished_at, last_end)?,
            join: gap(last_end, join.finished_at)?,
            root_to_join: gap(root.finished_at, join.finished_at)?,
        })
    }
}

/// What running a scenario's jobs took.
#[derive(Debug)]
struct Run {
    /// From the worker process's start until the last job was seen ended.
    took: Duration,
    /// The worker's user plus system CPU time.
    cpu: Duration,
    /// The last job, as it ended.
    last: Job,
}

/// Starts a worker process and waits until `last` ended; then every one of the `total`
/// jobs must have completed.
async fn run_until_ended(
    url: &str,
    store: &SeaOrmStore,
    concurrency: usize,
    prefetch: usize,
    total: usize,
    last: JobId,
) -> anyhow::Result<Run> {
    if store.is_postgres() {
        setup::analyze(store).await?;
    }
    let bar = spinner("run");
    let started = Instant::now();
    let worker = Process::worker(url, concurrency, prefetch)?;
    let last = loop {
        let job = store.get(None, last).await?;
        if job.state.is_ended() {
            break job;
        }
        tokio::time::sleep(POLL).await;
        bar.tick();
    };
    let took = started.elapsed();
    bar.finish_and_clear();
    let cpu = worker.cpu_time()?;
    anyhow::ensure!(worker.stop()?, "the worker did not exit cleanly");
    let completed = count(store, State::Completed).await?;
    anyhow::ensure!(completed == total, "{completed} of {total} jobs completed");
    Ok(Run { took, cpu, last })
}

fn cpu_row(report: &mut Report, cpu: Duration) -> &mut Report {
    report.add(
        "worker_cpu_s",
        json!((cpu.as_secs_f64() * 100.0).round() / 100.0),
        format!("{:.2} s", cpu.as_secs_f64()),
    )
}

/// `to - from` by the database clock; both must be set.
fn gap<T, D>(from: Option<T>, to: Option<T>) -> anyhow::Result<Duration>
where
    T: std::ops::Sub<Output = D>,
    Duration: TryFrom<D>,
{
    let (Some(from), Some(to)) = (from, to) else {
        anyhow::bail!("a job ended without its start or end time");
    };
    Duration::try_from(to - from)
        .map_err(|_| anyhow::anyhow!("a job ended before the one it waited for"))
}

#[cfg(test)]
mod tests {
    use jobs_core::Dependency;

    use super::*;

    #[test]
    fn each_job_of_a_chain_waits_for_the_one_before() {
        let jobs = chain_jobs(2_500);
        assert!(jobs[0].depends_on.is_empty());
        for pair in jobs.windows(2) {
            assert_eq!(pair[1].depends_on, vec![Dependency::completed(pair[0].id)]);
        }
    }

    #[test]
    fn the_join_waits_for_every_child_and_they_for_the_root() {
        let jobs = fanout_jobs(3);
        let (root, children, join) = (&jobs[0], &jobs[1..4], &jobs[4]);
        assert!(root.depends_on.is_empty());
        assert!(
            children
                .iter()
                .all(|c| c.depends_on == vec![Dependency::completed(root.id)])
        );
        let parents: Vec<JobId> = join.depends_on.iter().map(|d| d.job_id).collect();
        assert_eq!(parents, children.iter().map(|c| c.id).collect::<Vec<_>>());
        assert!(jobs_core::dependency::check_batch(&jobs).is_ok());
    }
}
