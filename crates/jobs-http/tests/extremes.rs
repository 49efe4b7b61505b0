//! Extreme values against every write endpoint and the listing, each body on SQLite and
//! PostgreSQL, over a real socket. The rule: no 5xx from any request built from valid
//! JSON. Invalid values are 400 problems naming the field, stale leases 409, unknown ids
//! 404.
//!
//! The property tests draw their requests from proptest strategies with a fixed seed (so
//! CI sees the same requests every run) and send them one after another: half of them
//! anything (wrong types, NUL characters, numbers past every range, instants past year
//! 9999, nesting past serde_json's limit, 100 KB strings), half valid but extreme, so that
//! those reach the database. Every answer must be below 500, every 4xx a problem document
//! with `type` and `status`, and every 400 must name fields. What was written is read back
//! (the job after each accepted worker call; every page of the listing at the end). All
//! failures of a run are collected and printed together, each with its request.
//! `PROPTEST_CASES` sets the cases per endpoint, `EXTREMES_SEED` another fixed seed, and
//! `EXTREMES_LOG` prints every request with its answer (with `--nocapture`).
//!
//! The regression tests below them pin specific promises about unstorable values.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::Api;
use jobs_core::State;
use jobs_store::{backend_tests, testing::TestDb};
use proptest::{
    collection::{btree_map, vec},
    prelude::*,
    sample::select,
    strategy::ValueTree,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;

backend_tests!(
    extreme_creates_never_answer_5xx,
    extreme_batches_never_answer_5xx,
    extreme_list_queries_never_answer_5xx,
    extreme_claims_never_answer_5xx,
    extreme_heartbeats_never_answer_5xx,
    extreme_completes_never_answer_5xx,
    extreme_fails_never_answer_5xx,
    extreme_queue_limits_never_answer_5xx,
    a_nul_in_args_is_refused_alone_among_concurrent_creates,
    instants_past_year_9999_in_utc_are_refused_by_field,
    a_result_holding_nul_is_refused_and_the_job_keeps_running,
    a_huge_failure_is_stored_truncated_and_retried_within_ten_years,
    claims_naming_too_many_or_unstorable_queues_are_refused,
    offsets_beyond_15_hours_are_stored_as_the_instant_they_name,
    doubles_near_the_limit_round_trip_through_the_store,
);

/// Cases per endpoint per backend, unless `PROPTEST_CASES` says otherwise.
const CASES: usize = 200;
/// Large enough for the 100 KB strings to reach the handlers and the database.
const BODY_LIMIT: usize = 1 << 20;
const HUNDRED_KB: usize = 100 * 1024;

async fn start(db: &TestDb) -> Api {
    Api::start_with(
        &db.store,
        jobs_http::ApiConfig {
            body_limit: BODY_LIMIT,
            workers: Some(1),
            ..Default::default()
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Raw JSON: values `serde_json::Value` cannot hold (1e999, -0, lone surrogates) travel as
// placeholder strings and are put into the body text after serialisation.

/// Marks a placeholder; private-use characters that no strategy below produces in a row.
const RAW: &str = "\u{E000}raw\u{E000}";

/// JSON number texts, each valid JSON, most beyond what a double or an i64 holds.
const RAW_NUMBERS: &[&str] = &[
    "1e999",
    "-1e999",
    "1E+400",
    "1e-999",
    "-1e-400",
    "123456789012345678901234567890",
    "18446744073709551616",
    "-9223372036854775809",
    "-0",
    "-0.0",
    "0e0",
    "0.0e-0",
    "4.9e-324",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "9007199254740993",
    "46.0",
    "1e2",
    "1.5e1",
    "0.30000000000000004",
];

/// Raw numbers that, read as seconds, are at most 0.05 or refused: the only ones sent as
/// `wait_seconds`, so that no claim long-polls.
const RAW_SHORT_WAITS: &[&str] = &[
    "1e999", "-1e999", "1e-999", "-1e-400", "-0", "-0.0", "0e0", "4.9e-324",
];

/// JSON string texts with escapes: lone surrogates (valid JSON grammar, not Unicode), an
/// escaped NUL, a surrogate pair, escaped control characters.
const RAW_STRINGS: &[&str] = &[
    r#""\ud800""#,
    r#""\udfff""#,
    r#""a\ud800b""#,
    r#""\u0000""#,
    r#""\ud83d\ude00""#,
    r#""\u001f\u007f\b\f\n\r\t""#,
    r#""\uFEFF\uFFFF\uFFFE""#,
];

fn raw(text: &str) -> Value {
    Value::String(format!("{RAW}{text}{RAW}"))
}

/// The body text of `value`, placeholders replaced by their raw JSON.
fn body_text(value: &Value) -> String {
    let mut text = serde_json::to_string(value).expect("serialise");
    let (open, close) = (format!("\"{RAW}"), format!("{RAW}\""));
    while let Some(start) = text.find(&open) {
        let inner = start + open.len();
        let end = inner + text[inner..].find(&close).expect("a whole placeholder");
        let raw_text: String =
            serde_json::from_str(&format!("\"{}\"", &text[inner..end])).expect("placeholder text");
        text.replace_range(start..end + close.len(), &raw_text);
    }
    text
}

// ---------------------------------------------------------------------------------------
// Value strategies.

fn deep_array(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| Value::Array(vec![inner]))
}

fn deep_object(depth: usize) -> Value {
    (0..depth).fold(json!("leaf"), |inner, _| json!({ "a": inner }))
}

/// Strings of about 100 KB: plain, with NUL characters, emoji, right-to-left text.
fn long_strings() -> Vec<String> {
    vec![
        "x".repeat(HUNDRED_KB),
        format!(
            "{}\u{0}{}",
            "a\u{0}b".repeat(HUNDRED_KB / 6),
            "z".repeat(HUNDRED_KB / 2)
        ),
        "😀".repeat(HUNDRED_KB / 4),
        "\u{202E}שלום مرحبا\u{200F}".repeat(HUNDRED_KB / 24),
        "\u{1}\u{7}\u{1b}[31m\u{7f}".repeat(HUNDRED_KB / 8),
    ]
}

fn special_strings() -> Vec<String> {
    [
        "",
        "\u{0}",
        "a\u{0}b",
        "\u{0}\u{0}\u{0}",
        " ",
        "\t\n\r",
        "\u{1}\u{2}\u{1b}\u{7f}",
        "\u{85}\u{9f}",
        "😀",
        "👨‍👩‍👧‍👦🏳️‍🌈",
        "\u{202E}txt.exe",
        "שלום עולם",
        "مرحبا بالعالم",
        "\u{200F}\u{200E}\u{2066}\u{2069}",
        "\u{FEFF}",
        "\u{FFFD}",
        "\u{FFFF}",
        "\u{10FFFF}",
        "e\u{301}\u{301}\u{301}",
        "null",
        "true",
        "0",
        "-0",
        "1e999",
        "NaN",
        "Infinity",
        "../../etc/passwd",
        "'; DROP TABLE jobs; --",
        "%00",
        "\\u0000",
        "default",
        "k",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        "a".repeat(128),
        "a".repeat(129),
        "a".repeat(255),
        "a".repeat(256),
        "é".repeat(128),
    ])
    .collect()
}

/// Strings, mostly short, sometimes with control characters or 100 KB long.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[A-Za-z0-9_.:/-]{1,12}",
        2 => "\\PC{0,16}",
        2 => "[\\x00-\\x1F\\x7F\\x{80}-\\x{9F}a]{1,6}",
        3 => select(special_strings()),
        1 => select(long_strings()),
    ]
    .boxed()
}

/// Strings that are never long: object keys, and most leaves of generated JSON.
fn short_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z]{1,6}",
        2 => "\\PC{0,8}",
        1 => "[\\x00-\\x1F\\x7F]{1,3}",
        2 => select(special_strings()[..32].to_vec()),
    ]
    .boxed()
}

