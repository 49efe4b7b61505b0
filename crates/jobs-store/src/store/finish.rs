//! Writing the outcomes of attempts: one statement for a batch, and when the database
//! refuses the batch, each outcome alone so that one bad row fails only its own job.

use std::{collections::HashMap, time::Duration};

use jobs_core::{
    Finish, JobError, JobId, NewJob, Outcome, Retry, State,
    storable::{caps, storable_text},
    transition::Ending,
};
use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};
use uuid::Uuid;

use super::{
    SeaOrmStore, db_error,
    errors::{refused_value, transient},
    millis,
    outcome::Stored,
    transition::{End, sources},
};
use crate::sql::{Sql, rows_cte};

pub(super) async fn finish_many(
    store: &SeaOrmStore,
    items: Vec<Finish>,
) -> Result<Vec<Result<State, JobError>>, JobError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    check_follow_ups(&items)?;
    let mut items: Vec<(Finish, Stored)> = items
        .into_iter()
        .map(|item| {
            store.outcome_limits.admit(Finish {
                outcome: item.outcome.into_storable(),
                ..item
            })
        })
        .collect();
    match store.finish_rows(&items).await {
        Ok(results) => Ok(results),
        // Worth retrying as it is (the caller does): the database is away or busy.
        Err(error) if transient(&error) => Err(db_error(error)),
        // Anything else would fail the same batch forever: find the row at fault.
        Err(_) if items.len() > 1 => store.finish_each(items).await,
        Err(error) => store.finish_refused(items.remove(0).0, error).await,
    }
}

impl SeaOrmStore {
    /// Writes outcomes in one statement, releases the jobs waiting for those that ended
    /// and enqueues the follow-ups of those that completed, all in one transaction; then
    /// tells watchers of the rows it moved. The database's own error if it refuses.
    async fn finish_rows(
        &self,
        items: &[(Finish, Stored)],
    ) -> Result<Vec<Result<State, JobError>>, DbErr> {
        let txn = self.db.begin().await?;
        // In id order, as heartbeats lock them: the same worker's heartbeat and outcomes
        // touch the same rows at once, and in different orders they deadlock.
        let ids = items.iter().map(|(i, _)| i.lease.job_id.as_uuid());
        self.lock_in_id_order(&txn, ids).await?;
        let returned = txn
            .query_all_raw(self.finish_statement(items).build())
            .await?;
        let mut moved = HashMap::with_capacity(returned.len());
        let mut parents = Vec::new();
        let mut runs = Vec::new();
        for row in returned {
            let id = JobId::from(row.try_get::<Uuid>("", "id")?);
            let state: String = row.try_get("", "state")?;
            let state: State = state
                .parse()
                .map_err(|e: JobError| DbErr::Custom(e.to_string()))?;
            if state.is_ended() && row.try_get::<bool>("", "has_dependents")? {
                parents.push((id, state));
            }
            let run_ms: Option<i64> = row.try_get("", "run_ms")?;
            if let (State::Completed | State::Partial, Some(ms)) = (state, run_ms) {
                let key = (
                    row.try_get("", "tenant")?,
                    row.try_get("", "queue")?,
                    row.try_get("", "kind")?,
                );
                runs.push((key, ms));
            }
            moved.insert(id, state);
        }
        let follow_ups: Vec<NewJob> = items
            .iter()
            .map(|(item, _)| item)
            .filter(|item| {
                matches!(
                    moved.get(&item.lease.job_id),
                    Some(State::Completed | State::Partial)
                )
            })
            .flat_map(|item| item.follow_ups.iter().cloned())
            .collect();
        let released = self
            .release_dependents(&txn, parents)
            .await
            .map_err(in_transaction)?;
        let enqueued = match follow_ups.is_empty() {
            true => Vec::new(),
            false => self
                .enqueue_many_in(&txn, follow_ups)
                .await
                .map_err(in_transaction)?,
        };
        txn.commit().await?;
        released.announce(self);
        self.wake_queues(enqueued.iter().map(|e| e.job.queue.as_str()));
        self.changed(moved.keys().copied());
        self.observe_runs(runs).await;
        Ok(items
            .iter()
            .map(|(item, _)| match moved.get(&item.lease.job_id) {
                Some(state) => Ok(*state),
                None => Err(JobError::LeaseLost(item.lease.job_id)),
            })
            .collect())
    }

