#!/usr/bin/env bash
# Side-by-side reverse-proxy load benchmark: Sentinel vs nginx, each in front of the same
# three backends (one separate nginx serving two static files on three ports).
#
#   bench/proxy.sh                       # defaults: ROUNDS=5 DURATION=10 CONNECTIONS=64
#   ROUNDS=1 DURATION=2 bench/proxy.sh   # quick smoke run
#
# Scenarios (SCENARIOS, default "small 64k close"):
#   small   13-byte response, keep-alive
#   64k     65536-byte response, keep-alive
#   close   13-byte response, one new client connection per request (Connection: close)
#
# Environment:
#   ROUNDS       measured rounds per (scenario, server)          default 5
#   DURATION     seconds per wrk run                             default 10
#   CONNECTIONS  wrk -c                                          default 64
#   THREADS      wrk -t                                          default 2
#   WARMUP       seconds of unrecorded wrk per (scenario, server)  default 2 (0 = none)
#   QUIET_MAX    before each run, wait while the machine is more than this % busy   default 20
#   QUIET_WAIT   ... but at most this many seconds                default 60 (0 = never wait)
#   RETRIES      repeat a run disturbed by other processes (>10% CPU) up to this often  default 2
#   SCENARIOS    any of "small 64k close", in the order to run   default "small 64k close"
#   PIN          1 = pin with taskset (below), 0 = no pinning    default 1 (0 on a 1-CPU machine)
#   SERVER_CPUS  taskset -c list for the proxy under test        default 0
#   LOAD_CPUS    taskset -c list for wrk and the backend nginx   default 1
#   BACKEND_WORKERS  worker_processes of the backend nginx       default 1
#   KEEP_TMP=1   keep the temporary directory (configs, logs, raw wrk output)
#
# Needs: Rust toolchain, python3, curl, taskset; installs nginx and wrk with apt-get when
# missing (as root). Everything listens on 127.0.0.1 only, on ports chosen at run time. The
# report is printed and written to bench/results/proxy-<timestamp>.md (that directory is
# ignored by git). If Sentinel does not build, start, or proxy correctly (checked with curl
# before each of its runs), its runs are reported as n/a and nginx is still measured.
# See bench/README.md.

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
read -r -a SCENARIOS <<<"${SCENARIOS:-small 64k close}"
PIN=${PIN:-1}
SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
BACKEND_WORKERS=${BACKEND_WORKERS:-1}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
RESULTS_DIR="$BENCH_DIR/results"

# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"


for var in ROUNDS DURATION CONNECTIONS THREADS WARMUP QUIET_MAX QUIET_WAIT RETRIES BACKEND_WORKERS; do
    [[ ${!var} =~ ^[0-9]+$ ]] || die "$var must be a non-negative integer (got '${!var}')"
done
((ROUNDS >= 1 && DURATION >= 1 && CONNECTIONS >= 1 && THREADS >= 1 && BACKEND_WORKERS >= 1)) ||
    die "ROUNDS, DURATION, CONNECTIONS, THREADS and BACKEND_WORKERS must be at least 1"
