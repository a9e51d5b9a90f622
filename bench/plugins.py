#!/usr/bin/env python3
"""Plugins: proxy-small through Sentinel with one header-adding proxy-wasm plugin against
the same Sentinel without plugins, side by side in one run (issue 21).

Started by bench/plugins.sh (which installs the tools, builds Sentinel and the sample
plugin); see bench/README.md.

One nginx backend serves a 13-byte file on LOAD_CPUS; the three Sentinels (one worker
each) run pinned to SERVER_CPUS, one at a time, their order alternating per round; wrk runs
on LOAD_CPUS with 64 keep-alive connections. The plugins add a request header and a
response header to every request: examples/plugins/assemblyscript (the AssemblyScript SDK;
a response is checked to carry its header) and examples/plugins/wat/add_header.wat (the
same by hand, no SDK: what the host itself costs). Server CPU comes from /proc.

Python 3 standard library, plus `wrk` and `nginx`. Loopback only; ports are picked at run
time; every run is bounded in time; only processes this script started are stopped, by PID.
Environment:

    ROUNDS (3)  DURATION (5 s per run)  SERVER_CPUS (0)  LOAD_CPUS (1)
    SENTINEL (target/release/sentinel)  NGINX  PLUGIN, WAT_PLUGIN (the .wasm files)

>>> verdict(0.9), verdict(0.8), verdict(None)
('0.90 (≥ 0.85: **met**)', '0.80 (≥ 0.85: not met)', '–')
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as common  # noqa: E402  (bench/run.py: /proc accounting, processes, wrk parsing)

TARGET = 0.85
CONNECTIONS = 64
SYSTEMS = ("none", "wat", "plugin")
NAMES = {"none": "Sentinel, no plugin",
         "wat": "Sentinel, one header plugin (hand-written WebAssembly)",
         "plugin": "Sentinel, one header plugin (AssemblyScript SDK)"}


def env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def verdict(ratio):
    if ratio is None:
        return "–"
    met = "**met**" if ratio >= TARGET else "not met"
    return f"{ratio:.2f} (≥ {TARGET}: {met})"


def sentinel_conf(port, backend_port, plugin, wat_plugin=None):
    plugins = ""
    if plugin:
        plugins = f"""plugins:
  - name: "example"
    path: "{plugin}"
    root_id: "example"
    configuration: "bench"
"""
    elif wat_plugin:
        plugins = f"""plugins:
  - name: "wat"
    path: "{wat_plugin}"
"""
    return f"""server:
  listen_addr: "127.0.0.1:{port}"
  workers: 1
  max_requests_per_connection: 100000
  keepalive_timeout_ms: 120000
logging:
  level: "warn"
  access_log: false
proxy:
  backends:
    - name: b1
      address: "127.0.0.1:{backend_port}"
{plugins}"""


def run_wrk(process, port, seconds, load_pin, out_path):
    """One wrk run against /small with the server's CPU seconds; exits when something broke."""
    argv = [*load_pin, "wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
            f"http://127.0.0.1:{port}/small"]
    user0, system0 = common.proc_times(process.pids())
    with open(out_path, "wb") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + 30)
    user1, system1 = common.proc_times(process.pids())
    if not process.alive():
        sys.exit(f"[bench] error: {process.name} died during a run (log: {process.log_path})")
    with open(out_path, encoding="utf-8", errors="replace") as f:
        result = common.parse_wrk(f.read())
    if done.returncode != 0 or result is None:
        sys.exit(f"[bench] error: wrk failed against {process.name} (output: {out_path})")
    server_s = user1 - user0 + system1 - system0
    result["req_per_cpu_s"] = result["requests"] / server_s if server_s > 0 else None
    return result


