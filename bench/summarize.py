#!/usr/bin/env python3
"""Summarize the wrk runs of bench/static.sh into a markdown report.

Usage: summarize.py MANIFEST FACTS

MANIFEST is a tab-separated file, one line per wrk run: size, server, round, path of the
saved wrk output. FACTS is a file of "key<TAB>value" lines (machine facts, versions, the
command) printed at the top of the report. The report goes to stdout.

Python 3 standard library only.
"""

import re
import statistics
import sys

SERVERS = ("sentinel", "nginx")

# wrk prints times with format_time(): us, ms, s, m, h.
TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
# wrk prints byte rates with format_binary(): powers of 1024, "B", "KB", "MB", "GB", "TB".
BYTE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse_time_ms(text):
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unrecognised wrk time {text!r}")
    return float(match.group(1)) * TIME_UNITS_MS[match.group(2)]


def parse_bytes(text):
    match = re.fullmatch(r"([0-9.]+)([KMGT]?B)", text)
    if not match:
        raise ValueError(f"unrecognised wrk size {text!r}")
    return float(match.group(1)) * BYTE_UNITS[match.group(2)]


def parse_wrk(path):
    """Return a dict with rps, p50_ms, p99_ms, transfer_Bps, requests, errors."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    result = {"errors": 0, "non2xx": 0}
    match = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if not match:
        raise ValueError(f"{path}: no Requests/sec line (did wrk fail?)")
    result["rps"] = float(match.group(1))
    match = re.search(r"^Transfer/sec:\s+(\S+)", text, re.M)
    result["transfer_Bps"] = parse_bytes(match.group(1)) if match else float("nan")
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        match = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", text, re.M)
        if not match:
            raise ValueError(f"{path}: no {pct}% latency line (was --latency given?)")
        result[key] = parse_time_ms(match.group(1))
    match = re.search(r"^\s+(\d+) requests in", text, re.M)
    result["requests"] = int(match.group(1)) if match else 0
    match = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if match:
        result["errors"] = sum(int(g) for g in match.groups())
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if match:
        result["non2xx"] = int(match.group(1))
    return result


def fmt_rps(value):
    return f"{value:,.0f}"


def fmt_ms(value):
    if value < 1:
        return f"{value:.3f}"
    if value < 100:
        return f"{value:.2f}"
    return f"{value:.0f}"


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    manifest, facts_path = argv[1], argv[2]

    runs = {}  # (size, server) -> {round: result}
    sizes = []
    with open(manifest, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line:
                continue
            size, server, rnd, path = line.split("\t")
            if size not in sizes:
                sizes.append(size)
            runs.setdefault((size, server), {})[int(rnd)] = parse_wrk(path)

    facts = []
    with open(facts_path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line:
                key, _, value = line.partition("\t")
                facts.append((key, value))

    out = []
    out.append("# Sentinel vs nginx: static files")
    out.append("")
    for key, value in facts:
        out.append(f"- **{key}**: {value}")
    out.append("")
    out.append(
        "Medians over rounds. Ratio = sentinel / nginx (above 1 means Sentinel is faster for "
        "req/s); \"median of per-round ratios\" pairs the two servers' runs of the same round. "
        "Latencies are wrk's p50 / p99 in ms (median over rounds)."
    )
    out.append("")
    out.append(
        "| file | sentinel req/s | nginx req/s | ratio of medians | median of per-round ratios "
        "| sentinel p50 ms | nginx p50 ms | sentinel p99 ms | nginx p99 ms |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    transfer_rows = []
    problems = []
    for size in sizes:
        s_runs = runs.get((size, "sentinel"), {})
        n_runs = runs.get((size, "nginx"), {})
        s_rps = statistics.median(r["rps"] for r in s_runs.values())
        n_rps = statistics.median(r["rps"] for r in n_runs.values())
        paired = sorted(set(s_runs) & set(n_runs))
        per_round = [s_runs[i]["rps"] / n_runs[i]["rps"] for i in paired]
        med = {}
        for server, server_runs in (("sentinel", s_runs), ("nginx", n_runs)):
            for key in ("p50_ms", "p99_ms", "transfer_Bps"):
                med[(server, key)] = statistics.median(r[key] for r in server_runs.values())
            for i, r in sorted(server_runs.items()):
                if r["errors"] or r["non2xx"]:
                    problems.append(
                        f"{size} {server} round {i}: {r['errors']} socket errors, "
                        f"{r['non2xx']} non-2xx/3xx responses"
                    )
        out.append(
            f"| {size} | {fmt_rps(s_rps)} | {fmt_rps(n_rps)} | {s_rps / n_rps:.2f} "
            f"| {statistics.median(per_round):.2f} "
            f"| {fmt_ms(med[('sentinel', 'p50_ms')])} | {fmt_ms(med[('nginx', 'p50_ms')])} "
            f"| {fmt_ms(med[('sentinel', 'p99_ms')])} | {fmt_ms(med[('nginx', 'p99_ms')])} |"
        )
        if size != "1k":
            s_mib = med[("sentinel", "transfer_Bps")] / 1024**2
            n_mib = med[("nginx", "transfer_Bps")] / 1024**2
            transfer_rows.append(
                f"| {size} | {s_mib:,.0f} | {n_mib:,.0f} | {s_mib / n_mib:.2f} |"
            )
    out.append("")
    if transfer_rows:
        out.append("Transfer/sec as reported by wrk (MiB/s, median over rounds):")
        out.append("")
        out.append("| file | sentinel MiB/s | nginx MiB/s | ratio |")
        out.append("|---|---:|---:|---:|")
        out.extend(transfer_rows)
        out.append("")

    out.append("Every run (req/s, p50 ms, p99 ms):")
    out.append("")
    out.append("| file | server | round | req/s | p50 ms | p99 ms | requests | errors |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        for server in SERVERS:
            for i, r in sorted(runs.get((size, server), {}).items()):
                out.append(
                    f"| {size} | {server} | {i} | {fmt_rps(r['rps'])} | {fmt_ms(r['p50_ms'])} "
                    f"| {fmt_ms(r['p99_ms'])} | {r['requests']} | {r['errors'] + r['non2xx']} |"
                )
    out.append("")
    if problems:
        out.append("**Errors reported by wrk** (these runs are suspect):")
        out.append("")
        out.extend(f"- {p}" for p in problems)
    else:
        out.append("wrk reported no socket errors and no non-2xx/3xx responses.")
    out.append("")
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
