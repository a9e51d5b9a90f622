#!/usr/bin/env python3
"""Compression, Sentinel against nginx, side by side in one run (issue 23).

Started by bench/compression.sh (which installs the tools and builds Sentinel); see
bench/README.md.

Both servers serve the same 100 KiB HTML page twice over: `page.html` with no sidecar
(compressed on the fly) and `pre.html`, the same bytes with a `pre.html.gz` made by Python's
gzip at level 9 and a `pre.html.zst` made by `zstd -19` (served as they are). nginx runs
`gzip on; gzip_comp_level 1; gzip_static on;`, one worker; Sentinel runs its defaults
(`compression: {precompressed: true}`: zstd first, level fast), one worker. Both pinned to
SERVER_CPUS, wrk on LOAD_CPUS, keep-alive, CONNECTIONS connections. For each round, with the
order of the two servers rotating, each row is one wrk run:

- fly-nginx-gzip1:  nginx, on the fly, `Accept-Encoding: gzip` (gzip level 1);
- fly-zstd:         Sentinel, on the fly, `Accept-Encoding: zstd` (its default choice);
- fly-gzip:         Sentinel, on the fly, `Accept-Encoding: gzip` (level fast = 1);
- fly-browser:      Sentinel, on the fly, a browser's `gzip, deflate, br, zstd`;
- pre-nginx-gz:     nginx, `pre.html.gz` (gzip_static);
- pre-gz:           Sentinel, the same `pre.html.gz`;
- pre-zst:          Sentinel, `pre.html.zst`.

Requests per server CPU-second come from /proc (user + system of all the server's
processes), so a client that cannot saturate the server does not change the figure. Bytes on
the wire are the body of one response, checked to decode to the page.

Python 3 standard library, plus the `wrk`, `zstd` commands. Loopback only; ports are picked
at run time; every run is bounded in time; only processes this script started are stopped,
by PID. Environment:

    ROUNDS (3)  DURATION (5 s per run)  CONNECTIONS (32)  SERVER_CPUS (0)  LOAD_CPUS (1)
    SENTINEL (target/release/sentinel)  NGINX (found on PATH or in /usr/sbin)

>>> html_page(2000)[:15]
b'<!DOCTYPE html>'
>>> len(html_page(100 * 1024))
102400
>>> target_text(1.6, 1.5), target_text(1.1, 1.2), target_text(None, 1.2)
('≥ 1.5: **met**', '≥ 1.2: not met', '–')
"""

import gzip
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as common  # noqa: E402  (bench/run.py: /proc accounting, processes, wrk parsing)

REPO = common.REPO
PAGE_BYTES = 100 * 1024
BROWSER = "gzip, deflate, br, zstd"

# (id, server, path, Accept-Encoding, what)
ROWS = (
    ("fly-nginx-gzip1", "nginx", "/page.html", "gzip", "nginx, gzip level 1 on the fly"),
    ("fly-zstd", "sentinel", "/page.html", "zstd", "Sentinel, zstd fast on the fly (default)"),
    ("fly-gzip", "sentinel", "/page.html", "gzip", "Sentinel, gzip fast (1) on the fly"),
    ("fly-browser", "sentinel", "/page.html", BROWSER, "Sentinel, a browser's Accept-Encoding"),
    ("pre-nginx-gz", "nginx", "/pre.html", "gzip", "nginx, gzip_static .gz"),
    ("pre-gz", "sentinel", "/pre.html", "gzip", "Sentinel, precompressed .gz"),
    ("pre-zst", "sentinel", "/pre.html", "zstd", "Sentinel, precompressed .zst"),
)
# (what, Sentinel row, nginx row, target: Sentinel/nginx req per CPU-s at least)
COMPARISONS = (
    ("on the fly, zstd fast vs nginx gzip 1", "fly-zstd", "fly-nginx-gzip1", 1.5),
    ("on the fly, gzip 1 vs nginx gzip 1", "fly-gzip", "fly-nginx-gzip1", None),
    ("precompressed .gz vs nginx gzip_static", "pre-gz", "pre-nginx-gz", 1.2),
    ("precompressed .zst vs nginx gzip_static", "pre-zst", "pre-nginx-gz", None),
)


def log(message):
    common.log(message)


def target_text(value, target):
    if value is None:
        return "–"
    return f"≥ {target:g}: " + ("**met**" if value >= target else "not met")


# ---------------------------------------------------------------- setup


WORDS = ("the server sends every byte of a page to the browser that asked for it and the "
         "proxy keeps connections open while backends answer requests with headers bodies "
         "status codes cache validators compression encodings").split()


