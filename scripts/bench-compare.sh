#!/usr/bin/env bash
# bench-compare: the peer job queues and ours, measured in the same run on this machine, then
# one markdown table with the ratios ours / best peer (printed by scripts/bench_compare.py).
#
#   bash scripts/bench-compare.sh              # full run: several minutes; wants a quiet machine
#   PGPORT=5433 bash scripts/bench-compare.sh  # the same against another cluster (here: stock settings)
#   SMOKE=1 bash scripts/bench-compare.sh      # tiny sizes, no idle waits: checks the plumbing only
#   python3 scripts/bench_compare.py [FILE]    # the table again (default: the newest results file)
#
# Every run appends one line per JSON result (a failed run appends a failure record) to
# target/bench-compare/results-<UTC timestamp>.jsonl, wrapped with label, timestamp, idle % before
# and load average after, as the peers' run-all.sh does; the first line records the machine and
# the settings. Everything the programs print goes to results-<timestamp>.log beside it, and the
# table to results-<timestamp>.md.
#
# What runs, in this order (one round; REPEAT rounds in all):
#   ours, PostgreSQL (database jobs_bench, created if missing; jobs-bench empties its table):
#     ours-pg-drain-c10      jobs-bench drain -n N $OURS_DRAIN_C10_ARGS
#     ours-pg-drain-best     jobs-bench drain -n N $OURS_DRAIN_BEST_ARGS
#     ours-pg-enqueue        jobs-bench enqueue -n ENQ_N --batch 1000   (library and HTTP)
#     ours-pg-latency        jobs-bench latency --samples OURS_LAT_SAMPLES
#   peers (a copy of /work/shared/bench/peers in target/bench-peers, database `bench`):
#     graphile-stock         ./graphile.sh                  concurrency 10, one get_job per job
#     graphile-localqueue    LOCAL_QUEUE=500 ./graphile.sh  graphile's own perfTest tuning
#     pgboss-fetch100        PGB_FETCH=100 ./pgboss.sh      10 workers x batchSize 100
#     river-c10              ./river-rs.sh                  River's Rust port (riverqueue), 10 workers
#     river-w2000            RIVER_MAX_WORKERS=2000 ./river-rs.sh   River's own bench setting
#     awa-c10                ./awa.sh                       awa, max_workers 10
#     awa-c200               CONCURRENCY=200 ./awa.sh       awa, max_workers 200
#                            (river and awa: unless RUST_PEERS=0; cargo-built before the first run,
#                            about 2-3 min each the first time)
#     apalis-batch100        APALIS_BATCH=100 ./apalis.sh   only with APALIS=1 (cargo-builds ~1.5 min)
#     sql-limit              ./sql-limit.sh                 plain-SQL ceiling (pgbench claim+complete
#                                                           LIMIT 100), last: it writes ~1.5M rows
#   ours, SQLite (target/bench-compare/bench.db, new each run; no peer runs on SQLite):
#     ours-sqlite-drain-best, ours-sqlite-enqueue
#
# Settings (environment):
#   N                     jobs per drain, peers and ours alike           (200000)
#   ENQ_N                 jobs per enqueue of ours, each way             (100000)
#   OURS_LAT_SAMPLES      start-latency samples of ours                  (1000)
#   PEER_LAT_SAMPLES      latency samples of each peer                   (200, as in the peers' README)
#   OURS_DRAIN_C10_ARGS   our drain "like the peers' concurrency 10"     (--concurrency 10 --prefetch 500)
#   OURS_DRAIN_BEST_ARGS  our best drain settings                        (--concurrency 10 --prefetch 8000)
#   REPEAT                rounds of everything; the table shows medians  (1)
#   APALIS=1              also run apalis; APALIS_BATCH is its fetch batch (100: at its default 10
#                         it drains under 1k jobs/s at 100k jobs, see the peers' README)
#   SQL_DURATION          seconds of each pgbench run in sql-limit.sh    (20)
#   QUIET_IDLE, QUIET_TIMEOUT  quiet.sh: before each run wait until the CPU is >= 85 % idle, at
#                         most 180 s (other people compile on this machine); the idle % is recorded
#   PGPORT                the PostgreSQL cluster, for ours, the peers and psql alike (5432).
#                         The meta line records it with `show autovacuum`, and the table's title
#                         names the cluster: autovacuum on = stock settings, off = CI settings
#   PG_DB                 our PostgreSQL database                        (jobs_bench)
#   RUST_PEERS=0          skip river and awa (default 1; 0 in smoke mode unless RUST_PEERS=1)
#   PEERS_SRC, PEERS_DIR  peers' source (read-only) and the writable copy
#                         (/work/shared/bench/peers, target/bench-peers)
#   SMOKE=1               N=ENQ_N=2000, 50 latency samples, a 2 s sql-limit with small prefills,
#                         no idle waits, no apalis, no river or awa unless RUST_PEERS=1: for testing
#                         this script, not for numbers
#
# Exit status: 1 when a run of ours failed; a failed peer only shows as "-" in the table.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$ROOT/scripts/bench_compare.py"
log() { printf '==> %s\n' "$*" >&2; }

