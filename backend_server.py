#!/usr/bin/env python3
"""Tiny test backend for exercising Sentinel's reverse proxy.

Usage:
    python3 backend_server.py PORT NAME [--host HOST] [--quiet]

Standard library only; works on Python 3.8 and later.

Every response carries an ``X-Backend: NAME`` header and a Content-Length
(except where HTTP forbids one: 1xx, 204 and 304). Connections are
persistent (HTTP/1.1 keep-alive) unless the client asks otherwise.

Endpoints (any method: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS):

    /health       200, text/plain body "ok".
    /echo         200, the raw request body is sent back; Content-Type is
                  copied from the request (default application/octet-stream).
    /slow?ms=N    sleep N milliseconds (capped at 60000), then the usual JSON.
    /status/N     status N (101..599; anything else is 400) with the usual
                  JSON body, no body for 204 and 304. An informational status
                  (102..199) is sent as an interim response followed by the
                  usual 200 response; 101 is refused with 400 because it
                  would require a protocol upgrade.
    /bytes/N      N bytes of application/octet-stream (capped at 1 GiB),
                  streamed in 64 KiB pieces; byte i is "abc...z"[i % 26].
    anything else 200, application/json:
                  {"backend", "method", "path", "query", "headers", "body_bytes"}

Request bodies are framed by Content-Length or by chunked
Transfer-Encoding (decoded here). A request carrying both, or an invalid
Content-Length, is answered with 400 and the connection is closed.
HEAD responses carry the same headers as GET but no body.

One line per request is logged to stderr, prefixed with NAME; --quiet
turns that off. Ctrl-C (or SIGTERM) stops the server cleanly.
"""

import argparse
import json
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PIECE = 64 * 1024
MAX_BYTES = 1 << 30            # /bytes/N cap: 1 GiB
MAX_SLOW_MS = 60000            # /slow?ms=N cap: 60 s
MAX_ECHO_BODY = 256 << 20      # largest body /echo will buffer: 256 MiB
MAX_CHUNK_LINE = 4096          # longest chunk-size line / trailer line accepted

