//! Runs one claimed job: the handler in its own task (so a panic or an abort cannot harm
//! the worker), bounded by its timeout and deadline, stopped on cancel or shutdown.

use std::{sync::Arc, time::Duration};

use jobs_core::{Job, Lease, Outcome, Retry};
use time::OffsetDateTime;
use tokio::{task::JoinHandle, time::Instant};

use crate::{
    HandlerError, Output,
    handler::Ending,
    runtime::{Completion, Registered, Running, Shared, Slot, StopReason},
};

type HandlerTask = JoinHandle<Result<Output<serde_json::Value>, HandlerError>>;

pub(crate) async fn execute(
    shared: Arc<Shared>,
    job: Job,
    lease: Lease,
    registered: Registered,
    slot: Slot,
) {
    let running = shared.start(&job, lease);
    let ctx = running.ctx.clone();
    // A prefetched job waits for a handler slot, and may be cancelled first; once the
    // worker is stopping, jobs that have not started are released rather than started.
    let token = ctx.cancellation_token().clone();
    let permit = tokio::select! {
        biased;
        _ = token.cancelled() => None,
        _ = shared.stopping.cancelled() => None,
        permit = slot.handler_permit() => Some(permit),
    };
    let Some(handler_permit) =
        permit.filter(|_| !token.is_cancelled() && !shared.stopping.is_cancelled())
    else {
        running.stop(StopReason::Released); // unless cancelled or lost already
        let outcome = match running.reason() {
            StopReason::Lost => return,
            StopReason::Released => Outcome::Released,
            StopReason::Cancelled => Outcome::Cancelled,
        };
        shared.complete(Completion::new(slot, lease, outcome, &job));
        return;
    };
    crate::metrics::started(&job);
    let started = Instant::now();

    let (args, handler) = (job.args.clone(), registered.handler.clone());
    let task: HandlerTask = tokio::spawn({
        let ctx = ctx.clone();
        async move { handler.run(args, ctx).await }
    });
    let timeout = registered.timeout.or(shared.config.default_timeout);
    let outcome = supervise(&shared, &job, task, &running, timeout).await;
    drop(handler_permit);

    crate::metrics::stopped(&job, started.elapsed());
    if let Some(outcome) = outcome {
        let ms = started.elapsed().as_millis() as u64;
        // As the store will write it, so the log tells the outcome that is recorded.
        let outcome = with_backoff(outcome, &registered, job.attempt).into_storable();
        if let Outcome::Failed { kind, message, .. } = &outcome {
            if kind == Outcome::UNSTORABLE {
                tracing::warn!(%message, "the handler's outcome cannot be stored; failing the job");
            }
        }
        tracing::info!(outcome = outcome_name(&outcome), ms, "attempt ended");
        let mut completion = Completion::new(slot, lease, outcome, &job);
        completion.follow_ups = ctx.take_follow_ups();
        shared.complete(completion);
    }
}

/// A kind that declares its own backoff retries on it, not on the store's policy.
fn with_backoff(outcome: Outcome, registered: &Registered, attempt: i32) -> Outcome {
    match (outcome, registered.backoff) {
        (
            Outcome::Failed {
                kind,
                message,
                retry: Retry::Backoff,
            },
            Some(policy),
        ) => Outcome::Failed {
            kind,
            message,
            retry: Retry::After(policy.backoff(attempt)),
        },
        (outcome, _) => outcome,
    }
}

/// `None` when the lease was lost: someone else owns the job now, so nothing is written.
async fn supervise(
    shared: &Shared,
    job: &Job,
    mut task: HandlerTask,
    running: &Running,
    timeout: Option<Duration>,
) -> Option<Outcome> {
    let (limit, limit_kind) = time_limit(job, timeout);
    let token = running.ctx.cancellation_token().clone();
    tokio::select! {
        joined = &mut task => Some(outcome_of(joined)),
        _ = tokio::time::sleep(limit) => {
            token.cancel();
            task.abort();
            Some(limit_kind.outcome(limit))
        }
        _ = token.cancelled() => match running.reason() {
            StopReason::Lost => {
                task.abort();
                None
            }
            StopReason::Released => {
                task.abort();
                Some(Outcome::Released)
            }
            StopReason::Cancelled => {
                // A cooperative handler returns soon; one that ignores the token is aborted.
                let grace = shared.config.cancel_grace;
                match tokio::time::timeout(grace, &mut task).await {
                    Ok(Ok(Ok(Output::Completed(result)))) => Some(Outcome::Completed { result }),
                    Ok(_) => Some(Outcome::Cancelled),
                    Err(_) => {
                        task.abort();
                        Some(Outcome::Cancelled)
                    }
                }
            }
        },
    }
}

enum Limit {
    Timeout,
    Deadline,
}

impl Limit {
    fn outcome(self, after: Duration) -> Outcome {
        match self {
            Limit::Timeout => Outcome::Failed {
                kind: "timeout".into(),
                message: format!("the attempt ran longer than {} ms", after.as_millis()),
                retry: Retry::Backoff,
            },
            Limit::Deadline => Outcome::Failed {
                kind: "deadline".into(),
                message: "the job's deadline passed while it ran".into(),
                retry: Retry::Never,
            },
        }
    }
}

/// The sooner of the per-attempt timeout and the job's deadline.
fn time_limit(job: &Job, default: Option<Duration>) -> (Duration, Limit) {
    let timeout = job
        .timeout_ms
        .map(|ms| Duration::from_millis(ms.max(0) as u64))
        .or(default)
        .unwrap_or(Duration::MAX);
    let until_deadline = job.deadline.map(|d| {
        let left = d - OffsetDateTime::now_utc();
        Duration::try_from(left).unwrap_or(Duration::ZERO)
    });
    match until_deadline {
        Some(left) if left < timeout => (left, Limit::Deadline),
        _ => (
            timeout.min(Duration::from_secs(10 * 365 * 86_400)),
            Limit::Timeout,
        ),
    }
}

fn outcome_of(
    joined: Result<Result<Output<serde_json::Value>, HandlerError>, tokio::task::JoinError>,
) -> Outcome {
    match joined {
        Ok(Ok(Output::Completed(result))) => Outcome::Completed { result },
        Ok(Ok(Output::Partial {
            result,
            item_errors,
        })) => Outcome::Partial {
            result,
            item_errors,
        },
        Ok(Err(error)) => error_outcome(error),
        Err(join) => Outcome::Failed {
            kind: "panic".into(),
            message: panic_message(join),
            retry: Retry::Backoff,
        },
    }
}

fn error_outcome(error: HandlerError) -> Outcome {
    match error.ending {
        Ending::Fail => Outcome::Failed {
            kind: error.kind,
            message: error.message,
            retry: error.retry,
        },
        Ending::Snooze(delay) => Outcome::Snoozed { delay },
        Ending::Cancel => {
            // Outcome::Cancelled carries no reason: the log is where it is kept.
            tracing::info!(reason = %error.message, "the handler cancelled its job");
            Outcome::Cancelled
        }
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the handler panicked".into()),
        Err(join) => join.to_string(),
    }
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed { .. } => "completed",
        Outcome::Partial { .. } => "partial",
        Outcome::Failed { .. } => "failed",
        Outcome::Cancelled => "cancelled",
        Outcome::Released => "released",
        Outcome::Snoozed { .. } => "snoozed",
    }
}
