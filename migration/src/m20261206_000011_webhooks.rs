//! Webhooks: per-tenant subscriptions (`jobs_webhooks`) and the triggers that turn each
//! subscribed job event into a delivery job, in the transaction of the change itself, so
//! no path that changes a job (enqueue, claim, progress, finish, cancel, rescue, sweeps,
//! bulk actions, workflow releases) can skip one and no crash can lose one.
//!
//! - PostgreSQL: statement-level AFTER INSERT and AFTER UPDATE triggers with transition
//!   tables. The function returns after one probe of an empty table while nobody
//!   subscribes, and after a scan of the changed rows while none of their tenants does;
//!   else one INSERT writes the deliveries and one `pg_notify` wakes the queue's workers,
//!   as an enqueue does.
//! - SQLite: row-level triggers whose WHEN clause looks the row's tenant up in the
//!   subscriptions (an index probe), so a tenant without subscriptions pays no more.
//!
//! Events: `job.created` (insert), `job.started`, `job.completed`, `job.partial`,
//! `job.failed`, `job.cancelled` (the state it moved to), `job.retrying` (running back
//! to pending with its attempt charged), `job.progress` (a running job's progress or
//! stage changed). Delivery jobs (kind `webhook`) emit none. A delivery's arguments are
//! `{"webhook_id", "event": {"type", "timestamp", "data": {...job summary}}}`: the
//! shape of `jobs_core::webhook::Delivery`.
//!
//! Additive: older binaries leave delivery jobs alone (they claim only queues they
//! serve), so `oldest_compatible` stays.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

/// The kind and queue of delivery jobs (`jobs_core::webhook::{WEBHOOK_KIND, WEBHOOK_QUEUE}`).
pub const KIND: &str = "webhook";
pub const QUEUE: &str = "webhooks";
/// The channel enqueues NOTIFY (`jobs_store::ENQUEUED_CHANNEL`).
pub const ENQUEUED_CHANNEL: &str = "jobs_enqueued";
/// What a delivery job gets: the defaults of a new job (priority 5, 20 attempts, kept
/// 7 days).
const PRIORITY: i32 = 5;
const MAX_ATTEMPTS: i32 = 20;
const RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(DeriveIden)]
enum JobsWebhooks {
    Table,
    Id,
    Tenant,
    Url,
    Events,
    Secret,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(JobsWebhooks::Table)
                    .col(uuid(JobsWebhooks::Id).primary_key())
                    .col(text(JobsWebhooks::Tenant))
                    .col(text(JobsWebhooks::Url))
                    .col(json_binary(JobsWebhooks::Events))
                    .col(text(JobsWebhooks::Secret))
                    .col(timestamp_with_time_zone(JobsWebhooks::CreatedAt))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX jobs_webhooks_tenant_idx ON jobs_webhooks (tenant, created_at, id)",
        )
        .await?;
        let sql = Sql::of(manager.get_database_backend());
        for statement in sql.create_triggers() {
            db.execute_unprepared(&statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in Sql::of(manager.get_database_backend()).drop_triggers() {
            db.execute_unprepared(statement).await?;
        }
        // Deliveries not yet sent would find no subscription: they end unsent.
        manager
            .drop_table(Table::drop().table(JobsWebhooks::Table).to_owned())
            .await
    }
}

/// The trigger SQL of one backend.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sql {
    Postgres,
    Sqlite,
}

/// The job columns an event reads.
const EVENT_COLUMNS: [&str; 11] = [
    "id",
    "tenant",
    "queue",
    "kind",
    "state",
    "attempt",
    "max_attempts",
    "progress",
    "stage",
    "errors",
    "trace_id",
];

impl Sql {
    fn of(backend: sea_orm::DbBackend) -> Self {
        match backend {
            sea_orm::DbBackend::Sqlite => Sql::Sqlite,
            _ => Sql::Postgres,
        }
    }

