//! `jobs-api`: the api process. Wiring only: serve the HTTP API (the default command),
//! manage the schema, manage API keys. On the embedded SQLite default it also runs a
//! worker with the built-in handlers, so a job posted to it actually runs. On a schema
//! that does not fit this binary it serves `/healthz` and `/readyz` (503) and refuses
//! every `/v1` request, and its embedded worker claims nothing.

#![allow(clippy::print_stdout)]

use std::net::{SocketAddr, TcpListener};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use jobs_http::{ApiConfig, ApiState, AuthMode};
use jobs_store::{
    DEFAULT_DATABASE_URL, OutcomeLimits, SCHEMA_RECHECK, SeaOrmStore, migrate_down, migrate_up,
    migration_status, run_while_schema_fits, schema_check,
};
use jobs_worker::{CancellationToken, Worker, builtins};

#[derive(Debug, Parser)]
#[command(name = "jobs-api", version, about = "The job system's api process")]
struct Cli {
    /// PostgreSQL (`postgres://...`) or SQLite (`sqlite://file.db?mode=rwc`) database.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    database_url: String,

    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: Serve,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve(Serve),
    /// Manage the database schema by hand.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Manage API keys; until the first, the api runs single-tenant without auth (see --auth).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, Args)]
struct Serve {
    /// Address to serve on.
    #[arg(long, env = "JOBS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Do not apply pending migrations at start.
    #[arg(long, env = "JOBS_NO_MIGRATE")]
    no_migrate: bool,

    /// Run a worker with the built-in handlers in this process: `auto` does on SQLite.
    #[arg(long, env = "JOBS_EMBEDDED_WORKER", default_value = "auto", value_parser = ["auto", "on", "off"])]
    embedded_worker: String,

    /// Hosts the embedded worker's `http` handler may call, and webhook subscriptions may name.
    #[arg(
        long = "http-allow-host",
        env = "JOBS_HTTP_ALLOW_HOSTS",
        value_delimiter = ','
    )]
    http_allow_hosts: Vec<String>,

    /// Webhook deliveries the embedded worker sends at once (queue `webhooks`); 0 leaves
    /// them to workers elsewhere.
    #[arg(long, env = "JOBS_WEBHOOKS_CONCURRENCY", default_value_t = 4)]
    webhooks_concurrency: usize,

    /// Largest request body in bytes.
    #[arg(long, env = "JOBS_BODY_LIMIT", default_value_t = 1 << 20)]
    body_limit: usize,

    /// Larger results (with item errors) are refused: the job fails with kind
    /// `result_too_large`. In bytes of JSON.
    #[arg(long, env = "JOBS_MAX_RESULT_BYTES", default_value_t = OutcomeLimits::default().max_bytes)]
    max_result_bytes: usize,

    /// Larger results are stored zstd-compressed. In bytes of JSON.
    #[arg(long, env = "JOBS_COMPRESS_RESULTS_ABOVE", default_value_t = OutcomeLimits::default().compress_above)]
    compress_results_above: usize,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "JOBS_HTTP_WORKERS")]
    http_workers: Option<usize>,

    /// API keys: `auto` requires one once any was ever created (revoked ones count),
    /// `required` always (even before the first), `off` never (one tenant; warned at start).
    #[arg(long, env = "JOBS_AUTH", default_value = "auto", value_parser = parse_auth)]
    auth: AuthMode,

    /// `/metrics` answers only requests with a valid API key (any tenant's).
    #[arg(long, env = "JOBS_METRICS_REQUIRE_KEY")]
    metrics_require_key: bool,

    /// Do not serve the dashboard at `/ui`.
    #[arg(long, env = "JOBS_NO_UI")]
    no_ui: bool,

    #[command(flatten)]
    files: jobs_files::FilesArgs,

    /// Largest job file accepted, in bytes.
    #[arg(long, env = "JOBS_FILE_LIMIT", default_value_t = 100 << 20)]
    file_limit: u64,

    /// The API's address as clients reach it (`https://jobs.example.com`), for the
    /// download URLs of files; default: the scheme and host of each request.
    #[arg(long, env = "JOBS_PUBLIC_URL")]
    public_url: Option<String>,

    /// Seconds between sweeps of the files of deleted jobs, when no embedded worker
    /// sweeps them (its maintenance does, at its retention interval).
    #[arg(long, env = "JOBS_FILES_SWEEP_INTERVAL_SECS", default_value_t = 60)]
    files_sweep_interval_secs: u64,
}

