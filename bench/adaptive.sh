#!/usr/bin/env bash
# Adaptive load balancing under a degrading backend: Sentinel (round_robin,
# least_connections, adaptive), nginx (least_conn) and HAProxy (leastconn), each in front of
# the same three single-slot backends, driven by the same open-loop timeline:
#
#   warmup  WARMUP s   all healthy (not reported)
#   A       PHASE_A s  all healthy: the baseline
#   B       PHASE_B s  backend b1 SLOW_FACTOR× slower
#   C       PHASE_C s  b1 recovered: how fast does p99 come back?
#   D       PHASE_D s  b1 answers FAIL_RATIO of its requests with an immediate 500
#                      (FAIL_KIND=reset: resets their connection instead, no response byte)
#   E       PHASE_E s  b1 recovered
#
#   bench/adaptive.sh                                         # defaults: about 9 minutes
#   PHASE_A=4 PHASE_B=5 PHASE_C=4 PHASE_D=5 PHASE_E=4 bench/adaptive.sh   # about 3 minutes
#   SYSTEMS="sentinel-adaptive haproxy" RATE=400 bench/adaptive.sh
#
# The backends and the load generator are bench/openloop (a standalone crate, built here):
# `openloop backend` serves one request at a time for SERVICE_MS each (capacity about
# 1000/SERVICE_MS req/s per backend), `openloop load` sends RATE req/s at fixed intervals
# and measures each latency from the request's due time (no coordinated omission).
#
# Environment:
#   RATE          requests per second, open loop                             default 300
#   SERVICE_MS    service time of one request on a backend (ms)              default 5
#   SLOW_FACTOR   b1's service time multiplier in phase B                    default 20
#   FAIL_RATIO    share of b1's requests answered 500 at once in phase D     default 0.5
#   FAIL_KIND     fail (an immediate 500) or reset (RST before any byte)     default fail
#   WARMUP PHASE_A PHASE_B PHASE_C PHASE_D PHASE_E   phase lengths (whole s)  default 2 10 20 10 20 10
#   TIMEOUT       the proxies' upstream response timeout (whole s; connect: 1 s)  default 10
#   CLIENT_TIMEOUT  the generator's timeout per request, from its due time (whole s): a bit
#                 longer than TIMEOUT, so that the proxies' own timeouts (504, passive
#                 health) are what the client sees                           default TIMEOUT + 2
#   CONNECTIONS   most client connections the generator opens                default 4096
#   RECOVERY_FACTOR  "normal" = per-second p99 within this × phase-A p99     default 2
#   SYSTEMS       any of: sentinel-rr sentinel-lc sentinel-adaptive nginx-retry nginx-default
#                 haproxy (in this order by default: all six)
#   PIN           1 = pin with taskset, 0 = no pinning                       default 1
#   SERVER_CPUS   taskset -c list for the proxy under test                   default 0
#   LOAD_CPUS     taskset -c list for the backends and the load generator    default 1
#   QUIET_MAX     before each system, wait while the machine is more than this % busy  default 20
#   QUIET_WAIT    ... but at most this many seconds                          default 30
#   KEEP_TMP=1    keep the temporary directory
#
# Needs: Rust toolchain, python3, curl, taskset; installs nginx and haproxy with apt-get
# when missing (as root). Everything listens on 127.0.0.1, on ports chosen at run time; only
# processes this script started are stopped, by PID. The report is printed and written to
# bench/results/adaptive-<timestamp>.md, with the raw JSON lines, configs and logs in
# bench/results/adaptive-<timestamp>/ (ignored by git). See bench/README.md.

set -euo pipefail

