//! Does the database's schema fit this binary? Versions are counts of migrations: the
//! binary's is the number it knows, the database's the number recorded as applied in
//! `seaql_migrations`. A newer schema (after a binary rollback) still fits when the
//! binary is at least the `oldest_compatible` version that `jobs_schema` records.
//!
//! Everything here only reads (the catalog, `seaql_migrations`, `jobs_schema`): unlike
//! sea-orm-migration's status call, it neither creates tables nor fails on migrations
//! it does not know.

use std::{
    collections::BTreeSet,
    fmt,
    future::Future,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use tokio_util::sync::CancellationToken;

pub use jobs_core::SCHEMA_RECHECK;

/// This binary's schema version: the number of migrations it knows.
pub fn binary_schema_version() -> usize {
    Migrator::migrations().len()
}

/// The names of the migrations this binary knows, oldest first.
pub fn known_migrations() -> Vec<String> {
    Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect()
}

/// How the database's schema relates to this binary's. `database` and `binary` are
/// schema versions (counts of migrations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    /// Exactly the migrations this binary knows are applied.
    Current { version: usize },
    /// More migrations are applied than this binary knows (`unknown`), but none that
    /// breaks it: `binary >= oldest_compatible`. It may run; it warns once.
    NewerCompatible {
        database: usize,
        binary: usize,
        oldest_compatible: usize,
        unknown: Vec<String>,
    },
    /// Migrations this binary knows and needs are not applied (`pending`).
    Older {
        database: usize,
        binary: usize,
        pending: Vec<String>,
    },
    /// The `jobs` table does not exist (a fresh database, or one rolled back to zero).
    JobsTableMissing { database: usize, binary: usize },
    /// Migrations this binary does not know are applied, and `jobs_schema` says binaries
    /// older than `oldest_compatible` must not run (`None`: it records nothing).
    NewerIncompatible {
        database: usize,
        binary: usize,
        oldest_compatible: Option<usize>,
        unknown: Vec<String>,
    },
    /// Both: migrations it does not know are applied and some it needs are not (the
    /// database was migrated by another line of releases).
    Diverged {
        database: usize,
        binary: usize,
        unknown: Vec<String>,
        pending: Vec<String>,
    },
    /// The database did not answer (or refused the catalog query).
    Unreachable { error: String },
}

impl SchemaStatus {
    /// Whether this binary may work on the schema.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Current { .. } | Self::NewerCompatible { .. })
    }

    /// Whether the schema itself forbids work: known not to fit, as opposed to ready or
    /// not known at all (unreachable).
    pub fn blocks_work(&self) -> bool {
        !self.is_ready() && !matches!(self, Self::Unreachable { .. })
    }

    /// The two ways a newer schema can be one this binary must not run on.
    fn fmt_incompatible(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NewerIncompatible {
                database,
                binary,
                oldest_compatible: Some(oldest),
                unknown,
            } => write!(
                f,
                "schema version {database} is newer than this binary ({binary}) and needs \
                 binaries of version >= {oldest} (unknown migrations: {})",
                unknown.join(", ")
            ),
            Self::NewerIncompatible {
                database,
                binary,
                oldest_compatible: None,
                unknown,
            } => write!(
                f,
                "schema version {database} is newer than this binary ({binary}) and records no \
                 compatible version (jobs_schema missing; unknown migrations: {})",
                unknown.join(", ")
            ),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for SchemaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Current { version } => write!(f, "schema version {version} is current"),
            Self::NewerCompatible {
                database,
                binary,
                oldest_compatible,
                unknown,
            } => write!(
                f,
                "schema version {database} is newer than this binary ({binary}) but still \
                 compatible with binaries of version >= {oldest_compatible} \
                 (unknown migrations: {})",
                unknown.join(", ")
            ),
            Self::Older {
                database,
                binary,
                pending,
            } => write!(
                f,
                "schema version {database}, this binary needs {binary}: run `jobs-api migrate up` \
                 (migrations not applied: {})",
                pending.join(", ")
            ),
            Self::JobsTableMissing { database, binary } => write!(
                f,
                "jobs table missing (schema version {database}, this binary needs {binary}): \
                 run `jobs-api migrate up` to apply the migrations"
            ),
            Self::NewerIncompatible { .. } => self.fmt_incompatible(f),
            Self::Diverged {
                database,
                binary,
                unknown,
                pending,
            } => write!(
                f,
                "schema version {database} does not match this binary ({binary}): applied \
                 migrations it does not know ({}) and lacks ones it needs ({})",
                unknown.join(", "),
                pending.join(", ")
            ),
            Self::Unreachable { error } => write!(f, "database unreachable: {error}"),
        }
    }
}

