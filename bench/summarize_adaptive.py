#!/usr/bin/env python3
"""Markdown report of bench/adaptive.sh from the load generator's JSON lines.

usage: summarize_adaptive.py MANIFEST FACTS TIMELINE
       summarize_adaptive.py --median RUN_DIR RUN_DIR ...

The second form prints the summary table of several runs of the same timeline (each a
bench/results/adaptive-<timestamp>/ directory) with the median of every figure over the runs
and its range: one run on a shared machine is one sample.

MANIFEST: one line per system, tab-separated: system, ok|n/a, jsonl, busy % before,
load average, proxy ticks, load-side ticks (backends + generator), machine busy ticks,
machine total ticks, backends-after jsonl, notes (for n/a: the reason in the last field).
FACTS: "key<TAB>value" lines.
TIMELINE: one line per phase, tab-separated: name, seconds, role (warmup, baseline, slow,
fail, reset, recovered), the backend the role is about (empty for warmup and baseline),
description.

Two views of where requests went, both per phase:
- *received*: what each backend's own counters say it received (every request that reached
  it: served, answered 500, reset, or dropped from its queue), read by the generator at each
  phase boundary. This is the balancer's decision, retries included.
- *answered*: which backend the client's responses came from (`X-Backend`). A request a
  backend reset and the proxy retried elsewhere is answered by the other backend; one the
  proxy answered itself (502, 504) has no backend.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ideal_dispatch  # noqa: E402  (a sibling script, not an installed module)

LABELS = {
    "sentinel-adaptive": "Sentinel `adaptive`, defaults",
    "sentinel-adaptive-tuned": "Sentinel `adaptive`, tuned",
    "sentinel-rr": "Sentinel `round_robin`",
    "sentinel-lc": "Sentinel `least_connections`",
    "nginx-default": "nginx `least_conn`",
    "nginx-retry": "nginx `least_conn` + retry 500/502/503",
    "haproxy": "HAProxy `leastconn`",
}

SETUPS = {
    "sentinel-adaptive": "`proxy.strategy: adaptive` and nothing else: the original schema's listen address and "
    "backends, every other setting at its default (no `failure_statuses`; connect timeout 5 s, response timeout "
    "30 s; passive health `max_fails: 3`, `fail_timeout_ms: 10000`; one retry of an idempotent request on a "
    "connection failure, within the retry budget)",
    "sentinel-adaptive-tuned": "`strategy: adaptive` + `failure_statuses: [500, 502, 503]` (a 500 is a backend "
    "failure: penalised, counted by passive health, and retried once elsewhere within the retry budget), "
    "`connection_timeout_ms: 1000`, `request_timeout_ms` = the timeout: the settings every Sentinel row had "
    "before issue 16",
    "sentinel-rr": "`proxy.strategy: round_robin`, everything else at its defaults",
    "sentinel-lc": "`proxy.strategy: least_connections`, everything else at its defaults",
    "nginx-default": "`least_conn`; `proxy_next_upstream` at its default `error timeout` (a 500 is passed to the "
    "client and does not count as a failure; a reset before the response is retried on another backend); "
    "`max_fails=1 fail_timeout=10s` (defaults)",
    "nginx-retry": "`least_conn`; `proxy_next_upstream error timeout http_500 http_502 http_503` (a 500 is retried "
    "on another backend and counts as a failure: `max_fails=1 fail_timeout=10s`, the defaults, then take the "
    "backend out for 10 s)",
    "haproxy": "`balance leastconn`, `nbthread 1`, `option http-keep-alive`, `http-reuse safe` (default); "
    "`retries 3` and `retry-on connect-failure` (defaults: a 500, a reset or a timeout is passed to the client, "
    "never retried), no `option redispatch`, no health checks (so no `observe layer7` either)",
}

BACKENDS = ("b1", "b2", "b3")

# Issue 16's targets for the adaptive row with default settings.
TARGETS = {
    "slow": 2.0,        # B p99 ≤ 2 × A p99
    "fail": 2.0,        # C1 client errors ≤ 2 %
    "reset": 0.0,       # C2: no client errors
    "recovered": 1.3,   # D p99 ≤ 1.3 × A p99
    "vs_rr": 1.10,      # A p99 no worse than round-robin's A p99 by more than 10 %
}


def num(value, digits=1):
    if value is None:
        return "–"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def pct_value(part, whole):
    return 100.0 * part / whole if whole else None


def pct(part, whole, digits=1):
    value = pct_value(part, whole)
    if value is None:
        return "–"
    if 0 < value < 0.1 and digits == 1:
        return "<0.1"
    return f"{value:.{digits}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def times(value):
    return "–" if value is None else f"{value:.1f}×"


def load(path):
    windows, phases, total, controls, stats = [], {}, None, [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            kind = record["type"]
            if kind == "window":
                windows.append(record)
            elif kind == "phase":
                phases[record["name"]] = record
            elif kind == "total":
                total = record
            elif kind == "control":
                controls.append(record)
            elif kind == "backend_stats":
                stats.append(record)
    return {"windows": windows, "phases": phases, "total": total, "controls": controls,
            "received": received_per_phase(stats)}


def received_per_phase(stats):
    """{phase: {backend: {"received", "failed", "resets", "abandoned"}}} from the counters read
    at each phase start and at the end: the difference to the next reading."""
    readings = {}  # t -> (phase, {name: stats})
    for record in stats:
        s = record.get("stats")
        if not isinstance(s, dict) or "name" not in s:
            continue
        readings.setdefault(record["t"], (record["phase"], {}))[1][s["name"]] = s
    times_sorted = sorted(readings)
    out = {}
    for t, t_next in zip(times_sorted, times_sorted[1:]):
        phase, now = readings[t]
        _, later = readings[t_next]
        counts = {}
        for name in BACKENDS:
            if name in now and name in later:
                counts[name] = {key: later[name].get(key, 0) - now[name].get(key, 0)
                                for key in ("received", "failed", "resets", "abandoned")}
        out[phase] = counts
    return out


def received_share(data, phase, backend):
    counts = data["received"].get(phase)
    if not counts or backend not in counts:
        return None
    return pct_value(counts[backend]["received"], sum(c["received"] for c in counts.values()))


def received_split(data, phase):
    counts = data["received"].get(phase)
    if not counts:
        return "–"
    whole = sum(c["received"] for c in counts.values())
    if not whole:
        return "–"
    return " / ".join(f"{100.0 * counts[b]['received'] / whole:.1f}" if b in counts else "?" for b in BACKENDS)


def answered_split(bucket):
    backends = {k: v for k, v in bucket.get("backends", {}).items() if k != "-"}
    answered = sum(backends.values())
    if not answered:
        return "–"
    return " / ".join(f"{100.0 * backends.get(name, 0) / answered:.0f}" for name in BACKENDS)


def errors_text(bucket):
    parts = []
    for status, count in sorted(bucket.get("statuses", {}).items()):
        if not status.startswith("2"):
            parts.append(f"{status}×{count}")
    if bucket["io"]:
        parts.append(f"I/O×{bucket['io']}")
    if bucket["timeout"]:
        parts.append(f"timeout×{bucket['timeout']}")
    if bucket["cap"]:
        parts.append(f"cap×{bucket['cap']}")
    return ", ".join(parts) if parts else "none"


def recovery(windows, phase, threshold):
    """(first, stays, length): seconds after the phase start until a window (by due time) has
    p99 within the threshold and no errors: the first such window, and the start of the run of
    such windows that lasts to the end of the phase. None when there is none."""
    if phase is None or threshold is None:
        return None, None, None
    start, length = phase["start"], phase["length"]
    mine = [w for w in windows if w["phase"] == phase["name"]]
    if not mine:
        return None, None, length

    def good(w):
        return w["count"] > 0 and w["p99_ms"] is not None and w["p99_ms"] <= threshold and w["errors"] == 0

    first = next((w["t"] - start for w in mine if good(w)), None)
    stays = None
    for w in reversed(mine):
        if not good(w):
            break
        stays = w["t"] - start
    return first, stays, length


def seconds(value, length):
    if value is None:
        return f"not within {length:.0f} s"
    return f"{value:.0f} s"


def read_timeline(path):
    phases = []
    with open(path) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 5:
                continue
            name, secs, role, backend, text = fields[:5]
            phases.append({"name": name, "seconds": float(secs), "role": role, "backend": backend, "text": text})
    return phases


def cell(data, phase, a99, rr_a99):
    """One cell of the headline table: what the role of `phase` asks about."""
    p = data["phases"].get(phase["name"])
    if p is None:
        return "–"
    role, backend = phase["role"], phase["backend"]
    share = received_share(data, phase["name"], backend) if backend else None
    share_text = f"; {backend} got {share:.1f} %" if share is not None else ""
    errors = pct_value(p["errors"], p["count"])
    error_text = f"; {pct(p['errors'], p['count'])} % errors" if errors else ""
    if role == "baseline":
        text = f"{num(p['p99_ms'])} ms"
        if rr_a99:
            text += f" ({times(ratio(p['p99_ms'], rr_a99))} round-robin's)"
        return text + error_text
    if role in ("slow", "recovered"):
        return f"**{times(ratio(p['p99_ms'], a99))}** ({num(a99)} → {num(p['p99_ms'])} ms){share_text}{error_text}"
    if role in ("fail", "reset"):
        return f"**{pct(p['errors'], p['count'])} %** errors{share_text}; p99 {times(ratio(p['p99_ms'], a99))}"
    return "–"


def phase_figures(data, phase, a99):
    """The figures the summary reports for `phase`, as numbers (None when missing)."""
    p = data["phases"].get(phase["name"])
    if p is None:
        return None
    backend = phase["backend"]
    return {
        "p99": p["p99_ms"],
        "ratio": ratio(p["p99_ms"], a99),
        "errors": pct_value(p["errors"], p["count"]),
        "share": received_share(data, phase["name"], backend) if backend else None,
    }


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def spread_text(values, fmt, unit=""):
    """`median (min–max) unit` of the runs' values; just the value when they agree."""
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    low, mid, high = fmt(min(present)), fmt(median(present)), fmt(max(present))
    if low == high:
        return f"{mid}{unit}"
    return f"{mid} ({low}–{high}){unit}"


