#!/usr/bin/env bash
# The OpenAPI document is one that clients can be generated from:
#
#   bash scripts/openapi-client.sh
#
# It builds jobs-api, starts it on a fresh SQLite file (embedded worker off) and checks:
#   1. without API keys the served document declares no security requirement, and with a
#      key it declares the bearer key; both pass openapi-spec-validator (OpenAPI 3.1);
#   2. openapi-python-client generates a client from it with zero warnings;
#   3. scripts/openapi_client_drive.py drives a job through that client: create, get, list,
#      and a remote worker's claim, heartbeat and complete.
# The tools are pinned in a virtualenv (OA_VENV, default target/openapi-venv); the
# generated client is left in target/openapi-client for a look.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${OA_VENV:-$ROOT/target/openapi-venv}
PYTHON=${OA_PYTHON:-python3}
PINS=(openapi-spec-validator==0.9.0 openapi-python-client==0.29.1 ruff==0.17.6)

log() { printf '==> %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

installed=$("$VENV/bin/pip" freeze 2>/dev/null || true)
missing=0
for pin in "${PINS[@]}"; do grep -qix "$pin" <<<"$installed" || missing=1; done
if [ "$missing" -eq 1 ]; then
    log "installing ${PINS[*]} into $VENV"
    [ -x "$VENV/bin/pip" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
fi
# openapi-python-client formats its output with ruff, found on PATH.
export PATH="$VENV/bin:$PATH"

log "building jobs-api"
cargo build --quiet --manifest-path "$ROOT/Cargo.toml" --bin jobs-api
API_BIN="$ROOT/target/debug/jobs-api"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/jobs-openapi.XXXXXX")
API_PID=
cleanup() {
    [ -n "$API_PID" ] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
export DATABASE_URL="sqlite://$WORK/jobs.db?mode=rwc"
"$API_BIN" serve --listen "127.0.0.1:$PORT" --embedded-worker off >"$WORK/api.log" 2>&1 &
API_PID=$!
for _ in $(seq 1 150); do
    curl -sf -o /dev/null "$BASE/readyz" && break
    kill -0 "$API_PID" 2>/dev/null || { cat "$WORK/api.log" >&2; fail "jobs-api exited at start"; }
    sleep 0.2
done

security() { "$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("security"))' "$1"; }

curl -sf "$BASE/openapi.json" -o "$WORK/open.json"
[ "$(security "$WORK/open.json")" = None ] || fail "the document declares security while the api runs without keys"
openapi-spec-validator "$WORK/open.json" || fail "openapi-spec-validator (no keys)"

KEY=$("$API_BIN" keys create --tenant generated 2>/dev/null | tail -n 1)
case "$KEY" in jk_*) ;; *) fail "could not create an API key" ;; esac
# The api notices a new key within its census refresh (2 s).
for _ in $(seq 1 50); do
    curl -sf "$BASE/openapi.json" -o "$WORK/keyed.json"
    [ "$(security "$WORK/keyed.json")" != None ] && break
    sleep 0.2
done
[ "$(security "$WORK/keyed.json")" != None ] || fail "the document declares no security once a key exists"
openapi-spec-validator "$WORK/keyed.json" || fail "openapi-spec-validator (with a key)"

OUT="$ROOT/target/openapi-client"
rm -rf "$OUT"
log "openapi-python-client generate"
(cd "$WORK" && openapi-python-client generate --path "$WORK/keyed.json" --output-path "$OUT" \
    --meta none 2>&1) | tee "$WORK/generate.log" >&2
grep -qi 'warning' "$WORK/generate.log" && fail "openapi-python-client warned"
[ -f "$OUT/client.py" ] || fail "no client generated"

# `--meta none` writes the package's modules straight into $OUT: name it jobs_client.
mkdir -p "$WORK/py" && ln -s "$OUT" "$WORK/py/jobs_client"
PYTHONPATH="$WORK/py" "$VENV/bin/python" "$ROOT/scripts/openapi_client_drive.py" "$BASE" "$KEY" \
    || fail "driving a job through the generated client"
log "passed"