/// What the database records about its schema.
#[derive(Debug)]
pub(crate) struct DbSchema {
    /// Names in `seaql_migrations`, oldest first (empty when the table is absent).
    pub(crate) applied: Vec<String>,
    pub(crate) has_jobs: bool,
    /// `jobs_schema.oldest_compatible`, when the table exists.
    pub(crate) oldest_compatible: Option<usize>,
}

impl DbSchema {
    /// Applied migrations this binary does not know.
    pub(crate) fn unknown(&self, known: &[String]) -> Vec<String> {
        let known: BTreeSet<&str> = known.iter().map(String::as_str).collect();
        self.applied
            .iter()
            .filter(|name| !known.contains(name.as_str()))
            .cloned()
            .collect()
    }

    /// Known migrations that are not applied.
    pub(crate) fn pending(&self, known: &[String]) -> Vec<String> {
        let applied: BTreeSet<&str> = self.applied.iter().map(String::as_str).collect();
        known
            .iter()
            .filter(|name| !applied.contains(name.as_str()))
            .cloned()
            .collect()
    }
}

async fn rows(db: &impl ConnectionTrait, sql: &str) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
}

/// Reads the migration records with plain queries, creating nothing.
pub(crate) async fn read_schema(db: &impl ConnectionTrait) -> Result<DbSchema, DbErr> {
    let tables = match db.get_database_backend() {
        DbBackend::Postgres => {
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() \
             AND table_name IN ('seaql_migrations', 'jobs', 'jobs_schema')"
        }
        _ => {
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name IN ('seaql_migrations', 'jobs', 'jobs_schema')"
        }
    };
    let mut present = BTreeSet::new();
    for row in rows(db, tables).await? {
        present.insert(row.try_get::<String>("", "name")?);
    }
    let mut applied = Vec::new();
    if present.contains("seaql_migrations") {
        for row in rows(db, "SELECT version FROM seaql_migrations ORDER BY version").await? {
            applied.push(row.try_get::<String>("", "version")?);
        }
    }
    let mut oldest_compatible = None;
    if present.contains("jobs_schema") {
        let found = rows(db, "SELECT oldest_compatible FROM jobs_schema").await?;
        if let Some(row) = found.first() {
            let value: i32 = row.try_get("", "oldest_compatible")?;
            oldest_compatible = usize::try_from(value).ok();
        }
    }
    Ok(DbSchema {
        applied,
        has_jobs: present.contains("jobs"),
        oldest_compatible,
    })
}

/// Classifies the database's schema for this binary; see [`SchemaStatus`]. Reads only.
/// The first time it finds a newer but compatible schema it logs a warning.
pub async fn schema_check(db: &DatabaseConnection) -> SchemaStatus {
    let found = match read_schema(db).await {
        Ok(found) => found,
        Err(error) => {
            return SchemaStatus::Unreachable {
                error: error.to_string(),
            };
        }
    };
    let status = classify(&found, &known_migrations());
    if let SchemaStatus::NewerCompatible { .. } = &status {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!("{status}; running on it (see docs/OPERATIONS.md)");
        }
    }
    status
}

fn classify(found: &DbSchema, known: &[String]) -> SchemaStatus {
    let database = found.applied.len();
    let binary = known.len();
    let unknown = found.unknown(known);
    let pending = found.pending(known);
    if !unknown.is_empty() && !pending.is_empty() {
        return SchemaStatus::Diverged {
            database,
            binary,
            unknown,
            pending,
        };
    }
    if !unknown.is_empty() {
        return match found.oldest_compatible {
            Some(oldest) if binary >= oldest && found.has_jobs => SchemaStatus::NewerCompatible {
                database,
                binary,
                oldest_compatible: oldest,
                unknown,
            },
            Some(oldest) if binary >= oldest => SchemaStatus::JobsTableMissing { database, binary },
            oldest_compatible => SchemaStatus::NewerIncompatible {
                database,
                binary,
                oldest_compatible,
                unknown,
            },
        };
    }
    if !found.has_jobs {
        SchemaStatus::JobsTableMissing { database, binary }
    } else if !pending.is_empty() {
        SchemaStatus::Older {
            database,
            binary,
            pending,
        }
    } else {
        SchemaStatus::Current { version: binary }
    }
}

