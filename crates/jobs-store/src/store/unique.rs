//! Unique keys: which job holds a key (a job with it in one of its `unique_states`, the
//! predicate of the partial unique index), and `OnConflict::Replace`, which gives a
//! pending holder the arguments and run time of the job that collided with it.

use std::collections::{HashMap, HashSet};

use jobs_core::{Job, JobError, JobId, NewJob, OnConflict, State};
use migration::m20261205_000008_workflows::UNIQUE_PREDICATE;
use sea_orm::ConnectionTrait;

use super::{SeaOrmStore, job_columns, millis};
use crate::sql::rows_cte;

/// Keys per holder lookup statement.
const LOOKUP_CHUNK: usize = 1_000;

/// (tenant, unique key).
pub(super) type KeyOf = (String, String);

pub(super) fn key_of(job: &NewJob) -> KeyOf {
    (
        job.tenant.clone(),
        job.unique_key.clone().unwrap_or_default(),
    )
}

impl SeaOrmStore {
    /// The jobs now holding the keys of `jobs`, by (tenant, key). A key whose last job
    /// left its states (ended, deleted) has no holder.
    pub(super) async fn holders(
        &self,
        db: &impl ConnectionTrait,
        jobs: &[&NewJob],
    ) -> Result<HashMap<KeyOf, Job>, JobError> {
        let keys: Vec<KeyOf> = jobs
            .iter()
            .map(|j| key_of(j))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut found = HashMap::new();
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            let mut sql = self.sql();
            let conditions: Vec<String> = chunk
                .iter()
                .map(|(tenant, key)| {
                    format!(
                        "(tenant = {} AND unique_key = {})",
                        sql.bind(tenant.clone()),
                        sql.bind(key.clone())
                    )
                })
                .collect();
            sql.push(&format!(
                "SELECT {} FROM jobs WHERE ({UNIQUE_PREDICATE}) AND ({})",
                job_columns(""),
                conditions.join(" OR ")
            ));
            for job in self.fetch_jobs(db, sql).await? {
                if let Some(key) = job.unique_key.clone() {
                    found.insert((job.tenant.clone(), key), job);
                }
            }
        }
        Ok(found)
    }

    /// The job other than `id` holding its (tenant, key), if any.
    pub(super) async fn other_holder(&self, job: &Job) -> Result<Option<Job>, JobError> {
        let Some(key) = job.unique_key.clone() else {
            return Ok(None);
        };
        let mut sql = self.sql();
        let (tenant, key, id) = (
            sql.bind(job.tenant.clone()),
            sql.bind(key),
            sql.bind(job.id.as_uuid()),
        );
        sql.push(&format!(
            "SELECT {} FROM jobs WHERE tenant = {tenant} AND unique_key = {key} \
             AND id <> {id} AND ({UNIQUE_PREDICATE})",
            job_columns("")
        ));
        Ok(self.fetch_jobs(&self.db, sql).await?.pop())
    }

    /// `OnConflict::Replace` for the jobs of `conflicted` that asked for it: each pending
    /// holder takes the arguments and run time of the last such job of its key (in the
    /// caller's order). Returns the holders it changed; running ones are left alone.
    pub(super) async fn replace_holders(
        &self,
        db: &impl ConnectionTrait,
        conflicted: &[&NewJob],
        holders: &HashMap<KeyOf, Job>,
    ) -> Result<Vec<Job>, JobError> {
        let mut last: HashMap<JobId, &NewJob> = HashMap::new();
        for new in conflicted {
            if new.on_conflict != OnConflict::Replace {
                continue;
            }
            if let Some(holder) = holders.get(&key_of(new)) {
                if holder.state == State::Pending {
                    last.insert(holder.id, new);
                }
            }
        }
        if last.is_empty() {
            return Ok(Vec::new());
        }
        let d = self.dialect;
        let mut sql = self.sql();
        let rows = last
            .iter()
            .map(|(holder, new)| {
                vec![
                    holder.as_uuid().into(),
                    new.args.clone().into(),
                    d.time_text(new.run_at),
                    new.delay.map(millis).unwrap_or(0).into(),
                ]
            })
            .collect();
        let r = rows_cte(&mut sql, "r", REPLACE_COLUMNS, rows);
        sql.push(&format!(
            "WITH {r} UPDATE jobs SET args = COALESCE(r.new_args, 'null'), \
               run_at = COALESCE(r.new_run_at, {due}), updated_at = {now} \
             FROM r WHERE jobs.id = r.holder AND jobs.state = '{pending}' RETURNING {columns}",
            due = d.now_plus_ms("r.new_delay_ms"),
            now = d.now(),
            pending = State::Pending,
            columns = job_columns("jobs."),
        ));
        self.fetch_jobs(db, sql).await
    }
}

/// The columns of one replacement, named apart from `jobs`' own.
const REPLACE_COLUMNS: &[(&str, &str)] = &[
    ("holder", "uuid"),
    ("new_args", "jsonb"),
    ("new_run_at", "timestamptz"),
    ("new_delay_ms", "bigint"),
];

#[cfg(test)]
mod tests {
    use jobs_core::UniqueStates;
    use migration::m20261203_000006_operations::{ALL_STATES_MASK, STATE_BITS};

    use super::*;

    /// jobs-core cannot see the migration: its bits must be the index predicate's.
    #[test]
    fn core_state_bits_are_the_migration_bits() {
        for (name, bit) in STATE_BITS {
            let state: State = name.parse().unwrap();
            assert_eq!(UniqueStates::of([state]).bits(), bit, "{name}");
            assert!(UNIQUE_PREDICATE.contains(&format!("WHEN '{name}' THEN {bit}")));
        }
        assert_eq!(UniqueStates::ALL.bits(), ALL_STATES_MASK);
    }
}