RATE=${RATE:-300}
SERVICE_MS=${SERVICE_MS:-5}
SLOW_FACTOR=${SLOW_FACTOR:-20}
FAIL_RATIO=${FAIL_RATIO:-0.5}
FAIL_KIND=${FAIL_KIND:-fail}
[[ $FAIL_KIND == fail || $FAIL_KIND == reset ]] || die "FAIL_KIND must be fail or reset"
WARMUP=${WARMUP:-2}
PHASE_A=${PHASE_A:-10}
PHASE_B=${PHASE_B:-20}
PHASE_C=${PHASE_C:-10}
PHASE_D=${PHASE_D:-20}
PHASE_E=${PHASE_E:-10}
TIMEOUT=${TIMEOUT:-10}
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-$((${TIMEOUT//[^0-9]/} + 2))}
CONNECTIONS=${CONNECTIONS:-4096}
RECOVERY_FACTOR=${RECOVERY_FACTOR:-2}
ALL_SYSTEMS="sentinel-rr sentinel-lc sentinel-adaptive nginx-retry nginx-default haproxy"
read -r -a SYSTEMS <<<"${SYSTEMS:-$ALL_SYSTEMS}"
PIN=${PIN:-1}
SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
QUIET_MAX=${QUIET_MAX:-20}
QUIET_WAIT=${QUIET_WAIT:-30}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
RESULTS_DIR="$BENCH_DIR/results"
OPENLOOP_DIR="$BENCH_DIR/openloop"
OPENLOOP="$OPENLOOP_DIR/target/release/openloop"

# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"


number='^[0-9]+([.][0-9]+)?$'
for var in RATE SERVICE_MS SLOW_FACTOR FAIL_RATIO RECOVERY_FACTOR; do
    [[ ${!var} =~ $number ]] || die "$var must be a non-negative number (got '${!var}')"
done
python3 -c "import sys; sys.exit(0 if float('$RATE') > 0 and float('$SERVICE_MS') > 0 and float('$FAIL_RATIO') <= 1 else 1)" ||
    die "RATE and SERVICE_MS must be > 0 and FAIL_RATIO <= 1"
for var in TIMEOUT CLIENT_TIMEOUT WARMUP PHASE_A PHASE_B PHASE_C PHASE_D PHASE_E CONNECTIONS QUIET_MAX QUIET_WAIT; do
    [[ ${!var} =~ ^[0-9]+$ ]] || die "$var must be a non-negative integer (got '${!var}')"
done
((PHASE_A >= 1 && PHASE_B >= 1 && PHASE_C >= 1 && PHASE_D >= 1 && PHASE_E >= 1 && CONNECTIONS >= 1)) ||
    die "PHASE_A..PHASE_E and CONNECTIONS must be at least 1"
((TIMEOUT >= 1 && CLIENT_TIMEOUT >= 1)) || die "TIMEOUT and CLIENT_TIMEOUT must be at least 1"
((${#SYSTEMS[@]} > 0)) || die "SYSTEMS is empty"
for system in "${SYSTEMS[@]}"; do
    [[ " $ALL_SYSTEMS " == *" $system "* ]] || die "each of SYSTEMS must be one of: $ALL_SYSTEMS (got '$system')"
done
[[ $PIN =~ ^[01]$ ]] || die "PIN must be 0 or 1 (got '$PIN')"
for var in SERVER_CPUS LOAD_CPUS; do
    [[ ${!var} =~ ^[0-9]+([-,][0-9]+)*$ ]] || die "$var must be a taskset -c CPU list such as 0 or 2-3 (got '${!var}')"
done
RUN_SECONDS=$((WARMUP + PHASE_A + PHASE_B + PHASE_C + PHASE_D + PHASE_E))

# ---------------------------------------------------------------- tools

install_missing haproxy
NGINX=$(find_nginx)
[[ -n $NGINX ]] || die "nginx not found after installation"
HAPROXY=$(command -v haproxy 2>/dev/null || echo /usr/sbin/haproxy)
[[ -x $HAPROXY ]] || die "haproxy not found after installation"
for tool in python3 cargo curl timeout; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

setup_pinning

# Thousands of client and upstream connections when a backend stalls: raise the soft limit
# on descriptors to the hard one (inherited by everything started below).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
((NOFILE >= 2 * CONNECTIONS + 1000)) ||
    warn "only $NOFILE file descriptors per process; CONNECTIONS=$CONNECTIONS may run out"

# ---------------------------------------------------------------- build

log "building openloop (bench/openloop, its own crate; output in bench/openloop/target)"
cargo build --release --quiet --manifest-path "$OPENLOOP_DIR/Cargo.toml" \
    --target-dir "$OPENLOOP_DIR/target" >&2 || die "cargo build of bench/openloop failed"
[[ -x $OPENLOOP ]] || die "$OPENLOOP was not built"

SENTINEL="$REPO_DIR/target/release/sentinel"
SENTINEL_UNAVAILABLE=""
if [[ " ${SYSTEMS[*]} " == *" sentinel-"* ]]; then
    build_sentinel
fi

# ---------------------------------------------------------------- temp dir and cleanup

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sentinel-adaptive.XXXXXX")
chmod 755 "$TMP"
BACKEND_PIDS=()
PROXY_PID=""
PROXY_NAME=""

cleanup() {
    local status=$? i
    stop_pid "$PROXY_NAME" "$PROXY_PID"
    for i in "${!BACKEND_PIDS[@]}"; do
        stop_pid "backend b$((i + 1))" "${BACKEND_PIDS[$i]}"
    done
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

STAMP=$(date -u '+%Y%m%d-%H%M%S')
OUT="$RESULTS_DIR/adaptive-$STAMP"
mkdir -p "$OUT"

# ---------------------------------------------------------------- backends

mapfile -t PORTS < <(free_ports 3)
((${#PORTS[@]} == 3)) || die "could not find free ports"
B1="127.0.0.1:${PORTS[0]}"

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

for i in 0 1 2; do
    "${LOAD_PIN[@]}" "$OPENLOOP" backend --port "${PORTS[$i]}" --service-ms "$SERVICE_MS" \
        --name "b$((i + 1))" >"$TMP/backend-b$((i + 1)).log" 2>&1 &
    BACKEND_PIDS+=($!)
done
for i in 0 1 2; do
    wait_http "${BACKEND_PIDS[$i]}" "http://127.0.0.1:${PORTS[$i]}/_stats" ||
        die "backend b$((i + 1)) did not answer on 127.0.0.1:${PORTS[$i]} (log in $TMP)"
done
log "backends b1 b2 b3 on ${PORTS[*]} (127.0.0.1), ${SERVICE_MS} ms per request, one at a time"

# Reset every backend and wait (at most 15 s) until nothing is queued on any of them.
reset_backends() {
    local i port stats waiting
    for i in 0 1 2; do
        port=${PORTS[$i]}
        kill -0 "${BACKEND_PIDS[$i]}" 2>/dev/null || die "backend b$((i + 1)) has exited (log in $TMP)"
        curl -s -o /dev/null --max-time 5 -X POST "http://127.0.0.1:$port/_control?reset=1" ||
            die "backend b$((i + 1)) did not accept a reset"
    done
    for _ in $(seq 1 150); do
        waiting=0
        for port in "${PORTS[@]}"; do
            stats=$(curl -s --max-time 2 "http://127.0.0.1:$port/_stats") || stats=""
            [[ $stats == *'"waiting":0,'* ]] || waiting=1
        done
        ((waiting == 0)) && break
        sleep 0.1
    done
    ((waiting == 0)) || warn "requests still queued on a backend after 15 s"
    # Counters of the previous system's stragglers are zeroed again.
    for port in "${PORTS[@]}"; do
        curl -s -o /dev/null --max-time 5 -X POST "http://127.0.0.1:$port/_control?reset=1" || true
    done
}

# ---------------------------------------------------------------- the timeline

PHASES="$TMP/phases.txt"
{
    echo "# name seconds [control URLs POSTed when the phase starts]"
    ((WARMUP > 0)) && echo "warmup $WARMUP"
    echo "A $PHASE_A"
    echo "B $PHASE_B http://$B1/_control?slow_factor=$SLOW_FACTOR"
    echo "C $PHASE_C http://$B1/_control?slow_factor=1"
    echo "D $PHASE_D http://$B1/_control?${FAIL_KIND}_ratio=$FAIL_RATIO"
    echo "E $PHASE_E http://$B1/_control?${FAIL_KIND}_ratio=0"
} >"$PHASES"
cp "$PHASES" "$OUT/phases.txt"

# ---------------------------------------------------------------- proxy configs

backend_lines() { # format (%s = name, %s = address)
    local i
    for i in 0 1 2; do
        # shellcheck disable=SC2059 # the format is the caller's
        printf "$1" "b$((i + 1))" "127.0.0.1:${PORTS[$i]}"
    done
}

sentinel_config() { # port strategy
    cat <<EOF
server:
  listen_addr: "127.0.0.1:$1"
proxy:
  strategy: $2
  backends:
$(backend_lines '    - {name: %s, address: "%s"}\n')
  connection_timeout_ms: 1000
  request_timeout_ms: $((TIMEOUT * 1000))
  # nginx's proxy_send_timeout and proxy_read_timeout below.
  send_timeout_ms: $((TIMEOUT * 1000))
  read_timeout_ms: $((TIMEOUT * 1000))
  # Like nginx-retry's proxy_next_upstream http_500 http_502 http_503: these statuses are
  # backend failures (penalised, counted by the breaker) and idempotent requests getting
  # one are retried on another backend, within the retry budget.
  failure_statuses: [500, 502, 503]
logging:
  level: warn
  access_log: false
EOF
}

nginx_config() { # dir port retry(0/1)
    local dir=$1 port=$2 retry=$3
    cat <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections $((CONNECTIONS * 2 + 1000));
}
http {
    default_type application/octet-stream;
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 100000;
$(nginx_temp_paths "$dir")
    upstream backends {
        least_conn;
$(backend_lines '        server %.0s%s;\n')
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout ${TIMEOUT}s;
            proxy_read_timeout ${TIMEOUT}s;
$(if ((retry)); then echo '            proxy_next_upstream error timeout http_500 http_502 http_503;'; fi)
        }
    }
}
EOF
}

haproxy_config() { # port
    cat <<EOF
global
    nbthread 1
    maxconn $((CONNECTIONS * 2 + 1000))
defaults
    mode http
    option http-keep-alive
    timeout connect 1s
    timeout client 60s
    timeout http-keep-alive 60s
    timeout http-request 10s
    timeout server ${TIMEOUT}s
    maxconn $((CONNECTIONS * 2 + 1000))
frontend fe
    bind 127.0.0.1:$1
    default_backend be
backend be
    balance leastconn
$(backend_lines '    server %s %s\n')
EOF
}

# ---------------------------------------------------------------- one system

# Start the proxy for `system` on `port` (config under $OUT/<system>/). Sets PROXY_PID and
# PROXY_NAME; returns 1 with NA_REASON set when it cannot be started.
start_proxy() { # system port
    local system=$1 port=$2 dir="$OUT/$1"
    mkdir -p "$dir"
    PROXY_NAME=$system
    PROXY_PID=""
    case $system in
        sentinel-*)
            if [[ -n $SENTINEL_UNAVAILABLE ]]; then
                NA_REASON=$SENTINEL_UNAVAILABLE
                return 1
            fi
            local strategy
            case $system in
                sentinel-rr) strategy=round_robin ;;
                sentinel-lc) strategy=least_connections ;;
                sentinel-adaptive) strategy=adaptive ;;
            esac
            sentinel_config "$port" "$strategy" >"$dir/sentinel.yaml"
            if ! "$SENTINEL" --check --config "$dir/sentinel.yaml" >"$dir/check.log" 2>&1; then
                NA_REASON="Sentinel rejected its config with \`strategy: $strategy\` (sentinel --check): $(tr '\n' ' ' <"$dir/check.log" | cut -c1-300)"
                return 1
            fi
            # LISTEN would override listen_addr and RUST_LOG the log level: keep them out.
            env -u LISTEN -u RUST_LOG "${SERVER_PIN[@]}" "$SENTINEL" --config "$dir/sentinel.yaml" \
                >"$dir/proxy.log" 2>&1 &
            PROXY_PID=$!
            ;;
        nginx-*)
            mkdir -p "$TMP/$system/tmp"
            local retry=0
            [[ $system == nginx-retry ]] && retry=1
            nginx_config "$TMP/$system" "$port" "$retry" >"$dir/nginx.conf"
            local args=(-p "$TMP/$system" -c "$dir/nginx.conf" -e "$TMP/$system/error.log")
            if ! "$NGINX" "${args[@]}" -t -q -g 'daemon off;' >"$dir/check.log" 2>&1; then
                NA_REASON="nginx rejected its config: $(tr '\n' ' ' <"$dir/check.log" | cut -c1-300)"
                return 1
            fi
            "${SERVER_PIN[@]}" "$NGINX" "${args[@]}" -g 'daemon off;' >"$dir/proxy.log" 2>&1 &
            PROXY_PID=$!
            ;;
        haproxy)
            haproxy_config "$port" >"$dir/haproxy.cfg"
            if ! "$HAPROXY" -c -q -f "$dir/haproxy.cfg" >"$dir/check.log" 2>&1; then
                NA_REASON="haproxy rejected its config: $(tr '\n' ' ' <"$dir/check.log" | cut -c1-300)"
                return 1
            fi
            # -db: foreground, no daemon, no master process.
            "${SERVER_PIN[@]}" "$HAPROXY" -db -f "$dir/haproxy.cfg" >"$dir/proxy.log" 2>&1 &
            PROXY_PID=$!
            ;;
    esac
    if ! wait_http "$PROXY_PID" "http://127.0.0.1:$port/"; then
        NA_REASON="$system did not start or answer on 127.0.0.1:$port (log: $dir/proxy.log)"
        stop_pid "$system" "$PROXY_PID"
        PROXY_PID=""
        return 1
    fi
    # Through the proxy, a GET must reach a backend: 200 with its X-Backend header.
    local head
    head=$(curl -s -D - -o /dev/null --max-time 5 "http://127.0.0.1:$port/") || head=""
    if [[ $head != HTTP/1.1\ 200* ]] || ! grep -qi '^x-backend: b[123]' <<<"$head"; then
        NA_REASON="sanity check failed: GET / through $system answered: $(head -n 1 <<<"$head" | tr -d '\r')"
        stop_pid "$system" "$PROXY_PID"
        PROXY_PID=""
        return 1
    fi
    return 0
}

# PIDs whose CPU counts as the proxy's -> PROXY_PIDS (nginx: master and worker).
proxy_pids() {
    if [[ $PROXY_NAME == nginx-* ]]; then
        nginx_pids "$PROXY_PID"
        PROXY_PIDS=("${NGINX_PIDS[@]}")
    else
        PROXY_PIDS=("$PROXY_PID")
    fi
}

# Counts of the proxy's log lines that tell about passive health, one "k=v; ..." string.
log_notes() { # system
    local system=$1 dir="$OUT/$1" notes=""
    case $system in
        sentinel-*)
            # "<time> WARN target: message key=value ..." -> "message" × count, most frequent first.
            notes=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/proxy.log" |
                sed -nE 's/^[^ ]+ +(WARN|ERROR) +[^ ]+: (([^ =]+ )*[^ =]+)( [a-z_]+=.*)?$/\1 \2/p' |
                sort | uniq -c | sort -rn | head -n 6 |
                awk '{count = $1; $1 = ""; sub(/^ /, ""); printf "%s%s %s×", sep, $0, count; sep = "; "}')
            [[ -n $notes ]] || notes="no warnings"
            ;;
        nginx-*)
            cp "$TMP/$system/error.log" "$dir/error.log" 2>/dev/null || true
            notes="'upstream server temporarily disabled' logged $(grep -c 'temporarily disabled' "$dir/error.log" 2>/dev/null || true)×"
            notes+="; 'no live upstreams' $(grep -c 'no live upstreams' "$dir/error.log" 2>/dev/null || true)×"
            notes+="; 'upstream timed out' $(grep -c 'upstream timed out' "$dir/error.log" 2>/dev/null || true)×"
            ;;
        haproxy)
            notes="$(grep -c . "$dir/proxy.log" || true) log lines"
            ;;
    esac
    printf '%s' "$notes"
}

