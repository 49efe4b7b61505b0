//! Dependencies, workflows, follow-ups and batches with a callback: jobs wait for their
//! parents, are released by the transaction that ends the last one, follow each failure
//! policy, and see their parents' results.

use std::{collections::HashSet, sync::Arc};

use futures::future::join_all;
use jobs_core::{
    Finish, JobError, JobId, Lease, NewJob, OnParentFailure, Outcome, PageRequest, Requires, Retry,
    State, WorkerBackend, Workflow, WorkflowFilter, WorkflowState,
};
use serde_json::json;

use crate::{
    Harness,
    fixtures::{add, claim_req, job},
};

async fn state_of(s: &dyn WorkerBackend, id: JobId) -> State {
    s.get(None, id).await.unwrap().state
}

/// Claims every due job of the default queue and ends each with `outcome`.
async fn end_all(s: &dyn WorkerBackend, outcome: Outcome) -> Vec<JobId> {
    let claimed = s.claim(&claim_req("w", 1_000)).await.unwrap();
    let finishes = claimed
        .iter()
        .map(|j| Finish::new(Lease::of(j).unwrap(), outcome.clone()))
        .collect();
    for done in s.finish_many(finishes).await.unwrap() {
        done.unwrap();
    }
    claimed.iter().map(|j| j.id).collect()
}

fn completed(n: i64) -> Outcome {
    Outcome::Completed {
        result: json!({"n": n}),
    }
}

fn failed() -> Outcome {
    Outcome::Failed {
        kind: "boom".into(),
        message: "it broke".into(),
        retry: Retry::Never,
    }
}

pub async fn a_child_waits_until_its_last_parent_completes(h: &dyn Harness) {
    let s = h.backend();
    let (a, b) = (job("parent"), job("parent"));
    let child = job("child").after(a.id).after(b.id);
    let child_id = child.id;
    let made = s
        .enqueue_many(vec![a.clone(), b.clone(), child])
        .await
        .unwrap();
    assert_eq!(made[2].job.state, State::Waiting);
    assert_eq!((made[2].job.parents, made[2].job.waiting_on), (2, 2));

    let claimed = s.claim(&claim_req("w", 10)).await.unwrap();
    let ids: HashSet<JobId> = claimed.iter().map(|j| j.id).collect();
    assert_eq!(
        ids,
        HashSet::from([a.id, b.id]),
        "a waiting job is never claimed"
    );
    s.complete(&Lease::of(&claimed[0]).unwrap(), json!(1))
        .await
        .unwrap();
    assert_eq!(state_of(s, child_id).await, State::Waiting);
    assert!(s.claim(&claim_req("w", 10)).await.unwrap().is_empty());
    s.complete(&Lease::of(&claimed[1]).unwrap(), json!(2))
        .await
        .unwrap();
    let released = s.get(None, child_id).await.unwrap();
    assert_eq!((released.state, released.waiting_on), (State::Pending, 0));

    let run = s.claim(&claim_req("w", 10)).await.unwrap();
    assert_eq!(run.len(), 1);
    let parents = s.parent_results(&[child_id], 100).await.unwrap();
    let mut results: Vec<_> = parents[&child_id]
        .iter()
        .map(|p| p.result.clone())
        .collect();
    results.sort_by_key(|r| r.as_ref().map(|v| v.to_string()));
    assert_eq!(results, vec![Some(json!(1)), Some(json!(2))]);
    let counts = s.parent_counts(child_id).await.unwrap();
    assert_eq!(counts.get(&State::Completed), Some(&2));
}

pub async fn a_child_of_ended_parents_is_pending_at_once(h: &dyn Harness) {
    let s = h.backend();
    let parent = add(s, job("parent")).await;
    end_all(s, completed(1)).await;
    let child = s.enqueue(job("child").after(parent)).await.unwrap().job;
    assert_eq!(
        child.state,
        State::Pending,
        "the parent had completed already"
    );

    let failing = add(s, job("parent")).await;
    end_all(s, failed()).await;
    let doomed = s.enqueue(job("child2").after(failing)).await.unwrap().job;
    assert_eq!(
        doomed.state,
        State::Cancelled,
        "its parent had failed already"
    );
}

