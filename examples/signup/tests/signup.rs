//! The service's tests, as a user of the library writes them.

use std::time::Duration;

use jobs::{Client, State, Worker, sea_orm::ConnectionTrait, testing::TestJobs};
use signup::{OnboardingSummary, WelcomeEmail, create_users_table, sign_up, start_onboarding};

async fn test_jobs() -> TestJobs {
    let test = TestJobs::new().await.expect("test database");
    create_users_table(test.client())
        .await
        .expect("users table");
    test
}

#[tokio::test]
async fn sign_up_enqueues_one_welcome_email_with_the_kind_defaults() {
    let test = test_jobs().await;
    let id = sign_up(test.client(), 1, "ada@example.com").await.unwrap();
    let ada = WelcomeEmail {
        user_id: 1,
        address: "ada@example.com".into(),
    };
    test.assert_enqueued(&ada).await;
    let job = test.client().get(id).await.unwrap();
    assert_eq!(
        (job.queue.as_str(), job.priority, job.max_attempts),
        ("mail", 7, 3)
    );

    // The same user again: the row conflicts, so the transaction (and its job) is undone.
    assert!(sign_up(test.client(), 1, "ada@example.com").await.is_err());
    assert_eq!(test.enqueued::<WelcomeEmail>().await.unwrap(), vec![ada]);
}

#[tokio::test]
async fn drained_welcome_emails_end_with_their_outcomes() {
    let test = test_jobs().await;
    sign_up(test.client(), 1, "ada@example.com").await.unwrap();
    sign_up(test.client(), 2, "not an address").await.unwrap();
    let ended = test
        .drain(|w| w.register::<WelcomeEmail>().queue("mail", 2))
        .await
        .unwrap();
    let states: Vec<(State, Option<String>)> = ended
        .iter()
        .map(|j| (j.state, j.errors.last().map(|e| e.kind.clone())))
        .collect();
    assert_eq!(
        states,
        vec![
            (State::Completed, None),
            (State::Failed, Some("bad_address".into()))
        ]
    );
    assert_eq!(
        ended[0].result,
        Some(serde_json::json!("welcomed user 1 at ada@example.com"))
    );
}

/// The worker polls once an hour here, so only the wake-up sent at commit can start the
/// job within the test's wait.
async fn commit_wakes_the_worker(client: Client) {
    create_users_table(&client).await.unwrap();
    let worker = Worker::builder(client.store().clone())
        .register::<WelcomeEmail>()
        .queue("mail", 1)
        .config(|c| {
            c.poll_interval = Duration::from_secs(3600);
            c.maintenance = false;
        })
        .build()
        .unwrap()
        .spawn();
    // Let the worker make its first (empty) claim and go idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = sign_up(&client, 7, "grace@example.com").await.unwrap();
    let job = tokio::time::timeout(Duration::from_secs(20), client.wait(id))
        .await
        .expect("the worker was not woken at commit")
        .unwrap();
    assert_eq!(job.state, State::Completed);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_wakes_the_worker_on_sqlite() {
    let test = TestJobs::new().await.unwrap();
    commit_wakes_the_worker(test.client().clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(jobs_postgres_tests),
    ignore = "PostgreSQL half NOT RUN: JOBS_TEST_POSTGRES_URL is not set"
)]
async fn commit_wakes_the_worker_on_postgres() {
    let url = std::env::var("JOBS_TEST_POSTGRES_URL").expect("JOBS_TEST_POSTGRES_URL");
    // A schema of its own, so the example's tables meet no other test's.
    let schema = format!("signup_{}", std::process::id());
    let admin = jobs::sea_orm::Database::connect(url.as_str())
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let client = Client::connect(&format!("{url}{sep}options=-c%20search_path%3D{schema}"))
        .await
        .unwrap();
    client.migrate().await.unwrap();
    commit_wakes_the_worker(client).await;
    admin
        .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// The job alone: no database, no worker.
#[tokio::test]
async fn welcome_email_runs_without_a_database() {
    use jobs::{Output, testing};

    let ada = WelcomeEmail {
        user_id: 1,
        address: "ada@example.com".into(),
    };
    let ctx = testing::TestContext::of(&ada).unwrap().attempt(2).build();
    let output = testing::run_with(ada, &ctx).await.unwrap();
    assert_eq!(
        output,
        Output::Completed("welcomed user 1 at ada@example.com".into())
    );
    assert_eq!(
        testing::progress(&ctx),
        Some((0.5, Some("rendering".into())))
    );

    let error = testing::run(WelcomeEmail {
        user_id: 2,
        address: "nobody".into(),
    })
    .await
    .unwrap_err();
    assert_eq!(
        (error.kind.as_str(), error.retry),
        ("bad_address", jobs::Retry::Never)
    );
}

#[tokio::test]
async fn onboarding_summarises_the_welcome_email_after_it_completed() {
    let test = test_jobs().await;
    let flow = start_onboarding(test.client(), 3, "grace@example.com")
        .await
        .unwrap();
    let summary = flow.steps[1].job_id;
    assert_eq!(
        test.client().get(summary).await.unwrap().state,
        State::Waiting
    );
    test.drain(|w| {
        w.register::<WelcomeEmail>()
            .register::<OnboardingSummary>()
            .queue("mail", 2)
    })
    .await
    .unwrap();
    let summary = test.client().get(summary).await.unwrap();
    assert_eq!(
        summary.result,
        Some(serde_json::json!(
            "user 3: welcomed user 3 at grace@example.com"
        ))
    );
    let flow = test.client().workflow(flow.id).await.unwrap();
    assert_eq!(flow.state, jobs::WorkflowState::Completed);
}
