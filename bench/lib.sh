# shellcheck shell=bash
# shellcheck disable=SC2034 # the CPU_*, NGINX_PIDS and BUSY_PCT globals are read by the callers
# Shared pieces of the benchmark scripts (bench/run.sh, bench/reload.sh, bench/adaptive.sh). Source it, do not
# run it. The sourcing script sets `set -euo pipefail`; the functions below only define
# globals whose names are documented next to them.

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
warn() { printf '[bench] WARNING: %s\n' "$*" >&2; }

# ---------------------------------------------------------------- pinning and build

# With PIN=1, check that SERVER_CPUS and LOAD_CPUS can be used and set the command prefixes
# SERVER_PIN and LOAD_PIN (arrays; empty when not pinning). PIN falls back to 0 without
# taskset or with a single CPU.
setup_pinning() {
    SERVER_PIN=()
    LOAD_PIN=()
    ((PIN)) || return 0
    if ! command -v taskset >/dev/null 2>&1; then
        warn "taskset not found (package util-linux): running without CPU pinning"
        PIN=0
    elif (($(nproc) < 2)); then
        warn "only $(nproc) CPU available: running without CPU pinning"
        PIN=0
    else
        taskset -c "$SERVER_CPUS" true 2>/dev/null || die "taskset -c $SERVER_CPUS fails (SERVER_CPUS)"
        taskset -c "$LOAD_CPUS" true 2>/dev/null || die "taskset -c $LOAD_CPUS fails (LOAD_CPUS)"
        SERVER_PIN=(taskset -c "$SERVER_CPUS")
        LOAD_PIN=(taskset -c "$LOAD_CPUS")
    fi
}

# Build Sentinel (release) from REPO_DIR. Sets SENTINEL (the binary) and
# SENTINEL_UNAVAILABLE: non-empty, with the reason, when it cannot be measured; the caller then
# reports its runs as n/a instead of stopping.
build_sentinel() {
    SENTINEL="$REPO_DIR/target/release/sentinel"
    SENTINEL_UNAVAILABLE=""
    log "building Sentinel (cargo build --release)"
    if ! cargo build --release --quiet --manifest-path "$REPO_DIR/Cargo.toml" >&2; then
        SENTINEL_UNAVAILABLE="cargo build --release failed"
    elif [[ ! -x $SENTINEL ]]; then
        SENTINEL_UNAVAILABLE="$SENTINEL was not built"
    fi
    [[ -z $SENTINEL_UNAVAILABLE ]] || warn "$SENTINEL_UNAVAILABLE: Sentinel's runs will be reported as n/a"
}

# ---------------------------------------------------------------- tools

find_nginx() {
    if command -v nginx >/dev/null 2>&1; then
        command -v nginx
    elif [[ -x /usr/sbin/nginx ]]; then
        echo /usr/sbin/nginx
    fi
}

