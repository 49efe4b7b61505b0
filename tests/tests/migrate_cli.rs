//! `jobs-api migrate up|down|status` run as a real process against both backends:
//! the schema can be managed by hand.

use blackbox_tests::{run, stdout};
use jobs_store::{backend_tests, testing::TestDb};

backend_tests!(migrate_commands_manage_the_schema);

async fn migrate_commands_manage_the_schema(migrated: TestDb) {
    let db = migrated.empty_twin().await;
    let url = db.url();
    let migrate = |action: &str| {
        let output = run("jobs-api", &url, &["migrate", action]);
        assert!(
            output.status.success(),
            "migrate {action}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout(&output)
    };
    let names = jobs_store::known_migrations();
    assert!(names.len() >= 3, "{names:?}");
    let listing = |states: &[&str]| {
        names
            .iter()
            .zip(states)
            .map(|(name, state)| format!("{state}\t{name}\n"))
            .collect::<String>()
    };
    let all = |state: &str| listing(&vec![state; names.len()]);
    assert_eq!(migrate("status"), all("pending"));
    migrate("up");
    assert_eq!(migrate("status"), all("applied"));
    let seen = jobs_store::migration_status(db.store.connection())
        .await
        .unwrap();
    assert!(
        seen.iter().all(|m| m.applied),
        "another connection sees the migration"
    );
    migrate("down");
    let mut one_down = vec!["applied"; names.len()];
    *one_down.last_mut().unwrap() = "pending";
    assert_eq!(
        migrate("status"),
        listing(&one_down),
        "down rolls back one step"
    );
    migrate("up");
    assert_eq!(migrate("status"), all("applied"));

    let refused = run(
        "jobs-api",
        "postgres://nobody@127.0.0.1:1/none",
        &["migrate", "status"],
    );
    assert!(
        !refused.status.success(),
        "an unreachable database is an error, not a hang"
    );
}