def html_page(size):
    """A page like a rendered list view: markup repeated per row, text and numbers varying
    (seeded, so every run serves the same bytes)."""
    rng = random.Random(23)
    head = (b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            b"<title>Orders</title><link rel=\"stylesheet\" href=\"/app.css\"></head>\n"
            b"<body><main class=\"container\"><table class=\"orders\">\n")
    out = bytearray(head)
    row = 0
    while len(out) < size:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
        out += (f'<tr id="order-{row}" class="{"odd" if row % 2 else "even"}">'
                f'<td class="id"><a href="/orders/{rng.randint(10000, 99999)}">#{row}</a></td>'
                f'<td class="customer">{words}</td>'
                f'<td class="amount">{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}</td>'
                f'<td class="status"><span class="badge">{rng.choice(WORDS)}</span></td>'
                f"</tr>\n").encode()
        row += 1
    return bytes(out[:size])


def make_root(work):
    root = os.path.join(work, "root")
    os.makedirs(root)
    page = html_page(PAGE_BYTES)
    for name in ("page.html", "pre.html"):
        with open(os.path.join(root, name), "wb") as f:
            f.write(page)
    original = os.path.join(root, "pre.html")
    with open(original + ".gz", "wb") as f:
        f.write(gzip.compress(page, 9, mtime=0))
    subprocess.run(["zstd", "-q", "-19", "-f", original, "-o", original + ".zst"], check=True)
    # Sidecars at least as new as the original (nginx does not look; Sentinel does).
    stamp = os.stat(original).st_mtime
    for suffix in (".gz", ".zst"):
        os.utime(original + suffix, (stamp + 1, stamp + 1))
    for dirpath, _, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return root, page


def sentinel_conf(port, root):
    return common.sentinel_static_conf(port, root) + """compression:
  precompressed: true
"""


def nginx_conf(prefix, port, root):
    return common.nginx_preamble(prefix, 1, 4096) + f"""    types {{ text/html html; }}
    gzip on;
    gzip_comp_level 1;
    gzip_static on;
    gzip_vary on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


class Servers:
    def __init__(self, work, root, tools, pin):
        self.ports = dict(zip(("sentinel", "nginx"), common.free_ports(2)))
        self.processes = {}
        cfg = os.path.join(work, "sentinel.yaml")
        with open(cfg, "w") as f:
            f.write(sentinel_conf(self.ports["sentinel"], root))
        self.processes["sentinel"] = common.Process(
            "sentinel",
            ["env", "-u", "LISTEN", "-u", "RUST_LOG", tools["sentinel"], "--config", cfg],
            os.path.join(work, "sentinel.log"), pin)
        prefix = os.path.join(work, "nginx")
        os.makedirs(os.path.join(prefix, "tmp"))
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(prefix, self.ports["nginx"], root))
        self.processes["nginx"] = common.Process(
            "nginx", [tools["nginx"], "-p", prefix, "-c", conf, "-g", "daemon off;"],
            os.path.join(work, "nginx.log"), pin)
        for name, process in self.processes.items():
            common.wait_http(process, self.ports[name], "/page.html")

    def stop(self):
        for process in self.processes.values():
            process.stop()


# ---------------------------------------------------------------- measuring


def fetch(port, path, accept):
    """(headers dict, body) of one GET, its body unchunked."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Accept-Encoding": accept})
    response = conn.getresponse()
    body = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    conn.close()
    return headers, body


def decode(coding, body):
    if coding == "gzip":
        return gzip.decompress(body)
    if coding == "zstd":
        return subprocess.run(["zstd", "-d", "-c", "-q"], input=body, capture_output=True,
                              check=True).stdout
    if coding == "br":
        return subprocess.run(["brotli", "-d", "-c"], input=body, capture_output=True,
                              check=True).stdout
    return body


def wire_bytes(servers, page):
    """Body bytes of each row's response, after checking it decodes to the page."""
    sizes = {}
    for row, server, path, accept, _ in ROWS:
        headers, body = fetch(servers.ports[server], path, accept)
        coding = headers.get("content-encoding", "identity")
        if decode(coding, body) != page:
            sys.exit(f"[bench] error: {row}: the {coding} body does not decode to the page")
        if coding == "identity":
            sys.exit(f"[bench] error: {row}: {server} did not compress ({headers})")
        sizes[row] = (len(body), coding)
    return sizes


