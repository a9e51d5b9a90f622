#!/usr/bin/env python3
"""Summarize the wrk runs of bench/static.sh into a markdown report.

Usage: summarize.py MANIFEST FACTS [CLK_TCK [QUIET_MAX [OTHER_MAX]]]

MANIFEST is a tab-separated file, one line per wrk run: size, server, round, path of the
saved wrk output, then optionally five CPU figures measured around the run: machine busy %
over one second just before it, and, in clock ticks during it, the server's CPU (nginx: master
and workers), wrk's CPU, the machine's busy CPU and the machine's total CPU capacity.
FACTS is a file of "key<TAB>value" lines (machine facts, versions, the command) printed at
the top of the report. CLK_TCK (default 100) converts ticks to seconds; runs during which other
processes used more than OTHER_MAX % (default 10) of the CPU are flagged as disturbed, and medians are also given
without them. QUIET_MAX (default 20) is only quoted in the report. The report goes to stdout.

Python 3 standard library only.
"""

import re
import statistics
import sys

SERVERS = ("sentinel", "nginx")
NAN = float("nan")
# A run is flagged when processes other than wrk and the server used more than this share of
# all CPUs while it ran (default; static.sh passes its own).
OTHER_CPU_FLAG_PCT = 10.0

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
    if len(argv) not in (3, 4, 5, 6):
        sys.stderr.write(__doc__)
        return 2
    manifest, facts_path = argv[1], argv[2]
    clk_tck = float(argv[3]) if len(argv) > 3 else 100.0
    quiet_max = float(argv[4]) if len(argv) > 4 else 20.0
    other_max = float(argv[5]) if len(argv) > 5 else OTHER_CPU_FLAG_PCT

    runs = {}  # (size, server) -> {round: result}
    sizes = []
    with open(manifest, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line:
                continue
            size, server, rnd, path, *cpu = line.split("\t")
            if size not in sizes:
                sizes.append(size)
            result = parse_wrk(path)
            if len(cpu) == 5:
                pre_busy, server_t, wrk_t, busy_t, total_t = (float(x) for x in cpu)
                result["pre_busy_pct"] = pre_busy
                # CPU seconds the server spent per request, in microseconds.
                result["cpu_us_per_req"] = (
                    server_t / clk_tck * 1e6 / result["requests"] if result["requests"] else NAN
                )
                result["server_cpu_pct"] = 100.0 * server_t / total_t if total_t else NAN
                result["wrk_cpu_pct"] = 100.0 * wrk_t / total_t if total_t else NAN
                result["other_cpu_pct"] = (
                    max(0.0, 100.0 * (busy_t - server_t - wrk_t) / total_t) if total_t else NAN
                )
            runs.setdefault((size, server), {})[int(rnd)] = result

    facts = []
    with open(facts_path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line:
                key, _, value = line.partition("\t")
                facts.append((key, value))

    have_cpu = all(
        "cpu_us_per_req" in r for by_round in runs.values() for r in by_round.values()
    )

    def disturbed(r):
        return have_cpu and r["other_cpu_pct"] > other_max

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
    out.extend(main_table(runs, sizes, lambda r: True))
    out.append("")

    n_disturbed = sum(disturbed(r) for by_round in runs.values() for r in by_round.values())
    if n_disturbed:
        clean = {
            key: {i: r for i, r in by_round.items() if not disturbed(r)}
            for key, by_round in runs.items()
        }
        if all(clean.get((size, server)) for size in sizes for server in SERVERS):
            out.append(
                f"The same over undisturbed runs only ({n_disturbed} run(s) where other processes "
                f"used more than {other_max:.0f} % of the CPU left out; per-round "
                "ratios only for rounds where both runs are undisturbed; n = runs kept per "
                "server):"
            )
            out.append("")
            out.extend(main_table(clean, sizes, lambda r: True, show_n=True))
            out.append("")
        else:
            out.append(
                "Too many disturbed runs to give medians over undisturbed runs only "
                "(some file and server has none left)."
            )
            out.append("")

    transfer_sizes = [size for size in sizes if size.endswith("m")]
    if transfer_sizes:
        out.append("Transfer/sec as reported by wrk (MiB/s, median over rounds):")
        out.append("")
        out.append("| file | sentinel MiB/s | nginx MiB/s | ratio |")
        out.append("|---|---:|---:|---:|")
        for size in transfer_sizes:
            s_mib = median_of(runs, size, "sentinel", "transfer_Bps") / 1024**2
            n_mib = median_of(runs, size, "nginx", "transfer_Bps") / 1024**2
            out.append(f"| {size} | {s_mib:,.0f} | {n_mib:,.0f} | {s_mib / n_mib:.2f} |")
        out.append("")

    if have_cpu:
        out.append(
            "Server CPU time per request (µs; nginx = master + workers; median over rounds). "
            "Less sensitive to machine noise than req/s; ratio above 1 means Sentinel spends "
            "more CPU per request:"
        )
        out.append("")
        out.append(
            "| file | sentinel µs/req | nginx µs/req | ratio | sentinel CPU % | nginx CPU % |"
        )
        out.append("|---|---:|---:|---:|---:|---:|")
        for size in sizes:
            s_us = median_of(runs, size, "sentinel", "cpu_us_per_req")
            n_us = median_of(runs, size, "nginx", "cpu_us_per_req")
            s_pct = median_of(runs, size, "sentinel", "server_cpu_pct")
            n_pct = median_of(runs, size, "nginx", "server_cpu_pct")
            out.append(
                f"| {size} | {s_us:.1f} | {n_us:.1f} | {s_us / n_us:.2f} "
                f"| {s_pct:.0f} | {n_pct:.0f} |"
            )
        out.append("")
        out.append(
            "CPU % is the share of all cores (100 % = every core busy) used by the server "
            "during its runs; wrk takes most of the rest."
        )
        out.append("")

    out.append("Every run:")
    out.append("")
    if have_cpu:
        out.append(
            "| file | server | round | req/s | p50 ms | p99 ms | requests | errors "
            "| server µs/req | server CPU % | wrk CPU % | other CPU % | busy before % |"
        )
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    else:
        out.append("| file | server | round | req/s | p50 ms | p99 ms | requests | errors |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|")
    problems = []
    for size in sizes:
        for server in SERVERS:
            for i, r in sorted(runs.get((size, server), {}).items()):
                row = (
                    f"| {size} | {server} | {i} | {fmt_rps(r['rps'])} | {fmt_ms(r['p50_ms'])} "
                    f"| {fmt_ms(r['p99_ms'])} | {r['requests']} | {r['errors'] + r['non2xx']} |"
                )
                if have_cpu:
                    other = f"{r['other_cpu_pct']:.0f}"
                    if disturbed(r):
                        other = f"**{other}**"
                    row += (
                        f" {r['cpu_us_per_req']:.1f} | {r['server_cpu_pct']:.0f} "
                        f"| {r['wrk_cpu_pct']:.0f} | {other} | {r['pre_busy_pct']:.0f} |"
                    )
                out.append(row)
                if r["errors"] or r["non2xx"]:
                    problems.append(
                        f"{size} {server} round {i}: {r['errors']} socket errors, "
                        f"{r['non2xx']} non-2xx/3xx responses"
                    )
    out.append("")
    if have_cpu:
        out.append(
            "\"other CPU %\" = machine busy time (user+nice+system+irq+softirq over all cores) "
            "minus the server's and wrk's, during the run: work by unrelated processes that "
            f"competed for the cores; in bold (run disturbed) above {other_max:.0f} %. "
            "\"busy before %\" = machine busy over one second just before the run (the script "
            f"waits up to QUIET_WAIT seconds for it to drop to {quiet_max:.0f} % or less)."
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


def median_of(runs, size, server, key):
    return statistics.median(r[key] for r in runs.get((size, server), {}).values())


def main_table(runs, sizes, keep, show_n=False):
    """The headline table: req/s medians and ratios, latency medians, per file size."""
    n_head = " n |" if show_n else ""
    n_rule = "---:|" if show_n else ""
    lines = [
        f"| file |{n_head} sentinel req/s | nginx req/s | ratio of medians "
        "| median of per-round ratios | sentinel p50 ms | nginx p50 ms | sentinel p99 ms "
        "| nginx p99 ms |",
        f"|---|{n_rule}---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        s_runs = {i: r for i, r in runs.get((size, "sentinel"), {}).items() if keep(r)}
        n_runs = {i: r for i, r in runs.get((size, "nginx"), {}).items() if keep(r)}
        s_rps = statistics.median(r["rps"] for r in s_runs.values())
        n_rps = statistics.median(r["rps"] for r in n_runs.values())
        paired = sorted(set(s_runs) & set(n_runs))
        per_round = (
            f"{statistics.median(s_runs[i]['rps'] / n_runs[i]['rps'] for i in paired):.2f}"
            if paired
            else "n/a"
        )
        if show_n:
            per_round += f" ({len(paired)} rounds)"
        lat = {
            (server, key): statistics.median(r[key] for r in server_runs.values())
            for server, server_runs in (("sentinel", s_runs), ("nginx", n_runs))
            for key in ("p50_ms", "p99_ms")
        }
        n_cell = f" {len(s_runs)}/{len(n_runs)} |" if show_n else ""
        lines.append(
            f"| {size} |{n_cell} {fmt_rps(s_rps)} | {fmt_rps(n_rps)} | {s_rps / n_rps:.2f} "
            f"| {per_round} "
            f"| {fmt_ms(lat[('sentinel', 'p50_ms')])} | {fmt_ms(lat[('nginx', 'p50_ms')])} "
            f"| {fmt_ms(lat[('sentinel', 'p99_ms')])} | {fmt_ms(lat[('nginx', 'p99_ms')])} |"
        )
    return lines

if __name__ == "__main__":
    sys.exit(main(sys.argv))
