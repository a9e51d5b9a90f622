#!/usr/bin/env python3
"""Response cache: Sentinel against nginx `proxy_cache` and Varnish, side by side in one run
(issue 19).

Started by bench/cache.sh (which installs the tools and builds Sentinel); see bench/README.md.

One origin (this script, `--origin PORT`, a threaded HTTP/1.1 server) sits behind all three
caches, which run pinned to SERVER_CPUS; wrk runs on LOAD_CPUS. Per round, with the order of
the systems rotating:

- small:  cache hits of a 512-byte response (`public, max-age=86400`), 64 connections;
- 64k:    cache hits of a 64 KiB response, 64 connections;
- storm:  64 connections on one key that is fresh for MAX_AGE seconds (default 2) and takes
          the origin 100 ms to answer: the origin counts its requests for that key and the
          most it had in flight at once (coalescing works when that is 1).

Hits are checked: the origin must see no request for a hit scenario's path during its run.
Rows: Sentinel as nginx runs (access log off), Sentinel with its default logging (info, the
text access log on stderr, here to a file),
nginx (`proxy_cache` on disk, `proxy_cache_lock on`, upstream keep-alive, access log off) and
Varnish (its defaults: `-s malloc,256m`, its shared-memory log). Server CPU comes from /proc
(user + system of the server's processes).

Python 3 standard library, plus `wrk`, `nginx`, `varnishd`. Loopback only; ports are picked
at run time; every run is bounded in time; only processes this script started are stopped,
by PID. Environment:

    ROUNDS (3)  DURATION (5 s per run)  STORM (6 s)  MAX_AGE (2 s)
    SERVER_CPUS (0)  LOAD_CPUS (1)  SYSTEMS ("sentinel sentinel-defaults nginx varnish")
    SENTINEL (target/release/sentinel)  NGINX  VARNISHD

>>> expiries(6, 2)
3
>>> ratio_text(3.0, 1.5), ratio_text(None, 1.5), ratio_text(1.2, 1.5)
('3.00 (≥ 1.5: **met**)', '–', '1.20 (≥ 1.5: not met)')
"""

import http.server
import json
import math
import os
import resource
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as common  # noqa: E402  (bench/run.py: /proc accounting, processes, wrk parsing)

ALL_SYSTEMS = ("sentinel", "sentinel-defaults", "nginx", "varnish")
NAMES = {"sentinel": "Sentinel", "sentinel-defaults": "Sentinel, defaults",
         "nginx": "nginx proxy_cache", "varnish": "Varnish"}
SMALL = b"s" * 512
BIG = os.urandom(65536)
STORM_DELAY_S = 0.1


def env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def expiries(seconds, max_age):
    """Fresh periods a run of `seconds` spans: the least origin requests a cache can make."""
    return max(1, math.ceil(seconds / max_age))


def ratio_text(value, target):
    if value is None:
        return "–"
    return f"{value:.2f} (≥ {target:g}: {'**met**' if value >= target else 'not met'})"


# ---------------------------------------------------------------- the origin


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counts = {}
    in_flight = {}
    most_in_flight = {}
    lock = threading.Lock()
    max_age = 2

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/__stats":
            with Origin.lock:
                body = json.dumps({"counts": Origin.counts, "most": Origin.most_in_flight}).encode()
            return self.answer(body, "no-store", "application/json")
        with Origin.lock:
            Origin.counts[self.path] = Origin.counts.get(self.path, 0) + 1
            now = Origin.in_flight.get(self.path, 0) + 1
            Origin.in_flight[self.path] = now
            Origin.most_in_flight[self.path] = max(now, Origin.most_in_flight.get(self.path, 0))
        try:
            if url.path == "/small":
                self.answer(SMALL, "public, max-age=86400", "text/plain")
            elif url.path == "/64k":
                self.answer(BIG, "public, max-age=86400", "application/octet-stream")
            elif url.path == "/hot":
                time.sleep(STORM_DELAY_S)
                self.answer(b"h" * 256, f"max-age={Origin.max_age}", "text/plain")
            else:
                self.send_error(404)
        finally:
            with Origin.lock:
                Origin.in_flight[self.path] -= 1

    def answer(self, body, cache_control, content_type):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache_control)
        self.end_headers()
        self.wfile.write(body)


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def serve_origin(port):
    Origin.max_age = env_int("MAX_AGE", 2)
    ThreadingServer(("127.0.0.1", port), Origin).serve_forever()