((CONNECTIONS >= THREADS)) || die "CONNECTIONS must be >= THREADS (wrk requirement)"
((${#SCENARIOS[@]} > 0)) || die "SCENARIOS is empty"
for scenario in "${SCENARIOS[@]}"; do
    [[ $scenario =~ ^(small|64k|close)$ ]] || die "each of SCENARIOS must be small, 64k or close (got '$scenario')"
done
[[ $PIN =~ ^[01]$ ]] || die "PIN must be 0 or 1 (got '$PIN')"
for var in SERVER_CPUS LOAD_CPUS; do
    [[ ${!var} =~ ^[0-9]+([-,][0-9]+)*$ ]] || die "$var must be a taskset -c CPU list such as 0 or 2-3 (got '${!var}')"
done

# ---------------------------------------------------------------- tools

install_missing
NGINX=$(find_nginx)
[[ -n $NGINX ]] || die "nginx not found after installation"
command -v wrk >/dev/null || die "wrk not found"
command -v python3 >/dev/null || die "python3 not found"
command -v cargo >/dev/null || die "cargo not found (install the Rust toolchain)"
command -v timeout >/dev/null || die "timeout (coreutils) not found"

# The proxy under test gets SERVER_CPUS; wrk and the backend share LOAD_CPUS. nginx under
# test runs one worker and Sentinel's default tokio runtime starts one worker thread per CPU
# it may run on, so with the default single CPU both proxies get one core.
setup_pinning
SERVER_NCPU=$("${SERVER_PIN[@]}" nproc)

# ---------------------------------------------------------------- build

build_sentinel

# ---------------------------------------------------------------- temp dir and cleanup

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sentinel-bench.XXXXXX")
# nginx workers may run as an unprivileged user: they must be able to read the web root.
chmod 755 "$TMP"
SENTINEL_PID=""
NGINX_PID=""
BACKEND_PID=""

cleanup() {
    local status=$?
    stop_pid sentinel "$SENTINEL_PID"
    stop_pid nginx "$NGINX_PID"
    stop_pid "backend nginx" "$BACKEND_PID"
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

# ---------------------------------------------------------------- backend content and ports

ROOT="$TMP/root"
mkdir -p "$ROOT"
printf 'hello, proxy\n' >"$ROOT/small"
head -c 65536 /dev/urandom >"$ROOT/64k"
chmod -R a+rX "$ROOT"
SMALL_BYTES=$(stat -c %s "$ROOT/small")

path_of() { if [[ $1 == 64k ]]; then echo 64k; else echo small; fi; }
label_of() {
    case $1 in
        small) echo "small ($SMALL_BYTES B), keep-alive" ;;
        64k) echo "64 KiB, keep-alive" ;;
        close) echo "small ($SMALL_BYTES B), new connection per request" ;;
    esac
}

mapfile -t PORTS < <(free_ports 5)
((${#PORTS[@]} == 5)) || die "could not find free ports"
SENTINEL_PORT=${PORTS[0]}
NGINX_PORT=${PORTS[1]}
BACKEND_PORTS=("${PORTS[@]:2:3}")

# ---------------------------------------------------------------- backend nginx

mkdir -p "$TMP/backend/tmp"
cat >"$TMP/backend/nginx.conf" <<EOF
worker_processes $BACKEND_WORKERS;
pid $TMP/backend/nginx.pid;
error_log $TMP/backend/error.log warn;
events {
    worker_connections 4096;
}
http {
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60s;
    keepalive_requests 100000;
    open_file_cache max=100 inactive=60s;
    open_file_cache_valid 60s;
$(nginx_temp_paths "$TMP/backend")
    server {
$(for port in "${BACKEND_PORTS[@]}"; do printf '        listen 127.0.0.1:%s;\n' "$port"; done)
        root $ROOT;
    }
}
EOF
BACKEND_ARGS=(-p "$TMP/backend" -c "$TMP/backend/nginx.conf" -e "$TMP/backend/error.log")
"$NGINX" "${BACKEND_ARGS[@]}" -t -q -g 'daemon off;' || die "the backend nginx rejected its config"

# ---------------------------------------------------------------- nginx under test

mkdir -p "$TMP/nginx/tmp"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events {
    worker_connections 4096;
}
http {
    default_type application/octet-stream;
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 100000;
$(nginx_temp_paths "$TMP/nginx")
    upstream backends {
$(for port in "${BACKEND_PORTS[@]}"; do printf '        server 127.0.0.1:%s;\n' "$port"; done)
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }
    }
}
EOF
NGINX_ARGS=(-p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log")
"$NGINX" "${NGINX_ARGS[@]}" -t -q -g 'daemon off;' || die "nginx rejected its config"

# ---------------------------------------------------------------- Sentinel config

cat >"$TMP/sentinel.yaml" <<EOF
server:
  listen_addr: "127.0.0.1:$SENTINEL_PORT"
  max_requests_per_connection: 100000
proxy:
  backends:
$(for i in 0 1 2; do printf '    - name: b%s\n      address: "127.0.0.1:%s"\n' "$((i + 1))" "${BACKEND_PORTS[$i]}"; done)
  connection_timeout_ms: 5000
  request_timeout_ms: 30000
logging:
  level: "warn"
  access_log: false
EOF
if [[ -z $SENTINEL_UNAVAILABLE ]] && ! "$SENTINEL" --check --config "$TMP/sentinel.yaml" >&2; then
    SENTINEL_UNAVAILABLE="Sentinel rejected its config (sentinel --check)"
    warn "$SENTINEL_UNAVAILABLE: its runs will be reported as n/a"
fi

# ---------------------------------------------------------------- start, readiness, checks

# Wait until something answers HTTP at url (any status). Returns 1 if the process exits or
# nothing answers within 10 s.
wait_http() { # pid url
    local pid=$1 url=$2
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        if curl -s -o /dev/null --max-time 2 "$url"; then return 0; fi
        sleep 0.1
    done
    return 1
}

# GET url (with Connection: close when asked) and compare with the backend's file: status
# 200, same length, same bytes. On failure CHECK_ERR says what was wrong.
check_body() { # url expected-file close(0/1)
    local url=$1 expected=$2 close=$3 got="$TMP/check.body" result code size want
    local args=(-s -o "$got" -w '%{http_code} %{size_download}' --max-time 5)
    ((close)) && args+=(-H 'Connection: close')
    rm -f "$got"
    result=$(curl "${args[@]}" "$url") || true
    read -r code size <<<"${result:-000 0}"
    want=$(stat -c %s "$expected")
    if [[ $code == 000 ]]; then
        CHECK_ERR="no HTTP response to GET $url (connection failed or timed out)"
        return 1
    elif [[ $code != 200 ]]; then
        CHECK_ERR="answered HTTP $code to GET /${url##*/} (expected 200)"
        return 1
    elif [[ $size != "$want" ]]; then
        CHECK_ERR="answered GET /${url##*/} with a body of $size bytes (expected $want)"
        return 1
    elif ! cmp -s "$got" "$expected"; then
        CHECK_ERR="answered GET /${url##*/} with a $size-byte body that differs from the backend's file"
        return 1
    fi
    return 0
}

log "starting the backend nginx on 127.0.0.1:${BACKEND_PORTS[0]}, :${BACKEND_PORTS[1]}, :${BACKEND_PORTS[2]}"
"${LOAD_PIN[@]}" "$NGINX" "${BACKEND_ARGS[@]}" -g 'daemon off;' >"$TMP/backend/stdout.log" 2>&1 &
BACKEND_PID=$!
log "starting nginx (proxy under test) on 127.0.0.1:$NGINX_PORT"
"${SERVER_PIN[@]}" "$NGINX" "${NGINX_ARGS[@]}" -g 'daemon off;' >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!

for port in "${BACKEND_PORTS[@]}"; do
    wait_http "$BACKEND_PID" "http://127.0.0.1:$port/small" ||
        die "the backend nginx did not answer on 127.0.0.1:$port (logs in $TMP)"
    for file in small 64k; do
        check_body "http://127.0.0.1:$port/$file" "$ROOT/$file" 0 || die "backend :$port $CHECK_ERR"
    done
done
wait_http "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/small" ||
    die "nginx did not answer on 127.0.0.1:$NGINX_PORT (logs in $TMP)"
for scenario in "${SCENARIOS[@]}"; do
    close=0
    [[ $scenario == close ]] && close=1
    check_body "http://127.0.0.1:$NGINX_PORT/$(path_of "$scenario")" "$ROOT/$(path_of "$scenario")" "$close" ||
        die "nginx $CHECK_ERR"
done
log "the backends and nginx return 200 and the right bytes"

SENTINEL_STARTS=0
start_sentinel() {
    SENTINEL_PID=""
    [[ -z $SENTINEL_UNAVAILABLE ]] || return 1
    SENTINEL_STARTS=$((SENTINEL_STARTS + 1))
    log "starting Sentinel on 127.0.0.1:$SENTINEL_PORT"
    # LISTEN would override listen_addr and RUST_LOG the log level: keep them out.
    env -u LISTEN -u RUST_LOG "${SERVER_PIN[@]}" "$SENTINEL" --config "$TMP/sentinel.yaml" \
        >>"$TMP/sentinel.log" 2>&1 &
    SENTINEL_PID=$!
    if ! wait_http "$SENTINEL_PID" "http://127.0.0.1:$SENTINEL_PORT/small"; then
        stop_pid sentinel "$SENTINEL_PID"
        SENTINEL_PID=""
        return 1
    fi
}

# Sentinel is running (restarted if it died) and proxies this scenario's request correctly.
# Otherwise NA_REASON says why and a warning is printed.
sentinel_ready() { # scenario
    local scenario=$1 close=0
    [[ $scenario == close ]] && close=1
    if [[ -n $SENTINEL_UNAVAILABLE ]]; then
        NA_REASON=$SENTINEL_UNAVAILABLE
        return 1
    fi
    if [[ -z $SENTINEL_PID ]] || ! kill -0 "$SENTINEL_PID" 2>/dev/null; then
        if [[ -n $SENTINEL_PID ]]; then
            warn "Sentinel (pid $SENTINEL_PID) has exited; restarting it (log: $TMP/sentinel.log)"
            stop_pid sentinel "$SENTINEL_PID"
        fi
        if ! start_sentinel; then
            NA_REASON="Sentinel did not start or answer on 127.0.0.1:$SENTINEL_PORT"
            warn "$NA_REASON; its $(label_of "$scenario") run is reported as n/a"
            return 1
        fi
    fi
    if ! check_body "http://127.0.0.1:$SENTINEL_PORT/$(path_of "$scenario")" \
        "$ROOT/$(path_of "$scenario")" "$close"; then
        NA_REASON="sanity check failed: Sentinel $CHECK_ERR"
        warn "Sentinel is not proxying correctly: it $CHECK_ERR; its $(label_of "$scenario") run is reported as n/a"
        return 1
    fi
    return 0
}

if [[ -z $SENTINEL_UNAVAILABLE ]]; then
    start_sentinel || warn "Sentinel did not start or answer on 127.0.0.1:$SENTINEL_PORT (log: $TMP/sentinel.log)"
fi

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

# One wrk run with CPU accounting (RUN_* ticks). Returns 1 with RUN_ERR set when wrk fails
# or the server dies. wrk is bounded by `timeout` in case a server stops answering.
run_wrk() { # server scenario seconds outfile
    local server=$1 scenario=$2 seconds=$3 out=$4 url pid status=0
    url="http://127.0.0.1:$(port_of "$server")/$(path_of "$scenario")"
    pid=$(pid_of "$server")
    local args=(-t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --latency)
    [[ $scenario == close ]] && args+=(-H 'Connection: close')
    server_pids "$server"
    nginx_pids "$BACKEND_PID"
    local backend_pids=("${NGINX_PIDS[@]}")
    proc_ticks "${SERVER_PIDS[@]}"
    local server0=$CPU_PROC
    proc_ticks "${backend_pids[@]}"
    local backend0=$CPU_PROC
    children_ticks
    local children0=$CPU_CHILDREN
    machine_ticks
    local busy0=$CPU_BUSY total0=$CPU_TOTAL
    timeout --foreground -k 5 $((seconds + 30)) "${LOAD_PIN[@]}" wrk "${args[@]}" "$url" \
        >"$out" 2>&1 || status=$?
    machine_ticks
    children_ticks
    proc_ticks "${backend_pids[@]}"
    RUN_BACKEND_TICKS=$((CPU_PROC - backend0))
    proc_ticks "${SERVER_PIDS[@]}"
    RUN_SERVER_TICKS=$((CPU_PROC - server0))
    RUN_WRK_TICKS=$((CPU_CHILDREN - children0))
    RUN_BUSY_TICKS=$((CPU_BUSY - busy0))
    RUN_TOTAL_TICKS=$((CPU_TOTAL - total0))
    if ! kill -0 "$pid" 2>/dev/null; then
        RUN_ERR="$server died during the run (logs in $TMP)"
        return 1
    elif ((status != 0)); then
        RUN_ERR="wrk failed against $server /$(path_of "$scenario") (exit $status): $(tail -n 3 "$out" | tr '\n' ' ')"
        return 1
    elif ! grep -q '^Requests/sec:' "$out"; then
        RUN_ERR="wrk printed no result against $server: $(tail -n 3 "$out" | tr '\n' ' ')"
        return 1
    fi
    kill -0 "$BACKEND_PID" 2>/dev/null || die "the backend nginx died during the run (logs in $TMP)"
    return 0
}

record_na() { # scenario server round reason
    printf '%s\t%s\t%s\tn/a\t%s\n' "$(label_of "$1")" "$2" "$3" "${4//$'\t'/ }" >>"$MANIFEST"
}

if ((WARMUP > 0)); then
    for scenario in "${SCENARIOS[@]}"; do
        for server in sentinel nginx; do
            [[ $server == sentinel ]] && ! sentinel_ready "$scenario" && continue
            log "warm-up ${WARMUP}s: $server $(label_of "$scenario")"
            if ! run_wrk "$server" "$scenario" "$WARMUP" "$RAW/warmup-$scenario-$server.txt"; then
                [[ $server == sentinel ]] || die "$RUN_ERR"
                warn "warm-up: $RUN_ERR"
            fi
        done
    done
fi

for round in $(seq 1 "$ROUNDS"); do
    # Alternate who goes first (ABBA across rounds) so drift in machine state (thermal,
    # noisy neighbours) does not always favour the same server.
    if ((round % 2 == 1)); then order=(sentinel nginx); else order=(nginx sentinel); fi
    for scenario in "${SCENARIOS[@]}"; do
        for server in "${order[@]}"; do
            out="$RAW/$scenario-$server-$round.txt"
            if [[ $server == sentinel ]] && ! sentinel_ready "$scenario"; then
                record_na "$scenario" "$server" "$round" "$NA_REASON"
                continue
            fi
            attempt=0
            failed=""
            while :; do
                wait_quiet
                if ! run_wrk "$server" "$scenario" "$DURATION" "$out"; then
                    [[ $server == sentinel ]] || die "$RUN_ERR"
                    failed=$RUN_ERR
                    break
                fi
                rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
                other=$(((RUN_BUSY_TICKS - RUN_SERVER_TICKS - RUN_WRK_TICKS - RUN_BACKEND_TICKS) * 100 / RUN_TOTAL_TICKS))
                ((other >= 0)) || other=0
                log "round $round/$ROUNDS  $(printf '%-6s' "$scenario")  $(printf '%-8s' "$server")  $rps req/s  (idle check ${BUSY_PCT}% busy, other processes ~${other}% CPU during run)"
                ((other > OTHER_MAX && attempt < RETRIES)) || break
                attempt=$((attempt + 1))
                REPEATED=$((REPEATED + 1))
                log "disturbed by other processes (> ${OTHER_MAX}% CPU); repeating this run ($attempt/$RETRIES)"
            done
            if [[ -n $failed ]]; then
                warn "$failed; this run is reported as n/a"
                record_na "$scenario" "$server" "$round" "$failed"
                continue
            fi
            printf '%s\t%s\t%s\tok\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(label_of "$scenario")" \
                "$server" "$round" "$out" "$BUSY_PCT" "$RUN_SERVER_TICKS" "$RUN_WRK_TICKS" \
                "$RUN_BACKEND_TICKS" "$RUN_BUSY_TICKS" "$RUN_TOTAL_TICKS" >>"$MANIFEST"
        done
    done
done

# ---------------------------------------------------------------- report

if ((PIN)); then
    PINNING="proxy under test on CPU $SERVER_CPUS (\`taskset -c $SERVER_CPUS\`), wrk and the backend nginx on CPU $LOAD_CPUS (\`taskset -c $LOAD_CPUS\`)"
else
    PINNING="none (every process may run on every CPU)"
fi
URLS=""
for scenario in "${SCENARIOS[@]}"; do
    [[ -z $URLS ]] || URLS+="; "
    if [[ $scenario == close ]]; then
        URLS+="$scenario: \`-H 'Connection: close' http://127.0.0.1:PORT/small\`"
    else
        URLS+="$scenario: \`http://127.0.0.1:PORT/$(path_of "$scenario")\`"
    fi
done

FACTS="$TMP/facts.tsv"
# shellcheck disable=SC2016 # the backquotes are markdown, not command substitution
{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf 'command\t`ROUNDS=%s DURATION=%s CONNECTIONS=%s THREADS=%s WARMUP=%s RETRIES=%s SCENARIOS="%s" PIN=%s SERVER_CPUS=%s LOAD_CPUS=%s BACKEND_WORKERS=%s bench/proxy.sh` (each run: `wrk -t%s -c%s -d%ss --latency URL`; %s)\n' \
        "$ROUNDS" "$DURATION" "$CONNECTIONS" "$THREADS" "$WARMUP" "$RETRIES" "${SCENARIOS[*]}" "$PIN" "$SERVER_CPUS" "$LOAD_CPUS" "$BACKEND_WORKERS" \
        "$THREADS" "$CONNECTIONS" "$DURATION" "$URLS"
    printf 'repeated runs\t%s run(s) were disturbed by other processes and measured again (only the last attempt of each run is reported)\n' "$REPEATED"
    printf 'cpu pinning\t%s\n' "$PINNING"
    common_facts
    printf 'backends\tone separate nginx (`worker_processes %s`, sendfile, open_file_cache, access_log off, keepalive_requests 100000) listening on 3 loopback ports, serving `small` (%s bytes) and `64k` (65536 bytes); both proxies round-robin over the 3 ports\n' \
        "$BACKEND_WORKERS" "$SMALL_BYTES"
    printf 'nginx setup\t`worker_processes 1`; `upstream` with the 3 backends, `keepalive 64`, `keepalive_requests 100000`; `proxy_http_version 1.1`, `proxy_set_header Connection ""`, `proxy_max_temp_file_size 0` (never buffers responses to disk), other proxy_buffer* at their defaults; access_log off; client keepalive_requests 100000\n'
    printf 'sentinel setup\t`proxy` with the 3 backends, connection_timeout_ms 5000, request_timeout_ms 30000; access_log off, log level warn, max_requests_per_connection 100000; tokio multi-thread runtime with its default worker count (= CPUs it may run on: %s)%s\n' \
        "$SERVER_NCPU" "$(if ((SENTINEL_STARTS > 1)); then echo "; **started $SENTINEL_STARTS times** (it exited or stopped answering in between)"; fi)"
} >"$FACTS"

mkdir -p "$RESULTS_DIR"
STAMP=$(date -u '+%Y%m%d-%H%M%S')
REPORT="$RESULTS_DIR/proxy-$STAMP.md"
python3 "$BENCH_DIR/summarize_proxy.py" "$MANIFEST" "$FACTS" "$(getconf CLK_TCK)" \
    "$(grep -c '^cpu[0-9]' /proc/stat)" "$QUIET_MAX" "$OTHER_MAX" >"$REPORT"
# Keep the raw wrk output next to the report so the numbers can be audited.
mkdir -p "$RESULTS_DIR/proxy-$STAMP"
cp "$RAW"/*.txt "$RESULTS_DIR/proxy-$STAMP/"

for name in nginx backend; do
    if [[ -s $TMP/$name/error.log ]] && grep -qv '\[notice\]' "$TMP/$name/error.log"; then
        log "$name error log is not empty:"
        grep -v '\[notice\]' "$TMP/$name/error.log" | tail -n 5 >&2
    fi
done
if [[ -s $TMP/sentinel.log ]]; then
    log "Sentinel logged (level warn):"
    tail -n 5 "$TMP/sentinel.log" >&2
fi

cat "$REPORT"
log "report written to ${REPORT#"$REPO_DIR"/} (raw wrk output in ${RESULTS_DIR#"$REPO_DIR"/}/proxy-$STAMP/)"