def main():
    rounds, duration = env_int("ROUNDS", 3), env_int("DURATION", 5)
    server_cpus = os.environ.get("SERVER_CPUS", "0")
    load_cpus = os.environ.get("LOAD_CPUS", "1")
    sentinel = os.environ.get("SENTINEL", "target/release/sentinel")
    nginx = os.environ.get("NGINX") or shutil.which("nginx")
    plugin = os.path.abspath(os.environ.get("PLUGIN", ""))
    wat_plugin = os.path.abspath(os.environ.get("WAT_PLUGIN", ""))
    if not nginx:
        sys.exit("[bench] error: nginx not found")
    for module, name in ((plugin, "PLUGIN"), (wat_plugin, "WAT_PLUGIN")):
        if not os.path.isfile(module):
            sys.exit(f"[bench] error: no plugin module at {module!r} ({name})")
    server_pin = ["taskset", "-c", server_cpus]
    load_pin = ["taskset", "-c", load_cpus]
    work = tempfile.mkdtemp(prefix="sentinel-bench-plugins-")
    processes = []
    try:
        root = os.path.join(work, "root")
        os.makedirs(os.path.join(work, "nginx", "tmp"))
        os.makedirs(root)
        with open(os.path.join(root, "small"), "wb") as f:
            f.write(b"hello, proxy\n")
        # nginx's workers drop to an unprivileged user: the file must be theirs to read.
        for path in (work, root):
            os.chmod(path, 0o755)
        os.chmod(os.path.join(root, "small"), 0o644)
        backend_port, none_port, wat_port, plugin_port = common.free_ports(4)
        prefix = os.path.join(work, "nginx")
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(common.backend_nginx_conf(prefix, root, [backend_port], 1))
        backend = common.Process("nginx", [nginx, "-p", prefix, "-c", conf, "-g", "daemon off;"],
                                 os.path.join(work, "nginx.log"), load_pin)
        processes.append(backend)
        common.wait_http(backend, backend_port, "/small")
        ports = {"none": none_port, "wat": wat_port, "plugin": plugin_port}
        servers = {}
        for system in SYSTEMS:
            path = os.path.join(work, f"{system}.yaml")
            with open(path, "w") as f:
                f.write(sentinel_conf(ports[system], backend_port,
                                      plugin if system == "plugin" else None,
                                      wat_plugin if system == "wat" else None))
            process = common.Process(f"sentinel-{system}", [sentinel, "--config", path],
                                     os.path.join(work, f"{system}.log"), server_pin)
            processes.append(process)
            common.wait_http(process, ports[system], "/small")
            servers[system] = process
        status, _ = common.http_get(plugin_port, "/small")
        if status != 200:
            sys.exit(f"[bench] error: a request through the plugin answered {status}")
        with socket_head(plugin_port) as head:
            if b"x-example-response: bench" not in head.lower():
                sys.exit("[bench] error: the plugin's header is missing from a response")
        results = {system: [] for system in SYSTEMS}
        for index in range(rounds):
            order = SYSTEMS if index % 2 == 0 else tuple(reversed(SYSTEMS))
            for system in order:
                out = os.path.join(work, f"wrk-{system}-{index}.txt")
                result = run_wrk(servers[system], ports[system], duration, load_pin, out)
                if result["errors"] or result["non2xx"]:
                    sys.exit(f"[bench] error: {system} had failed requests ({out})")
                results[system].append(result)
                log(f"round {index + 1} {system}: {result['rps']:,.0f} req/s, "
                    f"{result['req_per_cpu_s'] or 0:,.0f} req/CPU-s")
        report(results, rounds, duration)
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)


class socket_head:
    """The response head of GET /small on a fresh connection, as a context manager."""

    def __init__(self, port):
        self.port = port

    def __enter__(self):
        import socket
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"GET /small HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.split(b"\r\n\r\n", 1)[0]

    def __exit__(self, *exc):
        return False


def report(results, rounds, duration):
    def median(values):
        values = sorted(v for v in values if v is not None)
        return values[len(values) // 2] if values else None

    per_cpu = {s: median(r["req_per_cpu_s"] for r in results[s]) for s in SYSTEMS}
    rps = {s: median(r["rps"] for r in results[s]) for s in SYSTEMS}
    p99 = {s: median(r["p99_ms"] for r in results[s]) for s in SYSTEMS}
    def ratio_of(system):
        if per_cpu[system] and per_cpu["none"]:
            return per_cpu[system] / per_cpu["none"]
        return None
    print(f"## Plugins: proxy-small, {rounds} rounds × {duration} s, {CONNECTIONS} connections\n")
    print("| System | req/s | req/CPU-s | p99 ms |")
    print("|---|---:|---:|---:|")
    for system in SYSTEMS:
        print(f"| {NAMES[system]} | {rps[system] or 0:,.0f} | {per_cpu[system] or 0:,.0f} | "
              f"{p99[system] or 0:.2f} |")
    print(f"\nreq/CPU-s with the SDK plugin / without: {verdict(ratio_of('plugin'))}")
    print(f"req/CPU-s with the hand-written plugin / without: {verdict(ratio_of('wat'))}")


if __name__ == "__main__":
    main()
