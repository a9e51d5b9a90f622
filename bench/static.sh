#!/usr/bin/env bash
# Side-by-side static-file load benchmark: Sentinel vs nginx serving the same directory.
#
#   bench/static.sh                      # defaults: ROUNDS=5 DURATION=10 CONNECTIONS=64
#   ROUNDS=1 DURATION=3 bench/static.sh  # quick smoke run
#
# Environment:
#   ROUNDS       measured rounds per (file, server)              default 5
#   DURATION     seconds per wrk run                             default 10
#   CONNECTIONS  wrk -c                                          default 64
#   THREADS      wrk -t                                          default 2
#   WARMUP       seconds of unrecorded wrk per (file, server)    default 2 (0 = none)
#   QUIET_MAX    before each run, wait while the machine is more than this % busy   default 20
#   QUIET_WAIT   ... but at most this many seconds                default 60 (0 = never wait)
#   RETRIES      repeat a run disturbed by other processes (>10% CPU) up to this often  default 2
#   SIZES        files to request, each <number>k or <number>m    default "1k 1m"
#   NGINX_OPEN_FILE_CACHE=1  turn nginx's open_file_cache on (default off)
#   KEEP_TMP=1   keep the temporary directory (configs, logs, raw wrk output)
#
# Needs: Rust toolchain, python3, curl; installs nginx and wrk with apt-get when missing
# (as root). Everything listens on 127.0.0.1 only. The report is printed and written to
# bench/results/static-<timestamp>.md (that directory is ignored by git). See bench/README.md.

set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2}
QUIET_MAX=${QUIET_MAX:-20}
QUIET_WAIT=${QUIET_WAIT:-60}
RETRIES=${RETRIES:-2}
OTHER_MAX=10 # % of all CPUs used by other processes during a run above which it is "disturbed"
REPEATED=0
read -r -a SIZES <<<"${SIZES:-1k 1m}"
NGINX_OPEN_FILE_CACHE=${NGINX_OPEN_FILE_CACHE:-0}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
RESULTS_DIR="$BENCH_DIR/results"

# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

for var in ROUNDS DURATION CONNECTIONS THREADS WARMUP QUIET_MAX QUIET_WAIT RETRIES; do
    [[ ${!var} =~ ^[0-9]+$ ]] || die "$var must be a non-negative integer (got '${!var}')"
