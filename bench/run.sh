#!/usr/bin/env bash
# The combined benchmark: Sentinel, nginx and HAProxy side by side in one run — static files,
# proxied small and 64 KiB responses, a new connection per request, 64 and 512 connections,
# one worker pinned to one core and all cores, idle keep-alive memory and 1 GiB transfers.
#
#   bench/run.sh                                   # everything, about 20 minutes
#   ROUNDS=1 DURATION=2 LAYOUTS=one IDLE_CONNECTIONS=500 TRANSFER_MIB=64 WRITE_DOCS=0 bench/run.sh
#
# Installs nginx, HAProxy, wrk and curl with apt-get when missing (as root), builds Sentinel
# (release), then runs bench/run.py, which does the measuring and writes the report to
# bench/results/ and its summary into docs/BENCHMARKS.md (WRITE_DOCS=0: not). Settings are
# environment variables, listed in bench/README.md.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

install_missing haproxy
command -v taskset >/dev/null 2>&1 || warn "taskset not found (package util-linux): nothing will be pinned"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
command -v cargo >/dev/null 2>&1 || die "cargo not found (install the Rust toolchain)"

build_sentinel
[[ -z $SENTINEL_UNAVAILABLE ]] || die "$SENTINEL_UNAVAILABLE"

exec python3 "$BENCH_DIR/run.py"
