#!/usr/bin/env python3
"""Where each proxy's CPU goes, per request: Sentinel, nginx and HAProxy side by side.

    bench/profile.py            (as root; needs perf, wrk and the tools bench/run.sh installs)

Starts the one-worker layout of bench/run.py (each server pinned to SERVER_CPUS, wrk and the
backends to LOAD_CPUS) and, for each proxy scenario and system, runs the same wrk load twice:
once under `perf stat` (system calls and context switches per request) and once under
`perf record` (sampled user and kernel stacks' top frames). CPU time per request comes from
/proc, as in the benchmark; the profile splits it by binary and by symbol. Writes
bench/results/profile-STAMP.md and prints it.

Settings (environment): SCENARIOS (default "small close"), DURATION (seconds per run,
default 5), SERVER_CPUS, LOAD_CPUS, THREADS, SENTINEL_BIN, as for bench/run.py.
"""

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the benchmark's layout, processes and accounting)

SYSCALLS = ("recvfrom", "readv", "read", "sendto", "sendmsg", "writev", "write", "splice",
            "epoll_wait", "epoll_pwait", "epoll_ctl", "accept4", "close", "shutdown",
            "setsockopt", "getsockopt", "socket", "connect")
TOP_SYMBOLS = 12


def perf_ok():
    if not shutil.which("perf"):
        return "perf not found (package linux-perf or linux-tools for this kernel)"
    probe = subprocess.run(["perf", "stat", "-e", "raw_syscalls:sys_enter", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"perf cannot count system calls here: {probe.stderr.strip()[:200]}"
    return None


@functools.lru_cache(maxsize=None)
def countable(events):
    """The events this kernel and perf can count (some system calls have no tracepoint on
    some architectures, and perf refuses a whole list for one unknown event)."""
    return [e for e in events
            if subprocess.run(["perf", "stat", "-e", e, "true"], capture_output=True).returncode == 0]


def wrk_argv(layout, scenario, system, seconds, settings):
    url = f"http://127.0.0.1:{layout.ports[(system, scenario.kind)]}{scenario.path}"
    argv = [*layout.load_pin, "wrk", f"-t{min(settings.threads, scenario.connections)}",
            f"-c{scenario.connections}", f"-d{seconds}s"]
    if scenario.close:
        argv += ["-H", "Connection: close"]
    return argv + [url]


def requests_of(wrk_output):
    found = re.search(r"^\s*([0-9]+) requests in", wrk_output, re.M)
    return int(found.group(1)) if found else 0


def under_perf(perf_argv, layout, scenario, system, settings):
    """Run wrk while perf watches the server; returns (requests, server CPU seconds)."""
    process = layout.systems[(system, scenario.kind)]
    pids = ",".join(str(p) for p in process.pids())
    # perf starts before wrk and outlives it: its counts hold every request wrk counted.
    perf = subprocess.Popen([*perf_argv, "-p", pids, "--", "sleep", str(settings.duration + 2)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        cpu0 = run.proc_seconds(process.pids())
        out = subprocess.run(wrk_argv(layout, scenario, system, settings.duration, settings),
                             capture_output=True, text=True, timeout=settings.duration + 30)
        cpu = run.proc_seconds(process.pids()) - cpu0
        _, err = perf.communicate(timeout=60)
    finally:
        if perf.poll() is None:
            perf.kill()
            perf.wait()
    if perf.returncode != 0:
        sys.exit(f"[profile] error: perf failed: {err.strip()[:300]}")
    requests = requests_of(out.stdout)
    if out.returncode != 0 or requests == 0:
        sys.exit(f"[profile] error: wrk failed against {system}: {out.stdout[-300:]}")
    return requests, cpu


def counts(layout, scenario, system, settings, work):
    """System calls and context switches per request."""
    path = os.path.join(work, f"stat-{scenario.id}-{system}.csv")
    events = countable(("context-switches", "raw_syscalls:sys_enter",
                        *(f"syscalls:sys_enter_{name}" for name in SYSCALLS)))
    requests, _ = under_perf(["perf", "stat", "-x", ",", "-o", path, "-e", ",".join(events)],
                             layout, scenario, system, settings)
    per_request = {}
    with open(path) as f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) > 2 and re.fullmatch(r"[0-9.]+", fields[0]):
                name = fields[2].removeprefix("syscalls:sys_enter_")
                name = {"raw_syscalls:sys_enter": "all system calls"}.get(name, name)
                per_request[name] = float(fields[0]) / requests
    return per_request


def samples(layout, scenario, system, settings, work):
    """CPU µs per request, split by binary and by symbol (perf's sampled shares)."""
    data = os.path.join(work, f"perf-{scenario.id}-{system}.data")
    requests, cpu = under_perf(["perf", "record", "-F", "2999", "-o", data, "-q"],
                               layout, scenario, system, settings)
    us_per_request = 1e6 * cpu / requests

    def shares(sort):
        text = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", sort,
                               "--percent-limit", "0.5"], capture_output=True, text=True).stdout
        rows = []
        for line in text.splitlines():
            found = re.match(r"^\s+([0-9.]+)%\s+(.+?)\s*$", line)
            if found:
                rows.append((found.group(2), float(found.group(1)) / 100 * us_per_request))
        return rows

    # perf names a binary by its file name: the server's own code is the row of its binary.
    own = os.path.basename(os.path.realpath(layout.tools[system]))
    dso = shares("dso")
    return {"us_per_request": us_per_request,
            "own": sum(us for name, us in dso if name == own),
            "dso": [(name, us) for name, us in dso if name != own],
            "sym": shares("sym")}


def report(results, settings, facts):
    out = [f"# Where the CPU goes, per request ({facts['date']})", "",
           f"{facts['cpu']}; kernel {facts['kernel']}; Sentinel {facts['sentinel']}, "
           f"nginx {facts['nginx']}, HAProxy {facts['haproxy']}. One worker each, pinned to "
           f"CPU {settings.server_cpus}; wrk (-t{settings.threads}) and the backends on "
           f"CPU {settings.load_cpus}; {settings.duration} s per run. µs = CPU µs per request "
           "of the server under test (/proc), split by perf's samples.", ""]
    for sid, by_system in results.items():
        systems = list(by_system)
        scenario = run.SCENARIOS[sid]
        out += [f"## {scenario.label} ({scenario.connections} connections)", "",
                "| per request | " + " | ".join(systems) + " |",
                "|---|" + "---:|" * len(systems)]
        out.append("| CPU µs | " + " | ".join(f"{by_system[s]['us_per_request']:.1f}"
                                              for s in systems) + " |")
        out.append("| µs in the server's own code | " + " | ".join(
            f"{by_system[s]['own']:.1f}" for s in systems) + " |")
        binaries = []
        for s in systems:
            binaries += [name for name, _ in by_system[s]["dso"] if name not in binaries]
        for binary in binaries:
            out.append(f"| µs in {binary} | " + " | ".join(
                f"{sum(us for name, us in by_system[s]['dso'] if name == binary):.1f}"
                for s in systems) + " |")
        names = []
        for s in systems:
            for name, value in by_system[s]["counts"].items():
                if name not in names and (value >= 0.01 or name == "all system calls"):
                    names.append(name)
        for name in names:
            out.append(f"| {name} | " + " | ".join(
                f"{by_system[s]['counts'].get(name, 0.0):.2f}" for s in systems) + " |")
        out.append("")
        for s in systems:
            top = sorted(by_system[s]["sym"], key=lambda row: -row[1])[:TOP_SYMBOLS]
            out.append(f"{s}, top symbols (µs per request): " + "; ".join(
                f"`{name}` {us:.2f}" for name, us in top))
            out.append("")
    return "\n".join(out)


def main():
    if len(sys.argv) != 1:
        sys.exit(__doc__)
    problem = perf_ok()
    if problem:
        sys.exit(f"[profile] error: {problem}")
    os.environ.setdefault("SCENARIOS", "small close")
    settings = run.Settings.from_env()
    tools = run.find_tools()
    scenarios = [run.SCENARIOS[s] for s in settings.scenarios]
    if any(s.kind != "proxy" for s in scenarios):
        sys.exit("[profile] error: SCENARIOS takes proxy scenarios only (small, 64k, close, "
                 "small-512)")
    facts = run.machine_facts(tools)
    work = tempfile.mkdtemp(prefix="sentinel-profile.")
    os.chmod(work, 0o755)
    run.log(f"profile: servers' logs and perf data in {work} (removed when the report is written)")
    root = run.make_root(work)
    layout = run.Layout("one", settings, work, root, tools)
    results = {}
    try:
        layout.check(root, scenarios)
        for scenario in scenarios:
            results[scenario.id] = {}
            for system in ("sentinel", "nginx", "haproxy"):
                run.log(f"profile: {scenario.id} {system}")
                subprocess.run(wrk_argv(layout, scenario, system, 1, settings),
                               capture_output=True, timeout=60)  # warm-up
                profile = samples(layout, scenario, system, settings, work)
                profile["counts"] = counts(layout, scenario, system, settings, work)
                results[scenario.id][system] = profile
    finally:
        layout.stop()
    text = report(results, settings, facts)
    os.makedirs(run.RESULTS, exist_ok=True)
    path = os.path.join(run.RESULTS, f"profile-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.md")
    with open(path, "w") as f:
        f.write(text + "\n")
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    run.log(f"profile: {os.path.relpath(path, run.REPO)}")


if __name__ == "__main__":
    main()