# ---- settings
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
    # Small enough to finish in about a minute; defaults below only fill what is still unset.
    : "${N:=2000}" "${ENQ_N:=2000}" "${OURS_LAT_SAMPLES:=50}" "${PEER_LAT_SAMPLES:=50}"
    : "${SQL_DURATION:=2}" "${SQL_ROWS:=2000}" "${SQL_PREFILL_100:=150000}" "${SQL_PREFILL_1:=20000}"
    # The Rust peers take minutes to build the first time: only when asked for.
    : "${RUST_PEERS:=0}"
    APALIS=0
fi
N=${N:-200000}
ENQ_N=${ENQ_N:-100000}
OURS_LAT_SAMPLES=${OURS_LAT_SAMPLES:-1000}
PEER_LAT_SAMPLES=${PEER_LAT_SAMPLES:-200}
OURS_DRAIN_C10_ARGS=${OURS_DRAIN_C10_ARGS:---concurrency 10 --prefetch 500}
OURS_DRAIN_BEST_ARGS=${OURS_DRAIN_BEST_ARGS:---concurrency 10 --prefetch 8000}
REPEAT=${REPEAT:-1}
APALIS=${APALIS:-0}
RUST_PEERS=${RUST_PEERS:-1}
APALIS_BATCH=${APALIS_BATCH:-100}
# sql-limit.sh's own defaults, unless smoke mode shrank them.
SQL_DURATION=${SQL_DURATION:-20}
SQL_ROWS=${SQL_ROWS:-100000}
SQL_PREFILL_100=${SQL_PREFILL_100:-1500000}
SQL_PREFILL_1=${SQL_PREFILL_1:-100000}
PG_DB=${PG_DB:-jobs_bench}
PGSOCK=${PGHOST:-/var/run/postgresql}
# Exported: psql, pgbench and every peer read PGPORT (node-postgres and the Rust peers when their
# DATABASE_URL names no port; run_peer unsets DATABASE_URL).
export PGPORT=${PGPORT:-5432}
PG_USER=${PGUSER:-$(id -un)}
PEERS_SRC=${PEERS_SRC:-/work/shared/bench/peers}
PEERS_DIR=${PEERS_DIR:-$ROOT/target/bench-peers}

OUT_DIR="$ROOT/target/bench-compare"
TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$OUT_DIR/results-$TS.jsonl"
LOG="$OUT_DIR/results-$TS.log"
TABLE="$OUT_DIR/results-$TS.md"
PG_URL="postgres:///$PG_DB?host=$PGSOCK&port=$PGPORT&user=$PG_USER"
SQLITE_DB="$OUT_DIR/bench.db"
SQLITE_URL="sqlite://$SQLITE_DB?mode=rwc"
BENCH="$ROOT/target/release/jobs-bench"
mkdir -p "$OUT_DIR"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-compare.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# ---- ours: built first, so a compile error stops the run before anything is measured
log "building jobs-bench (release)"
(cd "$ROOT" && cargo build --release -p jobs-bench)

# ---- peers: a writable copy, so that npm's node_modules and the Rust peers' cargo targets survive
# between runs (the source folder is read-only). rsync only refreshes the scripts.
log "copying peers from $PEERS_SRC to $PEERS_DIR"
mkdir -p "$PEERS_DIR"
rsync -a --chmod=u+w --exclude node_modules --exclude results --exclude package-lock.json \
    --exclude apalis/target --exclude river-rs/target --exclude awa/target "$PEERS_SRC"/ "$PEERS_DIR"/