fn number() -> BoxedStrategy<Value> {
    let fixed = vec![
        json!(i64::MIN),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(i32::MIN),
        json!(i32::MAX),
        json!(u32::MAX),
        json!(i16::MIN),
        json!(i16::MAX),
        json!(0),
        json!(-1),
        json!(1),
        json!(1e308),
        json!(-1e308),
        json!(f64::MAX),
        json!(f64::MIN),
        json!(-0.0),
        json!(0.5),
        json!(1.5),
        json!(-1.5),
        json!(46.0),
        json!(f64::MIN_POSITIVE),
        json!(5e-324),
        json!(f64::EPSILON),
        json!(9_007_199_254_740_993u64),
        json!(9_007_199_254_740_992.0),
    ];
    prop_oneof![
        4 => select(fixed),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        2 => proptest::num::f64::ANY.prop_map(|f| if f.is_finite() { json!(f) } else { json!(1e300) }),
        2 => select(RAW_NUMBERS).prop_map(raw),
    ]
    .boxed()
}

const TIMES: &[&str] = &[
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59.999999999Z",
    "9999-12-31T23:59:59.9999999999999Z",
    "0001-01-01T00:00:00.000000001+00:00",
    "0000-12-31T23:59:59-00:01",
    "9999-12-31T23:59:60Z",
    "2016-12-31T23:59:60Z",
    "2015-06-30T23:59:60+00:00",
    "2016-12-31T23:59:60+01:00",
    "2017-01-01T12:00:60Z",
    "1970-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999999Z",
    "2000-01-01T00:00:00Z",
    "2030-01-01T00:00:00Z",
    "2100-01-01T00:00:00Z",
    "10000-01-01T00:00:00Z",
    "-0001-01-01T00:00:00Z",
    "+002024-01-01T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2023-02-29T00:00:00Z",
    "2024-02-29T00:00:00Z",
    "2024-01-01T24:00:00Z",
    "2024-01-01T00:00:00+24:00",
    "2024-01-01T00:00:00-00:00",
    "2024-01-01t00:00:00z",
    "2024-01-01 00:00:00Z",
    "2024-01-01T00:00:00",
    "2024-01-01",
    "00:00:00Z",
    "",
    "Z",
];

/// RFC 3339 instants at and past the ends of the accepted range, leap seconds, offsets at
/// their limits, and near misses of the format.
fn timestamp() -> BoxedStrategy<Value> {
    let generated = (
        prop_oneof![Just(0i32), Just(1), Just(9999), 1i32..=9999],
        1u8..=12,
        1u8..=31,
        0u8..=24,
        0u8..=60,
        0u8..=61,
        select(vec!["Z", "+23:59", "-23:59", "+00:00", "+05:30", "-12:00"]),
    )
        .prop_map(|(y, mo, d, h, mi, s, off)| {
            json!(format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{off}"))
        });
    prop_oneof![
        3 => select(TIMES).prop_map(|t| json!(t)),
        2 => generated,
        1 => leaf(),
    ]
    .boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => number(),
        3 => short_text().prop_map(Value::String),
        1 => select(TIMES).prop_map(|t| json!(t)),
        1 => select(RAW_STRINGS).prop_map(raw),
    ]
    .boxed()
}

fn object_of(values: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    btree_map(short_text(), values, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed()
}

/// Any JSON: small trees of extreme leaves, rarely a 100 KB string, deep nesting (200
/// levels, past serde_json's limit of 128, and just below it), empty containers.
fn any_json() -> BoxedStrategy<Value> {
    let tree = leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            object_of(inner),
        ]
    });
    prop_oneof![
        12 => tree,
        1 => select(long_strings()).prop_map(Value::String),
        2 => select(vec![
            json!([]),
            json!({}),
            json!([[]]),
            json!({"": {}}),
            json!([null]),
            deep_array(200),
            deep_object(200),
            deep_array(126),
            deep_object(120),
            deep_array(64),
        ]),
    ]
    .boxed()
}

/// A field's value: mostly from `typical` (often valid), else anything.
fn field(typical: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![
        6 => typical,
        3 => any_json(),
        1 => Just(Value::Null),
    ]
    .boxed()
}

/// A JSON object with each field present with its probability.
fn object(fields: Vec<(&'static str, f64, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let names: Vec<&'static str> = fields.iter().map(|(name, _, _)| *name).collect();
    let present: Vec<_> = fields
        .into_iter()
        .map(|(_, p, values)| {
            if p >= 1.0 {
                values.prop_map(Some).boxed()
            } else {
                proptest::option::weighted(p, values).boxed()
            }
        })
        .collect();
    let all_null = Just(Value::Object(
        names
            .iter()
            .map(|n| ((*n).to_owned(), Value::Null))
            .collect(),
    ));
    let objects = present.prop_map(move |values| {
        Value::Object(
            names
                .iter()
                .zip(values)
                .filter_map(|(name, v)| v.map(|v| ((*name).to_owned(), v)))
                .collect(),
        )
    });
    prop_oneof![
        20 => objects,
        1 => all_null,
        1 => any_json(),
    ]
    .boxed()
}

fn ints(values: &[i64]) -> BoxedStrategy<Value> {
    select(values.to_vec()).prop_map(Value::from).boxed()
}

fn name() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => "[A-Za-z0-9_.:/-]{1,16}".prop_map(Value::String),
        2 => text().prop_map(Value::String),
    ]
    .boxed()
}

fn names() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => vec(name(), 0..4).prop_map(Value::Array),
        1 => Just(Value::Array((0..101).map(|i| json!(format!("q{i}"))).collect())),
        1 => Just(Value::Array((0..100).map(|i| json!(format!("q{i}"))).collect())),
        1 => Just(json!(["default", "default"])),
    ]
    .boxed()
}

fn create_chaos() -> BoxedStrategy<Value> {
    let durations =
        |max: i64| prop_oneof![ints(&[0, 1, 1000, max, max + 1, 60_000]), number(),].boxed();
    object(vec![
        ("kind", 0.9, field(name())),
        ("args", 0.6, any_json()),
        ("queue", 0.4, field(name())),
        (
            "priority",
            0.4,
            field(prop_oneof![(0i64..=10).prop_map(Value::from), number()].boxed()),
        ),
        ("run_at", 0.3, field(timestamp())),
        ("delay_ms", 0.2, field(durations(315_360_000_000))),
        (
            "max_attempts",
            0.3,
            field(prop_oneof![ints(&[1, 20, 1000, 0, 1001, -1]), number()].boxed()),
        ),
        ("timeout_ms", 0.3, field(durations(315_360_000_000))),
        ("deadline", 0.3, field(timestamp())),
        ("ttl_seconds", 0.3, field(durations(315_360_000))),
        (
            "unique_key",
            0.3,
            field(
                prop_oneof![
                    "u-[0-9]".prop_map(Value::String),
                    text().prop_map(Value::String),
                ]
                .boxed(),
            ),
        ),
        ("metadata", 0.3, field(object_of(any_json()))),
        ("unique", 0.3, field(unique_chaos())),
        (
            "concurrency_key",
            0.2,
            field(text().prop_map(Value::String).boxed()),
        ),
    ])
}

/// `unique` of a create: every option, often out of range or of the wrong type.
fn unique_chaos() -> BoxedStrategy<Value> {
    let states = prop_oneof![
        vec(
            select(vec![
                "pending",
                "running",
                "completed",
                "failed",
                "done",
                ""
            ]),
            0..8
        )
        .prop_map(|names| json!(names)),
        any_json(),
    ];
    object(vec![
        ("key", 0.5, field(text().prop_map(Value::String).boxed())),
        ("by_args", 0.4, field(Just(json!(true)).boxed())),
        (
            "period_seconds",
            0.4,
            field(prop_oneof![ints(&[0, 1, 60, 315_360_000, 315_360_001, -1]), number()].boxed()),
        ),
        ("states", 0.4, field(states.boxed())),
        (
            "on_conflict",
            0.4,
            field(
                select(vec!["return", "replace", "x"])
                    .prop_map(Value::from)
                    .boxed(),
            ),
        ),
    ])
}

