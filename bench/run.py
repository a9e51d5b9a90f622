#!/usr/bin/env python3
"""The combined benchmark: Sentinel, nginx and HAProxy side by side, in one run.

Started by bench/run.sh (which installs the tools and builds Sentinel); see bench/README.md.

    run.py                 the whole benchmark, settings from the environment (below)
    run.py --report FILE [--docs]
                           re-render the report of an earlier run from its JSON results
                           (--docs: and put its summary into docs/BENCHMARKS.md)
    run.py --sink PORT     internal: the upload sink used by the transfer scenario

Every system serves the same files and sits in front of the same backends (one separate
nginx on three loopback ports). For each layout (one worker pinned to one core, then every
core), each round runs every scenario once per system, the order of the systems rotating from
round to round. Around each wrk run the CPU time of the server under test, of wrk, of the
backends and of the whole machine is read from /proc, so the report can give requests per
CPU-second and recognise runs disturbed by other work. Then, in the one-worker layout, the
resident memory of 5,000 idle keep-alive connections and the peak resident memory of a 1 GiB
download and upload through each proxy.

Python 3 standard library only. Loopback only; ports are picked at run time; every wait and
every load is bounded; only processes this script started are stopped, by PID.
"""

import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
RESULTS = os.path.join(BENCH, "results")
DOCS = os.path.join(REPO, "docs", "BENCHMARKS.md")
DOCS_BEGIN = "<!-- bench/run.sh: begin -->"
DOCS_END = "<!-- bench/run.sh: end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
OTHER_MAX = 10.0  # % of all CPUs used by other processes above which a run is "disturbed"
NAMES = {"sentinel": "Sentinel", "nginx": "nginx", "haproxy": "HAProxy"}


def env_int(name, default):
    value = os.environ.get(name, str(default))
    if not re.fullmatch(r"[0-9]+", value):
        sys.exit(f"[bench] error: {name} must be a non-negative integer (got {value!r})")
    return int(value)


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- scenarios and targets


@dataclass(frozen=True)
class Scenario:
    id: str
    label: str
    kind: str  # "static" (Sentinel and nginx serve files) or "proxy" (all three proxy)
    path: str
    connections: int
    close: bool = False
    # Target: Sentinel/nginx requests per CPU-second at least this much (None: none set).
    target: float | None = None


SCENARIOS = {
    s.id: s
    for s in (
        Scenario("static-1k", "static 1 KiB file", "static", "/1k.bin", 64, target=1.1),
        Scenario("static-1m", "static 1 MiB file", "static", "/1m.bin", 64),
        Scenario("small", "proxy, small response, keep-alive", "proxy", "/small", 64, target=1.15),
        Scenario("64k", "proxy, 64 KiB response, keep-alive", "proxy", "/64k", 64, target=1.8),
        Scenario("close", "proxy, new connection per request", "proxy", "/small", 64, True, 1.0),
        Scenario("small-512", "proxy, small response, 512 connections", "proxy", "/small", 512),
    )
}


@dataclass(frozen=True)
class Settings:
    rounds: int
    duration: int
    warmup: int
    threads: int
    scenarios: tuple
    layouts: tuple
    idle: int
    transfer_mib: int
    quiet_max: int
    quiet_wait: int
    retries: int
    server_cpus: str
    load_cpus: str
    write_docs: bool
    sentinel_runtime: str
    sentinel_metrics: str
    sentinel_rate_limit: str
    sentinel_access_log: str

    @staticmethod
    def from_env():
        scenarios = tuple(os.environ.get("SCENARIOS", " ".join(SCENARIOS)).split())
        layouts = tuple(os.environ.get("LAYOUTS", "one all").split())
        for s in scenarios:
            if s not in SCENARIOS:
                sys.exit(f"[bench] error: unknown scenario {s!r} (known: {' '.join(SCENARIOS)})")
        for layout in layouts:
            if layout not in ("one", "all"):
                sys.exit(f"[bench] error: LAYOUTS takes 'one' and/or 'all' (got {layout!r})")
        settings = Settings(
            rounds=env_int("ROUNDS", 5),
            duration=env_int("DURATION", 5),
            warmup=env_int("WARMUP", 1),
            threads=env_int("THREADS", 2),
            scenarios=scenarios,
            layouts=layouts,
            idle=env_int("IDLE_CONNECTIONS", 5000),
            transfer_mib=env_int("TRANSFER_MIB", 1024),
            quiet_max=env_int("QUIET_MAX", 20),
            quiet_wait=env_int("QUIET_WAIT", 30),
            retries=env_int("RETRIES", 1),
            server_cpus=os.environ.get("SERVER_CPUS", "0"),
            load_cpus=os.environ.get("LOAD_CPUS", "1"),
            write_docs=env_int("WRITE_DOCS", 1) == 1,
            # server.runtime for Sentinel ("" leaves Sentinel's default): an A/B of the
            # shared and per-core layouts with one build.
            sentinel_runtime=os.environ.get("SENTINEL_RUNTIME", ""),
            # An admin listener with request metrics on or off ("" : no admin section):
            # alternate "on" and "off" to measure what recording costs (issue 18).
            sentinel_metrics=os.environ.get("SENTINEL_METRICS", ""),
            # A rate limit far above the load on every Sentinel ("": none), decided in the
            # process ("local") or on a redis-server this script starts ("redis"): what
            # checking every request costs (issue 20).
            sentinel_rate_limit=os.environ.get("SENTINEL_RATE_LIMIT", ""),
            # The access log ("" or "off": none, as always; "file": combined lines to a file
            # beside the config, written by the writer thread): what logging costs (issue 18).
            sentinel_access_log=os.environ.get("SENTINEL_ACCESS_LOG", ""),
        )
        if settings.sentinel_access_log not in ("", "off", "file", "default"):
            sys.exit("[bench] error: SENTINEL_ACCESS_LOG takes 'off', 'file' or 'default' "
                     f"(got {settings.sentinel_access_log!r})")
        if settings.sentinel_rate_limit not in ("", "local", "redis"):
            sys.exit("[bench] error: SENTINEL_RATE_LIMIT takes 'local' or 'redis' "
                     f"(got {settings.sentinel_rate_limit!r})")
        if settings.sentinel_metrics not in ("", "on", "off"):
            sys.exit("[bench] error: SENTINEL_METRICS takes 'on' or 'off' "
                     f"(got {settings.sentinel_metrics!r})")
        if settings.sentinel_runtime not in ("", "shared", "per_core"):
            sys.exit("[bench] error: SENTINEL_RUNTIME takes 'shared' or 'per_core' "
                     f"(got {settings.sentinel_runtime!r})")
        if settings.rounds < 1 or settings.duration < 1 or settings.threads < 1:
            sys.exit("[bench] error: ROUNDS, DURATION and THREADS must be at least 1")
        return settings


