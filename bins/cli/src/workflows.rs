//! Workflows: graphs of named steps, each a job.

use serde_json::Value;

use crate::{
    Ctx, Done,
    api::Error,
    cli::{ListWorkflows, Workflows},
    output::{self, emit, show, text},
};

pub async fn run(ctx: &Ctx, command: Workflows) -> Result<Done, Error> {
    let api = &ctx.api;
    let reply = match command {
        Workflows::List(args) => {
            let reply = api.get(&["v1", "workflows"], &query(args)).await?;
            show(ctx.json, &reply, list);
            return Ok(Done::Success);
        }
        Workflows::Create(body) => api.post(&["v1", "workflows"], Some(&body.body)).await?,
        Workflows::Get { id } => api.get(&["v1", "workflows", &id], &[]).await?,
        Workflows::Cancel { id } => api.delete(&["v1", "workflows", &id]).await?,
        Workflows::Retry { id } => api.post(&["v1", "workflows", &id, "retry"], None).await?,
    };
    show(ctx.json, &reply, detail);
    Ok(Done::Success)
}

fn query(args: ListWorkflows) -> [(&'static str, Option<String>); 4] {
    [
        ("state", args.state),
        ("name", args.name),
        ("limit", args.limit.map(|n| n.to_string())),
        ("cursor", args.cursor),
    ]
}

fn list(page: &Value) {
    let rows = page["items"].as_array().into_iter().flatten().map(|w| {
        vec![
            text(&w["id"]),
            text(&w["name"]),
            text(&w["state"]),
            output::counts(&w["counts"]),
            text(&w["created_at"]),
        ]
    });
    emit(output::table(
        &["ID", "NAME", "STATE", "STEPS", "CREATED"],
        rows,
    ));
    output::next_page(page);
}

/// The workflow, then its steps in the order given.
fn detail(w: &Value) {
    emit(output::fields(vec![
        ("id", text(&w["id"])),
        ("name", text(&w["name"])),
        ("state", text(&w["state"])),
        ("steps", output::counts(&w["counts"])),
        ("created", text(&w["created_at"])),
        ("cancelled", text(&w["cancelled_at"])),
    ]));
    emit("");
    let steps = w["steps"].as_array().into_iter().flatten().map(|s| {
        let parents: Vec<String> = s["depends_on"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        vec![
            text(&s["name"]),
            text(&s["job_id"]),
            text(&s["state"]),
            parents.join(", "),
        ]
    });
    emit(output::table(
        &["STEP", "JOB", "STATE", "DEPENDS ON"],
        steps,
    ));
}
