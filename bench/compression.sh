#!/usr/bin/env bash
# Compression, Sentinel against nginx in one run: a 100 KiB HTML page compressed on the fly
# (Sentinel's zstd and gzip against nginx's gzip level 1) and served precompressed (.gz and
# .zst sidecars against nginx's gzip_static): requests per CPU-second and bytes on the wire.
# Issue 23's targets are in the report.
#
#   bench/compression.sh                           # about 2 minutes
#   ROUNDS=1 DURATION=2 bench/compression.sh
#
# Installs nginx, wrk, curl and zstd with apt-get when missing (as root), builds Sentinel
# (release), then runs bench/compression.py, which measures and prints the report.
# Settings are environment variables, listed in bench/compression.py.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

install_missing zstd brotli
command -v taskset >/dev/null 2>&1 || die "taskset not found (package util-linux)"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
command -v cargo >/dev/null 2>&1 || die "cargo not found (install the Rust toolchain)"

build_sentinel
[[ -z $SENTINEL_UNAVAILABLE ]] || die "$SENTINEL_UNAVAILABLE"

NGINX=$(find_nginx) SENTINEL=$SENTINEL exec python3 "$BENCH_DIR/compression.py"
