#!/usr/bin/env bash
# Plugins (issue 21): proxy-small requests per CPU-second through Sentinel with one
# header-adding proxy-wasm plugin (the AssemblyScript sample, built with the public SDK)
# against the same Sentinel without plugins, side by side in one run. Target: ratio ≥ 0.85.
#
#   bench/plugins.sh                                # about 1 minute
#   ROUNDS=1 DURATION=2 bench/plugins.sh
#   SENTINEL=target/debug/sentinel ROUNDS=1 DURATION=1 bench/plugins.sh   # smoke run only
#
# Installs nginx (the backend) and wrk with apt-get when missing (as root), builds Sentinel
# (release) unless SENTINEL names a binary, builds the sample plugin with npm when its module
# is missing, then runs bench/plugins.py, which measures and prints the report.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

install_missing
command -v taskset >/dev/null 2>&1 || die "taskset not found (package util-linux)"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
command -v npm >/dev/null 2>&1 || die "npm not found (Node.js 20 or later builds the sample plugin)"

if [[ -z ${SENTINEL:-} ]]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found (install the Rust toolchain)"
    build_sentinel
    [[ -z $SENTINEL_UNAVAILABLE ]] || die "$SENTINEL_UNAVAILABLE"
fi

SAMPLE="$REPO_DIR/examples/plugins/assemblyscript"
if [[ ! -f $SAMPLE/build/plugin.wasm ]]; then
    log "building the sample plugin (npm ci, npm run build)"
    [[ -d $SAMPLE/node_modules/assemblyscript ]] || npm ci --no-audit --no-fund --prefix "$SAMPLE" >&2
    npm run build --prefix "$SAMPLE" >&2
fi

NGINX=$(find_nginx) SENTINEL=$SENTINEL PLUGIN="$SAMPLE/build/plugin.wasm" \
    exec python3 "$BENCH_DIR/plugins.py"
