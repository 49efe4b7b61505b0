//! Jobs: enqueue, get, list, cancel, retry.

use serde_json::{Map, Value, json};

use crate::{
    Ctx, Done,
    api::{Error, Reply},
    cli::{Enqueue, ListJobs},
    output::{self, emit, show, text},
    watch,
};

/// Seconds of each long-poll while waiting (the api's cap).
const WAIT_SECONDS: &str = "60";

pub async fn enqueue(ctx: &Ctx, args: Enqueue) -> Result<Done, Error> {
    let wait = args.wait;
    let query = [("wait", wait.then(|| WAIT_SECONDS.to_owned()))];
    let reply = ctx
        .api
        .post_with(&["v1", "jobs"], &query, &create_body(args))
        .await?;
    if !wait {
        show(ctx.json, &reply, created);
        return Ok(Done::Success);
    }
    let reply = until_ended(ctx, reply).await?;
    show(ctx.json, &reply, detail);
    Ok(outcome(&reply.value))
}

/// The body of `POST /v1/jobs`: the given fields only, the api's defaults for the rest.
fn create_body(args: Enqueue) -> Value {
    let mut body = Map::new();
    body.insert("kind".into(), args.kind.into());
    body.insert("args".into(), args.args);
    let optional = [
        ("queue", args.queue.map(Value::from)),
        ("priority", args.priority.map(Value::from)),
        ("run_at", args.run_at.map(Value::from)),
        ("delay_ms", args.delay_ms.map(Value::from)),
        ("max_attempts", args.max_attempts.map(Value::from)),
        ("unique_key", args.unique_key.map(Value::from)),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            body.insert(name.into(), value);
        }
    }
    Value::Object(body)
}

/// Long-polls the job until it has ended.
async fn until_ended(ctx: &Ctx, mut reply: Reply) -> Result<Reply, Error> {
    while !ended(&reply.value) {
        let id = text(&reply.value["id"]);
        let query = [("wait", Some(WAIT_SECONDS.to_owned()))];
        reply = ctx.api.get(&["v1", "jobs", &id], &query).await?;
    }
    Ok(reply)
}

pub fn ended(job: &Value) -> bool {
    matches!(
        job["state"].as_str(),
        Some("completed" | "partial" | "failed" | "cancelled")
    )
}

/// An ended job's exit: completed or partial is success.
pub fn outcome(job: &Value) -> Done {
    match job["state"].as_str() {
        Some("failed" | "cancelled") => Done::JobUnsuccessful,
        _ => Done::Success,
    }
}

pub async fn get(ctx: &Ctx, id: &str, follow: bool) -> Result<Done, Error> {
    if follow {
        let job = watch::follow(ctx, id).await?;
        return Ok(outcome(&job));
    }
    let reply = ctx.api.get(&["v1", "jobs", id], &[]).await?;
    show(ctx.json, &reply, detail);
    Ok(Done::Success)
}

pub async fn list(ctx: &Ctx, args: ListJobs) -> Result<Done, Error> {
    let query = [
        ("state", args.state),
        ("kind", args.kind),
        ("queue", args.queue),
        ("error_kind", args.error_kind),
        ("created_after", args.created_after),
        ("created_before", args.created_before),
        ("q", args.search),
        ("limit", args.limit.map(|n| n.to_string())),
        ("cursor", args.cursor),
    ];
    let reply = ctx.api.get(&["v1", "jobs"], &query).await?;
    show(ctx.json, &reply, |page| {
        let rows = page["items"].as_array().into_iter().flatten().map(row);
        emit(output::table(
            &[
                "ID", "KIND", "QUEUE", "STATE", "PROGRESS", "ATTEMPT", "CREATED",
            ],
            rows,
        ));
        output::next_page(page);
    });
    Ok(Done::Success)
}

fn row(job: &Value) -> Vec<String> {
    vec![
        text(&job["id"]),
        text(&job["kind"]),
        text(&job["queue"]),
        text(&job["state"]),
        format!("{}%", output::percent(&job["progress"])),
        attempts(job),
        text(&job["created_at"]),
    ]
}

