//! Vacuums a job table when its dead row versions pass a threshold, so a queue stays
//! compact where autovacuum is off or lags behind its churn (each job leaves about three
//! dead versions: claimed, ended, deleted by retention). Led like the other maintenance:
//! one process at a time. A VACUUM of a large table can take a while; this service is a
//! task of its own, so it holds up no rescue, sweep or retention round, and a VACUUM
//! that outlives the leader's term is harmless (two never run on one table at once:
//! PostgreSQL makes the second wait).

use std::sync::Arc;

use async_trait::async_trait;
use jobs_core::TableHealth;

use super::{Periodic, maintenance::Term};
use crate::runtime::Backend;

/// When a table is worth vacuuming.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Threshold {
    /// Dead versions below this never trigger a vacuum (small tables are cheap to scan).
    pub(crate) min_dead_rows: u64,
    /// Nor do fewer than this share of the live rows (a vacuum reads the whole table).
    pub(crate) dead_fraction: f64,
}

impl Threshold {
    pub(crate) fn passed_by(&self, table: &TableHealth) -> bool {
        let relative = (table.live_rows as f64 * self.dead_fraction) as u64;
        table.dead_rows >= self.min_dead_rows.max(relative)
    }
}

/// A table vacuumed in a round, with the dead versions it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Vacuumed {
    pub(crate) table: String,
    pub(crate) dead_rows: u64,
}

pub(crate) struct Vacuumer {
    store: Backend,
    threshold: Threshold,
    term: Arc<Term>,
}

impl Vacuumer {
    pub(crate) fn new(store: Backend, threshold: Threshold, term: Arc<Term>) -> Self {
        Self {
            store,
            threshold,
            term,
        }
    }
}

#[async_trait]
impl Periodic for Vacuumer {
    /// The tables vacuumed; none unless this process leads.
    type Report = Vec<Vacuumed>;

    async fn tick(&mut self) -> Vec<Vacuumed> {
        if !self.term.holds() {
            return Vec::new();
        }
        let tables = match self.store.table_health().await {
            Ok(tables) => tables,
            Err(error) => {
                tracing::warn!(%error, "could not read the job tables' statistics");
                return Vec::new();
            }
        };
        let mut vacuumed = Vec::new();
        for table in tables.iter().filter(|t| self.threshold.passed_by(t)) {
            // Leadership is checked before each table: a VACUUM can take long.
            if !self.term.holds() {
                break;
            }
            let started = tokio::time::Instant::now();
            match self.store.vacuum_table(&table.table).await {
                Ok(()) => {
                    tracing::info!(
                        table = %table.table,
                        dead_rows = table.dead_rows,
                        live_rows = table.live_rows,
                        took_ms = started.elapsed().as_millis() as u64,
                        "vacuumed"
                    );
                    vacuumed.push(Vacuumed {
                        table: table.table.clone(),
                        dead_rows: table.dead_rows,
                    });
                }
                Err(error) => tracing::warn!(table = %table.table, %error, "vacuum failed"),
            }
        }
        vacuumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(live_rows: u64, dead_rows: u64) -> TableHealth {
        TableHealth {
            table: "jobs".into(),
            live_rows,
            dead_rows,
        }
    }

    #[test]
    fn the_threshold_is_the_larger_of_the_floor_and_the_share_of_live_rows() {
        let threshold = Threshold {
            min_dead_rows: 50_000,
            dead_fraction: 0.2,
        };
        assert!(!threshold.passed_by(&table(10, 49_999)));
        assert!(threshold.passed_by(&table(10, 50_000)));
        assert!(!threshold.passed_by(&table(1_000_000, 199_999)));
        assert!(threshold.passed_by(&table(1_000_000, 200_000)));
    }
}