# ---------------------------------------------------------------- /proc accounting


def proc_times(pids):
    """(user, system) CPU seconds of the given processes (all their threads)."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def proc_seconds(pids):
    """User + system CPU seconds of the given processes (all their threads)."""
    return sum(proc_times(pids))


def machine_seconds():
    """(busy, total) CPU seconds of the whole machine since boot, over all CPUs."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    busy = user + nice + system + irq + softirq
    return busy / CLK_TCK, (busy + idle + iowait + steal) / CLK_TCK


def busy_percent(seconds=1.0):
    busy0, total0 = machine_seconds()
    time.sleep(seconds)
    busy1, total1 = machine_seconds()
    return 100.0 * (busy1 - busy0) / max(total1 - total0, 1e-9)


def wait_quiet(settings):
    busy = busy_percent()
    waited = 0
    while busy > settings.quiet_max and waited < settings.quiet_wait:
        if waited == 0:
            log(f"machine is {busy:.0f}% busy; waiting up to {settings.quiet_wait}s for it to settle")
        time.sleep(2)
        waited += 3
        busy = busy_percent()
    return busy


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- processes


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Process:
    """A process this script started; stop() ends it by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, name, argv, log_path, pin=()):
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as out:
            self.popen = subprocess.Popen(
                [*pin, *argv], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    @property
    def pid(self):
        return self.popen.pid

    def pids(self):
        """The process and its direct children (an nginx master and its workers)."""
        return [self.pid, *children_of(self.pid)]

    def alive(self):
        return self.popen.poll() is None

    def stop(self):
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log(f"{self.name} (pid {self.pid}) did not stop on SIGTERM; sending SIGKILL")
            self.popen.kill()
            self.popen.wait(timeout=5)


def http_get(port, path, timeout=5.0):
    """(status, body) of GET path on 127.0.0.1:port, over a fresh connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = bytearray()
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, body


def wait_http(process, port, path, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not process.alive():
            sys.exit(f"[bench] error: {process.name} exited at start (log: {process.log_path})")
        try:
            http_get(port, path, timeout=1.0)
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"[bench] error: {process.name} did not answer on 127.0.0.1:{port} within {seconds:.0f} s")


# ---------------------------------------------------------------- configurations


def nginx_temp_paths(prefix):
    return "".join(
        f"    {kind}_temp_path {prefix}/tmp/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def nginx_preamble(prefix, workers, connections, main="", access_log=False):
    """Everything up to and including the shared `http` settings: an nginx in the
    foreground of its own prefix, logging only warnings (and with `access_log`, its default
    access log: `combined` lines to a file), files by sendfile, long keep-alive."""
    access = f"access_log {prefix}/access.log" if access_log else "access_log off"
    return f"""worker_processes {workers};
{main}pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    default_type application/octet-stream;
    {access};
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 120s;
    keepalive_requests 100000;
{nginx_temp_paths(prefix)}"""


def backend_nginx_conf(prefix, root, ports, workers):
    listens = "".join(f"        listen 127.0.0.1:{p};\n" for p in ports)
    return nginx_preamble(prefix, workers, 4096) + f"""    open_file_cache max=100 inactive=60s;
    open_file_cache_valid 60s;
    server {{
{listens}        root {root};
    }}
}}
"""


def nginx_conf(prefix, root, static_port, proxy_port, backend_ports, sink_port, workers,
               access_log=False):
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in backend_ports)
    main = "worker_rlimit_nofile 40000;\n"
    return nginx_preamble(prefix, workers, 16384, main, access_log) + f"""    upstream backends {{
{servers}        keepalive 1024;
        keepalive_requests 100000;
    }}
    upstream sink {{
        server 127.0.0.1:{sink_port};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{static_port};
        root {root};
        index index.html;
    }}
    server {{
        listen 127.0.0.1:{proxy_port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_max_temp_file_size 0;
        location / {{
            proxy_pass http://backends;
        }}
        location /upload {{
            client_max_body_size 0;
            proxy_request_buffering off;
            proxy_pass http://sink;
        }}
    }}
}}
"""


def haproxy_conf(proxy_port, backend_ports, sink_port, threads):
    servers = "".join(
        f"    server b{i + 1} 127.0.0.1:{p}\n" for i, p in enumerate(backend_ports)
    )
    return f"""global
    nbthread {threads}
    maxconn 8000
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 120s
    timeout http-keep-alive 120s
    timeout http-request 10s
    timeout server 30s
    maxconn 8000
frontend fe
    bind 127.0.0.1:{proxy_port}
    use_backend sink if {{ path_beg /upload }}
    default_backend be
backend be
    balance roundrobin
{servers}backend sink
    server sink 127.0.0.1:{sink_port}
"""


def rate_limit_yaml(redis_port=None):
    """A limit no benchmark reaches, so every request is checked and none refused.

    >>> print(rate_limit_yaml(6390), end="")
    rate_limit:
      requests_per_second: 1000000
      burst: 1000000
      redis_url: "redis://127.0.0.1:6390"
    """
    redis = f'  redis_url: "redis://127.0.0.1:{redis_port}"\n' if redis_port else ""
    return "rate_limit:\n  requests_per_second: 1000000\n  burst: 1000000\n" + redis


