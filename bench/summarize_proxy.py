#!/usr/bin/env python3
"""Summarize the wrk runs of bench/proxy.sh into a markdown report.

Usage: summarize_proxy.py MANIFEST FACTS [CLK_TCK [NCPU [QUIET_MAX [OTHER_MAX]]]]

MANIFEST is a tab-separated file, one line per (scenario, server, round):
    scenario, server, round, "ok", path of the saved wrk output, then six CPU figures measured
    around the run: machine busy % over one second just before it, and, in clock ticks during
    it, the proxy's CPU (nginx: master and workers), wrk's CPU, the backend nginx's CPU, the
    machine's busy CPU and the machine's total CPU capacity;
or  scenario, server, round, "n/a", reason: a run that was not measured (Sentinel not
    proxying yet, not starting, failing under load); shown as n/a.
FACTS is a file of "key<TAB>value" lines (machine facts, versions, the command) printed at
the top of the report. CLK_TCK (default 100) converts ticks to seconds; NCPU (default 1) is
the machine's CPU count, used to express CPU time as cores busy. Runs during which other
processes used more than OTHER_MAX % (default 10) of all CPUs are flagged as disturbed, and
medians are also given without them. QUIET_MAX (default 20) is only quoted in the report.
The report goes to stdout.

Python 3 standard library only; the wrk output parser is shared with summarize.py.
"""

import math
import os
import statistics
import sys

# Import the sibling module without leaving a __pycache__ directory in the repository.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summarize import fmt_ms, fmt_rps, parse_wrk  # noqa: E402

SERVERS = ("sentinel", "nginx")
NAN = float("nan")
NA = "n/a"


def fmt(value, spec):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    return format(value, spec)


def fmt_or_na(value, formatter):
    if value is None or math.isnan(value):
        return NA
    return formatter(value)


def ratio(a, b):
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return None
    return a / b


