//! `cargo run -p signup [DATABASE_URL]` (default: an SQLite file `signup.db` here).

#![allow(clippy::print_stdout)]

use jobs::{Client, State, Worker};
use signup::{WelcomeEmail, create_users_table, sign_up};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sqlite://signup.db?mode=rwc".into());
    let client = Client::connect(&url).await?;
    client.migrate().await?;
    create_users_table(&client).await?;

    let worker = Worker::builder(client.store().clone())
        .register::<WelcomeEmail>()
        .queue("mail", 4)
        .build()?
        .spawn();

    // Distinct across runs on the same file.
    let user_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64;
    let id = sign_up(&client, user_id, "ada@example.com").await?;
    let job = client.wait(id).await?;
    assert_eq!(job.state, State::Completed);
    println!(
        "job {id}: {} -> {}",
        job.state,
        job.result.unwrap_or_default()
    );

    worker.shutdown().await?;
    Ok(())
}
