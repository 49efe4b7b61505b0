# Everyday commands. `cargo install just` to use them; plain cargo works too (see README).

pg_url := env_var_or_default("JOBS_TEST_POSTGRES_URL", "postgres:///jobs_dev?host=/var/run/postgresql&user=" + `id -un`)

# Build every crate and binary.
build:
    cargo build --workspace --all-targets

# All tests; the PostgreSQL half runs when JOBS_TEST_POSTGRES_URL is set.
test:
    cargo test --workspace

# All tests with the PostgreSQL half, on a fresh local database `jobs_dev`.
test-pg:
    psql -h /var/run/postgresql -d postgres -qc 'DROP DATABASE IF EXISTS jobs_dev WITH (FORCE)' -c 'CREATE DATABASE jobs_dev'
    JOBS_TEST_POSTGRES_URL='{{pg_url}}' cargo test --workspace

# Formatting and clippy, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# What CI runs, PostgreSQL setup included.
ci:
    bash .ci/run

# Apply migrations to DATABASE_URL (default: ./jobs.db).
migrate *ARGS="up":
    cargo run --quiet --bin jobs-api -- migrate {{ARGS}}

# Serve the API on DATABASE_URL (default: ./jobs.db, with an embedded worker).
api *ARGS:
    cargo run --bin jobs-api -- {{ARGS}}

# The command-line client against JOBS_URL (default http://127.0.0.1:8080): `just jobs queues`.
jobs *ARGS:
    cargo run --quiet --bin jobs -- {{ARGS}}

# Print the OpenAPI document of a running api.
openapi URL="http://127.0.0.1:8080":
    curl -s {{URL}}/openapi.json

# Run a worker process with the built-in handlers on DATABASE_URL (default: ./jobs.db).
worker *ARGS:
    cargo run --bin jobs-worker -- {{ARGS}}

# Benchmarks (release build): `just bench all`, `just bench drain -n 200000 -c 10,100`,
# `just bench latency`... against DATABASE_URL (default: ./jobs-bench.db). See `--help`.
bench *ARGS:
    cargo run --release -p jobs-bench -- {{ARGS}}

# Load: 64 HTTP clients create and read jobs for 60 s against api + worker on PostgreSQL
# (drops and recreates jobs_load); prints latencies, throughput, drain, RSS, a JSON summary.
# Options: --clients N --seconds S --worker-concurrency N --database-url URL --drain-timeout S.
load *ARGS:
    cargo run --release -p blackbox-tests --example load -- {{ARGS}}

# Fault scenarios with real processes on PostgreSQL (short: 2,000 jobs each, as in CI).
faults:
    JOBS_TEST_POSTGRES_URL='{{pg_url}}' cargo test -p blackbox-tests --test faults -- --nocapture

# The long variant: 20,000 jobs per scenario.
faults-long:
    JOBS_FAULT_JOBS=20000 JOBS_TEST_POSTGRES_URL='{{pg_url}}' cargo test -p blackbox-tests --test faults -- --nocapture

# Schemathesis against the api's /openapi.json (installs it into a venv on first use).
schemathesis *ARGS:
    bash scripts/schemathesis.sh {{ARGS}}

# Peers (graphile-worker, pg-boss, River's Rust port and awa unless RUST_PEERS=0, plain-SQL ceiling;
# apalis with APALIS=1) and ours, measured in the same run; prints one markdown table with ratios
# ours / best peer and the targets of issue 17 (about 15 minutes, wants a quiet machine). PGPORT
# picks the cluster (5432). SMOKE=1 for a one-minute plumbing check. Settings: see scripts/bench-compare.sh.
bench-compare:
    bash scripts/bench-compare.sh