def origin_stats(port):
    _, body = common.http_get(port, "/__stats")
    return json.loads(body)


# ---------------------------------------------------------------- the systems


def sentinel_conf(port, origin, defaults):
    # As nginx runs here: no access log, warnings only. Defaults: the bundled logging (info,
    # the text access log on stderr), as a user who adds a cache section gets it.
    logging = "" if defaults else 'logging:\n  level: "warn"\n  access_log: false\n'
    return f"""server:
  listen_addr: "127.0.0.1:{port}"
  max_requests_per_connection: 100000
  keepalive_timeout_ms: 120000
proxy:
  backends:
    - name: origin
      address: "127.0.0.1:{origin}"
cache:
  max_bytes: 268435456
  max_object_bytes: 8388608
{logging}"""


def nginx_conf(prefix, port, origin):
    return common.nginx_preamble(prefix, 1, 8192) + f"""    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=sentinel_bench:16m max_size=256m
                     inactive=1h use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{origin};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache sentinel_bench;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 5s;
        }}
    }}
}}
"""


class Systems:
    def __init__(self, work, systems, tools, server_pin, origin_port):
        self.ports = dict(zip(systems, common.free_ports(len(systems))))
        self.processes = {}
        try:
            for system in systems:
                self.start(work, system, tools, server_pin, origin_port)
            for system in systems:
                common.wait_http(self.processes[system], self.ports[system], "/small")
        except BaseException:
            self.stop()
            raise

    def start(self, work, system, tools, pin, origin):
        port = self.ports[system]
        log_path = os.path.join(work, f"{system}.log")
        if system.startswith("sentinel"):
            cfg = os.path.join(work, f"{system}.yaml")
            with open(cfg, "w") as f:
                f.write(sentinel_conf(port, origin, defaults=system == "sentinel-defaults"))
            argv = ["env", "-u", "LISTEN", "-u", "RUST_LOG", tools["sentinel"], "--config", cfg]
        elif system == "nginx":
            prefix = os.path.join(work, "nginx")
            os.makedirs(os.path.join(prefix, "tmp"))
            conf = os.path.join(prefix, "nginx.conf")
            with open(conf, "w") as f:
                f.write(nginx_conf(prefix, port, origin))
            argv = [tools["nginx"], "-p", prefix, "-c", conf, "-g", "daemon off;"]
        else:
            workdir = os.path.join(work, "varnish")
            os.makedirs(workdir)
            argv = [tools["varnishd"], "-F", "-j", "none", "-n", workdir,
                    "-a", f"127.0.0.1:{port}", "-b", f"127.0.0.1:{origin}",
                    "-s", "malloc,256m", "-T", "none"]
        self.processes[system] = common.Process(system, argv, log_path, pin)

    def stop(self):
        for process in self.processes.values():
            process.stop()


# ---------------------------------------------------------------- measurements


def run_wrk(process, port, path, connections, seconds, load_pin, out_path):
    argv = [*load_pin, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
            f"http://127.0.0.1:{port}{path}"]
    cpu0 = common.proc_seconds(process.pids())
    busy0, total0 = common.machine_seconds()
    with open(out_path, "wb") as out:
        wrk = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(wrk.pid, 0)
        wrk.returncode = os.waitstatus_to_exitcode(status)
    busy1, total1 = common.machine_seconds()
    server_s = common.proc_seconds(process.pids()) - cpu0
    if not process.alive():
        sys.exit(f"[bench] error: {process.name} died during a run (log: {process.log_path})")
    with open(out_path, encoding="utf-8", errors="replace") as f:
        result = common.parse_wrk(f.read())
    if wrk.returncode != 0 or result is None or result["errors"] or result["non2xx"]:
        sys.exit(f"[bench] error: wrk failed or saw errors (output: {out_path})")
    client_s = usage.ru_utime + usage.ru_stime
    result.update(server_cpu_s=server_s,
                  per_cpu_s=result["requests"] / server_s if server_s > 0 else None,
                  other_pct=max(0.0, 100.0 * (busy1 - busy0 - server_s - client_s)
                                / max(total1 - total0, 1e-9)))
    return result