/// `jobs-api --listen ...` and `jobs-api serve --listen ...` both serve; serve options on
/// both sides of `serve` would leave one set unused, so that is refused.
fn parse_cli() -> Cli {
    use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let given_before = |id: &clap::Id| {
        id != "database_url" && matches.value_source(id.as_str()) == Some(ValueSource::CommandLine)
    };
    if matches!(cli.command, Some(Command::Serve(_))) && matches.ids().any(given_before) {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "give the serve options after `serve` (or leave `serve` out)",
            )
            .exit();
    }
    cli
}

fn parse_auth(value: &str) -> Result<AuthMode, String> {
    value.parse()
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Roll back the newest migrations (back up the database first: see docs/OPERATIONS.md).
    Down {
        /// How many to roll back.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Create a key for a tenant; the key is printed once and stored hashed.
    Create {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key by its id.
    Revoke { id: uuid::Uuid },
    /// List keys (ids, tenants, prefixes; never the keys).
    List,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = parse_cli();
    // When serving, listen for signals first: a SIGTERM during start-up is a graceful
    // stop, not a kill. Other commands keep the default (Ctrl-C ends them).
    let serving = matches!(cli.command, None | Some(Command::Serve(_)));
    let shutdown = if serving {
        jobs_worker::signals::cancel_on_signals()?
    } else {
        CancellationToken::new()
    };
    let store = SeaOrmStore::connect(&cli.database_url)
        .await
        .with_context(|| format!("connecting to {}", redact(&cli.database_url)))?;
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(opts) => serve(store, opts, &cli.database_url, shutdown).await,
        Command::Migrate { action } => migrate(&store, action).await,
        Command::Keys { action } => keys(&store, action).await,
    }
}

async fn serve(
    store: SeaOrmStore,
    opts: Serve,
    database_url: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = store.with_outcome_limits(OutcomeLimits {
        compress_above: opts.compress_results_above,
        max_bytes: opts.max_result_bytes,
    });
    if !opts.no_migrate {
        migrate_up(store.connection())
            .await
            .context("applying migrations")?;
    }
    let schema = schema_check(store.connection()).await;
    if schema.blocks_work() {
        tracing::error!(
            "{schema}: serving /healthz and /readyz only until the schema fits (see docs/OPERATIONS.md)"
        );
    }
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    // Histograms keep their samples until drained; drain them on a timer so memory stays
    // bounded when nothing scrapes /metrics.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let files = opts
        .files
        .storage(database_url)
        .context("opening the file storage")?;
    tracing::info!(files = files.location(), "file storage");
    let worker_on = match opts.embedded_worker.as_str() {
        "on" => true,
        "off" => false,
        _ => !store.is_postgres(),
    };
    let worker = match worker_on {
        true => {
            let build = {
                let (store, allow) = (store.clone(), opts.http_allow_hosts.clone());
                let files = files.clone();
                let webhooks = opts.webhooks_concurrency;
                move || {
                    let builder = Worker::builder(store.clone()).queue("default", 10);
                    let builder = builder.files(files.clone());
                    let builder = builtins::serve_webhooks(builder, webhooks);
                    builtins::register(builder, allow.clone()).build()
                }
            };
            build().context("invalid embedded worker configuration")?;
            let (db, shutdown) = (store.connection().clone(), shutdown.clone());
            Some(tokio::spawn(async move {
                // As in `jobs-worker`: claims only while the schema fits.
                run_while_schema_fits(&db, SCHEMA_RECHECK, &shutdown, |stop| {
                    let worker = build();
                    async move { worker?.run(stop).await }
                })
                .await
            }))
        }
        false => {
            // No embedded worker's maintenance sweeps the files of deleted jobs: this does.
            let every = std::time::Duration::from_secs(opts.files_sweep_interval_secs.max(1));
            let holder = format!("api-{}", uuid::Uuid::new_v4());
            let sweeper = jobs_files::run_sweeper(
                std::sync::Arc::new(store.clone()),
                files.clone(),
                holder,
                every,
                shutdown.clone(),
            );
            tokio::spawn(sweeper);
            None
        }
    };

    let config = ApiConfig {
        body_limit: opts.body_limit,
        result_body_limit: opts.max_result_bytes.saturating_add(opts.body_limit),
        workers: opts.http_workers,
        auth: opts.auth,
        metrics_require_key: opts.metrics_require_key,
        files: Some(files),
        file_limit: opts.file_limit,
        public_url: opts.public_url,
        webhook_hosts: jobs_core::AllowedHosts::new(opts.http_allow_hosts.clone()),
        ui: !opts.no_ui,
        ..ApiConfig::default()
    };
    // Warns when it will serve without authentication, or refuse every request.
    let state = ApiState::new(store, config, Some(metrics))
        .await
        .context("starting the API")?;
    let listener =
        TcpListener::bind(opts.listen).with_context(|| format!("binding {}", opts.listen))?;
    tracing::info!(address = %opts.listen, embedded_worker = worker_on, "serving the API");
    let server = jobs_http::server(listener, state)?;
    let handle = server.handle();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            // Stop accepting, answer the requests in flight, then return.
            handle.stop(true).await;
        }
    });
    server.await?;
    shutdown.cancel();
    if let Some(worker) = worker {
        worker.await?.context("embedded worker")?;
    }
    Ok(())
}

