//! Workflows and dependencies over HTTP, on SQLite and PostgreSQL: invalid workflows and
//! `depends_on` entries are 400s naming the field and create nothing; a child waits for
//! its parent and reads the parent's result in its claim; the failure policies; cancel
//! and retry of a workflow; a batch's callback; follow-ups of a remote completion.

mod common;

use common::{Api, assert_problem};
use jobs_http::ApiConfig;
use jobs_store::{backend_tests, testing::TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};

backend_tests!(
    invalid_workflows_are_400_naming_the_field_and_create_nothing,
    a_workflow_of_10000_steps_is_created,
    invalid_parents_of_a_job_are_400_naming_the_field,
    a_child_waits_for_its_parent_and_its_claim_carries_the_result,
    failure_policies_cancel_or_keep_waiting,
    a_cancelled_workflow_leaves_nothing_claimable,
    retry_brings_the_failed_steps_of_a_workflow_back,
    a_batch_callback_runs_once_every_job_ended_and_counts_them,
    follow_ups_exist_if_and_only_if_the_completion_is_stored,
);

/// The fields a 400 names, or why the answer is not a 400 problem of a client error.
fn named_fields(status: StatusCode, problem: &Value) -> Result<Vec<String>, String> {
    if status.is_server_error() {
        return Err(format!("a 5xx for a client error: {status} {problem}"));
    }
    if status != StatusCode::BAD_REQUEST {
        return Err(format!("{status}, not 400: {problem}"));
    }
    let kind = problem["type"].as_str().unwrap_or_default();
    if kind != "urn:jobs:problem:validation" && kind != "urn:jobs:problem:malformed-request" {
        return Err(format!("not a validation problem: {problem}"));
    }
    let errors = problem["errors"]
        .as_array()
        .ok_or_else(|| format!("no errors in {problem}"))?;
    Ok(errors
        .iter()
        .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
        .collect())
}

/// A 400 whose `errors` name these fields, in order; never a 5xx.
#[track_caller]
fn assert_fields(what: &str, status: StatusCode, problem: &Value, fields: &[&str]) {
    match named_fields(status, problem) {
        Ok(named) => assert_eq!(named, fields, "{what}: {problem}"),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Collects every wrong answer of a validation test, so one run reports them all.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    /// A 400 naming exactly `fields`, in order.
    fn fields(&mut self, what: &str, status: StatusCode, problem: &Value, fields: &[&str]) {
        match named_fields(status, problem) {
            Ok(named) if named == fields => {}
            Ok(named) => self.0.push(format!(
                "{what}: named {named:?}, expected {fields:?}: {problem}"
            )),
            Err(e) => self.0.push(format!("{what}: {e}")),
        }
    }

    /// A 400 whose first error names `field` or a field inside it (`field.requires`).
    fn within(&mut self, what: &str, status: StatusCode, problem: &Value, field: &str) {
        match named_fields(status, problem) {
            Ok(named)
                if named.first().is_some_and(|f| {
                    f == field
                        || f.starts_with(&format!("{field}."))
                        || f.starts_with(&format!("{field}["))
                }) => {}
            Ok(named) => self.0.push(format!(
                "{what}: named {named:?}, expected {field} (or a field in it): {problem}"
            )),
            Err(e) => self.0.push(format!("{what}: {e}")),
        }
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    #[track_caller]
    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} wrong answers:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

fn step(name: &str) -> Value {
    json!({"name": name, "kind": "k"})
}

fn step_after(name: &str, parents: Value) -> Value {
    json!({"name": name, "kind": "k", "depends_on": parents})
}

async fn job(api: &Api, id: &str) -> Value {
    let (status, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// Claims every due job of these kinds (all kinds when empty) for a remote worker.
async fn claim(api: &Api, kinds: &[&str]) -> Vec<Value> {
    let mut body = json!({"worker_id": "remote", "max_jobs": 100, "lease_seconds": 300});
    if !kinds.is_empty() {
        body["kinds"] = json!(kinds);
    }
    let (status, claimed) = api.post("/v1/claims", body).await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    claimed["jobs"].as_array().unwrap().clone()
}

/// Claims exactly the job `id` (the only due one of `kind`).
async fn claim_one(api: &Api, kind: &str, id: &str) -> Value {
    let claimed = claim(api, &[kind]).await;
    assert_eq!(claimed.len(), 1, "one {kind} job is due: {claimed:?}");
    assert_eq!(claimed[0]["id"], id, "{claimed:?}");
    claimed[0].clone()
}

async fn complete(api: &Api, claimed: &Value, body: Value) -> (StatusCode, Value) {
    let mut body = body;
    body["worker_id"] = json!("remote");
    body["lease_token"] = claimed["lease_token"].clone();
    let id = id_of(claimed);
    api.post(&format!("/v1/jobs/{id}/complete"), body).await
}

async fn completed(api: &Api, claimed: &Value, result: Value) {
    let (status, body) = complete(api, claimed, json!({"result": result})).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("completed")),
        "{body}"
    );
}

async fn failed_for_good(api: &Api, claimed: &Value) {
    let id = id_of(claimed);
    let body = json!({"worker_id": "remote", "lease_token": claimed["lease_token"],
        "error": {"kind": "broken", "message": "it broke"}, "retryable": false});
    let (status, body) = api.post(&format!("/v1/jobs/{id}/fail"), body).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("failed")),
        "{body}"
    );
}