pub async fn unknown_or_foreign_parents_are_refused_naming_the_field(h: &dyn Harness) {
    let s = h.backend();
    let theirs = add(s, job("parent").tenant("other")).await;
    let missing = JobId::new();
    let refused = s
        .enqueue_many(vec![job("a"), job("b").after(theirs).after(missing)])
        .await;
    let Err(JobError::Invalid(fields)) = refused else {
        panic!("expected invalid, got {refused:?}");
    };
    let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(
        names,
        vec!["jobs[1].depends_on[0]", "jobs[1].depends_on[1]"]
    );
    assert_eq!(
        s.list(&Default::default(), &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        1,
        "nothing of the refused batch was written"
    );
}

pub async fn a_failed_parent_cancels_its_dependents_down_the_chain(h: &dyn Harness) {
    let s = h.backend();
    let root = job("root");
    let middle = job("middle").after(root.id);
    let leaf = job("leaf").after(middle.id);
    let patient = job("patient")
        .after(root.id)
        .on_parent_failure(OnParentFailure::Wait);
    let anyway = job("anyway").after_ended(root.id);
    let ids = [root.id, middle.id, leaf.id, patient.id, anyway.id];
    s.enqueue_many(vec![root, middle, leaf, patient, anyway])
        .await
        .unwrap();
    end_all(s, failed()).await;

    let middle = s.get(None, ids[1]).await.unwrap();
    assert_eq!(middle.state, State::Cancelled);
    let reason = middle.errors.last().unwrap();
    assert_eq!(reason.kind, jobs_core::dependency::PARENT_FAILED);
    assert!(
        reason.message.contains(&ids[0].to_string()),
        "{}",
        reason.message
    );
    assert_eq!(
        state_of(s, ids[2]).await,
        State::Cancelled,
        "the cancel cascades"
    );
    assert_eq!(
        state_of(s, ids[3]).await,
        State::Waiting,
        "kept for a retry"
    );
    assert_eq!(state_of(s, ids[4]).await, State::Pending, "ended is enough");

    // A manual retry of the parent that then completes releases the patient child.
    s.retry(None, ids[0]).await.unwrap();
    let ran = end_all(s, completed(7)).await;
    assert!(ran.contains(&ids[0]));
    assert_eq!(state_of(s, ids[3]).await, State::Pending);
}

pub async fn a_cancelled_parent_is_a_failure_to_its_dependents(h: &dyn Harness) {
    let s = h.backend();
    let parent = add(s, job("parent").delay(std::time::Duration::from_secs(3600))).await;
    let child = add(s, job("child").after(parent)).await;
    let after = add(s, job("after").after_ended(parent)).await;
    s.cancel(None, parent).await.unwrap();
    assert_eq!(state_of(s, child).await, State::Cancelled);
    assert_eq!(state_of(s, after).await, State::Pending);
    // Retrying the cancelled child alone: it waits again, since its parent did not complete.
    let retried = s.retry(None, child).await.unwrap();
    assert_eq!(retried.state, State::Waiting);
}

pub async fn racing_parents_release_their_child_exactly_once(h: &dyn Harness) {
    let s = h.backend();
    let other = h.connect_again().await;
    for round in 0..30 {
        let (a, b) = (job("parent"), job("parent"));
        let child = job("child").after(a.id).after(b.id);
        let child_id = child.id;
        s.enqueue_many(vec![a, b, child]).await.unwrap();
        let mut claimed = s.claim(&claim_req("w", 2)).await.unwrap();
        assert_eq!(claimed.len(), 2, "round {round}");
        let (first, second) = (claimed.remove(0), claimed.remove(0));
        let (one, two) = (Lease::of(&first).unwrap(), Lease::of(&second).unwrap());
        let (x, y) = tokio::join!(
            s.complete(&one, json!("a")),
            other.complete(&two, json!("b")),
        );
        x.unwrap();
        y.unwrap();
        let released = s.get(None, child_id).await.unwrap();
        assert_eq!(
            (released.state, released.waiting_on),
            (State::Pending, 0),
            "round {round}"
        );
        let runs = s.claim(&claim_req("w", 10)).await.unwrap();
        assert_eq!(runs.len(), 1, "round {round}: the child is claimable once");
        s.complete(&Lease::of(&runs[0]).unwrap(), json!(null))
            .await
            .unwrap();
    }
}

pub async fn follow_ups_exist_only_with_a_stored_completion(h: &dyn Harness) {
    let s = h.backend();
    let id = add(s, job("step")).await;
    let claimed = s.claim(&claim_req("w", 1)).await.unwrap();
    let lease = Lease::of(&claimed[0]).unwrap();
    let next = job("next").queue("later");
    let next_id = next.id;
    let done = Finish::new(lease, completed(1)).with_follow_ups(vec![next]);
    assert_eq!(
        s.finish_many(vec![done.clone()]).await.unwrap()[0]
            .as_ref()
            .unwrap(),
        &State::Completed
    );
    assert_eq!(state_of(s, next_id).await, State::Pending);
    // A stale lease stores nothing, and so enqueues nothing.
    let stale = Finish::new(lease, completed(2)).with_follow_ups(vec![job("again")]);
    let again = stale.follow_ups[0].id;
    assert!(matches!(
        s.finish_many(vec![stale]).await.unwrap()[0],
        Err(JobError::LeaseLost(_))
    ));
    assert!(matches!(
        s.get(None, again).await,
        Err(JobError::NotFound(_))
    ));
    // A failure drops them.
    add(s, job("step")).await;
    let claimed = s.claim(&claim_req("w", 1)).await.unwrap();
    let dropped = job("dropped");
    let dropped_id = dropped.id;
    let fail =
        Finish::new(Lease::of(&claimed[0]).unwrap(), failed()).with_follow_ups(vec![dropped]);
    s.finish_many(vec![fail]).await.unwrap();
    assert!(matches!(
        s.get(None, dropped_id).await,
        Err(JobError::NotFound(_))
    ));
    // An invalid follow-up is refused before anything is written.
    add(s, job("step")).await;
    let claimed = s.claim(&claim_req("w", 1)).await.unwrap();
    let bad = Finish::new(Lease::of(&claimed[0]).unwrap(), completed(3))
        .with_follow_ups(vec![job("ok"), job("bad").priority(99)]);
    let Err(JobError::Invalid(fields)) = s.finish_many(vec![bad]).await else {
        panic!("an invalid follow-up must be refused");
    };
    assert_eq!(fields[0].field, "items[0].follow_ups[1].priority");
    assert_eq!(state_of(s, claimed[0].id).await, State::Running);
    let _ = id;
}

pub async fn a_batch_callback_runs_once_all_ended_with_their_counts(h: &dyn Harness) {
    let s = h.backend();
    let members: Vec<NewJob> = (0..5).map(|_| job("member")).collect();
    let mut callback = job("callback");
    for member in &members {
        callback = callback.after_ended(member.id);
    }
    let callback_id = callback.id;
    let mut all = members;
    all.push(callback);
    s.enqueue_many(all).await.unwrap();
    let claimed = s.claim(&claim_req("w", 5)).await.unwrap();
    let finishes = claimed
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let outcome = if i < 3 { completed(i as i64) } else { failed() };
            Finish::new(Lease::of(j).unwrap(), outcome)
        })
        .collect();
    s.finish_many(finishes).await.unwrap();
    assert_eq!(state_of(s, callback_id).await, State::Pending);
    let counts = s.parent_counts(callback_id).await.unwrap();
    assert_eq!(counts.get(&State::Completed), Some(&3));
    assert_eq!(counts.get(&State::Failed), Some(&2));
}