MANIFEST="$OUT/manifest.tsv"
: >"$MANIFEST"
record_na() { # system reason
    printf '%s\tn/a\t\t\t\t\t\t\t\t\t%s\n' "$1" "${2//$'\t'/ }" >>"$MANIFEST"
}

run_system() { # system
    local system=$1 port status=0
    port=$(free_port)
    log "---- $system on 127.0.0.1:$port"
    reset_backends
    if ! start_proxy "$system" "$port"; then
        warn "$NA_REASON; $system is reported as n/a"
        record_na "$system" "$NA_REASON"
        return 0
    fi
    wait_quiet
    local busy_before=$BUSY_PCT loadavg
    loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
    proxy_pids
    proc_ticks "${PROXY_PIDS[@]}"
    local proxy0=$CPU_PROC
    proc_ticks "${BACKEND_PIDS[@]}"
    local backends0=$CPU_PROC
    children_ticks
    local children0=$CPU_CHILDREN
    machine_ticks
    local busy0=$CPU_BUSY total0=$CPU_TOTAL
    log "$system: ${RUN_SECONDS} s of ${RATE} req/s (phases: warmup ${WARMUP}, A ${PHASE_A}, B ${PHASE_B}, C ${PHASE_C}, D ${PHASE_D}, E ${PHASE_E})"
    timeout --foreground -k 5 $((RUN_SECONDS + CLIENT_TIMEOUT + 30)) "${LOAD_PIN[@]}" "$OPENLOOP" load \
        --url "http://127.0.0.1:$port/" --rate "$RATE" --phase-file "$PHASES" \
        --timeout "$CLIENT_TIMEOUT" --connections "$CONNECTIONS" --out "$OUT/$system.jsonl" \
        2>"$OUT/$system/load.log" || status=$?
    machine_ticks
    children_ticks
    proc_ticks "${BACKEND_PIDS[@]}"
    local backend_ticks=$((CPU_PROC - backends0))
    proc_ticks "${PROXY_PIDS[@]}"
    local proxy_ticks=$((CPU_PROC - proxy0))
    local load_ticks=$((CPU_CHILDREN - children0))
    local busy=$((CPU_BUSY - busy0)) total=$((CPU_TOTAL - total0))
    local alive=1
    kill -0 "$PROXY_PID" 2>/dev/null || alive=0
    local port_i
    for port_i in "${PORTS[@]}"; do
        curl -s --max-time 2 "http://127.0.0.1:$port_i/_stats" || echo '{}'
    done >"$OUT/$system/backends-after.jsonl"
    stop_pid "$system" "$PROXY_PID"
    PROXY_PID=""
    local notes
    notes=$(log_notes "$system")
    ((alive)) || notes="**the proxy exited during the run**; $notes"
    if ((status != 0)) || [[ ! -s $OUT/$system.jsonl ]]; then
        local reason
        reason="the load generator failed (exit $status): $(tail -n 2 "$OUT/$system/load.log" | tr '\n' ' ')"
        warn "$reason"
        record_na "$system" "$reason"
        return 0
    fi
    printf '%s\tok\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$system" "$OUT/$system.jsonl" \
        "$busy_before" "$loadavg" "$proxy_ticks" "$((backend_ticks + load_ticks))" "$busy" "$total" \
        "$OUT/$system/backends-after.jsonl" "${notes//$'\t'/ }" >>"$MANIFEST"
    log "$system: done ($(grep -c '"type":"window"' "$OUT/$system.jsonl") windows; $notes)"
}