async fn migrate(store: &SeaOrmStore, action: MigrateAction) -> anyhow::Result<()> {
    let db = store.connection();
    match action {
        MigrateAction::Up => {
            migrate_up(db).await.context("migrate up")?;
            // Nothing to apply on a newer schema; say whether this binary may run on it.
            let schema = schema_check(db).await;
            anyhow::ensure!(schema.is_ready(), "{schema}");
            eprintln!("{schema}");
        }
        MigrateAction::Down { steps } => {
            migrate_down(db, Some(steps))
                .await
                .context("migrate down")?;
            eprintln!("{}", schema_check(db).await);
        }
        MigrateAction::Status => {
            for migration in migration_status(db).await.context("migration status")? {
                let state = if migration.applied {
                    "applied"
                } else {
                    "pending"
                };
                let note = if migration.known {
                    ""
                } else {
                    "\t(unknown to this binary: applied by a newer release)"
                };
                println!("{state}\t{}{note}", migration.name);
            }
            eprintln!("{}", schema_check(db).await);
        }
    }
    Ok(())
}

async fn keys(store: &SeaOrmStore, action: KeysAction) -> anyhow::Result<()> {
    migrate_up(store.connection())
        .await
        .context("applying migrations")?;
    match action {
        KeysAction::Create { tenant } => {
            let key = store.create_api_key(&tenant).await?;
            eprintln!(
                "key {} for tenant {}; it is shown only now:",
                key.id, key.tenant
            );
            println!("{}", key.secret);
        }
        KeysAction::Revoke { id } => {
            store.revoke_api_key(id).await?;
            eprintln!("revoked key {id}");
        }
        KeysAction::List => {
            for key in store.list_api_keys().await? {
                let state = if key.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!("{}\t{}\t{}…\t{state}", key.id, key.tenant, key.prefix);
            }
        }
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
