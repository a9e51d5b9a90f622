#!/usr/bin/env bash
# Adaptive load balancing under a degrading backend: Sentinel (adaptive with default
# settings, adaptive tuned, round_robin), nginx (least_conn) and HAProxy (leastconn), each in
# front of the same three single-slot backends, driven by the same open-loop timeline. The
# default timeline is issue 16's scenario:
#
#   warmup  WARMUP s    all healthy (not reported)
#   A       PHASE_A s   all healthy: the baseline
#   B       PHASE_B s   SLOW_BACKEND (b2) SLOW_FACTOR× slower
#   C1      PHASE_C1 s  b2 recovered; FAIL_BACKEND (b3) answers FAIL_RATIO of its requests
#                       with an immediate 500
#   C2      PHASE_C2 s  b3 resets FAIL_RATIO of its connections before any response byte
#   D       PHASE_D s   all healthy again
#
# TIMELINE=classic is the scenario this script ran before issue 16 (b1 degrades; A, B slow,
# C recovered, D 500s or resets (FAIL_KIND), E recovered; fixed-interval arrivals, evenly
# spread failures), kept so the two can be compared; each of its properties can still be
# changed on its own with the variables below.
#
#   bench/adaptive.sh                                         # about 7 minutes
#   PHASE_A=8 PHASE_B=10 PHASE_C1=10 PHASE_C2=10 PHASE_D=10 bench/adaptive.sh
#   BACKEND_KIND=asyncio bench/adaptive.sh                    # Python asyncio backends
#   TIMELINE=classic SYSTEMS="sentinel-adaptive-tuned" bench/adaptive.sh
#
# The backends are `openloop backend` (bench/openloop, a standalone crate built here) or
# bench/backend_asyncio.py: each serves one request at a time for SERVICE_MS (capacity about
# 1000/SERVICE_MS req/s per backend). `openloop load` sends RATE req/s, by default as a seeded
# Poisson process, and measures each latency from the request's due time (no coordinated
# omission); at every phase start it also reads each backend's counters, so the report can say
# what share of the requests each backend received.
#
# Environment:
#   TIMELINE      issue16 or classic (see above)                             default issue16
#   BACKEND_KIND  openloop (precise sleeps, Rust) or asyncio (Python, with per-request
#                 overhead)                                                  default openloop
#   OVERHEAD_MS   asyncio backends: CPU per request while holding the slot   default 0.5
#   ARRIVALS      poisson (exponential gaps, seeded) or fixed (every 1/RATE s)
#                                                 default poisson (classic: fixed)
#   SEED          seed of the arrivals and of the random failures            default 1
#   FAILURES      random (each request independently) or spread (exactly FAIL_RATIO, evenly
#                 spaced: never two failures in a row at 0.5)  default random (classic: spread)
#   RATE          requests per second, open loop (mean)                      default 300
#   SERVICE_MS    service time of one request on a backend (ms)              default 5
#   SLOW_FACTOR   the slow backend's service time multiplier in phase B      default 20
#   FAIL_RATIO    share of the failing backend's requests answered 500 (C1) or reset (C2)
#                                                                            default 0.5
#   SLOW_BACKEND  FAIL_BACKEND   b1, b2 or b3                    default b2, b3 (classic: b1, b1)
#   WARMUP PHASE_A PHASE_B PHASE_C1 PHASE_C2 PHASE_D    phase lengths (whole s)
#                                                                  default 2 10 15 15 15 15
#   classic only: PHASE_C PHASE_D PHASE_E (default 10 20 10), FAIL_KIND (fail or reset,
#                 the failure of its phase D; default fail), PHASE_B default 20
#   TIMEOUT       the proxies' upstream response timeout where it is set (whole s): nginx,
#                 HAProxy and sentinel-adaptive-tuned (the others keep Sentinel's defaults,
#                 5 s connect, 30 s response)                                default 10
#   CLIENT_TIMEOUT  the generator's timeout per request, from its due time (whole s)
#                                                                            default TIMEOUT + 2
#   CONNECTIONS   most client connections the generator opens                default 4096
#   RECOVERY_FACTOR  "normal" = per-second p99 within this × phase-A p99     default 2
#   SYSTEMS       any of: sentinel-adaptive sentinel-adaptive-tuned sentinel-rr sentinel-lc
#                 nginx-default nginx-retry haproxy
#                 default: sentinel-adaptive sentinel-adaptive-tuned sentinel-rr nginx-default haproxy
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

