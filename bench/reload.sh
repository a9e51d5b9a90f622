#!/usr/bin/env bash
# Config reload benchmark: Sentinel (hot reload: watches its config file's directory) vs
# nginx (`nginx -s reload` after rewriting its conf), both reverse proxies in front of the
# same three tiny backends a, b and c (one separate nginx, three server blocks answering
# `a`, `b`, `c`). The proxies start with backends {a, b}; the config then alternates
# {a, c}, {a, b}, ...
#
#   bench/reload.sh                          # defaults, about 1 minute after the build
#   ITERATIONS=50 RELOADS=40 bench/reload.sh
#
# 1. Reload latency: after each rewrite (nginx: rewrite + `nginx -s reload`), poll the proxy
#    with fresh requests (a new TCP connection each, back to back) until one is answered by
#    the backend the new config adds; the elapsed ms from the moment the file is on disk.
#    Sentinel's writes alternate (two each) between in place (truncate + write) and a
#    temporary file renamed over the config (editors' way).
# 2. Errors during reloads under load: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s against
#    the proxy while the config is rewritten RELOADS times, one every INTERVAL_MS.
#
# Environment:
#   ITERATIONS     reloads measured for latency, per proxy (even)              default 20
#   POLL_TIMEOUT   seconds to wait for the new backend after one reload         default 5
#   SETTLE_MS      polling after each switch (checks nothing stale answers)     default 300
#   RELOADS        reloads during the wrk run (even)                            default 20
#   INTERVAL_MS    between those reloads                                        default 250
#   DELAY_MS       wrk runs this long before the first of them                  default 1000
#   DURATION       wrk seconds         default: enough for DELAY_MS + RELOADS × INTERVAL_MS + 2 s
#   CONNECTIONS    wrk -c                                                       default 32
#   THREADS        wrk -t                                                       default 2
#   NGINX_WORKERS  worker_processes of the nginx under test                     default auto
#   QUIET_MAX      before each phase, wait while the machine is more than this % busy  default 20
#   QUIET_WAIT     ... but at most this many seconds                           default 60
#   KEEP_TMP=1     keep the temporary directory
#
# Needs: Rust toolchain, python3, curl; installs nginx and wrk with apt-get when missing (as
# root). Everything listens on 127.0.0.1, on ports chosen at run time; only processes this
# script started are stopped. The report is printed and written to
# bench/results/reload-<timestamp>.md (raw data in bench/results/reload-<timestamp>/; the
# directory is ignored by git). See bench/README.md.

set -euo pipefail

ITERATIONS=${ITERATIONS:-20}
POLL_TIMEOUT=${POLL_TIMEOUT:-5}
SETTLE_MS=${SETTLE_MS:-300}
RELOADS=${RELOADS:-20}
INTERVAL_MS=${INTERVAL_MS:-250}
DELAY_MS=${DELAY_MS:-1000}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
QUIET_MAX=${QUIET_MAX:-20}
QUIET_WAIT=${QUIET_WAIT:-60}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
RESULTS_DIR="$BENCH_DIR/results"
PROBE="$BENCH_DIR/reload_probe.py"

# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"


for var in ITERATIONS POLL_TIMEOUT SETTLE_MS RELOADS INTERVAL_MS DELAY_MS CONNECTIONS THREADS QUIET_MAX QUIET_WAIT; do
    [[ ${!var} =~ ^[0-9]+$ ]] || die "$var must be a non-negative integer (got '${!var}')"
done
((ITERATIONS >= 2 && ITERATIONS % 2 == 0)) || die "ITERATIONS must be even and at least 2 (each pair ends on {a,b})"
((RELOADS >= 2 && RELOADS % 2 == 0)) || die "RELOADS must be even and at least 2"
((POLL_TIMEOUT >= 1 && INTERVAL_MS >= 1 && CONNECTIONS >= 1 && THREADS >= 1)) ||
    die "POLL_TIMEOUT, INTERVAL_MS, CONNECTIONS and THREADS must be at least 1"
((CONNECTIONS >= THREADS)) || die "CONNECTIONS must be >= THREADS (wrk requirement)"
[[ $NGINX_WORKERS =~ ^(auto|[1-9][0-9]*)$ ]] || die "NGINX_WORKERS must be auto or a positive integer"
CHURN_MS=$((DELAY_MS + RELOADS * INTERVAL_MS + 500))
DURATION=${DURATION:-$(((CHURN_MS + 999) / 1000 + 2))}
[[ $DURATION =~ ^[0-9]+$ ]] || die "DURATION must be a positive integer (got '$DURATION')"
((DURATION * 1000 >= CHURN_MS)) ||
    die "DURATION=${DURATION}s is shorter than DELAY_MS + RELOADS × INTERVAL_MS + 0.5 s (${CHURN_MS} ms)"