def median_or_none(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else None


def read_manifest(path, clk_tck, ncpu):
    runs = {}  # (scenario, server) -> {round: result}
    missing = {}  # (scenario, server) -> {round: reason}
    scenarios = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line:
                continue
            scenario, server, rnd, status, rest = line.split("\t", 4)
            if scenario not in scenarios:
                scenarios.append(scenario)
            if status != "ok":
                missing.setdefault((scenario, server), {})[int(rnd)] = rest
                continue
            out_path, *cpu = rest.split("\t")
            result = parse_wrk(out_path)
            pre_busy, server_t, wrk_t, backend_t, busy_t, total_t = (float(x) for x in cpu)
            seconds = total_t / ncpu / clk_tck  # wall-clock length of the run
            requests = result["requests"]
            server_s = server_t / clk_tck
            result["pre_busy_pct"] = pre_busy
            # CPU seconds the proxy spent per request, in microseconds, and its inverse.
            result["cpu_us_per_req"] = server_s * 1e6 / requests if requests else NAN
            result["req_per_cpu_s"] = requests / server_s if server_s else NAN
            # CPU use as cores busy on average (1.0 = one core fully busy).
            result["server_cores"] = server_s / seconds if seconds else NAN
            result["wrk_cores"] = wrk_t / clk_tck / seconds if seconds else NAN
            result["backend_cores"] = backend_t / clk_tck / seconds if seconds else NAN
            result["other_cpu_pct"] = (
                max(0.0, 100.0 * (busy_t - server_t - wrk_t - backend_t) / total_t)
                if total_t
                else NAN
            )
            runs.setdefault((scenario, server), {})[int(rnd)] = result
    return scenarios, runs, missing


def headline_table(runs, scenarios, show_n=False):
    """One row per scenario: medians over rounds of both proxies, and sentinel/nginx ratios."""
    n_head = " n (sentinel/nginx) |" if show_n else ""
    n_rule = "---:|" if show_n else ""
    lines = [
        f"| scenario |{n_head} sentinel req/s | nginx req/s | req/s ratio "
        "| sentinel p50 ms | nginx p50 ms | sentinel p99 ms | nginx p99 ms "
        "| sentinel CPU µs/req | nginx CPU µs/req "
        "| sentinel req/CPU-s | nginx req/CPU-s | req/CPU-s ratio |",
        f"|---|{n_rule}---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in scenarios:
        med = {}
        for server in SERVERS:
            by_round = runs.get((scenario, server), {})
            for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "req_per_cpu_s"):
                med[(server, key)] = median_or_none(r[key] for r in by_round.values())
        n_cell = ""
        if show_n:
            n_cell = (
                f" {len(runs.get((scenario, 'sentinel'), {}))}"
                f"/{len(runs.get((scenario, 'nginx'), {}))} |"
            )
        rps_ratio = ratio(med[("sentinel", "rps")], med[("nginx", "rps")])
        eff_ratio = ratio(med[("sentinel", "req_per_cpu_s")], med[("nginx", "req_per_cpu_s")])
        lines.append(
            f"| {scenario} |{n_cell}"
            f" {fmt_or_na(med[('sentinel', 'rps')], fmt_rps)}"
            f" | {fmt_or_na(med[('nginx', 'rps')], fmt_rps)}"
            f" | {fmt(rps_ratio, '.2f')}"
            f" | {fmt_or_na(med[('sentinel', 'p50_ms')], fmt_ms)}"
            f" | {fmt_or_na(med[('nginx', 'p50_ms')], fmt_ms)}"
            f" | {fmt_or_na(med[('sentinel', 'p99_ms')], fmt_ms)}"
            f" | {fmt_or_na(med[('nginx', 'p99_ms')], fmt_ms)}"
            f" | {fmt(med[('sentinel', 'cpu_us_per_req')], '.1f')}"
            f" | {fmt(med[('nginx', 'cpu_us_per_req')], '.1f')}"
            f" | {fmt_or_na(med[('sentinel', 'req_per_cpu_s')], fmt_rps)}"
            f" | {fmt_or_na(med[('nginx', 'req_per_cpu_s')], fmt_rps)}"
            f" | {fmt(eff_ratio, '.2f')} |"
        )
    return lines


def paired_table(runs, scenarios):
    """Median of per-round ratios (each round's two runs paired) and CPU use in cores."""
    lines = [
        "| scenario | rounds paired | req/s ratio | req/CPU-s ratio "
        "| sentinel cores | nginx cores | wrk cores | backend cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in scenarios:
        s_runs = runs.get((scenario, "sentinel"), {})
        n_runs = runs.get((scenario, "nginx"), {})
        paired = sorted(set(s_runs) & set(n_runs))
        rps = median_or_none(ratio(s_runs[i]["rps"], n_runs[i]["rps"]) for i in paired)
        eff = median_or_none(
            ratio(s_runs[i]["req_per_cpu_s"], n_runs[i]["req_per_cpu_s"]) for i in paired
        )
        all_runs = list(s_runs.values()) + list(n_runs.values())
        lines.append(
            f"| {scenario} | {len(paired)} | {fmt(rps, '.2f')} | {fmt(eff, '.2f')}"
            f" | {fmt(median_or_none(r['server_cores'] for r in s_runs.values()), '.2f')}"
            f" | {fmt(median_or_none(r['server_cores'] for r in n_runs.values()), '.2f')}"
            f" | {fmt(median_or_none(r['wrk_cores'] for r in all_runs), '.2f')}"
            f" | {fmt(median_or_none(r['backend_cores'] for r in all_runs), '.2f')} |"
        )
    return lines


def main(argv):
    if len(argv) not in range(3, 8):
        sys.stderr.write(__doc__)
        return 2
    manifest, facts_path = argv[1], argv[2]
    clk_tck = float(argv[3]) if len(argv) > 3 else 100.0
    ncpu = float(argv[4]) if len(argv) > 4 else 1.0
    quiet_max = float(argv[5]) if len(argv) > 5 else 20.0
    other_max = float(argv[6]) if len(argv) > 6 else 10.0

    scenarios, runs, missing = read_manifest(manifest, clk_tck, ncpu)

    facts = []
    with open(facts_path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line:
                key, _, value = line.partition("\t")
                facts.append((key, value))

    def disturbed(r):
        return r["other_cpu_pct"] > other_max

    out = ["# Sentinel vs nginx: reverse proxy", ""]
    for key, value in facts:
        out.append(f"- **{key}**: {value}")
    out.append("")

    n_missing = sum(len(by_round) for by_round in missing.values())
    if n_missing:
        out.append(
            f"**{n_missing} run(s) were not measured and are shown as n/a** "
            "(reasons at the end of the report)."
        )
        out.append("")

    out.append(
        "Medians over rounds. req/s ratio = sentinel / nginx of the medians (above 1: Sentinel "
        "serves more requests per second). CPU µs/req = CPU time (user + system) of the proxy "
        "under test only (nginx: master + worker) divided by the requests wrk completed; "
        "req/CPU-s is its inverse, requests per second of proxy CPU, and its ratio above 1 "
        "means Sentinel needs less CPU per request. p50 / p99 are wrk's latencies in ms."
    )
    out.append("")
    out.extend(headline_table(runs, scenarios))
    out.append("")
    n_errors = sum(
        1 for by_round in runs.values() for r in by_round.values() if r["errors"] or r["non2xx"]
    )
    if n_errors:
        out.append(
            f"**wrk reported socket errors or non-2xx/3xx responses in {n_errors} run(s)**: "
            "their numbers are suspect (details at the end of the report)."
        )
        out.append("")

    out.append(
        "Median of per-round ratios (each round's Sentinel and nginx runs paired), and CPU "
        "use in cores (1.00 = one core busy for the whole run; medians):"
    )
    out.append("")
    out.extend(paired_table(runs, scenarios))
    out.append("")
    out.append(
        "A proxy well below the number of cores it may use was not the bottleneck: wrk and "
        "the backend (which share their own cores when pinned) were, and its req/s says "
        "little about the proxy; CPU µs/req and req/CPU-s still compare the two proxies' "
        "cost per request."
    )
    out.append("")

    n_disturbed = sum(disturbed(r) for by_round in runs.values() for r in by_round.values())
    if n_disturbed:
        clean = {
            key: {i: r for i, r in by_round.items() if not disturbed(r)}
            for key, by_round in runs.items()
        }
        out.append(
            f"The same over undisturbed runs only ({n_disturbed} run(s) where other processes "
            f"used more than {other_max:.0f} % of the CPU left out; n = runs kept per server):"
        )
        out.append("")
        out.extend(headline_table(clean, scenarios, show_n=True))
        out.append("")

    out.append("Every run:")
    out.append("")
    out.append(
        "| scenario | server | round | req/s | p50 ms | p99 ms | requests | errors "
        "| CPU µs/req | req/CPU-s | proxy cores | wrk cores | backend cores | other CPU % "
        "| busy before % |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    problems = []
    for scenario in scenarios:
        for server in SERVERS:
            rounds = sorted(
                set(runs.get((scenario, server), {})) | set(missing.get((scenario, server), {}))
            )
            for i in rounds:
                r = runs.get((scenario, server), {}).get(i)
                if r is None:
                    out.append(f"| {scenario} | {server} | {i} |" + " n/a |" * 12)
                    continue
                other = f"{r['other_cpu_pct']:.0f}"
                if disturbed(r):
                    other = f"**{other}**"
                out.append(
                    f"| {scenario} | {server} | {i} | {fmt_rps(r['rps'])} | {fmt_ms(r['p50_ms'])} "
                    f"| {fmt_ms(r['p99_ms'])} | {r['requests']} | {r['errors'] + r['non2xx']} "
                    f"| {fmt(r['cpu_us_per_req'], '.1f')} "
                    f"| {fmt_or_na(r['req_per_cpu_s'], fmt_rps)} "
                    f"| {r['server_cores']:.2f} | {r['wrk_cores']:.2f} "
                    f"| {r['backend_cores']:.2f} | {other} | {r['pre_busy_pct']:.0f} |"
                )
                if r["errors"] or r["non2xx"]:
                    problems.append(
                        f"{scenario}, {server}, round {i}: {r['errors']} socket errors, "
                        f"{r['non2xx']} non-2xx/3xx responses"
                    )
    out.append("")
    out.append(
        "\"other CPU %\" = machine busy time (user+nice+system+irq+softirq over all cores) "
        "minus the proxy's, wrk's and the backend's, during the run, as a share of all cores: "
        "work by unrelated processes plus kernel network work not charged to any process; in "
        f"bold (run disturbed) above {other_max:.0f} %. \"busy before %\" = machine busy over "
        "one second just before the run (the script waits up to QUIET_WAIT seconds for it to "
        f"drop to {quiet_max:.0f} % or less)."
    )
    out.append("")
    if n_missing:
        out.append("**Runs not measured (n/a):**")
        out.append("")
        for scenario in scenarios:
            for server in SERVERS:
                for i, reason in sorted(missing.get((scenario, server), {}).items()):
                    out.append(f"- {scenario}, {server}, round {i}: {reason}")
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
