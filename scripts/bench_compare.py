#!/usr/bin/env python3
"""Results of scripts/bench-compare.sh: the peer job queues and ours, one markdown table.

    python3 scripts/bench_compare.py [results.jsonl]   # default: newest target/bench-compare/results-*.jsonl

The file has one JSON object per line. The first ("kind": "meta") records the machine and the
settings; every other is one run: {"label", "system": "peer"|"ours", "at", "round",
"idle_before_pct", "loadavg_after", "command", "result": {...}} or, for a run that failed,
{"label", ..., "failed": true, "exit": rc, "error": "..."}. The result is the JSON line the
program printed (peers: graphile.mjs / pgboss.mjs / apalis / sql-limit.sh; ours: jobs-bench).

bench-compare.sh also calls two helper commands that write those lines:
    bench_compare.py meta --out FILE --pg-version V --node-version V --git REV --expect L... --setting K=V...
    bench_compare.py wrap --out FILE --system S --label L --rc RC --idle PCT --command C --round R [--log F] < stdout

Standard library only.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
from datetime import datetime, timezone

# The targets of issue 17 (they hold for N=200,000 on the stock cluster; shown for every run).
DRAIN_PER_BEST_PEER = 1.5  # our drain / the best peer's drain, Rust peers included
DRAIN_PER_CEILING = 0.8  # our drain / the plain-SQL ceiling (claim 100 + complete)
ENQUEUE_PER_BEST_PEER = 1.5  # our library enqueue / the best peer's enqueue
HTTP_PER_LIBRARY = 0.8  # our HTTP batch enqueue / our library enqueue
TARGET_P50_MS = 1.0  # start latency (enqueue -> handler start into an idle worker)
TARGET_P99_MS = 2.0

# Peer rows in table order: label -> description.
PEERS = {
    "graphile-stock": "graphile-worker {v} stock, concurrency 10",
    "graphile-localqueue": "graphile-worker {v} LocalQueue 500 + batched completion, conc. 10",
    "pgboss-fetch100": "pg-boss {v} 10 workers x batchSize 100, burst, notify",
    "river-c10": "riverqueue {v} (River's Rust port) 10 workers, cooldown 2 ms, poll 20 ms, notify",
    "river-w2000": "riverqueue {v} 2,000 workers (River's own bench setting)",
    "awa-c10": "awa {v} queue storage, max_workers 10, notify",
    "awa-c200": "awa {v} queue storage, max_workers 200, notify",
    "apalis-batch100": "apalis {v} fetch batch 100, notify + 100 ms poll, conc. 10",
}
SQL_LABEL = "sql-limit"
# The peers that the "Rust peers included" speaks of (RUST_PEERS=0 leaves them out).
RUST_PEERS = ("river-c10", "river-w2000", "awa-c10", "awa-c200")


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def append(path: str, obj: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, separators=(",", ":")) + "\n")


# ---------------------------------------------------------------- helper commands (the shell's)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 0


def cmd_meta(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench_compare.py meta")
    p.add_argument("--out", required=True)
    p.add_argument("--pg-version", default="unknown")
    p.add_argument("--pg-port", default="unknown")
    p.add_argument("--autovacuum", default="unknown")
    p.add_argument("--node-version", default="unknown")
    p.add_argument("--git", default="unknown")
    p.add_argument("--expect", nargs="*", default=[])
    p.add_argument("--setting", nargs="*", default=[])
    a = p.parse_args(argv)
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    append(
        a.out,
        {
            "kind": "meta",
            "at": utc_now(),
            "machine": {
                "nproc": nproc(),
                "cpu_model": cpu_model(),
                "mem_gib": round(mem_kb / 1024 / 1024, 1),
                "postgres": a.pg_version,
                "postgres_port": a.pg_port,
                "autovacuum": a.autovacuum,
                "node": a.node_version,
            },
            "ours_git": a.git,
            "expected": a.expect,
            "settings": dict(s.split("=", 1) for s in a.setting if "=" in s),
        },
    )
    return 0


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def last_log_line(path: str | None) -> str:
    """The last non-empty line of the log (the failing program's stderr is appended there)."""
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [l.strip() for l in f.readlines()[-50:] if l.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def cmd_wrap(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench_compare.py wrap")
    p.add_argument("--out", required=True)
    p.add_argument("--system", required=True, choices=["peer", "ours"])
    p.add_argument("--label", required=True)
    p.add_argument("--rc", type=int, default=0)
    p.add_argument("--idle", default="null")
    p.add_argument("--command", default="")
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--log")
    a = p.parse_args(argv)
    objs = json_lines(sys.stdin.read())
    if a.system == "ours":
        results = [o for o in objs if "scenario" in o]
    else:  # a peer prints exactly one line; take the last JSON one
        results = objs[-1:]
    try:
        idle = int(a.idle)
    except ValueError:
        idle = None
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        load = None
    base = {
        "label": a.label,
        "system": a.system,
        "at": utc_now(),
        "round": a.round,
        "idle_before_pct": idle,
        "loadavg_after": load,
        "command": a.command,
    }
    if a.rc != 0 or not results:
        err = last_log_line(a.log) if a.rc != 0 else "printed no JSON result line"
        append(a.out, {**base, "failed": True, "exit": a.rc, "error": err})
        print(f"    {a.label}: FAILED (exit {a.rc}): {err}", file=sys.stderr)
        return 0
    for r in results:
        append(a.out, {**base, "result": r})
        print(f"    {a.label}: {one_line(r)}", file=sys.stderr)
    return 0


def one_line(r: dict) -> str:
    """A short summary of one result for the terminal while the run goes on."""
    m = metrics(r)
    parts = []
    if m.get("enqueue") is not None:
        parts.append(f"enqueue {fmt_rate(m['enqueue'])}/s")
    if m.get("http_enqueue") is not None:
        parts.append(f"http enqueue {fmt_rate(m['http_enqueue'])}/s")
    if m.get("http_minimal") is not None:
        parts.append(f"(ids alone {fmt_rate(m['http_minimal'])}/s)")
    if m.get("drain") is not None:
        parts.append(f"drain {fmt_rate(m['drain'])}/s")
    if m.get("p50") is not None:
        parts.append(f"latency p50 {fmt_ms(m['p50'])} / p99 {fmt_ms(m.get('p99'))} ms")
    return ", ".join(parts) or json.dumps(r)[:200]


# ---------------------------------------------------------------- reading results


def metrics(r: dict) -> dict:
    """The comparable figures of one result, whichever program printed it."""
    if r.get("peer") == "plain-sql":
        b100 = r.get("claim_complete_batch100") or {}
        b1 = r.get("claim_complete_batch1") or {}
        return {
            "enqueue": r.get("insert_select_rows_per_s"),
            "copy": r.get("copy_rows_per_s"),
            "drain": b100.get("jobs_per_s_counted"),
            "drain_limit1": b1.get("jobs_per_s_counted"),
            "n": r.get("rows"),
        }
    if "peer" in r:
        lat = r.get("latency") or {}
        return {
            "enqueue": r.get("enqueue_jobs_per_s"),
            "drain": r.get("drain_jobs_per_s"),
            "p50": lat.get("p50_ms"),
            "p99": lat.get("p99_ms"),
            "lat_samples": lat.get("samples"),
            "n": r.get("n"),
        }
    sc = r.get("scenario")
    if sc == "enqueue":
        return {
            "enqueue": r.get("library_jobs_per_s"),
            "http_enqueue": r.get("http_jobs_per_s"),
            "http_minimal": r.get("http_minimal_jobs_per_s"),
            "n": r.get("n"),
        }
    if sc == "drain":
        return {"drain": r.get("jobs_per_s"), "cpu": r.get("worker_cpu_s"), "n": r.get("n")}
    if sc == "latency":
        return {
            "p50": r.get("start_p50_ms"),
            "p99": r.get("start_p99_ms"),
            "max": r.get("start_max_ms"),
            "lat_samples": r.get("samples"),
        }
    return {}


class Group:
    """All runs of one label (and, for drains, one concurrency/prefetch): medians over rounds."""

    def __init__(self, label: str):
        self.label = label
        self.results: list[dict] = []
        self.records: list[dict] = []
        self.failures: list[dict] = []

    def values(self, key: str) -> list[float]:
        return [m[key] for m in (metrics(r) for r in self.results) if m.get(key) is not None]

    def median(self, key: str) -> float | None:
        v = self.values(key)
        return statistics.median(v) if v else None

    def first(self, key: str):
        for r in self.results:
            if r.get(key) is not None:
                return r[key]
        return None

    def idle(self) -> list[int]:
        return [r["idle_before_pct"] for r in self.records if r.get("idle_before_pct") is not None]


def load(path: str):
    meta: dict = {}
    groups: dict[tuple, Group] = {}
    order: list[tuple] = []
    bad = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if rec.get("kind") == "meta":
                meta = rec
                continue
            label = rec.get("label", "?")
            res = rec.get("result") or {}
            key: tuple = (label,)
            if res.get("scenario") == "drain":
                key = (label, res.get("concurrency"), res.get("prefetch"))
            if key not in groups:
                groups[key] = Group(label)
                order.append(key)
            g = groups[key]
            if rec.get("failed"):
                g.failures.append(rec)
            else:
                g.results.append(res)
                g.records.append(rec)
    return meta, groups, order, bad


# ---------------------------------------------------------------- formatting


def fmt_rate(x) -> str:
    return "-" if x is None else f"{round(x):,}"


def fmt_ms(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def fmt_many(g: Group, key: str, fmt) -> str:
    """The median; with several rounds also every value, in time order."""
    v = g.values(key)
    if not v:
        return "-"
    if len(v) == 1:
        return fmt(v[0])
    return f"{fmt(statistics.median(v))} ({' · '.join(fmt(x) for x in v)})"


def fmt_lat(g: Group) -> str:
    p50, p99 = g.values("p50"), g.values("p99")
    if not p50:
        return "-"
    if len(p50) == 1:
        return f"{fmt_ms(p50[0])} / {fmt_ms(p99[0] if p99 else None)}"
    pairs = " · ".join(f"{fmt_ms(a)} / {fmt_ms(b)}" for a, b in zip(p50, p99))
    return f"{fmt_ms(statistics.median(p50))} / {fmt_ms(statistics.median(p99) if p99 else None)} ({pairs})"


def fmt_idle(g: Group) -> str:
    v = g.idle()
    return " · ".join(str(x) for x in v) if v else "-"


def fmt_n(g: Group) -> str:
    n = g.median("n")
    return "-" if n is None else f"{round(n):,}"


# ---------------------------------------------------------------- the report


def report(path: str) -> int:
    meta, groups, order, bad = load(path)
    settings = meta.get("settings", {})
    machine = meta.get("machine") or {
        "nproc": nproc(),
        "cpu_model": cpu_model(),
        "postgres": "unknown (no meta line)",
    }
    quiet_idle = int(settings.get("QUIET_IDLE", 85) or 85)
    by_label: dict[str, list[Group]] = {}
    for k in order:
        by_label.setdefault(groups[k].label, []).append(groups[k])

    def ok_groups(label: str) -> list[Group]:
        return [g for g in by_label.get(label, []) if g.results]

    def one(label: str) -> Group | None:
        gs = ok_groups(label)
        return gs[0] if gs else None

    out: list[str] = []
    w = out.append
    pg_cluster = cluster(machine)
    w(f"# bench-compare {os.path.basename(path)}: PostgreSQL {pg_cluster}")
    w("")
    w(
        f"Machine: {machine.get('nproc')} CPUs (nproc), {machine.get('cpu_model')}"
        + (f", {machine['mem_gib']} GiB RAM" if machine.get("mem_gib") else "")
        + f"; PostgreSQL {machine.get('postgres')}; node {machine.get('node', '?')}."
    )
    w(f"Ours: jobs-bench at git {meta.get('ours_git', '?')}. Started {meta.get('at', '?')} UTC.")
    if settings:
        shown = ["N", "ENQ_N", "OURS_LAT_SAMPLES", "PEER_LAT_SAMPLES", "REPEAT", "RUST_PEERS", "APALIS", "SQL_DURATION"]
        w("Settings: " + ", ".join(f"{k}={settings[k]}" for k in shown if k in settings) + ".")
    if settings.get("SMOKE") == "1":
        w("")
        w("**SMOKE run: tiny sizes and no idle waits. The numbers check the plumbing, they mean nothing.**")
    w("")

    # --- PostgreSQL: peers and ours
    w(f"## PostgreSQL {pg_cluster}: peers and ours, same run")
    w("")
    w("| system / config | N | enqueue jobs/s | drain jobs/s | latency p50 / p99 ms | idle % before | notes |")
    w("|---|---|---|---|---|---|---|")
    for label, desc in PEERS.items():
        if label not in by_label and label not in meta.get("expected", PEERS):
            continue  # optional peer (apalis) that was not asked for
        g = one(label)
        if g is None:
            w(f"| {desc.format(v='').replace('  ', ' ')} | - | - | - | - | - | {status(by_label.get(label))} |")
            continue
        samples = g.median("lat_samples")
        note = f"{round(samples)} latency samples" if samples else "no latency samples"
        if any(grp.failures for grp in by_label.get(label, [])):
            note += "; some runs failed, see below"
        w(
            f"| {desc.format(v=g.first('version') or '')} | {fmt_n(g)} | {fmt_many(g, 'enqueue', fmt_rate)} "
            f"| {fmt_many(g, 'drain', fmt_rate)} | {fmt_lat(g)} | {fmt_idle(g)} | {note} |"
        )
    sql = one(SQL_LABEL)
    if sql is None:
        w(f"| plain-SQL ceiling (sql-limit.sh) | - | - | - | - | - | {status(by_label.get(SQL_LABEL))} |")
    else:
        w(
            f"| plain-SQL ceiling: INSERT..SELECT / pgbench claim+complete LIMIT 100, 4 clients "
            f"| {fmt_n(sql)} | {fmt_many(sql, 'enqueue', fmt_rate)} | {fmt_many(sql, 'drain', fmt_rate)} | - "
            f"| {fmt_idle(sql)} | rows/s, not jobs/s via a library; COPY {fmt_many(sql, 'copy', fmt_rate)} rows/s; "
            f"LIMIT 1: {fmt_many(sql, 'drain_limit1', fmt_rate)} jobs/s |"
        )
    ours_rows(w, by_label, "pg")
    w("")

    # --- ratios
    best_drain, best_drain_by = best_peer(by_label, "drain")
    best_enq, best_enq_by = best_peer(by_label, "enqueue")
    best_p50, best_p50_by = best_peer(by_label, "p50", lowest=True)
    ceiling = sql.median("drain") if sql else None
    c10 = best_of(ok_groups("ours-pg-drain-c10"), "drain")
    best = best_of(ok_groups("ours-pg-drain-best"), "drain")
    enq = one("ours-pg-enqueue")
    lat = one("ours-pg-latency")
    our_enq = enq.median("enqueue") if enq else None
    http_enq = enq.median("http_enqueue") if enq else None
    http_min = enq.median("http_minimal") if enq else None
    p50 = lat.median("p50") if lat else None
    p99 = lat.median("p99") if lat else None
    c10_args = settings.get("OURS_DRAIN_C10_ARGS", "c10")
    best_args = settings.get("OURS_DRAIN_BEST_ARGS", "best")
    peer_ref = lambda by: f" ({by})" if by else " (no peer result)"
    rows = [
        Comparison(f"drain, ours `{c10_args}` / best peer drain{peer_ref(best_drain_by)}",
                   c10, best_drain, fmt_rate, at_least=DRAIN_PER_BEST_PEER),
        Comparison(f"drain, ours `{best_args}` / best peer drain{peer_ref(best_drain_by)}",
                   best, best_drain, fmt_rate, at_least=DRAIN_PER_BEST_PEER),
        Comparison(f"drain, ours `{c10_args}` / plain-SQL ceiling (claim 100 + complete)",
                   c10, ceiling, fmt_rate, at_least=DRAIN_PER_CEILING),
        Comparison(f"drain, ours `{best_args}` / plain-SQL ceiling (claim 100 + complete)",
                   best, ceiling, fmt_rate, at_least=DRAIN_PER_CEILING),
        Comparison(f"enqueue, ours library / best peer enqueue{peer_ref(best_enq_by)}",
                   our_enq, best_enq, fmt_rate, at_least=ENQUEUE_PER_BEST_PEER),
        Comparison("enqueue, ours HTTP batches / ours library", http_enq, our_enq, fmt_rate,
                   at_least=HTTP_PER_LIBRARY),
        Comparison("enqueue, ours HTTP batches with `Prefer: return=minimal` / ours library",
                   http_min, our_enq, fmt_rate, at_least=HTTP_PER_LIBRARY),
        # The reference is the target itself, so the ratio must stay at or under 1.
        Comparison("start latency p50 ms, ours / target", p50, TARGET_P50_MS, fmt_ms,
                   at_most=1.0, target_text=f"p50 <= {TARGET_P50_MS} ms"),
        Comparison("start latency p99 ms, ours / target", p99, TARGET_P99_MS, fmt_ms,
                   at_most=1.0, target_text=f"p99 <= {TARGET_P99_MS} ms"),
        Comparison(f"start latency p50 ms, ours / best peer p50{peer_ref(best_p50_by)}",
                   p50, best_p50, fmt_ms),
    ]

    w("## Ratios and the targets of issue 17")
    w("")
    w("| comparison | ours | reference | ratio ours / reference | target | verdict |")
    w("|---|---|---|---|---|---|")
    for row in rows:
        w(row.markdown())
    w("")
    rust_ran = any(one(label) for label in RUST_PEERS)
    w(
        "Best peer = the highest median among the peer rows above"
        + (", Rust peers included" if rust_ran else "; **no Rust peer in this run**, so the targets against the best peer are not checked against them")
        + " (the plain-SQL ceiling is not a peer); for latency the lowest p50. Ratio > 1 means ours is faster "
        "for jobs/s and slower for latency. The targets hold for N=200,000 on the stock cluster"
        + ("; this run is neither a full size nor meant for numbers." if settings.get("SMOKE") == "1" else ".")
    )
    w("")

    # --- SQLite
    w("## SQLite: ours only (no peer runs on SQLite)")
    w("")
    w("| system / config | N | enqueue jobs/s | drain jobs/s | latency p50 / p99 ms | idle % before | notes |")
    w("|---|---|---|---|---|---|---|")
    ours_rows(w, by_label, "sqlite")
    w("")

    # --- what went wrong, and what to distrust
    problems = []
    for label in meta.get("expected", []):
        gs = by_label.get(label, [])
        fails = [f for g in gs for f in g.failures]
        if not gs:
            problems.append(f"* {label}: missing (no record in the file; the run was interrupted?)")
        for f in fails:
            problems.append(f"* {label}: FAILED, exit {f.get('exit')} at {f.get('at')}, round {f.get('round')}: {f.get('error') or '?'}")
    for label, gs in by_label.items():
        if label not in meta.get("expected", []):
            for f in (f for g in gs for f in g.failures):
                problems.append(f"* {label}: FAILED, exit {f.get('exit')}: {f.get('error') or '?'}")
    busy = sorted(
        {g.label for gs in by_label.values() for g in gs if any(i < quiet_idle for i in g.idle())}
    )
    if problems:
        w("## Failed or missing runs (shown as \"-\" above)")
        w("")
        out.extend(problems)
        w("")
    if busy:
        w(f"Contended: CPU was under {quiet_idle} % idle before {', '.join(busy)} (quiet.sh gave up waiting); distrust those.")
        w("")
    if bad:
        w(f"({bad} unreadable line(s) in the results file were skipped.)")
        w("")
    w(
        "Method differences to keep in mind: peers' latency is measured in the same process right after "
        "their drain (ping-pong, next job as soon as a handler starts); ours on an emptied table with 3 ms "
        "idle before each job. Our drain ANALYZEs the filled table and times from worker process start until "
        "no job is unfinished; peers time from worker start until their table shows 0 unfinished. "
        "river and awa are Rust clients (graphile-worker and pg-boss run on node); river-w2000 and awa-c200 "
        "are each one's own best setting, not concurrency 10; riverqueue's insert_many writes one statement "
        "per job (see the peers' README)."
    )
    print("\n".join(out))
    return 0


def cluster(machine: dict) -> str:
    """Which cluster ran: its port, and stock or CI settings (the two differ in autovacuum only)."""
    kind = {"on": "stock settings, autovacuum on", "off": "CI settings, autovacuum off"}.get(
        machine.get("autovacuum", ""), f"autovacuum {machine.get('autovacuum', 'unknown')}"
    )
    return f"port {machine.get('postgres_port', 'unknown')} ({kind})"


class Comparison:
    """One row of the ratios table: ours / reference, and its target on that ratio if it has one."""

    def __init__(self, what: str, ours, reference, fmt, at_least=None, at_most=None, target_text=None):
        self.what, self.ours, self.reference, self.fmt = what, ours, reference, fmt
        self.at_least, self.at_most, self.target_text = at_least, at_most, target_text

    def markdown(self) -> str:
        r = None if self.ours is None or self.reference in (None, 0) else self.ours / self.reference
        if self.at_least is not None:
            target, verdict = f">= {self.at_least:.2f}x", met(r is not None and r >= self.at_least, r)
        elif self.at_most is not None:
            target, verdict = f"<= {self.at_most:.2f}x", met(r is not None and r <= self.at_most, r)
        else:
            target, verdict = "-", ""
        shown = "-" if r is None else f"{r:.2f}x"
        target = self.target_text or target
        return f"| {self.what} | {self.fmt(self.ours)} | {self.fmt(self.reference)} | {shown} | {target} | {verdict} |"


def status(gs: list[Group] | None) -> str:
    if not gs:
        return "missing: not run or no record"
    fails = [f for g in gs for f in g.failures]
    if fails:
        return f"FAILED (exit {fails[-1].get('exit')}), see below"
    return "no result"


def met(ok: bool, ratio_value) -> str:
    if ratio_value is None:
        return "- (no result)"
    return "met" if ok else "**missed**"


def best_of(gs: list[Group], key: str):
    v = [g.median(key) for g in gs if g.median(key) is not None]
    return max(v) if v else None


def best_peer(by_label: dict, key: str, lowest: bool = False):
    cands = []
    for label in PEERS:
        for g in by_label.get(label, []):
            v = g.median(key)
            if v is not None:
                cands.append((v, label))
    if not cands:
        return None, None
    v, label = (min if lowest else max)(cands)
    return v, label


def ours_rows(w, by_label: dict, backend: str) -> None:
    name = {"pg": "PostgreSQL", "sqlite": "SQLite"}[backend]
    scenarios = ["drain-c10", "drain-best", "enqueue", "latency"] if backend == "pg" else ["drain-best", "enqueue"]
    for scenario in scenarios:
        label = f"ours-{backend}-{scenario}"
        gs = by_label.get(label, [])
        ok = [g for g in gs if g.results]
        if not ok:
            what = {"drain-c10": "drain (c10 args)", "drain-best": "drain (best args)"}.get(scenario, scenario)
            w(f"| ours {name}, {what} | - | - | - | - | - | {status(gs)} |")
            continue
        nfail = sum(len(g.failures) for g in gs)
        failed = f"; {nfail} failed run(s), see below" if nfail else ""
        for g in ok:
            if scenario.startswith("drain"):
                conf = f"concurrency {g.first('concurrency')}, prefetch {g.first('prefetch')}"
                w(
                    f"| ours {name}, drain {conf} | {fmt_n(g)} | | {fmt_many(g, 'drain', fmt_rate)} | "
                    f"| {fmt_idle(g)} | worker CPU {fmt_many(g, 'cpu', lambda x: f'{x:.2f}')} s{failed} |"
                )
            elif scenario == "enqueue":
                batch = g.first("batch")
                w(
                    f"| ours {name}, enqueue via library, batch {batch} | {fmt_n(g)} "
                    f"| {fmt_many(g, 'enqueue', fmt_rate)} | | | {fmt_idle(g)} | {failed.lstrip('; ')} |"
                )
                w(
                    f"| ours {name}, enqueue via HTTP `POST /v1/jobs/batch`, batch {batch} | {fmt_n(g)} "
                    f"| {fmt_many(g, 'http_enqueue', fmt_rate)} | | | {fmt_idle(g)} | api process on the same cores |"
                )
                w(
                    f"| ours {name}, the same with `Prefer: return=minimal` (ids alone), batch {batch} | {fmt_n(g)} "
                    f"| {fmt_many(g, 'http_minimal', fmt_rate)} | | | {fmt_idle(g)} | api process on the same cores |"
                )
            else:
                w(
                    f"| ours {name}, start latency into an idle worker | | | | {fmt_lat(g)} | {fmt_idle(g)} "
                    f"| {round(g.median('lat_samples') or 0)} samples, max {fmt_many(g, 'max', fmt_ms)} ms{failed} |"
                )


def newest_results() -> str | None:
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "bench-compare")
    files = sorted(glob.glob(os.path.join(root, "results-*.jsonl")))
    return files[-1] if files else None


def main(argv: list[str]) -> int:
    if argv and argv[0] == "meta":
        return cmd_meta(argv[1:])
    if argv and argv[0] == "wrap":
        return cmd_wrap(argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    path = argv[0] if argv else newest_results()
    if not path or not os.path.exists(path):
        print(f"no results file ({path or 'target/bench-compare/results-*.jsonl'})", file=sys.stderr)
        return 1
    return report(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