def sentinel_common(port, runtime="", metrics="", rate_limit="", access_log=""):
    """The settings every Sentinel config shares.

    >>> "access_log: false" in sentinel_common(1)
    True
    >>> print(sentinel_common(8080, access_log="file").split("logging:")[1].strip())
    level: "warn"
      access_log: true
      access_log_format: combined
      access_log_path: access-8080.log
    >>> "logging:" in sentinel_common(8080, access_log="default")
    False
    """
    runtime = f"  runtime: {runtime}\n" if runtime else ""
    if access_log == "default":
        logging = None
    elif access_log == "file":
        logging = ("  access_log: true\n  access_log_format: combined\n"
                   f"  access_log_path: access-{port}.log\n")
    else:
        logging = "  access_log: false\n"
    sections = rate_limit
    if metrics:
        flag = "true" if metrics == "on" else "false"
        sections += f'admin:\n  listen_addr: "127.0.0.1:0"\n  metrics: {flag}\n'
    return sections + f"""server:
  listen_addr: "127.0.0.1:{port}"
{runtime}  max_requests_per_connection: 100000
  max_connections: 20000
  keepalive_timeout_ms: 120000
  max_body_bytes: 4294967296
""" + ("" if logging is None else f"""logging:
  level: "warn"
{logging}""")


def sentinel_static_conf(port, root, runtime="", metrics="", rate_limit="", access_log=""):
    return sentinel_common(port, runtime, metrics, rate_limit, access_log) + f"""static_files:
  root: "{root}"
  index: "index.html"
"""


def sentinel_proxy_conf(port, backend_ports, sink_port, runtime="", metrics="", rate_limit="",
                        access_log=""):
    backends = "".join(
        f'    - name: b{i + 1}\n      address: "127.0.0.1:{p}"\n' for i, p in enumerate(backend_ports)
    )
    return sentinel_common(port, runtime, metrics, rate_limit, access_log) + f"""proxy:
  backends:
{backends}  connection_timeout_ms: 5000
  request_timeout_ms: 30000
  upstreams:
    sink:
      backends:
        - name: sink
          address: "127.0.0.1:{sink_port}"
routes:
  - path_prefix: "/upload"
    upstream: sink
  - path_prefix: "/"
    upstream: default
"""


# ---------------------------------------------------------------- the systems of one layout


