//! The job state machine. Every legal move is listed in `State::can_move_to`; nothing
//! else in the system decides which moves are allowed. Which of them an ending takes is
//! decided in `transition`, whose every possible move is checked against this table.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::JobError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Running,
    Completed,
    Partial,
    Failed,
    Cancelled,
    /// Waiting for the jobs it depends on to end; the claim never sees it. The move
    /// that ends its last parent makes it pending (or, by its policy, cancels it).
    Waiting,
}

impl State {
    /// Waiting comes last: positions are stored (`UniqueStates` bits).
    pub const ALL: [State; 7] = [
        State::Pending,
        State::Running,
        State::Completed,
        State::Partial,
        State::Failed,
        State::Cancelled,
        State::Waiting,
    ];

    /// The states a job ends in; only an explicit retry moves it on.
    pub const ENDED: [State; 4] = [
        State::Completed,
        State::Partial,
        State::Failed,
        State::Cancelled,
    ];

    pub fn is_ended(self) -> bool {
        Self::ENDED.contains(&self)
    }

    /// Whether `self -> to` is a legal move.
    pub fn can_move_to(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Pending, Running | Cancelled | Failed)
                | (Running, Completed | Partial | Pending | Failed | Cancelled)
                | (Waiting, Pending | Cancelled)
                | (Completed | Partial | Failed | Cancelled, Pending | Waiting)
        )
    }

    /// `Ok(to)` when the move is legal, else the error that names the current state.
    pub fn move_to(self, to: State) -> Result<State, JobError> {
        if self.can_move_to(to) {
            Ok(to)
        } else {
            Err(JobError::IllegalTransition { from: self, to })
        }
    }

    /// Every state from which `to` can be reached, optionally leaving some out.
    /// Stores build their conditional updates from this, so SQL follows the machine.
    pub fn sources_of(to: State) -> Vec<State> {
        Self::ALL
            .into_iter()
            .filter(|from| from.can_move_to(to))
            .collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Completed => "completed",
            State::Partial => "partial",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Waiting => "waiting",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = JobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| JobError::Storage(format!("unknown job state {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    /// The whole table, written out independently of `can_move_to`.
    const LEGAL: [(State, State); 18] = [
        (Pending, Running),
        (Pending, Cancelled),
        (Pending, Failed),
        (Running, Completed),
        (Running, Partial),
        (Running, Pending),
        (Running, Failed),
        (Running, Cancelled),
        (Completed, Pending),
        (Partial, Pending),
        (Failed, Pending),
        (Cancelled, Pending),
        (Waiting, Pending),
        (Waiting, Cancelled),
        (Completed, Waiting),
        (Partial, Waiting),
        (Failed, Waiting),
        (Cancelled, Waiting),
    ];

    #[test]
    fn every_pair_is_legal_exactly_when_listed() {
        for from in State::ALL {
            for to in State::ALL {
                let expected = LEGAL.contains(&(from, to));
                match from.move_to(to) {
                    Ok(next) => {
                        assert!(expected, "{from} -> {to} must be refused");
                        assert_eq!(next, to);
                    }
                    Err(JobError::IllegalTransition { from: f, to: t }) => {
                        assert!(!expected, "{from} -> {to} must be allowed");
                        assert_eq!((f, t), (from, to), "the error names the current state");
                    }
                    Err(other) => panic!("unexpected error {other}"),
                }
            }
        }
    }

    #[test]
    fn ended_states_only_leave_by_retry() {
        for state in State::ENDED {
            assert_eq!(
                State::ALL
                    .iter()
                    .filter(|to| state.can_move_to(**to))
                    .count(),
                2,
                "back to pending, or to waiting when its parents have not all ended"
            );
        }
        assert_eq!(
            State::sources_of(Cancelled),
            vec![Pending, Running, Waiting]
        );
    }

    #[test]
    fn names_round_trip() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>().unwrap(), state);
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{state}\""));
        }
        assert!("done".parse::<State>().is_err());
    }
}