# ---------------------------------------------------------------- tools

# shellcheck disable=SC2119 # no tools beyond the default ones
install_missing
NGINX=$(find_nginx)
[[ -n $NGINX ]] || die "nginx not found after installation"
command -v wrk >/dev/null || die "wrk not found"
command -v python3 >/dev/null || die "python3 not found"
command -v curl >/dev/null || die "curl not found"
command -v cargo >/dev/null || die "cargo not found (install the Rust toolchain)"
command -v timeout >/dev/null || die "timeout (coreutils) not found"
[[ -r $PROBE ]] || die "$PROBE not found"

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- build

build_sentinel

# ---------------------------------------------------------------- temp dir and cleanup

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sentinel-reload.XXXXXX")
chmod 755 "$TMP"
SENTINEL_PID=""
NGINX_PID=""
BACKEND_PID=""
WRK_PID=""

cleanup() {
    local status=$?
    stop_pid wrk "$WRK_PID"
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

mapfile -t PORTS < <(free_ports 5)
((${#PORTS[@]} == 5)) || die "could not find free ports"
SENTINEL_PORT=${PORTS[0]}
NGINX_PORT=${PORTS[1]}
PORT_A=${PORTS[2]}
PORT_B=${PORTS[3]}
PORT_C=${PORTS[4]}
port_of_backend() { case $1 in a) echo "$PORT_A" ;; b) echo "$PORT_B" ;; c) echo "$PORT_C" ;; esac }

VARIANTS="$TMP/variants" # outside every watched directory
RAW="$TMP/raw"
mkdir -p "$VARIANTS" "$RAW"

# ---------------------------------------------------------------- backends: a, b, c

mkdir -p "$TMP/backend/tmp"
{
    cat <<EOF
worker_processes 1;
pid $TMP/backend/nginx.pid;
error_log $TMP/backend/error.log warn;
events {
    worker_connections 4096;
}
http {
    default_type text/plain;
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 100000;
$(nginx_temp_paths "$TMP/backend")
EOF
    for name in a b c; do
        printf '    server {\n        listen 127.0.0.1:%s;\n        location / {\n            return 200 "%s";\n        }\n    }\n' \
            "$(port_of_backend "$name")" "$name"
    done
    printf '}\n'
} >"$TMP/backend/nginx.conf"
BACKEND_ARGS=(-p "$TMP/backend" -c "$TMP/backend/nginx.conf" -e "$TMP/backend/error.log")
"$NGINX" "${BACKEND_ARGS[@]}" -t -q -g 'daemon off;' || die "the backend nginx rejected its config"

# ---------------------------------------------------------------- nginx under test

# Variant "b" has backends {a, b}, variant "c" has {a, c}.
nginx_conf() { # second-backend
    cat <<EOF
worker_processes $NGINX_WORKERS;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log notice;
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
        server 127.0.0.1:$PORT_A;
        server 127.0.0.1:$(port_of_backend "$1");
        keepalive 64;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}
mkdir -p "$TMP/nginx/tmp"
for second in b c; do nginx_conf "$second" >"$VARIANTS/nginx-$second.conf"; done
NGINX_CONF="$TMP/nginx/nginx.conf"
cp "$VARIANTS/nginx-b.conf" "$NGINX_CONF"
NGINX_ARGS=(-p "$TMP/nginx" -c "$NGINX_CONF" -e "$TMP/nginx/error.log")
NGINX_RELOAD=("$NGINX" "${NGINX_ARGS[@]}" -s reload)
for second in b c; do
    "$NGINX" -p "$TMP/nginx" -c "$VARIANTS/nginx-$second.conf" -e "$TMP/nginx/error.log" -t -q -g 'daemon off;' ||
        die "nginx rejected its {a,$second} config"
done

# ---------------------------------------------------------------- Sentinel config

sentinel_conf() { # second-backend
    cat <<EOF
server:
  listen_addr: "127.0.0.1:$SENTINEL_PORT"
  max_requests_per_connection: 100000
proxy:
  backends:
    - name: "a"
      address: "127.0.0.1:$PORT_A"
    - name: "$1"
      address: "127.0.0.1:$(port_of_backend "$1")"
logging:
  level: info
  access_log: false
EOF
}
for second in b c; do sentinel_conf "$second" >"$VARIANTS/sentinel-$second.yaml"; done
# Sentinel watches the config's directory: keep it to the config alone (its log goes
# elsewhere, or every log line would be a change event).
mkdir -p "$TMP/sentinel-conf"
SENTINEL_CONF="$TMP/sentinel-conf/sentinel.yaml"
cp "$VARIANTS/sentinel-b.yaml" "$SENTINEL_CONF"
SENTINEL_LOG="$TMP/sentinel.log"
if [[ -z $SENTINEL_UNAVAILABLE ]]; then
    for second in b c; do
        if ! "$SENTINEL" --check --config "$VARIANTS/sentinel-$second.yaml" >&2; then
            SENTINEL_UNAVAILABLE="Sentinel rejected its {a,$second} config (sentinel --check)"
            warn "$SENTINEL_UNAVAILABLE"
            break
        fi
    done
fi

# ---------------------------------------------------------------- start

# Body of GET / (empty when nothing answers 200 within 2 s).
body_of() { curl -s -f --max-time 2 "$1" || true; }

# Wait until url answers 200 with one of the expected bodies. Returns 1 if the process
# exits or that does not happen within 10 s.
wait_body() { # pid url body-regex
    local pid=$1 url=$2 want=$3
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        [[ $(body_of "$url") =~ ^($want)$ ]] && return 0
        sleep 0.1
    done
    return 1
}

log "starting the backend nginx: a on :$PORT_A, b on :$PORT_B, c on :$PORT_C"
"$NGINX" "${BACKEND_ARGS[@]}" -g 'daemon off;' >"$TMP/backend/stdout.log" 2>&1 &
BACKEND_PID=$!
for name in a b c; do
    wait_body "$BACKEND_PID" "http://127.0.0.1:$(port_of_backend "$name")/" "$name" ||
        die "backend $name does not answer \"$name\" on 127.0.0.1:$(port_of_backend "$name") (logs in $TMP)"
done

log "starting nginx (proxy under test) on 127.0.0.1:$NGINX_PORT"
"$NGINX" "${NGINX_ARGS[@]}" -g 'daemon off;' >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
wait_body "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/" "a|b" ||
    die "nginx does not proxy to a/b on 127.0.0.1:$NGINX_PORT (logs in $TMP)"

SENTINEL_NOTE=""
if [[ -z $SENTINEL_UNAVAILABLE ]]; then
    log "starting Sentinel on 127.0.0.1:$SENTINEL_PORT"
    # LISTEN would override listen_addr and RUST_LOG the log level: keep them out.
    env -u LISTEN -u RUST_LOG "$SENTINEL" --config "$SENTINEL_CONF" >>"$SENTINEL_LOG" 2>&1 &
    SENTINEL_PID=$!
    if ! wait_body "$SENTINEL_PID" "http://127.0.0.1:$SENTINEL_PORT/" "a|b"; then
        SENTINEL_UNAVAILABLE="Sentinel did not start or does not proxy to a/b on 127.0.0.1:$SENTINEL_PORT"
        warn "$SENTINEL_UNAVAILABLE; its log:"
        tail -n 5 "$SENTINEL_LOG" >&2 || true
        stop_pid sentinel "$SENTINEL_PID"
        SENTINEL_PID=""
    elif ! grep -q 'watching the config' "$SENTINEL_LOG"; then
        SENTINEL_NOTE="Sentinel did not log \`watching the config for changes\` at startup"
        warn "$SENTINEL_NOTE (measuring anyway); its log:"
        tail -n 5 "$SENTINEL_LOG" >&2 || true
    fi
fi
log "the backends and the proxies answer"

PHASE_NOTES=()
note_busy() { # phase
    wait_quiet
    PHASE_NOTES+=("$1: machine ${BUSY_PCT}% busy just before, load average $(cut -d' ' -f1-3 /proc/loadavg)")
}

# Put a proxy back on {a, b} (after an interrupted series) and let it settle.
reset_to_b() { # system
    if [[ $1 == sentinel ]]; then
        cmp -s "$VARIANTS/sentinel-b.yaml" "$SENTINEL_CONF" || cp "$VARIANTS/sentinel-b.yaml" "$SENTINEL_CONF"
    elif ! cmp -s "$VARIANTS/nginx-b.conf" "$NGINX_CONF"; then
        cp "$VARIANTS/nginx-b.conf" "$NGINX_CONF"
        timeout 10 "${NGINX_RELOAD[@]}" || warn "nginx -s reload failed"
    fi
    sleep 1
}

alive_or_note() { # system pid
    if ! kill -0 "$2" 2>/dev/null; then
        PHASE_NOTES+=("**$1 exited during the benchmark** (see its log)")
        warn "$1 (pid $2) has exited"
        return 1
    fi
}

LATENCY_LIMIT=$((ITERATIONS * (POLL_TIMEOUT + 11) + SETTLE_MS * ITERATIONS / 1000 + 30))

# ---------------------------------------------------------------- 1. reload latency

LAT_SENTINEL=""
if [[ -n $SENTINEL_PID ]]; then
    note_busy "latency, sentinel"
    log "reload latency: Sentinel, $ITERATIONS reloads (file watch; in-place and rename writes)"
    timeout -k 5 "$LATENCY_LIMIT" python3 "$PROBE" latency --name sentinel --port "$SENTINEL_PORT" \
        --config "$SENTINEL_CONF" --variant "b=$VARIANTS/sentinel-b.yaml" --variant "c=$VARIANTS/sentinel-c.yaml" \
        --modes inplace,rename --iterations "$ITERATIONS" --timeout "$POLL_TIMEOUT" --settle-ms "$SETTLE_MS" \
        --log "$SENTINEL_LOG" --out "$RAW/latency-sentinel.json" || warn "the Sentinel latency probe failed"
    [[ -s $RAW/latency-sentinel.json ]] && LAT_SENTINEL="$RAW/latency-sentinel.json"
    alive_or_note sentinel "$SENTINEL_PID" || SENTINEL_PID=""
fi

note_busy "latency, nginx"
log "reload latency: nginx, $ITERATIONS reloads (conf rewritten in place, then nginx -s reload)"
timeout -k 5 "$LATENCY_LIMIT" python3 "$PROBE" latency --name nginx --port "$NGINX_PORT" \
    --config "$NGINX_CONF" --variant "b=$VARIANTS/nginx-b.conf" --variant "c=$VARIANTS/nginx-c.conf" \
    --modes inplace --iterations "$ITERATIONS" --timeout "$POLL_TIMEOUT" --settle-ms "$SETTLE_MS" \
    --log "$TMP/nginx/error.log" --out "$RAW/latency-nginx.json" -- "${NGINX_RELOAD[@]}" ||
    die "the nginx latency probe failed"
alive_or_note nginx "$NGINX_PID" || die "nginx exited"

# ---------------------------------------------------------------- 2. errors under load

WRK_ARGS=(-t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency)

# wrk in the background, the config churn in the foreground. Both bounded by `timeout`.
load_phase() { # system port config modes variant-b variant-c log [reload command...]
    local system=$1 port=$2 config=$3 modes=$4 vb=$5 vc=$6 logfile=$7
    shift 7
    local reload=()
    (($# > 0)) && reload=(-- "$@")
    reset_to_b "$system"
    note_busy "load, $system"
    log "errors under load: $system, wrk ${WRK_ARGS[*]} while the config changes $RELOADS times every ${INTERVAL_MS} ms"
    timeout -k 5 $((DURATION + 30)) wrk "${WRK_ARGS[@]}" "http://127.0.0.1:$port/" >"$RAW/wrk-$system.txt" 2>&1 &
    WRK_PID=$!
    timeout -k 5 $((CHURN_MS / 1000 + RELOADS * 11 + 30)) python3 "$PROBE" churn --config "$config" \
        --variant "b=$vb" --variant "c=$vc" --modes "$modes" --writes "$RELOADS" \
        --interval-ms "$INTERVAL_MS" --delay-ms "$DELAY_MS" --log "$logfile" \
        --out "$RAW/churn-$system.json" "${reload[@]}" || warn "the $system churn failed"
    local status=0
    wait "$WRK_PID" || status=$?
    WRK_PID=""
    ((status == 0)) || warn "wrk against $system exited with status $status"
    log "  $system: $(grep -E 'requests in|Socket errors|Non-2xx' "$RAW/wrk-$system.txt" | tr -s ' ' | tr '\n' ';')"
}

WRK_SENTINEL=""
CHURN_SENTINEL=""
if [[ -n $SENTINEL_PID ]]; then
    load_phase sentinel "$SENTINEL_PORT" "$SENTINEL_CONF" inplace,rename \
        "$VARIANTS/sentinel-b.yaml" "$VARIANTS/sentinel-c.yaml" "$SENTINEL_LOG"
    WRK_SENTINEL="$RAW/wrk-sentinel.txt"
    [[ -s $RAW/churn-sentinel.json ]] && CHURN_SENTINEL="$RAW/churn-sentinel.json"
    alive_or_note sentinel "$SENTINEL_PID" || SENTINEL_PID=""
fi
load_phase nginx "$NGINX_PORT" "$NGINX_CONF" inplace \
    "$VARIANTS/nginx-b.conf" "$VARIANTS/nginx-c.conf" "$TMP/nginx/error.log" "${NGINX_RELOAD[@]}"
alive_or_note nginx "$NGINX_PID" || true

# ---------------------------------------------------------------- report

FACTS="$TMP/facts.tsv"
# shellcheck disable=SC2016 # the backquotes are markdown, not command substitution
{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf 'command\t`ITERATIONS=%s POLL_TIMEOUT=%s SETTLE_MS=%s RELOADS=%s INTERVAL_MS=%s DELAY_MS=%s DURATION=%s CONNECTIONS=%s THREADS=%s NGINX_WORKERS=%s bench/reload.sh`\n' \
        "$ITERATIONS" "$POLL_TIMEOUT" "$SETTLE_MS" "$RELOADS" "$INTERVAL_MS" "$DELAY_MS" "$DURATION" "$CONNECTIONS" "$THREADS" "$NGINX_WORKERS"
    printf 'cores\t%s (`nproc`); no CPU pinning: proxies, backends, wrk and the probe share all of them\n' "$(nproc)"
    printf 'load average\t%s at the start, %s at the end\n' "$LOAD_AT_START" "$(cut -d' ' -f1-3 /proc/loadavg)"
    for note in "${PHASE_NOTES[@]}"; do printf 'phase\t%s\n' "$note"; done
    common_facts
    printf 'backends\tone separate nginx (`worker_processes 1`), three `server` blocks on three loopback ports answering `return 200 "a"` / `"b"` / `"c"`\n'
    printf 'nginx setup\t`worker_processes %s`; `upstream` {a, b} or {a, c} with `keepalive 64`; `proxy_http_version 1.1`, `proxy_set_header Connection ""`; access_log off; error_log at notice (to count `reconfiguring`); reloaded with `nginx -p … -c … -s reload` after rewriting nginx.conf in place\n' "$NGINX_WORKERS"
    printf 'sentinel setup\t`proxy.backends` {a, b} or {a, c} (round-robin), `max_requests_per_connection: 100000`, `logging.level: info`, `access_log: false`; default tokio runtime (one worker per core); config alone in its directory, which Sentinel watches; writes alternate two in place (truncate + write) / two by rename of a temporary file in the same directory%s\n' \
        "$(if [[ -n $SENTINEL_NOTE ]]; then echo "; $SENTINEL_NOTE"; fi)"
    [[ -z $SENTINEL_UNAVAILABLE ]] || printf 'sentinel\t**n/a: %s**\n' "$SENTINEL_UNAVAILABLE"
} >"$FACTS"

mkdir -p "$RESULTS_DIR"
STAMP=$(date -u '+%Y%m%d-%H%M%S')
REPORT="$RESULTS_DIR/reload-$STAMP.md"
python3 "$PROBE" report --facts "$FACTS" \
    --latency-sentinel "$LAT_SENTINEL" --latency-nginx "$RAW/latency-nginx.json" \
    --wrk-sentinel "$WRK_SENTINEL" --wrk-nginx "$RAW/wrk-nginx.txt" \
    --churn-sentinel "$CHURN_SENTINEL" --churn-nginx "$RAW/churn-nginx.json" \
    --wrk-command "wrk ${WRK_ARGS[*]} http://127.0.0.1:PORT/" \
    --writes "$RELOADS" --interval-ms "$INTERVAL_MS" --delay-ms "$DELAY_MS" >"$REPORT"

# Keep the raw data and the logs next to the report.
mkdir -p "$RESULTS_DIR/reload-$STAMP"
cp "$RAW"/* "$RESULTS_DIR/reload-$STAMP/"
[[ -s $SENTINEL_LOG ]] && cp "$SENTINEL_LOG" "$RESULTS_DIR/reload-$STAMP/sentinel.log"
cp "$TMP/nginx/error.log" "$RESULTS_DIR/reload-$STAMP/nginx-error.log" 2>/dev/null || true

if [[ -s $TMP/backend/error.log ]]; then
    log "backend nginx error log is not empty:"
    tail -n 5 "$TMP/backend/error.log" >&2
fi

cat "$REPORT"
log "report written to ${REPORT#"$REPO_DIR"/} (raw data and logs in ${RESULTS_DIR#"$REPO_DIR"/}/reload-$STAMP/)"
