//! Helpers for black-box tests: find (and if needed build) the real binaries, and run
//! them as child processes against a test database.

use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::OnceLock,
};

/// The path of a workspace binary, built once per test process so it is never stale.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--workspace", "--bins"])
            .status()
            .expect("run cargo build");
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
