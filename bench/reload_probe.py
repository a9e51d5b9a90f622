#!/usr/bin/env python3
"""Helper of bench/reload.sh: rewrite a proxy's config and watch the proxy pick it up.

Subcommands (Python 3 standard library only):

  latency  Alternate the config between two prepared variants ITERATIONS times. After each
           write (and the reload command, if one is given after `--`), poll the proxy with
           fresh requests, as fast as possible, until one is answered by the newly added
           backend; record the elapsed time. Writes a JSON file.
  churn    Write the variants alternately WRITES times, one every INTERVAL_MS, running the
           reload command (if any) after each write. Used while wrk loads the proxy. Writes a
           JSON file.
  report   Read the JSON files and wrk outputs of one run and print the markdown report.

Config variants: `--variant NAME=FILE`, where NAME is the backend that variant adds (the
backend every variant has in common answers too, but is never "new"). With the variants b
(backends a, b) and c (backends a, c), iteration 0 writes c, iteration 1 writes b, and so on;
the proxy starts with variant b.

Write modes (`--modes`, used in turn, two iterations each so both directions get both
modes): `inplace` opens the config file, truncates it and writes it (a shell's `>`), `rename`
writes a temporary file in the same directory and renames it over the config (what editors
and deployment tools do).

Each poll is one HTTP/1.1 `GET /` on a NEW TCP connection (`Connection: close`), so the
measurement never depends on which generation of the proxy owns a kept-alive connection.

With `--log FILE` the part of that log written during the run is searched for reload lines:
Sentinel's `config reloaded` (and its `took_us=`) and `config reload rejected`; nginx's
`reconfiguring` and `[emerg]`/`[alert]` lines (its error_log must be at level notice).
"""

import argparse
import http.client
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------- helpers


def split_command(argv):
    """argv before `--`, and the reload command after it (or None)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], (argv[i + 1 :] or None)
    return argv, None


def parse_variants(items):
    variants = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--variant must be NAME=FILE (got {item!r})")
        with open(path, "rb") as handle:
            variants[name] = handle.read()
    if len(variants) != 2:
        raise SystemExit("give exactly two --variant NAME=FILE")
    return variants


def write_config(path, content, mode):
    if mode == "inplace":
        with open(path, "wb") as handle:
            handle.write(content)
    elif mode == "rename":
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".reload-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        raise SystemExit(f"unknown write mode {mode!r}")


def fetch(host, port, timeout):
    """One GET / on a new connection: (status, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def run_reload(command, timeout):
    """Run the reload command: (seconds it took, error text or None)."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - started, f"timed out after {timeout}s"
    took = time.perf_counter() - started
    if done.returncode != 0:
        text = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        return took, f"exit {done.returncode}: {' | '.join(text[-2:])}"
    return took, None


def log_size(path):
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def log_summary(path, start, end):
    """Reload lines in bytes [start, end) of a Sentinel or nginx log."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            text = handle.read(max(0, end - start)).decode(errors="replace")
    except OSError as error:
        return {"error": str(error)}
    text = ANSI.sub("", text)
    lines = text.splitlines()
    took = [int(m.group(1)) for m in re.finditer(r"took_us=(\d+)", text)]
    rejected = [line for line in lines if "config reload rejected" in line]
    problems = [
        line
        for line in lines
        if re.search(r"\[(emerg|alert|crit|error)\]| ERROR | WARN ", line)
        and "config reload rejected" not in line
    ]
    return {
        "sentinel_reloaded": sum("config reloaded" in line for line in lines),
        "sentinel_rejected": len(rejected),
        "took_us": took,
        # nginx logs "signal 1 (SIGHUP) received from N, reconfiguring" and then, once per
        # reload, a line that ends in ": reconfiguring".
        "nginx_reconfiguring": sum(line.endswith(": reconfiguring") for line in lines),
        "rejected_lines": rejected[:5],
        "problem_lines": problems[:5],
    }


def dump(path, data):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)


# ---------------------------------------------------------------- latency


