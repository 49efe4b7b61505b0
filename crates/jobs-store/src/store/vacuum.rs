//! The job tables' dead row versions, and vacuuming them. Every claim, outcome and
//! retention delete leaves a dead version of its row behind on PostgreSQL; autovacuum
//! clears them where it runs, and the worker's leader does (through these) where it is
//! off or lags. SQLite reuses the space of deleted rows itself: nothing to do there.

use jobs_core::{FieldError, JobError, TableHealth};
use sea_orm::{ConnectionTrait, Statement};

use super::{SeaOrmStore, db_error};

/// Our tables, in the schema the store works in (`jobs` and `jobs_*`; `_` is escaped,
/// so a `jobsfoo` of someone else's is not ours).
const HEALTH: &str = "SELECT relname::text AS name, n_live_tup AS live, n_dead_tup AS dead \
     FROM pg_stat_user_tables \
     WHERE schemaname = current_schema() AND (relname = 'jobs' OR relname LIKE 'jobs\\_%') \
     ORDER BY relname";

impl SeaOrmStore {
    pub(crate) async fn table_health(&self) -> Result<Vec<TableHealth>, JobError> {
        if !self.is_postgres() {
            return Ok(Vec::new());
        }
        let db = self.connection();
        let rows = db
            .query_all_raw(Statement::from_string(db.get_database_backend(), HEALTH))
            .await
            .map_err(db_error)?;
        let count = |row: &sea_orm::QueryResult, column| {
            row.try_get::<i64>("", column)
                .map(|n| n.max(0) as u64)
                .map_err(db_error)
        };
        rows.iter()
            .map(|row| {
                Ok(TableHealth {
                    table: row.try_get("", "name").map_err(db_error)?,
                    live_rows: count(row, "live")?,
                    dead_rows: count(row, "dead")?,
                })
            })
            .collect()
    }

    pub(crate) async fn vacuum_table(&self, table: &str) -> Result<(), JobError> {
        if !is_job_table(table) {
            return Err(JobError::Invalid(vec![FieldError::new(
                "table",
                "must be one of the job tables",
            )]));
        }
        if !self.is_postgres() {
            return Ok(());
        }
        // A statement of its own on a pooled connection in autocommit: VACUUM refuses to
        // run inside a transaction block. The name is checked above and quoted.
        self.connection()
            .execute_unprepared(&format!("VACUUM (ANALYZE) \"{table}\""))
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

/// `jobs` or `jobs_` and lowercase letters, digits and underscores: the names of our
/// migrations, and nothing that could need more than double quotes.
fn is_job_table(name: &str) -> bool {
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    chars_ok && (name == "jobs" || (name.starts_with("jobs_") && name.len() <= 63))
}

#[cfg(test)]
mod tests {
    use super::is_job_table;

    #[test]
    fn only_job_table_names_are_vacuumed() {
        for ok in ["jobs", "jobs_dependencies", "jobs_queue_starts"] {
            assert!(is_job_table(ok), "{ok}");
        }
        for refused in [
            "",
            "users",
            "jobsx",
            "jobs\"; DROP TABLE jobs; --",
            "Jobs",
            "jobs_a b",
        ] {
            assert!(!is_job_table(refused), "{refused}");
        }
    }
}
