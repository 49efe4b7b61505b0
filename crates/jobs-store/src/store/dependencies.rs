//! Dependencies between jobs, inside the caller's transaction: recording a new job's
//! parents, and what ending a parent does to the jobs waiting for it.
//!
//! Every statement that ends jobs calls `release_dependents` in its own transaction with
//! the jobs it ended that have dependents (`has_dependents`, from its RETURNING), so a
//! waiting job becomes pending exactly when its last parent's end commits. Two parents
//! ending at once on two connections both decrement `waiting_on` under the child's row
//! lock: the second sees the first's count, and only the one that reaches 0 releases it.

use std::collections::{BTreeMap, HashMap, HashSet};

use jobs_core::{
    FieldError, JobError, JobId, NewJob, OnParentFailure, Requires, State,
    dependency::PARENT_FAILED,
};
use sea_orm::{ConnectionTrait, QueryResult};
use uuid::Uuid;

use super::{SeaOrmStore, db_error};
use crate::sql::{Dialect, rows_cte};

/// Rows per statement when writing edges.
const EDGE_CHUNK: usize = 5_000;

/// What ending some parents did: jobs released to pending, and jobs cancelled because a
/// parent they required to complete did not.
#[derive(Debug, Default)]
pub(crate) struct Released {
    pub(crate) ids: Vec<JobId>,
    pub(crate) queues: HashSet<String>,
}

impl Released {
    fn absorb(&mut self, other: Released) {
        self.ids.extend(other.ids);
        self.queues.extend(other.queues);
    }

    /// After the transaction committed: this process's workers and watchers hear of it
    /// (other processes got the NOTIFY sent inside it).
    pub(crate) fn announce(&self, store: &SeaOrmStore) {
        store.wake_queues(self.queues.iter().map(String::as_str));
        store.changed(self.ids.iter().copied());
    }
}

/// One row a statement that ends jobs returned (`RETURNING id, state, queue,
/// has_dependents`).
pub(crate) struct Moved {
    pub(crate) id: JobId,
    pub(crate) state: State,
    pub(crate) queue: String,
}

impl SeaOrmStore {
    /// Runs a statement that moves jobs (`RETURNING id, state, queue, has_dependents`)
    /// and, in the same transaction, releases the dependents of those it ended
    /// (`deleted`: the statement deleted them, which their dependents see as cancelled).
    /// Watchers hear of every moved job.
    pub(crate) async fn end_jobs(
        &self,
        sql: crate::sql::Sql,
        deleted: bool,
    ) -> Result<Vec<Moved>, sea_orm::DbErr> {
        use sea_orm::TransactionTrait;
        let txn = self.db.begin().await?;
        let rows = txn.query_all_raw(sql.build()).await?;
        let mut moved = Vec::with_capacity(rows.len());
        let mut parents = Vec::new();
        for row in rows {
            let id = JobId::from(row.try_get::<Uuid>("", "id")?);
            let state: String = row.try_get("", "state")?;
            let state: State = state
                .parse()
                .map_err(|e: JobError| sea_orm::DbErr::Custom(e.to_string()))?;
            let ended = if deleted {
                Some(State::Cancelled)
            } else {
                Some(state).filter(|s| s.is_ended())
            };
            if let Some(ended) =
                ended.filter(|_| row.try_get::<bool>("", "has_dependents").unwrap_or(false))
            {
                parents.push((id, ended));
            }
            moved.push(Moved {
                id,
                state,
                queue: row.try_get("", "queue")?,
            });
        }
        let released = self
            .release_dependents(&txn, parents)
            .await
            .map_err(super::finish::in_transaction)?;
        txn.commit().await?;
        released.announce(self);
        self.changed(moved.iter().map(|m| m.id));
        if deleted {
            let ids: Vec<JobId> = moved.iter().map(|m| m.id).collect();
            self.forget_parents(&ids)
                .await
                .map_err(super::finish::in_transaction)?;
        }
        Ok(moved)
    }

    /// Deletes the edges of jobs that were deleted: nothing reads them any more. The
    /// edges from a deleted parent stay, for its children's `parent_results` (showing it
    /// with no state).
    pub(crate) async fn forget_parents(&self, children: &[JobId]) -> Result<(), JobError> {
        if children.is_empty() {
            return Ok(());
        }
        let mut sql = self.sql();
        let in_ids = sql.in_ids(children);
        sql.push(&format!(
            "DELETE FROM jobs_dependencies WHERE job_id{in_ids}"
        ));
        self.db.execute_raw(sql.build()).await.map_err(db_error)?;
        Ok(())
    }

