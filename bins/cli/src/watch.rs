//! `get --watch`: follows `GET /v1/jobs/{id}/events` (Server-Sent Events, one `job`
//! event, a job view, per change) until the job ends. On a terminal a live progress bar
//! with the stage; otherwise one line per change (`running  40% slept 400 of 1000 ms`);
//! with `--json` each event's data as one JSON line.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Response;
use serde_json::Value;

use crate::{
    Ctx,
    api::Error,
    jobs,
    output::{emit, text},
};

const REOPEN_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Follows the job until it ends; returns it as it ended.
pub async fn follow(ctx: &Ctx, id: &str) -> Result<Value, Error> {
    let display = Display::new(ctx.json);
    // A stream closed before the end (the api restarted, a proxy cut it) is opened
    // again, after a pause: its first event is the job as it stands.
    loop {
        let response = ctx.api.stream(&["v1", "jobs", id, "events"]).await?;
        let mut events = Events::new(response);
        while let Some(data) = events
            .next_job()
            .await
            .map_err(|e| ctx.api.unreachable(&e))?
        {
            let Ok(job) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            display.show(&job, &data);
            if jobs::ended(&job) {
                display.finish(&job);
                return Ok(job);
            }
        }
        tokio::time::sleep(REOPEN_AFTER).await;
    }
}

/// The `job` events of an open stream.
struct Events {
    response: Response,
    buffer: Vec<u8>,
}

impl Events {
    fn new(response: Response) -> Self {
        Self {
            response,
            buffer: Vec::new(),
        }
    }

    /// The data of the next `job` event; `None` once the stream ends. Comments
    /// (`: keep-alive`) and other events are skipped.
    async fn next_job(&mut self) -> Result<Option<String>, reqwest::Error> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                match job_data(&String::from_utf8_lossy(&block)) {
                    Some(data) => return Ok(Some(data)),
                    None => continue,
                }
            }
            match self.response.chunk().await? {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => return Ok(None),
            }
        }
    }
}

/// The data of one event block if it is a `job` event (data lines joined by newlines,
/// as the SSE format says).
fn job_data(block: &str) -> Option<String> {
    let mut event = "message";
    let mut data = Vec::new();
    for line in block.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    (event == "job" && !data.is_empty()).then(|| data.join("\n"))
}

/// How changes are shown.
enum Display {
    Bar(ProgressBar),
    Lines,
    Json,
}

impl Display {
    fn new(json: bool) -> Self {
        if json {
            return Display::Json;
        }
        if !std::io::stdout().is_terminal() {
            return Display::Lines;
        }
        let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("{spinner} [{bar:30}] {percent:>3}% {msg}")
            .expect("a valid template")
            .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Display::Bar(bar)
    }

    fn show(&self, job: &Value, data: &str) {
        match self {
            Display::Bar(bar) => {
                bar.set_position(crate::output::percent(&job["progress"]));
                bar.set_message(format!("{} {}", text(&job["state"]), stage(job)));
            }
            Display::Lines => emit(format!(
                "{:<9} {}",
                text(&job["state"]),
                jobs::progress(job)
            )),
            Display::Json => emit(data),
        }
    }

    /// The bar stays as it ended; then people see the whole job.
    fn finish(&self, job: &Value) {
        match self {
            Display::Bar(bar) => {
                bar.abandon();
                jobs::detail(job);
            }
            Display::Lines => jobs::detail(job),
            Display::Json => {}
        }
    }
}

fn stage(job: &Value) -> &str {
    job["stage"].as_str().unwrap_or("")
}
