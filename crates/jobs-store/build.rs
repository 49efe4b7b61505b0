//! Lets the test suites mark their PostgreSQL half as ignored, visibly, when no
//! PostgreSQL is configured.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(jobs_postgres_tests)");
    println!("cargo::rerun-if-env-changed=JOBS_TEST_POSTGRES_URL");
    if std::env::var_os("JOBS_TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=jobs_postgres_tests");
    }
}