# Install nginx, wrk, curl and any further tools named as arguments (Debian package = command
# name, e.g. haproxy) with apt-get when they are missing.
install_missing() { # [tool ...]
    local packages=() tool
    [[ -n $(find_nginx) ]] || packages+=(nginx)
    command -v wrk >/dev/null 2>&1 || packages+=(wrk)
    command -v curl >/dev/null 2>&1 || packages+=(curl)
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] || packages+=("$tool")
    done
    ((${#packages[@]} == 0)) && return 0
    [[ $(id -u) -eq 0 ]] || die "missing ${packages[*]}; run as root or install them first"
    command -v apt-get >/dev/null 2>&1 || die "missing ${packages[*]} and no apt-get"
    log "installing ${packages[*]}"
    # Keep the package's init script from starting a system nginx on port 80: we run our
    # own. policy-rc.d is only created (and removed) when it does not exist already.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    local status=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
    } >&2 || status=$?
    if ((status != 0)) && [[ " ${packages[*]} " == *" nginx "* ]]; then
        log "installing nginx failed; trying nginx-light"
        packages=("${packages[@]/#nginx/nginx-light}")
        status=0
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >&2 || status=$?
    fi
    ((created_policy)) && rm -f "$policy"
    ((status == 0)) || die "apt-get install ${packages[*]} failed"
}

# ---------------------------------------------------------------- processes and ports

# Stop one process we started, by PID: SIGTERM, up to 5 s, then SIGKILL.
stop_pid() { # name pid
    local name=$1 pid=$2
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) did not stop on SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# N distinct free ports on 127.0.0.1, one per line (all bound at once, so never the same).
free_ports() { # n
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# Temporary-file directives for an nginx whose prefix is $1 (keeps it out of system dirs).
nginx_temp_paths() { # dir
    local dir=$1
    printf '    client_body_temp_path %s/tmp/body;\n' "$dir"
    printf '    proxy_temp_path %s/tmp/proxy;\n' "$dir"
    printf '    fastcgi_temp_path %s/tmp/fastcgi;\n' "$dir"
    printf '    uwsgi_temp_path %s/tmp/uwsgi;\n' "$dir"
    printf '    scgi_temp_path %s/tmp/scgi;\n' "$dir"
}

# ---- CPU accounting, so a run disturbed by other work on the machine can be recognised and
# so each server's CPU cost per request can be reported (less noisy than req/s).
# All values are in clock ticks (USER_HZ) read from /proc; results go to CPU_* globals so
# no subshell is needed (a subshell would disturb the children-time accounting).

# Sum of user+system ticks of the given PIDs (all their threads) -> CPU_PROC.
proc_ticks() {
    local pid line fields total=0
    for pid in "$@"; do
        [[ -r /proc/$pid/stat ]] || continue
        read -r line </proc/"$pid"/stat || continue
        read -r -a fields <<<"${line##*) }"
        total=$((total + fields[11] + fields[12]))
    done
    CPU_PROC=$total
}

# An nginx master and its workers -> NGINX_PIDS (master first).
nginx_pids() { # master-pid
    local master=$1 file line fields
    NGINX_PIDS=("$master")
    for file in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$file" || continue
        read -r -a fields <<<"${line##*) }"
        if [[ ${fields[1]} == "$master" ]]; then NGINX_PIDS+=("${file//[^0-9]/}"); fi
    done
    return 0
}

# Machine-wide busy and total ticks over all CPUs, from /proc/stat -> CPU_BUSY, CPU_TOTAL.
# Busy includes irq and softirq: loopback traffic is processed in softirq, which per-process
# times partly include.
machine_ticks() {
    local user nice system idle iowait irq softirq steal rest
    read -r _ user nice system idle iowait irq softirq steal rest </proc/stat
    CPU_BUSY=$((user + nice + system + irq + softirq))
    CPU_TOTAL=$((user + nice + system + idle + iowait + irq + softirq + steal))
}

# CPU time of this shell's finished children (wrk, once waited for): cutime + cstime
# -> CPU_CHILDREN.
children_ticks() {
    local line fields
    read -r line </proc/$$/stat
    read -r -a fields <<<"${line##*) }"
    CPU_CHILDREN=$((fields[13] + fields[14]))
}

# Percentage of all CPUs that were busy over one second, before any load is started
# -> BUSY_PCT.
busy_percent() {
    machine_ticks
    local busy0=$CPU_BUSY total0=$CPU_TOTAL
    sleep 1
    machine_ticks
    BUSY_PCT=$(((CPU_BUSY - busy0) * 100 / (CPU_TOTAL - total0 > 0 ? CPU_TOTAL - total0 : 1)))
}

# Before a measured run, wait (at most QUIET_WAIT seconds) for the machine to be idle enough
# (at most QUIET_MAX % busy). Leaves BUSY_PCT set.
wait_quiet() {
    local waited=0
    busy_percent
    while ((BUSY_PCT > QUIET_MAX && waited < QUIET_WAIT)); do
        ((waited == 0)) && log "machine is ${BUSY_PCT}% busy before the run; waiting up to ${QUIET_WAIT}s for it to settle"
        sleep 2
        waited=$((waited + 3))
        busy_percent
    done
    ((BUSY_PCT > QUIET_MAX)) && log "still ${BUSY_PCT}% busy; measuring anyway (flagged in the report)"
    return 0
}

# ---------------------------------------------------------------- report

# "key<TAB>value" lines shared by every report: machine, versions. Needs SENTINEL, NGINX and
# REPO_DIR.
common_facts() {
    printf 'cpu\t%s × %s\n' "$(nproc)" \
        "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    printf 'kernel\t%s\n' "$(uname -sr)"
    printf 'memory\t%s MiB\n' "$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
    printf 'sentinel\t%s (release build), commit %s%s\n' \
        "$("$SENTINEL" --version 2>&1 | head -n 1)" \
        "$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        "$(if [[ -n $(git -C "$REPO_DIR" status --porcelain --untracked-files=no 2>/dev/null) ]]; then echo ' + uncommitted changes'; fi)"
    printf 'nginx\t%s\n' "$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
    printf 'wrk\t%s\n' "$(wrk -v 2>&1 | head -n 1 | awk '{print $1, $2, $3}')"
    printf 'rustc\t%s\n' "$(rustc -V 2>/dev/null || echo unknown)"
}
