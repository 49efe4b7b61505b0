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

# Print the OpenAPI document of a running api.
openapi URL="http://127.0.0.1:8080":
    curl -s {{URL}}/openapi.json

# Run a worker process with the built-in handlers on DATABASE_URL (default: ./jobs.db).
worker *ARGS:
    cargo run --bin jobs-worker -- {{ARGS}}

# Start latency (enqueue -> handler start) into an idle worker; prints p50/p99 as JSON.
bench-latency URL="postgres:///jobs_bench?host=/var/run/postgresql&user=" + `id -un`:
    cargo run --release -p jobs-worker --example start_latency -- '{{URL}}' 200

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