    /// Records the parents of the jobs of `inserted` (new job id -> its row's id) and
    /// applies the parents that have already ended. `batch` maps ids of the batch to the
    /// job that holds them (itself, or the holder of its unique key). Parents outside the
    /// batch must exist and belong to the child's tenant; they are locked first, so a
    /// parent cannot end unseen between this check and the commit.
    pub(crate) async fn record_dependencies(
        &self,
        conn: &impl ConnectionTrait,
        jobs: &[NewJob],
        inserted: &HashSet<JobId>,
        batch: &HashMap<JobId, JobId>,
    ) -> Result<Released, JobError> {
        let children: Vec<(usize, &NewJob)> = jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| !j.depends_on.is_empty() && inserted.contains(&j.id))
            .collect();
        if children.is_empty() {
            return Ok(Released::default());
        }
        let resolve = |id: JobId| batch.get(&id).copied().unwrap_or(id);
        let parents: HashSet<JobId> = children
            .iter()
            .flat_map(|(_, j)| j.depends_on.iter().map(|d| resolve(d.job_id)))
            .filter(|id| !inserted.contains(id))
            .collect();
        let found = self.mark_parents(conn, &parents).await?;
        let mut tenants: HashMap<JobId, &str> = jobs
            .iter()
            .filter(|j| inserted.contains(&j.id))
            .map(|j| (j.id, j.tenant.as_str()))
            .collect();
        tenants.extend(found.iter().map(|(id, (tenant, _))| (*id, tenant.as_str())));
        check_parents(&children, &tenants, resolve)?;
        let edges: Vec<Vec<sea_orm::Value>> = children
            .iter()
            .flat_map(|(_, job)| {
                job.depends_on.iter().map(|d| {
                    vec![
                        job.id.as_uuid().into(),
                        resolve(d.job_id).as_uuid().into(),
                        d.requires.as_str().into(),
                    ]
                })
            })
            .collect();
        for chunk in edges.chunks(EDGE_CHUNK) {
            let mut sql = self.sql();
            let e = rows_cte(&mut sql, "e", EDGE_COLUMNS, chunk.to_vec());
            sql.push(&format!(
                "WITH {e} INSERT INTO jobs_dependencies (job_id, parent_id, requires, satisfied) \
                 SELECT job_id, parent_id, requires, false FROM e WHERE true"
            ));
            conn.execute_raw(sql.build()).await.map_err(db_error)?;
        }
        let ended: Vec<(JobId, State)> = found
            .into_iter()
            .filter(|(_, (_, state))| state.is_ended())
            .map(|(id, (_, state))| (id, state))
            .collect();
        self.release_dependents(conn, ended).await
    }

    /// Flags existing parents as having dependents, which locks them; returns each
    /// one's tenant and state.
    async fn mark_parents(
        &self,
        conn: &impl ConnectionTrait,
        parents: &HashSet<JobId>,
    ) -> Result<HashMap<JobId, (String, State)>, JobError> {
        let mut found = HashMap::with_capacity(parents.len());
        if parents.is_empty() {
            return Ok(found);
        }
        let mut ids: Vec<JobId> = parents.iter().copied().collect();
        // One order for every transaction, so two batches naming the same parents
        // cannot deadlock.
        ids.sort();
        let mut sql = self.sql();
        let in_ids = sql.in_ids(&ids);
        sql.push(&format!(
            "UPDATE jobs SET has_dependents = true WHERE id{in_ids} RETURNING id, tenant, state"
        ));
        for row in conn.query_all_raw(sql.build()).await.map_err(db_error)? {
            let id = id_of(&row, "id")?;
            let tenant: String = row.try_get("", "tenant").map_err(db_error)?;
            let state: String = row.try_get("", "state").map_err(db_error)?;
            found.insert(id, (tenant, state.parse()?));
        }
        Ok(found)
    }

    /// Applies the ends of `ended` parents (id and the state they ended in) to the jobs
    /// that depend on them, and so on down: jobs it cancels end in turn. Sends the
    /// PostgreSQL wake-up for released jobs with the caller's transaction.
    pub(crate) async fn release_dependents(
        &self,
        conn: &impl ConnectionTrait,
        mut ended: Vec<(JobId, State)>,
    ) -> Result<Released, JobError> {
        let mut released = Released::default();
        while !ended.is_empty() {
            let satisfied = self.satisfy_edges(conn, &ended).await?;
            let failed: Vec<(JobId, State)> = ended
                .iter()
                .filter(|(_, state)| !Requires::Completed.met_by(*state))
                .copied()
                .collect();
            let unmet = self.unmet_by(conn, &failed).await?;
            let touched = satisfied.keys().chain(unmet.keys()).copied();
            self.lock_in_id_order(conn, touched)
                .await
                .map_err(db_error)?;
            released.absorb(self.count_down(conn, &satisfied).await?);
            let cancelled = self.cancel_for_parents(conn, &unmet).await?;
            released.ids.extend(cancelled.iter().map(|(id, _)| *id));
            ended = cancelled
                .into_iter()
                .filter(|(_, has_dependents)| *has_dependents)
                .map(|(id, _)| (id, State::Cancelled))
                .collect();
        }
        let queues: Vec<&str> = released.queues.iter().map(String::as_str).collect();
        self.notify_queue_names(conn, &queues).await?;
        Ok(released)
    }

    /// Marks the edges these parents now satisfy; how many each child got.
    async fn satisfy_edges(
        &self,
        conn: &impl ConnectionTrait,
        ended: &[(JobId, State)],
    ) -> Result<HashMap<Uuid, i64>, JobError> {
        let mut sql = self.sql();
        let rows = ended
            .iter()
            .map(|(id, state)| {
                vec![
                    id.as_uuid().into(),
                    Requires::Completed.met_by(*state).into(),
                ]
            })
            .collect();
        let p = rows_cte(&mut sql, "p", &[("id", "uuid"), ("ok", "boolean")], rows);
        sql.push(&format!(
            "WITH {p} UPDATE jobs_dependencies SET satisfied = true FROM p \
             WHERE jobs_dependencies.parent_id = p.id AND NOT jobs_dependencies.satisfied \
               AND (jobs_dependencies.requires = '{ended}' OR p.ok) \
             RETURNING jobs_dependencies.job_id",
            ended = Requires::Ended.as_str(),
        ));
        let mut counts = HashMap::new();
        for row in conn.query_all_raw(sql.build()).await.map_err(db_error)? {
            *counts.entry(uuid_of(&row, "job_id")?).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// The children that required these failed parents to complete, each with the first
    /// such parent and how it ended.
    async fn unmet_by(
        &self,
        conn: &impl ConnectionTrait,
        failed: &[(JobId, State)],
    ) -> Result<BTreeMap<Uuid, (JobId, State)>, JobError> {
        let mut unmet = BTreeMap::new();
        if failed.is_empty() {
            return Ok(unmet);
        }
        let states: HashMap<JobId, State> = failed.iter().copied().collect();
        let ids: Vec<JobId> = states.keys().copied().collect();
        let mut sql = self.sql();
        let in_ids = sql.in_ids(&ids);
        sql.push(&format!(
            "SELECT job_id, parent_id FROM jobs_dependencies \
             WHERE parent_id{in_ids} AND requires = '{completed}' AND NOT satisfied",
            completed = Requires::Completed.as_str(),
        ));
        for row in conn.query_all_raw(sql.build()).await.map_err(db_error)? {
            let parent = id_of(&row, "parent_id")?;
            unmet
                .entry(uuid_of(&row, "job_id")?)
                .or_insert((parent, states[&parent]));
        }
        Ok(unmet)
    }

    /// Locks the rows of `ids` in id order, in a statement of its own. Statements that
    /// lock many rows of one transaction (outcomes, heartbeats, releases) lock them in
    /// one order this way, so they wait for each other instead of deadlocking. The
    /// database's own error, so that a lost connection stays transient.
    pub(super) async fn lock_in_id_order(
        &self,
        conn: &impl ConnectionTrait,
        ids: impl IntoIterator<Item = Uuid>,
    ) -> Result<(), sea_orm::DbErr> {
        let mut ids: Vec<Uuid> = ids.into_iter().collect();
        if self.dialect != Dialect::Postgres || ids.len() < 2 {
            return Ok(());
        }
        ids.sort_unstable();
        ids.dedup();
        let mut sql = self.sql();
        let in_ids = sql.in_uuids(ids.into_iter());
        sql.push(&format!(
            "SELECT id FROM jobs WHERE id{in_ids} ORDER BY id FOR UPDATE"
        ));
        conn.query_all_raw(sql.build()).await?;
        Ok(())
    }

    /// Takes the satisfied edges off each child's `waiting_on`; a waiting child that
    /// reaches 0 becomes pending, due now unless it was to run later.
    async fn count_down(
        &self,
        conn: &impl ConnectionTrait,
        satisfied: &HashMap<Uuid, i64>,
    ) -> Result<Released, JobError> {
        let mut released = Released::default();
        if satisfied.is_empty() {
            return Ok(released);
        }
        let d = self.dialect;
        let mut sql = self.sql();
        let rows = satisfied
            .iter()
            .map(|(id, n)| vec![(*id).into(), (*n).into()])
            .collect();
        let c = rows_cte(&mut sql, "c", &[("id", "uuid"), ("n", "bigint")], rows);
        let ready = format!(
            "jobs.state = '{waiting}' AND jobs.waiting_on - c.n <= 0",
            waiting = State::Waiting
        );
        sql.push(&format!(
            "WITH {c} UPDATE jobs SET waiting_on = jobs.waiting_on - c.n, \
               state = CASE WHEN {ready} THEN '{pending}' ELSE jobs.state END, \
               run_at = CASE WHEN {ready} AND jobs.run_at < {now} THEN {now} ELSE jobs.run_at END, \
               updated_at = {now} \
             FROM c WHERE jobs.id = c.id \
             RETURNING jobs.id, jobs.state, jobs.queue",
            pending = State::Pending,
            now = d.now(),
        ));
        for row in conn.query_all_raw(sql.build()).await.map_err(db_error)? {
            let state: String = row.try_get("", "state").map_err(db_error)?;
            if state == State::Pending.as_str() {
                released.ids.push(id_of(&row, "id")?);
                released
                    .queues
                    .insert(row.try_get("", "queue").map_err(db_error)?);
            }
        }
        Ok(released)
    }

    /// Cancels the waiting children whose policy is to follow a failed parent, naming it
    /// in their error history; returns them with whether they have dependents.
    async fn cancel_for_parents(
        &self,
        conn: &impl ConnectionTrait,
        unmet: &BTreeMap<Uuid, (JobId, State)>,
    ) -> Result<Vec<(JobId, bool)>, JobError> {
        if unmet.is_empty() {
            return Ok(Vec::new());
        }
        let d = self.dialect;
        let mut sql = self.sql();
        let rows = unmet
            .iter()
            .map(|(child, (parent, state))| {
                let message = format!("job {parent}, which it requires to complete, ended {state}");
                vec![(*child).into(), message.into()]
            })
            .collect();
        let v = rows_cte(&mut sql, "v", &[("id", "uuid"), ("message", "text")], rows);
        let kind = format!("'{PARENT_FAILED}'");
        sql.push(&format!(
            "WITH {v} UPDATE jobs SET state = '{cancelled}', finished_at = {now}, \
               expires_at = {expiry}, updated_at = {now}, errors = {errors} \
             FROM v WHERE jobs.id = v.id AND jobs.state = '{waiting}' \
               AND jobs.on_parent_failure = '{cancel}' \
             RETURNING jobs.id, jobs.has_dependents",
            cancelled = State::Cancelled,
            waiting = State::Waiting,
            cancel = OnParentFailure::Cancel.as_str(),
            now = d.now(),
            expiry = d.now_plus_ms("jobs.retention_ms"),
            errors = d.append_attempt_error("jobs.errors", "jobs.attempt", &kind, "v.message"),
        ));
        let mut cancelled = Vec::new();
        for row in conn.query_all_raw(sql.build()).await.map_err(db_error)? {
            let has_dependents: bool = row.try_get("", "has_dependents").map_err(db_error)?;
            cancelled.push((id_of(&row, "id")?, has_dependents));
        }
        Ok(cancelled)
    }
}

/// Each parent of each child exists, in the child's tenant (`tenants`: of every job
/// that may be a parent). Errors name the item: `jobs[3].depends_on[0]`.
fn check_parents(
    children: &[(usize, &NewJob)],
    tenants: &HashMap<JobId, &str>,
    resolve: impl Fn(JobId) -> JobId,
) -> Result<(), JobError> {
    let mut errors = Vec::new();
    for (i, job) in children {
        for (j, dependency) in job.depends_on.iter().enumerate() {
            if tenants.get(&resolve(dependency.job_id)) != Some(&job.tenant.as_str()) {
                errors.push(FieldError::new(
                    format!("jobs[{i}].depends_on[{j}]"),
                    format!("no job {} to depend on", dependency.job_id),
                ));
            }
        }
    }
    JobError::invalid_if_any(errors)
}

/// The columns of one edge, with their PostgreSQL types.
const EDGE_COLUMNS: &[(&str, &str)] = &[
    ("job_id", "uuid"),
    ("parent_id", "uuid"),
    ("requires", "text"),
];

fn uuid_of(row: &QueryResult, column: &str) -> Result<Uuid, JobError> {
    row.try_get::<Uuid>("", column).map_err(db_error)
}

fn id_of(row: &QueryResult, column: &str) -> Result<JobId, JobError> {
    uuid_of(row, column).map(JobId::from)
}
