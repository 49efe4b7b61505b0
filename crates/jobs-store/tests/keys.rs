//! API keys on both backends: a secret maps to its tenant until revoked, and only its
//! hash is stored.

use jobs_core::JobError;
use jobs_store::{SeaOrmStore, backend_tests, migrate_down, migrate_up, testing::TestDb};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

backend_tests!(
    created_secret_maps_to_its_tenant,
    only_the_hash_of_the_secret_is_stored,
    revoked_key_no_longer_authenticates,
    revoking_an_unknown_or_revoked_key_is_invalid,
    unknown_secret_maps_to_nothing,
    invalid_tenant_is_rejected_and_nothing_stored,
    list_shows_prefix_and_revoked_state_oldest_first,
    keys_of_two_tenants_map_to_their_own_tenant,
    api_keys_migration_goes_down_and_up_alone,
);

async fn rows(store: &SeaOrmStore, sql: &str) -> Vec<QueryResult> {
    let db = store.connection();
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn key_count(store: &SeaOrmStore) -> i64 {
    rows(store, "SELECT COUNT(*) AS n FROM api_keys").await[0]
        .try_get("", "n")
        .unwrap()
}

fn assert_invalid_on(result: Result<impl std::fmt::Debug, JobError>, field: &str) {
    match result {
        Err(JobError::Invalid(fields)) => assert!(
            fields.iter().any(|f| f.field == field),
            "no error on {field}: {fields:?}"
        ),
        other => panic!("expected Invalid on {field}, got {other:?}"),
    }
}

async fn created_secret_maps_to_its_tenant(db: TestDb) {
    let s = &db.store;
    assert!(
        !s.has_active_keys().await.unwrap(),
        "a new database has keys"
    );
    let key = s.create_api_key("acme").await.unwrap();
    assert_eq!(key.tenant, "acme");
    assert!(key.secret.starts_with("jk_"), "{}", key.prefix);
    assert_eq!(key.secret.len(), 67, "jk_ and 64 hex characters");
    assert!(key.secret[3..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(key.prefix, key.secret[..8]);
    assert_eq!(
        s.tenant_for_key(&key.secret).await.unwrap().as_deref(),
        Some("acme")
    );
    assert!(s.has_active_keys().await.unwrap());
}

async fn only_the_hash_of_the_secret_is_stored(db: TestDb) {
    let s = &db.store;
    let key = s.create_api_key("acme").await.unwrap();
    let columns_sql = match s.connection().get_database_backend() {
        DbBackend::Postgres => {
            "SELECT column_name::text AS name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'api_keys'"
        }
        _ => "SELECT name FROM pragma_table_info('api_keys')",
    };
    let columns: Vec<String> = rows(s, columns_sql)
        .await
        .iter()
        .map(|r| r.try_get("", "name").unwrap())
        .collect();
    assert_eq!(columns.len(), 6, "columns of api_keys: {columns:?}");
    let secret_random = &key.secret[3..];
    for column in &columns {
        // SQLite keeps uuids as blobs; `quote` renders any value as SQL text.
        let sql = match s.connection().get_database_backend() {
            DbBackend::Postgres => format!("SELECT CAST({column} AS TEXT) AS v FROM api_keys"),
            _ => format!("SELECT quote({column}) AS v FROM api_keys"),
        };
        for row in rows(s, &sql).await {
            let value: Option<String> = row.try_get("", "v").unwrap();
            let value = value.unwrap_or_default();
            assert!(
                !value.contains(secret_random),
                "column {column} holds the secret: {value}"
            );
        }
    }
    let stored = &rows(s, "SELECT key_hash, prefix FROM api_keys").await[0];
    let hash: String = stored.try_get("", "key_hash").unwrap();
    assert_eq!(hash, hex::encode(Sha256::digest(key.secret.as_bytes())));
    let prefix: String = stored.try_get("", "prefix").unwrap();
    assert_eq!(prefix, key.prefix);
}

async fn revoked_key_no_longer_authenticates(db: TestDb) {
    let s = &db.store;
    let key = s.create_api_key("acme").await.unwrap();
    s.revoke_api_key(key.id).await.unwrap();
    assert_eq!(s.tenant_for_key(&key.secret).await.unwrap(), None);
    assert!(
        !s.has_active_keys().await.unwrap(),
        "the only key is revoked"
    );

    // A new key for the same tenant works; the revoked one stays revoked.
    let again = s.create_api_key("acme").await.unwrap();
    assert_ne!(again.secret, key.secret);
    assert!(s.has_active_keys().await.unwrap());
    assert_eq!(
        s.tenant_for_key(&again.secret).await.unwrap().as_deref(),
        Some("acme")
    );
    assert_eq!(s.tenant_for_key(&key.secret).await.unwrap(), None);
}

async fn revoking_an_unknown_or_revoked_key_is_invalid(db: TestDb) {
    let s = &db.store;
    assert_invalid_on(s.revoke_api_key(Uuid::now_v7()).await, "id");
    let key = s.create_api_key("acme").await.unwrap();
    s.revoke_api_key(key.id).await.unwrap();
    assert_invalid_on(s.revoke_api_key(key.id).await, "id");
}

async fn unknown_secret_maps_to_nothing(db: TestDb) {
    let s = &db.store;
    let key = s.create_api_key("acme").await.unwrap();
    for unknown in [
        "",
        "jk_",
        "jk_0000000000000000000000000000000000000000",
        &key.prefix,
        &key.secret[..key.secret.len() - 1],
        &format!("{}x", key.secret),
        &key.secret.to_uppercase(),
    ] {
        if unknown == key.secret {
            continue;
        }
        assert_eq!(
            s.tenant_for_key(unknown).await.unwrap(),
            None,
            "{unknown:?} authenticated"
        );
    }
}

async fn invalid_tenant_is_rejected_and_nothing_stored(db: TestDb) {
    let s = &db.store;
    for bad in ["", "has space", "ünïcode", &"t".repeat(129)] {
        assert_invalid_on(s.create_api_key(bad).await, "tenant");
    }
    assert_eq!(key_count(s).await, 0);
    assert!(!s.has_active_keys().await.unwrap());
    // The longest and most varied legal name is fine.
    let long = format!("a.b-c_d:e/{}", "x".repeat(118));
    assert_eq!(long.len(), 128);
    s.create_api_key(&long).await.unwrap();
}

async fn list_shows_prefix_and_revoked_state_oldest_first(db: TestDb) {
    let s = &db.store;
    assert!(s.list_api_keys().await.unwrap().is_empty());
    let before = OffsetDateTime::now_utc() - time::Duration::seconds(60);
    let first = s.create_api_key("acme").await.unwrap();
    let second = s.create_api_key("globex").await.unwrap();
    let third = s.create_api_key("acme").await.unwrap();
    s.revoke_api_key(second.id).await.unwrap();
    let after = OffsetDateTime::now_utc() + time::Duration::seconds(60);

    let listed = s.list_api_keys().await.unwrap();
    let ids: Vec<Uuid> = listed.iter().map(|k| k.id).collect();
    assert_eq!(ids, [first.id, second.id, third.id], "oldest first");
    for (info, key) in listed.iter().zip([&first, &second, &third]) {
        assert_eq!(info.tenant, key.tenant);
        assert_eq!(info.prefix, key.prefix);
        assert!(
            before < info.created_at && info.created_at < after,
            "created_at {} is not the database's now",
            info.created_at
        );
    }
    assert!(listed[0].is_active() && listed[0].revoked_at.is_none());
    assert!(listed[2].is_active());
    let revoked_at = listed[1].revoked_at.expect("second key is revoked");
    assert!(!listed[1].is_active());
    assert!(listed[1].created_at <= revoked_at && revoked_at < after);
}

async fn keys_of_two_tenants_map_to_their_own_tenant(db: TestDb) {
    let s = &db.store;
    let acme = s.create_api_key("acme").await.unwrap();
    let globex = s.create_api_key("globex/eu-1").await.unwrap();
    assert_ne!(acme.id, globex.id);
    assert_ne!(acme.secret, globex.secret);
    assert_eq!(
        s.tenant_for_key(&acme.secret).await.unwrap().as_deref(),
        Some("acme")
    );
    assert_eq!(
        s.tenant_for_key(&globex.secret).await.unwrap().as_deref(),
        Some("globex/eu-1")
    );
    // Revoking one tenant's key leaves the other's working.
    s.revoke_api_key(acme.id).await.unwrap();
    assert_eq!(s.tenant_for_key(&acme.secret).await.unwrap(), None);
    assert_eq!(
        s.tenant_for_key(&globex.secret).await.unwrap().as_deref(),
        Some("globex/eu-1")
    );
    assert!(s.has_active_keys().await.unwrap());
}

async fn table_exists(store: &SeaOrmStore, table: &str) -> bool {
    let sql = match store.connection().get_database_backend() {
        DbBackend::Postgres => format!(
            "SELECT COUNT(*) AS n FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '{table}'"
        ),
        _ => format!(
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
        ),
    };
    let n: i64 = rows(store, &sql).await[0].try_get("", "n").unwrap();
    n == 1
}

async fn api_keys_migration_goes_down_and_up_alone(db: TestDb) {
    let s = &db.store;
    let key = s.create_api_key("acme").await.unwrap();
    // Down to just before it (the migrations after it, then it) drops api_keys and keeps
    // jobs.
    let known = jobs_store::known_migrations();
    let at = known
        .iter()
        .position(|name| name == "m20261125_000002_create_api_keys")
        .expect("the api_keys migration");
    let steps = u32::try_from(known.len() - at).unwrap();
    migrate_down(s.connection(), Some(steps)).await.unwrap();
    assert!(!table_exists(s, "api_keys").await, "api_keys survived down");
    assert!(table_exists(s, "jobs").await, "down dropped jobs too");

    // Up again on a fresh pool (SQLite connections cache the schema they saw).
    let again = db.connect_again().await;
    migrate_up(again.connection()).await.unwrap();
    assert!(table_exists(&again, "api_keys").await);
    assert_eq!(again.tenant_for_key(&key.secret).await.unwrap(), None);
    let fresh = again.create_api_key("acme").await.unwrap();
    assert_eq!(
        again
            .tenant_for_key(&fresh.secret)
            .await
            .unwrap()
            .as_deref(),
        Some("acme")
    );
    // The unique index on key_hash is back: the same hash cannot be stored twice.
    let duplicate = format!(
        "INSERT INTO api_keys (id, tenant, key_hash, prefix, created_at) \
         SELECT '{}', tenant, key_hash, prefix, created_at FROM api_keys",
        Uuid::now_v7()
    );
    let conn = again.connection();
    let result = conn
        .execute_raw(Statement::from_string(
            conn.get_database_backend(),
            duplicate,
        ))
        .await;
    let error = result.expect_err("a second row with the same key_hash was stored");
    assert!(
        error.to_string().to_lowercase().contains("unique"),
        "not a uniqueness violation: {error}"
    );
}
