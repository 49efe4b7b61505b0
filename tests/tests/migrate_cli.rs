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
    assert_eq!(migrate("status"), "pending\tm20261125_000001_create_jobs\n");
    migrate("up");
    assert_eq!(migrate("status"), "applied\tm20261125_000001_create_jobs\n");
    let seen = jobs_store::migration_status(db.store.connection())
        .await
        .unwrap();
    assert!(
        seen.iter().all(|m| m.applied),
        "another connection sees the migration"
    );
    migrate("down");
    assert_eq!(migrate("status"), "pending\tm20261125_000001_create_jobs\n");
    migrate("up");
    assert_eq!(migrate("status"), "applied\tm20261125_000001_create_jobs\n");

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