/// A valid `unique` (a create with `unique_key` too is refused, which is fine here).
fn unique_valid() -> BoxedStrategy<Value> {
    let every = json!([
        "pending",
        "running",
        "completed",
        "partial",
        "failed",
        "cancelled"
    ]);
    object(vec![
        ("key", 0.5, valid_key()),
        (
            "by_args",
            0.4,
            select(vec![json!(true), json!(false)]).boxed(),
        ),
        ("period_seconds", 0.4, ints(&[1, 60, 315_360_000])),
        (
            "states",
            0.4,
            select(vec![json!(["running", "pending"]), every]).boxed(),
        ),
        (
            "on_conflict",
            0.4,
            select(vec![json!("return"), json!("replace")]).boxed(),
        ),
    ])
}

fn batch_chaos() -> BoxedStrategy<Value> {
    let thousand_and_one = Value::Array(
        (0..1001)
            .map(|i| json!({"kind": format!("k{i}")}))
            .collect(),
    );
    let jobs = prop_oneof![
        8 => vec(create_chaos(), 0..5).prop_map(Value::Array),
        1 => Just(thousand_and_one),
        1 => Just(json!([])),
        2 => any_json(),
    ]
    .boxed();
    object(vec![("jobs", 0.95, jobs)])
}

/// `wait_seconds` values that never make a claim wait longer than 0.05 s.
fn short_wait() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => select(vec![
            json!(0),
            json!(0.0),
            json!(-0.0),
            json!(0.01),
            json!(0.05),
            json!(5e-324),
            json!(-1),
            json!(-1e308),
            json!(i64::MIN),
        ]),
        2 => select(RAW_SHORT_WAITS).prop_map(raw),
        1 => text().prop_map(Value::String),
        1 => select(vec![json!(null), json!(true), json!([]), json!({}), json!([0.01]), deep_array(200)]),
    ]
    .boxed()
}

fn claim_chaos() -> BoxedStrategy<Value> {
    object(vec![
        (
            "worker_id",
            0.9,
            field(text().prop_map(Value::String).boxed()),
        ),
        ("queues", 0.6, field(names())),
        ("kinds", 0.4, field(names())),
        (
            "max_jobs",
            0.5,
            field(prop_oneof![ints(&[1, 2, 100, 0, 101]), number()].boxed()),
        ),
        ("lease_seconds", 0.4, field(lease_seconds())),
        ("wait_seconds", 0.4, short_wait()),
    ])
}

fn lease_seconds() -> BoxedStrategy<Value> {
    prop_oneof![ints(&[1, 30, 600, 3600, 0, 3601]), number()].boxed()
}

// Stand-ins for the held job's lease token (in several spellings), replaced when a case is
// sent.
const REAL_TOKEN: &str = "\u{E001}token";
const REAL_TOKEN_UPPER: &str = "\u{E001}TOKEN";
const REAL_TOKEN_SIMPLE: &str = "\u{E001}token-simple";
const REAL_TOKEN_BRACED: &str = "\u{E001}token-braced";
const REAL_TOKEN_URN: &str = "\u{E001}token-urn";

fn lease_token() -> BoxedStrategy<Value> {
    prop_oneof![
        8 => Just(json!(REAL_TOKEN)),
        1 => select(vec![REAL_TOKEN_UPPER, REAL_TOKEN_SIMPLE, REAL_TOKEN_BRACED, REAL_TOKEN_URN])
            .prop_map(|t| json!(t)),
        2 => any::<u128>().prop_map(|n| json!(Uuid::from_u128(n))),
        1 => select(vec![
            json!(Uuid::nil()),
            json!(Uuid::max()),
            json!("00000000-0000-0000-0000-00000000000g"),
            json!("not-a-token"),
        ]),
        1 => any_json(),
    ]
    .boxed()
}

fn worker_id() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => Just(json!("w")),
        2 => text().prop_map(Value::String),
        1 => any_json(),
    ]
    .boxed()
}

/// Which job a worker request names.
#[derive(Debug, Clone)]
enum Target {
    /// The job the test holds the lease of.
    Real,
    /// The same id, upper case.
    RealUpper,
    Random(Uuid),
    /// Not a UUID at all: percent-encoded into the path.
    Garbage(String),
}

fn target() -> BoxedStrategy<Target> {
    prop_oneof![
        8 => Just(Target::Real),
        1 => Just(Target::RealUpper),
        2 => any::<u128>().prop_map(|n| Target::Random(Uuid::from_u128(n))),
        1 => Just(Target::Random(Uuid::nil())),
        1 => short_text().prop_map(Target::Garbage),
    ]
    .boxed()
}

fn heartbeat_chaos() -> BoxedStrategy<Value> {
    let progress = prop_oneof![
        ints(&[0, 1]),
        select(vec![
            json!(0.5),
            json!(-0.0),
            json!(1.0000001),
            json!(-1e-300),
            json!(5e-324),
            json!(1e308)
        ]),
        number(),
    ]
    .boxed();
    object(vec![
        ("worker_id", 0.95, worker_id()),
        ("lease_token", 0.95, lease_token()),
        ("progress", 0.6, field(progress)),
        ("stage", 0.5, field(text().prop_map(Value::String).boxed())),
        ("lease_seconds", 0.4, field(lease_seconds())),
    ])
}

fn complete_chaos() -> BoxedStrategy<Value> {
    object(vec![
        ("worker_id", 0.95, worker_id()),
        ("lease_token", 0.95, lease_token()),
        ("result", 0.7, any_json()),
        ("item_errors", 0.3, any_json()),
    ])
}

fn fail_chaos() -> BoxedStrategy<Value> {
    let error = object(vec![
        ("kind", 0.9, field(text().prop_map(Value::String).boxed())),
        (
            "message",
            0.9,
            field(text().prop_map(Value::String).boxed()),
        ),
    ]);
    let retry_after = prop_oneof![
        select(vec![
            json!(0),
            json!(1),
            json!(0.5),
            json!(1e300),
            json!(1e308),
            json!(-0.0),
            json!(5e-324),
            json!(-1),
            json!(315_360_000),
            json!(315_360_001),
            json!(1e12),
            json!(1e13),
        ]),
        number(),
    ]
    .boxed();
    object(vec![
        ("worker_id", 0.95, worker_id()),
        ("lease_token", 0.95, lease_token()),
        ("error", 0.9, field(error)),
        (
            "retryable",
            0.5,
            field(any::<bool>().prop_map(Value::Bool).boxed()),
        ),
        ("retry_after_seconds", 0.5, field(retry_after)),
    ])
}

// ---------------------------------------------------------------------------------------
// Valid but extreme values: accepted by the API, so they reach the database.

/// Raw numbers serde_json reads (as a double when they do not fit an integer).
const RAW_VALID_NUMBERS: &[&str] = &[
    "-0",
    "-0.0",
    "0e0",
    "1e-999",
    "-1e-400",
    "4.9e-324",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "123456789012345678901234567890",
    "18446744073709551616",
    "-9223372036854775809",
    "9007199254740993",
];

/// Raw strings serde_json reads: a surrogate pair, escaped control characters and
/// non-characters.
const RAW_VALID_STRINGS: &[&str] = &[
    r#""\ud83d\ude00""#,
    r#""\u001f\u007f\b\f\n\r\t""#,
    r#""\uFEFF\uFFFF\uFFFE""#,
];

fn without_nul(strategy: BoxedStrategy<String>) -> BoxedStrategy<String> {
    strategy.prop_map(|s| s.replace('\0', "\u{1}")).boxed()
}

fn valid_number() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => number().prop_filter("readable", |v| !v.as_str().is_some_and(|s| s.starts_with(RAW))),
        1 => select(RAW_VALID_NUMBERS).prop_map(raw),
    ]
    .boxed()
}

fn valid_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => valid_number(),
        3 => without_nul(short_text()).prop_map(Value::String),
        1 => select(RAW_VALID_STRINGS).prop_map(raw),
    ]
    .boxed()
}

