//! Where a job stands and when it will likely start and end, for people watching it.

use std::collections::HashMap;

use time::OffsetDateTime;

use crate::{Job, State};

/// Position and estimates of one job. Estimates are `None` rather than invented when
/// there is no history of run times to base them on.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Estimate {
    /// For a due pending job: how many runnable jobs of its tenant and queue a claim
    /// takes before it (priority, then oldest), counted up to a limit.
    pub position_in_queue: Option<u64>,
    /// False when the count stopped at the limit: at least that many come first.
    pub position_exact: bool,
    pub estimated_start_at: Option<OffsetDateTime>,
    pub estimated_completion_at: Option<OffsetDateTime>,
}

impl Estimate {
    /// A position is counted through the claim index up to a limit, so reading it costs
    /// at most that many index entries however long the queue is: this one for a read.
    pub const POSITION_LIMIT: u64 = 1_000;
    /// And this one where the estimate rides on a write that must stay cheap (a create).
    pub const QUICK_POSITION_LIMIT: u64 = 100;
}

/// A due pending job's place: the jobs ahead of it (counted up to `limit`) and how many
/// of its tenant's jobs of the queue run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub ahead: u64,
    pub running: u64,
    pub limit: u64,
}

/// Observed wall times of one kind's (or one queue's) runs, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunTimes {
    pub runs: u64,
    /// A rolling mean: exact over the first 100 runs, then weighted toward the last ~100.
    pub mean_ms: f64,
    pub min_ms: i64,
    pub max_ms: i64,
}

/// Below this reported progress, a running job's history says more than its progress.
const TRUSTED_PROGRESS: f64 = 0.05;

/// The estimate of `job` at `now`, from its position (with how many jobs of its tenant
/// and queue run now; for a due pending job) and the run times of its queue's kinds.
///
/// - A due pending job starts after the jobs ahead of it, which run as many at a time as
///   run now (at least one), each taking the queue's mean run time.
/// - A scheduled job starts at its `run_at`.
/// - A job ends its kind's mean run time after it starts; a running job that reported
///   progress ends when its pace says, weighted by how far it got.
pub fn estimate(
    job: &Job,
    now: OffsetDateTime,
    position: Option<Position>,
    times: &HashMap<String, RunTimes>,
) -> Estimate {
    let kind_ms = times.get(&job.kind).map(|t| t.mean_ms);
    match job.state {
        State::Pending => {
            let start = match position {
                Some(p) => queue_mean_ms(times)
                    .map(|mean| now + millis(mean * (p.ahead / p.running.max(1)) as f64)),
                None => Some(job.run_at.max(now)),
            };
            Estimate {
                position_in_queue: position.map(|p| p.ahead.min(p.limit)),
                position_exact: position.is_some_and(|p| p.ahead < p.limit),
                estimated_start_at: start,
                estimated_completion_at: start.zip(kind_ms).map(|(at, ms)| at + millis(ms)),
            }
        }
        State::Running => Estimate {
            estimated_completion_at: running_end(job, now, kind_ms),
            ..Estimate::default()
        },
        _ => Estimate::default(),
    }
}

fn running_end(job: &Job, now: OffsetDateTime, kind_ms: Option<f64>) -> Option<OffsetDateTime> {
    let started = job.started_at?;
    let elapsed_ms = (now - started).as_seconds_f64().max(0.0) * 1000.0;
    let by_history = kind_ms;
    let by_pace = (job.progress >= TRUSTED_PROGRESS).then(|| elapsed_ms / job.progress.min(1.0));
    let total_ms = match (by_pace, by_history) {
        (Some(pace), Some(history)) => job.progress * pace + (1.0 - job.progress) * history,
        (pace, history) => pace.or(history)?,
    };
    Some((started + millis(total_ms)).max(now))
}

/// The mean run time of the queue's jobs, over all its kinds.
fn queue_mean_ms(times: &HashMap<String, RunTimes>) -> Option<f64> {
    let runs: u64 = times.values().map(|t| t.runs).sum();
    let total: f64 = times.values().map(|t| t.mean_ms * t.runs as f64).sum();
    (runs > 0).then(|| total / runs as f64)
}

fn millis(ms: f64) -> time::Duration {
    time::Duration::seconds_f64(ms.clamp(0.0, 1e12) / 1000.0)
}
