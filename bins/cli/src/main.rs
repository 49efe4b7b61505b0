//! `jobs`: the command-line client of the HTTP API. It talks to the api only, never to
//! the database. Wiring here: parse the command line, run the command, exit with the
//! code its outcome maps to (documented in `jobs --help`).

mod api;
mod cli;
mod jobs;
mod output;
mod queues;
mod schedules;
mod watch;
mod workflows;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// What every command needs: the api and whether to print JSON.
#[derive(Debug)]
pub struct Ctx {
    pub api: api::Api,
    pub json: bool,
}

/// How a command ended when the api answered it.
#[derive(Debug)]
pub enum Done {
    Success,
    /// The job followed with `--wait` or `--watch` ended failed or cancelled.
    JobUnsuccessful,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest is built without a default TLS provider (as everywhere in the workspace).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli).await {
        Ok(Done::Success) => ExitCode::SUCCESS,
        Ok(Done::JobUnsuccessful) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<Done, api::Error> {
    let ctx = Ctx {
        api: api::Api::new(&cli.url, cli.key)?,
        json: cli.json,
    };
    match cli.command {
        Command::Enqueue(args) => jobs::enqueue(&ctx, args).await,
        Command::Get { id, watch } => jobs::get(&ctx, &id, watch).await,
        Command::List(args) => jobs::list(&ctx, args).await,
        Command::Cancel { id } => jobs::cancel(&ctx, &id).await,
        Command::Retry { id } => jobs::retry(&ctx, &id).await,
        Command::Queues => queues::list(&ctx).await,
        Command::Pause { queue } => queues::set_paused(&ctx, &queue, true).await,
        Command::Resume { queue } => queues::set_paused(&ctx, &queue, false).await,
        Command::Schedules(command) => schedules::run(&ctx, command).await,
        Command::Workflows(command) => workflows::run(&ctx, command).await,
    }
}