fn valid_object_of(values: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    btree_map(without_nul(short_text()), values, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed()
}

/// JSON any handler may take or return: no NUL anywhere, nesting the server reads (a
/// body at most 128 deep), strings up to 100 KB.
fn valid_json() -> BoxedStrategy<Value> {
    let tree = valid_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            valid_object_of(inner),
        ]
    });
    let long = long_strings()
        .into_iter()
        .map(|s| Value::String(s.replace('\0', "\u{1}")))
        .collect::<Vec<_>>();
    prop_oneof![
        12 => tree,
        1 => select(long),
        2 => select(vec![
            json!([]),
            json!({}),
            json!({"": ""}),
            deep_array(120),
            deep_object(120),
            deep_array(64),
        ]),
    ]
    .boxed()
}

/// Instants inside years 1..=9999 in UTC, at its ends, with extreme offsets and leap
/// seconds.
fn valid_timestamp() -> BoxedStrategy<Value> {
    let fixed = vec![
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00-23:59",
        "0001-01-01T23:58:59+23:59",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59.999Z",
        "9999-12-31T23:59:59+23:59",
        "9999-12-31T00:00:00-23:59",
        "2016-12-31T23:59:60Z",
        "1970-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999999Z",
        "2000-02-29T12:00:00.5+01:00",
        "2099-01-01T00:00:00Z",
    ];
    let generated = (
        1i32..=9999,
        1u8..=12,
        1u8..=28,
        0u8..=23,
        0u8..=59,
        0u8..=59,
    )
        .prop_map(|(y, mo, d, h, mi, s)| {
            json!(format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"))
        });
    prop_oneof![3 => select(fixed).prop_map(|t| json!(t)), 1 => generated].boxed()
}

fn valid_name() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => "[A-Za-z0-9_.:/-]{1,16}".prop_map(Value::String),
        1 => select(vec!["a".repeat(128), "/".into(), ":".into(), "-".into(), "_._".into(), "default".into()])
            .prop_map(Value::String),
    ]
    .boxed()
}

/// At most 255 bytes, no NUL: for `unique_key` and `worker_id`.
fn valid_key() -> BoxedStrategy<Value> {
    prop_oneof![
        2 => "u-[0-9]".prop_map(Value::String),
        2 => without_nul("\\PC{1,32}".boxed()).prop_map(Value::String),
        1 => select(vec![
            "é".repeat(127),
            "😀".repeat(63),
            "a".repeat(255),
            "\u{202E}שלום".repeat(25),
            "\u{1}\u{1f}\u{7f}".into(),
            " ".into(),
        ])
        .prop_map(Value::String),
    ]
    .boxed()
}

fn create_valid() -> BoxedStrategy<Value> {
    let whole =
        |values: &[i64], floats: Vec<Value>| prop_oneof![ints(values), select(floats)].boxed();
    object(vec![
        ("kind", 1.0, valid_name()),
        ("args", 0.7, valid_json()),
        ("queue", 0.4, valid_name()),
        (
            "priority",
            0.4,
            whole(
                &[0, 5, 10],
                vec![json!(10.0), json!(-0.0), raw("1e1"), raw("-0")],
            ),
        ),
        ("run_at", 0.3, valid_timestamp()),
        (
            "delay_ms",
            0.15,
            whole(
                &[0, 1, 315_360_000_000],
                vec![json!(3.1536e11), json!(-0.0)],
            ),
        ),
        (
            "max_attempts",
            0.3,
            whole(&[1, 1000], vec![json!(1000.0), raw("1e3")]),
        ),
        (
            "timeout_ms",
            0.3,
            whole(
                &[1, 315_360_000_000],
                vec![json!(1.0), json!(315_360_000_000.0)],
            ),
        ),
        ("deadline", 0.2, valid_timestamp()),
        (
            "ttl_seconds",
            0.3,
            whole(
                &[0, 1, 315_360_000],
                vec![json!(315_360_000.0), json!(-0.0)],
            ),
        ),
        ("unique_key", 0.3, valid_key()),
        ("metadata", 0.3, valid_object_of(valid_json())),
        ("unique", 0.2, unique_valid()),
        ("concurrency_key", 0.3, valid_key()),
    ])
}

fn valid_names() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => vec(prop_oneof![valid_name(), valid_key()], 0..4).prop_map(Value::Array),
        1 => Just(Value::Array((0..99).map(|i| json!(format!("q{i}"))).chain([json!("default")]).collect())),
        1 => Just(json!(["default", "default", "DEFAULT"])),
    ]
    .boxed()
}

fn claim_valid() -> BoxedStrategy<Value> {
    object(vec![
        ("worker_id", 1.0, valid_key()),
        ("queues", 0.6, valid_names()),
        ("kinds", 0.3, valid_names()),
        (
            "max_jobs",
            0.5,
            prop_oneof![ints(&[1, 100]), Just(json!(100.0))].boxed(),
        ),
        ("lease_seconds", 0.4, valid_lease_seconds()),
        (
            "wait_seconds",
            0.4,
            select(vec![
                json!(0),
                json!(-0.0),
                json!(5e-324),
                json!(0.05),
                raw("1e-999"),
            ])
            .boxed(),
        ),
    ])
}

fn valid_lease_seconds() -> BoxedStrategy<Value> {
    prop_oneof![
        ints(&[1, 3600]),
        select(vec![json!(3600.0), json!(1.0), raw("36e2")])
    ]
    .boxed()
}

fn heartbeat_valid() -> BoxedStrategy<Value> {
    let progress = select(vec![
        json!(0),
        json!(1),
        json!(-0.0),
        json!(5e-324),
        json!(0.9999999999999999),
        json!(1.0),
        raw("1e-999"),
        raw("-0"),
    ])
    .boxed();
    object(vec![
        ("worker_id", 1.0, valid_key()),
        ("lease_token", 1.0, Just(json!(REAL_TOKEN)).boxed()),
        ("progress", 0.7, progress),
        // NUL characters too: stages are made storable, not refused.
        ("stage", 0.6, text().prop_map(Value::String).boxed()),
        ("lease_seconds", 0.4, valid_lease_seconds()),
    ])
}

fn complete_valid() -> BoxedStrategy<Value> {
    object(vec![
        ("worker_id", 1.0, valid_key()),
        ("lease_token", 1.0, Just(json!(REAL_TOKEN)).boxed()),
        ("result", 0.8, valid_json()),
        ("item_errors", 0.3, valid_json()),
    ])
}

fn fail_valid() -> BoxedStrategy<Value> {
    // Error texts may hold anything: they are made storable (NUL replaced, capped).
    let error = object(vec![
        ("kind", 1.0, text().prop_map(Value::String).boxed()),
        ("message", 1.0, text().prop_map(Value::String).boxed()),
    ])
    .prop_filter("an error object", |v| {
        v.get("kind").is_some_and(Value::is_string)
            && v.get("message").is_some_and(Value::is_string)
    })
    .boxed();
    let retry_after = select(vec![
        json!(0),
        json!(-0.0),
        json!(5e-324),
        json!(0.5),
        json!(1e300),
        json!(1e308),
        json!(u64::MAX),
        json!(315_360_001),
        raw("1e-999"),
        raw("1.7976931348623157e308"),
    ])
    .boxed();
    object(vec![
        ("worker_id", 1.0, valid_key()),
        ("lease_token", 1.0, Just(json!(REAL_TOKEN)).boxed()),
        ("error", 1.0, error),
        (
            "retryable",
            0.5,
            any::<bool>().prop_map(Value::Bool).boxed(),
        ),
        ("retry_after_seconds", 0.6, retry_after),
    ])
}

/// A limit's count: edges of its range, past it, and any number.
fn limit_count(valid: bool) -> BoxedStrategy<Value> {
    if valid {
        return prop_oneof![
            ints(&[1, 2, 1_000_000]),
            Just(json!(1e6)),
            Just(Value::Null)
        ]
        .boxed();
    }
    field(
        prop_oneof![
            ints(&[0, 1, 1_000_000, 1_000_001, -1, 4_294_967_296]),
            number()
        ]
        .boxed(),
    )
}