TIMELINE=${TIMELINE:-issue16}
[[ $TIMELINE == issue16 || $TIMELINE == classic ]] || { echo "TIMELINE must be issue16 or classic" >&2; exit 1; }
if [[ $TIMELINE == classic ]]; then
    classic_arrivals=fixed classic_failures=spread classic_slow=b1 classic_fail=b1 classic_b=20
else
    classic_arrivals=poisson classic_failures=random classic_slow=b2 classic_fail=b3 classic_b=15
fi
BACKEND_KIND=${BACKEND_KIND:-openloop}
OVERHEAD_MS=${OVERHEAD_MS:-0.5}
ARRIVALS=${ARRIVALS:-$classic_arrivals}
SEED=${SEED:-1}
FAILURES=${FAILURES:-$classic_failures}
RATE=${RATE:-300}
SERVICE_MS=${SERVICE_MS:-5}
SLOW_FACTOR=${SLOW_FACTOR:-20}
FAIL_RATIO=${FAIL_RATIO:-0.5}
SLOW_BACKEND=${SLOW_BACKEND:-$classic_slow}
FAIL_BACKEND=${FAIL_BACKEND:-$classic_fail}
FAIL_KIND=${FAIL_KIND:-fail}
WARMUP=${WARMUP:-2}
PHASE_A=${PHASE_A:-10}
PHASE_B=${PHASE_B:-$classic_b}
if [[ $TIMELINE == classic ]]; then
    PHASE_C=${PHASE_C:-10}
    PHASE_D=${PHASE_D:-20}
    PHASE_E=${PHASE_E:-10}
    PHASE_VARS=(PHASE_A PHASE_B PHASE_C PHASE_D PHASE_E)
else
    PHASE_C1=${PHASE_C1:-15}
    PHASE_C2=${PHASE_C2:-15}
    PHASE_D=${PHASE_D:-15}
    PHASE_VARS=(PHASE_A PHASE_B PHASE_C1 PHASE_C2 PHASE_D)
