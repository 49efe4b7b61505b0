//! The `jobs` command-line client, black box: the real binary against a real `jobs-api`
//! (SQLite in a temporary directory, its embedded worker running `echo`, `fail` and
//! `sleep`), with an API key. Every command runs with `--json` and its output is parsed;
//! the exit codes scripts rely on are checked with the message each prints.

use std::{
    process::{Command, Output},
    time::Duration,
};

use blackbox_tests::{Proc, binary, create_key, free_port, start_api, stdout, wait_until};
use serde_json::{Value, json};

/// A running api with one API key, and the `jobs` binary pointed at it.
struct Api {
    url: String,
    key: String,
    dir: tempfile::TempDir,
    _process: Proc,
}

impl Api {
    async fn start(label: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let database = format!("sqlite://{}/jobs.db?mode=rwc", dir.path().display());
        let key = create_key(&database, "t");
        let (process, url) = start_api(label, &database, &["--embedded-worker", "on"]).await;
        Self {
            url,
            key,
            dir,
            _process: process,
        }
    }

    /// Runs `jobs ARGS` with this api's URL and key in the environment.
    fn jobs(&self, args: &[&str]) -> Output {
        jobs_with(&self.url, Some(&self.key), args)
    }

    /// Runs `jobs --json ARGS`, which must succeed, and parses what it printed.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend(args);
        let output = self.jobs(&all);
        assert_eq!(code(&output), 0, "jobs {args:?}: {}", stderr(&output));
        parse(&output)
    }

    /// Enqueues a job; returns its id.
    fn enqueue(&self, args: &[&str]) -> String {
        let mut all = vec!["enqueue"];
        all.extend(args);
        id_of(&self.json(&all))
    }
}