    fn create_triggers(self) -> Vec<String> {
        match self {
            Sql::Postgres => vec![
                self.pg_function(),
                "CREATE TRIGGER jobs_webhook_inserted AFTER INSERT ON jobs \
                 REFERENCING NEW TABLE AS new_rows \
                 FOR EACH STATEMENT EXECUTE FUNCTION jobs_webhook_events()"
                    .into(),
                "CREATE TRIGGER jobs_webhook_updated AFTER UPDATE ON jobs \
                 REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows \
                 FOR EACH STATEMENT EXECUTE FUNCTION jobs_webhook_events()"
                    .into(),
            ],
            Sql::Sqlite => {
                let subscribed = format!(
                    "NEW.kind <> '{KIND}' AND EXISTS (SELECT 1 FROM jobs_webhooks w WHERE w.tenant = NEW.tenant)"
                );
                vec![
                    format!(
                        "CREATE TRIGGER jobs_webhook_inserted AFTER INSERT ON jobs FOR EACH ROW \
                         WHEN {subscribed} BEGIN {}; END",
                        self.insert_deliveries(&self.sqlite_row("'job.created'"))
                    ),
                    format!(
                        "CREATE TRIGGER jobs_webhook_updated AFTER UPDATE OF state, progress, stage \
                         ON jobs FOR EACH ROW WHEN {subscribed} BEGIN {}; END",
                        self.insert_deliveries(&self.sqlite_row(&event_of("NEW", "OLD")))
                    ),
                ]
            }
        }
    }

