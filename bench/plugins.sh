#!/usr/bin/env bash
# Plugins (issue 21): proxy-small requests per CPU-second through Sentinel with one
# header-adding proxy-wasm plugin (the AssemblyScript sample, built with the public SDK; and
# the same work in hand-written WebAssembly, the host's own cost) against the same Sentinel
# without plugins, side by side in one run. Target: ratio ≥ 0.85.
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
# Built again when the source is newer than the module, so a stale build is not measured.
if [[ ! -f $SAMPLE/build/plugin.wasm || $SAMPLE/assembly/index.ts -nt $SAMPLE/build/plugin.wasm ]]; then
    log "building the sample plugin (npm ci, npm run build)"
    [[ -d $SAMPLE/node_modules/assemblyscript ]] || npm ci --no-audit --no-fund --prefix "$SAMPLE" >&2
    npm run build --prefix "$SAMPLE" >&2
fi

# The hand-written minimal plugin (examples/plugins/wat), assembled with the binaryen that
# the sample's toolchain brings: the host's own cost per request, without an SDK's.
WAT_MODULE=$(mktemp --suffix=.wasm)
trap 'rm -f "$WAT_MODULE"' EXIT
(cd "$SAMPLE" && node -e '
const binaryen = require("binaryen");
const fs = require("fs");
const module = binaryen.parseText(fs.readFileSync(process.argv[1], "utf8"));
if (!module.validate()) { process.exit(1); }
fs.writeFileSync(process.argv[2], module.emitBinary());
' "$REPO_DIR/examples/plugins/wat/add_header.wat" "$WAT_MODULE") || die "cannot assemble examples/plugins/wat/add_header.wat"

NGINX=$(find_nginx) SENTINEL=$SENTINEL PLUGIN="$SAMPLE/build/plugin.wasm" WAT_PLUGIN="$WAT_MODULE" \
    python3 "$BENCH_DIR/plugins.py"
