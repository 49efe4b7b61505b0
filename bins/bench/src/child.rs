//! The processes a scenario measures from outside: this same binary, started again as a
//! worker or an api, so that their CPU and their connections are their own.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use jobs_worker::{JobContext, Worker};
use serde_json::Value;

use crate::{WorkerArgs, setup};

/// A child process, stopped with SIGTERM (then killed) when dropped.
#[derive(Debug)]
pub struct Process(Child);

impl Process {
    fn start(url: &str, args: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating jobs-bench")?;
        let child = Command::new(exe)
            .arg("--database-url")
            .arg(url)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a child process")?;
        Ok(Self(child))
    }

    /// A worker running the no-op handler on the bench queue.
    pub fn worker(url: &str, concurrency: usize, prefetch: usize) -> anyhow::Result<Self> {
        let args = [
            "worker".to_owned(),
            format!("--concurrency={concurrency}"),
            format!("--prefetch={prefetch}"),
        ];
        Self::start(url, &args)
    }

    /// An api; returns it with its base URL once it listens.
    pub fn api(url: &str) -> anyhow::Result<(Self, String)> {
        let mut process = Self::start(url, &["api".to_owned()])?;
        let stdout = process.0.stdout.take().context("api stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line.trim().to_owned();
        anyhow::ensure!(!address.is_empty(), "the api exited before listening");
        Ok((process, format!("http://{address}")))
    }

    /// User plus system CPU time so far (Linux `/proc`).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id()))?;
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').context("parsing /proc stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
    }

    /// SIGTERM, then waits; true if it exited 0.
    pub fn stop(mut self) -> anyhow::Result<bool> {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()?;
        Ok(self.0.wait()?.success())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// The worker role: the real runtime with a no-op handler, until SIGTERM.
pub async fn run_worker(url: &str, args: &WorkerArgs) -> anyhow::Result<()> {
    let shutdown = jobs_worker::signals::cancel_on_signals()?;
    let store = setup::connect(url).await?;
    let noop = |_args: Value, _ctx: JobContext| async { Ok(Value::Null.into()) };
    let prefetch = args.prefetch;
    Worker::builder(store)
        .handler(setup::KIND, noop)
        .queue(setup::QUEUE, args.concurrency)
        .config(|c| c.prefetch = prefetch)
        .build()?
        .run(shutdown)
        .await?;
    Ok(())
}

/// The api role: the real HTTP API on a free local port, which it prints first.
pub async fn run_api(url: &str) -> anyhow::Result<()> {
    let shutdown = jobs_worker::signals::cancel_on_signals()?;
    let store = setup::connect(url).await?;
    let state = jobs_http::ApiState::new(store, jobs_http::ApiConfig::default(), None).await?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?);
    let server = jobs_http::server(listener, state)?;
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.stop(true).await;
    });
    server.await?;
    Ok(())
}
