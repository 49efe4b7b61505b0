//! Start latency: enqueue -> handler start, one job at a time into an idle worker.
//! On PostgreSQL the enqueuing store has its own connection pool, as a separate api
//! process would, so the worker hears of each job through LISTEN/NOTIFY. On SQLite the
//! wake-up is in-process, so both share one store.
//!
//! `cargo run --release -p jobs-worker --example start_latency -- [DATABASE_URL] [SAMPLES]`

#![allow(clippy::print_stdout)]

use std::time::Duration;

use jobs_core::{JobStore, NewJob};
use jobs_store::{SeaOrmStore, migrate_up};
use jobs_worker::{JobContext, Worker};
use serde_json::{Value, json};
use tokio::{sync::mpsc, time::Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "sqlite://latency.db?mode=rwc".into());
    let samples: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(200);
    let worker_store = SeaOrmStore::connect(&url).await?;
    migrate_up(worker_store.connection()).await?;
    let producer = if worker_store.is_postgres() {
        SeaOrmStore::connect(&url).await?
    } else {
        worker_store.clone()
    };

    let (started, mut starts) = mpsc::unbounded_channel::<Instant>();
    let handler = move |_args: Value, _ctx: JobContext| {
        let started = started.clone();
        async move {
            let _ = started.send(Instant::now());
            Ok(Value::Null.into())
        }
    };
    let worker = Worker::builder(worker_store)
        .handler("latency_probe", handler)
        .queue("latency", 4)
        .config(|c| c.poll_interval = Duration::from_secs(5))
        .build()
        .spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let warmup = 20;
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        tokio::time::sleep(Duration::from_millis(20)).await; // the worker is idle again
        let sent = Instant::now();
        producer
            .enqueue(NewJob::new("latency_probe", json!({})).queue("latency"))
            .await?;
        let began = starts.recv().await.expect("handler runs");
        if i >= warmup {
            latencies.push(began - sent);
        }
    }
    worker.shutdown().await?;

    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let backend = if producer.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    println!(
        "{{\"bench\":\"start_latency\",\"backend\":\"{backend}\",\"samples\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        latencies.len(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*latencies.last().unwrap())
    );
    Ok(())
}
