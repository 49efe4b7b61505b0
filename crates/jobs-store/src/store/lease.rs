//! Leases: keeping attempts alive, and what a running attempt reports (progress) or
//! learns (cancel requests); claims are in `claim`. Every write is conditional on the
//! row still running under the caller's lease token.

use std::{collections::HashSet, time::Duration};

use jobs_core::{
    FieldError, Heartbeat, JobError, Lease, LeaseToken, State,
    storable::{caps, storable_text},
};

use sea_orm::{ConnectionTrait, TransactionTrait};

use super::{SeaOrmStore, db_error, millis, token_of};
use crate::sql::Sql;

pub(super) async fn heartbeat(
    store: &SeaOrmStore,
    leases: &[Lease],
    lease: Duration,
) -> Result<Heartbeat, JobError> {
    if leases.is_empty() {
        return Ok(Heartbeat::default());
    }
    let d = store.dialect;
    let mut sql = store.sql();
    let lease = sql.bind(millis(lease));
    let held = held_by(&mut sql, leases);
    sql.push(&format!(
        "UPDATE jobs SET lease_expires_at = {lease_end}, updated_at = {now} \
         WHERE state = '{running}' AND {held} \
         RETURNING lease_token, cancel_requested_at IS NOT NULL AS cancel_requested",
        lease_end = d.now_plus_ms(&lease),
        now = d.now(),
        running = State::Running,
    ));
    // In id order, as outcomes lock them (see `finish_rows`): one transaction.
    let txn = store.db.begin().await.map_err(db_error)?;
    let ids = leases.iter().map(|l| l.job_id.as_uuid());
    store.lock_in_id_order(&txn, ids).await.map_err(db_error)?;
    let rows = txn.query_all_raw(sql.build()).await.map_err(db_error)?;
    txn.commit().await.map_err(db_error)?;
    let mut beat = Heartbeat::default();
    for row in rows {
        let token = token_of(&row)?;
        beat.renewed.push(token);
        if row
            .try_get::<bool>("", "cancel_requested")
            .map_err(db_error)?
        {
            beat.cancel_requested.push(token);
        }
    }
    let renewed: HashSet<LeaseToken> = beat.renewed.iter().copied().collect();
    beat.lost = leases
        .iter()
        .map(|l| l.token)
        .filter(|token| !renewed.contains(token))
        .collect();
    Ok(beat)
}

pub(super) async fn progress(
    store: &SeaOrmStore,
    lease: &Lease,
    fraction: f64,
    stage: Option<&str>,
) -> Result<(), JobError> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(JobError::Invalid(vec![FieldError::new(
            "progress",
            "must be between 0.0 and 1.0",
        )]));
    }
    let mut sql = store.sql();
    let stage = stage.map(|s| storable_text(s, caps::STAGE));
    let text = format!(
        "UPDATE jobs SET progress = {}, stage = {}, updated_at = {} \
         WHERE id = {} AND lease_token = {} AND state = '{running}'",
        sql.bind(fraction),
        sql.bind(stage),
        store.dialect.now(),
        sql.bind(lease.job_id.as_uuid()),
        sql.bind(lease.token.as_uuid()),
        running = State::Running,
    );
    sql.push(&text);
    let done = store.execute(sql).await?;
    if done.rows_affected() == 0 {
        return Err(JobError::LeaseLost(lease.job_id));
    }
    store.changed([lease.job_id]);
    Ok(())
}

pub(super) async fn cancel_requests(
    store: &SeaOrmStore,
    leases: &[Lease],
) -> Result<Vec<LeaseToken>, JobError> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = store.sql();
    let held = held_by(&mut sql, leases);
    sql.push(&format!(
        "SELECT lease_token FROM jobs WHERE {held} \
         AND state = '{running}' AND cancel_requested_at IS NOT NULL",
        running = State::Running,
    ));
    let rows = store.query(sql).await?;
    rows.iter().map(token_of).collect()
}

/// The rows of `leases`: each job under its lease token (ids and tokens are one list
/// each: a stale token of one job never matches another's id, tokens being unique).
fn held_by(sql: &mut Sql, leases: &[Lease]) -> String {
    let ids = sql.in_uuids(leases.iter().map(|l| l.job_id.as_uuid()));
    let tokens = sql.in_uuids(leases.iter().map(|l| l.token.as_uuid()));
    format!("id{ids} AND lease_token{tokens}")
}
