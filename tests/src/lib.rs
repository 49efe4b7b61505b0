//! Helpers for black-box tests: find (and if needed build) the real binaries, and run
//! them as child processes against a test database.

use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::OnceLock,
    time::Duration,
};

/// The path of a workspace binary, built once per test process so it is never stale.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--workspace", "--bins"]);
        // `cargo test` gives the test process the package's own variables; build scripts
        // that track one (ring's reads CARGO_MANIFEST_DIR and OUT_DIR) would otherwise see
        // it change between this build and a build from a shell, and rebuild half the tree
        // each time.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || matches!(
                    &*name,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "OUT_DIR"
                )
            {
                build.env_remove(&*name);
            }
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
    });
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    dir.join(name)
}

/// Runs a binary to completion with `DATABASE_URL` set.
pub fn run(name: &str, database_url: &str, args: &[&str]) -> Output {
    Command::new(binary(name))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("start binary")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A child process that is killed when dropped, so a failing test leaves no process
/// behind (holding database connections).
#[derive(Debug)]
pub struct Proc(std::process::Child);

impl std::ops::Deref for Proc {
    type Target = std::process::Child;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts a binary in the background with `DATABASE_URL` set; its output goes to a log
/// file in the temporary directory, named after `label`, for reading when a test fails.
pub fn spawn(name: &str, label: &str, database_url: &str, args: &[&str]) -> Proc {
    spawn_with_env(name, label, database_url, args, &[])
}

/// `spawn` with more environment variables.
pub fn spawn_with_env(
    name: &str,
    label: &str,
    database_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let mut command = Command::new(binary(name));
    command
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied());
    spawn_logged(command, label)
}

/// Starts any program (not a workspace binary: a browser driver) in the background, its
/// output logged as `spawn` does.
pub fn spawn_program(program: &str, label: &str, args: &[&str]) -> Proc {
    let mut command = Command::new(program);
    command.args(args);
    spawn_logged(command, label)
}

/// Starts `command` with its output in the log file of `label`.
fn spawn_logged(mut command: Command, label: &str) -> Proc {
    let path = log_path(label);
    std::fs::create_dir_all(path.parent().expect("a log directory")).expect("log directory");
    let log = std::fs::File::create(path).expect("log file");
    command
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .map(Proc)
        .unwrap_or_else(|e| panic!("start {:?}: {e}", command.get_program()))
}

/// Creates an API key for `tenant` with `jobs-api keys create`; returns the secret.
pub fn create_key(database_url: &str, tenant: &str) -> String {
    let created = run(
        "jobs-api",
        database_url,
        &["keys", "create", "--tenant", tenant],
    );
    assert!(created.status.success(), "keys create: {created:?}");
    stdout(&created).trim().to_owned()
}

/// Starts `jobs-api` on a free port with `args` and waits until `/readyz` answers 200;
/// returns the process and its base URL.
pub async fn start_api(label: &str, database_url: &str, args: &[&str]) -> (Proc, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut all = vec!["--listen", listen.as_str()];
    all.extend(args);
    let api = spawn("jobs-api", label, database_url, &all);
    let base = format!("http://{listen}");
    // reqwest is built without a default TLS provider; any test may be the first here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    wait_until("the api to be ready", Duration::from_secs(60), async || {
        let ready = http.get(format!("{base}/readyz")).send().await;
        ready.is_ok_and(|r| r.status().is_success())
    })
    .await;
    (api, base)
}

/// Sends SIGTERM, as a deploy would.
pub fn terminate(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
}

/// Where `spawn` writes the output of the process named `label`.
pub fn log_path(label: &str) -> PathBuf {
    std::env::temp_dir()
        .join("jobs-blackbox-logs")
        .join(format!("{label}.log"))
}

/// A TCP port nobody listens on right now, for a child process to serve on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free local port")
        .port()
}

/// Polls `done` every 50 ms until it holds; fails the test after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + limit;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
