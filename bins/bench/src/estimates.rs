//! What a job's position and estimates cost on a long queue, and what a large result
//! costs to store.

use std::time::{Duration, Instant};

use clap::Args;
use jobs_core::{ClaimRequest, Estimate, JobStore, Lease};
use serde_json::{Value, json};

use crate::{
    report::Report,
    setup::{self, KIND, QUEUE},
};

#[derive(Debug, Clone, Args)]
pub struct PositionArgs {
    /// Pending jobs in the queue.
    #[arg(long, short, default_value_t = 1_000_000)]
    pub n: usize,
    /// Estimates timed at each depth.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
}

/// Estimates of jobs at the head, at depths 1,000 and 100,000 and at the tail of a queue
/// of `n` pending jobs, with the read's and with a create's position limit.
pub async fn position(url: &str, args: &PositionArgs) -> anyhow::Result<()> {
    let store = setup::fresh(url).await?;
    let ids = setup::fill(&store, args.n, 5_000).await?;
    if store.is_postgres() {
        setup::vacuum(&store).await?;
    }
    let mut report = Report::new("position", setup::backend(&store), "position");
    report
        .param("n", json!(args.n))
        .param("samples", json!(args.samples));
    let depths = [
        ("head", 0),
        ("depth_1k", 1_000),
        ("depth_100k", 100_000),
        ("tail", usize::MAX),
    ];
    for (name, depth) in depths {
        let job = store.get(None, ids[depth.min(ids.len() - 1)]).await?;
        for (limit_name, limit) in [
            ("read", Estimate::POSITION_LIMIT),
            ("create", Estimate::QUICK_POSITION_LIMIT),
        ] {
            let mut took = Vec::with_capacity(args.samples);
            for _ in 0..args.samples {
                let started = Instant::now();
                store.estimate(&job, limit).await?;
                took.push(started.elapsed());
            }
            report.latencies(&format!("{name}_{limit_name}"), &mut took);
        }
    }
    report.print();
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct ResultsArgs {
    /// Bytes of JSON in the result (about).
    #[arg(long, default_value_t = 5_000_000)]
    pub bytes: usize,
}

/// One job completed with a result of about `bytes` bytes of JSON: how long completing
/// and reading it took and how many bytes the database keeps.
pub async fn results(url: &str, args: &ResultsArgs) -> anyhow::Result<()> {
    let store = setup::fresh(url).await?;
    store.enqueue(setup::job()).await?;
    let request = ClaimRequest {
        worker_id: "bench".into(),
        queues: vec![QUEUE.into()],
        kinds: Some(vec![KIND.into()]),
        tenant: None,
        limit: 1,
        lease: Duration::from_secs(60),
    };
    let job = store.claim(&request).await?.remove(0);
    let result = report_rows(args.bytes);
    let json_bytes = serde_json::to_vec(&result)?.len();
    let started = Instant::now();
    store
        .complete(&Lease::of(&job).expect("claimed"), result.clone())
        .await?;
    let complete = started.elapsed();
    let started = Instant::now();
    let read = store.get(None, job.id).await?;
    let get = started.elapsed();
    anyhow::ensure!(read.result == Some(result), "the result did not read back");
    let stored = store
        .compressed_outcome_bytes(job.id)
        .await?
        .unwrap_or(json_bytes as u64);
    let mut report = Report::new("results", setup::backend(&store), "results");
    report
        .add("json_bytes", json!(json_bytes), format!("{json_bytes} B"))
        .add("stored_bytes", json!(stored), format!("{stored} B"))
        .ms("complete_ms", complete)
        .ms("get_ms", get);
    let ratio = (json_bytes as f64 / stored.max(1) as f64 * 10.0).round() / 10.0;
    report.add("ratio", json!(ratio), format!("{ratio}x"));
    report.print();
    Ok(())
}

/// A report's rows, as results often are: similar objects, about `bytes` long.
fn report_rows(bytes: usize) -> Value {
    let rows: Vec<Value> = (0..bytes / 90)
        .map(|i| json!({"row": i, "sku": format!("SKU-{:08}", i * 7919 % 100_000), "status": "shipped", "note": "left the warehouse on time"}))
        .collect();
    json!({"rows": rows})
}
