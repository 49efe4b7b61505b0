//! A sign-up service: a user row and its welcome email commit together.

use std::time::Duration;

use jobs::{
    Client, HandlerError, JobArgs, JobContext, JobError, JobId, JobOptions, Output, TypedJob,
    Unique, Workflow, WorkflowView, sea_orm::ConnectionTrait,
};
use serde::{Deserialize, Serialize};

/// The job: its fields are its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WelcomeEmail {
    pub user_id: i64,
    pub address: String,
}

/// Per-kind defaults: every welcome email goes to the `mail` queue, at most three tries of
/// ten seconds each, one at a time per user (unique by arguments: while one is pending or
/// running, another is not created).
impl JobArgs for WelcomeEmail {
    const KIND: &'static str = "welcome_email";

    fn options() -> JobOptions {
        JobOptions::new()
            .queue("mail")
            .priority(7)
            .max_attempts(3)
            .timeout(Duration::from_secs(10))
            .unique(Unique::Args)
    }
}

#[jobs::async_trait]
impl TypedJob for WelcomeEmail {
    type Output = String;

    async fn run(self, ctx: &JobContext) -> Result<Output<String>, HandlerError> {
        if !self.address.contains('@') {
            return Err(HandlerError::permanent(
                "bad_address",
                format!("{:?} is not an address", self.address),
            ));
        }
        ctx.progress(0.5, "rendering");
        // A real handler would call a mail API with ctx.id() as its idempotency key.
        Ok(format!("welcomed user {} at {}", self.user_id, self.address).into())
    }
}

/// The table this service owns, beside the job system's.
pub async fn create_users_table(client: &Client) -> Result<(), JobError> {
    client
        .store()
        .connection()
        .execute_unprepared(
            "CREATE TABLE IF NOT EXISTS users (id BIGINT PRIMARY KEY, address TEXT NOT NULL)",
        )
        .await
        .map_err(|e| JobError::Storage(e.to_string()))?;
    Ok(())
}

/// Creates the user and its welcome email in one transaction: both exist or neither.
pub async fn sign_up(client: &Client, user_id: i64, address: &str) -> Result<JobId, JobError> {
    let txn = client.begin().await?;
    let insert = jobs::sea_orm::Statement::from_sql_and_values(
        txn.get_database_backend(),
        match txn.get_database_backend() {
            jobs::sea_orm::DatabaseBackend::Postgres => {
                "INSERT INTO users (id, address) VALUES ($1, $2)"
            }
            _ => "INSERT INTO users (id, address) VALUES (?, ?)",
        },
        [user_id.into(), address.into()],
    );
    txn.execute_raw(insert)
        .await
        .map_err(|e| JobError::Storage(e.to_string()))?;
    let welcome = WelcomeEmail {
        user_id,
        address: address.to_owned(),
    };
    let job = txn.insert(&welcome).await?.job;
    txn.commit().await?;
    Ok(job.id)
}

/// The last step of onboarding: it runs after the welcome email and reads its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnboardingSummary {
    pub user_id: i64,
}

impl JobArgs for OnboardingSummary {
    const KIND: &'static str = "onboarding_summary";

    fn options() -> JobOptions {
        JobOptions::new().queue("mail")
    }
}

#[jobs::async_trait]
impl TypedJob for OnboardingSummary {
    type Output = String;

    async fn run(self, ctx: &JobContext) -> Result<Output<String>, HandlerError> {
        let parents = ctx
            .parent_results()
            .await
            .map_err(|e| HandlerError::retryable("parents_unavailable", e.to_string()))?;
        let done: Vec<String> = parents
            .iter()
            .filter_map(|p| p.result.as_ref()?.as_str().map(str::to_owned))
            .collect();
        Ok(format!("user {}: {}", self.user_id, done.join("; ")).into())
    }
}

/// Onboarding as a workflow: the welcome email, then the summary that reads its result.
/// Both jobs exist from the start; the summary waits until the email completed.
pub async fn start_onboarding(
    client: &Client,
    user_id: i64,
    address: &str,
) -> Result<WorkflowView, JobError> {
    let mut welcome = WelcomeEmail {
        user_id,
        address: address.to_owned(),
    }
    .to_job()?;
    // A step is created with its workflow, never deduplicated against other jobs.
    welcome.unique_key = None;
    let flow = Workflow::new("onboarding")
        .step("welcome", welcome)
        .step("summary", OnboardingSummary { user_id }.to_job()?)
        .after(["welcome"]);
    client.create_workflow(flow).await
}