    /// Ends each attempt whose row still runs under its lease token, as the outcome says.
    fn finish_statement(&self, items: &[(Finish, Stored)]) -> Sql {
        let d = self.dialect;
        let mut sql = self.sql();
        let rows = items
            .iter()
            .map(|(item, stored)| {
                let delay = self.retry_delay(item.lease.attempt, retry_of(&item.outcome));
                finish_row(item, stored, delay)
            })
            .collect();
        let v = rows_cte(&mut sql, "v", FINISH_COLUMNS, rows);
        let retry_at = d.now_plus_ms("t.delay_ms");
        let end = End {
            ending: "t.outcome",
            retry_at: &retry_at,
        };
        sql.push(&format!(
            "WITH {v} \
             UPDATE jobs SET {ended}, \
               result = CASE WHEN t.outcome IN ({done}) THEN t.result ELSE jobs.result END, \
               item_errors = CASE WHEN t.outcome = '{partial}' THEN t.item_errors ELSE jobs.item_errors END, \
               outcome_zstd = CASE WHEN t.outcome IN ({done}) THEN {compressed} ELSE jobs.outcome_zstd END, \
               errors = CASE WHEN t.err_kind IS NULL THEN jobs.errors ELSE {errors} END, \
               progress = CASE WHEN t.outcome IN ({done}) THEN 1.0 ELSE jobs.progress END \
             FROM v AS t \
             WHERE jobs.id = t.id AND jobs.state IN ({from}) AND jobs.lease_token = t.lease_token \
             RETURNING jobs.id, jobs.state, jobs.has_dependents, jobs.tenant, jobs.queue, \
               jobs.kind, {run_ms} AS run_ms",
            run_ms = d.age_ms("jobs.started_at"),
            ended = end.set_columns(d),
            done = format_args!("'{}', '{}'", Ending::Completed.as_str(), Ending::Partial.as_str()),
            partial = Ending::Partial.as_str(),
            compressed = d.unhex("t.outcome_zstd"),
            errors = d.append_attempt_error("jobs.errors", "jobs.attempt", "t.err_kind", "t.err_message"),
            from = sources(&Ending::OF_ATTEMPT),
        ));
        sql
    }

    /// After the database failed a batch: each outcome alone, so one bad row fails only
    /// its own job. A transient failure on the way stops here, to be retried whole
    /// (outcomes already written then answer `LeaseLost`).
    async fn finish_each(
        &self,
        items: Vec<(Finish, Stored)>,
    ) -> Result<Vec<Result<State, JobError>>, JobError> {
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let result = match self.finish_rows(std::slice::from_ref(&item)).await {
                Ok(mut one) => one.remove(0),
                Err(error) if transient(&error) => return Err(db_error(error)),
                Err(error) => self.finish_refused(item.0, error).await?.remove(0),
            };
            results.push(result);
        }
        Ok(results)
    }

    /// One outcome the database failed alone. A value it refuses ends the job `failed`
    /// with kind `unstorable_outcome` and the database's reason; any other failure is
    /// answered for this item only (its lease then expires and the job runs again).
    async fn finish_refused(
        &self,
        item: Finish,
        error: DbErr,
    ) -> Result<Vec<Result<State, JobError>>, JobError> {
        if !refused_value(&error) {
            tracing::error!(job = %item.lease.job_id, %error, "the database failed an outcome; the job will run again after its lease");
            return Ok(vec![Err(db_error(error))]);
        }
        tracing::warn!(job = %item.lease.job_id, %error, "the database refused an outcome; failing the job");
        let failed = Finish::new(
            item.lease,
            Outcome::Failed {
                kind: Outcome::UNSTORABLE.into(),
                message: storable_text(
                    &format!("the database refused the outcome: {error}"),
                    caps::ERROR_MESSAGE,
                ),
                retry: Retry::Never,
            },
        );
        match self.finish_rows(&[(failed, Stored::none())]).await {
            Ok(results) => Ok(results),
            Err(error) if transient(&error) => Err(db_error(error)),
            Err(error) => Ok(vec![Err(db_error(error))]),
        }
    }

    /// Never longer than `limits::DURATION_MAX_SECS`, however the delay was asked for.
    fn retry_delay(&self, attempt: i32, retry: Retry) -> Option<Duration> {
        let max = Duration::from_secs(jobs_core::limits::DURATION_MAX_SECS);
        self.requested_delay(attempt, retry).map(|d| d.min(max))
    }

    fn requested_delay(&self, attempt: i32, retry: Retry) -> Option<Duration> {
        match retry {
            Retry::Backoff => Some(self.retry_policy.backoff(attempt)),
            Retry::After(delay) => Some(delay),
            Retry::Never => None,
        }
    }
}

