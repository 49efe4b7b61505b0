//! Schedules: periodic jobs, one per cron slot.

use serde_json::Value;

use crate::{
    Ctx, Done,
    api::Error,
    cli::Schedules,
    output::{self, emit, show, text},
};

pub async fn run(ctx: &Ctx, command: Schedules) -> Result<Done, Error> {
    let api = &ctx.api;
    let reply = match command {
        Schedules::List => {
            let reply = api.get(&["v1", "schedules"], &[]).await?;
            show(ctx.json, &reply, list);
            return Ok(Done::Success);
        }
        Schedules::Delete { name } => {
            api.delete(&["v1", "schedules", &name]).await?;
            // 204: no document to print, even with --json.
            if !ctx.json {
                emit(format!("schedule {name} deleted"));
            }
            return Ok(Done::Success);
        }
        Schedules::Get { name } => api.get(&["v1", "schedules", &name], &[]).await?,
        Schedules::Create(body) => api.post(&["v1", "schedules"], Some(&body.body)).await?,
        Schedules::Pause { name } => api.post(&["v1", "schedules", &name, "pause"], None).await?,
        Schedules::Resume { name } => {
            api.post(&["v1", "schedules", &name, "resume"], None)
                .await?
        }
    };
    show(ctx.json, &reply, detail);
    Ok(Done::Success)
}

fn list(page: &Value) {
    let rows = page["items"].as_array().into_iter().flatten().map(|s| {
        vec![
            text(&s["name"]),
            text(&s["cron"]),
            text(&s["timezone"]),
            text(&s["job"]["kind"]),
            text(&s["job"]["queue"]),
            paused(s),
            text(&s["next_run_at"]),
            text(&s["last_run_at"]),
        ]
    });
    emit(output::table(
        &[
            "NAME", "CRON", "TIMEZONE", "KIND", "QUEUE", "PAUSED", "NEXT RUN", "LAST RUN",
        ],
        rows,
    ));
}

fn detail(s: &Value) {
    emit(output::fields(vec![
        ("name", text(&s["name"])),
        ("cron", text(&s["cron"])),
        ("timezone", text(&s["timezone"])),
        ("job", text(&s["job"])),
        ("catch up", text(&s["catch_up"])),
        ("paused", paused(s)),
        ("next run", text(&s["next_run_at"])),
        ("last run", text(&s["last_run_at"])),
        ("last job", text(&s["last_job_id"])),
        ("created", text(&s["created_at"])),
    ]));
}

fn paused(s: &Value) -> String {
    match s["paused_at"].as_str() {
        Some(at) => format!("since {at}"),
        None => "no".to_owned(),
    }
}
