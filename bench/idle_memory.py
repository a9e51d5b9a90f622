#!/usr/bin/env python3
"""Resident memory per idle keep-alive connection, Sentinel vs nginx (issue: 5,000 idle
keep-alive connections). Each server serves a one-line file; N clients each send one request,
read the response and stay connected. The servers' resident memory (VmRSS of every process
of the server, from /proc) is read before and after; the difference over N is the cost of an
idle connection. Loopback only; every wait is bounded.

usage: bench/idle_memory.py [CONNECTIONS]    (default 5000; needs `nginx` and a release build)
"""
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTINEL = os.path.join(REPO, "target", "release", "sentinel")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def wait_listening(port, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def measure(name, port, pids_of):
    pids = pids_of()
    time.sleep(0.5)
    before = rss_kib(pids)
    socks = []
    deadline = time.time() + 120
    for _ in range(N):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: idle\r\n\r\n")
        socks.append(s)
        if time.time() > deadline:
            raise SystemExit("opening connections took too long")
    for s in socks:
        data = b""
        while b"hello" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit(f"{name} closed a connection")
            data += chunk
    time.sleep(1.0)
    after = rss_kib(pids_of())
    for s in socks:
        s.close()
    per_conn = (after - before) * 1024 / N
    print(f"| {name} | {N} | {before} | {after} | {per_conn:,.0f} |")


def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (N * 2 + 1000, N * 2 + 1000))
    if not os.path.exists(SENTINEL):
        raise SystemExit("build first: cargo build --release")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = tempfile.mkdtemp(prefix="sentinel-idle.")
    # nginx's workers run as an unprivileged user: they must be able to read the site.
    os.chmod(work, 0o755)
    site = os.path.join(work, "site")
    os.makedirs(site)
    with open(os.path.join(site, "hello.txt"), "w") as f:
        f.write("hello\n")
    procs = []
    try:
        sport, nport = free_port(), free_port()
        with open(os.path.join(work, "sentinel.yaml"), "w") as f:
            f.write(f'server:\n  listen_addr: "127.0.0.1:{sport}"\n  max_connections: {N + 100}\n'
                    f'  keepalive_timeout_ms: 120000\nstatic_files:\n  root: "{site}"\n'
                    'logging:\n  level: warn\n  access_log: false\n')
        sentinel = subprocess.Popen([SENTINEL, "--config", os.path.join(work, "sentinel.yaml")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sentinel)
        os.makedirs(os.path.join(work, "nginx", "logs"))
        with open(os.path.join(work, "nginx", "nginx.conf"), "w") as f:
            f.write(f"worker_processes 1;\nworker_rlimit_nofile {N * 2 + 1000};\n"
                    f"pid {work}/nginx/nginx.pid;\nerror_log {work}/nginx/error.log warn;\n"
                    f"events {{ worker_connections {N + 100}; }}\nhttp {{\n  access_log off;\n"
                    f"  keepalive_timeout 120s;\n  client_body_temp_path {work}/nginx/body;\n"
                    f"  proxy_temp_path {work}/nginx/proxy;\n  fastcgi_temp_path {work}/nginx/f;\n"
                    f"  uwsgi_temp_path {work}/nginx/u;\n  scgi_temp_path {work}/nginx/s;\n"
                    f"  server {{ listen 127.0.0.1:{nport}; root {site}; }}\n}}\n")
        nginx_proc = subprocess.Popen([nginx, "-p", os.path.join(work, "nginx"), "-c",
                                       os.path.join(work, "nginx", "nginx.conf"), "-g", "daemon off;"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(nginx_proc)
        wait_listening(sport)
        wait_listening(nport)
        print("| server | idle connections | RSS before (KiB) | RSS after (KiB) | bytes per idle connection |")
        print("|---|---:|---:|---:|---:|")
        measure("sentinel", sport, lambda: [sentinel.pid])
        measure("nginx (master + 1 worker)", nport,
                lambda: [nginx_proc.pid] + children(nginx_proc.pid))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