fn jobs_with(url: &str, key: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(binary("jobs"));
    command
        .args(args)
        .env("JOBS_URL", url)
        .env_remove("JOBS_API_KEY");
    if let Some(key) = key {
        command.env("JOBS_API_KEY", key);
    }
    command.output().expect("run jobs")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("an exit code, not a signal")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn parse(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", stdout(output)))
}

fn id_of(job: &Value) -> String {
    job["id"].as_str().expect("an id").to_owned()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect()
}

/// Asserts the exit code and that stderr holds each of `said`, stdout nothing.
fn assert_fails(output: &Output, expected: i32, said: &[&str]) {
    let message = stderr(output);
    assert_eq!(code(output), expected, "stderr: {message}");
    for part in said {
        assert!(message.contains(part), "{part:?} not in: {message}");
    }
    assert!(output.stdout.is_empty(), "{}", stdout(output));
}

#[tokio::test]
async fn jobs_enqueue_get_list_cancel_retry() {
    let api = Api::start("cli-jobs").await;

    // --wait: exit 0 with the completed job and its result.
    let done = api.jobs(&[
        "--json",
        "enqueue",
        "echo",
        "--args",
        r#"{"a":1}"#,
        "--wait",
    ]);
    assert_eq!(code(&done), 0, "{}", stderr(&done));
    let echoed = parse(&done);
    assert_eq!(echoed["state"], "completed", "{echoed}");
    assert_eq!(echoed["result"], json!({"a": 1}), "{echoed}");

    // --wait on a job that fails: exit 1, and the job shows its error.
    let args = r#"{"times":1,"permanent":true}"#;
    let failed = api.jobs(&["--json", "enqueue", "fail", "--args", args, "--wait"]);
    assert_eq!(code(&failed), 1, "{}", stderr(&failed));
    let failed = parse(&failed);
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["errors"][0]["kind"], "fail", "{failed}");
    let failed_id = id_of(&failed);

    // Without --wait: the created job, with the fields given.
    let later = api.json(&[
        "enqueue",
        "echo",
        "--queue",
        "later",
        "--priority",
        "9",
        "--delay-ms",
        "3600000",
        "--unique-key",
        "once",
    ]);
    assert_eq!(later["state"], "pending", "{later}");
    assert_eq!(later["scheduled"], true, "{later}");
    assert_eq!(later["queue"], "later", "{later}");
    assert_eq!(later["priority"], 9, "{later}");
    assert_eq!(later["duplicate"], false, "{later}");
    let later_id = id_of(&later);
    let again = api.json(&[
        "enqueue",
        "echo",
        "--queue",
        "later",
        "--unique-key",
        "once",
    ]);
    assert_eq!(
        (id_of(&again), &again["duplicate"]),
        (later_id.clone(), &json!(true))
    );

    // get: the job, exit 0 whatever its state; people get a table with its fields.
    let got = api.json(&["get", &failed_id]);
    assert_eq!(got["state"], "failed", "{got}");
    let shown = api.jobs(&["get", &failed_id]);
    assert_eq!(code(&shown), 0);
    let text = stdout(&shown);
    assert!(
        text.contains(&failed_id) && text.contains("failed"),
        "{text}"
    );
    assert!(
        text.contains("failing attempt 1"),
        "the error history: {text}"
    );

    // list: filters, newest first, cursor pages.
    for n in 0..3 {
        api.enqueue(&[
            "echo",
            "--queue",
            "paged",
            "--args",
            &format!("{{\"n\":{n}}}"),
        ]);
    }
    let first = api.json(&["list", "--queue", "paged", "--limit", "2"]);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = api.json(&[
        "list", "--queue", "paged", "--limit", "2", "--cursor", &cursor,
    ]);
    assert_eq!((ids(&first).len(), ids(&second).len()), (2, 1));
    assert!(second["next_cursor"].is_null(), "{second}");
    let args_of = |page: &Value| -> Vec<Value> {
        let items = page["items"].as_array().unwrap();
        items.iter().map(|j| j["args"]["n"].clone()).collect()
    };
    assert_eq!(
        [args_of(&first), args_of(&second)].concat(),
        [json!(2), json!(1), json!(0)],
        "newest first"
    );
    let human = stdout(&api.jobs(&["list", "--queue", "paged", "--limit", "2"]));
    assert!(human.contains(&format!("--cursor {cursor}")), "{human}");
    let failures = api.json(&["list", "--state", "failed", "--error-kind", "fail"]);
    assert_eq!(ids(&failures), [failed_id.as_str()]);
    let by_kind = api.json(&[
        "list",
        "--kind",
        "fail",
        "--created-before",
        "2999-01-01T00:00:00Z",
    ]);
    assert_eq!(ids(&by_kind), [failed_id.as_str()]);
    let by_key = api.json(&["list", "--search", "once"]);
    assert_eq!(ids(&by_key), [later_id.as_str()]);
    let by_id = api.json(&["list", "--search", &failed_id]);
    assert_eq!(ids(&by_id), [failed_id.as_str()]);
    let none = api.json(&["list", "--created-after", "2999-01-01T00:00:00Z"]);
    assert_eq!(ids(&none), Vec::<String>::new());

    // cancel: a pending job ends at once; a second cancel is refused (409: exit 4).
    let cancelled = api.json(&["cancel", &later_id]);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let refused = api.jobs(&["cancel", &later_id]);
    assert_fails(&refused, 4, &["409"]);

    // retry: the failed job runs again.
    let retried = api.json(&["retry", &failed_id]);
    assert_eq!(retried["id"], failed_id.as_str());
    assert_ne!(retried["state"], "failed", "{retried}");
    assert_eq!(retried["attempt"], 0, "{retried}");
}

