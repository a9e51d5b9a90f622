#!/usr/bin/env python3
"""A single-slot HTTP/1.1 backend on Python's asyncio (standard library only): the second
backend kind of bench/adaptive.sh (BACKEND_KIND=asyncio), so that its results do not hinge on
one implementation. It behaves like `openloop backend` and has the same control interface:

  POST /_control?slow_factor=20      service time multiplied by 20
  POST /_control?fail_ratio=0.5      that share of requests answered 500 at once, without
                                     taking the slot
  POST /_control?reset_ratio=0.5     that share of requests get the connection reset (RST, no
                                     response byte), without taking the slot
  POST /_control?reset=1             slow_factor=1, fail_ratio=0, reset_ratio=0, counters zeroed
  GET  /_stats                       counters as JSON (same fields as openloop's)

One request is served at a time across all connections (asyncio.Lock: FIFO). A request holds
the slot for --overhead-ms of CPU work (what a Python handler spends parsing and serialising)
and then an `asyncio.sleep` of --service-ms × slow_factor, which the event loop wakes up to a
millisecond late (epoll's timeout is in whole milliseconds). Parsing, the event loop and the
CPU it shares with the other backends add their own per-request overhead and jitter on top:
unlike openloop's precise sleeps, which is the point of having this kind too.

A request still waiting for the slot when its client closes the connection is dropped
(`abandoned`); one being served runs its full service time.

usage: backend_asyncio.py --port P [--service-ms 5] [--overhead-ms 0.5] [--name b1]
                          [--failures spread|random] [--seed 1] [--host 127.0.0.1]
"""

import argparse
import asyncio
import json
import random
import socket
import struct
import sys
import time
from urllib.parse import parse_qsl, urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024


class State:
    def __init__(self, args):
        self.name = args.name
        self.service = args.service_ms / 1000.0
        self.overhead = args.overhead_ms / 1000.0
        self.pattern = args.failures
        self.rng = random.Random(args.seed)
        self.slot = asyncio.Lock()
        self.slow_factor = 1.0
        self.fail_ratio = 0.0
        self.reset_ratio = 0.0
        self.fail_credit = 0.0
        self.reset_credit = 0.0
        self.waiting = 0
        self.zero()

    def zero(self):
        self.received = self.resets = self.ok = self.failed = self.abandoned = 0
        self.busy = 0.0
        self.max_waiting = 0

    def reset(self):
        self.slow_factor, self.fail_ratio, self.reset_ratio = 1.0, 0.0, 0.0
        self.fail_credit = self.reset_credit = 0.0
        self.zero()

    def choose(self, ratio, credit_name):
        """Whether this request is one of `ratio`: evenly spread (exactly that share, as
        openloop's `spread`) or an independent draw (`random`)."""
        if ratio <= 0:
            return False
        if self.pattern == "random":
            return self.rng.random() < ratio
        credit = getattr(self, credit_name) + min(ratio, 1.0)
        chosen = credit >= 1.0
        setattr(self, credit_name, credit - 1.0 if chosen else credit)
        return chosen

    def stats_json(self):
        # Same fields, in the same order, as openloop's: bench/adaptive.sh looks for
        # `"waiting":0,` to see that nothing is queued.
        return json.dumps({
            "name": self.name,
            "kind": "asyncio",
            "service_ms": self.service * 1000.0,
            "overhead_ms": self.overhead * 1000.0,
            "slow_factor": self.slow_factor,
            "fail_ratio": self.fail_ratio,
            "reset_ratio": self.reset_ratio,
            "failures": self.pattern,
            "received": self.received,
            "resets": self.resets,
            "ok": self.ok,
            "failed": self.failed,
            "abandoned": self.abandoned,
            "busy_ms": round(self.busy * 1000.0, 1),
            "waiting": self.waiting,
            "max_waiting": self.max_waiting,
        }, separators=(",", ":")) + "\n"

    def control(self, target):
        pairs = parse_qsl(urlsplit(target).query, keep_blank_values=True)
        if not pairs:
            raise ValueError("expected ?slow_factor=F, ?fail_ratio=R, ?reset_ratio=R or ?reset=1")
        for key, value in pairs:
            if key == "reset":
                self.reset()
                continue
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"bad {key} {value}") from None
            if key == "slow_factor":
                if not (number >= 0 and number != float("inf")):
                    raise ValueError(f"bad slow_factor {value}")
                self.slow_factor = number
            elif key in ("fail_ratio", "reset_ratio"):
                if not 0 <= number <= 1:
                    raise ValueError(f"{key} must be within 0..1, got {value}")
                setattr(self, key, number)
            else:
                raise ValueError(f"unknown control {key}")


REASONS = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed", 500: "Internal Server Error",
           501: "Not Implemented"}