fn diamond() -> Workflow {
    Workflow::new("diamond")
        .tenant("acme")
        .step("fetch", job("fetch"))
        .step("left", job("left"))
        .after(["fetch"])
        .step("right", job("right"))
        .after(["fetch"])
        .step("join", job("join"))
        .after(["left", "right"])
}

pub async fn a_workflow_runs_its_steps_in_order_of_the_graph(h: &dyn Harness) {
    let s = h.backend();
    let view = s.create_workflow(diamond()).await.unwrap();
    assert_eq!(view.state, WorkflowState::Running);
    let states: Vec<(&str, State)> = view
        .steps
        .iter()
        .map(|st| (st.name.as_str(), st.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("fetch", State::Pending),
            ("left", State::Waiting),
            ("right", State::Waiting),
            ("join", State::Waiting)
        ]
    );
    assert_eq!(view.steps[3].depends_on, vec!["left", "right"]);
    let mut order = Vec::new();
    loop {
        let claimed = s.claim(&claim_req("w", 10)).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        for j in &claimed {
            order.push(j.workflow_step.clone().unwrap());
            s.complete(&Lease::of(j).unwrap(), json!(j.kind))
                .await
                .unwrap();
        }
    }
    assert_eq!(order.first().map(String::as_str), Some("fetch"));
    assert_eq!(order.last().map(String::as_str), Some("join"));
    assert_eq!(order.len(), 4);
    let done = s.workflow(Some("acme"), view.id).await.unwrap();
    assert_eq!(done.state, WorkflowState::Completed);
    assert_eq!(done.counts.get(&State::Completed), Some(&4));
    assert!(matches!(
        s.workflow(Some("other"), view.id).await,
        Err(JobError::WorkflowNotFound(_))
    ));
    let listed = s
        .workflows(
            &WorkflowFilter {
                state: Some(WorkflowState::Completed),
                ..Default::default()
            },
            &PageRequest::first(10),
        )
        .await
        .unwrap();
    assert_eq!(
        listed.items.iter().map(|w| w.id).collect::<Vec<_>>(),
        vec![view.id]
    );
}

