//! Maintenance sweeps, each one bounded statement: expired leases rescued, pending jobs
//! that can never run ended, and ended jobs past retention deleted.

use jobs_core::{JobError, JobId, RescueReport, State, transition::Ending};

use super::{
    SeaOrmStore, db_error,
    transition::{End, sources},
};
use crate::sql::{Dialect, Sql, state_list};

/// An expired lease ends its attempt as a retry due now, recorded as `lease_expired`.
const RESCUE: Sweep = Sweep {
    ending: Ending::Retry,
    pick: "lease_expires_at < {now} ORDER BY lease_expires_at",
    error: Recorded {
        kind: "lease_expired",
        message: "the lease expired: the worker stopped heartbeating",
        only_in: None,
    },
};

/// Pending jobs with a cancel request or a passed deadline: `Ending::Unrunnable`; only
/// a failure is recorded in the error history (a cancel is no error).
const UNRUNNABLE: Sweep = Sweep {
    ending: Ending::Unrunnable,
    pick: "(cancel_requested_at IS NOT NULL OR (deadline IS NOT NULL AND deadline <= {now}))",
    error: Recorded {
        kind: "deadline",
        message: "the deadline passed before the job could run",
        only_in: Some(State::Failed),
    },
};

pub(super) async fn rescue_expired(
    store: &SeaOrmStore,
    limit: u32,
) -> Result<RescueReport, JobError> {
    report(store, RESCUE.statement(store, limit)).await
}

pub(super) async fn end_unrunnable(
    store: &SeaOrmStore,
    limit: u32,
) -> Result<RescueReport, JobError> {
    report(store, UNRUNNABLE.statement(store, limit)).await
}

/// A statement that ends the rows `pick` selects as `ending` would, as if they ran
/// again now.
struct Sweep {
    ending: Ending,
    /// A condition on the row (`{now}`: the database clock), optionally with ORDER BY.
    pick: &'static str,
    error: Recorded,
}

/// The entry a sweep adds to the error history of the jobs it moves.
struct Recorded {
    kind: &'static str,
    message: &'static str,
    /// Only for jobs moved to this state; `None`: for all.
    only_in: Option<State>,
}

impl Recorded {
    /// The new `errors`, given the next-state expression.
    fn errors(&self, d: Dialect, next: &str) -> String {
        let kind = format!("'{}'", self.kind);
        let message = format!("'{}'", self.message);
        let appended = d.append_attempt_error("jobs.errors", "jobs.attempt", &kind, &message);
        match self.only_in {
            None => appended,
            Some(state) => {
                format!("CASE WHEN {next} = '{state}' THEN {appended} ELSE jobs.errors END")
            }
        }
    }
}

impl Sweep {
    /// Ends up to `limit` of the picked rows that are in the source state of `ending`.
    fn statement(&self, store: &SeaOrmStore, limit: u32) -> Sql {
        let d = store.dialect;
        let mut sql = store.sql();
        let limit = sql.bind(limit.max(1) as i64);
        let named = format!("'{}'", self.ending.as_str());
        let end = End {
            ending: &named,
            retry_at: d.now(),
        };
        sql.push(&format!(
            "WITH t AS MATERIALIZED (SELECT id FROM jobs \
               WHERE state IN ({from}) AND {pick} LIMIT {limit}{lock}) \
             UPDATE jobs SET {ended}, errors = {errors} \
             WHERE jobs.id{picked} AND jobs.state IN ({from}) \
             RETURNING jobs.id, jobs.state, jobs.queue, jobs.has_dependents",
            from = sources(&[self.ending]),
            pick = self.pick.replace("{now}", d.now()),
            ended = end.set_columns(d),
            errors = self.error.errors(d, &end.next_state()),
            lock = d.skip_locked(),
            picked = d.in_cte_ids("t"),
        ));
        sql
    }
}

pub(super) async fn purge_expired(store: &SeaOrmStore, limit: u32) -> Result<u64, JobError> {
    let mut sql = store.sql();
    let limit = sql.bind(limit.max(1) as i64);
    sql.push(&format!(
        "WITH picked AS MATERIALIZED (SELECT id FROM jobs \
         WHERE expires_at <= {now} AND state IN ({ended}) LIMIT {limit}{lock}) \
         DELETE FROM jobs WHERE id{picked} RETURNING id, parents",
        now = store.dialect.now(),
        picked = store.dialect.in_cte_ids("picked"),
        ended = state_list(&State::ENDED),
        lock = store.dialect.skip_locked(),
    ));
    let rows = store.query(sql).await?;
    let mut children = Vec::new();
    for row in &rows {
        if row.try_get::<i32>("", "parents").map_err(db_error)? > 0 {
            children.push(JobId::from(
                row.try_get::<uuid::Uuid>("", "id").map_err(db_error)?,
            ));
        }
    }
    store.forget_parents(&children).await?;
    Ok(rows.len() as u64)
}

/// Runs a maintenance statement that ends jobs (with their dependents' release) and
/// counts the states it moved them to.
async fn report(store: &SeaOrmStore, sql: Sql) -> Result<RescueReport, JobError> {
    let moved = store.end_jobs(sql, false).await.map_err(db_error)?;
    let mut report = RescueReport::default();
    for job in moved {
        match job.state {
            State::Pending => report.retried += 1,
            State::Cancelled => report.cancelled += 1,
            _ => report.failed += 1,
        }
    }
    Ok(report)
}
