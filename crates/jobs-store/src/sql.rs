//! The few places where PostgreSQL and SQLite SQL differ, and a builder that numbers
//! parameters, so each query is written once for both backends.
//!
//! SQLite keeps timestamps as fixed-width UTC text (`YYYY-MM-DDTHH:MM:SS.mmmZ`) written
//! by the store itself, so comparing and ordering them as text is comparing instants.

use sea_orm::{DbBackend, Statement, Value, sea_query::sea_value_to_json_value};
use time::{
    OffsetDateTime, UtcOffset, format_description::BorrowedFormatItem, macros::format_description,
};

const SQLITE_TIME: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
const SQLITE_NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub(crate) fn of(backend: DbBackend) -> Self {
        match backend {
            DbBackend::Sqlite => Dialect::Sqlite,
            _ => Dialect::Postgres,
        }
    }

    pub(crate) fn backend(self) -> DbBackend {
        match self {
            Dialect::Postgres => DbBackend::Postgres,
            Dialect::Sqlite => DbBackend::Sqlite,
        }
    }

    /// The database clock; it alone decides what is due and what has expired.
    pub(crate) fn now(self) -> &'static str {
        match self {
            Dialect::Postgres => "now()",
            Dialect::Sqlite => SQLITE_NOW,
        }
    }

    /// The database clock when the statement began. On PostgreSQL `now()` is when the
    /// transaction began, which may be long before a statement that waited for a lock.
    pub(crate) fn statement_now(self) -> &'static str {
        match self {
            Dialect::Postgres => "statement_timestamp()",
            Dialect::Sqlite => SQLITE_NOW,
        }
    }

    /// `statement_now` plus an SQL expression counting milliseconds.
    pub(crate) fn statement_now_plus_ms(self, ms: &str) -> String {
        match self {
            Dialect::Postgres => {
                format!("(statement_timestamp() + ({ms}) * interval '1 millisecond')")
            }
            Dialect::Sqlite => self.now_plus_ms(ms),
        }
    }

    /// The database clock plus an SQL expression counting milliseconds.
    pub(crate) fn now_plus_ms(self, ms: &str) -> String {
        match self {
            Dialect::Postgres => format!("(now() + ({ms}) * interval '1 millisecond')"),
            Dialect::Sqlite => {
                format!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', (({ms}) / 1000.0) || ' seconds')")
            }
        }
    }

    /// The error history `errors` with one more entry, stamped by the database clock.
    /// Arguments are SQL expressions.
    pub(crate) fn append_attempt_error(
        self,
        errors: &str,
        attempt: &str,
        kind: &str,
        message: &str,
    ) -> String {
        let entry = self.json_object(&[
            ("attempt", attempt),
            ("kind", kind),
            ("message", message),
            ("at", self.now()),
        ]);
        self.json_append(errors, &entry)
    }

    /// The `kind` of the last entry of the error history `errors` (an SQL expression);
    /// NULL when the history is empty.
    pub(crate) fn last_error_kind(self, errors: &str) -> String {
        match self {
            Dialect::Postgres => format!("({errors} -> -1 ->> 'kind')"),
            Dialect::Sqlite => format!("json_extract({errors}, '$[#-1].kind')"),
        }
    }

    /// A JSON object built from alternating key and value expressions.
    fn json_object(self, pairs: &[(&str, &str)]) -> String {
        let function = match self {
            Dialect::Postgres => "jsonb_build_object",
            Dialect::Sqlite => "json_object",
        };
        let args: Vec<String> = pairs.iter().map(|(k, v)| format!("'{k}', {v}")).collect();
        format!("{function}({})", args.join(", "))
    }

    /// `array` with `element` appended.
    fn json_append(self, array: &str, element: &str) -> String {
        match self {
            Dialect::Postgres => format!("({array} || jsonb_build_array({element}))"),
            Dialect::Sqlite => format!("json_insert({array}, '$[#]', {element})"),
        }
    }

    /// Whole milliseconds (rounded down) from the instant in column `at` to
    /// `statement_now`: an instant 999.6 ms old is 999 ms old, still within a second.
    pub(crate) fn age_ms(self, at: &str) -> String {
        match self {
            Dialect::Postgres => format!(
                "CAST(FLOOR(EXTRACT(EPOCH FROM (statement_timestamp() - {at})) * 1000) AS BIGINT)"
            ),
            // CAST truncates, which for an age (never negative) is rounding down; SQLite
            // has FLOOR only when built with its math functions.
            Dialect::Sqlite => {
                format!("CAST((julianday('now') - julianday({at})) * 86400000 AS INTEGER)")
            }
        }
    }

    /// The UTC minute of the instant in column `at`, as text `YYYY-MM-DDTHH:MM`.
    pub(crate) fn minute_text(self, at: &str) -> String {
        match self {
            Dialect::Postgres => {
                format!("to_char({at} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI')")
            }
            // Stored as fixed-width UTC text: the minute is its first 16 characters.
            Dialect::Sqlite => format!("substr({at}, 1, 16)"),
        }
    }

    /// The bytes that the hexadecimal text `expr` spells (rows of `rows_cte` carry bytes
    /// so, being JSON).
    pub(crate) fn unhex(self, expr: &str) -> String {
        match self {
            Dialect::Postgres => format!("decode({expr}, 'hex')"),
            Dialect::Sqlite => format!("unhex({expr})"),
        }
    }

    /// A fresh random uuid per row: a lease token.
    pub(crate) fn random_uuid(self) -> &'static str {
        match self {
            Dialect::Postgres => "gen_random_uuid()",
            // Ids are stored as 16-byte blobs.
            Dialect::Sqlite => "randomblob(16)",
        }
    }

    /// ` = ANY(ARRAY(SELECT id FROM cte))` (PostgreSQL) or ` IN (SELECT id FROM cte)`, to
    /// follow the ids a CTE picked. PostgreSQL then reads each row by its primary key;
    /// with a join (or `IN`) the planner, which cannot count a materialized CTE's rows,
    /// may hash the CTE and scan the whole table for its matches.
    pub(crate) fn in_cte_ids(self, cte: &str) -> String {
        match self {
            Dialect::Postgres => format!(" = ANY(ARRAY(SELECT id FROM {cte}))"),
            Dialect::Sqlite => format!(" IN (SELECT id FROM {cte})"),
        }
    }

    /// Row locking for claim-style subqueries; SQLite has one writer and needs none.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        }
    }

    /// A time as text that the database reads as an instant (for `rows_cte`).
    pub(crate) fn time_text(self, at: Option<OffsetDateTime>) -> Value {
        match self {
            // In UTC: PostgreSQL reads offsets up to ±15:59 only, RFC 3339 allows ±23:59.
            Dialect::Postgres => Value::from(at.map(|t| {
                t.to_offset(UtcOffset::UTC)
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("an instant within years 1..=9999 formats")
            })),
            Dialect::Sqlite => Value::from(at.map(sqlite_time)),
        }
    }

    pub(crate) fn time(self, at: Option<OffsetDateTime>) -> Value {
        match self {
            Dialect::Postgres => Value::from(at),
            Dialect::Sqlite => Value::from(at.map(sqlite_time)),
        }
    }
}