fn rate_body(valid: bool) -> BoxedStrategy<Value> {
    let period = if valid {
        prop_oneof![ints(&[1, 60, 86_400]), Just(json!(86_400.0))].boxed()
    } else {
        field(prop_oneof![ints(&[0, 1, 86_400, 86_401, -1]), number()].boxed())
    };
    let p = if valid { 1.0 } else { 0.9 };
    let limit = limit_count(valid).prop_filter("a rate has a limit", |v| !v.is_null());
    object(vec![
        ("limit", p, limit.boxed()),
        ("period_seconds", p, period),
    ])
}

/// `PUT /v1/queues/{name}`: each limit out of range, of the wrong type, or extreme but valid.
fn limits_body() -> BoxedStrategy<Value> {
    let body = |valid: bool| {
        let rate = || {
            let rate = rate_body(valid);
            if valid {
                prop_oneof![rate, Just(Value::Null)].boxed()
            } else {
                field(rate)
            }
        };
        object(vec![
            ("concurrency", 0.5, limit_count(valid)),
            ("key_concurrency", 0.4, limit_count(valid)),
            ("rate", 0.5, rate()),
            ("key_rate", 0.4, rate()),
        ])
    };
    either(body(false), body(true))
}

/// Half the bodies anything, half valid with extreme values.
fn either(chaos: BoxedStrategy<Value>, valid: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![chaos, valid].boxed()
}

fn create_body() -> BoxedStrategy<Value> {
    either(create_chaos(), create_valid())
}

fn batch_body() -> BoxedStrategy<Value> {
    let valid = object(vec![(
        "jobs",
        1.0,
        vec(create_valid(), 1..5).prop_map(Value::Array).boxed(),
    )]);
    either(batch_chaos(), valid)
}

fn claim_body() -> BoxedStrategy<Value> {
    either(claim_chaos(), claim_valid())
}

fn heartbeat_body() -> BoxedStrategy<Value> {
    either(heartbeat_chaos(), heartbeat_valid())
}

fn complete_body() -> BoxedStrategy<Value> {
    either(complete_chaos(), complete_valid())
}

fn fail_body() -> BoxedStrategy<Value> {
    either(fail_chaos(), fail_valid())
}

fn list_query() -> BoxedStrategy<Vec<(String, String)>> {
    let real_cursors = vec![
        format!("253402300799999999.{}", Uuid::max()),
        format!("253402300800000000.{}", Uuid::nil()),
        format!("-62135596800000000.{}", Uuid::nil()),
        format!("-62135596800000001.{}", Uuid::nil()),
        format!("0.{}", Uuid::nil()),
        format!("-0.{}", Uuid::nil()),
        format!("1700000000000000.{}", Uuid::now_v7()),
        format!("{}.{}", "9".repeat(40), Uuid::nil()),
        format!("{}.{}", i128::MIN, Uuid::nil()),
        format!("1.{}", "\u{0}".repeat(36)),
        ".".to_owned(),
        "".to_owned(),
    ];
    let numeric = select(vec![
        "0",
        "1",
        "100",
        "101",
        "-1",
        "-0",
        "+1",
        "1e2",
        "1.0",
        "4294967295",
        "4294967296",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "1e308",
        "NaN",
    ])
    .prop_map(str::to_owned)
    .boxed();
    let time_text = timestamp()
        .prop_map(|v| match v {
            Value::String(s) => s.replace(RAW, ""),
            other => other.to_string(),
        })
        .boxed();
    // A URL holds at most 64 KiB (the client refuses longer ones), so the 100 KB strings
    // are cut to lengths around the server's limit on a request head.
    let text = || {
        text()
            .prop_flat_map(|s| {
                select(vec![1_000, 8_000, 20_000, 21_000]).prop_map(move |cut| {
                    let mut end = cut.min(s.len());
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    s[..end].to_owned()
                })
            })
            .boxed()
    };
    let value_of = |key: &str| -> BoxedStrategy<String> {
        match key {
            "limit" | "offset" => prop_oneof![3 => numeric.clone(), 1 => text()].boxed(),
            "created_after" | "created_before" => {
                prop_oneof![3 => time_text.clone(), 1 => text()].boxed()
            }
            "cursor" => prop_oneof![3 => select(real_cursors.clone()), 1 => text()].boxed(),
            "state" => prop_oneof![
                3 => select(vec!["pending", "running", "completed", "partial", "failed", "cancelled", "PENDING", ""])
                    .prop_map(str::to_owned),
                1 => text(),
            ]
            .boxed(),
            _ => prop_oneof![3 => "[a-z]{1,4}", 2 => text()].boxed(),
        }
    };
    let keys = [
        "state",
        "kind",
        "queue",
        "created_after",
        "created_before",
        "limit",
        "offset",
        "cursor",
    ];
    let params: Vec<_> = keys
        .iter()
        .map(|key| {
            let key = (*key).to_owned();
            proptest::option::weighted(0.35, value_of(&key))
                .prop_map(move |v| v.map(|v| (key.clone(), v)))
        })
        .collect();
    let extra = prop_oneof![
        8 => Just(None),
        1 => (short_text(), short_text()).prop_map(Some),
        1 => select(vec![("limit", "5"), ("state", "pending"), ("cursor", "x")])
            .prop_map(|(k, v)| Some((k.to_owned(), v.to_owned()))),
    ];
    let chaos = (params, extra)
        .prop_map(|(params, extra)| {
            params
                .into_iter()
                .flatten()
                .chain(extra)
                .collect::<Vec<_>>()
        })
        .boxed();
    prop_oneof![chaos, list_valid()].boxed()
}

/// Queries the API accepts, with extreme values.
fn list_valid() -> BoxedStrategy<Vec<(String, String)>> {
    let text_of = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let state = select(State::ALL.map(State::as_str).to_vec())
        .prop_map(str::to_owned)
        .boxed();
    let name = prop_oneof![
        2 => valid_name().prop_map(text_of),
        1 => without_nul("\\PC{0,12}".boxed()),
        1 => select(vec!["😀".repeat(1000), "\u{202E}שלום".repeat(500), "\u{1}\u{1f}".into()]),
    ]
    .boxed();
    let time = valid_timestamp().prop_map(text_of).boxed();
    let limit = prop_oneof![
        Just("1".to_owned()),
        Just("100".to_owned()),
        (1u32..=100).prop_map(|n| n.to_string())
    ]
    .boxed();
    let offset = select(vec!["0", "1", "4", "9223372036854775807", "4294967296"])
        .prop_map(str::to_owned)
        .boxed();
    let cursor = select(vec![
        format!("253402300799999999.{}", Uuid::max()),
        format!("-62135596800000000.{}", Uuid::nil()),
        format!("0.{}", Uuid::nil()),
        format!("-0.{}", Uuid::nil()),
        format!("1700000000000000.{}", Uuid::now_v7()),
        format!("{}.{}", i64::MAX / 1000, Uuid::max()),
    ])
    .boxed();
    let params: Vec<BoxedStrategy<Option<(String, String)>>> = [
        ("state", state),
        ("kind", name.clone()),
        ("queue", name),
        ("created_after", time.clone()),
        ("created_before", time),
        ("limit", limit),
        ("offset", offset),
        ("cursor", cursor),
    ]
    .into_iter()
    .map(|(key, values)| {
        proptest::option::weighted(0.35, values)
            .prop_map(move |v| v.map(|v| (key.to_owned(), v)))
            .boxed()
    })
    .collect();
    params
        .prop_map(|params| params.into_iter().flatten().collect())
        .boxed()
}

