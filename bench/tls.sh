#!/usr/bin/env bash
# TLS termination, Sentinel against nginx in one run: full and resumed handshakes per CPU-second
# (ECDSA P-256 and RSA 2048), keep-alive 1 KiB and 1 MiB responses over TLS, and the memory of
# an idle TLS connection. Issue 17's targets are in the report.
#
#   bench/tls.sh                                   # about 6 minutes
#   ROUNDS=1 DURATION=2 KINDS=ecdsa IDLE=200 bench/tls.sh
#
# Installs nginx, wrk, curl and openssl with apt-get when missing (as root), builds Sentinel
# (release), then runs bench/tls.py, which measures and writes the report to bench/results/.
# Settings are environment variables, listed in bench/tls.py and bench/README.md.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

install_missing openssl
command -v taskset >/dev/null 2>&1 || die "taskset not found (package util-linux)"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
command -v cargo >/dev/null 2>&1 || die "cargo not found (install the Rust toolchain)"

build_sentinel
[[ -z $SENTINEL_UNAVAILABLE ]] || die "$SENTINEL_UNAVAILABLE"

NGINX=$(find_nginx) SENTINEL=$SENTINEL exec python3 "$BENCH_DIR/tls.py"