    fn drop_triggers(self) -> Vec<&'static str> {
        match self {
            Sql::Postgres => vec![
                "DROP TRIGGER jobs_webhook_inserted ON jobs",
                "DROP TRIGGER jobs_webhook_updated ON jobs",
                "DROP FUNCTION jobs_webhook_events()",
            ],
            Sql::Sqlite => vec![
                "DROP TRIGGER jobs_webhook_inserted",
                "DROP TRIGGER jobs_webhook_updated",
            ],
        }
    }

    /// The one function of both PostgreSQL triggers. The delivery INSERT fires the
    /// insert trigger again: its rows are all deliveries, so the second check ends it.
    fn pg_function(self) -> String {
        let columns: Vec<String> = EVENT_COLUMNS.iter().map(|c| format!("n.{c}")).collect();
        let columns = columns.join(", ");
        let inserted = format!("(SELECT {columns}, 'job.created' AS event FROM new_rows n) e");
        let updated = format!(
            "(SELECT {columns}, {} AS event FROM new_rows n JOIN old_rows o ON o.id = n.id) e",
            event_of("n", "o")
        );
        format!(
            "CREATE FUNCTION jobs_webhook_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  sent bigint;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM jobs_webhooks) THEN
    RETURN NULL;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM new_rows n JOIN jobs_webhooks w ON w.tenant = n.tenant
                 WHERE n.kind <> '{KIND}') THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    {};
  ELSE
    {};
  END IF;
  GET DIAGNOSTICS sent = ROW_COUNT;
  IF sent > 0 THEN
    PERFORM pg_notify('{ENQUEUED_CHANNEL}', '{QUEUE}');
  END IF;
  RETURN NULL;
END
$$",
            self.insert_deliveries(&inserted),
            self.insert_deliveries(&updated),
        )
    }

    /// The row of a SQLite trigger as the derived table `e`, with its `event`.
    fn sqlite_row(self, event: &str) -> String {
        let columns: Vec<String> = EVENT_COLUMNS
            .iter()
            .map(|c| format!("NEW.{c} AS {c}"))
            .collect();
        format!("(SELECT {}, {event} AS event) e", columns.join(", "))
    }

    /// One delivery job per subscription of `e`'s tenant to `e.event`, `e` being the
    /// derived table `source` of changed rows (NULL events are no event).
    fn insert_deliveries(self, source: &str) -> String {
        let (uuid, now, subscribed) = match self {
            Sql::Postgres => (
                "gen_random_uuid()",
                "now()",
                "w.events @> jsonb_build_array(e.event)",
            ),
            Sql::Sqlite => (
                // Ids are stored as 16-byte blobs.
                "randomblob(16)",
                "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                "EXISTS (SELECT 1 FROM json_each(w.events) WHERE value = e.event)",
            ),
        };
        format!(
            "INSERT INTO jobs (id, tenant, queue, kind, args, state, priority, run_at, attempt, \
               max_attempts, retention_ms, progress, errors, trace_id, metadata, created_at, updated_at) \
             SELECT {uuid}, e.tenant, '{QUEUE}', '{KIND}', {args}, 'pending', {PRIORITY}, {now}, 0, \
               {MAX_ATTEMPTS}, {RETENTION_MS}, 0, {empty_list}, e.trace_id, {empty_object}, {now}, {now} \
             FROM {source} JOIN jobs_webhooks w ON w.tenant = e.tenant AND {subscribed} \
             WHERE e.event IS NOT NULL AND e.kind <> '{KIND}'",
            args = self.delivery_args(),
            empty_list = self.json("[]"),
            empty_object = self.json("{}"),
        )
    }

    /// `{"webhook_id", "event": {"type", "timestamp", "data"}}` of subscription `w` and
    /// event row `e`; `data.error` is the last attempt error of a failure.
    fn delivery_args(self) -> String {
        let object = |pairs: &[(&str, String)]| {
            let function = match self {
                Sql::Postgres => "jsonb_build_object",
                Sql::Sqlite => "json_object",
            };
            let args: Vec<String> = pairs.iter().map(|(k, v)| format!("'{k}', {v}")).collect();
            format!("{function}({})", args.join(", "))
        };
        let (timestamp, last_error) = match self {
            Sql::Postgres => (
                "to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
                "e.errors -> -1",
            ),
            Sql::Sqlite => (
                "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                "json(e.errors -> '$[#-1]')",
            ),
        };
        let data = object(&[
            ("id", self.uuid_text("e.id")),
            ("queue", "e.queue".into()),
            ("kind", "e.kind".into()),
            ("state", "e.state".into()),
            ("attempt", "e.attempt".into()),
            ("max_attempts", "e.max_attempts".into()),
            ("progress", "e.progress".into()),
            ("stage", "e.stage".into()),
            (
                "error",
                format!(
                    "CASE WHEN e.event IN ('job.failed', 'job.retrying') THEN {last_error} END"
                ),
            ),
        ]);
        let event = object(&[
            ("type", "e.event".into()),
            ("timestamp", timestamp.into()),
            ("data", data),
        ]);
        object(&[("webhook_id", self.uuid_text("w.id")), ("event", event)])
    }

    /// A uuid column as its canonical text.
    fn uuid_text(self, column: &str) -> String {
        match self {
            Sql::Postgres => format!("{column}::text"),
            Sql::Sqlite => {
                let part = |start: u32, len: u32| format!("substr(hex({column}), {start}, {len})");
                format!(
                    "lower({} || '-' || {} || '-' || {} || '-' || {} || '-' || {})",
                    part(1, 8),
                    part(9, 4),
                    part(13, 4),
                    part(17, 4),
                    part(21, 12)
                )
            }
        }
    }

    fn json(self, literal: &str) -> String {
        match self {
            Sql::Postgres => format!("'{literal}'::jsonb"),
            Sql::Sqlite => format!("'{literal}'"),
        }
    }
}

/// The event of a row that moved from `old` to `new` (table aliases), NULL for none:
/// a new state names it, except running back to pending, which is a retry when the
/// attempt was charged (a release or snooze gives it back); a running job's progress or
/// stage that changed is progress.
fn event_of(new: &str, old: &str) -> String {
    format!(
        "CASE \
           WHEN {new}.state = {old}.state THEN \
             CASE WHEN {new}.state = 'running' \
               AND ({new}.progress <> {old}.progress OR {new}.stage IS DISTINCT FROM {old}.stage) \
             THEN 'job.progress' END \
           WHEN {new}.state = 'running' THEN 'job.started' \
           WHEN {new}.state IN ('completed', 'partial', 'failed', 'cancelled') \
             THEN 'job.' || {new}.state \
           WHEN {old}.state = 'running' AND {new}.state = 'pending' \
             AND {new}.attempt = {old}.attempt THEN 'job.retrying' \
         END"
    )
}
