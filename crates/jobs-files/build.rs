//! Lets the tests mark their PostgreSQL and S3 halves as ignored, visibly, when no
//! PostgreSQL or S3-compatible server is configured; and the black-box browser test
//! (which shares this script) when no `chromedriver` is installed.

fn main() {
    for (cfg, var) in [
        ("jobs_postgres_tests", "JOBS_TEST_POSTGRES_URL"),
        ("jobs_s3_tests", "JOBS_TEST_S3_URL"),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={var}");
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    browser_switch();
}

/// `jobs_browser_tests` when `chromedriver` is on the PATH. Looked for again when the
/// PATH or the directory it was found in (or `/usr/bin`, where Debian installs it)
/// changes, so installing it turns the test on.
fn browser_switch() {
    println!("cargo::rustc-check-cfg=cfg(jobs_browser_tests)");
    println!("cargo::rerun-if-env-changed=PATH");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).find(|dir| dir.join("chromedriver").is_file());
    let watched = found.clone().unwrap_or_else(|| "/usr/bin".into());
    if watched.is_dir() {
        println!("cargo::rerun-if-changed={}", watched.display());
    }
    if found.is_some() {
        println!("cargo::rustc-cfg=jobs_browser_tests");
    }
}
