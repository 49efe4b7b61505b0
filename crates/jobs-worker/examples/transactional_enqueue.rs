//! A service that embeds the library: it defines a typed job, enqueues it in the same
//! SeaORM transaction as its own row (so the job exists if and only if the row does),
//! and runs a worker that executes it.
//!
//! `cargo run -p jobs-worker --example transactional_enqueue [DATABASE_URL]`
//! (default: an SQLite file `example.db` in the working directory).

#![allow(clippy::print_stdout)]

use std::time::Duration;

use async_trait::async_trait;
use jobs_core::{JobArgs, JobStore, State};
use jobs_store::{SeaOrmStore, migrate_up};
use jobs_worker::{HandlerError, JobContext, Output, TypedJob, Worker};
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
use serde::{Deserialize, Serialize};

/// The job: its fields are its arguments.
#[derive(Debug, Serialize, Deserialize)]
struct WelcomeEmail {
    user_id: i64,
    address: String,
}

impl JobArgs for WelcomeEmail {
    const KIND: &'static str = "welcome_email";
}

#[async_trait]
impl TypedJob for WelcomeEmail {
    type Output = String;

    async fn run(self, ctx: &JobContext) -> Result<Output<String>, HandlerError> {
        // A real handler would call a mail API, using ctx.id() as its idempotency key.
        Ok(format!(
            "welcomed user {} at {} (job {}, attempt {})",
            self.user_id,
            self.address,
            ctx.id(),
            ctx.attempt()
        )
        .into())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sqlite://example.db?mode=rwc".into());
    let store = SeaOrmStore::connect(&url).await?;
    migrate_up(store.connection()).await?;
    let db = store.connection();
    let backend = db.get_database_backend();
    db.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS users (id BIGINT PRIMARY KEY, address TEXT NOT NULL)",
    )
    .await?;
    let user_id = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1000;

    // The user row and its welcome job commit together.
    let txn = db.begin().await?;
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        "INSERT INTO users (id, address) VALUES ($1, $2)",
        [user_id.into(), "ada@example.com".into()],
    ))
    .await?;
    let job = WelcomeEmail {
        user_id,
        address: "ada@example.com".into(),
    }
    .to_job()?;
    let id = store.enqueue_many_in(&txn, vec![job]).await?[0].job.id;
    txn.commit().await?;
    store.wake_workers("default"); // SQLite: wake this process's worker (PostgreSQL NOTIFYs at commit).

    // A rolled-back transaction leaves neither the row nor the job behind.
    let txn = db.begin().await?;
    let ghost = WelcomeEmail {
        user_id: -1,
        address: "nobody@example.com".into(),
    }
    .to_job()?;
    let ghost_id = store.enqueue_many_in(&txn, vec![ghost]).await?[0].job.id;
    txn.rollback().await?;
    println!(
        "rolled-back job exists: {}",
        store.get(None, ghost_id).await.is_ok()
    );

    let worker = Worker::builder(store.clone())
        .register::<WelcomeEmail>()
        .queue("default", 4)
        .build()?
        .spawn();
    let job = loop {
        let job = store.get(None, id).await?;
        if job.state.is_ended() {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    worker.shutdown().await?;
    assert_eq!(job.state, State::Completed);
    println!(
        "job {} {}: {}",
        job.id,
        job.state,
        job.result.unwrap_or_default()
    );
    Ok(())
}
