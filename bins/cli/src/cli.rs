//! The command line: flags, commands and what each takes. Values clap can check (JSON,
//! states, numbers) are checked here, so that a bad one is a usage error (exit 2) before
//! any request.

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

const EXIT_CODES: &str = "\
Exit codes:
  0  success; with --wait or --watch: the job completed (or partially completed)
  1  with --wait or --watch: the job ended failed or cancelled
  2  usage error: unknown command or flag, bad value, invalid JSON in --args or --body
  3  the api refused the API key (401 or 403): set JOBS_API_KEY or pass --key
  4  the api refused the request (any other 4xx: not found, invalid field, conflict)
  5  the api is unreachable, did not answer in time, or failed (5xx)

Messages go to stderr, data to stdout. `get` without --watch exits 0 whatever the job's state.";

/// The command-line client of the jobs HTTP API.
#[derive(Debug, Parser)]
#[command(name = "jobs", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Base URL of the api.
    #[arg(
        long,
        env = "JOBS_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API key, sent as `Authorization: Bearer <key>`.
    #[arg(long, env = "JOBS_API_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
    /// Print the api's JSON instead of tables (one document; JSON lines while watching).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a job.
    Enqueue(Enqueue),
    /// Show a job; --watch follows it live until it ends.
    Get {
        id: String,
        /// Follow the job's progress and stage until it ends; exit by its outcome.
        #[arg(long)]
        watch: bool,
    },
    /// List jobs, newest first.
    List(ListJobs),
    /// Cancel a job: a pending one ends at once, a running one is asked to stop.
    Cancel { id: String },
    /// Run an ended job again, from attempt 0.
    Retry { id: String },
    /// Each queue: jobs by state, the oldest due job's wait, pause, limits.
    Queues,
    /// Stop claims of a queue's jobs (for your tenant); running jobs finish.
    Pause { queue: String },
    /// Let claims of a paused queue's jobs resume.
    Resume { queue: String },
    /// Periodic jobs.
    #[command(subcommand)]
    Schedules(Schedules),
    /// Graphs of named steps.
    #[command(subcommand)]
    Workflows(Workflows),
}

#[derive(Debug, Args)]
pub struct Enqueue {
    /// Which handler runs it, e.g. `send_email`.
    pub kind: String,
    /// The handler's arguments, as JSON.
    #[arg(long, value_name = "JSON", default_value = "{}", value_parser = json_arg)]
    pub args: Value,
    /// Default `default`.
    #[arg(long)]
    pub queue: Option<String>,
    /// 0..=10, 10 runs first; default 5.
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..=10))]
    pub priority: Option<i64>,
    /// Run no earlier than this instant (RFC 3339, e.g. 2030-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME", conflicts_with = "delay_ms")]
    pub run_at: Option<String>,
    /// Run no earlier than this many milliseconds from now.
    #[arg(long, value_name = "MS")]
    pub delay_ms: Option<u64>,
    /// 1..=1000; default 20.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// While a job with this key is pending or running, enqueue returns it instead.
    #[arg(long)]
    pub unique_key: Option<String>,
    /// Wait until the job ends, print it, and exit by its outcome.
    #[arg(long)]
    pub wait: bool,
}

const JOB_STATES: [&str; 7] = [
    "pending",
    "waiting",
    "running",
    "completed",
    "partial",
    "failed",
    "cancelled",
];

#[derive(Debug, Args)]
pub struct ListJobs {
    #[arg(long, value_parser = JOB_STATES)]
    pub state: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub queue: Option<String>,
    /// The kind of the job's last error.
    #[arg(long)]
    pub error_kind: Option<String>,
    /// Created at or after (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub created_after: Option<String>,
    /// Created before (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub created_before: Option<String>,
    /// A job id, or a unique key (matched exactly).
    #[arg(long, value_name = "ID_OR_KEY")]
    pub search: Option<String>,
    /// 1..=100; default 50.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: Option<u32>,
    /// The next cursor a previous page printed.
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Schedules {
    /// Your schedules, by name, with their next run times.
    List,
    /// One schedule.
    Get { name: String },
    /// Create a schedule from a JSON body (see POST /v1/schedules in /openapi.json).
    Create(BodyArg),
    /// Delete a schedule; jobs it already enqueued stay.
    Delete { name: String },
    /// Stop enqueueing.
    Pause { name: String },
    /// Enqueue again from the first slot after now.
    Resume { name: String },
}

#[derive(Debug, Subcommand)]
pub enum Workflows {
    /// Create a workflow from a JSON body (see POST /v1/workflows in /openapi.json).
    Create(BodyArg),
    /// A workflow with each step's state.
    Get { id: String },
    /// Your workflows, newest first.
    List(ListWorkflows),
    /// Cancel every step that has not ended.
    Cancel { id: String },
    /// Run the failed and cancelled steps again.
    Retry { id: String },
}

#[derive(Debug, Args)]
pub struct BodyArg {
    /// The request body: JSON, or `@FILE` to read it from a file.
    #[arg(long, value_name = "JSON|@FILE", value_parser = body_arg)]
    pub body: Value,
}

#[derive(Debug, Args)]
pub struct ListWorkflows {
    #[arg(long, value_parser = ["running", "completed", "failed", "cancelled"])]
    pub state: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    /// A job id, or a unique key (matched exactly).
    #[arg(long, value_name = "ID_OR_KEY")]
    pub search: Option<String>,
    /// 1..=100; default 50.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: Option<u32>,
    /// The next cursor a previous page printed.
    #[arg(long)]
    pub cursor: Option<String>,
}

fn json_arg(raw: &str) -> Result<Value, String> {
    serde_json::from_str(raw).map_err(|e| format!("not valid JSON: {e}"))
}

/// JSON given inline, or `@path` naming a file that holds it.
fn body_arg(raw: &str) -> Result<Value, String> {
    match raw.strip_prefix('@') {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            serde_json::from_str(&text).map_err(|e| format!("{path} is not valid JSON: {e}"))
        }
        None => json_arg(raw),
    }
}