# setup.sh starts PostgreSQL if it is down, creates database `bench` and npm-installs the pinned
# graphile-worker and pg-boss. If it fails (no registry, say), graphile and pg-boss fail and show
# as "-"; ours and the plain-SQL ceiling still run.
log "peers setup (setup.sh)"
(cd "$PEERS_DIR" && ./setup.sh >>"$LOG" 2>&1) || log "peers setup FAILED (see $LOG); graphile and pg-boss will fail"
# shellcheck source=/dev/null
. "$PEERS_DIR/quiet.sh"

# The Rust peers' scripts cargo-build on every start (a no-op once built). Building them here, before
# anything is measured, keeps a first build's minutes of compiling out of the other runs' idle waits.
# A failed build only logs: that peer's runs then fail too and show as "-".
rust_peers=()
[ "$RUST_PEERS" = 1 ] && rust_peers+=(river-rs awa)
[ "$APALIS" = 1 ] && rust_peers+=(apalis)
for dir in "${rust_peers[@]}"; do
    log "building peer $dir (release; minutes the first time)"
    (cd "$PEERS_DIR/$dir" && CARGO_TARGET_DIR="$PWD/target" cargo build --release --quiet >>"$LOG" 2>&1) \
        || log "building $dir FAILED (see $LOG); its runs will fail"
done

# ---- our databases
# pg_sql SQL: one value from the cluster under test (psql reads the exported PGPORT).
pg_sql() { psql -X -h "$PGSOCK" -d postgres -Atc "$1"; }
pg_isready -q -h "$PGSOCK" || { log "PostgreSQL is not accepting connections on $PGSOCK port $PGPORT"; exit 1; }
if [ "$(pg_sql "select 1 from pg_database where datname = '$PG_DB'")" != 1 ]; then
    log "creating database $PG_DB"
    createdb -h "$PGSOCK" "$PG_DB"
fi
# A new SQLite file each run: jobs-bench empties the table, but the file's size would persist.
rm -f "$SQLITE_DB" "$SQLITE_DB-wal" "$SQLITE_DB-shm"

# ---- the first line: machine and settings, so the table can be redrawn from the file alone
expected=(ours-pg-drain-c10 ours-pg-drain-best ours-pg-enqueue ours-pg-latency
    graphile-stock graphile-localqueue pgboss-fetch100 sql-limit ours-sqlite-drain-best ours-sqlite-enqueue)
[ "$RUST_PEERS" = 1 ] && expected+=(river-c10 river-w2000 awa-c10 awa-c200)
[ "$APALIS" = 1 ] && expected+=(apalis-batch100)
git_rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null)" ] || git_rev="$git_rev+uncommitted"
python3 "$PY" meta --out "$OUT" \
    --pg-version "$(pg_sql 'show server_version')" --pg-port "$PGPORT" \
    --autovacuum "$(pg_sql 'show autovacuum')" \
    --node-version "$(node --version 2>/dev/null || echo none)" \
    --git "$git_rev" --expect "${expected[@]}" --setting \
    "SMOKE=$SMOKE" "N=$N" "ENQ_N=$ENQ_N" "OURS_LAT_SAMPLES=$OURS_LAT_SAMPLES" \
    "PEER_LAT_SAMPLES=$PEER_LAT_SAMPLES" "OURS_DRAIN_C10_ARGS=$OURS_DRAIN_C10_ARGS" \
    "OURS_DRAIN_BEST_ARGS=$OURS_DRAIN_BEST_ARGS" "REPEAT=$REPEAT" "APALIS=$APALIS" \
    "APALIS_BATCH=$APALIS_BATCH" "RUST_PEERS=$RUST_PEERS" "PGPORT=$PGPORT" \
    "SQL_DURATION=$SQL_DURATION" "QUIET_IDLE=${QUIET_IDLE:-85}" \
    "PG_URL=$PG_URL" "SQLITE_URL=$SQLITE_URL"

# ---- runs
ROUND=1
FAILED_OURS=0

