//! Queues: the overview, pause and resume.

use serde_json::Value;

use crate::{
    Ctx, Done,
    api::Error,
    output::{self, emit, show, text},
};

const STATES: [&str; 7] = [
    "pending",
    "waiting",
    "running",
    "completed",
    "partial",
    "failed",
    "cancelled",
];

pub async fn list(ctx: &Ctx) -> Result<Done, Error> {
    let reply = ctx.api.get(&["v1", "queues"], &[]).await?;
    show(ctx.json, &reply, |all| {
        table(all["queues"].as_array().into_iter().flatten())
    });
    Ok(Done::Success)
}

/// Pauses (or resumes) the queue and shows it as it is now.
pub async fn set_paused(ctx: &Ctx, queue: &str, paused: bool) -> Result<Done, Error> {
    let action = if paused { "pause" } else { "resume" };
    let reply = ctx.api.post(&["v1", "queues", queue, action], None).await?;
    show(ctx.json, &reply, |view| table([view]));
    Ok(Done::Success)
}

fn table<'a>(queues: impl IntoIterator<Item = &'a Value>) {
    let states = STATES.map(str::to_uppercase);
    let mut header = vec!["QUEUE"];
    header.extend(states.iter().map(String::as_str));
    header.extend(["OLDEST PENDING", "PAUSED", "LIMITS"]);
    emit(output::table(&header, queues.into_iter().map(row)));
}

fn row(queue: &Value) -> Vec<String> {
    let mut row = vec![text(&queue["queue"])];
    row.extend(STATES.iter().map(|s| text(&queue["counts"][s])));
    row.push(output::duration(&queue["oldest_pending_age_ms"]));
    row.push(yes_no(&queue["paused"]));
    row.push(limits(queue));
    row
}

fn yes_no(flag: &Value) -> String {
    match flag.as_bool() {
        Some(true) => "yes".to_owned(),
        _ => "no".to_owned(),
    }
}

/// The tenant's limits, then those set for all tenants: `concurrency 5, rate 50/1s`.
fn limits(queue: &Value) -> String {
    let own = limit_list(&queue["limits"]);
    let all = limit_list(&queue["all_tenants_limits"]);
    match (own.is_empty(), all.is_empty()) {
        (true, true) => "-".to_owned(),
        (false, true) => own,
        (true, false) => format!("all tenants: {all}"),
        (false, false) => format!("{own}; all tenants: {all}"),
    }
}

fn limit_list(limits: &Value) -> String {
    let count = |name: &str| limits[name].as_i64().map(|n| format!("{name} {n}"));
    let rate = |name: &str| {
        let r = &limits[name];
        r["limit"]
            .as_i64()
            .map(|n| format!("{name} {n}/{}s", text(&r["period_seconds"])))
    };
    [
        count("concurrency"),
        count("key_concurrency"),
        rate("rate"),
        rate("key_rate"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ")
}
