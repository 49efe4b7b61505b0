//! `jobs_core::transition` as SQL: the one decision every statement that ends a job
//! (finish, rescue, the sweep of unrunnable jobs) writes its new state with.

use jobs_core::{
    State,
    transition::{Ending, Guard, RULES},
};

use crate::sql::{Dialect, state_list};

/// How one statement ends jobs: `ending` is an SQL expression naming an `Ending`
/// (`Ending::as_str`: a column or a literal), `retry_at` the time a job would run again.
pub(crate) struct End<'a> {
    pub(crate) ending: &'a str,
    pub(crate) retry_at: &'a str,
}

impl End<'_> {
    /// The next state, `RULES` rendered as one CASE, first rule first. It reads the row
    /// as `jobs.`: in an UPDATE that is the row as locked, never a snapshot taken
    /// before the lock, so a cancel that commits while the statement waits is seen.
    pub(crate) fn next_state(&self) -> String {
        let arms: Vec<String> = RULES
            .iter()
            .map(|rule| {
                let guard = match rule.when {
                    Guard::Always => String::new(),
                    Guard::CancelRequested => " AND jobs.cancel_requested_at IS NOT NULL".into(),
                    Guard::CanRunAgain => format!(
                        " AND jobs.attempt < jobs.max_attempts \
                         AND (jobs.deadline IS NULL OR jobs.deadline > {})",
                        self.retry_at
                    ),
                };
                format!(
                    "WHEN {} IN ({}){guard} THEN '{}'",
                    self.ending,
                    ending_list(rule.endings),
                    rule.to
                )
            })
            .collect();
        format!("(CASE {} END)", arms.join(" "))
    }

    /// The SET columns every ending writes: the state, the attempt (given back by
    /// `Ending::UNCHARGED`), when a job back in pending runs, the lease gone, and the
    /// finish time and retention of a job that ended.
    pub(crate) fn set_columns(&self, d: Dialect) -> String {
        let next = self.next_state();
        format!(
            "state = {next}, \
             attempt = CASE WHEN {next} = '{pending}' AND {ending} IN ({uncharged}) \
               THEN jobs.attempt - 1 ELSE jobs.attempt END, \
             run_at = CASE WHEN {next} = '{pending}' THEN {retry_at} ELSE jobs.run_at END, \
             lease_expires_at = NULL, lease_token = NULL, \
             finished_at = CASE WHEN {next} = '{pending}' THEN NULL ELSE {now} END, \
             expires_at = CASE WHEN {next} = '{pending}' THEN NULL ELSE {expiry} END, \
             updated_at = {now}",
            pending = State::Pending,
            ending = self.ending,
            uncharged = ending_list(&Ending::UNCHARGED),
            retry_at = self.retry_at,
            now = d.now(),
            expiry = d.now_plus_ms("jobs.retention_ms"),
        )
    }
}

/// `'running'`: the states a row must be in for any of `endings` to apply.
pub(crate) fn sources(endings: &[Ending]) -> String {
    let mut states: Vec<State> = endings.iter().map(|e| e.source()).collect();
    states.sort();
    states.dedup();
    state_list(&states)
}

fn ending_list(endings: &[Ending]) -> String {
    let quoted: Vec<String> = endings
        .iter()
        .map(|e| format!("'{}'", e.as_str()))
        .collect();
    quoted.join(", ")
}
