#!/usr/bin/env python3
"""Markdown report of bench/adaptive.sh from the load generator's JSON lines.

usage: summarize_adaptive.py MANIFEST FACTS

MANIFEST: one line per system, tab-separated: system, ok|n/a, jsonl, busy % before,
load average, proxy ticks, load-side ticks (backends + generator), machine busy ticks,
machine total ticks, backends-after jsonl, notes (for n/a: the reason in the last field).
FACTS: "key<TAB>value" lines.
"""

import json
import sys

LABELS = {
    "sentinel-rr": "Sentinel `round_robin`",
    "sentinel-lc": "Sentinel `least_connections`",
    "sentinel-adaptive": "Sentinel `adaptive`",
    "nginx-retry": "nginx `least_conn` + retry 500/502/503",
    "nginx-default": "nginx `least_conn`, defaults",
    "haproxy": "HAProxy `leastconn`",
}

SETUPS = {
    "sentinel-rr": "`proxy.strategy: round_robin`",
    "sentinel-lc": "`proxy.strategy: least_connections`",
    "sentinel-adaptive": "`proxy.strategy: adaptive` (power of two choices on peak-EWMA latency × (in flight + 1))",
    "nginx-retry": "`least_conn`; `proxy_next_upstream error timeout http_500 http_502 http_503` (a 500 is retried on "
    "another backend and counts as a failure: `max_fails=1 fail_timeout=10s`, the defaults, then take the backend "
    "out for 10 s)",
    "nginx-default": "`least_conn`; `proxy_next_upstream` at its default `error timeout` (a 500 is passed to the "
    "client and does not count as a failure); `max_fails=1 fail_timeout=10s` (defaults)",
    "haproxy": "`balance leastconn`, `nbthread 1`, `option http-keep-alive`, `http-reuse safe` (default); "
    "`retries 3` and `retry-on connect-failure` (defaults: a 500 or a timeout is passed to the client, never "
    "retried), no `option redispatch`, no health checks (so no `observe layer7` either)",
}

PHASE_TEXT = {
    "A": "all healthy (baseline)",
    "B": "b1 {slow}× slower ({slow_ms} ms per request: capacity {slow_cap} req/s)",
    "C": "b1 recovered (`slow_factor=1`)",
    "D": "b1 answers {fail_pct} % of its requests with an immediate 500 (the rest normally)",
    "D-reset": "b1 resets the connection of {fail_pct} % of its requests before any response byte (the rest normally)",
    "E": "b1 recovered (`fail_ratio=0` / `reset_ratio=0`)",
}

REPORTED = ["A", "B", "C", "D", "E"]


def num(value, digits=1):
    if value is None:
        return "–"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def pct(part, whole, digits=1):
    if not whole:
        return "–"
    value = 100.0 * part / whole
    if 0 < value < 0.1 and digits == 1:
        return "<0.1"
    return f"{value:.{digits}f}"


def load(path):
    windows, phases, total, controls = [], {}, None, []
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
    return windows, phases, total, controls


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


def split(bucket):
    """Shares of the responses that came from a backend (X-Backend), b1 / b2 / b3 in %;
    responses the proxy made itself (502, 504: no X-Backend) are left out."""
    backends = {k: v for k, v in bucket.get("backends", {}).items() if k != "-"}
    answered = sum(backends.values())
    if not answered:
        return "–"
    return " / ".join(f"{100.0 * backends.get(name, 0) / answered:.0f}" for name in ("b1", "b2", "b3"))


def recovery(windows, phase, threshold):
    """(first, stays) seconds after the phase start until a window (by due time) has p99 within
    the threshold and no errors: the first such window, and the start of the run of such windows
    that lasts to the end of the phase. None when there is none."""
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


