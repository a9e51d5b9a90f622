#!/usr/bin/env python3
"""TLS termination, Sentinel against nginx, side by side in one run (issue 17).

Started by bench/tls.sh (which installs the tools and builds Sentinel); see bench/README.md.

Both servers serve the same files over HTTPS with the same certificate, one worker pinned to
SERVER_CPUS; the clients run on LOAD_CPUS. For each certificate kind (ECDSA P-256, RSA 2048)
and each round, with the order of the two servers rotating:

- full:      new TLS connection per request, no resumption (`openssl s_time -new`, CLIENTS
             processes, GET /1k.bin over HTTP/1.0): handshakes per server CPU-second;
- resumed:   the same, resuming the session (`openssl s_time -reuse`);
- small:     keep-alive 1 KiB responses over TLS (`wrk`, 64 connections), ECDSA only;
- 1m:        keep-alive 1 MiB downloads over TLS (`wrk`, 8 connections), ECDSA only.

Then the resident memory per idle TLS connection (IDLE connections, each with one request
answered, then idle). Server CPU comes from /proc (user + system of all its processes), so a
client that cannot saturate the server does not change the figure.

Python 3 standard library, plus the `openssl` and `wrk` commands. Loopback only; ports are
picked at run time; every run is bounded in time; only processes this script started are
stopped, by PID. Environment:

    ROUNDS (3)  DURATION (5 s per run)  CLIENTS (3 s_time processes)  IDLE (2000)
    KINDS ("ecdsa rsa")  SERVER_CPUS (0)  LOAD_CPUS (1)
    SENTINEL (target/release/sentinel)  NGINX (found on PATH or in /usr/sbin)

>>> parse_s_time("junk\\n1444 connections in 1.00s; 1444.00 connections/user sec\\n"
...              "1444 connections in 3 real seconds, 1259 bytes read per connection\\n")
1444
>>> parse_s_time("nothing here") is None
True
>>> target_text(1.25, 1.2), target_text(1.1, 1.2), target_text(None, 1.2)
('≥ 1.2: **met**', '≥ 1.2: not met', '–')
>>> target_text(1.6, 2.0, at_most=True)
'≤ 2: **met**'
"""

import json
import os
import re
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as common  # noqa: E402  (bench/run.py: /proc accounting, processes, wrk parsing)

BENCH = common.BENCH
REPO = common.REPO
SYSTEMS = ("sentinel", "nginx")
TARGETS = {"full": 1.2, "small": 1.1}
IDLE_TARGET = 2.0


def env_int(name, default):
    return common.env_int(name, default)


def log(message):
    common.log(message)


# ---------------------------------------------------------------- setup