class Layout:
    """Backends, the upload sink and every system under test, started for one layout:
    "one" pins each server under test to SERVER_CPUS with one worker, and wrk, the
    backends and the sink to LOAD_CPUS; "all" pins nothing and gives each server a worker
    per core."""

    def __init__(self, name, settings, work, root, tools):
        self.name = name
        self.settings = settings
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        pinned = name == "one" and NCPU >= 2 and shutil.which("taskset") is not None
        if name == "one" and not pinned:
            log("cannot pin (one CPU or no taskset): the one-worker layout runs unpinned")
        self.server_pin = ("taskset", "-c", settings.server_cpus) if pinned else ()
        self.load_pin = ("taskset", "-c", settings.load_cpus) if pinned else ()
        self.pinned = pinned
        workers = 1 if name == "one" else NCPU
        self.workers = workers
        ports = free_ports(9)
        self.backend_ports = ports[0:3]
        self.sink_port = ports[3]
        self.ports = {
            ("sentinel", "static"): ports[4],
            ("sentinel", "proxy"): ports[5],
            ("nginx", "static"): ports[6],
            ("nginx", "proxy"): ports[7],
            ("haproxy", "proxy"): ports[8],
        }
        self.processes = []
        try:
            self._start(root, tools)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name, argv, pin):
        process = Process(name, argv, os.path.join(self.dir, f"{name}.log"), pin)
        self.processes.append(process)
        return process

    def _write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def _nginx(self, name, conf):
        prefix = os.path.join(self.dir, name)
        os.makedirs(os.path.join(prefix, "tmp"))
        path = os.path.join(prefix, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        return [self.tools["nginx"], "-p", prefix, "-c", path, "-g", "daemon off;"]

    def _start(self, root, tools):
        self.tools = tools
        backend_workers = 1 if self.name == "one" else NCPU
        argv = self._nginx("backends", backend_nginx_conf(
            os.path.join(self.dir, "backends"), root, self.backend_ports, backend_workers))
        self.backends = self._spawn("backends", argv, self.load_pin)
        self.sink = self._spawn(
            "sink", [sys.executable, os.path.abspath(__file__), "--sink", str(self.sink_port)],
            self.load_pin)
        p = self.ports
        argv = self._nginx("nginx", nginx_conf(
            os.path.join(self.dir, "nginx"), root, p[("nginx", "static")],
            p[("nginx", "proxy")], self.backend_ports, self.sink_port, self.workers,
            access_log=self.settings.sentinel_access_log == "default"))
        self.systems = {("nginx", "static"): self._spawn("nginx", argv, self.server_pin)}
        self.systems[("nginx", "proxy")] = self.systems[("nginx", "static")]
        cfg = self._write("haproxy.cfg", haproxy_conf(
            p[("haproxy", "proxy")], self.backend_ports, self.sink_port, self.workers))
        self.systems[("haproxy", "proxy")] = self._spawn(
            "haproxy", [tools["haproxy"], "-db", "-f", cfg], self.server_pin)
        limit = ""
        if self.settings.sentinel_rate_limit == "local":
            limit = rate_limit_yaml()
        elif self.settings.sentinel_rate_limit == "redis":
            limit = rate_limit_yaml(self._start_redis())
        for kind, text in (
            ("static", sentinel_static_conf(p[("sentinel", "static")], root,
                                            self.settings.sentinel_runtime,
                                            self.settings.sentinel_metrics, limit,
                                            self.settings.sentinel_access_log)),
            ("proxy", sentinel_proxy_conf(p[("sentinel", "proxy")], self.backend_ports,
                                          self.sink_port, self.settings.sentinel_runtime,
                                          self.settings.sentinel_metrics, limit,
                                          self.settings.sentinel_access_log)),
        ):
            cfg = self._write(f"sentinel-{kind}.yaml", text)
            env_free = ["env", "-u", "LISTEN", "-u", "RUST_LOG"]
            self.systems[("sentinel", kind)] = self._spawn(
                f"sentinel-{kind}", [*env_free, tools["sentinel"], "--config", cfg],
                self.server_pin)
        for port in self.backend_ports:
            wait_http(self.backends, port, "/small")
        for (system, kind), process in self.systems.items():
            wait_http(process, self.ports[(system, kind)], "/small" if kind == "proxy" else "/1k.bin")

    def check(self, root, scenarios):
        """Every system answers every scenario's URL with 200 and the file's exact bytes."""
        for scenario in scenarios:
            with open(os.path.join(root, scenario.path.lstrip("/")), "rb") as f:
                want = f.read()
            for system in systems_of(scenario):
                status, body = http_get(self.ports[(system, scenario.kind)], scenario.path)
                if status != 200 or body != want:
                    sys.exit(f"[bench] error: {system} answered {scenario.path} with {status} and "
                             f"{len(body)} bytes (want 200 and {len(want)} bytes); logs in {self.dir}")

    def stop(self):
        for process in reversed(self.processes):
            process.stop()

    def _start_redis(self):
        """A redis-server of this layout's own, on the load CPUs, persisting nothing."""
        redis = shutil.which("redis-server")
        if not redis:
            sys.exit("[bench] error: SENTINEL_RATE_LIMIT=redis needs redis-server (apt-get install redis-server)")
        port = free_ports(1)[0]
        process = self._spawn("redis", [redis, "--port", str(port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no"], self.load_pin)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not process.alive():
                sys.exit(f"[bench] error: redis-server exited at start (log: {process.log_path})")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return port
            except OSError:
                time.sleep(0.05)
        sys.exit("[bench] error: redis-server did not answer within 10 s")


def systems_of(scenario):
    return ("sentinel", "nginx") if scenario.kind == "static" else ("sentinel", "nginx", "haproxy")


# ---------------------------------------------------------------- one wrk run

_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text):
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    total = re.search(r"^\s*([0-9]+) requests in", text, re.M)
    if not rps or not total:
        return None
    latency = {q: float(v) * _UNIT_MS[u] for q, v, u in _LATENCY.findall(text)}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        "p50_ms": latency.get("50"),
        "p99_ms": latency.get("99"),
        "errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def run_wrk(layout, scenario, system, seconds, settings, out_path):
    """One wrk run with CPU accounting. Returns a result dict, or exits when something broke."""
    process = layout.systems[(system, scenario.kind)]
    url = f"http://127.0.0.1:{layout.ports[(system, scenario.kind)]}{scenario.path}"
    argv = [*layout.load_pin, "wrk", f"-t{min(settings.threads, scenario.connections)}",
            f"-c{scenario.connections}", f"-d{seconds}s", "--latency"]
    if scenario.close:
        argv += ["-H", "Connection: close"]
    argv.append(url)
    user0, system0 = proc_times(process.pids())
    backend0 = proc_seconds(layout.backends.pids())
    busy0, total0 = machine_seconds()
    with open(out_path, "wb") as out:
        wrk = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + seconds + 30
        while True:
            pid, status, usage = os.wait4(wrk.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                wrk.kill()
                pid, status, usage = os.wait4(wrk.pid, 0)
                break
            time.sleep(0.05)
        wrk.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    busy1, total1 = machine_seconds()
    user1, system1 = proc_times(process.pids())
    server_s = user1 - user0 + system1 - system0
    backend_s = proc_seconds(layout.backends.pids()) - backend0
    wrk_s = usage.ru_utime + usage.ru_stime
    if not process.alive():
        sys.exit(f"[bench] error: {system} died during a run (log: {process.log_path})")
    with open(out_path, encoding="utf-8", errors="replace") as f:
        result = parse_wrk(f.read())
    if wrk.returncode != 0 or result is None:
        sys.exit(f"[bench] error: wrk failed against {system} {scenario.path} (output: {out_path})")
    wall = (total1 - total0) / NCPU
    result.update(
        server_cpu_s=server_s,
        # Where a request's CPU goes: time in the kernel (mostly loopback TCP behind the
        # system calls) against the server's own code. Softirq work the kernel charges to no
        # process is in neither.
        user_us_per_req=1e6 * (user1 - user0) / result["requests"] if result["requests"] else None,
        system_us_per_req=(1e6 * (system1 - system0) / result["requests"]
                           if result["requests"] else None),
        req_per_cpu_s=result["requests"] / server_s if server_s > 0 else None,
        server_cores=server_s / wall if wall > 0 else None,
        other_pct=max(0.0, 100.0 * (busy1 - busy0 - server_s - wrk_s - backend_s)
                      / max(total1 - total0, 1e-9)),
    )
    return result


def run_load(settings, layout, raw_dir):
    scenarios = [SCENARIOS[s] for s in settings.scenarios]
    if settings.warmup:
        for scenario in scenarios:
            for system in systems_of(scenario):
                run_wrk(layout, scenario, system, settings.warmup, settings,
                        os.path.join(raw_dir, f"warmup-{layout.name}-{scenario.id}-{system}.txt"))
    runs = []
    for rnd in range(1, settings.rounds + 1):
        for scenario in scenarios:
            systems = systems_of(scenario)
            shift = (rnd - 1) % len(systems)
            for system in systems[shift:] + systems[:shift]:
                out = os.path.join(raw_dir, f"{layout.name}-{scenario.id}-{system}-{rnd}.txt")
                for attempt in range(settings.retries + 1):
                    busy_before = wait_quiet(settings)
                    result = run_wrk(layout, scenario, system, settings.duration, settings, out)
                    log(f"{layout.name} round {rnd}/{settings.rounds} {scenario.id:<10} "
                        f"{system:<8} {result['rps']:>10,.0f} req/s  "
                        f"other processes {result['other_pct']:.0f}% CPU")
                    if result["other_pct"] <= OTHER_MAX or attempt == settings.retries:
                        break
                    log("disturbed by other processes; measuring again")
                result.update(layout=layout.name, scenario=scenario.id, system=system,
                              round=rnd, busy_before=busy_before, attempts=attempt + 1)
                runs.append(result)
    return runs


# ---------------------------------------------------------------- memory


def idle_memory(layout, count, system):
    """Resident KiB of a proxy before and after `count` keep-alive connections, each having
    had one request answered, sit idle; and the bytes per connection."""
    process = layout.systems[(system, "proxy")]
    port = layout.ports[(system, "proxy")]
    time.sleep(0.5)
    before = rss_kib(process.pids())
    socks = []
    deadline = time.monotonic() + 120
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /small HTTP/1.1\r\nHost: idle\r\n\r\n")
            socks.append(s)
            if time.monotonic() > deadline:
                sys.exit(f"[bench] error: opening {count} connections to {system} took too long")
        for s in socks:
            data = b""
            while not data.endswith(b"hello, proxy\n"):
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit(f"[bench] error: {system} closed an idle-test connection")
                data += chunk
        time.sleep(1.0)
        after = rss_kib(process.pids())
    finally:
        for s in socks:
            s.close()
    return {"system": system, "connections": count, "rss_before_kib": before,
            "rss_after_kib": after, "bytes_per_connection": (after - before) * 1024 / count}


def transfer(layout, system, direction, path, size):
    """Download `path` or upload a `size`-byte file through a proxy with curl, sampling the
    proxy's resident memory every 10 ms; returns the peak above the level before."""
    process = layout.systems[(system, "proxy")]
    url = f"http://127.0.0.1:{layout.ports[(system, 'proxy')]}"
    out = os.path.join(layout.dir, f"transfer-{system}-{direction}.out")
    argv = [*layout.load_pin, "curl", "-s", "-o", out, "-w", "%{http_code} %{time_total}",
            "--max-time", "300"]
    if direction == "download":
        argv.append(url + path)
    else:
        argv += ["-H", "Expect:", "-T", path, url + "/upload"]
    time.sleep(0.3)
    before = rss_kib(process.pids())
    peak = before
    curl = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while curl.poll() is None:
        peak = max(peak, rss_kib(process.pids()))
        time.sleep(0.01)
    peak = max(peak, rss_kib(process.pids()))
    status, seconds = (curl.stdout.read().decode().split() + ["000", "0"])[:2]
    received = os.path.getsize(out) if os.path.exists(out) else 0
    if direction == "upload":
        with open(out, "rb") as f:
            received = int(f.read() or b"0")
    ok = status == "200" and received == size
    if not ok:
        log(f"{system} {direction}: HTTP {status}, {received} of {size} bytes")
    os.remove(out)
    return {"system": system, "direction": direction, "ok": ok, "status": status,
            "seconds": float(seconds), "rss_before_kib": before, "rss_peak_kib": peak,
            "peak_above_idle_mib": (peak - before) / 1024}


def run_sink(port):
    """Upload sink: reads each request's Content-Length body and answers with its length."""
    listener = socket.create_server(("127.0.0.1", port), backlog=128)

    def serve(conn):
        buf = bytearray(1 << 20)
        pending = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in pending:
                    chunk = conn.recv(65536)
                    if not chunk or len(pending) > 65536:
                        return
                    pending += chunk
                head, _, pending = pending.partition(b"\r\n\r\n")
                match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
                left = int(match.group(1)) if match else 0
                take = min(left, len(pending))
                pending, left = pending[take:], left - take
                total = take
                while left:
                    n = conn.recv_into(buf, min(left, len(buf)))
                    if not n:
                        return
                    left -= n
                    total += n
                body = str(total).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


# ---------------------------------------------------------------- report


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, spec=",.0f", suffix=""):
    return "n/a" if value is None else format(value, spec) + suffix


def ratio(a, b):
    return a / b if a is not None and b else None


def sign_test_p(higher, n):
    """One-sided sign test: the chance that Sentinel's p99 is the higher one in at least
    `higher` of `n` paired rounds (ties left out) if neither system had the better tail.

    >>> sign_test_p(5, 5)
    0.03125
    >>> sign_test_p(4, 5)
    0.1875
    >>> sign_test_p(0, 5)
    1.0
    >>> sign_test_p(0, 0)
    1.0
    """
    return sum(math.comb(n, k) for k in range(higher, n + 1)) / 2 ** n


def significant_rounds(n):
    """How many of n paired rounds the sign test needs to call a difference real at 5 %.

    >>> significant_rounds(5)
    'with 5 rounds: all 5'
    >>> significant_rounds(8)
    'with 8 rounds: 7 or more'
    >>> significant_rounds(4)
    'never with 4 rounds or fewer'
    """
    need = next((k for k in range(n + 1) if sign_test_p(k, n) < 0.05), None)
    if need is None:
        return f"never with {n} rounds or fewer"
    return f"with {n} rounds: " + (f"all {n}" if need == n else f"{need} or more")


def p99_verdict(rounds, medians):
    """Is Sentinel's p99 no worse than the best other system's?

    `rounds` maps each system to {round: p99 ms}; `medians` maps it to its median p99. The
    best other is the one with the lowest median. The systems of one round run back to back
    and share its disturbances, so Sentinel is also compared with it round by round: a
    one-sided sign test, ties left out, says whether Sentinel's p99 is higher in more rounds
    than chance explains (p < 0.05). That test decides either way ("no" even when the medians
    favour Sentinel); without a significant result the medians answer, and a median above the
    best other's is "not resolved" rather than a pass.

    >>> five = range(1, 6)
    >>> p99_verdict({"sentinel": {r: 5.0 for r in five}, "nginx": {r: 6.0 for r in five}},
    ...             {"sentinel": 5.0, "nginx": 6.0})
    'yes'
    >>> p99_verdict({"sentinel": {r: 9.0 for r in five}, "nginx": {r: 7.0 for r in five}},
    ...             {"sentinel": 9.0, "nginx": 7.0})
    'no: above nginx in 5 of 5 rounds (p = 0.031), 1.29× its p99 per round (median)'
    >>> p99_verdict({"sentinel": {r: 9.0 for r in five},
    ...              "nginx": {1: 7.0, 2: 7.0, 3: 7.0, 4: 9.0, 5: 10.0}},
    ...             {"sentinel": 9.0, "nginx": 7.0})
    'not resolved: above nginx in 3 of 4 rounds, 1 tied (p = 0.312), 1.29× its p99 per round (median)'
    >>> # A lower median does not outvote a round-by-round loss.
    >>> S = {r: 2.0 for r in range(1, 9)}
    >>> N = {1: 1.9, 2: 1.9, 3: 1.9, 4: 1.9, 5: 1.9, 6: 1.9, 7: 1.9, 8: 99.0}
    >>> p99_verdict({"sentinel": S, "nginx": N}, {"sentinel": 2.0, "nginx": 1.0})
    'no: above nginx in 7 of 8 rounds (p = 0.035), 1.05× its p99 per round (median)'
    >>> p99_verdict({"sentinel": {1: 5.0}, "nginx": {2: 4.0}}, {"sentinel": 5.0, "nginx": 4.0})
    'n/a: no round measured both'
    """
    mine = medians.get("sentinel")
    others = [s for s in rounds if s != "sentinel" and medians.get(s) is not None]
    if mine is None or not others:
        return "n/a"
    best = min(others, key=lambda s: medians[s])
    paired = [r for r in rounds["sentinel"] if r in rounds[best]]
    if not paired:
        return "n/a: no round measured both"
    ours, theirs = rounds["sentinel"], rounds[best]
    higher = sum(1 for r in paired if ours[r] > theirs[r])
    ties = sum(1 for r in paired if ours[r] == theirs[r])
    n = len(paired) - ties
    p = sign_test_p(higher, n)
    if p >= 0.05 and mine <= medians[best]:
        return "yes"
    per_round = median(ours[r] / theirs[r] for r in paired if theirs[r] > 0)
    note = (f"above {NAMES.get(best, best)} in {higher} of {n} rounds"
            + (f", {ties} tied" if ties else "")
            + f" (p = {p:.3f})"
            + (f", {per_round:.2f}× its p99 per round (median)" if per_round else ""))
    return ("no: " if p < 0.05 else "not resolved: ") + note


def headline(results, layout):
    rows = [
        "| scenario | conns | Sentinel req/s | nginx req/s | HAProxy req/s | req/s S/N "
        "| Sentinel req/CPU-s | nginx req/CPU-s | HAProxy req/CPU-s | **req/CPU-s S/N** "
        "| req/CPU-s S/H | p99 ms S / N / H | target (req/CPU-s S/N) | p99 ≤ best other |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for sid in results["settings"]["scenarios"]:
        scenario = SCENARIOS[sid]
        med, p99_rounds = {}, {}
        for system in NAMES:
            runs = [r for r in results["runs"]
                    if r["layout"] == layout and r["scenario"] == sid and r["system"] == system]
            for key in ("rps", "req_per_cpu_s", "p99_ms"):
                med[(system, key)] = median(r[key] for r in runs)
            if runs:
                p99_rounds[system] = {r["round"]: r["p99_ms"] for r in runs
                                      if r["p99_ms"] is not None}
        eff = ratio(med[("sentinel", "req_per_cpu_s")], med[("nginx", "req_per_cpu_s")])
        target = "—"
        if scenario.target is not None and eff is not None:
            target = f"≥ {scenario.target:.2f}: {'**met**' if eff >= scenario.target else 'not met'}"
        p99_ok = p99_verdict(p99_rounds, {s: med[(s, "p99_ms")] for s in p99_rounds})
        p99 = " / ".join(fmt(med[(s, "p99_ms")], ".2f") for s in systems_of(scenario))
        rows.append(
            f"| {scenario.label} | {scenario.connections} "
            f"| {fmt(med[('sentinel', 'rps')])} | {fmt(med[('nginx', 'rps')])} "
            f"| {fmt(med[('haproxy', 'rps')])} "
            f"| {fmt(ratio(med[('sentinel', 'rps')], med[('nginx', 'rps')]), '.2f')} "
            f"| {fmt(med[('sentinel', 'req_per_cpu_s')])} | {fmt(med[('nginx', 'req_per_cpu_s')])} "
            f"| {fmt(med[('haproxy', 'req_per_cpu_s')])} | **{fmt(eff, '.2f')}** "
            f"| {fmt(ratio(med[('sentinel', 'req_per_cpu_s')], med[('haproxy', 'req_per_cpu_s')]), '.2f')} "
            f"| {p99} | {target} | {p99_ok} |"
        )
    return rows


def cpu_split(results, layout):
    """Median CPU per request of each server, split into user space and kernel: the kernel's
    part is mostly loopback TCP behind the same system calls for every proxy, the user part is
    what the server's own code costs."""
    rows = [
        "| scenario | Sentinel user + system µs | nginx user + system µs "
        "| HAProxy user + system µs | system share S / N / H |",
        "|---|---:|---:|---:|---|",
    ]
    for sid in results["settings"]["scenarios"]:
        scenario = SCENARIOS[sid]
        cells, shares = [], []
        for system in NAMES:
            runs = [r for r in results["runs"]
                    if r["layout"] == layout and r["scenario"] == sid and r["system"] == system]
            user = median(r.get("user_us_per_req") for r in runs)
            kernel = median(r.get("system_us_per_req") for r in runs)
            if user is None or kernel is None or user + kernel <= 0:
                cells.append("n/a")
                shares.append("n/a")
                continue
            cells.append(f"{user:.1f} + {kernel:.1f}")
            shares.append(f"{100 * kernel / (user + kernel):.0f} %")
        if any(c != "n/a" for c in cells):
            rows.append(f"| {scenario.label} | {' | '.join(cells)} | {' / '.join(shares)} |")
    return rows if len(rows) > 2 else []  # results from before the split was recorded


def summary(results):
    """The part of the report that goes into docs/BENCHMARKS.md."""
    settings, facts = results["settings"], results["facts"]
    out = [
        f"Run of {facts['date']} on {facts['cpu']}; load average {facts['load_before']} before, "
        f"{facts['load_after']} after. Sentinel {facts['sentinel']}; nginx {facts['nginx']}; "
        f"HAProxy {facts['haproxy']}; wrk {facts['wrk']}.",
        "",
        f"`{facts['command']}`: {settings['rounds']} rounds × {settings['duration']} s per "
        "system and scenario, the systems' order rotating each round; medians over rounds. "
        "req/CPU-s = requests completed per CPU-second of the server under test (user + "
        "system time from `/proc/PID/stat`, all its processes and threads); S/N and S/H are "
        "Sentinel's figure over nginx's and HAProxy's (above 1: Sentinel better). "
        "HAProxy serves no files, so static rows compare Sentinel and nginx only. "
        "p99 ≤ best other: the best other is the system with the lowest median p99; "
        "Sentinel is compared with it round by round (the systems of a round run back to "
        "back) by a one-sided sign test, ties left out. \"no\" when Sentinel's p99 is the "
        "higher one in more rounds than chance explains (p < 0.05; "
        f"{significant_rounds(settings['rounds'])}), whatever the medians say; otherwise "
        "\"yes\" when Sentinel's median is the lowest or tied, and \"not resolved\" when it "
        "is higher but the rounds do not show it. The per-round ratio gives the size.",
        "",
    ]
    for layout in results["layouts"]:
        if layout["name"] == "one":
            how = ("one worker each (nginx `worker_processes 1`, HAProxy `nbthread 1`, Sentinel's "
                   "runtime with one worker thread), "
                   + ("server pinned to CPU " + settings["server_cpus"] + ", wrk and the backends "
                      "to CPU " + settings["load_cpus"] if layout["pinned"] else "unpinned"))
        else:
            how = (f"every core: {layout['workers']} workers each, nothing pinned (server, wrk "
                   "and backends share all cores)")
        out += [f"**Layout `{layout['name']}`**: {how}.", ""]
        out += headline(results, layout["name"])
        out.append("")
        split = cpu_split(results, layout["name"])
        if split:
            out += [f"CPU per request in layout `{layout['name']}` (medians over rounds; user "
                    "and system time from `/proc/PID/stat` over requests completed):", ""]
            out += split + [""]
    disturbed = [r for r in results["runs"] if r["other_pct"] > OTHER_MAX]
    errors = [r for r in results["runs"] if r["errors"] or r["non2xx"]]
    out.append(f"{len(results['runs'])} measured runs; {len(disturbed)} disturbed by other "
               f"processes (> {OTHER_MAX:.0f} % of the CPU, after {settings['retries']} retry); "
               f"{len(errors)} with wrk socket errors or non-2xx answers.")
    out.append("")
    if results.get("idle"):
        out += [
            f"**Idle keep-alive connections** (layout `one`, through each proxy: "
            f"{settings['idle']:,} clients each send one request, read the answer and stay "
            "connected; resident memory of all the server's processes from `/proc`):",
            "",
            "| server | RSS before (KiB) | RSS after (KiB) | bytes per idle connection | target ≤ 4 KiB |",
            "|---|---:|---:|---:|---|",
        ]
        for m in results["idle"]:
            met = "met" if m["bytes_per_connection"] <= 4096 else "not met"
            out.append(f"| {NAMES[m['system']]} | {m['rss_before_kib']:,} | {m['rss_after_kib']:,} "
                       f"| {m['bytes_per_connection']:,.0f} | {met if m['system'] == 'sentinel' else '—'} |")
        out.append("")
    if results.get("transfers"):
        out += [
            f"**{settings['transfer_mib']} MiB transfers through each proxy** (layout `one`, one "
            "curl client; download of a file from the backends, upload with Content-Length "
            "to a sink that counts the bytes; resident memory sampled every 10 ms):",
            "",
            "| server | direction | complete | seconds | peak RSS above idle (MiB) | target < 64 MiB |",
            "|---|---|---|---:|---:|---|",
        ]
        for t in results["transfers"]:
            met = "met" if t["ok"] and t["peak_above_idle_mib"] < 64 else "not met"
            out.append(f"| {NAMES[t['system']]} | {t['direction']} | {'yes' if t['ok'] else 'NO'} "
                       f"| {t['seconds']:.2f} | {t['peak_above_idle_mib']:.1f} "
                       f"| {met if t['system'] == 'sentinel' else '—'} |")
        out.append("")
    return out


def every_run(results):
    out = [
        "| layout | scenario | system | round | req/s | p50 ms | p99 ms | requests | errors "
        "| CPU s | req/CPU-s | server cores | other CPU % | busy before % | attempts |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["runs"]:
        out.append(
            f"| {r['layout']} | {r['scenario']} | {r['system']} | {r['round']} | {fmt(r['rps'])} "
            f"| {fmt(r['p50_ms'], '.2f')} | {fmt(r['p99_ms'], '.2f')} | {r['requests']:,} "
            f"| {r['errors'] + r['non2xx']} | {r['server_cpu_s']:.2f} | {fmt(r['req_per_cpu_s'])} "
            f"| {fmt(r['server_cores'], '.2f')} | {r['other_pct']:.0f} | {r['busy_before']:.0f} "
            f"| {r['attempts']} |"
        )
    return out


def report(results):
    out = ["# Sentinel vs nginx vs HAProxy", ""]
    for key, value in results["facts"].items():
        out.append(f"- **{key}**: {value}")
    out.append("")
    out += summary(results)
    out += ["Every run:", ""] + every_run(results) + [""]
    return "\n".join(out)


def write_docs(results):
    with open(DOCS, encoding="utf-8") as f:
        text = f.read()
    begin, end = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if begin < 0 or end < begin:
        log(f"{DOCS} has no {DOCS_BEGIN} … {DOCS_END} block; not updated")
        return
    block = "\n".join([DOCS_BEGIN, *summary(results), DOCS_END])
    with open(DOCS, "w", encoding="utf-8") as f:
        f.write(text[:begin] + block + text[end + len(DOCS_END):])
    log(f"updated {os.path.relpath(DOCS, REPO)}")


# ---------------------------------------------------------------- main


def version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def find_tools():
    """The servers under test, by path; exits when one is missing."""
    tools = {
        # SENTINEL_BIN: measure another build (an A/B of two commits in one sitting).
        "sentinel": os.environ.get("SENTINEL_BIN")
        or os.path.join(REPO, "target", "release", "sentinel"),
        "nginx": shutil.which("nginx") or "/usr/sbin/nginx",
        "haproxy": shutil.which("haproxy") or "/usr/sbin/haproxy",
    }
    for name, path in tools.items():
        if not os.access(path, os.X_OK):
            sys.exit(f"[bench] error: {name} not found ({path}); bench/run.sh installs and builds")
    return tools


def machine_facts(tools):
    """When, on what, and which versions: the header of a report."""
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")), "unknown CPU")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": f"{NCPU} × {model}",
        "kernel": os.uname().release,
        "sentinel": f"{version([tools['sentinel'], '--version'])} at {commit}"
                    + (" + uncommitted changes" if dirty else ""),
        "nginx": version([tools["nginx"], "-v"]).replace("nginx version: ", ""),
        "haproxy": version([tools["haproxy"], "-v"]).replace("HAProxy version ", "").split(" ")[0],
        "wrk": " ".join(version(["wrk", "-v"]).split()[:2]),
    }


def make_root(work):
    root = os.path.join(work, "root")
    shutil.copytree(os.path.join(REPO, "public"), root)
    with open(os.path.join(root, "small"), "wb") as f:
        f.write(b"hello, proxy\n")
    for name, size in (("1k.bin", 1024), ("1m.bin", 1 << 20), ("64k", 65536)):
        with open(os.path.join(root, name), "wb") as f:
            f.write(os.urandom(size))
    for dirpath, _, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return root


def make_sparse(path, size):
    """A file of `size` zero bytes, read once so that its pages are cached: otherwise the
    first system measured would pay for filling the page cache."""
    with open(path, "wb") as f:
        f.truncate(size)
    os.chmod(path, 0o644)
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--sink":
        run_sink(int(sys.argv[2]))
        return
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--report" and sys.argv[3:] in ([], ["--docs"]):
        with open(sys.argv[2], encoding="utf-8") as f:
            results = json.load(f)
        print(report(results))
        if sys.argv[3:] == ["--docs"]:
            write_docs(results)
        return
    if len(sys.argv) != 1:
        sys.exit(__doc__)
    settings = Settings.from_env()
    tools = find_tools()
    for name in ("wrk", "curl"):
        if not shutil.which(name):
            sys.exit(f"[bench] error: {name} not found; bench/run.sh installs it")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if settings.idle and settings.idle * 2 + 1000 > hard:
        sys.exit(f"[bench] error: {settings.idle} idle connections need more open files "
                 f"than the limit ({hard})")

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    os.makedirs(RESULTS, exist_ok=True)
    raw_dir = os.path.join(RESULTS, f"run-{stamp}")
    os.makedirs(raw_dir)
    work = tempfile.mkdtemp(prefix="sentinel-bench.")
    os.chmod(work, 0o755)  # nginx's workers may run unprivileged: they must read the root
    command = " ".join(f"{k}={os.environ[k]}" for k in (
        "ROUNDS", "DURATION", "WARMUP", "THREADS", "SCENARIOS", "LAYOUTS", "IDLE_CONNECTIONS",
        "TRANSFER_MIB", "RETRIES", "SERVER_CPUS", "LOAD_CPUS", "SENTINEL_RUNTIME",
        "SENTINEL_METRICS", "SENTINEL_RATE_LIMIT", "SENTINEL_ACCESS_LOG")
        if k in os.environ)
    facts = machine_facts(tools)
    facts["load_before"] = load_average()
    facts["command"] = (command + " " if command else "") + "bench/run.sh"
    results = {"settings": dict(settings.__dict__), "facts": facts,
               "layouts": [], "runs": [], "idle": [], "transfers": []}
    root = make_root(work)
    layout = None
    try:
        for name in settings.layouts:
            layout = Layout(name, settings, work, root, tools)
            layout.check(root, [SCENARIOS[s] for s in settings.scenarios])
            log(f"layout {name}: every system answers every scenario with the right bytes")
            # Memory first, on freshly started servers: after the load runs, allocator caches
            # shrinking during the idle test would hide the connections' cost.
            if name == "one" and settings.idle:
                for system in ("sentinel", "nginx", "haproxy"):
                    log(f"idle memory: {settings.idle} connections to {system}")
                    results["idle"].append(idle_memory(layout, settings.idle, system))
            if name == "one" and settings.transfer_mib:
                size = settings.transfer_mib << 20
                big = os.path.join(root, "big.bin")
                make_sparse(big, size)
                for system in ("sentinel", "nginx", "haproxy"):
                    for direction in ("download", "upload"):
                        log(f"{settings.transfer_mib} MiB {direction} through {system}")
                        path = "/big.bin" if direction == "download" else big
                        results["transfers"].append(transfer(layout, system, direction, path, size))
                os.remove(big)
            results["runs"] += run_load(settings, layout, raw_dir)
            results["layouts"].append(
                {"name": name, "pinned": layout.pinned, "workers": layout.workers}
            )
            layout.stop()
            layout = None
    finally:
        if layout is not None:
            layout.stop()
    facts["load_after"] = load_average()
    with open(os.path.join(RESULTS, f"run-{stamp}.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = report(results)
    with open(os.path.join(RESULTS, f"run-{stamp}.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    if settings.write_docs:
        write_docs(results)
    shutil.rmtree(work, ignore_errors=True)
    log(f"report: bench/results/run-{stamp}.md (raw wrk output in bench/results/run-{stamp}/)")


if __name__ == "__main__":
    main()
