//! `jobs-bench all` in a tiny configuration on both backends, so the benchmark program
//! cannot rot: every scenario runs to the end (the drain checks that every job
//! completed) and prints its JSON line. No figure is judged here.

use std::collections::BTreeSet;

use blackbox_tests::{run, stdout};
use jobs_store::{backend_tests, testing::TestDb};
use serde_json::Value;

backend_tests!(every_scenario_runs_and_reports);

async fn every_scenario_runs_and_reports(db: TestDb) {
    let url = db.url();
    let args = [
        "all",
        "-n",
        "300",
        "--concurrency",
        "4,20",
        "--prefetch",
        "10",
        "--samples",
        "30",
        "--clients",
        "4",
        "--seconds",
        "0.5",
        "--scale-rows",
        "1000",
        "--small-rows",
        "200",
    ];
    let output = run("jobs-bench", &url, &args);
    assert!(
        output.status.success(),
        "jobs-bench failed: {}\n{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let scenarios: Vec<&str> = lines
        .iter()
        .map(|l| l["scenario"].as_str().expect("scenario"))
        .collect();
    assert_eq!(
        scenarios,
        ["enqueue", "drain", "drain", "latency", "http", "scale"]
    );
    let figures: BTreeSet<&str> = [
        "library_jobs_per_s",
        "http_jobs_per_s",
        "jobs_per_s",
        "start_p50_ms",
        "create_per_s",
        "get_per_s",
        "claim_ratio",
    ]
    .into();
    for line in &lines {
        for (key, value) in line.as_object().expect("object") {
            if figures.contains(key.as_str()) {
                assert!(
                    value.as_f64().is_some_and(|v| v > 0.0),
                    "{key} = {value} in {line}"
                );
            }
        }
    }
    let http = &lines[4];
    assert_eq!(http["create_errors"], 0, "{http}");
    assert_eq!(http["get_errors"], 0, "{http}");
}
