//! `jobs-bench all` and `jobs-bench soak` in a tiny configuration on both backends, so
//! the benchmark program cannot rot: every scenario runs to the end (the drain checks
//! that every job completed) and prints its JSON line. No figure is judged here.

use std::collections::BTreeSet;

use blackbox_tests::{run, stdout};
use jobs_store::{backend_tests, testing::TestDb};
use serde_json::Value;

backend_tests!(every_scenario_runs_and_reports, the_soak_runs_and_reports);

/// Runs jobs-bench to a successful end; its JSON lines.
fn json_lines(url: &str, args: &[&str]) -> Vec<Value> {
    let output = run("jobs-bench", url, args);
    assert!(
        output.status.success(),
        "jobs-bench failed: {}\n{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

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
    let lines = json_lines(&url, &args);
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
        "http_minimal_jobs_per_s",
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

/// Six seconds at 200 jobs a second, a row every two: the rows, the comparison and the
/// chart are all there (sizes and dead rows only on PostgreSQL).
async fn the_soak_runs_and_reports(db: TestDb) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let chart = dir.path().join("soak.svg");
    let chart_arg = chart.display().to_string();
    let args = [
        "soak",
        "--rate",
        "200",
        "--minutes",
        "0.1",
        "--report-secs",
        "2",
        "--chart",
        &chart_arg,
    ];
    let lines = json_lines(&db.url(), &args);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let soak = &lines[0];
    assert_eq!(soak["scenario"], "soak", "{soak}");
    for key in [
        "in_per_s",
        "out_per_s",
        "claim_p99_first_ms",
        "start_p99_last_ms",
    ] {
        assert!(
            soak[key].as_f64().is_some_and(|v| v > 0.0),
            "{key} in {soak}"
        );
    }
    let rows = soak["intervals"].as_array().expect("intervals");
    assert_eq!(rows.len(), 3, "{soak}");
    let postgres = db.store.is_postgres();
    for row in rows {
        assert_eq!(row["table_mb"].is_number(), postgres, "{row}");
        assert_eq!(row["dead_tuples"].is_number(), postgres, "{row}");
    }
    let svg = std::fs::read_to_string(&chart).expect("the chart is written");
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
}