fi
TIMEOUT=${TIMEOUT:-10}
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-$((${TIMEOUT//[^0-9]/} + 2))}
CONNECTIONS=${CONNECTIONS:-4096}
RECOVERY_FACTOR=${RECOVERY_FACTOR:-2}
ALL_SYSTEMS="sentinel-adaptive sentinel-adaptive-tuned sentinel-rr sentinel-lc nginx-default nginx-retry haproxy"
DEFAULT_SYSTEMS="sentinel-adaptive sentinel-adaptive-tuned sentinel-rr nginx-default haproxy"
read -r -a SYSTEMS <<<"${SYSTEMS:-$DEFAULT_SYSTEMS}"
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
for var in RATE SERVICE_MS SLOW_FACTOR FAIL_RATIO RECOVERY_FACTOR OVERHEAD_MS; do
    [[ ${!var} =~ $number ]] || die "$var must be a non-negative number (got '${!var}')"
done
python3 -c "import sys; sys.exit(0 if float('$RATE') > 0 and float('$SERVICE_MS') > 0 and float('$FAIL_RATIO') <= 1 else 1)" ||
    die "RATE and SERVICE_MS must be > 0 and FAIL_RATIO <= 1"
for var in TIMEOUT CLIENT_TIMEOUT WARMUP "${PHASE_VARS[@]}" CONNECTIONS QUIET_MAX QUIET_WAIT SEED; do
    [[ ${!var} =~ ^[0-9]+$ ]] || die "$var must be a non-negative integer (got '${!var}')"
done
for var in "${PHASE_VARS[@]}"; do
    ((${!var} >= 1)) || die "$var must be at least 1"
done
((CONNECTIONS >= 1)) || die "CONNECTIONS must be at least 1"
((TIMEOUT >= 1 && CLIENT_TIMEOUT >= 1)) || die "TIMEOUT and CLIENT_TIMEOUT must be at least 1"
[[ $BACKEND_KIND == openloop || $BACKEND_KIND == asyncio ]] || die "BACKEND_KIND must be openloop or asyncio (got '$BACKEND_KIND')"
[[ $ARRIVALS == poisson || $ARRIVALS == fixed ]] || die "ARRIVALS must be poisson or fixed (got '$ARRIVALS')"
[[ $FAILURES == random || $FAILURES == spread ]] || die "FAILURES must be random or spread (got '$FAILURES')"
[[ $FAIL_KIND == fail || $FAIL_KIND == reset ]] || die "FAIL_KIND must be fail or reset (got '$FAIL_KIND')"
for var in SLOW_BACKEND FAIL_BACKEND; do
    [[ ${!var} =~ ^b[123]$ ]] || die "$var must be b1, b2 or b3 (got '${!var}')"
done
((${#SYSTEMS[@]} > 0)) || die "SYSTEMS is empty"
for system in "${SYSTEMS[@]}"; do
    [[ " $ALL_SYSTEMS " == *" $system "* ]] || die "each of SYSTEMS must be one of: $ALL_SYSTEMS (got '$system')"
done
[[ $PIN =~ ^[01]$ ]] || die "PIN must be 0 or 1 (got '$PIN')"
for var in SERVER_CPUS LOAD_CPUS; do
    [[ ${!var} =~ ^[0-9]+([-,][0-9]+)*$ ]] || die "$var must be a taskset -c CPU list such as 0 or 2-3 (got '${!var}')"
done
RUN_SECONDS=$WARMUP
for var in "${PHASE_VARS[@]}"; do
    RUN_SECONDS=$((RUN_SECONDS + ${!var}))
done

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
SLOW_ADDR="127.0.0.1:${PORTS[${SLOW_BACKEND#b} - 1]}"
FAIL_ADDR="127.0.0.1:${PORTS[${FAIL_BACKEND#b} - 1]}"

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

# Both kinds take the same arguments and have the same control interface; each backend gets
# its own seed for its random failures.
for i in 0 1 2; do
    case $BACKEND_KIND in
        openloop) backend_cmd=("$OPENLOOP" backend) ;;
        asyncio) backend_cmd=(python3 "$BENCH_DIR/backend_asyncio.py" --overhead-ms "$OVERHEAD_MS") ;;
    esac
    "${LOAD_PIN[@]}" "${backend_cmd[@]}" --port "${PORTS[$i]}" --service-ms "$SERVICE_MS" \
        --name "b$((i + 1))" --failures "$FAILURES" --seed "$((SEED + i))" \
        >"$TMP/backend-b$((i + 1)).log" 2>&1 &
    BACKEND_PIDS+=($!)
done
for i in 0 1 2; do
    wait_http "${BACKEND_PIDS[$i]}" "http://127.0.0.1:${PORTS[$i]}/_stats" ||
        die "backend b$((i + 1)) did not answer on 127.0.0.1:${PORTS[$i]} (log in $TMP)"
done
log "$BACKEND_KIND backends b1 b2 b3 on ${PORTS[*]} (127.0.0.1), ${SERVICE_MS} ms per request, one at a time"

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

# phases.txt is what the generator reads (it POSTs the control URLs itself at each phase
# start, so the switch is exact); timeline.tsv tells the report what each phase is: name,
# seconds, role (warmup, baseline, slow, fail, reset, recovered), the backend the role is
# about, and a description.
PHASES="$TMP/phases.txt"
TIMELINE_TSV="$OUT/timeline.tsv"
control_url() { # address query
    printf 'http://%s/_control?%s' "$1" "$2"
}
{
    echo "# name seconds [control URLs POSTed when the phase starts]"
    ((WARMUP > 0)) && echo "warmup $WARMUP"
    echo "A $PHASE_A"
    echo "B $PHASE_B $(control_url "$SLOW_ADDR" "slow_factor=$SLOW_FACTOR")"
    if [[ $TIMELINE == classic ]]; then
        echo "C $PHASE_C $(control_url "$SLOW_ADDR" slow_factor=1)"
        echo "D $PHASE_D $(control_url "$FAIL_ADDR" "${FAIL_KIND}_ratio=$FAIL_RATIO")"
        echo "E $PHASE_E $(control_url "$FAIL_ADDR" "${FAIL_KIND}_ratio=0")"
    else
        echo "C1 $PHASE_C1 $(control_url "$SLOW_ADDR" slow_factor=1) $(control_url "$FAIL_ADDR" "fail_ratio=$FAIL_RATIO")"
        echo "C2 $PHASE_C2 $(control_url "$FAIL_ADDR" "fail_ratio=0&reset_ratio=$FAIL_RATIO")"
        echo "D $PHASE_D $(control_url "$FAIL_ADDR" reset_ratio=0)"
    fi
} >"$PHASES"
cp "$PHASES" "$OUT/phases.txt"
FAIL_PCT=$(python3 -c 'import sys; print(f"{100 * float(sys.argv[1]):g}")' "$FAIL_RATIO")
SLOW_MS=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) * float(sys.argv[2]):g}")' "$SERVICE_MS" "$SLOW_FACTOR")
slow_text="$SLOW_BACKEND ${SLOW_FACTOR}× slower ($SLOW_MS ms per request)"
fail_text="$FAIL_BACKEND answers $FAIL_PCT % of its requests with an immediate 500 (the rest normally)"
reset_text="$FAIL_BACKEND resets the connection of $FAIL_PCT % of its requests before any response byte"
phase_line() { # name seconds role backend description
    printf '%s\t%s\t%s\t%s\t%s\n' "$@"
}
{
    ((WARMUP > 0)) && phase_line warmup "$WARMUP" warmup "" "all healthy, not reported (connections warm up)"
    phase_line A "$PHASE_A" baseline "" "all healthy (baseline)"
    phase_line B "$PHASE_B" slow "$SLOW_BACKEND" "$slow_text"
    if [[ $TIMELINE == classic ]]; then
        phase_line C "$PHASE_C" recovered "$SLOW_BACKEND" "$SLOW_BACKEND recovered (slow_factor=1)"
        if [[ $FAIL_KIND == fail ]]; then
            phase_line D "$PHASE_D" fail "$FAIL_BACKEND" "$fail_text"
        else
            phase_line D "$PHASE_D" reset "$FAIL_BACKEND" "$reset_text"
        fi
        phase_line E "$PHASE_E" recovered "$FAIL_BACKEND" "$FAIL_BACKEND recovered"
    else
        phase_line C1 "$PHASE_C1" fail "$FAIL_BACKEND" "$SLOW_BACKEND recovered; $fail_text"
        phase_line C2 "$PHASE_C2" reset "$FAIL_BACKEND" "$reset_text"
        phase_line D "$PHASE_D" recovered "$FAIL_BACKEND" "all healthy again ($FAIL_BACKEND recovered)"
    fi
} >"$TIMELINE_TSV"

# ---------------------------------------------------------------- proxy configs

backend_lines() { # format (%s = name, %s = address)
    local i
    for i in 0 1 2; do
        # shellcheck disable=SC2059 # the format is the caller's
        printf "$1" "b$((i + 1))" "127.0.0.1:${PORTS[$i]}"
    done
}

# Sentinel as a user who writes only the strategy gets it: the original schema (listen
# address, backends) plus `strategy`, everything else at its defaults. Logging is quieted
# (warnings only, no access log), which does not touch balancing.
sentinel_config() { # port strategy
    cat <<EOC
server:
  listen_addr: "127.0.0.1:$1"
proxy:
  strategy: $2
  backends:
$(backend_lines '    - {name: %s, address: "%s"}\n')
logging:
  level: warn
  access_log: false
EOC
}

# sentinel-adaptive-tuned: the settings this script gave every Sentinel row before issue 16,
# the counterpart of nginx-retry's `proxy_next_upstream ... http_500 http_502 http_503`: these
# statuses are backend failures (penalised, counted by passive health and the breaker) and
# idempotent requests getting one are retried on another backend, within the retry budget;
# timeouts as nginx's and HAProxy's.
sentinel_tuned_config() { # port
    cat <<EOC
server:
  listen_addr: "127.0.0.1:$1"
proxy:
  strategy: adaptive
  backends:
$(backend_lines '    - {name: %s, address: "%s"}\n')
  connection_timeout_ms: 1000
  request_timeout_ms: $((TIMEOUT * 1000))
  # nginx's proxy_send_timeout and proxy_read_timeout below.
  send_timeout_ms: $((TIMEOUT * 1000))
  read_timeout_ms: $((TIMEOUT * 1000))
  failure_statuses: [500, 502, 503]
logging:
  level: warn
  access_log: false
EOC
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
            local strategy=adaptive
            case $system in
                sentinel-rr) strategy=round_robin ;;
                sentinel-lc) strategy=least_connections ;;
            esac
            if [[ $system == sentinel-adaptive-tuned ]]; then
                sentinel_tuned_config "$port" >"$dir/sentinel.yaml"
            else
                sentinel_config "$port" "$strategy" >"$dir/sentinel.yaml"
            fi
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
    log "$system: ${RUN_SECONDS} s of ${RATE} req/s, $ARRIVALS arrivals ($(grep -v '^#' "$PHASES" | awk '{printf "%s%s %s s", sep, $1, $2; sep = ", "}'))"
    local stats_args=() port_s
    for port_s in "${PORTS[@]}"; do
        stats_args+=(--backend-stats "http://127.0.0.1:$port_s/_stats")
    done
    timeout --foreground -k 5 $((RUN_SECONDS + CLIENT_TIMEOUT + 30)) "${LOAD_PIN[@]}" "$OPENLOOP" load \
        --url "http://127.0.0.1:$port/" --rate "$RATE" --arrivals "$ARRIVALS" --seed "$SEED" \
        --phase-file "$PHASES" "${stats_args[@]}" \
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
    phase_settings=""
    for var in WARMUP "${PHASE_VARS[@]}"; do
        phase_settings+="$var=${!var} "
    done
    [[ $TIMELINE == classic ]] && phase_settings+="FAIL_KIND=$FAIL_KIND "
    kind_settings="BACKEND_KIND=$BACKEND_KIND"
    [[ $BACKEND_KIND == asyncio ]] && kind_settings+=" OVERHEAD_MS=$OVERHEAD_MS"
    printf 'command\t`TIMELINE=%s %s ARRIVALS=%s SEED=%s FAILURES=%s RATE=%s SERVICE_MS=%s SLOW_FACTOR=%s FAIL_RATIO=%s SLOW_BACKEND=%s FAIL_BACKEND=%s %sTIMEOUT=%s CLIENT_TIMEOUT=%s SYSTEMS="%s" PIN=%s bench/adaptive.sh`\n' \
        "$TIMELINE" "$kind_settings" "$ARRIVALS" "$SEED" "$FAILURES" "$RATE" "$SERVICE_MS" "$SLOW_FACTOR" \
        "$FAIL_RATIO" "$SLOW_BACKEND" "$FAIL_BACKEND" "$phase_settings" "$TIMEOUT" "$CLIENT_TIMEOUT" \
        "${SYSTEMS[*]}" "$PIN"
    printf 'cpu pinning\t%s\n' "$PINNING"
    common_facts | grep -v '^wrk'
    printf 'haproxy\t%s\n' "$("$HAPROXY" -v 2>&1 | head -n 1 | sed 's/^HAProxy version //')"
    printf 'rate\t%s\n' "$RATE"
    printf 'service_ms\t%s\n' "$SERVICE_MS"
    printf 'slow_factor\t%s\n' "$SLOW_FACTOR"
    printf 'fail_ratio\t%s\n' "$FAIL_RATIO"
    printf 'fail_kind\t%s\n' "$FAIL_KIND"
    printf 'timeline\t%s\n' "$TIMELINE"
    printf 'backend_kind\t%s\n' "$BACKEND_KIND"
    printf 'overhead_ms\t%s\n' "$OVERHEAD_MS"
    printf 'arrivals\t%s\n' "$ARRIVALS"
    printf 'seed\t%s\n' "$SEED"
    printf 'failures\t%s\n' "$FAILURES"
    printf 'python\t%s\n' "$(python3 -V 2>&1)"
    printf 'timeout\t%s\n' "$TIMEOUT"
    printf 'client_timeout\t%s\n' "$CLIENT_TIMEOUT"
    printf 'recovery_factor\t%s\n' "$RECOVERY_FACTOR"
    printf 'connections\t%s\n' "$CONNECTIONS"
    printf 'ticks\t%s\n' "$(getconf CLK_TCK)"
    printf 'ncpu\t%s\n' "$(grep -c '^cpu[0-9]' /proc/stat)"
} >"$FACTS"

REPORT="$RESULTS_DIR/adaptive-$STAMP.md"
python3 "$BENCH_DIR/summarize_adaptive.py" "$MANIFEST" "$FACTS" "$TIMELINE_TSV" >"$REPORT"
cp "$TMP"/backend-*.log "$OUT/" 2>/dev/null || true
cat "$REPORT"
log "report written to ${REPORT#"$REPO_DIR"/} (raw data, configs and logs in ${OUT#"$REPO_DIR"/}/)"