#[tokio::test]
async fn get_watch_follows_progress_until_the_end() {
    let api = Api::start("cli-watch").await;

    // Not a terminal: one line per change, `STATE PERCENT% STAGE`, then the job's fields.
    let id = api.enqueue(&["sleep", "--args", r#"{"ms":2000}"#]);
    let watched = api.jobs(&["get", &id, "--watch"]);
    assert_eq!(code(&watched), 0, "{}", stderr(&watched));
    let text = stdout(&watched);
    let changes: Vec<(&str, u64)> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let state = words
                .next()
                .filter(|w| ["running", "completed"].contains(w))?;
            let percent = words.next()?.strip_suffix('%')?.parse().ok()?;
            Some((state, percent))
        })
        .collect();
    let percents: Vec<u64> = changes.iter().map(|(_, p)| *p).collect();
    assert!(percents.is_sorted(), "progress only grows: {text}");
    let mut distinct = percents.clone();
    distinct.dedup();
    assert!(distinct.len() >= 3, "several changes seen: {text}");
    assert_eq!(changes.last(), Some(&("completed", 100)), "{text}");
    assert!(text.contains("slept"), "the stage is shown: {text}");

    // --json: each event's job view, one JSON line each, the last one ended.
    let id = api.enqueue(&["sleep", "--args", r#"{"ms":1000}"#]);
    let watched = api.jobs(&["--json", "get", &id, "--watch"]);
    assert_eq!(code(&watched), 0, "{}", stderr(&watched));
    let events: Vec<Value> = stdout(&watched)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert!(events.iter().all(|job| job["id"] == id.as_str()));
    assert_eq!(events.last().unwrap()["state"], "completed");

    // A job that ends failed: exit 1.
    let id = api.enqueue(&["fail", "--args", r#"{"times":1,"permanent":true}"#]);
    let watched = api.jobs(&["get", &id, "--watch"]);
    assert_eq!(code(&watched), 1, "{}", stderr(&watched));
    assert!(stdout(&watched).contains("failed"));
}

#[tokio::test]
async fn queues_pause_and_resume() {
    let api = Api::start("cli-queues").await;
    api.enqueue(&["echo", "--queue", "mail", "--delay-ms", "3600000"]);

    let paused = api.json(&["pause", "mail"]);
    assert_eq!(
        (&paused["queue"], &paused["paused"]),
        (&json!("mail"), &json!(true))
    );
    let all = api.json(&["queues"]);
    let mail = all["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "mail")
        .expect("the queue listed");
    assert_eq!(mail["paused"], true, "{all}");
    assert_eq!(mail["counts"]["pending"], 1, "{all}");
    let table = stdout(&api.jobs(&["queues"]));
    assert!(
        table.contains("OLDEST PENDING") && table.contains("mail"),
        "{table}"
    );

    let resumed = api.json(&["resume", "mail"]);
    assert_eq!(resumed["paused"], false, "{resumed}");
}

#[tokio::test]
async fn schedules_commands() {
    let api = Api::start("cli-schedules").await;
    let body = json!({"name": "nightly", "cron": "0 3 * * *", "job": {"kind": "echo"}});
    let file = api.dir.path().join("schedule.json");
    std::fs::write(&file, body.to_string()).unwrap();

    let created = api.json(&[
        "schedules",
        "create",
        "--body",
        &format!("@{}", file.display()),
    ]);
    assert_eq!(
        (&created["name"], &created["cron"]),
        (&json!("nightly"), &json!("0 3 * * *"))
    );
    let inline = json!({"name": "hourly", "cron": "@hourly", "job": {"kind": "echo"}});
    api.json(&["schedules", "create", "--body", &inline.to_string()]);
    let listed = api.json(&["schedules", "list"]);
    let names: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["name"])
        .collect();
    assert_eq!(names, [&json!("hourly"), &json!("nightly")]);
    assert_eq!(
        api.json(&["schedules", "get", "nightly"])["job"]["kind"],
        "echo"
    );
    assert_eq!(api.json(&["schedules", "pause", "nightly"])["paused"], true);
    assert_eq!(
        api.json(&["schedules", "resume", "nightly"])["paused"],
        false
    );

    // Delete answers 204: nothing on stdout, even with --json; then it is gone (404).
    let deleted = api.jobs(&["--json", "schedules", "delete", "nightly"]);
    assert_eq!(code(&deleted), 0, "{}", stderr(&deleted));
    assert!(deleted.stdout.is_empty());
    assert_fails(
        &api.jobs(&["schedules", "get", "nightly"]),
        4,
        &["404", "nightly"],
    );
    // A body the api refuses names the field (exit 4).
    let bad = json!({"name": "x", "cron": "not a cron", "job": {"kind": "echo"}});
    assert_fails(
        &api.jobs(&["schedules", "create", "--body", &bad.to_string()]),
        4,
        &["400", "cron"],
    );
}

#[tokio::test]
async fn workflows_commands() {
    let api = Api::start("cli-workflows").await;
    let body = json!({"name": "pipeline", "steps": [
        {"name": "fetch", "kind": "echo"},
        {"name": "parse", "kind": "echo", "depends_on": ["fetch"]},
    ]});
    let created = api.json(&["workflows", "create", "--body", &body.to_string()]);
    let id = id_of(&created);
    assert_eq!(created["steps"].as_array().unwrap().len(), 2, "{created}");
    wait_until(
        "the workflow to complete",
        Duration::from_secs(30),
        async || api.json(&["workflows", "get", &id])["state"] == "completed",
    )
    .await;
    let listed = api.json(&[
        "workflows",
        "list",
        "--state",
        "completed",
        "--name",
        "pipeline",
    ]);
    assert_eq!(ids(&listed), [id.as_str()]);
    let table = stdout(&api.jobs(&["workflows", "get", &id]));
    assert!(
        table.contains("fetch") && table.contains("parse"),
        "{table}"
    );

    // Cancel: the step waiting an hour ends cancelled.
    let slow = json!({"steps": [{"name": "later", "kind": "echo", "delay_ms": 3_600_000}]});
    let slow = id_of(&api.json(&["workflows", "create", "--body", &slow.to_string()]));
    let cancelled = api.json(&["workflows", "cancel", &slow]);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");

    // Retry: a failed step runs again.
    let failing = json!({"steps": [{"name": "boom", "kind": "fail",
        "args": {"times": 1, "permanent": true}}]});
    let failing = id_of(&api.json(&["workflows", "create", "--body", &failing.to_string()]));
    wait_until(
        "the workflow to fail",
        Duration::from_secs(30),
        async || api.json(&["workflows", "get", &failing])["state"] == "failed",
    )
    .await;
    let retried = api.json(&["workflows", "retry", &failing]);
    assert_eq!(retried["state"], "running", "{retried}");
}

#[tokio::test]
async fn exit_codes_and_messages() {
    let api = Api::start("cli-exit-codes").await;

    // 2: usage errors, before any request.
    assert_fails(&api.jobs(&["enqueue"]), 2, &["<KIND>"]);
    assert_fails(&api.jobs(&["list", "--nope"]), 2, &["--nope"]);
    assert_fails(
        &api.jobs(&["list", "--state", "sleeping"]),
        2,
        &["sleeping"],
    );
    let bad_json = api.jobs(&["enqueue", "echo", "--args", "{not json"]);
    assert_fails(&bad_json, 2, &["--args", "not valid JSON"]);
    let missing = api.jobs(&["workflows", "create", "--body", "@/nonexistent/body.json"]);
    assert_fails(&missing, 2, &["/nonexistent/body.json"]);
    let help = api.jobs(&["--help"]);
    assert_eq!(code(&help), 0);
    assert!(stdout(&help).contains("Exit codes:"), "{}", stdout(&help));

    // 3: a wrong key, or none, against an api with keys.
    let wrong = jobs_with(&api.url, Some("jk_wrong"), &["list"]);
    assert_fails(&wrong, 3, &["401", "JOBS_API_KEY", "--key"]);
    let without = jobs_with(&api.url, None, &["queues"]);
    assert_fails(&without, 3, &["401", "JOBS_API_KEY"]);
    let flag = jobs_with(&api.url, None, &["--key", &api.key, "--json", "queues"]);
    assert_eq!(code(&flag), 0, "the --key flag: {}", stderr(&flag));

    // 4: an unknown job, and a field the api refuses (named in the message).
    let unknown = "00000000-0000-7000-8000-000000000000";
    assert_fails(
        &api.jobs(&["get", unknown]),
        4,
        &["404", unknown, "not found"],
    );
    let bad_queue = api.jobs(&["enqueue", "echo", "--queue", "no spaces"]);
    assert_fails(&bad_queue, 4, &["400", "queue"]);

    // 5: nothing listens there; the message names the URL.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let unreachable = jobs_with(&nowhere, Some(&api.key), &["list"]);
    assert_fails(&unreachable, 5, &["cannot reach the api", &nowhere]);
}