class Connection(asyncio.Protocol):
    def __init__(self, state):
        self.state = state
        self.buf = bytearray()
        self.transport = None
        self.arrived = asyncio.Event()
        self.closed = asyncio.get_running_loop().create_future()

    # ---- protocol callbacks: buffer bytes, note the close, wake the handler

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        asyncio.get_running_loop().create_task(self.serve())

    def data_received(self, data):
        self.buf += data
        self.arrived.set()

    def eof_received(self):
        # The client is done (a proxy closing an idle or abandoned connection): no further
        # request can come, so a queued one is abandoned as openloop's would be.
        self._closed()
        return False

    def connection_lost(self, exc):
        self._closed()

    def _closed(self):
        if not self.closed.done():
            self.closed.set_result(None)
        self.arrived.set()

    # ---- the handler, one request at a time per connection (pipelined ones wait in buf)

    async def read_head(self):
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buf[:end]).decode("latin-1")
                del self.buf[:end + 4]
                return head
            if self.closed.done() or len(self.buf) > MAX_HEAD:
                return None
            self.arrived.clear()
            await self.arrived.wait()

    async def read_body(self, length):
        while len(self.buf) < length:
            if self.closed.done():
                return False
            self.arrived.clear()
            await self.arrived.wait()
        del self.buf[:length]
        return True

    def respond(self, status, body, keep_alive):
        if self.transport.is_closing():
            return
        content_type = "application/json" if body.startswith("{") else "text/plain"
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body.encode())}\r\nX-Backend: {self.state.name}\r\n"
                f"{'' if keep_alive else 'Connection: close' + chr(13) + chr(10)}\r\n")
        self.transport.write(head.encode("latin-1") + body.encode())

    async def serve(self):
        try:
            while True:
                head = await self.read_head()
                if head is None:
                    return
                lines = head.split("\r\n")
                parts = lines[0].split()
                if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                    self.respond(400, "bad request\n", False)
                    return
                method, target, version = parts
                fields = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    fields.setdefault(name.strip().lower(), []).append(value.strip())
                tokens = {t.strip().lower() for v in fields.get("connection", []) for t in v.split(",")}
                keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
                if any("chunked" in v.lower() for v in fields.get("transfer-encoding", [])):
                    self.respond(501, "chunked request bodies are not supported\n", False)
                    return
                try:
                    length = int(fields.get("content-length", ["0"])[0])
                    if not 0 <= length <= MAX_BODY:
                        raise ValueError
                except ValueError:
                    self.respond(400, "bad Content-Length\n", False)
                    return
                if not await self.read_body(length):
                    return
                if not await self.handle(method, target, keep_alive):
                    return
                if not keep_alive:
                    return
        finally:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()

    async def handle(self, method, target, keep_alive):
        """Answer one request; False when the connection is finished (reset, abandoned)."""
        state = self.state
        path = target.split("?", 1)[0]
        if path == "/_control":
            if method not in ("POST", "GET"):
                self.respond(405, "use POST\n", keep_alive)
                return True
            try:
                state.control(target)
            except ValueError as e:
                self.respond(400, f"{e}\n", keep_alive)
                return True
            body = state.stats_json()
            print(f"backend_asyncio {state.name}: control {target} -> {body.strip()}", file=sys.stderr, flush=True)
            self.respond(200, body, keep_alive)
            return True
        if path == "/_stats":
            self.respond(200, state.stats_json(), keep_alive)
            return True
        state.received += 1
        if state.choose(state.reset_ratio, "reset_credit"):
            state.resets += 1
            # Linger 0: closing sends RST, no response byte.
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
            return False
        if state.choose(state.fail_ratio, "fail_credit"):
            state.failed += 1
            self.respond(500, "injected failure\n", keep_alive)
            return True
        if not await self.take_slot_and_serve():
            state.abandoned += 1
            return False
        state.ok += 1
        self.respond(200, "ok\n", keep_alive)
        return True

    async def take_slot_and_serve(self):
        state = self.state
        state.waiting += 1
        state.max_waiting = max(state.max_waiting, state.waiting)
        acquire = asyncio.ensure_future(state.slot.acquire())
        try:
            await asyncio.wait({acquire, self.closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            state.waiting -= 1
        if not acquire.done():
            acquire.cancel()
            try:
                await acquire
            except asyncio.CancelledError:
                return False
        if self.closed.done():
            state.slot.release()
            return False
        try:
            started = time.perf_counter()
            # CPU the handler itself spends (a framework's parsing and serialising).
            while time.perf_counter() - started < state.overhead:
                pass
            service = state.service * state.slow_factor
            if service > 0:
                await asyncio.sleep(service)
            state.busy += time.perf_counter() - started
        finally:
            state.slot.release()
        return True


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--service-ms", type=float, default=5.0)
    parser.add_argument("--overhead-ms", type=float, default=0.5,
                        help="CPU burnt per served request while holding the slot (default 0.5)")
    parser.add_argument("--name", default=None, help="sent as X-Backend (default :PORT)")
    parser.add_argument("--failures", choices=("spread", "random"), default="spread")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.service_ms < 0 or args.overhead_ms < 0:
        parser.error("--service-ms and --overhead-ms must be >= 0")
    args.name = args.name or f":{args.port}"
    state = State(args)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(state), args.host, args.port, backlog=4096,
                                      reuse_address=True)
    print(f"backend_asyncio {state.name} listening on {args.host}:{args.port}, service {args.service_ms} ms "
          f"+ {args.overhead_ms} ms CPU, one request at a time, failures {args.failures} (seed {args.seed})",
          file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
