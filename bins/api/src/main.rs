//! `jobs-api`: the api process. Today it manages the schema (`migrate up|down|status`);
//! the HTTP API lands in `jobs-http`.

#![allow(clippy::print_stdout)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use jobs_store::{DEFAULT_DATABASE_URL, SeaOrmStore, migrate_down, migrate_up, migration_status};

#[derive(Debug, Parser)]
#[command(name = "jobs-api", version, about = "The job system's api process")]
struct Cli {
    /// PostgreSQL (`postgres://...`) or SQLite (`sqlite://file.db?mode=rwc`) database.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    database_url: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the database schema by hand.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Roll back the newest migrations.
    Down {
        /// How many to roll back.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let store = SeaOrmStore::connect(&cli.database_url)
        .await
        .with_context(|| format!("connecting to {}", redact(&cli.database_url)))?;
    let db = store.connection();
    match cli.command {
        Command::Migrate { action } => match action {
            MigrateAction::Up => migrate_up(db).await.context("migrate up")?,
            MigrateAction::Down { steps } => migrate_down(db, Some(steps))
                .await
                .context("migrate down")?,
            MigrateAction::Status => {
                for migration in migration_status(db).await.context("migration status")? {
                    let state = if migration.applied {
                        "applied"
                    } else {
                        "pending"
                    };
                    println!("{state}\t{}", migration.name);
                }
            }
        },
    }
    Ok(())
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