def make_certificate(work, kind):
    """A self-signed certificate for localhost and 127.0.0.1, made with the openssl command."""
    key = os.path.join(work, f"{kind}.key")
    cert = os.path.join(work, f"{kind}.pem")
    algorithm = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ecdsa"
                 else ["-newkey", "rsa:2048"])
    subprocess.run(["openssl", "req", "-x509", *algorithm, "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def make_root(work):
    root = os.path.join(work, "root")
    os.makedirs(root)
    for name, size in (("1k.bin", 1024), ("1m.bin", 1 << 20)):
        with open(os.path.join(root, name), "wb") as f:
            f.write(os.urandom(size))
        os.chmod(os.path.join(root, name), 0o644)
    os.chmod(root, 0o755)
    return root


def sentinel_conf(plain_port, tls_port, root, cert, key):
    return common.sentinel_common(plain_port) + f"""static_files:
  root: "{root}"
  index: "index.html"
tls:
  listen_addr: "127.0.0.1:{tls_port}"
  certificates:
    - cert: "{cert}"
      key: "{key}"
      server_names: ["localhost"]
"""


def nginx_conf(prefix, tls_port, root, cert, key):
    # nginx as its users deploy it for TLS: a shared session cache beside its default
    # session tickets, TLS 1.2 and 1.3, its default ciphers.
    return common.nginx_preamble(prefix, 1, 8192) + f"""    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 1h;
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
    }}
}}
"""


class Servers:
    """Sentinel and nginx, serving `root` over TLS with one certificate."""

    def __init__(self, work, kind, root, tools, server_pin):
        self.dir = os.path.join(work, kind)
        os.makedirs(self.dir)
        cert, key = make_certificate(self.dir, kind)
        plain, sentinel_tls, nginx_tls = common.free_ports(3)
        self.ports = {"sentinel": sentinel_tls, "nginx": nginx_tls}
        self.processes = {}
        try:
            cfg = os.path.join(self.dir, "sentinel.yaml")
            with open(cfg, "w") as f:
                f.write(sentinel_conf(plain, sentinel_tls, root, cert, key))
            self.processes["sentinel"] = common.Process(
                "sentinel", ["env", "-u", "LISTEN", "-u", "RUST_LOG", tools["sentinel"], "--config", cfg],
                os.path.join(self.dir, "sentinel.log"), server_pin)
            prefix = os.path.join(self.dir, "nginx")
            os.makedirs(os.path.join(prefix, "tmp"))
            conf = os.path.join(prefix, "nginx.conf")
            with open(conf, "w") as f:
                f.write(nginx_conf(prefix, nginx_tls, root, cert, key))
            self.processes["nginx"] = common.Process(
                "nginx", [tools["nginx"], "-p", prefix, "-c", conf, "-g", "daemon off;"],
                os.path.join(self.dir, "nginx.log"), server_pin)
            for system in SYSTEMS:
                self.wait(system)
        except BaseException:
            self.stop()
            raise

    def wait(self, system, seconds=10.0):
        process = self.processes[system]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not process.alive():
                sys.exit(f"[bench] error: {system} exited at start (log: {process.log_path})")
            try:
                if https_get(self.ports[system], "/1k.bin")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        sys.exit(f"[bench] error: {system} did not answer over TLS within {seconds:.0f} s")

    def stop(self):
        for process in self.processes.values():
            process.stop()


def client_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def https_get(port, path, timeout=5.0):
    """(status, body) of GET path over a fresh TLS connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with client_context().wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            data = bytearray()
            while chunk := s.recv(1 << 16):
                data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, body


# ---------------------------------------------------------------- measurements


def parse_s_time(text):
    """Connections `openssl s_time` completed, from its summary line."""
    match = re.search(r"^(\d+) connections in [\d.]+ real seconds", text, re.M)
    return int(match.group(1)) if match else None


def s_time_marks(text):
    r"""(new sessions, resumed sessions) from the progress marks `openssl s_time` prints
    on lines of their own: `*` a full handshake, `r` a resumed one.

    >>> s_time_marks("Collecting connection statistics for 2 seconds\n*rrrr*rr\nrr\n\n"
    ...              "9 connections in 0.01s; 9.00 connections/user sec, bytes read 9\n")
    (2, 8)
    """
    progress = "".join(line for line in text.splitlines() if line and set(line) <= {"*", "r"})
    return progress.count("*"), progress.count("r")


def cpu_of(process):
    return common.proc_seconds(process.pids())


def measure(process, run_load):
    """Run `run_load()` (returns the completed count) and account the server's CPU."""
    cpu0 = cpu_of(process)
    busy0, total0 = common.machine_seconds()
    count, client_s = run_load()
    busy1, total1 = common.machine_seconds()
    server_s = cpu_of(process) - cpu0
    if not process.alive():
        sys.exit(f"[bench] error: {process.name} died during a run (log: {process.log_path})")
    other = max(0.0, 100.0 * (busy1 - busy0 - server_s - client_s) / max(total1 - total0, 1e-9))
    return {"count": count, "server_cpu_s": server_s,
            "per_cpu_s": count / server_s if server_s > 0 and count else None,
            "other_pct": other}


def s_time(port, mode, seconds, clients, load_pin, out_dir, tag):
    def run_load():
        procs = []
        for i in range(clients):
            out = open(os.path.join(out_dir, f"{tag}-{i}.txt"), "w")
            procs.append((subprocess.Popen(
                [*load_pin, "openssl", "s_time", "-connect", f"127.0.0.1:{port}", f"-{mode}",
                 "-time", str(seconds), "-www", "/1k.bin"],
                stdout=out, stderr=subprocess.STDOUT), out))
        total = 0
        client_s = 0.0
        for proc, out in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            client_s += usage.ru_utime + usage.ru_stime
            out.close()
            with open(out.name, encoding="utf-8", errors="replace") as f:
                text = f.read()
            done = parse_s_time(text)
            if proc.returncode != 0 or done is None:
                sys.exit(f"[bench] error: openssl s_time failed (output: {out.name})")
            # What is measured must be what the row says: full handshakes only, or resumed
            # ones (the first connection of a -reuse run is a full handshake).
            full, resumed = s_time_marks(text)
            if (mode == "new" and resumed > 0) or (mode == "reuse" and full > 1 + done // 100):
                sys.exit(f"[bench] error: {full} full and {resumed} resumed handshakes in a "
                         f"'{mode}' run (output: {out.name})")
            total += done
        return total, client_s
    return run_load


def wrk(port, path, connections, seconds, load_pin, out_path):
    def run_load():
        argv = [*load_pin, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
                f"https://127.0.0.1:{port}{path}"]
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        with open(out_path, encoding="utf-8", errors="replace") as f:
            result = common.parse_wrk(f.read())
        if proc.returncode != 0 or result is None or result["errors"] or result["non2xx"]:
            sys.exit(f"[bench] error: wrk failed or saw errors (output: {out_path})")
        return result["requests"], usage.ru_utime + usage.ru_stime
    return run_load


def idle_tls_memory(process, port, count):
    """Resident bytes per idle TLS connection that had one request answered."""
    time.sleep(0.5)
    before = common.rss_kib(process.pids())
    context = client_context()
    socks = []
    deadline = time.monotonic() + 180
    try:
        for _ in range(count):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            s = context.wrap_socket(raw, server_hostname="localhost")
            s.sendall(b"GET /1k.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 1024:
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit(f"[bench] error: {process.name} closed an idle-test connection")
                data += chunk
            socks.append(s)
            if time.monotonic() > deadline:
                sys.exit(f"[bench] error: opening {count} TLS connections took too long")
        time.sleep(1.0)
        after = common.rss_kib(process.pids())
    finally:
        for s in socks:
            s.close()
    return {"connections": count, "rss_before_kib": before, "rss_after_kib": after,
            "bytes_per_connection": (after - before) * 1024 / count}


# ---------------------------------------------------------------- report


def target_text(value, target, at_most=False):
    if value is None:
        return "–"
    met = value <= target if at_most else value >= target
    return f"{'≤' if at_most else '≥'} {target:g}: {'**met**' if met else 'not met'}"


def report(results):
    med = common.median
    lines = [f"# TLS termination: Sentinel and nginx (`bench/tls.sh`)", "",
             f"{results['date']}. Command: `{results['command']}`", "",
             "Per server CPU-second (user + system of the server's processes), median over the "
             f"rounds ({results['rounds']}); S/N is Sentinel / nginx, the median of the per-round "
             "ratios.", "",
             "| certificate | scenario | Sentinel /CPU-s | nginx /CPU-s | S/N | range S/N | target |",
             "|---|---|---:|---:|---:|---|---|"]
    runs = results["runs"]
    for kind in results["kinds"]:
        for scenario in ("full", "resumed", "small", "1m"):
            rows = [r for r in runs if r["kind"] == kind and r["scenario"] == scenario]
            if not rows:
                continue
            per = {s: [r["per_cpu_s"] for r in rows if r["system"] == s] for s in SYSTEMS}
            ratios = []
            for rnd in sorted({r["round"] for r in rows}):
                pair = {r["system"]: r["per_cpu_s"] for r in rows if r["round"] == rnd}
                if pair.get("sentinel") and pair.get("nginx"):
                    ratios.append(pair["sentinel"] / pair["nginx"])
            ratio = med(ratios)
            spread = f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else "–"
            target = target_text(ratio, TARGETS[scenario]) if scenario in TARGETS else "–"
            unit = {"full": "handshakes", "resumed": "resumptions", "small": "requests",
                    "1m": "MiB"}[scenario]
            lines.append(f"| {kind} | {scenario} ({unit}) | {common.fmt(med(per['sentinel']))} | "
                         f"{common.fmt(med(per['nginx']))} | {common.fmt(ratio, '.2f')} | {spread} | {target} |")
    lines.append("")
    idle = {r["system"]: r for r in results["idle"]}
    if idle:
        s, n = idle.get("sentinel"), idle.get("nginx")
        ratio = s["bytes_per_connection"] / n["bytes_per_connection"] if s and n and n["bytes_per_connection"] > 0 else None
        lines += ["| idle TLS connection | Sentinel | nginx | S/N | target |", "|---|---:|---:|---:|---|",
                  f"| resident bytes each ({s['connections'] if s else '?'} connections) | "
                  f"{common.fmt(s and s['bytes_per_connection'])} | {common.fmt(n and n['bytes_per_connection'])} | "
                  f"{common.fmt(ratio, '.2f')} | {target_text(ratio, IDLE_TARGET, at_most=True)} |", ""]
    disturbed = [r for r in runs if r["other_pct"] > common.OTHER_MAX]
    lines.append(f"Runs disturbed by other processes (> {common.OTHER_MAX:g} % of the machine): "
                 f"{len(disturbed)} of {len(runs)}.")
    lines.append("")
    lines.append(f"Machine: {results['machine']}. Versions: {results['versions']}.")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        with open(sys.argv[2], encoding="utf-8") as f:
            print(report(json.load(f)))
        return
    if len(sys.argv) != 1:
        sys.exit(__doc__)
    rounds = env_int("ROUNDS", 3)
    duration = env_int("DURATION", 5)
    clients = env_int("CLIENTS", 3)
    idle = env_int("IDLE", 2000)
    kinds = os.environ.get("KINDS", "ecdsa rsa").split()
    if any(k not in ("ecdsa", "rsa") for k in kinds) or rounds < 1 or duration < 1 or clients < 1:
        sys.exit("[bench] error: KINDS takes ecdsa and/or rsa; ROUNDS, DURATION, CLIENTS ≥ 1")
    sentinel = os.environ.get("SENTINEL", os.path.join(REPO, "target", "release", "sentinel"))
    nginx = os.environ.get("NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
    for tool in ("openssl", "wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"[bench] error: {tool} not found; bench/tls.sh installs it")
    if not os.access(sentinel, os.X_OK) or not os.access(nginx, os.X_OK):
        sys.exit("[bench] error: Sentinel (release) or nginx not found; bench/tls.sh builds and installs them")
    tools = {"sentinel": sentinel, "nginx": nginx}
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server_pin = ("taskset", "-c", os.environ.get("SERVER_CPUS", "0"))
    load_pin = ("taskset", "-c", os.environ.get("LOAD_CPUS", "1"))

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    os.makedirs(common.RESULTS, exist_ok=True)
    raw_dir = os.path.join(common.RESULTS, f"tls-{stamp}")
    os.makedirs(raw_dir)
    work = tempfile.mkdtemp(prefix="sentinel-tls-bench.")
    os.chmod(work, 0o755)
    root = make_root(work)
    command = " ".join(f"{k}={os.environ[k]}" for k in ("ROUNDS", "DURATION", "CLIENTS", "IDLE", "KINDS")
                       if k in os.environ)
    versions = subprocess.run([sentinel, "--version"], capture_output=True, text=True).stdout.strip()
    versions += "; " + subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    versions += "; " + subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "command": (command + " " if command else "") + "bench/tls.sh",
               "rounds": rounds, "kinds": kinds, "runs": [], "idle": [],
               "machine": f"{common.NCPU} CPUs, load average {common.load_average()}",
               "versions": versions}
    servers = None
    try:
        for kind in kinds:
            servers = Servers(work, kind, root, tools, server_pin)
            if kind == kinds[0] and idle:
                for system in SYSTEMS:
                    log(f"idle memory: {idle} TLS connections to {system}")
                    entry = idle_tls_memory(servers.processes[system], servers.ports[system], idle)
                    entry["system"] = system
                    results["idle"].append(entry)
            scenarios = ["full", "resumed"] + (["small", "1m"] if kind == kinds[0] else [])
            for rnd in range(1, rounds + 1):
                order = SYSTEMS if rnd % 2 else tuple(reversed(SYSTEMS))
                for scenario in scenarios:
                    for system in order:
                        port = servers.ports[system]
                        tag = f"{kind}-{scenario}-{system}-{rnd}"
                        if scenario in ("full", "resumed"):
                            load = s_time(port, "new" if scenario == "full" else "reuse", duration,
                                          clients, load_pin, raw_dir, tag)
                        elif scenario == "small":
                            load = wrk(port, "/1k.bin", 64, duration, load_pin,
                                       os.path.join(raw_dir, tag + ".txt"))
                        else:
                            load = wrk(port, "/1m.bin", 8, duration, load_pin,
                                       os.path.join(raw_dir, tag + ".txt"))
                        result = measure(servers.processes[system], load)
                        result.update(kind=kind, scenario=scenario, system=system, round=rnd)
                        results["runs"].append(result)
                        log(f"{kind} round {rnd}/{rounds} {scenario:<8} {system:<9} "
                            f"{common.fmt(result['per_cpu_s'])} per CPU-s "
                            f"(other {result['other_pct']:.0f} %)")
            servers.stop()
            servers = None
    finally:
        if servers is not None:
            servers.stop()
    with open(os.path.join(common.RESULTS, f"tls-{stamp}.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = report(results)
    with open(os.path.join(common.RESULTS, f"tls-{stamp}.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    log(f"report: bench/results/tls-{stamp}.md (raw output in bench/results/tls-{stamp}/)")


if __name__ == "__main__":
    main()
