//! Where a job goes when something ends it: an attempt's outcome, an expired lease, or a
//! sweep of pending jobs that can never run. The rule is one ordered table, `RULES`;
//! `next_state` reads it here and stores render the same table as SQL, so the decision
//! exists once and a store cannot drift from it.

use crate::State;

/// What ended a job's current stretch in one state, as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ending {
    Completed,
    Partial,
    /// A failed attempt that must not run again.
    Failed,
    /// A failed attempt that may run again after a delay; an expired lease ends an
    /// attempt this way, with no delay.
    Retry,
    /// The handler stopped after a cancel request.
    Cancelled,
    /// The worker gave the job back (shutdown).
    Released,
    /// The handler asked to run again later.
    Snoozed,
    /// A pending job that may never run: its deadline passed or a cancel was requested.
    Unrunnable,
}

impl Ending {
    /// The endings of an attempt: what a worker's outcome (or an expired lease) is.
    pub const OF_ATTEMPT: [Ending; 7] = [
        Ending::Completed,
        Ending::Partial,
        Ending::Failed,
        Ending::Retry,
        Ending::Cancelled,
        Ending::Released,
        Ending::Snoozed,
    ];

    pub fn all() -> impl Iterator<Item = Ending> {
        Self::OF_ATTEMPT.into_iter().chain([Ending::Unrunnable])
    }

    /// Endings that hand the attempt back: a job they return to pending has not spent it.
    pub const UNCHARGED: [Ending; 2] = [Ending::Released, Ending::Snoozed];

    /// The state a job is in when this ending applies; stores update only rows in it.
    pub fn source(self) -> State {
        match self {
            Ending::Unrunnable => State::Pending,
            _ => State::Running,
        }
    }

    /// The name stores use for this ending in their statements.
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Completed => "completed",
            Ending::Partial => "partial",
            Ending::Failed => "failed",
            Ending::Retry => "retry",
            Ending::Cancelled => "cancelled",
            Ending::Released => "released",
            Ending::Snoozed => "snoozed",
            Ending::Unrunnable => "unrunnable",
        }
    }
}

/// What the decision reads of the job itself, as it is when the ending is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Facts {
    /// Someone asked to cancel the job.
    pub cancel_requested: bool,
    /// `attempt < max_attempts`: another attempt may be charged.
    pub attempts_left: bool,
    /// The deadline is at or before the time the job would run again.
    pub deadline_passed: bool,
}

impl Facts {
    /// Every combination, for tests that walk the whole decision.
    pub fn all() -> impl Iterator<Item = Facts> {
        (0..8u8).map(|bits| Facts {
            cancel_requested: bits & 1 != 0,
            attempts_left: bits & 2 != 0,
            deadline_passed: bits & 4 != 0,
        })
    }
}

/// A condition of a rule on the job's `Facts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    Always,
    CancelRequested,
    /// Attempts are left and the deadline falls after the time it would run again.
    CanRunAgain,
}

impl Guard {
    pub fn holds(self, facts: Facts) -> bool {
        match self {
            Guard::Always => true,
            Guard::CancelRequested => facts.cancel_requested,
            Guard::CanRunAgain => facts.attempts_left && !facts.deadline_passed,
        }
    }
}

/// One line of the decision: for these endings, when the guard holds, go `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub endings: &'static [Ending],
    pub when: Guard,
    pub to: State,
}

/// The decision, first matching rule wins. A cancel request beats anything but work
/// that finished (completed or partial results are kept); released and snoozed jobs
/// go back whatever their attempts and deadline (a job past its deadline is then swept
/// as unrunnable); a retry runs again only with an attempt and time left.
pub const RULES: &[Rule] = {
    use Ending::*;
    &[
        Rule {
            endings: &[Failed, Retry, Released, Snoozed, Unrunnable],
            when: Guard::CancelRequested,
            to: State::Cancelled,
        },
        Rule {
            endings: &[Released, Snoozed],
            when: Guard::Always,
            to: State::Pending,
        },
        Rule {
            endings: &[Retry],
            when: Guard::CanRunAgain,
            to: State::Pending,
        },
        Rule {
            endings: &[Completed],
            when: Guard::Always,
            to: State::Completed,
        },
        Rule {
            endings: &[Partial],
            when: Guard::Always,
            to: State::Partial,
        },
        Rule {
            endings: &[Cancelled],
            when: Guard::Always,
            to: State::Cancelled,
        },
        Rule {
            endings: &[Failed, Retry, Unrunnable],
            when: Guard::Always,
            to: State::Failed,
        },
    ]
};

/// The state `ending` moves a job to, given what is true of the job.
pub fn next_state(ending: Ending, facts: Facts) -> State {
    RULES
        .iter()
        .find(|rule| rule.endings.contains(&ending) && rule.when.holds(facts))
        .map(|rule| rule.to)
        .expect("every ending has a rule that always holds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decided_move_is_one_the_machine_allows() {
        for ending in Ending::all() {
            for facts in Facts::all() {
                let to = next_state(ending, facts);
                assert!(
                    ending.source().can_move_to(to),
                    "{ending:?} with {facts:?} moves {} -> {to}, which the machine refuses",
                    ending.source()
                );
            }
        }
    }

    #[test]
    fn every_ending_ends_on_a_rule_that_always_holds() {
        // `next_state` may then never fall off the table, whatever the facts.
        for ending in Ending::all() {
            let last = RULES.iter().rev().find(|r| r.endings.contains(&ending));
            assert_eq!(last.map(|r| r.when), Some(Guard::Always), "{ending:?}");
        }
    }

    #[test]
    fn the_decision_as_users_rely_on_it() {
        use Ending::*;
        let cancel = Facts {
            cancel_requested: true,
            attempts_left: true,
            deadline_passed: false,
        };
        let fresh = Facts {
            cancel_requested: false,
            ..cancel
        };
        let spent = Facts {
            attempts_left: false,
            ..fresh
        };
        let late = Facts {
            deadline_passed: true,
            ..fresh
        };
        assert_eq!(next_state(Retry, fresh), State::Pending);
        assert_eq!(next_state(Retry, spent), State::Failed);
        assert_eq!(next_state(Retry, late), State::Failed);
        assert_eq!(next_state(Retry, cancel), State::Cancelled);
        assert_eq!(next_state(Failed, fresh), State::Failed);
        assert_eq!(next_state(Completed, cancel), State::Completed, "work kept");
        assert_eq!(next_state(Partial, cancel), State::Partial, "work kept");
        assert_eq!(next_state(Snoozed, spent), State::Pending, "never spends");
        assert_eq!(next_state(Snoozed, late), State::Pending);
        assert_eq!(next_state(Snoozed, cancel), State::Cancelled);
        assert_eq!(next_state(Released, spent), State::Pending);
        assert_eq!(next_state(Unrunnable, cancel), State::Cancelled);
        assert_eq!(next_state(Unrunnable, late), State::Failed);
    }

    #[test]
    fn names_are_distinct() {
        let names: std::collections::HashSet<&str> = Ending::all().map(|e| e.as_str()).collect();
        assert_eq!(names.len(), Ending::all().count());
    }
}
