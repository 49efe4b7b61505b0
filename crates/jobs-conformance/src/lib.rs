//! One conformance suite for every backend of the job system, written once against the
//! jobs-core ports (`JobStore`, `Notifier`, `Leadership`) as River's `riverdrivertest`
//! is: a backend's own test crate implements [`Harness`] for its test databases and
//! instantiates every test with [`conformance_tests!`].
//!
//! What needs a backend's SQL or connections (raw rows, migrations, transactions, API
//! keys) stays in that backend's own tests.

use std::sync::Arc;

use async_trait::async_trait;
use jobs_core::{ApiBackend, WorkerBackend};

#[doc(hidden)]
pub mod bulk;
mod files;
pub mod fixtures;
mod limits;
mod schedules;
// Public only because `conformance_tests!` calls it from the backend's crate.
#[doc(hidden)]
pub mod queues;
#[doc(hidden)]
pub mod suite;
mod unique;
mod webhooks;
mod workflows;

/// One fresh, migrated, empty database per test, and the ways a test reaches it.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The backend under test, with every port (an `ApiBackend` is a `WorkerBackend`).
    fn backend(&self) -> &dyn ApiBackend;

    /// A second backend on the same database with its own connections, as another
    /// process would have: for races between processes, and leadership.
    async fn connect_again(&self) -> Arc<dyn WorkerBackend>;

    /// Whether an enqueue wakes subscribers of other processes too (PostgreSQL's
    /// LISTEN); every backend wakes its own process's.
    fn wakes_other_processes(&self) -> bool;
}