fn sqlite_time(at: OffsetDateTime) -> String {
    at.to_offset(UtcOffset::UTC)
        .format(SQLITE_TIME)
        .expect("a UTC instant within years 0..=9999 formats")
}

/// A statement under construction: `bind` returns the placeholder of each new value.
#[derive(Debug)]
pub(crate) struct Sql {
    dialect: Dialect,
    pub(crate) text: String,
    values: Vec<Value>,
}

impl Sql {
    pub(crate) fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            text: String::new(),
            values: Vec::new(),
        }
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub(crate) fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        format!("${}", self.values.len())
    }

    pub(crate) fn bind_time(&mut self, at: Option<OffsetDateTime>) -> String {
        let value = self.dialect.time(at);
        self.bind(value)
    }

    /// `$1, $2, ...` for a list of values, as used in `IN (...)`.
    pub(crate) fn bind_list<V: Into<Value>>(
        &mut self,
        values: impl IntoIterator<Item = V>,
    ) -> String {
        let placeholders: Vec<String> = values.into_iter().map(|v| self.bind(v)).collect();
        placeholders.join(", ")
    }

    /// ` = ANY($1)` (PostgreSQL) or ` IN (SELECT ... FROM json_each($1))` (SQLite), to
    /// follow a column of job ids: one parameter and the same statement text for any
    /// number of ids (SQLite allows at most 32,766 parameters).
    pub(crate) fn in_ids(&mut self, ids: &[jobs_core::JobId]) -> String {
        self.in_uuids(ids.iter().map(|id| id.as_uuid()))
    }

    /// As `in_ids`, for any uuid column.
    pub(crate) fn in_uuids(&mut self, uuids: impl Iterator<Item = uuid::Uuid>) -> String {
        match self.dialect {
            Dialect::Postgres => format!(" = ANY({})", self.bind(uuids.collect::<Vec<_>>())),
            Dialect::Sqlite => {
                let text: Vec<serde_json::Value> = uuids
                    .map(|u| serde_json::Value::from(u.simple().to_string()))
                    .collect();
                let list = self.bind(serde_json::Value::Array(text));
                // Ids are stored as 16-byte blobs.
                format!(" IN (SELECT unhex(value) FROM json_each({list}))")
            }
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub(crate) fn build(self) -> Statement {
        Statement::from_sql_and_values(self.dialect.backend(), self.text, self.values)
    }
}

/// A CTE `name` of `rows` with typed `columns`, sent as one JSON parameter: the
/// statement text, and its prepared plan, are the same for any number of rows. A VALUES
/// list of thousands of parameters would be planned anew for each batch size on
/// PostgreSQL, and on SQLite binding numbered parameters costs time quadratic in their
/// number. Times must be passed as `Dialect::time_text`.
pub(crate) fn rows_cte(
    sql: &mut Sql,
    name: &str,
    columns: &[(&str, &str)],
    rows: Vec<Vec<Value>>,
) -> String {
    let objects = rows
        .iter()
        .map(|row| {
            let names = columns.iter().map(|(n, _)| n.to_string());
            let values = row.iter().map(sea_value_to_json_value);
            // A missing key reads as NULL, as a JSON null does: leaving nulls out makes
            // the parameter shorter to send and to parse (an outcome batch of completed
            // jobs is half nulls).
            serde_json::Value::Object(names.zip(values).filter(|(_, v)| !v.is_null()).collect())
        })
        .collect();
    let param = sql.bind(serde_json::Value::Array(objects));
    match sql.dialect {
        Dialect::Postgres => {
            let typed: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
            format!(
                "{name} AS (SELECT * FROM jsonb_to_recordset({param}::jsonb) AS x({}))",
                typed.join(", ")
            )
        }
        Dialect::Sqlite => {
            let fields: Vec<String> = columns
                .iter()
                .map(|(n, t)| match *t {
                    // Ids are stored as 16-byte blobs.
                    "uuid" => format!("unhex(replace(value ->> '{n}', '-', '')) AS {n}"),
                    // JSON as text; a JSON null is no value, as on PostgreSQL.
                    "jsonb" => format!("NULLIF(value -> '{n}', 'null') AS {n}"),
                    _ => format!("value ->> '{n}' AS {n}"),
                })
                .collect();
            format!(
                "{name} AS (SELECT {} FROM json_each({param}))",
                fields.join(", ")
            )
        }
    }
}

/// `'a', 'b'` for a list of states, so SQL conditions follow the state machine.
pub(crate) fn state_list(states: &[jobs_core::State]) -> String {
    let quoted: Vec<String> = states.iter().map(|s| format!("'{s}'")).collect();
    quoted.join(", ")
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn sqlite_times_are_fixed_width_utc() {
        let t = datetime!(2026-11-25 18:47:45.5 +01:00);
        assert_eq!(sqlite_time(t), "2026-11-25T17:47:45.500Z");
        let whole = datetime!(2026-11-25 17:47:45 UTC);
        assert_eq!(sqlite_time(whole), "2026-11-25T17:47:45.000Z");
        assert!(
            sqlite_time(whole) < sqlite_time(t),
            "text order is time order"
        );
    }
}