done
((${#SIZES[@]} > 0)) || die "SIZES is empty"
for size in "${SIZES[@]}"; do
    [[ $size =~ ^[1-9][0-9]*[km]$ ]] || die "each of SIZES must look like 1k or 4m (got '$size')"
done
((ROUNDS >= 1 && DURATION >= 1 && CONNECTIONS >= 1 && THREADS >= 1)) ||
    die "ROUNDS, DURATION, CONNECTIONS and THREADS must be at least 1"
((CONNECTIONS >= THREADS)) || die "CONNECTIONS must be >= THREADS (wrk requirement)"

# ---------------------------------------------------------------- tools

install_missing
NGINX=$(find_nginx)
[[ -n $NGINX ]] || die "nginx not found after installation"
command -v wrk >/dev/null || die "wrk not found"
command -v python3 >/dev/null || die "python3 not found"
command -v cargo >/dev/null || die "cargo not found (install the Rust toolchain)"

# ---------------------------------------------------------------- build

log "building Sentinel (cargo build --release)"
cargo build --release --quiet --manifest-path "$REPO_DIR/Cargo.toml" >&2
SENTINEL="$REPO_DIR/target/release/sentinel"
[[ -x $SENTINEL ]] || die "$SENTINEL was not built"

# ---------------------------------------------------------------- temp dir and cleanup

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sentinel-bench.XXXXXX")
# nginx workers may run as an unprivileged user: they must be able to read the web root.
chmod 755 "$TMP"
SENTINEL_PID=""
NGINX_PID=""

cleanup() {
    local status=$?
    stop_pid sentinel "$SENTINEL_PID"
    stop_pid nginx "$NGINX_PID"
    if [[ ${KEEP_TMP:-0} == 1 || $status -ne 0 ]]; then
        log "temporary files kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- web root

ROOT="$TMP/root"
cp -R "$REPO_DIR/public" "$ROOT"
for size in "${SIZES[@]}"; do
    if [[ $size == *k ]]; then bytes=$((${size%k} * 1024)); else bytes=$((${size%m} * 1024 * 1024)); fi
    head -c "$bytes" /dev/urandom >"$ROOT/$size.bin"
done
chmod -R a+rX "$ROOT"

SENTINEL_PORT=$(free_port)
NGINX_PORT=$(free_port)
while [[ $NGINX_PORT == "$SENTINEL_PORT" ]]; do NGINX_PORT=$(free_port); done

# ---------------------------------------------------------------- Sentinel

cat >"$TMP/sentinel.yaml" <<EOF
server:
  listen_addr: "127.0.0.1:$SENTINEL_PORT"
  max_requests_per_connection: 100000
static_files:
  root: "$ROOT"
  index: "index.html"
logging:
  level: "warn"
  access_log: false
EOF
"$SENTINEL" --check --config "$TMP/sentinel.yaml" >&2 || die "Sentinel rejected its config"

# ---------------------------------------------------------------- nginx

mkdir -p "$TMP/nginx/tmp"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events {
    worker_connections 4096;
}
http {
    types {
        text/html html htm;
        text/css css;
        text/plain txt;
        image/png png;
        image/svg+xml svg;
    }
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60s;
    keepalive_requests 100000;
$(if [[ $NGINX_OPEN_FILE_CACHE == 1 ]]; then
    printf '    open_file_cache max=1000 inactive=60s;\n    open_file_cache_valid 60s;\n'
fi)
    client_body_temp_path $TMP/nginx/tmp/body;
    proxy_temp_path $TMP/nginx/tmp/proxy;
    fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
    scgi_temp_path $TMP/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $ROOT;
        index index.html;
    }
}
EOF
NGINX_ARGS=(-p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log")
"$NGINX" "${NGINX_ARGS[@]}" -t -q -g 'daemon off;' || die "nginx rejected its config"

# ---------------------------------------------------------------- start both

log "starting Sentinel on 127.0.0.1:$SENTINEL_PORT"
"$SENTINEL" --config "$TMP/sentinel.yaml" >"$TMP/sentinel.log" 2>&1 &
SENTINEL_PID=$!
log "starting nginx on 127.0.0.1:$NGINX_PORT"
"$NGINX" "${NGINX_ARGS[@]}" -g 'daemon off;' >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!

wait_ready() { # name pid port
    local name=$1 pid=$2 port=$3
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during startup (logs in $TMP)"
        if curl -s -o /dev/null "http://127.0.0.1:$port/1k.bin"; then return 0; fi
        sleep 0.1
    done
    die "$name did not answer on 127.0.0.1:$port within 10 s"
}
wait_ready sentinel "$SENTINEL_PID" "$SENTINEL_PORT"
wait_ready nginx "$NGINX_PID" "$NGINX_PORT"

verify() { # name port file
    local name=$1 port=$2 file=$3 code
    code=$(curl -s -o "$TMP/check-$name-$file" -w '%{http_code}' "http://127.0.0.1:$port/$file")
    [[ $code == 200 ]] || die "$name answered $code for /$file"
    cmp -s "$TMP/check-$name-$file" "$ROOT/$file" || die "$name sent different bytes for /$file"
}
for size in "${SIZES[@]}"; do
    verify sentinel "$SENTINEL_PORT" "$size.bin"
    verify nginx "$NGINX_PORT" "$size.bin"
done
log "both servers return 200 and identical bytes for ${SIZES[*]/%/.bin}"

port_of() { if [[ $1 == sentinel ]]; then echo "$SENTINEL_PORT"; else echo "$NGINX_PORT"; fi; }
pid_of() { if [[ $1 == sentinel ]]; then echo "$SENTINEL_PID"; else echo "$NGINX_PID"; fi; }

# ---------------------------------------------------------------- load

RAW="$TMP/wrk"
mkdir -p "$RAW"
MANIFEST="$TMP/manifest.tsv"
: >"$MANIFEST"

# PIDs whose CPU counts as the server's: Sentinel itself; nginx master and its workers.
server_pids() {
    local server=$1
    if [[ $server == sentinel ]]; then
        SERVER_PIDS=("$SENTINEL_PID")
        return
    fi
    nginx_pids "$NGINX_PID"
    SERVER_PIDS=("${NGINX_PIDS[@]}")
}

run_wrk() { # server size seconds outfile
    local server=$1 size=$2 seconds=$3 out=$4
    server_pids "$server"
    proc_ticks "${SERVER_PIDS[@]}"
    local server0=$CPU_PROC
    children_ticks
    local children0=$CPU_CHILDREN
    machine_ticks
    local busy0=$CPU_BUSY total0=$CPU_TOTAL
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --latency \
        "http://127.0.0.1:$(port_of "$server")/$size.bin" >"$out" 2>&1 ||
        die "wrk failed against $server /$size.bin: $(tail -n 3 "$out")"
    machine_ticks
    children_ticks
    proc_ticks "${SERVER_PIDS[@]}"
    RUN_SERVER_TICKS=$((CPU_PROC - server0))
    RUN_WRK_TICKS=$((CPU_CHILDREN - children0))
    RUN_BUSY_TICKS=$((CPU_BUSY - busy0))
    RUN_TOTAL_TICKS=$((CPU_TOTAL - total0))
    kill -0 "$(pid_of "$server")" 2>/dev/null || die "$server died during the run (logs in $TMP)"
}

if ((WARMUP > 0)); then
    for size in "${SIZES[@]}"; do
        for server in sentinel nginx; do
            log "warm-up ${WARMUP}s: $server /$size.bin"
            run_wrk "$server" "$size" "$WARMUP" "$RAW/warmup-$size-$server.txt"
        done
    done
fi

for round in $(seq 1 "$ROUNDS"); do
    # Alternate who goes first (ABBA across rounds) so drift in machine state (thermal,
    # noisy neighbours, page cache) does not always favour the same server.
    if ((round % 2 == 1)); then order=(sentinel nginx); else order=(nginx sentinel); fi
    for size in "${SIZES[@]}"; do
        for server in "${order[@]}"; do
            out="$RAW/$size-$server-$round.txt"
            attempt=0
            while :; do
                wait_quiet
                run_wrk "$server" "$size" "$DURATION" "$out"
                rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
                other=$(((RUN_BUSY_TICKS - RUN_SERVER_TICKS - RUN_WRK_TICKS) * 100 / RUN_TOTAL_TICKS))
                log "round $round/$ROUNDS  $size  $(printf '%-8s' "$server")  $rps req/s  (idle check ${BUSY_PCT}% busy, other processes ~${other}% CPU during run)"
                ((other > OTHER_MAX && attempt < RETRIES)) || break
                attempt=$((attempt + 1))
                REPEATED=$((REPEATED + 1))
                log "disturbed by other processes (> ${OTHER_MAX}% CPU); repeating this run ($attempt/$RETRIES)"
            done
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$size" "$server" "$round" "$out" \
                "$BUSY_PCT" "$RUN_SERVER_TICKS" "$RUN_WRK_TICKS" "$RUN_BUSY_TICKS" "$RUN_TOTAL_TICKS" \
                >>"$MANIFEST"
        done
    done
done

# ---------------------------------------------------------------- report

FACTS="$TMP/facts.tsv"
# shellcheck disable=SC2016 # the backquotes are markdown, not command substitution
{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf 'command\t`ROUNDS=%s DURATION=%s CONNECTIONS=%s THREADS=%s WARMUP=%s RETRIES=%s SIZES="%s" NGINX_OPEN_FILE_CACHE=%s bench/static.sh` (each run: `wrk -t%s -c%s -d%ss --latency http://127.0.0.1:PORT/FILE`)\n' \
        "$ROUNDS" "$DURATION" "$CONNECTIONS" "$THREADS" "$WARMUP" "$RETRIES" "${SIZES[*]}" "$NGINX_OPEN_FILE_CACHE" "$THREADS" "$CONNECTIONS" "$DURATION"
    printf 'repeated runs\t%s run(s) were disturbed by other processes and measured again (only the last attempt of each run is reported)\n' "$REPEATED"
    common_facts
    printf 'setup\tall three processes on the same machine over loopback; nginx `worker_processes auto` (%s workers), sendfile on, tcp_nopush on, access_log off, keepalive_requests 100000, open_file_cache %s; Sentinel access_log off, log level warn, max_requests_per_connection 100000, tokio multi-thread runtime (default worker count), other settings at their defaults (including its small-file cache)\n' "$(nproc)" "$(if [[ $NGINX_OPEN_FILE_CACHE == 1 ]]; then echo 'on (max=1000 inactive=60s, valid 60s)'; else echo off; fi)"
} >"$FACTS"

mkdir -p "$RESULTS_DIR"
STAMP=$(date -u '+%Y%m%d-%H%M%S')
REPORT="$RESULTS_DIR/static-$STAMP.md"
python3 "$BENCH_DIR/summarize.py" "$MANIFEST" "$FACTS" "$(getconf CLK_TCK)" "$QUIET_MAX" "$OTHER_MAX" >"$REPORT"
# Keep the raw wrk output next to the report so the numbers can be audited.
mkdir -p "$RESULTS_DIR/static-$STAMP"
cp "$RAW"/*.txt "$RESULTS_DIR/static-$STAMP/"

if [[ -s $TMP/nginx/error.log ]] && grep -qv '\[notice\]' "$TMP/nginx/error.log"; then
    log "nginx error log is not empty:"
    grep -v '\[notice\]' "$TMP/nginx/error.log" | tail -n 5 >&2
fi
if [[ -s $TMP/sentinel.log ]]; then
    log "Sentinel logged (level warn):"
    tail -n 5 "$TMP/sentinel.log" >&2
fi

cat "$REPORT"
log "report written to ${REPORT#"$REPO_DIR"/} (raw wrk output in ${RESULTS_DIR#"$REPO_DIR"/}/static-$STAMP/)"
