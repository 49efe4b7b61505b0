//! Lets the tests mark their PostgreSQL and S3 halves as ignored, visibly, when no
//! PostgreSQL or S3-compatible server is configured.

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
}
