//! Leadership that expires: one row per role in `jobs_leader`, holding its leader and an
//! expiry by the database clock. Only the leader renews it; once it lapses anyone may take
//! it. A frozen or cut-off leader therefore loses the role within its time to live, where
//! a session lock would stay held as long as the frozen process's connection (hours).

use std::time::Duration;

use jobs_core::JobError;
use sea_orm::ConnectionTrait;

use crate::{SeaOrmStore, store::db_error};

/// The role of the process that runs the rescuer, the deadline sweeper and retention.
pub const MAINTENANCE_ROLE: &str = "maintenance";

impl SeaOrmStore {
    /// Takes `role` for `holder` if it is free or lapsed, or renews it if `holder` has it:
    /// true when `holder` leads for `ttl` from now (database clock). `holder` must be
    /// unique per process, so a restarted process never inherits its predecessor's term.
    pub async fn lead(&self, role: &str, holder: &str, ttl: Duration) -> Result<bool, JobError> {
        let d = self.dialect();
        let mut sql = self.sql();
        let name = sql.bind(role.to_owned());
        let leader = sql.bind(holder.to_owned());
        let ttl = sql.bind(ttl.as_millis().min(i64::MAX as u128) as i64);
        sql.push(&format!(
            "INSERT INTO jobs_leader (name, leader_id, expires_at) VALUES ({name}, {leader}, {until}) \
             ON CONFLICT (name) DO UPDATE SET leader_id = excluded.leader_id, \
               expires_at = excluded.expires_at \
             WHERE jobs_leader.leader_id = excluded.leader_id OR jobs_leader.expires_at < {now} \
             RETURNING leader_id",
            until = d.now_plus_ms(&ttl),
            now = d.now(),
        ));
        let row = self
            .connection()
            .query_one_raw(sql.build())
            .await
            .map_err(db_error)?;
        Ok(row.is_some())
    }

    /// Gives `role` up at once (at shutdown), if `holder` has it.
    pub async fn resign(&self, role: &str, holder: &str) -> Result<(), JobError> {
        let mut sql = self.sql();
        let text = format!(
            "DELETE FROM jobs_leader WHERE name = {} AND leader_id = {}",
            sql.bind(role.to_owned()),
            sql.bind(holder.to_owned())
        );
        sql.push(&text);
        self.connection()
            .execute_raw(sql.build())
            .await
            .map_err(db_error)?;
        Ok(())
    }
}