def get_as_wrk(port, path):
    """(status, body) of GET path with the Host wrk sends: Varnish keys on it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                  .encode())
        data = bytearray()
        while chunk := s.recv(1 << 16):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, body


def hit_run(systems, system, path, seconds, load_pin, origin, out_path):
    port = systems.ports[system]
    for _ in range(2):  # fill, then make sure the next one is a hit
        status, _ = get_as_wrk(port, path)
        if status != 200:
            sys.exit(f"[bench] error: {system} answered {status} for {path}")
    before = origin_stats(origin)["counts"].get(path, 0)
    result = run_wrk(systems.processes[system], port, path, 64, seconds, load_pin, out_path)
    result["origin_requests"] = origin_stats(origin)["counts"].get(path, 0) - before
    return result


def storm_run(systems, system, rnd, seconds, load_pin, origin, out_path):
    path = f"/hot?system={system}&round={rnd}"
    result = run_wrk(systems.processes[system], systems.ports[system], path, 64, seconds,
                     load_pin, out_path)
    stats = origin_stats(origin)
    result["origin_requests"] = stats["counts"].get(path, 0)
    result["most_in_flight"] = stats["most"].get(path, 0)
    return result


# ---------------------------------------------------------------- report


def report(results):
    med = common.median
    systems = results["systems"]
    runs = results["runs"]
    lines = ["# Response cache: Sentinel, nginx proxy_cache and Varnish (`bench/cache.sh`)", "",
             f"{results['date']}. Command: `{results['command']}`", "",
             f"Cache hits per server CPU-second, median over {results['rounds']} rounds; p99 in ms "
             "(wrk, 64 connections). Ratios are Sentinel's (access log off) over the anchor's, "
             "median of the per-round ratios.", "",
             "| scenario | " + " | ".join(NAMES[s] for s in systems) + " | S/nginx | S/Varnish |",
             "|---|" + "---:|" * len(systems) + "---|---|"]
    for scenario in ("small", "64k"):
        cells = []
        for system in systems:
            rows = [r for r in runs if r["scenario"] == scenario and r["system"] == system]
            cells.append(f"{common.fmt(med([r['per_cpu_s'] for r in rows]))} "
                         f"(p99 {common.fmt(med([r['p99_ms'] for r in rows]), '.2f')})")
        ratios = {}
        for anchor in ("nginx", "varnish"):
            per_round = []
            for rnd in range(1, results["rounds"] + 1):
                pair = {r["system"]: r["per_cpu_s"] for r in runs
                        if r["scenario"] == scenario and r["round"] == rnd}
                if pair.get("sentinel") and pair.get(anchor):
                    per_round.append(pair["sentinel"] / pair[anchor])
            ratios[anchor] = med(per_round)
        lines.append(f"| {scenario} hits | " + " | ".join(cells) + f" | "
                     f"{ratio_text(ratios['nginx'], 1.5)} | {ratio_text(ratios['varnish'], 1.0)} |")
    lines += ["", f"Miss storm: 64 connections on one key fresh for {results['max_age']} s, the "
              f"origin taking {STORM_DELAY_S * 1000:.0f} ms; {results['storm_s']} s per run, so at "
              f"least {expiries(results['storm_s'], results['max_age'])} origin requests. Median "
              "over the rounds.", "",
              "| system | origin requests | most in flight at once | requests served | p99 ms |",
              "|---|---:|---:|---:|---:|"]
    for system in systems:
        rows = [r for r in runs if r["scenario"] == "storm" and r["system"] == system]
        if rows:
            lines.append(f"| {NAMES[system]} | {common.fmt(med([r['origin_requests'] for r in rows]))} | "
                         f"{common.fmt(med([r['most_in_flight'] for r in rows]))} | "
                         f"{common.fmt(med([r['requests'] for r in rows]))} | "
                         f"{common.fmt(med([r['p99_ms'] for r in rows]), '.1f')} |")
    missed = [r for r in runs if r["scenario"] != "storm" and r["origin_requests"]]
    lines += ["", f"Hit runs in which the origin saw a request: {len(missed)} of "
              f"{sum(1 for r in runs if r['scenario'] != 'storm')}."]
    disturbed = [r for r in runs if r["other_pct"] > common.OTHER_MAX]
    lines.append(f"Runs disturbed by other processes (> {common.OTHER_MAX:g} % of the machine): "
                 f"{len(disturbed)} of {len(runs)}.")
    lines += ["", f"Machine: {results['machine']}. Versions: {results['versions']}."]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--origin":
        serve_origin(int(sys.argv[2]))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        with open(sys.argv[2], encoding="utf-8") as f:
            print(report(json.load(f)))
        return
    if len(sys.argv) != 1:
        sys.exit(__doc__)
    rounds, duration = env_int("ROUNDS", 3), env_int("DURATION", 5)
    storm_s, max_age = env_int("STORM", 6), env_int("MAX_AGE", 2)
    systems = tuple(os.environ.get("SYSTEMS", " ".join(ALL_SYSTEMS)).split())
    if any(s not in ALL_SYSTEMS for s in systems) or min(rounds, duration, storm_s, max_age) < 1:
        sys.exit(f"[bench] error: SYSTEMS takes {' '.join(ALL_SYSTEMS)}; the numbers must be ≥ 1")
    tools = {"sentinel": os.environ.get("SENTINEL", os.path.join(common.REPO, "target", "release", "sentinel")),
             "nginx": os.environ.get("NGINX") or shutil.which("nginx") or "/usr/sbin/nginx",
             "varnishd": os.environ.get("VARNISHD") or shutil.which("varnishd") or "/usr/sbin/varnishd"}
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"[bench] error: {tool} not found; bench/cache.sh installs it")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server_pin = ("taskset", "-c", os.environ.get("SERVER_CPUS", "0"))
    load_pin = ("taskset", "-c", os.environ.get("LOAD_CPUS", "1"))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    os.makedirs(common.RESULTS, exist_ok=True)
    raw_dir = os.path.join(common.RESULTS, f"cache-{stamp}")
    os.makedirs(raw_dir)
    work = tempfile.mkdtemp(prefix="sentinel-cache-bench.")
    os.chmod(work, 0o755)
    (origin_port,) = common.free_ports(1)
    origin = common.Process("origin", ["python3", os.path.abspath(__file__), "--origin", str(origin_port)],
                            os.path.join(work, "origin.log"), load_pin)
    servers = None
    versions = subprocess.run([tools["sentinel"], "--version"], capture_output=True, text=True).stdout.strip()
    versions += "; " + subprocess.run([tools["nginx"], "-v"], capture_output=True, text=True).stderr.strip()
    versions += "; " + subprocess.run([tools["varnishd"], "-V"], capture_output=True, text=True).stderr.splitlines()[0]
    command = " ".join(f"{k}={os.environ[k]}" for k in ("ROUNDS", "DURATION", "STORM", "MAX_AGE", "SYSTEMS")
                       if k in os.environ)
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "command": (command + " " if command else "") + "bench/cache.sh",
               "rounds": rounds, "systems": systems, "storm_s": storm_s, "max_age": max_age,
               "runs": [], "machine": f"{common.NCPU} CPUs, load average {common.load_average()}",
               "versions": versions}
    try:
        common.wait_http(origin, origin_port, "/__stats")
        servers = Systems(work, systems, tools, server_pin, origin_port)
        for rnd in range(1, rounds + 1):
            order = systems if rnd % 2 else tuple(reversed(systems))
            for scenario in ("small", "64k", "storm"):
                for system in order:
                    out = os.path.join(raw_dir, f"{scenario}-{system}-{rnd}.txt")
                    if scenario == "storm":
                        result = storm_run(servers, system, rnd, storm_s, load_pin, origin_port, out)
                    else:
                        result = hit_run(servers, system, "/" + scenario, duration, load_pin,
                                         origin_port, out)
                    result.update(scenario=scenario, system=system, round=rnd)
                    results["runs"].append(result)
                    log(f"round {rnd}/{rounds} {scenario:<5} {system:<17} "
                        f"{common.fmt(result['per_cpu_s'])} per CPU-s, p99 {result['p99_ms']} ms, "
                        f"origin {result['origin_requests']} (other {result['other_pct']:.0f} %)")
    finally:
        if servers is not None:
            servers.stop()
        origin.stop()
    with open(os.path.join(common.RESULTS, f"cache-{stamp}.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = report(results)
    with open(os.path.join(common.RESULTS, f"cache-{stamp}.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    log(f"report: bench/results/cache-{stamp}.md (raw output in bench/results/cache-{stamp}/)")


if __name__ == "__main__":
    main()