async fn create_workflow(api: &Api, body: Value) -> Value {
    let (status, workflow) = api.post("/v1/workflows", body).await;
    assert_eq!(status, StatusCode::CREATED, "{workflow}");
    workflow
}

async fn workflow(api: &Api, id: &str) -> Value {
    let (status, workflow) = api.get(&format!("/v1/workflows/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{workflow}");
    workflow
}

/// Each step's state by name, in the order given.
fn step_states(workflow: &Value) -> Vec<(String, String)> {
    workflow["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("steps in {workflow}"))
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn states(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

fn step_job<'a>(workflow: &'a Value, name: &str) -> &'a str {
    workflow["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["job_id"].as_str())
        .unwrap_or_else(|| panic!("step {name} in {workflow}"))
}

async fn nothing_is_claimable(api: &Api, what: &str) {
    let claimed = claim(api, &[]).await;
    assert!(claimed.is_empty(), "{what}: claimed {claimed:?}");
}

async fn invalid_workflows_are_400_naming_the_field_and_create_nothing(db: TestDb) {
    // Room for 10,001 steps in one body, as the api binary allows by default.
    let config = ApiConfig {
        body_limit: 1 << 20,
        workers: Some(1),
        ..Default::default()
    };
    let api = Api::start_with(&db.store, config).await;
    let post = |body: Value| {
        let api = api.clone();
        async move { api.post("/v1/workflows", body).await }
    };
    let mut found = Findings::default();

    let (status, body) = post(json!({"steps": [
        step_after("a", json!(["c"])),
        step_after("b", json!(["a"])),
        step_after("c", json!(["b"])),
        step("d"),
    ]}))
    .await;
    match named_fields(status, &body) {
        Ok(named) => found.check(
            named.len() == 1
                && [
                    "steps[0].depends_on",
                    "steps[1].depends_on",
                    "steps[2].depends_on",
                ]
                .contains(&named[0].as_str()),
            || format!("a cycle names one step of it: {body}"),
        ),
        Err(e) => found.0.push(format!("a cycle: {e}")),
    }

    let (status, body) =
        post(json!({"steps": [step("a"), step_after("b", json!(["a", "nope"]))]})).await;
    found.fields(
        "an unknown step",
        status,
        &body,
        &["steps[1].depends_on[1]"],
    );
    found.check(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nope")),
        || format!("the unknown step is quoted: {body}"),
    );

    let (status, body) = post(json!({"steps": [step("a"), step("b"), step("a")]})).await;
    found.fields("a repeated step name", status, &body, &["steps[2].name"]);

    let (status, body) = post(json!({"steps": [step_after("a", json!(["a"]))]})).await;
    found.fields(
        "a step waiting for itself",
        status,
        &body,
        &["steps[0].depends_on[0]"],
    );

    let (status, body) =
        post(json!({"steps": [step("a"), step_after("b", json!(["a", "a"]))]})).await;
    found.fields(
        "a parent named twice",
        status,
        &body,
        &["steps[1].depends_on[1]"],
    );

    let many: Vec<Value> = (0..10_001).map(|i| step(&format!("s{i}"))).collect();
    let (status, body) = post(json!({"steps": many})).await;
    found.fields("10,001 steps", status, &body, &["steps"]);
    let (status, body) = post(json!({"steps": []})).await;
    found.fields("no steps", status, &body, &["steps"]);

    let (status, body) = post(json!({"steps": [
        step("a"),
        {"name": "b", "kind": "k", "priority": 99},
    ]}))
    .await;
    found.fields("priority 99", status, &body, &["steps[1].priority"]);

    // Every problem of every step in one answer.
    let (status, body) = post(json!({"steps": [
        {"name": "a", "kind": "k", "max_attempts": 0},
        {"name": "b", "kind": "k", "priority": 99, "depends_on": ["a", "zzz"]},
    ]}))
    .await;
    found.fields(
        "several problems",
        status,
        &body,
        &[
            "steps[0].max_attempts",
            "steps[1].depends_on[1]",
            "steps[1].priority",
        ],
    );

    // Entries that are neither a step name nor {"step", "requires"}.
    let some_id = uuid::Uuid::now_v7().to_string();
    for (what, entry) in [
        ("a number", json!(42)),
        ("null", json!(null)),
        ("a job id object in a workflow", json!({"id": some_id})),
        ("both a step and an id", json!({"step": "a", "id": some_id})),
        (
            "an unknown requirement",
            json!({"step": "a", "requires": "sometimes"}),
        ),
        ("an unknown key", json!({"step": "a", "when": "later"})),
        ("an empty object", json!({})),
    ] {
        let (status, body) =
            post(json!({"steps": [step("a"), step_after("b", json!([entry]))]})).await;
        found.within(
            &format!("depends_on entry {what}"),
            status,
            &body,
            "steps[1].depends_on[0]",
        );
    }
    let (status, body) = post(json!({"steps": [step("a"), step_after("b", json!("a"))]})).await;
    found.fields(
        "depends_on not a list",
        status,
        &body,
        &["steps[1].depends_on"],
    );
    let (status, body) = post(json!({"steps": [
        step("a"),
        {"name": "b", "kind": "k", "depends_on": ["a"], "on_parent_failure": "explode"},
    ]}))
    .await;
    found.fields(
        "an unknown failure policy",
        status,
        &body,
        &["steps[1].on_parent_failure"],
    );
    // A misspelt field is refused, not ignored: the step would run at once.
    let (status, body) = post(json!({"steps": [
        step("a"),
        {"name": "b", "kind": "k", "depend_on": ["a"]},
    ]}))
    .await;
    found.fields("a misspelt field", status, &body, &["steps[1].depend_on"]);
    let (status, body) = post(json!({"steps": [{"kind": "k"}]})).await;
    found.within("a step without a name", status, &body, "steps[0]");
    let (status, body) = post(json!({"steps": [step("a b")]})).await;
    found.fields(
        "a step name with a space",
        status,
        &body,
        &["steps[0].name"],
    );
    let (status, body) =
        post(json!({"steps": [{"name": "a", "kind": "k", "unique_key": "u"}]})).await;
    found.within("a unique step", status, &body, "steps[0]");

    let (status, listed) = api.get("/v1/workflows").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    found.check(listed["items"] == json!([]), || {
        format!("a workflow was created: {listed}")
    });
    let (_, jobs) = api.get("/v1/jobs").await;
    found.check(jobs["items"] == json!([]), || {
        format!("a job was created: {jobs}")
    });
    found.assert_none();
}

/// 10,000 steps are accepted (the limit is not lower), each one a job.
async fn a_workflow_of_10000_steps_is_created(db: TestDb) {
    let config = ApiConfig {
        body_limit: 1 << 20,
        workers: Some(1),
        ..Default::default()
    };
    let api = Api::start_with(&db.store, config).await;
    let mut steps: Vec<Value> = (0..9_999).map(|i| step(&format!("s{i}"))).collect();
    let all: Vec<String> = (0..9_999).map(|i| format!("s{i}")).collect();
    steps.push(step_after("last", json!(all)));
    let (status, body) = api
        .post("/v1/workflows", json!({"name": "big", "steps": steps}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["counts"],
        json!({"pending": 9_999, "waiting": 1}),
        "{body}"
    );
    assert_eq!(body["steps"].as_array().unwrap().len(), 10_000);
    let last = job(&api, step_job(&body, "last")).await;
    assert_eq!(
        (&last["parents"], &last["waiting_on"]),
        (&json!(9_999), &json!(9_999)),
        "{last}"
    );
}

async fn invalid_parents_of_a_job_are_400_naming_the_field(db: TestDb) {
    let acme = db.store.create_api_key("acme").await.unwrap().secret;
    let globex = db.store.create_api_key("globex").await.unwrap().secret;
    let api = Api::start(&db.store).await;
    let (a, b) = (api.as_key(&acme), api.as_key(&globex));
    let theirs = a.create(json!({"kind": "k"})).await;
    let mine = b.create(json!({"kind": "k"})).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let mut found = Findings::default();

    for (what, parents, field) in [
        ("an unknown id", json!([mine, unknown]), "depends_on[1]"),
        ("another tenant's job", json!([theirs]), "depends_on[0]"),
        (
            "another tenant's job as an object",
            json!([mine, {"id": theirs, "requires": "ended"}]),
            "depends_on[1]",
        ),
        ("not a UUID", json!(["nope"]), "depends_on[0]"),
        (
            "a step name object",
            json!([{"step": "a"}]),
            "depends_on[0]",
        ),
        (
            "the same parent twice",
            json!([mine, mine]),
            "depends_on[1]",
        ),
    ] {
        let (status, body) = b
            .post("/v1/jobs", json!({"kind": "k", "depends_on": parents}))
            .await;
        found.fields(what, status, &body, &[field]);
    }
    for (what, entry) in [
        ("a number", json!(42)),
        (
            "an unknown requirement",
            json!({"id": mine, "requires": "sometimes"}),
        ),
        ("an unknown key", json!({"id": mine, "when": "later"})),
    ] {
        let (status, body) = b
            .post("/v1/jobs", json!({"kind": "k", "depends_on": [entry]}))
            .await;
        found.within(what, status, &body, "depends_on[0]");
    }
    let (status, body) = b
        .post(
            "/v1/jobs",
            json!({"kind": "k", "depends_on": [mine], "on_parent_failure": "explode"}),
        )
        .await;
    found.fields("an unknown policy", status, &body, &["on_parent_failure"]);

    // In a batch, by item.
    let (status, body) = b
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "k"}, {"kind": "k", "depends_on": [theirs]}]}),
        )
        .await;
    found.fields("a batch item", status, &body, &["jobs[1].depends_on[0]"]);
    let (status, body) = b
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "k"}], "callback": {"kind": "k", "priority": 99}}),
        )
        .await;
    found.fields("a callback", status, &body, &["callback.priority"]);
    let (status, body) = b
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "k"}], "callback": {"kind": "k", "depends_on": [unknown]}}),
        )
        .await;
    found.fields(
        "a callback's own parent",
        status,
        &body,
        &["callback.depends_on[0]"],
    );

    let (_, listed) = b.get("/v1/jobs").await;
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    found.check(ids == [mine.as_str()], || {
        format!("something else was created: {listed}")
    });
    let (_, listed) = a.get("/v1/jobs").await;
    found.check(listed["items"].as_array().unwrap().len() == 1, || {
        format!("acme's jobs changed: {listed}")
    });
    found.assert_none();

    // One's own job is a parent.
    let (status, child) = b
        .post("/v1/jobs", json!({"kind": "k", "depends_on": [mine]}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{child}");
    assert_eq!(child["state"], "waiting", "{child}");
}

async fn a_child_waits_for_its_parent_and_its_claim_carries_the_result(db: TestDb) {
    let api = Api::start(&db.store).await;
    let parent = api
        .create(json!({"kind": "fetch", "args": {"url": "u"}}))
        .await;
    let (status, child) = api
        .post("/v1/jobs", json!({"kind": "parse", "depends_on": [parent]}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{child}");
    let child_id = id_of(&child);
    assert_eq!(
        (&child["state"], &child["parents"], &child["waiting_on"]),
        (&json!("waiting"), &json!(1), &json!(1)),
        "{child}"
    );
    assert_eq!(child["workflow_id"], Value::Null);
    assert_eq!(child["workflow_step"], Value::Null);

    // Only the parent is due; its claim has no parents to tell of.
    let claimed = claim(&api, &[]).await;
    assert_eq!(
        claimed.len(),
        1,
        "only the parent is claimable: {claimed:?}"
    );
    assert_eq!(claimed[0]["id"], parent.as_str());
    assert!(claimed[0].get("parent_results").is_none(), "{}", claimed[0]);
    let waiting = job(&api, &child_id).await;
    assert_eq!(
        (&waiting["state"], &waiting["waiting_on"]),
        (&json!("waiting"), &json!(1)),
        "still waiting while the parent runs: {waiting}"
    );
    assert!(claim(&api, &["parse"]).await.is_empty());

    completed(&api, &claimed[0], json!({"rows": 42})).await;
    let released = job(&api, &child_id).await;
    assert_eq!(
        (&released["state"], &released["waiting_on"]),
        (&json!("pending"), &json!(0)),
        "{released}"
    );
    let claimed = claim_one(&api, "parse", &child_id).await;
    assert_eq!(
        claimed["parent_results"],
        json!({
            "counts": {"completed": 1},
            "results": [{
                "id": parent,
                "step": null,
                "state": "completed",
                "requires": "completed",
                "result": {"rows": 42},
            }],
            "truncated": false,
        }),
        "{claimed}"
    );
    completed(&api, &claimed, json!("parsed")).await;

    // A child created after its parent completed is pending at once.
    let late = api
        .post("/v1/jobs", json!({"kind": "parse", "depends_on": [parent]}))
        .await
        .1;
    assert_eq!(
        (&late["state"], &late["waiting_on"]),
        (&json!("pending"), &json!(0)),
        "{late}"
    );

    // Steps of a workflow say so in their views and claims.
    let flow = create_workflow(
        &api,
        json!({"name": "etl", "steps": [
            {"name": "extract", "kind": "extract"},
            {"name": "load", "kind": "load", "depends_on": [{"step": "extract", "requires": "ended"}]},
        ]}),
    )
    .await;
    let flow_id = flow["id"].as_str().unwrap();
    assert_eq!(
        step_states(&flow),
        states(&[("extract", "pending"), ("load", "waiting")])
    );
    assert_eq!(flow["steps"][1]["depends_on"], json!(["extract"]));
    let load = job(&api, step_job(&flow, "load")).await;
    assert_eq!(
        (
            &load["workflow_id"],
            &load["workflow_step"],
            &load["waiting_on"]
        ),
        (&json!(flow_id), &json!("load"), &json!(1)),
        "{load}"
    );
    let extract_id = step_job(&flow, "extract").to_owned();
    let extract = claim_one(&api, "extract", &extract_id).await;
    completed(&api, &extract, json!([1, 2, 3])).await;
    let load = claim_one(&api, "load", step_job(&flow, "load")).await;
    assert_eq!(
        load["parent_results"]["results"],
        json!([{"id": extract_id, "step": "extract", "state": "completed",
            "requires": "ended", "result": [1, 2, 3]}]),
        "{load}"
    );
    completed(&api, &load, json!(null)).await;
    let done = workflow(&api, flow_id).await;
    assert_eq!(
        (&done["state"], &done["counts"]),
        (&json!("completed"), &json!({"completed": 2})),
        "{done}"
    );
    let (_, listed) = api.get("/v1/workflows?state=completed&name=etl").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["items"][0]["id"], flow_id);
    let (_, listed) = api.get("/v1/workflows?state=running").await;
    assert_eq!(listed["items"], json!([]), "{listed}");
}

async fn failure_policies_cancel_or_keep_waiting(db: TestDb) {
    let api = Api::start(&db.store).await;
    let parent = api.create(json!({"kind": "parent"})).await;
    let create_child = |policy: Option<&str>, requires: &str| {
        let mut body =
            json!({"kind": "child", "depends_on": [{"id": parent, "requires": requires}]});
        if let Some(policy) = policy {
            body["on_parent_failure"] = json!(policy);
        }
        let api = api.clone();
        async move { api.create(body).await }
    };
    let follows = create_child(None, "completed").await;
    let cancels = create_child(Some("cancel"), "completed").await;
    let waits = create_child(Some("wait"), "completed").await;
    let any_end = create_child(Some("cancel"), "ended").await;
    assert_eq!(job(&api, &follows).await["on_parent_failure"], "cancel");
    assert_eq!(job(&api, &waits).await["on_parent_failure"], "wait");

    let claimed = claim_one(&api, "parent", &parent).await;
    failed_for_good(&api, &claimed).await;

    for id in [&follows, &cancels] {
        let child = job(&api, id).await;
        assert_eq!(child["state"], "cancelled", "{child}");
        let error = child["errors"].as_array().unwrap().last().cloned();
        let error = error.unwrap_or_else(|| panic!("an error names the parent: {child}"));
        assert_eq!(error["kind"], "parent_failed", "{child}");
        assert!(
            error["message"].as_str().unwrap().contains(&parent),
            "the error names the parent: {child}"
        );
    }
    let waiting = job(&api, &waits).await;
    assert_eq!(
        (&waiting["state"], &waiting["waiting_on"]),
        (&json!("waiting"), &json!(1)),
        "{waiting}"
    );
    let released = job(&api, &any_end).await;
    assert_eq!(released["state"], "pending", "any end will do: {released}");
    let claimed = claim(&api, &["child"]).await;
    assert_eq!(
        claimed.len(),
        1,
        "only the child requiring any end: {claimed:?}"
    );
    assert_eq!(claimed[0]["id"], any_end.as_str());
    assert_eq!(
        claimed[0]["parent_results"]["counts"],
        json!({"failed": 1}),
        "{}",
        claimed[0]
    );
    assert_eq!(
        claimed[0]["parent_results"]["results"][0]["state"],
        "failed"
    );

    // The parent retried and completed: the child that waited runs; a cancelled one not.
    let (status, retried) = api
        .post(&format!("/v1/jobs/{parent}/retry"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    let claimed = claim_one(&api, "parent", &parent).await;
    assert!(
        claim(&api, &["child"]).await.is_empty(),
        "nothing runs while the parent runs again"
    );
    completed(&api, &claimed, json!("second time")).await;
    let claimed = claim_one(&api, "child", &waits).await;
    assert_eq!(
        claimed["parent_results"]["results"][0]["result"],
        "second time"
    );
    assert_eq!(job(&api, &follows).await["state"], "cancelled");
    assert_eq!(job(&api, &cancels).await["state"], "cancelled");
}

async fn a_cancelled_workflow_leaves_nothing_claimable(db: TestDb) {
    let api = Api::start(&db.store).await;
    let flow = create_workflow(
        &api,
        json!({"name": "chain", "steps": [
            step("a"),
            step_after("b", json!(["a"])),
            step_after("c", json!(["b"])),
            step_after("d", json!([{"step": "a", "requires": "ended"}])),
            {"name": "e", "kind": "k", "depends_on": ["a"], "on_parent_failure": "wait"},
        ]}),
    )
    .await;
    let id = flow["id"].as_str().unwrap();
    assert_eq!(flow["state"], "running");
    assert_eq!(
        flow["counts"],
        json!({"pending": 1, "waiting": 4}),
        "{flow}"
    );
    let a = claim_one(&api, "k", step_job(&flow, "a")).await;

    let (status, cancelled) = api.delete(&format!("/v1/workflows/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert!(cancelled["cancelled_at"].is_string(), "{cancelled}");
    assert_eq!(
        step_states(&cancelled),
        states(&[
            ("a", "running"),
            ("b", "cancelled"),
            ("c", "cancelled"),
            ("d", "cancelled"),
            ("e", "cancelled"),
        ])
    );
    let running = job(&api, step_job(&flow, "a")).await;
    assert_eq!(running["cancel_requested"], true, "{running}");
    nothing_is_claimable(&api, "after the cancel").await;

    // The running step's worker finishes anyway: nothing after it runs.
    completed(&api, &a, json!("done anyway")).await;
    nothing_is_claimable(&api, "after the running step completed").await;
    let after = workflow(&api, id).await;
    assert_eq!(after["state"], "cancelled", "{after}");
    for name in ["b", "c", "d", "e"] {
        assert_eq!(
            job(&api, step_job(&flow, name)).await["state"],
            "cancelled",
            "{name}"
        );
    }
    let (_, listed) = api.get("/v1/workflows?state=cancelled").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    assert!(listed["items"][0].get("steps").is_none(), "{listed}");

    // Cancelling again is harmless; an unknown workflow is a 404.
    let (status, again) = api.delete(&format!("/v1/workflows/{id}")).await;
    assert_eq!(
        (status, &again["state"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    nothing_is_claimable(&api, "after a second cancel").await;
    let unknown = uuid::Uuid::now_v7();
    let (status, body) = api.delete(&format!("/v1/workflows/{unknown}")).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    let (status, body) = api.get("/v1/workflows/not-an-id").await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
}

async fn retry_brings_the_failed_steps_of_a_workflow_back(db: TestDb) {
    let api = Api::start(&db.store).await;
    let flow = create_workflow(
        &api,
        json!({"steps": [
            {"name": "a", "kind": "a"},
            {"name": "b", "kind": "b", "depends_on": ["a"]},
            {"name": "c", "kind": "c", "depends_on": ["b"]},
            {"name": "side", "kind": "side"},
        ]}),
    )
    .await;
    let id = flow["id"].as_str().unwrap();
    let side = claim_one(&api, "side", step_job(&flow, "side")).await;
    completed(&api, &side, json!("side done")).await;
    let a = claim_one(&api, "a", step_job(&flow, "a")).await;
    failed_for_good(&api, &a).await;
    let failed = workflow(&api, id).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(
        step_states(&failed),
        states(&[
            ("a", "failed"),
            ("b", "cancelled"),
            ("c", "cancelled"),
            ("side", "completed"),
        ]),
        "the failure reached every step after it"
    );
    nothing_is_claimable(&api, "a failed workflow").await;

    let (status, retried) = api
        .post(&format!("/v1/workflows/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["state"], "running", "{retried}");
    assert_eq!(
        step_states(&retried),
        states(&[
            ("a", "pending"),
            ("b", "waiting"),
            ("c", "waiting"),
            ("side", "completed"),
        ])
    );
    // Only the first step is due; the completed one is not run again.
    let claimed = claim(&api, &[]).await;
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0]["id"], step_job(&flow, "a"));
    completed(&api, &claimed[0], json!(1)).await;
    let b = claim_one(&api, "b", step_job(&flow, "b")).await;
    assert!(claim(&api, &["c"]).await.is_empty());
    completed(&api, &b, json!(2)).await;
    let c = claim_one(&api, "c", step_job(&flow, "c")).await;
    completed(&api, &c, json!(3)).await;
    let done = workflow(&api, id).await;
    assert_eq!(
        (&done["state"], &done["counts"]),
        (&json!("completed"), &json!({"completed": 4})),
        "{done}"
    );
    let side = job(&api, step_job(&flow, "side")).await;
    assert_eq!(side["attempt"], 1, "the completed step ran once: {side}");
}

async fn a_batch_callback_runs_once_every_job_ended_and_counts_them(db: TestDb) {
    let api = Api::start(&db.store).await;
    let (status, batch) = api
        .post(
            "/v1/jobs/batch",
            json!({
                "jobs": [{"kind": "item", "args": {"i": 0}}, {"kind": "item", "args": {"i": 1}},
                         {"kind": "item", "args": {"i": 2}}],
                "callback": {"kind": "report", "args": {"to": "ops"}},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    let items: Vec<String> = batch["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(items.len(), 3);
    let callback = &batch["callback"];
    let report = id_of(callback);
    assert_eq!(
        (
            &callback["kind"],
            &callback["state"],
            &callback["parents"],
            &callback["waiting_on"]
        ),
        (&json!("report"), &json!("waiting"), &json!(3), &json!(3)),
        "{batch}"
    );

    let (status, _) = api.delete(&format!("/v1/jobs/{}", items[2])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        claim(&api, &["report"]).await.is_empty(),
        "two items have not ended"
    );
    let claimed = claim(&api, &["item"]).await;
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    let (first, second) = if claimed[0]["id"] == items[0].as_str() {
        (&claimed[0], &claimed[1])
    } else {
        (&claimed[1], &claimed[0])
    };
    completed(&api, first, json!("ok")).await;
    assert!(
        claim(&api, &["report"]).await.is_empty(),
        "one item runs still"
    );
    assert_eq!(job(&api, &report).await["waiting_on"], 1);
    failed_for_good(&api, second).await;

    let claimed = claim_one(&api, "report", &report).await;
    let parents = &claimed["parent_results"];
    assert_eq!(
        parents["counts"],
        json!({"cancelled": 1, "completed": 1, "failed": 1}),
        "{claimed}"
    );
    assert_eq!(parents["truncated"], false);
    let mut seen: Vec<(String, String, String)> = parents["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                id_of(p),
                p["state"].as_str().unwrap().to_owned(),
                p["requires"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (items[0].clone(), "completed".to_owned(), "ended".to_owned()),
        (items[1].clone(), "failed".to_owned(), "ended".to_owned()),
        (items[2].clone(), "cancelled".to_owned(), "ended".to_owned()),
    ];
    expected.sort();
    assert_eq!(seen, expected, "{claimed}");
    completed(&api, &claimed, json!("reported")).await;
    nothing_is_claimable(&api, "the callback ran once").await;
    let report = job(&api, &report).await;
    assert_eq!(
        (&report["state"], &report["attempt"]),
        (&json!("completed"), &json!(1))
    );
}

async fn follow_ups_exist_if_and_only_if_the_completion_is_stored(db: TestDb) {
    let api = Api::start(&db.store).await;
    let id = api.create(json!({"kind": "import"})).await;
    let claimed = claim_one(&api, "import", &id).await;

    let (status, body) = complete(
        &api,
        &claimed,
        json!({"result": "imported", "follow_ups": [
            {"kind": "index", "priority": 99},
            {"kind": "notify"},
        ]}),
    )
    .await;
    assert_fields(
        "an invalid follow-up",
        status,
        &body,
        &["follow_ups[0].priority"],
    );
    let running = job(&api, &id).await;
    assert_eq!(
        (&running["state"], &running["result"]),
        (&json!("running"), &Value::Null),
        "the completion was not stored: {running}"
    );
    let (_, listed) = api.get("/v1/jobs").await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "no follow-up was created: {listed}"
    );
    let too_many: Vec<Value> = (0..1_001).map(|_| json!({"kind": "x"})).collect();
    let (status, body) = complete(&api, &claimed, json!({"follow_ups": too_many})).await;
    assert_fields("1,001 follow-ups", status, &body, &["follow_ups"]);

    // A stale token: neither the completion nor its follow-ups.
    let mut stale = claimed.clone();
    stale["lease_token"] = json!(uuid::Uuid::new_v4());
    let (status, body) = complete(
        &api,
        &stale,
        json!({"result": "stale", "follow_ups": [{"kind": "index"}]}),
    )
    .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "lease-lost");
    let (_, listed) = api.get("/v1/jobs?kind=index").await;
    assert_eq!(listed["items"], json!([]), "{listed}");

    let (status, body) = complete(
        &api,
        &claimed,
        json!({"result": "imported", "follow_ups": [
            {"kind": "index", "args": {"of": id}, "queue": "search", "priority": 9},
            {"kind": "notify", "depends_on": [id], "metadata": {"why": "import"}},
        ]}),
    )
    .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("completed")),
        "{body}"
    );
    let (_, index) = api.get("/v1/jobs?kind=index").await;
    let index = index["items"].as_array().unwrap();
    assert_eq!(index.len(), 1, "{index:?}");
    assert_eq!(
        (
            &index[0]["args"],
            &index[0]["queue"],
            &index[0]["priority"],
            &index[0]["state"]
        ),
        (
            &json!({"of": id}),
            &json!("search"),
            &json!(9),
            &json!("pending")
        )
    );
    let (_, notify) = api.get("/v1/jobs?kind=notify").await;
    let notify = notify["items"].as_array().unwrap();
    assert_eq!(notify.len(), 1, "{notify:?}");
    assert_eq!(
        (&notify[0]["state"], &notify[0]["metadata"]),
        (&json!("pending"), &json!({"why": "import"})),
        "a follow-up depending on the job it follows is due at once: {notify:?}"
    );

    // Completing again (a retried request) creates nothing more.
    let (status, body) = complete(
        &api,
        &claimed,
        json!({"result": "imported", "follow_ups": [{"kind": "index"}]}),
    )
    .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "lease-lost");
    let (_, index) = api.get("/v1/jobs?kind=index").await;
    assert_eq!(index["items"].as_array().unwrap().len(), 1);
}