# Idle % before a run (quiet.sh), or null in smoke mode, which does not wait.
quiet() { if [ "$SMOKE" = 1 ]; then echo null; else wait_quiet; fi; }

# record SYSTEM LABEL RC IDLE COMMAND: wraps the JSON line(s) of $TMP/out into $OUT (or a failure
# record when the run failed or printed none) and prints a one-line summary.
record() {
    python3 "$PY" wrap --out "$OUT" --system "$1" --label "$2" --rc "$3" --idle "$4" \
        --command "$5" --round "$ROUND" --log "$LOG" <"$TMP/out" || true
}

# run_peer LABEL [VAR=value ...] ./script.sh
run_peer() {
    local label=$1 idle rc=0; shift
    idle=$(quiet)
    log "[$ROUND/$REPEAT] $label: $*"
    printf '\n==> %s %s: %s\n' "$(date -u +%FT%TZ)" "$label" "$*" >>"$LOG"
    # DATABASE_URL is unset because the peers read it: a caller's URL must not get their
    # schemas dropped. Without it they use database `bench` on the local socket, port $PGPORT.
    (cd "$PEERS_DIR" && env -u DATABASE_URL N="$N" LAT_SAMPLES="$PEER_LAT_SAMPLES" "$@") \
        >"$TMP/out" 2>>"$LOG" || rc=$?
    cat "$TMP/out" >>"$LOG"
    record peer "$label" "$rc" "$idle" "$*"
}

# run_ours LABEL URL SCENARIO [ARGS ...]
run_ours() {
    local label=$1 url=$2 idle rc=0; shift 2
    idle=$(quiet)
    log "[$ROUND/$REPEAT] $label: jobs-bench $*"
    printf '\n==> %s %s: jobs-bench --database-url %s %s\n' "$(date -u +%FT%TZ)" "$label" "$url" "$*" >>"$LOG"
    "$BENCH" --database-url "$url" "$@" >"$TMP/out" 2>>"$LOG" || rc=$?
    cat "$TMP/out" >>"$LOG"
    [ "$rc" = 0 ] || FAILED_OURS=1
    record ours "$label" "$rc" "$idle" "$*"
}

# Word-split on purpose: these hold several flags.
read -ra c10_args <<<"$OURS_DRAIN_C10_ARGS"
read -ra best_args <<<"$OURS_DRAIN_BEST_ARGS"

for ROUND in $(seq 1 "$REPEAT"); do
    run_ours ours-pg-drain-c10 "$PG_URL" drain -n "$N" "${c10_args[@]}"
    run_ours ours-pg-drain-best "$PG_URL" drain -n "$N" "${best_args[@]}"
    run_ours ours-pg-enqueue "$PG_URL" enqueue -n "$ENQ_N" --batch 1000
    run_ours ours-pg-latency "$PG_URL" latency --samples "$OURS_LAT_SAMPLES"

    run_peer graphile-stock ./graphile.sh
    run_peer graphile-localqueue LOCAL_QUEUE=500 ./graphile.sh
    run_peer pgboss-fetch100 PGB_FETCH=100 ./pgboss.sh
    if [ "$RUST_PEERS" = 1 ]; then
        run_peer river-c10 ./river-rs.sh
        run_peer river-w2000 RIVER_MAX_WORKERS=2000 ./river-rs.sh
        run_peer awa-c10 ./awa.sh
        run_peer awa-c200 CONCURRENCY=200 ./awa.sh
    fi
    if [ "$APALIS" = 1 ]; then
        run_peer apalis-batch100 APALIS_BATCH="$APALIS_BATCH" ./apalis.sh
    fi
    run_peer sql-limit ROWS="$SQL_ROWS" DURATION="$SQL_DURATION" \
        PREFILL_100="$SQL_PREFILL_100" PREFILL_1="$SQL_PREFILL_1" ./sql-limit.sh

    run_ours ours-sqlite-drain-best "$SQLITE_URL" drain -n "$N" "${best_args[@]}"
    run_ours ours-sqlite-enqueue "$SQLITE_URL" enqueue -n "$ENQ_N" --batch 1000
done

# ---- the table
log "results: $OUT (program output: $LOG)"
python3 "$PY" "$OUT" | tee "$TABLE"
log "table: $TABLE"
exit "$FAILED_OURS"
