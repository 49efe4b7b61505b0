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
    let all = |state: &str| {
        [
            "m20261125_000001_create_jobs",
            "m20261125_000002_create_api_keys",
            "m20261126_000003_lean_listing_indexes",
        ]
        .map(|name| format!("{state}\t{name}\n"))
        .concat()
    };
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
    assert_eq!(
        migrate("status"),
        "applied\tm20261125_000001_create_jobs\napplied\tm20261125_000002_create_api_keys\n\
         pending\tm20261126_000003_lean_listing_indexes\n",
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