/// Waits until the schema fits this binary, checking every `recheck`, and returns the
/// fitting status. Logs an error naming the versions whenever the reason changes.
pub async fn wait_for_schema(db: &DatabaseConnection, recheck: Duration) -> SchemaStatus {
    let mut last = String::new();
    loop {
        let status = schema_check(db).await;
        if status.is_ready() {
            if !last.is_empty() {
                tracing::info!("{status}: starting work");
            }
            return status;
        }
        let reason = status.to_string();
        if reason != last {
            tracing::error!(
                "not working on this database: {reason}; checking again every {}s",
                recheck.as_secs_f64()
            );
            last = reason;
        }
        tokio::time::sleep(recheck).await;
    }
}

/// Runs `work` only while the schema fits this binary. Waits until it fits, then starts
/// `work` with a stop token (a child of `shutdown`) and re-checks every `recheck`; when
/// the schema stops fitting (a migration that breaks this binary, or a rollback of one it
/// needs) it cancels that token, lets `work` return, and waits again. An unreachable
/// database stops nothing: the work's own queries fail and retry. Returns when `shutdown`
/// is cancelled, when `work` returns an error, or when it returns by itself.
pub async fn run_while_schema_fits<E, F, Fut>(
    db: &DatabaseConnection,
    recheck: Duration,
    shutdown: &CancellationToken,
    mut work: F,
) -> Result<(), E>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = wait_for_schema(db, recheck) => {}
        }
        let stop = shutdown.child_token();
        let run = work(stop.clone());
        tokio::pin!(run);
        let watch = async {
            loop {
                tokio::time::sleep(recheck).await;
                let status = schema_check(db).await;
                if status.blocks_work() {
                    tracing::error!(
                        "the schema no longer fits this binary: {status}; stopping work"
                    );
                    stop.cancel();
                    return;
                }
            }
        };
        let result = tokio::select! {
            result = &mut run => result,
            () = watch => run.await,
        };
        result?;
        if shutdown.is_cancelled() || !stop.is_cancelled() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn found(applied: &[&str], has_jobs: bool, oldest: Option<usize>) -> DbSchema {
        DbSchema {
            applied: names(applied),
            has_jobs,
            oldest_compatible: oldest,
        }
    }

    #[test]
    fn classifies_every_case() {
        let known = names(&["m1", "m2", "m3"]);
        let check = |f: DbSchema| classify(&f, &known);
        assert_eq!(
            check(found(&["m1", "m2", "m3"], true, Some(1))),
            SchemaStatus::Current { version: 3 }
        );
        assert_eq!(
            check(found(&[], false, None)),
            SchemaStatus::JobsTableMissing {
                database: 0,
                binary: 3
            }
        );
        assert_eq!(
            check(found(&["m1", "m2"], true, None)),
            SchemaStatus::Older {
                database: 2,
                binary: 3,
                pending: names(&["m3"])
            }
        );
        assert!(check(found(&["m1", "m2", "m3", "m4"], true, Some(3))).is_ready());
        assert_eq!(
            check(found(&["m1", "m2", "m3", "m4"], true, Some(4))),
            SchemaStatus::NewerIncompatible {
                database: 4,
                binary: 3,
                oldest_compatible: Some(4),
                unknown: names(&["m4"])
            }
        );
        assert!(!check(found(&["m1", "m2", "m3", "m4"], true, None)).is_ready());
        assert!(matches!(
            check(found(&["m1", "m2", "x"], true, Some(1))),
            SchemaStatus::Diverged { .. }
        ));
        let unreachable = SchemaStatus::Unreachable { error: "e".into() };
        assert!(!unreachable.is_ready() && !unreachable.blocks_work());
    }

    #[test]
    fn messages_name_both_versions() {
        let older = SchemaStatus::Older {
            database: 3,
            binary: 5,
            pending: names(&["m4", "m5"]),
        };
        assert!(
            older
                .to_string()
                .starts_with("schema version 3, this binary needs 5: run `jobs-api migrate up`"),
            "{older}"
        );
        let newer = SchemaStatus::NewerIncompatible {
            database: 7,
            binary: 5,
            oldest_compatible: Some(6),
            unknown: names(&["m6", "m7"]),
        };
        assert!(
            newer.to_string().starts_with(
                "schema version 7 is newer than this binary (5) and needs binaries of version >= 6"
            ),
            "{newer}"
        );
    }
}