def run_wrk(servers, row, seconds, settings, out_dir, round_no):
    _, server, path, accept, _ = ROWS_BY_ID[row]
    process = servers.processes[server]
    url = f"http://127.0.0.1:{servers.ports[server]}{path}"
    argv = [*settings["load_pin"], "wrk", "-t2", f"-c{settings['connections']}", f"-d{seconds}s",
            "-H", f"Accept-Encoding: {accept}", url]
    cpu0 = common.proc_seconds(process.pids())
    out_path = os.path.join(out_dir, f"{row}.{round_no}.txt")
    with open(out_path, "wb") as out:
        subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + 30,
                       check=True)
    cpu = common.proc_seconds(process.pids()) - cpu0
    with open(out_path, encoding="utf-8", errors="replace") as f:
        result = common.parse_wrk(f.read())
    if result is None or result["errors"] or result["non2xx"]:
        sys.exit(f"[bench] error: wrk against {row} failed or saw errors ({out_path})")
    result["req_per_cpu_s"] = result["requests"] / cpu if cpu > 0 else None
    result["server_cpu_s"] = cpu
    return result


ROWS_BY_ID = {row[0]: row for row in ROWS}


# ---------------------------------------------------------------- report


def report(facts, settings, sizes, results):
    med = {row: common.median([r["req_per_cpu_s"] for r in results[row]]) for row in results}
    rps = {row: common.median([r["rps"] for r in results[row]]) for row in results}
    lines = [
        f"Run {facts['date']} on {facts['cpu']}, Linux {facts['kernel']}; {facts['sentinel']}; "
        f"nginx {facts['nginx']}; {facts['wrk']}. One worker each pinned to CPU "
        f"{settings['server_cpus']}, wrk on CPU {settings['load_cpus']}, "
        f"{settings['connections']} keep-alive connections, {settings['rounds']} rounds of "
        f"{settings['duration']} s, order rotating; load average at start "
        f"{settings['load_start']}. Page: {PAGE_BYTES // 1024} KiB of generated HTML "
        f"(bench/compression.py).",
        "",
        "| row | Accept-Encoding | coding | body bytes | ratio | req/s | req per CPU-s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row, server, path, accept, what in ROWS:
        size, coding = sizes[row]
        lines.append(f"| {what} | `{accept}` | {coding} | {size:,} | "
                     f"{PAGE_BYTES / size:.2f} | {common.fmt(rps[row])} | "
                     f"{common.fmt(med[row])} |")
    lines += ["", "| comparison | Sentinel / nginx per CPU-s | ratio vs nginx's | target |",
              "|---|---:|---:|---|"]
    for what, ours, theirs, target in COMPARISONS:
        r = common.ratio(med[ours], med[theirs])
        size_ratio = sizes[theirs][0] / sizes[ours][0]
        lines.append(f"| {what} | {common.fmt(r, '.2f')}× | {size_ratio:.2f}× smaller"
                     f" | {target_text(r, target) if target else '–'} |")
    return "\n".join(lines)


def main():
    settings = {
        "rounds": common.env_int("ROUNDS", 3),
        "duration": common.env_int("DURATION", 5),
        "connections": common.env_int("CONNECTIONS", 32),
        "server_cpus": os.environ.get("SERVER_CPUS", "0"),
        "load_cpus": os.environ.get("LOAD_CPUS", "1"),
    }
    settings["load_pin"] = ["taskset", "-c", settings["load_cpus"]]
    server_pin = ["taskset", "-c", settings["server_cpus"]]
    tools = {
        "sentinel": os.environ.get("SENTINEL") or os.path.join(REPO, "target", "release",
                                                               "sentinel"),
        "nginx": os.environ.get("NGINX") or "/usr/sbin/nginx",
    }
    facts = common.machine_facts({**tools, "haproxy": "true"})
    settings["load_start"] = common.load_average()
    with tempfile.TemporaryDirectory(prefix="sentinel-compression-") as work:
        # nginx's worker runs as an unprivileged user: it must be able to reach the root.
        os.chmod(work, 0o755)
        root, page = make_root(work)
        servers = Servers(work, root, tools, server_pin)
        try:
            sizes = wire_bytes(servers, page)
            out_dir = os.path.join(work, "wrk")
            os.makedirs(out_dir)
            results = {row[0]: [] for row in ROWS}
            order = [row[0] for row in ROWS]
            for round_no in range(settings["rounds"]):
                # Rotate so neither server always runs first (or last) in a round.
                shift = round_no % len(order)
                for row in order[shift:] + order[:shift]:
                    result = run_wrk(servers, row, settings["duration"], settings, out_dir,
                                     round_no)
                    results[row].append(result)
                    log(f"round {round_no + 1}: {row}: {result['rps']:,.0f} req/s, "
                        f"{common.fmt(result['req_per_cpu_s'])} req per CPU-s")
        finally:
            servers.stop()
    print(report(facts, settings, sizes, results))


if __name__ == "__main__":
    main()