/// Follow-ups are checked before anything is written: `items[2].follow_ups[0].kind`.
fn check_follow_ups(items: &[Finish]) -> Result<(), JobError> {
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Err(JobError::Invalid(fields)) = super::enqueue::validate_all(&item.follow_ups) {
            errors.extend(fields.into_iter().map(|f| jobs_core::FieldError {
                field: format!("items[{i}].{}", f.field.replacen("jobs", "follow_ups", 1)),
                message: f.message,
            }));
        }
    }
    JobError::invalid_if_any(errors)
}

/// A failure of the store's own code inside the transaction of an outcome, as the
/// database error that rolls it back: a transient one stays transient.
pub(super) fn in_transaction(error: JobError) -> DbErr {
    match error {
        JobError::Unavailable(message) => DbErr::Conn(sea_orm::RuntimeErr::Internal(message)),
        other => DbErr::Custom(other.to_string()),
    }
}

/// The columns of one outcome in `finish_many`, with their PostgreSQL types.
const FINISH_COLUMNS: &[(&str, &str)] = &[
    ("id", "uuid"),
    ("lease_token", "uuid"),
    ("outcome", "text"),
    ("result", "jsonb"),
    ("item_errors", "jsonb"),
    // Hexadecimal: the rows travel as JSON.
    ("outcome_zstd", "text"),
    ("err_kind", "text"),
    ("err_message", "text"),
    ("delay_ms", "bigint"),
];

/// One row of `finish_many`, the outcome named by its `Ending`. A failure with a delay
/// is a retry; one without (`Retry::Never`) fails for good.
fn finish_row(item: &Finish, stored: &Stored, delay: Option<Duration>) -> Vec<sea_orm::Value> {
    let (ending, error) = match &item.outcome {
        Outcome::Completed { .. } => (Ending::Completed, None),
        Outcome::Partial { .. } => (Ending::Partial, None),
        Outcome::Failed { kind, message, .. } => {
            let ending = if delay.is_some() {
                Ending::Retry
            } else {
                Ending::Failed
            };
            (ending, Some((kind.clone(), message.clone())))
        }
        Outcome::Cancelled => (Ending::Cancelled, None),
        Outcome::Released => (Ending::Released, None),
        Outcome::Snoozed { .. } => (Ending::Snoozed, None),
    };
    let (err_kind, err_message) = error.unzip();
    let (result, item_errors, compressed) = match stored {
        Stored::Plain {
            result,
            item_errors,
        } => (result.clone(), item_errors.clone(), None),
        Stored::Compressed(bytes) => (None, None, Some(hex::encode(bytes))),
    };
    vec![
        item.lease.job_id.as_uuid().into(),
        item.lease.token.as_uuid().into(),
        ending.as_str().into(),
        result.into(),
        item_errors.into(),
        compressed.into(),
        err_kind.into(),
        err_message.into(),
        delay.map(millis).unwrap_or(0).into(),
    ]
}

/// The delay an outcome asks for: a failure's retry, or a snooze's wait.
fn retry_of(outcome: &Outcome) -> Retry {
    match outcome {
        Outcome::Failed { retry, .. } => *retry,
        Outcome::Snoozed { delay } => Retry::After(*delay),
        _ => Retry::Never,
    }
}