ALPHABET = b"abcdefghijklmnopqrstuvwxyz"
# Long enough that any 64 KiB window starting at offset 0..25 fits.
PATTERN = ALPHABET * (PIECE // len(ALPHABET) + 2)

NO_BODY_STATUSES = (204, 304)


class BadRequest(Exception):
    """The request is malformed; answer with `status` and close."""

    def __init__(self, message, status=400):
        Exception.__init__(self, message)
        self.status = status


class ClientGone(Exception):
    """The client closed the connection before the request was complete."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sentinel-test-backend/1.0"
    sys_version = ""
    # Headers and body go out in separate writes; without TCP_NODELAY a
    # keep-alive client can stall on Nagle + delayed ACK.
    disable_nagle_algorithm = True

    backend_name = "backend"
    quiet = False

    # ------------------------------------------------------------------ #
    # Logging
    # ------------------------------------------------------------------ #
    def log_request(self, code="-", size="-"):
        # Replaced by the single line written in _handle().
        pass

    def log_message(self, format, *args):
        if self.quiet:
            return
        sys.stderr.write("%s %s %s\n" % (self.backend_name, self._peer(), format % args))
        sys.stderr.flush()

    def _peer(self):
        try:
            return "%s:%s" % (self.client_address[0], self.client_address[1])
        except Exception:
            return "-"

    def _log_line(self, status, sent, started):
        if self.quiet:
            return
        ms = (time.monotonic() - started) * 1000.0
        sys.stderr.write('%s %s "%s" %s %dB %.1fms\n' % (
            self.backend_name, self._peer(), self.requestline, status, sent, ms))
        sys.stderr.flush()

    # ------------------------------------------------------------------ #
    # Every response (including http.server's own error replies) passes
    # through send_response(), so X-Backend is added here.
    # ------------------------------------------------------------------ #
    def version_string(self):
        return self.server_version

    def send_response(self, code, message=None):
        BaseHTTPRequestHandler.send_response(self, code, message)
        self.send_header("X-Backend", self.backend_name)
        self._status = code

    # ------------------------------------------------------------------ #
    # Methods
    # ------------------------------------------------------------------ #
    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_PATCH(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def do_OPTIONS(self):
        self._handle()

    # ------------------------------------------------------------------ #
    # Request handling
    # ------------------------------------------------------------------ #
    def _handle(self):
        started = time.monotonic()
        self._status = 0
        self._sent = 0
        try:
            path, query = self._split_target()
            keep_body = path == "/echo"
            body, body_len = self._read_body(keep_body)
            self._route(path, query, body, body_len)
        except BadRequest as exc:
            self.close_connection = True
            try:
                self._send_simple(exc.status, "text/plain; charset=utf-8",
                                  ("%s\n" % exc).encode("utf-8"), close=True)
            except (OSError, socket.timeout):
                pass
        except ClientGone:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout):
            # Client went away mid-response; nothing more to say.
            self.close_connection = True
        self._log_line(self._status or "-", self._sent, started)

    def _split_target(self):
        target = self.path
        if target.startswith("/"):
            path, _, query = target.partition("?")
            path = path.split("#", 1)[0]
            return path, query
        if "://" in target:          # absolute-form
            parts = urlsplit(target)
            return parts.path or "/", parts.query
        return target, ""            # asterisk-form ("*") or anything odd

    def _route(self, path, query, body, body_len):
        if path == "/health":
            self._send_simple(200, "text/plain; charset=utf-8", b"ok")
            return

        if path == "/echo":
            ctype = self.headers.get("Content-Type") or "application/octet-stream"
            self._send_simple(200, ctype, body)
            return

        if path == "/slow":
            ms = self._query_int(query, "ms", 0)
            ms = max(0, min(ms, MAX_SLOW_MS))
            time.sleep(ms / 1000.0)
            self._send_json(200, path, query, body_len)
            return

        if path.startswith("/status/"):
            code = self._path_int(path[len("/status/"):])
            if code is None or not (100 < code < 600):
                raise BadRequest("status must be an integer with 100 < N < 600")
            if code == 101:
                raise BadRequest("status 101 needs a protocol upgrade; not supported")
            if code < 200:
                if self.request_version != "HTTP/1.0":
                    self.send_response_only(code)
                    self.send_header("X-Backend", self.backend_name)
                    self.end_headers()
                code = 200
            self._send_json(code, path, query, body_len)
            return

        if path.startswith("/bytes/"):
            n = self._path_int(path[len("/bytes/"):])
            if n is None or n < 0:
                raise BadRequest("byte count must be a non-negative integer")
            self._send_bytes(min(n, MAX_BYTES))
            return

        self._send_json(200, path, query, body_len)

    @staticmethod
    def _path_int(text):
        text = text.rstrip("/")
        if not text.isdigit() or len(text) > 18:
            return None
        return int(text)

    @staticmethod
    def _query_int(query, name, default):
        values = parse_qs(query, keep_blank_values=True).get(name)
        if not values:
            return default
        try:
            return int(values[0])
        except ValueError:
            raise BadRequest("query parameter %r must be an integer" % name)

    # ------------------------------------------------------------------ #
    # Request bodies
    # ------------------------------------------------------------------ #
    def _read_body(self, keep):
        """Read the request body. Returns (bytes or None, length)."""
        te_values = self.headers.get_all("Transfer-Encoding") or []
        cl_values = self.headers.get_all("Content-Length") or []

        if te_values:
            if cl_values:
                raise BadRequest("both Transfer-Encoding and Content-Length present")
            codings = [c.strip().lower() for v in te_values for c in v.split(",") if c.strip()]
            if not codings or codings[-1] != "chunked":
                raise BadRequest("Transfer-Encoding must end with chunked")
            if any(c != "chunked" for c in codings) or len(codings) > 1:
                raise BadRequest("unsupported Transfer-Encoding %r" % ", ".join(codings), 501)
            return self._read_chunked(keep)

        if cl_values:
            lengths = set()
            for v in cl_values:
                for item in v.split(","):
                    item = item.strip()
                    if not item.isdigit():
                        raise BadRequest("invalid Content-Length")
                    lengths.add(int(item))
            if len(lengths) != 1:
                raise BadRequest("conflicting Content-Length values")
            length = lengths.pop()
            if keep and length > MAX_ECHO_BODY:
                raise BadRequest("body too large to echo", 413)
            return self._read_exact(length, keep), length

        return (b"" if keep else None), 0

    def _read_exact(self, length, keep):
        parts = [] if keep else None
        remaining = length
        while remaining > 0:
            data = self.rfile.read(min(remaining, PIECE))
            if not data:
                raise ClientGone()
            remaining -= len(data)
            if keep:
                parts.append(data)
        return b"".join(parts) if keep else None

    def _read_line(self):
        line = self.rfile.readline(MAX_CHUNK_LINE + 1)
        if not line:
            raise ClientGone()
        if len(line) > MAX_CHUNK_LINE:
            raise BadRequest("chunk line too long")
        if not line.endswith(b"\n"):
            raise ClientGone()
        return line.rstrip(b"\r\n")

    def _read_chunked(self, keep):
        parts = [] if keep else None
        total = 0
        while True:
            line = self._read_line()
            size_text = line.split(b";", 1)[0].strip()
            try:
                if not size_text or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
                    raise ValueError
                size = int(size_text, 16)
            except ValueError:
                raise BadRequest("invalid chunk size %r" % line[:40])
            if size == 0:
                break
            total += size
            if keep and total > MAX_ECHO_BODY:
                raise BadRequest("body too large to echo", 413)
            data = self._read_exact(size, keep)
            if keep:
                parts.append(data)
            crlf = self.rfile.read(2)
            if len(crlf) < 2:
                raise ClientGone()
            if crlf != b"\r\n":
                raise BadRequest("missing CRLF after chunk data")
        # Trailer section: header lines until an empty line.
        while True:
            if not self._read_line():
                break
        return (b"".join(parts) if keep else None), total

    # ------------------------------------------------------------------ #
    # Responses
    # ------------------------------------------------------------------ #
    def _start(self, code, ctype, length, close=False):
        self.send_response(code)
        if code not in NO_BODY_STATUSES:
            if ctype:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(length))
        if close or self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send_simple(self, code, ctype, body, close=False):
        body = body or b""
        self._start(code, ctype, len(body), close)
        if self.command != "HEAD" and code not in NO_BODY_STATUSES and body:
            self.wfile.write(body)
            self._sent += len(body)

    def _send_json(self, code, path, query, body_len):
        headers = {}
        lower_to_name = {}
        for name, value in self.headers.items():
            key = name.lower()
            if key in lower_to_name:
                first = lower_to_name[key]
                headers[first] = headers[first] + ", " + value
            else:
                lower_to_name[key] = name
                headers[name] = value
        doc = {
            "backend": self.backend_name,
            "method": self.command,
            "path": path,
            "query": query,
            "headers": headers,
            "body_bytes": body_len,
        }
        body = (json.dumps(doc) + "\n").encode("utf-8")
        self._send_simple(code, "application/json", body)

    def _send_bytes(self, n):
        self._start(200, "application/octet-stream", n)
        if self.command == "HEAD":
            return
        offset = 0
        while offset < n:
            size = min(PIECE, n - offset)
            start = offset % len(ALPHABET)
            self.wfile.write(PATTERN[start:start + size])
            offset += size
            self._sent += size


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # On Windows SO_REUSEADDR would let two backends share one port silently.
    allow_reuse_address = sys.platform != "win32"

    def handle_error(self, request, client_address):
        # Keep the log quiet for clients that simply disconnect.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout)):
            return
        ThreadingHTTPServer.handle_error(self, request, client_address)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Test HTTP/1.1 backend for the Sentinel reverse proxy.")
    parser.add_argument("port", type=int, help="TCP port to listen on (0 = pick a free one)")
    parser.add_argument("name", help="backend name, reported in X-Backend and the JSON body")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not log requests")
    args = parser.parse_args(argv)

    handler = type("NamedHandler", (Handler,), {
        "backend_name": args.name,
        "quiet": args.quiet,
    })

    try:
        httpd = Server((args.host, args.port), handler)
    except OSError as exc:
        sys.stderr.write("%s: cannot listen on %s:%d: %s\n" % (args.name, args.host, args.port, exc))
        return 1

    def on_term(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C should stop the server even when a shell script started it in
    # the background (which makes it inherit an ignored SIGINT); SIGTERM, as
    # sent by `kill PID`, gets the same clean shutdown.
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if hasattr(signal, "SIGTERM"):
            signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):
        pass

    host, port = httpd.server_address[:2]
    sys.stderr.write("%s listening on http://%s:%d/\n" % (args.name, host, port))
    sys.stderr.flush()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        sys.stderr.write("%s stopping\n" % args.name)
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