/// Instantiates every test of the suite in the invoking module, as
/// `#[tokio::test] async fn name()` running the body on the harness that the expression
/// after `harness:` (which may `.await`) makes afresh for each test. Attributes given
/// first go on every test, e.g. an `ignore` for a backend that is not configured; they
/// are evaluated in the invoking crate, so its own `cfg`s apply:
///
/// ```ignore
/// mod sqlite {
///     jobs_conformance::conformance_tests!(harness: super::Db::sqlite().await);
/// }
/// mod postgres {
///     jobs_conformance::conformance_tests!(
///         #[cfg_attr(not(have_postgres), ignore = "no PostgreSQL configured")]
///         harness: super::Db::postgres().await
///     );
/// }
/// ```
///
/// The invoking crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_tests {
    ($(#[$attr:meta])* harness: $harness:expr) => {
        $crate::__each_test!([$(#[$attr])*] $harness;
            enqueue_and_get_round_trip,
            enqueue_many_ten_thousand_in_one_call,
            enqueue_many_returns_the_rows_as_stored,
            enqueue_many_is_all_or_nothing,
            list_filters_newest_first_with_offset_and_cursor,
            a_listing_of_mixed_states_pages_newest_first,
            claim_takes_highest_priority_then_oldest,
            claim_skips_future_jobs_and_other_queues_and_kinds,
            claim_race_gives_every_job_to_exactly_one_worker,
            heartbeat_renews_reports_cancels_and_lost_jobs,
            heartbeats_and_outcomes_of_many_jobs_do_not_deadlock,
            progress_only_by_the_lease_holder,
            complete_partial_and_permanent_failure,
            lease_lost_after_rescue_leaves_second_result_standing,
            rescue_fails_exhausted_cancels_requested_and_past_deadline,
            retention_deletes_only_expired_ended_jobs_in_batches,
            cancel_in_each_state,
            retry_runs_an_ended_job_again,
            idempotent_enqueue_under_a_race,
            release_returns_job_without_charging_an_attempt,
            one_process_at_a_time_leads_maintenance,
            enqueue_wakes_subscribers,
            queue_stats_count_states_and_oldest_wait,
            claims_can_be_limited_to_a_tenant,
            json_of_every_shape_round_trips,
            snooze_defers_without_spending_an_attempt,
            get_many_and_cancel_requests_answer_for_many_at_once,
            end_unrunnable_fails_pending_jobs_past_their_deadline,
            watchers_hear_changes_to_their_job,
            a_paused_queue_is_not_claimed_until_resumed,
            a_pause_for_every_tenant_outlasts_a_tenant_resume,
            queue_stats_show_paused_queues_even_without_jobs,
            pausing_refuses_names_no_job_could_have,
            resume_wakes_idle_workers,
            limits_are_stored_per_scope_and_validated,
            global_concurrency_caps_running_jobs_of_every_tenant,
            a_tenants_concurrency_counts_its_own_jobs_only,
            key_concurrency_runs_one_job_per_key_at_a_time,
            a_rate_limits_starts_in_any_window_of_its_period,
            a_key_rate_limits_each_keys_starts,
            racing_claimers_never_pass_a_limit,
            a_limit_holds_at_once_in_a_process_that_has_not_heard_of_it,
            claims_take_turns_between_tenants,
            queue_stats_show_limits_and_throttled_jobs,
            unique_key_blocks_among_its_states_only,
            unique_by_args_and_key_with_args,
            unique_by_kind_and_within_a_period,
            on_conflict_replace_changes_a_pending_holder_only,
            a_batch_dedupes_within_itself_replace_included,
            retry_refuses_a_key_held_by_another_job,
            racing_inserts_by_key_make_one_job,
            racing_inserts_by_args_make_one_job,
            racing_inserts_by_kind_make_one_job,
            racing_inserts_in_a_period_make_one_job,
            racing_inserts_among_all_states_make_one_job,
            racing_inserts_with_replace_make_one_job,
            bulk_retry_selects_by_each_filter_field,
            bulk_cancel_and_delete_follow_their_states,
            bulk_refuses_an_empty_filter_and_stays_in_its_tenant,
            bulk_retry_of_ten_thousand_while_workers_drain,
            schedules_are_created_listed_paused_and_deleted_per_tenant,
            invalid_schedules_are_refused_naming_the_field,
            each_slot_enqueues_one_job_due_at_the_slot,
            concurrent_ticks_enqueue_each_slot_exactly_once,
            missed_slots_follow_the_catch_up_policy,
            catching_up_all_keeps_the_most_recent_slots,
            paused_schedules_enqueue_nothing_and_resume_from_now,
            upsert_from_code_keeps_the_next_slot_of_an_unchanged_cron,
            a_child_waits_until_its_last_parent_completes,
            a_child_of_ended_parents_is_pending_at_once,
            unknown_or_foreign_parents_are_refused_naming_the_field,
            a_failed_parent_cancels_its_dependents_down_the_chain,
            a_cancelled_parent_is_a_failure_to_its_dependents,
            racing_parents_release_their_child_exactly_once,
            follow_ups_exist_only_with_a_stored_completion,
            a_batch_callback_runs_once_all_ended_with_their_counts,
            a_workflow_runs_its_steps_in_order_of_the_graph,
            a_cancelled_workflow_leaves_nothing_runnable,
            a_failed_step_fails_the_workflow_until_retried,
            invalid_workflows_are_refused_naming_the_step,
            a_wide_fan_out_and_in_runs_the_join_once,
            files_are_recorded_only_for_their_owner,
            a_job_is_created_with_its_staged_files_all_or_none,
            files_of_deleted_jobs_and_stale_staged_files_are_orphans,
            webhooks_are_created_listed_and_deleted_per_tenant,
            each_subscribed_transition_writes_one_delivery,
        );
    };
}

/// Every test of the suite, by name: the one list of them. `conformance_tests!` is the
/// only caller; `$attrs` is one bracketed group so that it can go on every test.
#[doc(hidden)]
#[macro_export]
macro_rules! __each_test {
    ($attrs:tt $harness:expr; $($name:ident),* $(,)?) => {
        $( $crate::__one_test!($attrs $harness; $name); )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __one_test {
    ([$($attr:tt)*] $harness:expr; $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $name() {
            let harness = $harness;
            $crate::suite::$name(&harness).await;
        }
    };
}