/// `n` values of `strategy`, the same on every run for a seed.
fn cases<S: Strategy>(seed: u8, strategy: S) -> Vec<S::Value> {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let base: u8 = std::env::var("EXTREMES_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut seed_bytes = [0x5e_u8; 32];
    seed_bytes[0] = seed;
    seed_bytes[1] = base;
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).expect("a case").current())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Sending and judging.

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    content_type: String,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// Percent-encodes every byte but the unreserved ones.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn shorten(text: &str) -> String {
    const KEEP: usize = 600;
    if text.len() <= KEEP {
        return text.to_owned();
    }
    let mut end = KEEP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// Requests and the failures they found.
struct Judge {
    api: Api,
    sent: usize,
    /// How many answers had each status, printed at the end (see `--nocapture`).
    statuses: BTreeMap<u16, usize>,
    failures: Vec<String>,
}

impl Judge {
    fn new(api: &Api) -> Self {
        Self {
            api: api.clone(),
            sent: 0,
            statuses: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    /// Sends the request and checks the rule; `None` (and a failure recorded) when there
    /// was no answer at all.
    async fn send(&mut self, method: Method, path: &str, body: Option<String>) -> Option<Reply> {
        self.sent += 1;
        let mut request = self
            .api
            .http
            .request(method.clone(), format!("{}{path}", self.api.base))
            .timeout(Duration::from_secs(20));
        if let Some(body) = &body {
            request = request
                .header("content-type", "application/json")
                .body(body.clone());
        }
        let described = || {
            format!(
                "{method} {}{}",
                shorten(path),
                body.as_deref()
                    .map(|b| format!("\n    body: {}", shorten(b)))
                    .unwrap_or_default()
            )
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                self.failures.push(format!(
                    "{}\n    no answer: {:?}",
                    described(),
                    error.without_url()
                ));
                return None;
            }
        };
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => {
                self.failures.push(format!(
                    "{}\n    {status}, body unreadable: {error:?}",
                    described()
                ));
                return None;
            }
        };
        *self.statuses.entry(status.as_u16()).or_default() += 1;
        if std::env::var_os("EXTREMES_LOG").is_some() {
            eprintln!("{status} {} <- {}", shorten(&text), described());
        }
        let reply = Reply {
            status,
            content_type,
            text,
        };
        if let Err(why) = check(&reply) {
            self.failures.push(format!(
                "{}\n    -> {status} {}: {why}\n    answer: {}",
                described(),
                reply.content_type,
                shorten(&reply.text)
            ));
        }
        Some(reply)
    }

    /// Fails the test with every failure found, after reading back every job (all pages
    /// of the listing, and the queues) and checking the server still answers.
    async fn finish(mut self, what: &str) {
        let mut path = "/v1/jobs?limit=100".to_owned();
        for _ in 0..100 {
            let Some(reply) = self.send(Method::GET, &path, None).await else {
                break;
            };
            match reply.json()["next_cursor"].as_str() {
                Some(cursor) => path = format!("/v1/jobs?limit=100&cursor={}", encode(cursor)),
                None => break,
            }
        }
        self.send(Method::GET, "/v1/queues", None).await;
        eprintln!(
            "{what}: {} requests, answers by status {:?}",
            self.sent, self.statuses
        );
        let health = self.send(Method::GET, "/healthz", None).await;
        if health.is_none_or(|h| h.status != StatusCode::OK) {
            self.failures
                .push("GET /healthz: the server no longer answers 200".into());
        }
        if !self.failures.is_empty() {
            let shown: Vec<&String> = self.failures.iter().take(15).collect();
            panic!(
                "{what}: {} of {} requests broke the rule (first {} shown):\n\n{}",
                self.failures.len(),
                self.sent,
                shown.len(),
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n\n")
            );
        }
    }
}

