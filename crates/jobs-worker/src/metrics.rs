//! The worker's metrics, recorded through the `metrics` facade; the binary decides how
//! to export them (Prometheus).

use std::time::Duration;

use jobs_core::{Job, State};
use metrics::{counter, gauge, histogram};

pub(crate) fn started(job: &Job) {
    let labels = labels(job);
    counter!("jobs_started_total", &labels).increment(1);
    gauge!("jobs_running", &labels).increment(1.0);
    if let Some(started) = job.started_at {
        let wait = (started - job.run_at).as_seconds_f64().max(0.0);
        histogram!("jobs_queue_wait_seconds", &labels).record(wait);
    }
}

pub(crate) fn stopped(job: &Job, ran_for: Duration) {
    let labels = labels(job);
    gauge!("jobs_running", &labels).decrement(1.0);
    histogram!("jobs_run_seconds", &labels).record(ran_for.as_secs_f64());
}

/// Counts where an attempt ended, as the store decided it.
pub(crate) fn ended(kind: &str, queue: &str, outcome_was_failure: bool, state: State) {
    let name = match (state, outcome_was_failure) {
        (State::Completed, _) => "jobs_completed_total",
        (State::Partial, _) => "jobs_partial_total",
        (State::Failed, _) => "jobs_failed_total",
        (State::Cancelled, _) => "jobs_cancelled_total",
        (State::Pending, true) => "jobs_retried_total",
        (State::Pending, false) => "jobs_released_total",
        (State::Running | State::Waiting, _) => return,
    };
    counter!(name, "kind" => kind.to_owned(), "queue" => queue.to_owned()).increment(1);
}

fn labels(job: &Job) -> [(&'static str, String); 2] {
    [("kind", job.kind.clone()), ("queue", job.queue.clone())]
}
