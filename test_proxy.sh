#!/usr/bin/env bash
# Start three test backends for trying Sentinel's reverse proxy.
#
#   ./test_proxy.sh                            # backends on 3000 3001 3002
#   BACKEND_PORTS="4000 4001" ./test_proxy.sh  # choose your own ports
#
# Backends are named backend1, backend2, ... in port order and listen on
# 127.0.0.1 only. Press Ctrl-C to stop them; the script stops exactly the
# processes it started, by PID.
#
# Environment:
#   BACKEND_PORTS  space-separated ports   (default "3000 3001 3002")
#   PYTHON         Python 3 interpreter    (default python3)
#   SENTINEL_URL   where Sentinel listens  (default http://127.0.0.1:8080)
#   PROXY_PREFIX   the path prefix Sentinel proxies to these backends, as in
#                  the request hints printed below (default /api, as in
#                  docs/examples/proxy-demo.yaml; empty when it proxies every path)

set -u

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BACKEND="$SCRIPT_DIR/backend_server.py"
PYTHON="${PYTHON:-python3}"
SENTINEL_URL="${SENTINEL_URL:-http://127.0.0.1:8080}"
PROXY_PREFIX="${PROXY_PREFIX-/api}"
# Where the hints send requests. The demo config strips the prefix, so
# $API/hello reaches a backend as /hello.
API="${SENTINEL_URL%/}$PROXY_PREFIX"
read -r -a PORTS <<< "${BACKEND_PORTS:-3000 3001 3002}"

PIDS=()

cleanup() {
    trap - EXIT INT TERM
    if [ "${#PIDS[@]}" -gt 0 ]; then
        echo
        echo "Stopping backends (PIDs ${PIDS[*]})..."
        for pid in "${PIDS[@]}"; do
            kill "$pid" 2>/dev/null
        done
        for pid in "${PIDS[@]}"; do
            wait "$pid" 2>/dev/null
        done
    fi
    echo "Done."
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: '$PYTHON' not found; set PYTHON to a Python 3 interpreter" >&2
    exit 1
fi
if [ ! -f "$BACKEND" ]; then
    echo "error: $BACKEND not found" >&2
    exit 1
fi
if [ "${#PORTS[@]}" -eq 0 ]; then
    echo "error: BACKEND_PORTS is empty" >&2
    exit 1
fi

i=1
for port in "${PORTS[@]}"; do
    case "$port" in
        ''|*[!0-9]*) echo "error: invalid port '$port' in BACKEND_PORTS" >&2; exit 1 ;;
    esac
    name="backend$i"
    "$PYTHON" "$BACKEND" "$port" "$name" &
    PIDS+=("$!")
    echo "Started $name on 127.0.0.1:$port (PID $!)"
    i=$((i + 1))
done

# Give the backends a moment to bind, and make sure none of them died
# (for example because its port was already in use).
sleep 1
for idx in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$idx]}" 2>/dev/null; then
        echo "error: backend$((idx + 1)) (port ${PORTS[$idx]}) exited at startup" >&2
        exit 1
    fi
done

cat <<INFO

Backends are running:
$(for idx in "${!PORTS[@]}"; do echo "  backend$((idx + 1))  http://127.0.0.1:${PORTS[$idx]}/"; done)

Start Sentinel with a config that proxies ${PROXY_PREFIX}/ to the addresses
above (docs/examples/proxy-demo.yaml does, with the default ports), then try:

  curl -s $API/hello                       # JSON says which backend answered
  curl -si $API/hello | grep -i x-backend  # or look at the X-Backend header
  for i in \$(seq 10); do curl -s -o /dev/null -D - $API/hello | grep -i x-backend; done

  curl -s "$API/slow?ms=500"               # a slow request
  curl -s -o /dev/null -w '%{http_code}\\n' $API/status/503  # an upstream error status
  curl -s $API/bytes/1048576 | wc -c       # a 1 MiB streamed body
  curl -s --data-binary 'hi' $API/echo     # request body echoed back

Stop one backend (kill <PID>) to watch Sentinel route around it.
Press Ctrl-C to stop all backends.
INFO

wait "${PIDS[@]}"
