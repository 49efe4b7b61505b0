"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

The api long-polls by design: `?wait=N` on POST /v1/jobs and GET /v1/jobs/{id} waits up to
60 s, a claim's `wait_seconds` up to 30 s. The run keeps jobs pending (no worker), so every
generated positive wait would block for its full length and a run would take many minutes.
Numeric waits above ST_MAX_WAIT seconds (default 0.5) are lowered to it just before sending;
the reproduction schemathesis prints shows the value actually sent. Zero, negative and
non-numeric values are left alone. Very large and non-finite waits are covered by the
script's fixed probes instead, set up so that they answer at once.
"""

import math
import os

import schemathesis

MAX_WAIT = float(os.environ.get("ST_MAX_WAIT", "0.5"))


def _capped(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if math.isfinite(value) and value > MAX_WAIT:
        return MAX_WAIT
    return value


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if isinstance(case.query, dict) and "wait" in case.query:
        case.query["wait"] = _capped(case.query["wait"])
    if isinstance(case.body, dict) and "wait_seconds" in case.body:
        case.body["wait_seconds"] = _capped(case.body["wait_seconds"])