def cmd_latency(args, reload_cmd):
    variants = parse_variants(args.variant)
    names = list(variants)  # [initial, other]
    modes = args.modes.split(",")
    host, port = args.host, args.port
    log_start = log_size(args.log)
    iterations = []
    consecutive_timeouts = 0
    for i in range(args.iterations):
        new = names[1] if i % 2 == 0 else names[0]
        removed = names[0] if new == names[1] else names[1]
        mode = modes[(i // 2) % len(modes)]
        it = {"i": i, "new": new, "mode": mode, "polls": 0, "removed_before": 0,
              "common_before": 0, "errors": 0, "non200": 0, "error_samples": [],
              "stale_after": 0, "errors_after": 0, "polls_after": 0}
        write_config(args.config, variants[new], mode)
        t0 = time.perf_counter()  # the new config is on disk from here
        if reload_cmd:
            took, error = run_reload(reload_cmd, args.timeout)
            it["reload_cmd_ms"] = took * 1000
            if error:
                it["reload_cmd_error"] = error
        deadline = t0 + args.timeout
        elapsed = None
        while time.perf_counter() < deadline:
            try:
                status, body = fetch(host, port, args.request_timeout)
            except (OSError, http.client.HTTPException) as error:
                it["errors"] += 1
                if len(it["error_samples"]) < 3:
                    it["error_samples"].append(f"{type(error).__name__}: {error}")
                time.sleep(0.001)  # do not spin on a refused connection
                continue
            it["polls"] += 1
            if status != 200:
                it["non200"] += 1
                if len(it["error_samples"]) < 3:
                    it["error_samples"].append(f"HTTP {status}")
                continue
            text = body.decode(errors="replace").strip()
            if text == new:
                elapsed = time.perf_counter() - t0
                break
            if text == removed:
                it["removed_before"] += 1
            else:
                it["common_before"] += 1
        it["ms"] = None if elapsed is None else elapsed * 1000
        # Settle: keep polling a while. The removed backend must not answer any more once the
        # new one has (an atomic switch); this also spaces the iterations out.
        settle_end = time.perf_counter() + args.settle_ms / 1000
        while time.perf_counter() < settle_end:
            try:
                status, body = fetch(host, port, args.request_timeout)
            except (OSError, http.client.HTTPException):
                it["errors_after"] += 1
                time.sleep(0.001)
                continue
            it["polls_after"] += 1
            if status != 200:
                it["errors_after"] += 1
            elif body.decode(errors="replace").strip() == removed:
                it["stale_after"] += 1
                it["last_stale_ms"] = (time.perf_counter() - t0) * 1000
        iterations.append(it)
        shown = "TIMEOUT" if elapsed is None else f"{elapsed * 1000:8.2f} ms"
        print(f"[bench]   {args.name} reload {i + 1:2d}/{args.iterations} ({mode:7s} -> "
              f"{new}): {shown}  polls {it['polls']}  errors {it['errors'] + it['non200']}"
              + (f"  stale after switch {it['stale_after']}" if it["stale_after"] else "")
              + (f"  reload command: {it['reload_cmd_error']}" if "reload_cmd_error" in it else ""),
              file=sys.stderr, flush=True)
        consecutive_timeouts = consecutive_timeouts + 1 if elapsed is None else 0
        if consecutive_timeouts >= args.max_consecutive_timeouts:
            print(f"[bench]   {args.name}: {consecutive_timeouts} reloads in a row not seen "
                  f"within {args.timeout}s; stopping this series", file=sys.stderr, flush=True)
            break
    time.sleep(0.2)  # let the last reload's log line land
    dump(args.out, {
        "name": args.name,
        "iterations_planned": args.iterations,
        "iterations": iterations,
        "timeout_s": args.timeout,
        "settle_ms": args.settle_ms,
        "log": log_summary(args.log, log_start, log_size(args.log)),
    })


# ---------------------------------------------------------------- churn


def cmd_churn(args, reload_cmd):
    variants = parse_variants(args.variant)
    names = list(variants)
    modes = args.modes.split(",")
    log_start = log_size(args.log)
    time.sleep(args.delay_ms / 1000)
    start = time.perf_counter()
    writes = []
    for i in range(args.writes):
        new = names[1] if i % 2 == 0 else names[0]
        mode = modes[(i // 2) % len(modes)]
        write_config(args.config, variants[new], mode)
        entry = {"i": i, "new": new, "mode": mode, "at_ms": (time.perf_counter() - start) * 1000}
        if reload_cmd:
            took, error = run_reload(reload_cmd, args.reload_timeout)
            entry["reload_cmd_ms"] = took * 1000
            if error:
                entry["reload_cmd_error"] = error
        writes.append(entry)
        pause = start + (i + 1) * args.interval_ms / 1000 - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    time.sleep(0.5)  # the last reload (debounce, new workers) finishes
    dump(args.out, {
        "writes": writes,
        "span_ms": (time.perf_counter() - start) * 1000,
        "log": log_summary(args.log, log_start, log_size(args.log)),
    })


# ---------------------------------------------------------------- report


def parse_wrk(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError as error:
        return {"failed": str(error)}
    result = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
    match = re.search(r"^\s+(\d+) requests in ([0-9.]+\w+)", text, re.M)
    if not match:
        return {"failed": "no result: " + " ".join(text.strip().splitlines()[-3:])}
    result["requests"] = int(match.group(1))
    result["span"] = match.group(2)
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if match:
        for key, value in zip(("connect", "read", "write", "timeout"), match.groups()):
            result[key] = int(value)
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if match:
        result["non2xx"] = int(match.group(1))
    match = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    result["rps"] = float(match.group(1)) if match else None
    match = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    result["p99"] = match.group(1) if match else None
    match = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", text, re.M)
    result["max"] = match.group(1) if match else None
    return result


def load_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def pct(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(value):
    return "n/a" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def latency_row(label, data, select=None):
    its = [it for it in data["iterations"] if select is None or select(it)]
    seen = [it["ms"] for it in its if it["ms"] is not None]
    missed = sum(it["ms"] is None for it in its)
    errors = sum(it["errors"] + it["non200"] for it in its)
    stale = sum(it["stale_after"] for it in its)
    polls = sum(it["polls"] for it in its)
    cells = [label, f"{len(seen)}/{len(its)}"]
    if seen:
        cells += [ms(statistics.median(seen)), ms(pct(seen, 90)), ms(max(seen)), ms(min(seen))]
    else:
        cells += ["n/a"] * 4
    cells += [str(missed), str(polls), str(errors), str(stale)]
    last = [it["last_stale_ms"] for it in its if "last_stale_ms" in it]
    cells.append(f"{len(last)}× (median {ms(statistics.median(last))}, max {ms(max(last))})"
                 if last else "never")
    return "| " + " | ".join(cells) + " |"


def cmd_report(args):
    facts = []
    with open(args.facts, encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.rstrip("\n").partition("\t")
            facts.append((key, value))
    out = []
    w = out.append
    w("# Config reload: Sentinel vs nginx")
    w("")
    for key, value in facts:
        w(f"- **{key}**: {value}")
    w("")

    # ---- latency
    w("## 1. Reload latency (ms)")
    w("")
    w("From the moment the new config is on disk (nginx: conf written, then `nginx -s reload` "
      "run and timed inside the interval) until a request through the proxy is answered by the "
      "backend that config adds. Each poll is a new TCP connection (`Connection: close`), sent "
      "back to back. Both proxies round-robin, so a poll may hit the common backend `a` first: "
      "the figure includes up to one extra request. p90 = nearest rank.")
    w("")
    w("| proxy | seen | median | p90 | max | min | not seen | polls | poll errors | "
      "stale after switch | removed backend still answering after the new one |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    latency = {}
    for name, path in (("sentinel", args.latency_sentinel), ("nginx", args.latency_nginx)):
        data = load_json(path) if path else None
        latency[name] = data
        if data is None:
            w(f"| {name} | n/a | | | | | | | | | |")
            continue
        w(latency_row(f"**{name}**", data))
        modes = sorted({it["mode"] for it in data["iterations"]})
        if len(modes) > 1:
            for mode in modes:
                w(latency_row(f"{name}, {mode} writes", data, lambda it, m=mode: it["mode"] == m))
    w("")
    w("*seen*: reloads whose new backend answered within the poll timeout; *polls*: answered "
      "polls before the new backend answered; *poll errors*: failed connections and non-200 "
      "answers while polling; *stale after switch*: answers from the removed backend after the "
      "new one had answered, in the settle window that follows each reload "
      f"({next((d['settle_ms'] for d in latency.values() if d), 0):.0f} ms of further polling; all reloads "
      "together); *removed backend still answering*: in how many reloads that happened, and "
      "the ms from the write to the last such answer.")
    w("")
    notes = []
    s = latency.get("sentinel")
    if s and s.get("log"):
        log = s["log"]
        took = log.get("took_us") or []
        line = (f"Sentinel logged `config reloaded` {log.get('sentinel_reloaded', 0)} times and "
                f"`config reload rejected` {log.get('sentinel_rejected', 0)} times for "
                f"{len(s['iterations'])} writes")
        if took:
            line += (f"; its own `took_us` (read + validate + swap, after the 50 ms debounce): "
                     f"median {statistics.median(took):.0f} µs, max {max(took)} µs")
        notes.append(line + ".")
        for bad in log.get("rejected_lines", []):
            notes.append(f"Rejected: `{bad.strip()[:300]}`")
    n = latency.get("nginx")
    if n:
        cmd = [it["reload_cmd_ms"] for it in n["iterations"] if "reload_cmd_ms" in it]
        if cmd:
            notes.append(f"`nginx -s reload` itself (a new process that parses the conf and "
                         f"signals the master) took median {ms(statistics.median(cmd))} ms, max "
                         f"{ms(max(cmd))} ms, included above.")
        fails = [it["reload_cmd_error"] for it in n["iterations"] if "reload_cmd_error" in it]
        if fails:
            notes.append(f"`nginx -s reload` failed {len(fails)} times: {fails[0]}")
        if n.get("log"):
            notes.append(f"nginx logged `reconfiguring` {n['log'].get('nginx_reconfiguring', 0)} "
                         f"times for {len(n['iterations'])} reloads.")
    for data in (s, n):
        if not data:
            continue
        if len(data["iterations"]) < data["iterations_planned"]:
            notes.append(f"{data['name']}: the series stopped after {len(data['iterations'])} of "
                         f"{data['iterations_planned']} reloads (several in a row not seen within "
                         f"{data['timeout_s']} s).")
        samples = [e for it in data["iterations"] for e in it["error_samples"]]
        if samples:
            notes.append(f"{data['name']} poll errors, e.g.: " + "; ".join(sorted(set(samples))[:3]))
        if data.get("log") and data["log"].get("problem_lines"):
            notes.append(f"{data['name']} log: `" + "` / `".join(
                l.strip()[:200] for l in data["log"]["problem_lines"][:3]) + "`")
    for note in notes:
        w(f"- {note}")
    if notes:
        w("")

    # ---- load
    w("## 2. Errors during reloads under load")
    w("")
    w(f"`{args.wrk_command}` against the proxy while the config is rewritten "
      f"{args.writes} times, one every {args.interval_ms} ms, alternating {{a,b}} / {{a,c}} "
      f"(nginx: each write followed by `nginx -s reload`; Sentinel: writes alternate in place "
      f"/ rename, two each). wrk keeps its connections alive across reloads.")
    w("")
    w("| proxy | reloads done | wrk requests | req/s | non-2xx/3xx | connect | read | write | "
      "timeout | total errors | p99 latency | max latency |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|")
    load_notes = []
    for name, wrk_path, churn_path in (("sentinel", args.wrk_sentinel, args.churn_sentinel),
                                       ("nginx", args.wrk_nginx, args.churn_nginx)):
        if not wrk_path:
            w(f"| {name} | n/a | | | | | | | | | | |")
            continue
        result = parse_wrk(wrk_path)
        churn = load_json(churn_path) if churn_path else None
        done = "n/a"
        if churn:
            log = churn.get("log") or {}
            if name == "sentinel":
                done = f"{log.get('sentinel_reloaded', '?')}/{len(churn['writes'])} logged"
                if log.get("sentinel_rejected"):
                    done += f", {log['sentinel_rejected']} rejected"
                    for bad in log.get("rejected_lines", [])[:2]:
                        load_notes.append(f"sentinel rejected: `{bad.strip()[:300]}`")
            else:
                ok = sum("reload_cmd_error" not in e for e in churn["writes"])
                done = f"{ok}/{len(churn['writes'])} ok, {log.get('nginx_reconfiguring', '?')} logged"
                fails = [e["reload_cmd_error"] for e in churn["writes"] if "reload_cmd_error" in e]
                if fails:
                    load_notes.append(f"nginx -s reload failed {len(fails)} times: {fails[0]}")
            load_notes.append(f"{name}: the {len(churn['writes'])} writes spanned "
                              f"{churn['writes'][-1]['at_ms'] / 1000:.2f} s of the wrk run "
                              f"(first at +{args.delay_ms / 1000:.1f} s)." if churn["writes"] else "")
        if "failed" in result:
            w(f"| {name} | {done} | wrk failed | | | | | | | | | |")
            load_notes.append(f"{name}: wrk {result['failed']}")
            continue
        total = result["non2xx"] + result["connect"] + result["read"] + result["write"] + result["timeout"]
        w(f"| **{name}** | {done} | {result['requests']} | "
          f"{'n/a' if result['rps'] is None else format(result['rps'], '.0f')} | {result['non2xx']} | "
          f"{result['connect']} | {result['read']} | {result['write']} | {result['timeout']} | "
          f"**{total}** | {result['p99'] or 'n/a'} | {result['max'] or 'n/a'} |")
    w("")
    for note in load_notes:
        if note:
            w(f"- {note}")
    w("")
    w("*total errors* = non-2xx/3xx + socket errors. wrk counts a `read` error when a "
      "kept-alive connection is closed under it without a response; it then reconnects.")
    sys.stdout.write("\n".join(out) + "\n")


# ---------------------------------------------------------------- main


def main(argv):
    argv, reload_cmd = split_command(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("latency")
    p.add_argument("--name", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--variant", action="append", default=[])
    p.add_argument("--modes", default="inplace")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait per reload")
    p.add_argument("--request-timeout", type=float, default=2.0)
    p.add_argument("--settle-ms", type=float, default=300.0)
    p.add_argument("--max-consecutive-timeouts", type=int, default=3)
    p.add_argument("--log")
    p.add_argument("--out", required=True)

    p = sub.add_parser("churn")
    p.add_argument("--config", required=True)
    p.add_argument("--variant", action="append", default=[])
    p.add_argument("--modes", default="inplace")
    p.add_argument("--writes", type=int, default=20)
    p.add_argument("--interval-ms", type=float, default=250.0)
    p.add_argument("--delay-ms", type=float, default=1000.0)
    p.add_argument("--reload-timeout", type=float, default=10.0)
    p.add_argument("--log")
    p.add_argument("--out", required=True)

    p = sub.add_parser("report")
    p.add_argument("--facts", required=True)
    p.add_argument("--latency-sentinel")
    p.add_argument("--latency-nginx")
    p.add_argument("--wrk-sentinel")
    p.add_argument("--wrk-nginx")
    p.add_argument("--churn-sentinel")
    p.add_argument("--churn-nginx")
    p.add_argument("--wrk-command", default="wrk")
    p.add_argument("--writes", type=int, default=20)
    p.add_argument("--interval-ms", type=int, default=250)
    p.add_argument("--delay-ms", type=int, default=1000)

    args = parser.parse_args(argv)
    if args.command == "latency":
        cmd_latency(args, reload_cmd)
    elif args.command == "churn":
        cmd_churn(args, reload_cmd)
    else:
        if reload_cmd:
            parser.error("report takes no command after --")
        cmd_report(args)


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    main(sys.argv[1:])