def percent(value):
    if 0 < value < 0.1:
        return "<0.1"
    return f"{value:.1f}"


def median_report(run_dirs):
    runs = []
    for run_dir in run_dirs:
        run_dir = run_dir.rstrip("/")
        facts = {}
        with open(f"{run_dir}/facts.tsv") as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("\t")
                facts[key] = value
        timeline = [p for p in read_timeline(f"{run_dir}/timeline.tsv") if p["role"] != "warmup"]
        systems = {}
        with open(f"{run_dir}/manifest.tsv") as f:
            for line in f:
                fields = line.rstrip("\n").split("\t")
                if len(fields) > 2 and fields[1] == "ok":
                    systems[fields[0]] = load(fields[2])
        runs.append((run_dir, facts, timeline, systems))
    shape = [(p["name"], p["role"], p["backend"]) for p in runs[0][2]]
    for run_dir, _, timeline, _ in runs[1:]:
        if [(p["name"], p["role"], p["backend"]) for p in timeline] != shape:
            sys.exit(f"{run_dir}: a different timeline from {runs[0][0]}'s")
    timeline = runs[0][2]
    order = [s for s in LABELS if all(s in r[3] for r in runs)]

    def figures(system):
        """{phase: [figures of each run]}, and each run's A p99 and round-robin's A p99."""
        out = {}
        for _, _, _, systems in runs:
            data = systems[system]
            a99 = next((data["phases"].get(p["name"], {}).get("p99_ms") for p in timeline
                        if p["role"] == "baseline"), None)
            rr = systems.get("sentinel-rr")
            rr_a99 = next((rr["phases"].get(p["name"], {}).get("p99_ms") for p in timeline
                           if p["role"] == "baseline"), None) if rr and system != "sentinel-rr" else None
            for phase in timeline:
                f = phase_figures(data, phase, a99) or {}
                f["vs_rr"] = ratio(a99, rr_a99)
                out.setdefault(phase["name"], []).append(f)
        return out

    times_fmt = lambda v: f"{v:.1f}"  # noqa: E731
    out = []
    w = out.append
    kinds = sorted({r[1].get("backend_kind", "?") for r in runs})
    w(f"Median over {len(runs)} runs, {', '.join(kinds)} backends (the range over the runs in brackets where they "
      "differ): " + ", ".join(f"`{r[0].rsplit('/', 1)[-1]}`" for r in runs) + ".")
    w("")
    w("| phase | " + " | ".join(LABELS.get(s, s) for s in order) + " |")
    w("|---|" + "---|" * len(order))
    all_figures = {s: figures(s) for s in order}
    for phase in timeline:
        cells = []
        for s in order:
            runs_f = all_figures[s][phase["name"]]
            get = lambda key: [f.get(key) for f in runs_f]  # noqa: E731
            mid = lambda key: median(get(key))  # noqa: E731
            role, backend = phase["role"], phase["backend"]
            if role == "baseline":
                text = spread_text(get("p99"), num, " ms")
                if s != "sentinel-rr" and mid("vs_rr") is not None:
                    text += f" ({mid('vs_rr'):.2f}× round-robin's)"
            elif role in ("slow", "recovered"):
                text = (f"**{spread_text(get('ratio'), times_fmt, '×')}** (p99 {num(mid('p99'))} ms); "
                        f"{backend} got {spread_text(get('share'), percent, ' %')}")
                if mid("errors"):
                    text += f"; {percent(mid('errors'))} % errors"
            else:
                text = (f"**{spread_text(get('errors'), percent, ' %')}**; {backend} got "
                        f"{spread_text(get('share'), percent, ' %')}")
            cells.append(text)
        label = {"baseline": "p99", "slow": "p99 / A p99", "recovered": "p99 / A p99",
                 "fail": "client errors", "reset": "client errors"}.get(phase["role"], "")
        w(f"| **{phase['name']}** {label} | " + " | ".join(cells) + " |")
    print("\n".join(out))


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--median":
        median_report(sys.argv[2:])
        return
    manifest_path, facts_path, timeline_path = sys.argv[1:4]
    facts = {}
    with open(facts_path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("\t")
            facts[key] = value
    rows = []
    with open(manifest_path) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            fields += [""] * (11 - len(fields))
            rows.append(fields)
    timeline = read_timeline(timeline_path)
    reported = [p for p in timeline if p["role"] != "warmup"]

    rate = float(facts["rate"])
    service = float(facts["service_ms"])
    factor = float(facts["recovery_factor"])
    ticks = int(facts["ticks"])
    ncpu = int(facts["ncpu"])
    capacity = 3 * 1000.0 / service
    kind = facts.get("backend_kind", "openloop")
    arrivals = facts.get("arrivals", "fixed")
    failures = facts.get("failures", "spread")

    data = {}
    for fields in rows:
        if fields[1] == "ok":
            data[fields[0]] = load(fields[2])
    systems = [r[0] for r in rows if r[0] in data]

    out = []
    w = out.append
    w(f"# Adaptive load balancing: one backend degrades (`bench/adaptive.sh`, {facts.get('timeline', '?')} "
      f"timeline, {kind} backends)")
    w("")
    w(f"{facts.get('date', '')}. Command: {facts.get('command', '')}")
    w("")

    # ---- headline: the table, phases down, systems across
    a_phase = next((p for p in reported if p["role"] == "baseline"), None)
    a_of = {s: data[s]["phases"].get(a_phase["name"], {}).get("p99_ms") if a_phase else None for s in systems}
    rr_a99 = a_of.get("sentinel-rr")
    w("## Summary")
    w("")
    w("| phase | " + " | ".join(LABELS.get(s, s) for s in systems) + " |")
    w("|---|" + "---|" * len(systems))
    for phase in reported:
        label = {"baseline": "p99", "slow": "p99 / A p99", "recovered": "p99 / A p99",
                 "fail": "client errors", "reset": "client errors"}.get(phase["role"], "")
        w(f"| **{phase['name']}** {label} | "
          + " | ".join(cell(data[s], phase, a_of[s], rr_a99 if s != "sentinel-rr" else None) for s in systems)
          + " |")
    w("")
    w("*got*: the share of all requests the backends received in that phase that reached the degraded (or, in a "
      "recovery phase, the recovered) backend, by the backends' own counters (retries included; with all three "
      "healthy each should get about 33 %). Errors: non-2xx responses, I/O errors and timeouts as a share of the "
      "requests sent in the phase.")
    w("")

    # ---- issue 16 targets
    roles = {p["role"]: p for p in reported}
    if all(r in roles for r in ("baseline", "slow", "fail", "reset", "recovered")):
        w("### Against issue 16's targets (meant for the defaults row)")
        w("")
        cols = [f"B p99 ≤ {TARGETS['slow']:g}× A", f"{roles['fail']['name']} errors ≤ {TARGETS['fail']:g} %",
                f"{roles['reset']['name']} errors = 0", f"{roles['recovered']['name']} p99 ≤ {TARGETS['recovered']:g}× A",
                "A p99 ≤ 1.1× round-robin's"]
        w("| system | " + " | ".join(cols) + " |")
        w("|---|" + "---|" * len(cols))
        for s in systems:
            ph = data[s]["phases"]
            a99 = a_of[s]

            def mark(ok):
                return "met" if ok else "**missed**"

            b = ph.get(roles["slow"]["name"])
            c1 = ph.get(roles["fail"]["name"])
            c2 = ph.get(roles["reset"]["name"])
            d = ph.get(roles["recovered"]["name"])
            cells = []
            r = ratio(b["p99_ms"], a99) if b else None
            cells.append(f"{times(r)} {mark(r is not None and r <= TARGETS['slow'])}")
            e = pct_value(c1["errors"], c1["count"]) if c1 else None
            cells.append(f"{pct(c1['errors'], c1['count']) if c1 else '–'} % {mark(e is not None and e <= TARGETS['fail'])}")
            c2_text = f"{c2['errors']} ({pct(c2['errors'], c2['count'])} %)" if c2 else "–"
            cells.append(f"{c2_text} {mark(c2 is not None and c2['errors'] == 0)}")
            r = ratio(d["p99_ms"], a99) if d else None
            cells.append(f"{times(r)} {mark(r is not None and r <= TARGETS['recovered'])}")
            if s == "sentinel-rr" or rr_a99 is None:
                cells.append("–")
            else:
                r = ratio(a99, rr_a99)
                cells.append(f"{times(r)} {mark(r is not None and r <= TARGETS['vs_rr'])}")
            w(f"| {LABELS.get(s, s)} | " + " | ".join(cells) + " |")
        w("")
        # The floor under B: what perfect dispatch with no proxy overhead would give (one FIFO
        # queue before the healthy backends); see bench/ideal_dispatch.py.
        per_request = service + (float(facts.get("overhead_ms", 0)) if kind == "asyncio" else 0.0)
        floor_a, floor_b, floor_ratio = ideal_dispatch.floors(rate, per_request, int(facts.get("seed", 1) or 1))
        w(f"Floor under **B p99 / A p99** at this rate (Poisson arrivals, simulated): **{floor_ratio:.2f}×** (A {floor_a:.1f} ms, B "
          f"{floor_b:.1f} ms): a shared FIFO queue in front of the healthy backends at {per_request:g} ms per "
          f"request, no proxy overhead, the slow backend given nothing. No balancer can go below it; the target "
          f"of {TARGETS['slow']:g}× lies under it whenever the floor is above {TARGETS['slow']:g}×.")
        w("")

    # ---- setup
    w("## Setup")
    w("")
    first_load = next((r[4] for r in rows if r[1] == "ok"), "?")
    w(f"- **Machine**: {facts.get('cpu', '?')}; load average before the first run {first_load} (each run's in "
      f"\"Runs\" below); {facts.get('kernel', '')}, {facts.get('memory', '')}.")
    w(f"- **CPU pinning**: {facts.get('cpu pinning', '?')}.")
    w(f"- **Versions**: Sentinel {facts.get('sentinel', '?')}; nginx {facts.get('nginx', '?')}; "
      f"HAProxy {facts.get('haproxy', '?')}; {facts.get('rustc', '')}; {facts.get('python', '')}.")
    if kind == "asyncio":
        backend_text = (f"3 × `bench/backend_asyncio.py` (Python asyncio, standard library), each serving **one "
                        f"request at a time** (an `asyncio.Lock` in front of a single slot) for {facts.get('overhead_ms', '?')} "
                        f"ms of CPU plus an `asyncio.sleep` of **{service:g} ms** (which the event loop ends up to 1 ms "
                        f"late), plus the event loop's own per-request work")
    else:
        backend_text = (f"3 × `openloop backend` (Rust, tokio), each serving **one request at a time** (FIFO queue in "
                        f"front of a single slot) for **{service:g} ms** (a thread sleep, ~0.1 ms precise)")
    w(f"- **Backends**: {backend_text}: capacity about {1000 / service:.0f} req/s per backend, {capacity:.0f} req/s "
      f"in all at most. A request still queued when its connection is closed is dropped. Failures and resets hit "
      f"{'each request independently with the given probability (seeded)' if failures == 'random' else 'exactly the given share, evenly spaced (never two in a row at 50 %)'}. "
      f"Each response names its backend (`X-Backend`).")
    if arrivals == "poisson":
        arrival_text = (f"**Poisson arrivals at {rate:g} req/s** on average (exponential gaps, seed "
                        f"{facts.get('seed', '?')}: every system gets the same due times)")
    else:
        arrival_text = f"**fixed-interval arrivals at {rate:g} req/s** (one request every {1000 / rate:.2f} ms)"
    w(f"- **Load**: `openloop load`, open loop, {arrival_text}, {100 * rate / capacity:.0f} % of the healthy "
      f"capacity; keep-alive connections opened as needed (at most {facts.get('connections', '?')}). Each latency "
      f"is measured from the request's **due time** (no coordinated omission). A request unanswered "
      f"{facts.get('client_timeout', '?')} s after its due time is a client timeout.")
    w("- **Latency figures** (p50, p99, max) cover every request sent: responses of any status at their latency, "
      "I/O errors at their time to failure, timeouts at the timeout. **Errors** are non-2xx responses, I/O errors "
      "and timeouts, as a share of the requests sent.")
    w("")
    w("Timeline (the generator sends the control requests to the backends itself at each phase start):")
    w("")
    w("| phase | seconds | what happens |")
    w("|---|---:|---|")
    for phase in timeline:
        w(f"| {phase['name']} | {phase['seconds']:g} | {phase['text']} |")
    w("")
    w("Systems:")
    w("")
    w("| system | configuration |")
    w("|---|---|")
    for fields in rows:
        w(f"| {LABELS.get(fields[0], fields[0])} | {SETUPS.get(fields[0], '')} |")
    w("")
    w("Every Sentinel config also has `logging.level: warn`, `access_log: false`. nginx runs `worker_processes 1` "
      "with `keepalive 64` to the upstream, `proxy_http_version 1.1`; HAProxy runs `nbthread 1` in the foreground "
      f"(`-db`); both with connect timeout 1 s and upstream response timeout {facts.get('timeout', '?')} s.")
    w("")

    # ---- per phase
    w("## Per phase")
    w("")
    w("| system | phase | requests | p50 ms | p99 ms | p99 / A | max ms | errors % | errors | received b1 / b2 / b3 % "
      "| answered b1 / b2 / b3 % |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for s in systems:
        for phase in reported:
            p = data[s]["phases"].get(phase["name"])
            if not p:
                continue
            w(f"| {LABELS.get(s, s)} | {phase['name']} | {p['count']} | {num(p['p50_ms'], 2)} | {num(p['p99_ms'])} | "
              f"{times(ratio(p['p99_ms'], a_of[s]))} | {num(p['max_ms'])} | {pct(p['errors'], p['count'])} | "
              f"{errors_text(p)} | {received_split(data[s], phase['name'])} | {answered_split(p)} |")
    w("")
    w("*received*: each backend's share of the requests the backends received in the phase, by their own counters "
      "(read at the phase boundaries; retries count on the backend that got them). *answered*: where the client's "
      "responses came from (`X-Backend`; the proxy's own 502/504 left out).")
    w("")

    # ---- what the degraded backends did
    w("### The degraded backend, by its own counters")
    w("")
    w("| system | phase | backend | received | answered 500 | reset | dropped from its queue |")
    w("|---|---|---|---:|---:|---:|---:|")
    for s in systems:
        for phase in reported:
            if not phase["backend"]:
                continue
            c = data[s]["received"].get(phase["name"], {}).get(phase["backend"])
            if c is None:
                continue
            w(f"| {LABELS.get(s, s)} | {phase['name']} | {phase['backend']} | {c['received']} | {c['failed']} | "
              f"{c['resets']} | {c['abandoned']} |")
    w("")

    # ---- recovery
    recovered = [p for p in reported if p["role"] == "recovered"]
    if recovered:
        w(f"### Recovery: seconds until the per-second p99 is within {factor:g}× the system's own A p99, with no errors")
        w("")
        w("| system | " + " | ".join(f"{p['name']} (first / stays)" for p in recovered) + " |")
        w("|---|" + "---|" * len(recovered))
        for s in systems:
            cells = []
            for phase in recovered:
                threshold = factor * a_of[s] if a_of[s] else None
                first, stays, length = recovery(data[s]["windows"], data[s]["phases"].get(phase["name"]), threshold)
                cells.append(f"{seconds(first, length or 0)} / {seconds(stays, length or 0)}")
            w(f"| {LABELS.get(s, s)} | " + " | ".join(cells) + " |")
        w("")
        w("*first*: the first one-second window (requests by due time) that is back to normal; *stays*: the start of "
          "the run of such windows that lasts to the end of the phase.")
        w("")

    names = {p["name"]: p for p in reported}
    if systems:
        by_t = {}
        for s in systems:
            for window in data[s]["windows"]:
                by_t.setdefault(window["t"], {})[s] = window

        w("## Per-second p99 (ms), by due time")
        w("")
        w("Each cell is the p99 of the requests due in that second; `E` + count marks errors in that second.")
        w("")
        w("| t (s) | phase | " + " | ".join(LABELS.get(s, s) for s in systems) + " |")
        w("|---:|---|" + "---:|" * len(systems))
        for t in sorted(by_t):
            cells, phase = [], ""
            for s in systems:
                window = by_t[t].get(s)
                if window is None:
                    cells.append("")
                    continue
                phase = window["phase"]
                text = num(window["p99_ms"])
                if window["errors"]:
                    text += f" E{window['errors']}"
                cells.append(text)
            if phase in names:
                w(f"| {t:.0f} | {phase} | " + " | ".join(cells) + " |")
        w("")

        w("## Per-second share of the phase's degraded (or recovered) backend (%), by due time")
        w("")
        w("That backend's share of the client's responses that came from a backend (`X-Backend`) in each second: how "
          "fast each balancer moves traffic off it and back (– = no backend answer in that second). Requests it reset "
          "or that ended in the proxy's own 504 are not answers from it; the per-phase *received* figures above count "
          "those.")
        w("")
        w("| t (s) | phase | backend | " + " | ".join(LABELS.get(s, s) for s in systems) + " |")
        w("|---:|---|---|" + "---:|" * len(systems))
        for t in sorted(by_t):
            cells, phase = [], ""
            for s in systems:
                window = by_t[t].get(s)
                if window is None:
                    cells.append("")
                    continue
                phase = window["phase"]
                backend = names.get(phase, {}).get("backend", "")
                backends = {k: v for k, v in window.get("backends", {}).items() if k != "-"}
                answered = sum(backends.values())
                cells.append(f"{100.0 * backends.get(backend, 0) / answered:.0f}" if answered and backend else "–")
            if phase in names and names[phase]["backend"]:
                w(f"| {t:.0f} | {phase} | {names[phase]['backend']} | " + " | ".join(cells) + " |")
        w("")

    w("## Runs")
    w("")
    w("| system | busy % before | load avg | proxy CPU (% of one core) | other processes CPU % | requests scheduled | "
      "connections opened (max open) | stale reuse retries | max dispatch lag ms | backends after the run: "
      "received / 500 / reset / dropped (max queued) | proxy log |")
    w("|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|")
    for fields in rows:
        s = fields[0]
        if fields[1] != "ok":
            continue
        total = data[s]["total"]
        busy_before, loadavg = fields[3], fields[4]
        proxy_ticks, load_ticks, busy, all_ticks = (int(x or 0) for x in fields[5:9])
        seconds_run = total["duration"] if total else 1
        proxy_pct = 100.0 * proxy_ticks / ticks / seconds_run
        other = 100.0 * (busy - proxy_ticks - load_ticks) / all_ticks if all_ticks else 0
        after = []
        try:
            with open(fields[9]) as f:
                for line in f:
                    if line.strip():
                        st = json.loads(line)
                        if "name" in st:
                            after.append(f"{st['name']} {st.get('received', '?')} / {st['failed']} / "
                                         f"{st.get('resets', '?')} / {st['abandoned']} ({st['max_waiting']})")
        except (OSError, ValueError, KeyError):
            pass
        w(f"| {LABELS.get(s, s)} | {busy_before} | {loadavg} | {proxy_pct:.0f} | {max(other, 0):.0f} | "
          f"{total['requests_scheduled']} | {total['connections_opened']} ({total['max_open_connections']}) | "
          f"{total['stale_retries']} | {total['max_dispatch_lag_ms']:.1f} | {'; '.join(after) or '–'} | {fields[10]} |")
    w("")
    w(f"CPU shares are of the whole run; {ncpu} CPUs in all. *Other processes* is the machine's busy time minus the "
      f"proxy, the backends and the generator: a large value means the run was disturbed. *Stale reuse retries*: a "
      f"reused idle client connection was found closed by the proxy before answering, and the request was sent "
      f"again on a new connection (latency still counted from the due time). *Max dispatch lag*: how late the "
      f"generator sent a request after its due time (the latency includes it).")
    w("")

    na = [r for r in rows if r[1] != "ok"]
    if na:
        w("## Not measured")
        w("")
        for fields in na:
            w(f"- {LABELS.get(fields[0], fields[0])}: {fields[10]}")
        w("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