pub async fn a_cancelled_workflow_leaves_nothing_runnable(h: &dyn Harness) {
    let s = h.backend();
    let view = s.create_workflow(diamond()).await.unwrap();
    let fetch = s.claim(&claim_req("w", 10)).await.unwrap();
    assert_eq!(fetch.len(), 1);
    let cancelled = s.cancel_workflow(None, view.id).await.unwrap();
    assert_eq!(cancelled.state, WorkflowState::Cancelled);
    // The running step completes (its work finished); nothing it releases may run.
    s.complete(&Lease::of(&fetch[0]).unwrap(), json!(1))
        .await
        .unwrap();
    assert!(s.claim(&claim_req("w", 10)).await.unwrap().is_empty());
    let after = s.workflow(None, view.id).await.unwrap();
    assert_eq!(after.counts.get(&State::Cancelled), Some(&3));
    let listed = s
        .workflows(
            &WorkflowFilter {
                state: Some(WorkflowState::Cancelled),
                ..Default::default()
            },
            &PageRequest::first(10),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    // A retry runs the cancelled steps again, in the graph's order.
    let retried = s.retry_workflow(None, view.id).await.unwrap();
    assert_eq!(retried.state, WorkflowState::Running);
    let steps: Vec<State> = retried.steps.iter().map(|st| st.state).collect();
    assert_eq!(
        steps,
        vec![
            State::Completed,
            State::Pending,
            State::Pending,
            State::Waiting
        ]
    );
}

pub async fn a_failed_step_fails_the_workflow_until_retried(h: &dyn Harness) {
    let s = h.backend();
    let view = s.create_workflow(diamond()).await.unwrap();
    end_all(s, failed()).await;
    let failed_view = s.workflow(None, view.id).await.unwrap();
    assert_eq!(failed_view.state, WorkflowState::Failed);
    assert_eq!(failed_view.counts.get(&State::Cancelled), Some(&3));
    let retried = s.retry_workflow(None, view.id).await.unwrap();
    let steps: Vec<State> = retried.steps.iter().map(|st| st.state).collect();
    assert_eq!(
        steps,
        vec![
            State::Pending,
            State::Waiting,
            State::Waiting,
            State::Waiting
        ]
    );
    for _ in 0..3 {
        end_all(s, completed(1)).await;
    }
    assert_eq!(
        s.workflow(None, view.id).await.unwrap().state,
        WorkflowState::Completed
    );
}

pub async fn invalid_workflows_are_refused_naming_the_step(h: &dyn Harness) {
    let s = h.backend();
    let cyclic = Workflow::new("w")
        .step("a", job("a"))
        .after(["b"])
        .step("b", job("b"))
        .after(["a"]);
    let Err(JobError::Invalid(fields)) = s.create_workflow(cyclic).await else {
        panic!("a cycle must be refused");
    };
    assert!(fields[0].field.starts_with("steps["));
    let bad_job = Workflow::new("w").step("a", job("a").priority(50));
    let Err(JobError::Invalid(fields)) = s.create_workflow(bad_job).await else {
        panic!("an invalid step must be refused");
    };
    assert_eq!(fields[0].field, "steps[0].priority");
    assert_eq!(crate::fixtures::count(s).await, 0);
}

pub async fn a_wide_fan_out_and_in_runs_the_join_once(h: &dyn Harness) {
    let s = h.backend();
    let root = job("root");
    let fan: Vec<NewJob> = (0..200).map(|_| job("leaf").after(root.id)).collect();
    let mut join = job("join");
    for leaf in &fan {
        join = join.after(leaf.id);
    }
    let join_id = join.id;
    let mut all = vec![root];
    all.extend(fan);
    all.push(join);
    s.enqueue_many(all).await.unwrap();
    let other: Arc<dyn WorkerBackend> = h.connect_again().await;
    let mut joins = 0;
    loop {
        let (ra, rb) = (claim_req("a", 25), claim_req("b", 25));
        let (x, y) = tokio::join!(s.claim(&ra), other.claim(&rb));
        let mut claimed = x.unwrap();
        let theirs = y.unwrap();
        if claimed.is_empty() && theirs.is_empty() {
            break;
        }
        joins += claimed
            .iter()
            .chain(&theirs)
            .filter(|j| j.id == join_id)
            .count();
        let mine: Vec<Finish> = claimed
            .drain(..)
            .map(|j| Finish::new(Lease::of(&j).unwrap(), completed(1)))
            .collect();
        let others: Vec<Finish> = theirs
            .iter()
            .map(|j| Finish::new(Lease::of(j).unwrap(), completed(1)))
            .collect();
        let writes = join_all([s.finish_many(mine), other.finish_many(others)]).await;
        for write in writes {
            for done in write.unwrap() {
                done.unwrap();
            }
        }
    }
    assert_eq!(joins, 1);
    let parents = s.parent_results(&[join_id], 1_000).await.unwrap();
    assert_eq!(parents[&join_id].len(), 200);
    assert!(
        parents[&join_id]
            .iter()
            .all(|p| p.requires == Requires::Completed && p.state == Some(State::Completed))
    );
}
