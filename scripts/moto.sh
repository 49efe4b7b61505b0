#!/usr/bin/env bash
# An S3-compatible server for the tests: moto's server, pinned, in a virtualenv.
#
#   bash scripts/moto.sh install      # create the venv (MOTO_VENV, default target/moto-venv)
#   bash scripts/moto.sh start        # install, start moto_server on a free port of
#                                     # 127.0.0.1, print `export JOBS_TEST_S3_URL=...` and
#                                     # the pid file; stop it with `kill $(cat FILE)`
#
# The tests read JOBS_TEST_S3_URL (the server's endpoint); without it the S3 tests are
# ignored with "NOT RUN" in their reason, which .ci/run refuses. Needs python3 with venv.
set -euo pipefail
MOTO_VERSION=5.1.18
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MOTO_VENV:-$ROOT/target/moto-venv}
PYTHON=${MOTO_PYTHON:-python3}

install() {
    if ! "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
        printf '==> installing moto[server]==%s into %s\n' "$MOTO_VERSION" "$VENV" >&2
        [ -x "$VENV/bin/pip" ] || "$PYTHON" -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    fi
}

case "${1:-start}" in
    install) install ;;
    start)
        install
        port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        log=$(mktemp "${TMPDIR:-/tmp}/moto.XXXXXX")
        "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
        echo $! >"$log.pid"
        up() { "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; }
        for _ in $(seq 1 100); do up && break; sleep 0.2; done
        up || { echo "moto_server did not start:" >&2; cat "$log" >&2; exit 1; }
        echo "export JOBS_TEST_S3_URL=http://127.0.0.1:$port"
        echo "# pid file: $log.pid"
        ;;
    *) echo "usage: $0 install|start" >&2; exit 2 ;;
esac