/// Below 500; a 4xx is a problem document with `type` and `status`; a 400 names fields.
fn check(reply: &Reply) -> Result<(), String> {
    let status = reply.status.as_u16();
    if status >= 500 {
        return Err("a 5xx".into());
    }
    if status < 400 {
        return Ok(());
    }
    if reply.content_type != "application/problem+json" {
        return Err("a 4xx that is not application/problem+json".into());
    }
    let body = reply.json();
    let kind = body["type"].as_str().unwrap_or_default();
    if !kind.starts_with("urn:jobs:problem:") {
        return Err("a problem without a `type`".into());
    }
    if body["status"] != status {
        return Err("a problem whose `status` is not the answer's".into());
    }
    if status == 400 {
        let slug = &kind["urn:jobs:problem:".len()..];
        if !matches!(slug, "validation" | "malformed-request") {
            return Err(format!("a 400 of type {slug}"));
        }
        let named = body["errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.iter().all(|e| e["field"].is_string()));
        if !named {
            return Err("a 400 whose `errors` name no field".into());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Property tests.

async fn extreme_creates_never_answer_5xx(db: TestDb) {
    let api = start(&db).await;
    let mut judge = Judge::new(&api);
    for body in cases(1, create_body()) {
        judge
            .send(Method::POST, "/v1/jobs", Some(body_text(&body)))
            .await;
    }
    judge.finish("POST /v1/jobs").await;
}

async fn extreme_batches_never_answer_5xx(db: TestDb) {
    let api = start(&db).await;
    let mut judge = Judge::new(&api);
    for body in cases(2, batch_body()) {
        judge
            .send(Method::POST, "/v1/jobs/batch", Some(body_text(&body)))
            .await;
    }
    judge.finish("POST /v1/jobs/batch").await;
}

async fn extreme_list_queries_never_answer_5xx(db: TestDb) {
    let api = start(&db).await;
    for i in 0..5 {
        api.create(json!({"kind": "k", "queue": if i % 2 == 0 { "default" } else { "q" }}))
            .await;
    }
    let mut judge = Judge::new(&api);
    for mut params in cases(3, list_query()) {
        // The client sends at most 64 KiB of URL: cut the longest values until it fits.
        let encoded = |params: &[(String, String)]| -> Vec<String> {
            params
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect()
        };
        while encoded(&params).iter().map(String::len).sum::<usize>() > 60_000 {
            let (_, longest) = params
                .iter_mut()
                .max_by_key(|(_, v)| v.len())
                .expect("a parameter");
            let mut end = longest.len() / 2;
            while !longest.is_char_boundary(end) {
                end -= 1;
            }
            longest.truncate(end);
        }
        let query = encoded(&params);
        judge
            .send(Method::GET, &format!("/v1/jobs?{}", query.join("&")), None)
            .await;
    }
    judge.finish("GET /v1/jobs").await;
}

async fn extreme_queue_limits_never_answer_5xx(db: TestDb) {
    let api = start(&db).await;
    let mut judge = Judge::new(&api);
    let names = prop_oneof![4 => valid_name(), 1 => name()];
    for (body, name) in cases(8, (limits_body(), names)) {
        let path = format!("/v1/queues/{}", encode(name.as_str().unwrap()));
        judge.send(Method::PUT, &path, Some(body_text(&body))).await;
    }
    judge.finish("PUT /v1/queues/{name}").await;
}

async fn extreme_claims_never_answer_5xx(db: TestDb) {
    let api = start(&db).await;
    let mut judge = Judge::new(&api);
    for (i, body) in cases(4, claim_body()).into_iter().enumerate() {
        if i % 10 == 0 {
            // Something to claim, in the default queue and in a few others.
            for queue in ["default", "q0", "q99", "a"] {
                api.create(json!({"kind": "k", "queue": queue})).await;
            }
        }
        judge
            .send(Method::POST, "/v1/claims", Some(body_text(&body)))
            .await;
    }
    judge.finish("POST /v1/claims").await;
}

/// A job of queue `fuzz` claimed by worker `w`: its id and lease token.
#[derive(Debug, Clone)]
struct Held {
    id: Uuid,
    token: Uuid,
}

async fn hold_a_job(api: &Api) -> Held {
    let claim = json!({"worker_id": "w", "queues": ["fuzz"], "lease_seconds": 3600});
    for _ in 0..2 {
        let (status, claimed) = api.post("/v1/claims", claim.clone()).await;
        assert_eq!(status, StatusCode::OK, "{claimed}");
        if let Some(job) = claimed["jobs"].get(0) {
            return Held {
                id: job["id"].as_str().unwrap().parse().unwrap(),
                token: job["lease_token"].as_str().unwrap().parse().unwrap(),
            };
        }
        api.create(json!({"kind": "k", "queue": "fuzz"})).await;
    }
    panic!("a job of queue fuzz is claimed");
}

/// Sends worker requests (`/v1/jobs/{id}/{action}`) built from `bodies`: most name the held
/// job and its token, others another id or token. Whenever the held job was let go (its
/// lease ended with a 200 of complete or fail), the next is created and claimed.
async fn worker_cases(api: &Api, action: &str, seed: u8, bodies: BoxedStrategy<Value>) {
    let mut judge = Judge::new(api);
    let mut held: Option<Held> = None;
    for (target, mut body) in cases(seed, (target(), bodies)) {
        let job = match &held {
            Some(job) => job.clone(),
            None => hold_a_job(api).await,
        };
        held = Some(job.clone());
        if let Some(token) = body.get_mut("lease_token") {
            let spelled = match token.as_str() {
                Some(REAL_TOKEN) => Some(job.token.to_string()),
                Some(REAL_TOKEN_UPPER) => Some(job.token.to_string().to_uppercase()),
                Some(REAL_TOKEN_SIMPLE) => Some(job.token.simple().to_string()),
                Some(REAL_TOKEN_BRACED) => Some(job.token.braced().to_string()),
                Some(REAL_TOKEN_URN) => Some(job.token.urn().to_string()),
                _ => None,
            };
            if let Some(spelled) = spelled {
                *token = json!(spelled);
            }
        }
        let id = match &target {
            Target::Real => job.id.to_string(),
            Target::RealUpper => job.id.to_string().to_uppercase(),
            Target::Random(id) => id.to_string(),
            Target::Garbage(text) => encode(text),
        };
        let path = format!("/v1/jobs/{id}/{action}");
        let reply = judge
            .send(Method::POST, &path, Some(body_text(&body)))
            .await;
        let accepted = reply.is_some_and(|r| r.status.is_success());
        if accepted {
            // What was written can be read back.
            judge
                .send(Method::GET, &format!("/v1/jobs/{}", job.id), None)
                .await;
            if action != "heartbeat" {
                held = None;
            }
        }
    }
    judge
        .finish(&format!("POST /v1/jobs/{{id}}/{action}"))
        .await;
}

async fn extreme_heartbeats_never_answer_5xx(db: TestDb) {
    let api = start(&db).await;
    worker_cases(&api, "heartbeat", 5, heartbeat_body()).await;
}

async fn extreme_completes_never_answer_5xx(db: TestDb) {
    let api = start(&db).await;
    worker_cases(&api, "complete", 6, complete_body()).await;
}

async fn extreme_fails_never_answer_5xx(db: TestDb) {
    let api = start(&db).await;
    worker_cases(&api, "fail", 7, fail_body()).await;
}

// ---------------------------------------------------------------------------------------
// Regression tests.

/// The fields a 400 problem names.
fn fields_of(status: StatusCode, body: &Value) -> Vec<String> {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        matches!(
            body["type"].as_str(),
            Some("urn:jobs:problem:validation" | "urn:jobs:problem:malformed-request")
        ),
        "{body}"
    );
    body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("a field").to_owned())
        .collect()
}

async fn a_nul_in_args_is_refused_alone_among_concurrent_creates(db: TestDb) {
    let api = start(&db).await;
    let poisons = [
        json!({"to": "a\u{0}b"}),
        json!({"k\u{0}": 1}),
        json!([[[{"deep": ["\u{0}"]}]]]),
        json!("\u{0}"),
    ];
    for (round, poison) in poisons.into_iter().enumerate() {
        let kind = format!("neighbour-{round}");
        let mut requests = Vec::new();
        for i in 0..31 {
            let body = if i == 15 {
                json!({"kind": kind, "args": poison})
            } else {
                json!({"kind": kind, "args": {"i": i, "text": "ok ✓"}})
            };
            let api = api.clone();
            requests.push(tokio::spawn(async move {
                (i, api.post("/v1/jobs", body).await)
            }));
        }
        let mut ids = Vec::new();
        for request in requests {
            let (i, (status, body)) = request.await.unwrap();
            if i == 15 {
                assert_eq!(fields_of(status, &body), ["args"], "{body}");
            } else {
                assert_eq!(status, StatusCode::ACCEPTED, "neighbour {i}: {body}");
                assert_eq!(body["args"]["i"], i);
                ids.push((i, body["id"].as_str().unwrap().to_owned()));
            }
        }
        assert_eq!(ids.len(), 30);
        for (i, id) in ids {
            let (status, job) = api.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(status, StatusCode::OK, "neighbour {i} exists: {job}");
            assert_eq!(job["args"], json!({"i": i, "text": "ok ✓"}));
        }
        let (_, page) = api.get(&format!("/v1/jobs?kind={kind}&limit=100")).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 30, "{page}");
    }
}

async fn instants_past_year_9999_in_utc_are_refused_by_field(db: TestDb) {
    let api = start(&db).await;
    for far in [
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "0000-01-01T00:00:00Z",
    ] {
        for field in ["run_at", "deadline"] {
            let (status, body) = api.post("/v1/jobs", json!({"kind": "k", field: far})).await;
            assert_eq!(fields_of(status, &body), [field], "{field}={far}: {body}");
            let (status, body) = api
                .post(
                    "/v1/jobs/batch",
                    json!({"jobs": [{"kind": "k"}, {"kind": "k", field: far}]}),
                )
                .await;
            assert_eq!(
                fields_of(status, &body),
                [format!("jobs[1].{field}")],
                "batch {field}={far}: {body}"
            );
        }
        for field in ["created_after", "created_before"] {
            let (status, body) = api.get(&format!("/v1/jobs?{field}={}", encode(far))).await;
            assert_eq!(fields_of(status, &body), [field], "{field}={far}: {body}");
        }
    }
    // The ends of the range themselves are accepted.
    let (status, body) = api
        .post(
            "/v1/jobs",
            json!({"kind": "k", "run_at": "0001-01-01T00:00:00Z", "deadline": "9999-12-31T23:59:59Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = api
        .get("/v1/jobs?created_after=0001-01-01T00:00:00Z&created_before=9999-12-31T23:59:59Z")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 1, "{body}");
    let (_, page) = api.get("/v1/jobs").await;
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        1,
        "refused creates left nothing"
    );
}

async fn claim_one(api: &Api, queue: &str) -> (String, Value) {
    api.create(json!({"kind": "k", "queue": queue})).await;
    let (status, claimed) = api
        .post("/v1/claims", json!({"worker_id": "w", "queues": [queue]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    let job = &claimed["jobs"][0];
    (
        job["id"].as_str().unwrap().to_owned(),
        job["lease_token"].clone(),
    )
}

async fn a_result_holding_nul_is_refused_and_the_job_keeps_running(db: TestDb) {
    let api = start(&db).await;
    let (id, token) = claim_one(&api, "nul").await;
    let path = format!("/v1/jobs/{id}/complete");
    let refused = [
        (
            json!({"worker_id": "w", "lease_token": token, "result": {"out": "a\u{0}b"}}),
            "result",
        ),
        (
            json!({"worker_id": "w", "lease_token": token, "result": {"k\u{0}": 1}}),
            "result",
        ),
        (
            json!({"worker_id": "w", "lease_token": token, "result": 1, "item_errors": [{"e": "\u{0}"}]}),
            "item_errors",
        ),
    ];
    for (body, field) in refused {
        let (status, problem) = api.post(&path, body).await;
        assert_eq!(fields_of(status, &problem), [field], "{problem}");
        let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(job["state"], "running", "{job}");
        assert!(job["errors"].as_array().unwrap().is_empty(), "{job}");
    }
    let (status, body) = api
        .post(
            &path,
            json!({"worker_id": "w", "lease_token": token, "result": {"out": "a\u{FFFD}b"}}),
        )
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("completed")),
        "{body}"
    );
    let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["result"], json!({"out": "a\u{FFFD}b"}));
}

async fn a_huge_failure_is_stored_truncated_and_retried_within_ten_years(db: TestDb) {
    let api = start(&db).await;
    let (id, token) = claim_one(&api, "huge").await;
    let message = "fail\u{0}ed ".repeat(HUNDRED_KB / 8);
    assert!(message.len() >= HUNDRED_KB);
    let failure = json!({
        "worker_id": "w",
        "lease_token": token,
        "error": {"kind": "k\u{0}ind", "message": message},
        "retry_after_seconds": 1e300,
    });
    let (status, body) = api.post(&format!("/v1/jobs/{id}/fail"), failure).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("pending")),
        "{body}"
    );
    let (status, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["state"], "pending");
    assert_eq!(job["scheduled"], true);
    let run_at = OffsetDateTime::parse(job["run_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let now = OffsetDateTime::now_utc();
    let ten_years = time::Duration::seconds(jobs_core::limits::DURATION_MAX_SECS as i64);
    assert!(
        run_at <= now + ten_years + time::Duration::minutes(1),
        "run_at {run_at} is within ten years of {now}"
    );
    assert!(
        run_at >= now + ten_years - time::Duration::days(1),
        "the delay is clamped, not dropped: run_at {run_at}"
    );
    let stored = job["errors"][0]["message"].as_str().unwrap();
    assert!(stored.len() <= 8 * 1024, "{} bytes stored", stored.len());
    assert!(stored.ends_with("…[truncated]"), "{}", shorten(stored));
    assert!(stored.starts_with("fail\u{FFFD}ed "), "{}", shorten(stored));
    assert!(!stored.contains('\0'));
    assert_eq!(job["errors"][0]["kind"], "k\u{FFFD}ind");
}

async fn claims_naming_too_many_or_unstorable_queues_are_refused(db: TestDb) {
    let api = start(&db).await;
    api.create(json!({"kind": "k"})).await;
    let many: Vec<String> = (0..101).map(|i| format!("q{i}")).collect();
    let refused = [
        (json!({"worker_id": "w", "queues": many}), "queues"),
        (
            json!({"worker_id": "w", "queues": ["default", "a\u{0}b"]}),
            "queues[1]",
        ),
        (json!({"worker_id": "w", "queues": ["\u{0}"]}), "queues[0]"),
        (json!({"worker_id": "w", "kinds": many}), "kinds"),
        (json!({"worker_id": "w", "kinds": ["k\u{0}"]}), "kinds[0]"),
        (json!({"worker_id": "w\u{0}"}), "worker_id"),
    ];
    for (body, field) in refused {
        let (status, problem) = api.post("/v1/claims", body.clone()).await;
        let fields = fields_of(status, &problem);
        assert!(
            fields.iter().any(|f| f == field),
            "{} -> {problem}",
            shorten(&body.to_string())
        );
    }
    let (_, job) = api.get("/v1/jobs?state=pending").await;
    assert_eq!(
        job["items"].as_array().unwrap().len(),
        1,
        "nothing was claimed"
    );
    let hundred: Vec<String> = (0..99)
        .map(|i| format!("q{i}"))
        .chain(["default".into()])
        .collect();
    let (status, claimed) = api
        .post("/v1/claims", json!({"worker_id": "w", "queues": hundred}))
        .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    assert_eq!(
        claimed["jobs"].as_array().unwrap().len(),
        1,
        "100 queues are fine"
    );
}

/// RFC 3339 allows offsets up to ±23:59; PostgreSQL reads at most ±15:59 in a timestamp's
/// text. An instant in range is accepted whatever offset it was written with, and stored
/// as that instant.
async fn offsets_beyond_15_hours_are_stored_as_the_instant_they_name(db: TestDb) {
    let api = start(&db).await;
    let cases = [
        (
            "run_at",
            "2030-01-01T00:00:00+16:00",
            "2029-12-31T08:00:00Z",
        ),
        (
            "run_at",
            "2030-01-01T00:00:00-23:59",
            "2030-01-01T23:59:00Z",
        ),
        (
            "run_at",
            "9999-12-31T00:00:00-23:59",
            "9999-12-31T23:59:00Z",
        ),
        (
            "run_at",
            "0001-01-01T00:00:00-23:59",
            "0001-01-01T23:59:00Z",
        ),
        (
            "deadline",
            "9999-12-31T23:59:59+23:59",
            "9999-12-31T00:00:59Z",
        ),
        (
            "deadline",
            "2100-06-30T12:00:00-16:30",
            "2100-07-01T04:30:00Z",
        ),
    ];
    for (field, written, instant) in cases {
        let expected = OffsetDateTime::parse(instant, &Rfc3339).unwrap();
        let (status, body) = api
            .post("/v1/jobs", json!({"kind": "k", field: written}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{field}={written}: {body}");
        let stored = OffsetDateTime::parse(body[field].as_str().unwrap(), &Rfc3339).unwrap();
        assert_eq!(stored, expected, "{field}={written}");
        let (status, body) = api
            .post(
                "/v1/jobs/batch",
                json!({"jobs": [{"kind": "k", field: written}]}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "batch {field}={written}: {body}"
        );
        let stored =
            OffsetDateTime::parse(body["jobs"][0][field].as_str().unwrap(), &Rfc3339).unwrap();
        assert_eq!(stored, expected, "batch {field}={written}");
    }
}

/// serde_json reads and writes every finite double, 1.7976931348623157e308 included: a job
/// holding one is created, read back and listed like any other, whether it was inserted
/// alone or grouped with concurrent creates, and so is a result holding one.
async fn doubles_near_the_limit_round_trip_through_the_store(db: TestDb) {
    let api = start(&db).await;
    let args = json!({"max": f64::MAX, "min": f64::MIN, "big": 1e308});
    let (created, job) = api
        .post(
            "/v1/jobs",
            json!({"kind": "huge", "queue": "a", "args": args}),
        )
        .await;
    let (claimed, claim) = api
        .post("/v1/claims", json!({"worker_id": "w", "queues": ["a"]}))
        .await;

    // Grouped with 30 concurrent neighbours into shared inserts.
    let mut requests = Vec::new();
    for i in 0..31 {
        let body = if i == 15 {
            json!({"kind": "neighbour", "args": {"x": f64::MAX}})
        } else {
            json!({"kind": "neighbour", "args": {"i": i}})
        };
        let api = api.clone();
        requests.push(tokio::spawn(
            async move { api.post("/v1/jobs", body).await },
        ));
    }
    let mut grouped = BTreeMap::<u16, usize>::new();
    for request in requests {
        let (status, _) = request.await.unwrap();
        *grouped.entry(status.as_u16()).or_default() += 1;
    }

    let (id, token) = claim_one(&api, "b").await;
    let result = json!({"r": [f64::MAX, f64::MIN]});
    let (completed, done) = api
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"worker_id": "w", "lease_token": token, "result": result, "item_errors": [f64::MAX]}),
        )
        .await;
    let (read, finished) = api.get(&format!("/v1/jobs/{id}")).await;
    let (listed, page) = api.get("/v1/jobs?limit=100").await;

    assert_eq!(
        (created, claimed, grouped.clone(), completed, read, listed),
        (
            StatusCode::ACCEPTED,
            StatusCode::OK,
            BTreeMap::from([(202, 31)]),
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK
        ),
        "create: {job}\nclaim: {claim}\n31 grouped creates, by status: {grouped:?}\n\
         complete: {done}\nget after complete: {finished}\nlist: {page}"
    );
    assert_eq!(job["args"], args);
    assert_eq!(claim["jobs"][0]["args"], args);
    assert_eq!(finished["result"], result);
    assert_eq!(finished["item_errors"], json!([f64::MAX]));
    assert_eq!(page["items"].as_array().unwrap().len(), 33, "{page}");
}