def main():
    manifest_path, facts_path = sys.argv[1:3]
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

    rate = float(facts["rate"])
    service = float(facts["service_ms"])
    slow = float(facts["slow_factor"])
    fail = float(facts["fail_ratio"])
    factor = float(facts["recovery_factor"])
    ticks = int(facts["ticks"])
    ncpu = int(facts["ncpu"])
    capacity = 3 * 1000.0 / service

    out = []
    w = out.append
    w("# Adaptive load balancing: one backend degrades (`bench/adaptive.sh`)")
    w("")
    w(f"{facts.get('date', '')}. Command: {facts.get('command', '')}")
    w("")
    w("## Setup")
    w("")
    first_load = next((r[4] for r in rows if r[1] == "ok"), "?")
    w(f"- **Machine**: {facts.get('cpu', '?')}; load average before the first run {first_load} (each run's in "
      f"\"Runs\" below); "
      f"{facts.get('kernel', '')}, {facts.get('memory', '')}.")
    w(f"- **CPU pinning**: {facts.get('cpu pinning', '?')}.")
    w(f"- **Versions**: Sentinel {facts.get('sentinel', '?')}; nginx {facts.get('nginx', '?')}; "
      f"HAProxy {facts.get('haproxy', '?')}; {facts.get('rustc', '')}.")
    w(f"- **Backends**: 3 × `openloop backend`, each serving **one request at a time** (FIFO queue in front of a "
      f"single slot) for **{service:g} ms** each: capacity about {1000 / service:.0f} req/s per backend, "
      f"{capacity:.0f} req/s in all. A request still queued when its connection is closed is dropped. Each response "
      f"names its backend (`X-Backend`), so the generator counts where requests went.")
    w(f"- **Load**: `openloop load`, **open loop at {rate:g} req/s** (one request every {1000 / rate:.2f} ms, "
      f"{100 * rate / capacity:.0f} % of the healthy capacity), keep-alive connections opened as needed (at most "
      f"{facts.get('connections', '?')}). Each latency is measured from the request's **due time**, so a stalled "
      f"proxy is charged for its backlog (no coordinated omission). The proxies' upstream response timeouts are "
      f"{facts.get('timeout', '?')} s (connect: 1 s), so a stuck request normally ends as their 504; a request still "
      f"unanswered {facts.get('client_timeout', '?')} s after its due time is a client timeout.")
    w("- **Latency figures** (p50, p99, max) cover every request sent: responses of any status at their latency, "
      "I/O errors at their time to failure, timeouts at the timeout. **Errors** are non-2xx responses, I/O errors "
      "and timeouts, as a share of the requests sent.")
    w(f"- **Recovery** (C and E): seconds from the phase start until the first one-second window (requests by due "
      f"time) whose p99 is within {factor:g}× the system's own phase-A p99 and has no errors (*first*), and until "
      f"the start of the run of such windows that lasts to the end of the phase (*stays*).")
    w("")
    w("Timeline (the control requests go straight to b1 at each phase start):")
    w("")
    w("| phase | seconds | b1 |")
    w("|---|---|---|")
    first_jsonl = next((r[2] for r in rows if r[1] == "ok"), None)
    if first_jsonl:
        _, phase_info, _, _ = load(first_jsonl)
        for name, phase in phase_info.items():
            key = "D-reset" if name == "D" and facts.get("fail_kind") == "reset" else name
            text = PHASE_TEXT.get(key, "all healthy, not reported (connections warm up)")
            text = text.format(slow=f"{slow:g}", slow_ms=f"{service * slow:g}",
                               slow_cap=f"{1000 / (service * slow):.0f}", fail_pct=f"{100 * fail:g}")
            w(f"| {name} | {phase['length']:g} | {text} |")
    w("")
    w("Systems:")
    w("")
    w("| system | configuration |")
    w("|---|---|")
    for fields in rows:
        w(f"| {LABELS.get(fields[0], fields[0])} | {SETUPS.get(fields[0], '')} |")
    w("")
    w("Sentinel's config is `proxy.strategy` + the 3 `backends`, `connection_timeout_ms: 1000`, "
      "`request_timeout_ms` = the timeout, `logging.level: warn`, `access_log: false`, everything else at its "
      "defaults (passive health: `max_fails: 3`, `fail_timeout_ms: 10000`; retries idempotent requests on "
      "connection failures only, a 5xx is passed to the client). nginx runs `worker_processes 1` with `keepalive "
      "64` to the upstream, `proxy_http_version 1.1`; HAProxy runs `nbthread 1` in the foreground (`-db`).")
    w("")

    data = {}
    for fields in rows:
        if fields[1] == "ok":
            data[fields[0]] = load(fields[2])

    w("## Summary")
    w("")
    w(f"| system | A p99 ms | B p99 ms | B p99 / A p99 | C: back within {factor:g}× A p99 (first / stays) | "
      f"D errors % | E: back (first / stays) | errors % (A–E) |")
    w("|---|---:|---:|---:|---|---:|---|---:|")
    for fields in rows:
        system = fields[0]
        label = LABELS.get(system, system)
        if system not in data:
            w(f"| {label} | n/a | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        windows, phases, _, _ = data[system]
        a, b = phases.get("A"), phases.get("B")
        a99 = a["p99_ms"] if a else None
        b99 = b["p99_ms"] if b else None
        ratio = f"{b99 / a99:.1f}×" if a99 and b99 is not None else "–"
        threshold = factor * a99 if a99 else None
        cf, cs, cl = recovery(windows, phases.get("C"), threshold)
        ef, es, el = recovery(windows, phases.get("E"), threshold)
        d = phases.get("D")
        sent = sum(phases[p]["count"] for p in REPORTED if p in phases)
        errs = sum(phases[p]["errors"] for p in REPORTED if p in phases)
        w(f"| {label} | {num(a99)} | {num(b99)} | {ratio} | {seconds(cf, cl or 0)} / {seconds(cs, cl or 0)} | "
          f"{pct(d['errors'], d['count']) if d else '–'} | {seconds(ef, el or 0)} / {seconds(es, el or 0)} | "
          f"{pct(errs, sent, 2)} |")
    w("")

    w("## Per phase")
    w("")
    w("| system | phase | requests | p50 ms | p99 ms | max ms | errors % | errors | b1 / b2 / b3 % |")
    w("|---|---|---:|---:|---:|---:|---:|---|---:|")
    for fields in rows:
        system = fields[0]
        if system not in data:
            continue
        _, phases, _, _ = data[system]
        for name in REPORTED:
            p = phases.get(name)
            if not p:
                continue
            w(f"| {LABELS.get(system, system)} | {name} | {p['count']} | {num(p['p50_ms'], 2)} | {num(p['p99_ms'])} | "
              f"{num(p['max_ms'])} | {pct(p['errors'], p['count'])} | {errors_text(p)} | {split(p)} |")
    w("")
    w("*b1 / b2 / b3 %*: where the responses that came from a backend came from (by `X-Backend`; answers the "
      "proxy made itself, such as its 504, are left out). ")
    w("")
    w(f"With all three healthy each backend should answer about 33 %. In phase B b1 can serve at most "
      f"{1000 / (service * slow):.0f} req/s, {100 * (1000 / (service * slow)) / rate:.1f} % of the load; more than "
      f"that only queues.")
    w("")

    if data:
        w("## Per-second p99 (ms), by due time")
        w("")
        w("Each cell is the p99 of the requests due in that second; `E` + count marks errors in that second.")
        w("")
        systems = [r[0] for r in rows if r[0] in data]
        w("| t (s) | phase | " + " | ".join(LABELS.get(s, s) for s in systems) + " |")
        w("|---:|---|" + "---:|" * len(systems))
        by_t = {}
        for system in systems:
            for window in data[system][0]:
                by_t.setdefault(window["t"], {})[system] = window
        for t in sorted(by_t):
            cells = []
            phase = ""
            for system in systems:
                window = by_t[t].get(system)
                if window is None:
                    cells.append("")
                    continue
                phase = window["phase"]
                cell = num(window["p99_ms"])
                if window["errors"]:
                    cell += f" E{window['errors']}"
                cells.append(cell)
            if phase not in REPORTED:
                continue
            w(f"| {t:.0f} | {phase} | " + " | ".join(cells) + " |")
        w("")

    if data:
        w("## Per-second share of b1 (%), by due time")
        w("")
        w("b1's share of the responses that came from a backend, in each second of phases B to E: how fast each "
          "balancer moves traffic off b1 and back to it (– = no backend answer in that second; a request sent to b1 "
          "that ended in the proxy's own 504 is not an answer from b1).")
        w("")
        systems = [r[0] for r in rows if r[0] in data]
        w("| t (s) | phase | " + " | ".join(LABELS.get(s, s) for s in systems) + " |")
        w("|---:|---|" + "---:|" * len(systems))
        by_t = {}
        for system in systems:
            for window in data[system][0]:
                by_t.setdefault(window["t"], {})[system] = window
        for t in sorted(by_t):
            cells = []
            phase = ""
            for system in systems:
                window = by_t[t].get(system)
                if window is None:
                    cells.append("")
                    continue
                phase = window["phase"]
                backends = {k: v for k, v in window.get("backends", {}).items() if k != "-"}
                answered = sum(backends.values())
                cells.append(f"{100.0 * backends.get('b1', 0) / answered:.0f}" if answered else "–")
            if phase not in REPORTED[1:]:
                continue
            w(f"| {t:.0f} | {phase} | " + " | ".join(cells) + " |")
        w("")

    w("## Runs")
    w("")
    w("| system | busy % before | load avg | proxy CPU (% of one core) | other processes CPU % | connections opened "
      "(max open) | stale reuse retries | max dispatch lag ms | b1 after the run: ok / 500 / abandoned in queue (max queued) | "
      "proxy log |")
    w("|---|---:|---|---:|---:|---:|---:|---:|---|---|")
    for fields in rows:
        system = fields[0]
        label = LABELS.get(system, system)
        if fields[1] != "ok":
            continue
        _, _, total, _ = data[system]
        busy_before, loadavg = fields[3], fields[4]
        proxy_ticks, load_ticks, busy, all_ticks = (int(x or 0) for x in fields[5:9])
        seconds_run = total["duration"] if total else 1
        proxy_pct = 100.0 * proxy_ticks / ticks / seconds_run
        other = 100.0 * (busy - proxy_ticks - load_ticks) / all_ticks if all_ticks else 0
        b1 = "–"
        try:
            with open(fields[9]) as f:
                stats = [json.loads(line) for line in f if line.strip()]
            s = next((s for s in stats if s.get("name") == "b1"), None)
            if s:
                b1 = f"{s['ok']} / {s['failed']} / {s['abandoned']} ({s['max_waiting']})"
        except (OSError, ValueError, KeyError):
            pass
        w(f"| {label} | {busy_before} | {loadavg} | {proxy_pct:.0f} | {max(other, 0):.0f} | "
          f"{total['connections_opened']} ({total['max_open_connections']}) | {total['stale_retries']} | "
          f"{total['max_dispatch_lag_ms']:.1f} | {b1} | {fields[10]} |")
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