for system in "${SYSTEMS[@]}"; do
    run_system "$system"
done

# ---------------------------------------------------------------- report

if ((PIN)); then
    PINNING="proxy under test on CPU $SERVER_CPUS (\`taskset -c $SERVER_CPUS\`), the 3 backends and the load generator on CPU $LOAD_CPUS (\`taskset -c $LOAD_CPUS\`)"
else
    PINNING="none (every process may run on every CPU)"
fi
FACTS="$OUT/facts.tsv"
# shellcheck disable=SC2016 # the backquotes are markdown, not command substitution
{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf 'command\t`FAIL_KIND=%s RATE=%s SERVICE_MS=%s SLOW_FACTOR=%s FAIL_RATIO=%s WARMUP=%s PHASE_A=%s PHASE_B=%s PHASE_C=%s PHASE_D=%s PHASE_E=%s TIMEOUT=%s CLIENT_TIMEOUT=%s CONNECTIONS=%s RECOVERY_FACTOR=%s SYSTEMS="%s" PIN=%s bench/adaptive.sh`\n' \
        "$FAIL_KIND" "$RATE" "$SERVICE_MS" "$SLOW_FACTOR" "$FAIL_RATIO" "$WARMUP" "$PHASE_A" "$PHASE_B" "$PHASE_C" "$PHASE_D" "$PHASE_E" \
        "$TIMEOUT" "$CLIENT_TIMEOUT" "$CONNECTIONS" "$RECOVERY_FACTOR" "${SYSTEMS[*]}" "$PIN"
    printf 'cpu pinning\t%s\n' "$PINNING"
    common_facts | grep -v '^wrk'
    printf 'haproxy\t%s\n' "$("$HAPROXY" -v 2>&1 | head -n 1 | sed 's/^HAProxy version //')"
    printf 'rate\t%s\n' "$RATE"
    printf 'service_ms\t%s\n' "$SERVICE_MS"
    printf 'slow_factor\t%s\n' "$SLOW_FACTOR"
    printf 'fail_ratio\t%s\n' "$FAIL_RATIO"
    printf 'fail_kind\t%s\n' "$FAIL_KIND"
    printf 'timeout\t%s\n' "$TIMEOUT"
    printf 'client_timeout\t%s\n' "$CLIENT_TIMEOUT"
    printf 'recovery_factor\t%s\n' "$RECOVERY_FACTOR"
    printf 'connections\t%s\n' "$CONNECTIONS"
    printf 'ticks\t%s\n' "$(getconf CLK_TCK)"
    printf 'ncpu\t%s\n' "$(grep -c '^cpu[0-9]' /proc/stat)"
} >"$FACTS"

REPORT="$RESULTS_DIR/adaptive-$STAMP.md"
python3 "$BENCH_DIR/summarize_adaptive.py" "$MANIFEST" "$FACTS" >"$REPORT"
cp "$TMP"/backend-*.log "$OUT/" 2>/dev/null || true
cat "$REPORT"
log "report written to ${REPORT#"$REPO_DIR"/} (raw data, configs and logs in ${OUT#"$REPO_DIR"/}/)"