pub async fn cancel(ctx: &Ctx, id: &str) -> Result<Done, Error> {
    let reply = ctx.api.delete(&["v1", "jobs", id]).await?;
    show(ctx.json, &reply, |job| match job["state"].as_str() {
        Some("cancelled") => emit(format!("job {} cancelled", text(&job["id"]))),
        _ => emit(format!(
            "job {}: cancel requested; it is {} until its worker stops",
            text(&job["id"]),
            text(&job["state"])
        )),
    });
    Ok(Done::Success)
}

pub async fn retry(ctx: &Ctx, id: &str) -> Result<Done, Error> {
    let reply = ctx.api.post(&["v1", "jobs", id, "retry"], None).await?;
    show(ctx.json, &reply, |job| {
        emit(format!(
            "job {} retried: {}",
            text(&job["id"]),
            text(&job["state"])
        ))
    });
    Ok(Done::Success)
}

/// The answer to an enqueue without `--wait`.
fn created(job: &Value) {
    let (id, state) = (text(&job["id"]), text(&job["state"]));
    match job["duplicate"].as_bool() {
        Some(true) => emit(format!(
            "job {id} already holds this unique key ({state}); nothing new was enqueued"
        )),
        _ => emit(format!(
            "enqueued job {id} ({state}, queue {})",
            text(&job["queue"])
        )),
    }
}

/// Everything about one job, then its error history.
pub fn detail(job: &Value) {
    let pairs = vec![
        ("id", text(&job["id"])),
        ("kind", text(&job["kind"])),
        ("queue", text(&job["queue"])),
        ("state", state(job)),
        ("progress", progress(job)),
        ("attempt", attempts(job)),
        ("priority", text(&job["priority"])),
        ("worker", text(&job["worker_id"])),
        ("trace id", text(&job["trace_id"])),
        ("unique key", text(&job["unique_key"])),
        ("workflow", workflow(job)),
        ("args", text(&job["args"])),
        ("result", text(&job["result"])),
        ("item errors", text(&job["item_errors"])),
        ("result url", text(&job["result_url"])),
        ("created", text(&job["created_at"])),
        ("run at", text(&job["run_at"])),
        ("started", text(&job["started_at"])),
        ("finished", text(&job["finished_at"])),
        ("duration", output::duration(&job["duration_ms"])),
        ("place in queue", text(&job["position_in_queue"])),
        ("estimated start", text(&job["estimated_start_at"])),
        ("estimated end", text(&job["estimated_completion_at"])),
    ];
    let shown = pairs
        .into_iter()
        .filter(|(_, value)| value != "-")
        .collect();
    emit(output::fields(shown));
    let errors = job["errors"].as_array().filter(|e| !e.is_empty());
    if let Some(errors) = errors {
        emit("");
        emit(output::table(
            &["ATTEMPT", "ERROR", "MESSAGE", "AT"],
            errors.iter().map(|e| {
                vec![
                    text(&e["attempt"]),
                    text(&e["kind"]),
                    text(&e["message"]),
                    text(&e["at"]),
                ]
            }),
        ));
    }
}

fn state(job: &Value) -> String {
    let mut state = text(&job["state"]);
    if job["scheduled"] == json!(true) {
        state.push_str(" (scheduled)");
    }
    if job["cancel_requested"] == json!(true) && !ended(job) {
        state.push_str(" (cancel requested)");
    }
    state
}

/// `40% slept 400 of 1000 ms`: the percentage and the stage, for the detail and the
/// lines of `get --watch`.
pub fn progress(job: &Value) -> String {
    let percent = output::percent(&job["progress"]);
    match job["stage"].as_str() {
        Some(stage) => format!("{percent}% {stage}"),
        None => format!("{percent}%"),
    }
}

fn attempts(job: &Value) -> String {
    format!("{}/{}", text(&job["attempt"]), text(&job["max_attempts"]))
}

fn workflow(job: &Value) -> String {
    match (job["workflow_id"].as_str(), job["workflow_step"].as_str()) {
        (Some(id), Some(step)) => format!("{id} (step {step})"),
        (Some(id), None) => id.to_owned(),
        _ => "-".to_owned(),
    }
}
