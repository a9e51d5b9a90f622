#!/usr/bin/env bash
# Response cache, Sentinel against nginx proxy_cache and Varnish in one run: cache hits per
# CPU-second (512 B and 64 KiB), p99, and a miss storm on one hot key (origin requests and
# most in flight at once). Issue 19's targets are in the report.
#
#   bench/cache.sh                                  # about 4 minutes
#   ROUNDS=1 DURATION=2 STORM=4 bench/cache.sh
#
# Installs nginx, wrk and varnish with apt-get when missing (as root), builds Sentinel
# (release), then runs bench/cache.py, which measures and writes the report to bench/results/.
# Settings are environment variables, listed in bench/cache.py and bench/README.md.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"

# The package is `varnish`, its command `varnishd`.
if command -v varnishd >/dev/null 2>&1 || [[ -x /usr/sbin/varnishd ]]; then
    install_missing
else
    install_missing varnish
fi
command -v taskset >/dev/null 2>&1 || die "taskset not found (package util-linux)"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
command -v cargo >/dev/null 2>&1 || die "cargo not found (install the Rust toolchain)"

build_sentinel
[[ -z $SENTINEL_UNAVAILABLE ]] || die "$SENTINEL_UNAVAILABLE"

NGINX=$(find_nginx) SENTINEL=$SENTINEL exec python3 "$BENCH_DIR/cache.py"
