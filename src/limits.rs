//! Every size, count and time limit Sentinel enforces, with its default, its unit and what
//! happens when it is breached. Each `DEFAULT_*` has a config key (see
//! `docs/configuration.md`); the few without one are internal safety bounds, named here so no
//! code uses a bare number in their place.

use std::time::Duration;

/// Longest request line (method, target, version; CRLF not counted), in bytes. Breach: 414.
/// RFC 9112 §3 recommends supporting at least 8000 octets.
pub const DEFAULT_MAX_REQUEST_LINE_BYTES: usize = 8 * 1024;

/// Longest request head (request line, fields and the final CRLF), in bytes. Breach: 431.
/// nginx's `large_client_header_buffers 4 8k` allows about the same.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 32 * 1024;

/// Most header fields in one request head. Breach: 431. (Trailers are bounded by bytes,
/// against `DEFAULT_MAX_HEAD_BYTES`.)
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Largest request body, in bytes, by Content-Length or decoded chunked size. Breach: 413
/// (before any of the body is read when Content-Length announces it).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// Longest chunk extension (everything between the chunk size and its CRLF), in bytes.
/// Breach: 400. Extensions carry nothing we use; a long one is a way to make us read for free.
pub const DEFAULT_MAX_CHUNK_EXT_BYTES: usize = 1024;

/// Time allowed to receive a whole request head: from accept for a connection's first
/// request, from the head's first byte for later ones (slowloris defence; not reset on
/// progress). Breach: 408 and close.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for the next piece of a request body (reset on progress). Breach: 408 and
/// close. (Bodies are read before the response starts, so there is always a 408 to send.)
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a keep-alive connection may sit idle between requests. Breach: quiet close.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest the client may accept none of the response we are writing (each write that moves
/// bytes restarts it, so a slow but steady reader is served). Breach: close.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most requests served on one connection before it is closed, so long-lived clients are
/// rebalanced and per-connection state cannot grow forever. Breach: `Connection: close`.
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u64 = 1000;

/// Most client connections open at once. Breach: further connections wait in the kernel's
/// accept backlog until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// How long we keep reading (and discarding) after the last response and a half-close, so
/// the client sees that response instead of a reset caused by its unread bytes (nginx's
/// lingering close).
pub const DEFAULT_LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest request body (framing included) we read and throw away to keep a connection alive
/// when the handler did not want it; a bigger unread body closes the connection instead. The
/// whole discard must also finish within the body read timeout.
pub const DEFAULT_MAX_DISCARD_BYTES: u64 = 64 * 1024;

/// Admin connections open at once (`admin.max_connections`). Breach: further connections
/// wait in the admin socket's accept backlog until one closes, as on the main listener. The
/// admin endpoint is for an operator and a scraper or two; the cap keeps a flood of admin
/// connections from costing the proxy more than a few tasks.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;

/// Whole life of one admin connection: reading its one request and writing the answer
/// (internal bound). Breach: the connection is closed. An admin request is one small head.
pub const ADMIN_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Pending admin connections the kernel may queue before `accept` (internal bound); those
/// over `admin.max_connections` wait here.
pub const ADMIN_LISTEN_BACKLOG: u32 = 64;

/// How often the dashboard's sampler reads every backend (`admin.dashboard_sample_ms`):
/// one point per backend on the page's charts, and the span its per-second rates cover.
pub const DEFAULT_DASHBOARD_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// How far back the dashboard's charts reach (`admin.dashboard_history_ms`). Breach: the
/// oldest sample is dropped for each new one (a ring per backend).
pub const DEFAULT_DASHBOARD_HISTORY: Duration = Duration::from_secs(300);

/// The most samples one backend's ring keeps, whatever the two keys above ask (internal
/// bound): with 50 backends, about 2 MB of history at most. Breach: `--check` refuses a
/// `dashboard_history_ms` over this many `dashboard_sample_ms`.
pub const MAX_DASHBOARD_SAMPLES: usize = 3600;

/// The shortest `admin.dashboard_sample_ms` accepted: below it the sampler would cost more
/// than the picture is worth, and the per-second rates would be mostly noise.
pub const MIN_DASHBOARD_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Config loads the dashboard lists under "recent reloads" (internal bound). Breach: the
/// oldest is forgotten (the counters on `/metrics` still count it).
pub const RECENT_RELOADS_KEPT: usize = 20;

/// The longest reason a remembered reload keeps (internal bound), in bytes. Breach: the rest
/// is cut at a character boundary and an ellipsis added.
pub const RECENT_RELOAD_DETAIL_BYTES: usize = 512;

/// Pending connections the kernel may queue before `accept` (nginx's default on Linux).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 511;

/// Files up to this size are read whole and sent with the head in one write; larger ones are
/// streamed in pieces of this size, so memory per response is bounded by it.
pub const DEFAULT_READ_CHUNK_BYTES: usize = 64 * 1024;

/// Total memory for cached small files (content plus bookkeeping). 0 disables the cache.
pub const DEFAULT_FILE_CACHE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Largest file kept in the file cache; larger files are streamed from disk every time.
pub const DEFAULT_FILE_CACHE_MAX_FILE_BYTES: u64 = 1024 * 1024;

/// How long what was found beside a file (which precompressed sidecars exist and are fresh)
/// is trusted before it is looked for again (`static_files.sidecar_valid_ms`), as nginx's
/// `open_file_cache_valid`. Within it a precompressed answer costs no `stat` (issue 23:
/// two per request kept it level with nginx's `gzip_static` instead of ahead).
pub const DEFAULT_SIDECAR_VALID: Duration = Duration::from_millis(1000);

/// Highest accepted `static_files.sidecar_valid_ms`: an edit must show within a minute.
pub const MAX_SIDECAR_VALID: Duration = Duration::from_secs(60);

/// Files whose sidecar lookups are remembered (`static_files.sidecar_max_entries`); when
/// full, expired ones go first, then arbitrary ones. Each costs a few hundred bytes.
pub const DEFAULT_SIDECAR_MAX_ENTRIES: usize = 10_000;

/// Highest accepted `static_files.sidecar_max_entries`.
pub const MAX_SIDECAR_MAX_ENTRIES: usize = 1_000_000;

/// How long a shutdown waits for in-flight requests before exiting anyway.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a binary upgrade (SIGUSR2) waits for the new process to report ready before
/// killing it and serving on (`server.upgrade_timeout_ms`).
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);

/// Time to establish a TCP connection to a backend (`proxy.connection_timeout_ms`). Breach:
/// the next backend is tried; 502 when none is left.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time for a backend to start its response — its whole head to arrive — once the request
/// was sent (`proxy.request_timeout_ms`). Breach: 504. The body that follows is bounded by
/// `DEFAULT_UPSTREAM_READ_TIMEOUT` instead.
pub const DEFAULT_UPSTREAM_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a backend may accept none of the request we are sending it; each write that moves
/// bytes restarts it, so a slow but steady reader gets the whole body (`proxy.send_timeout_ms`,
/// nginx's `proxy_send_timeout`). Breach: 504, as nginx answers, and the attempt counts as a
/// backend failure.
pub const DEFAULT_UPSTREAM_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest gap between two successive reads of a response body from the backend
/// (`proxy.read_timeout_ms`, nginx's `proxy_read_timeout`). Breach: the client connection is
/// cut, since the response head is already out.
pub const DEFAULT_UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest a `101 Switching Protocols` tunnel (WebSocket) may carry no byte in either
/// direction (`proxy.tunnel_idle_timeout_ms`, HAProxy's `timeout tunnel`). Long, because an
/// idle WebSocket is normal; bounded, because a peer that vanished without a FIN would
/// otherwise hold both connections forever. Breach: both sides are closed.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Window within which a repeated backend failure (same backend, same reason) is logged only
/// once; the next line logged after it says how many were held back (internal). Long enough
/// that a dead backend under load costs a line every few seconds, not one per request.
pub const FAILURE_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Most (backend, reason) pairs the failure log limiter tracks at once (internal). Breach:
/// pairs whose window has passed are forgotten; if none has, new pairs are logged unlimited.
pub const MAX_FAILURE_LOG_KEYS: usize = 1024;

/// Idle keep-alive connections kept per backend for reuse (`proxy.max_idle_per_backend`).
/// Sized for the concurrency a busy proxy sees per backend: beyond the pool, every request in
/// flight over it opens and closes a connection of its own. At 512 client connections over
/// three backends a pool of 64 did that for most requests, the TIME_WAIT sockets filled the
/// ephemeral port range and p99 rose from ~100 ms to ~700 ms (`bench/run.sh`, small-512).
pub const DEFAULT_MAX_IDLE_PER_BACKEND: usize = 256;

/// How long an idle upstream connection is kept for reuse (`proxy.idle_timeout_ms`). Below
/// the keep-alive timeout of common backends, so we close first rather than race their close.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Consecutive failures (connect errors, resets, timeouts, malformed responses) that eject a
/// backend (`proxy.max_fails`).
pub const DEFAULT_MAX_FAILS: u32 = 3;

/// First ejection's length (`proxy.fail_timeout_ms`); it doubles with each ejection that
/// follows without a success in between.
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest ejection (`proxy.max_fail_timeout_ms`).
pub const DEFAULT_MAX_FAIL_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest upstream response head (`proxy.max_response_head_bytes`). Breach: 502.
pub const DEFAULT_MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// Most header fields in an upstream response head (internal bound). Breach: 502.
pub const MAX_RESPONSE_HEADERS: usize = 256;

/// Latency the adaptive balancer assumes for a backend before its first response
/// (`proxy.default_latency_ms`).
pub const DEFAULT_BACKEND_LATENCY: Duration = Duration::from_millis(10);

/// Time constant with which a backend's latency estimate recovers after slow samples
/// (`proxy.ewma_decay_ms`). The peak estimate sits near the slowest answer of the last few
/// time constants, so after a moment of queueing a healthy backend looks several times
/// slower than it is for that long; meanwhile the balancer sends its share elsewhere: to a
/// backend that has just begun to fail, or in excess to one that has just healed (issue 16,
/// phases C1 and D). It was 10 s (Finagle's and Linkerd's default, for pools behind many
/// balancers); on issue 16's scenario (`bench/adaptive.sh`, 10 s phases, seeds 1 to 3) 2 s
/// gave 1.0-1.2 % errors in C1 against 1.1-1.6 %, and D's p99 0.9-1.4× the baseline's against
/// 1.1-1.5×, with the baseline and the slow phase unchanged. A backend that is slow for long
/// is no longer the estimate's business: the outlier rule keeps it out of the race.
pub const DEFAULT_EWMA_DECAY: Duration = Duration::from_secs(2);

/// What one failure costs in the adaptive cost, and the latency assumed for a backend whose
/// first requests are still in flight (`proxy.failure_penalty_ms`). The cost adds the failure
/// rate times this to the latency estimate: a backend failing half its requests costs like
/// one answering in 500 ms, far above a healthy backend even several times slower.
pub const DEFAULT_FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// Time constant of a backend's failure rate (internal): how fast successes wash out
/// failures, and how fast the rate decays while the backend gets no requests. Short, because
/// the penalty it multiplies is large: a rate `r` adds `r·P` to the cost (`P` the failure
/// penalty, 1 s), so even 1 % of failures weighs like 10 ms of latency. After the failures
/// stop, what they add is `r·P·e^(-t/τ)`:
/// - within a fifth of a healthy 5 ms peer's cost (1 ms) after `t = τ·ln(r·P / 1 ms)`: from
///   a rate of 0.5, 6.2 τ = 1.6 s here;
/// - low enough to win against a busy peer (5 ms × 3 in flight, so `r·P` under 10 ms) after
///   `τ·ln(100)` = 1.2 s from a rate near 1, the rate right after a failure that follows a
///   quiet spell. A backend failing half its requests therefore gets about one request a
///   second from the race, half of them errors: at 300 requests a second, 0.2 %.
///
/// On issue 16's scenario (`bench/adaptive.sh`, 10 s phases, one run each, two builds that
/// differ in this constant only), 0.4 s left the healed
/// backend of phase D short of its third for a second or two and D's p99 at 1.4× the
/// baseline's; 0.25 s gave it its third from the first second (0.9×), for 0.2 points more
/// errors in the failing phase C1 (1.0 % against 0.8 %). The 10 s the latency estimate had
/// when failures were recorded in it would take a minute.
pub const FAILURE_RATE_DECAY: Duration = Duration::from_millis(250);

/// Response statuses that count as a backend error (`proxy.error_statuses`) in a group whose
/// strategy is `adaptive`, when the key is not set; other strategies count none by default
/// (nginx's behaviour: a response is a response). The adaptive strategy exists to steer
/// around a backend that fails unevenly, and a backend answering `500` at once otherwise
/// looks like the fastest one and gets the most traffic (issue 16: half a group's requests
/// went to the backend failing half of them). These four say the backend (or what is behind
/// it) could not serve the request; the rest of 5xx (501, 505, ...) and every 4xx describe
/// the request, and would count a client's mistakes against a healthy backend.
pub const DEFAULT_ADAPTIVE_ERROR_STATUSES: [u16; 4] = [500, 502, 503, 504];

/// An adaptive group's backend whose typical latency is more than this many times the median
/// of the others' leaves the cost race and gets probes only (internal). Below it, the race's
/// cost comparison decides, and sends a slower backend what it can take without queueing.
/// Beyond it, nearly every request the slow backend wins is one the group's tail is made of:
/// at half load a single-slot backend's p99 is about twice its mean latency (one service
/// time of queueing at most, most of the time), so a request answered in four times the
/// typical latency is past the p99 the other backends give. Issue 16's slow backend is 20
/// times slower, and still several times slower than its peers once they queue its share.
pub const OUTLIER_LATENCY_RATIO: f64 = 4.0;

/// Such an outlier races again once its typical latency (that is, a probe's answer) is
/// under this many times that median (internal). Apart from the entry bar so that a backend
/// near it does not flap: each time back in, the race may queue several requests on it at
/// once. Issue 16's phase B on the asyncio backends, where the peers' own queueing brought
/// the 20× slower backend within 4× of them: with one bar it flapped, got 1 % of the
/// requests instead of 0.5 %, and one second's p99 reached 502 ms. A recovered backend
/// answers a probe in about its peers' time, far under either bar.
pub const OUTLIER_EXIT_RATIO: f64 = 2.0;

/// ...and whose typical latency is above this (internal): a request that lands on the
/// slowest backend of a fast group (1 ms against 0.2 ms) is not a tail anyone notices, while
/// taking the backend out of the race costs the group its share of the capacity.
pub const OUTLIER_LATENCY_FLOOR: Duration = Duration::from_millis(20);

/// Time constant of the typical latency the outlier rule compares (internal). Long enough
/// to average a hundred answers of a backend at 100 requests a second, so that queueing noise
/// does not make a healthy backend an outlier; short enough that the few answers of a backend
/// the race already avoids (a second or so apart) move it most of the way each, so a backend
/// that turned slow is out of the race after two or three of them.
pub const TYPICAL_LATENCY_DECAY: Duration = Duration::from_secs(1);

/// A backend out of an adaptive group's race (a latency outlier, or ejected, or with its
/// breaker open) gets one probe per this interval... (internal)
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// ...or one per this many of the group's requests (0.1 %), whichever is more, one at a time
/// (internal). A probe is a real request: answered slowly by a slow backend, it is in the
/// group's tail, so probes must stay far under 1 % of the traffic to stay out of its p99.
/// One a second finds a recovery within a second; the share only decides above 1,000
/// requests a second, where 0.1 % finds it sooner. At 0.5 % (issue 16's first choice) the
/// probes plus the requests before detection gave the slow backend 0.6–0.8 % of phase B at
/// 300 requests a second, so close to 1 % that on the asyncio backends B's p99 was the slow
/// backend's 100 ms.
pub const PROBE_EVERY_PICKS: u64 = 1000;

/// Largest `weight` of a backend.
pub const MAX_BACKEND_WEIGHT: u32 = 1000;

/// Largest share (percent) of an upstream group ejected at once (`proxy.max_ejected_percent`).
pub const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;

/// Retries of one request after the first attempt (`proxy.max_retries`).
pub const DEFAULT_MAX_RETRIES: u32 = 1;

/// Retries may add this share of requests (`proxy.retry_budget_percent`)...
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
/// ...plus this many per second (`proxy.retry_budget_min_per_sec`).
pub const DEFAULT_RETRY_BUDGET_MIN_PER_SEC: u32 = 10;
/// Over roughly this window (internal).
pub const RETRY_BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// Failure share that opens a backend's circuit breaker (`proxy.breaker.failure_rate`).
pub const DEFAULT_BREAKER_FAILURE_RATE: f64 = 0.5;
/// Requests in the window before the rate counts (`proxy.breaker.min_requests`).
pub const DEFAULT_BREAKER_MIN_REQUESTS: u32 = 20;
/// The rolling window (`proxy.breaker.window_ms`).
pub const DEFAULT_BREAKER_WINDOW: Duration = Duration::from_secs(10);
/// How long an open breaker refuses requests (`proxy.breaker.open_ms`).
pub const DEFAULT_BREAKER_OPEN: Duration = Duration::from_secs(5);
/// Trial requests of a half-open breaker (`proxy.breaker.trial_requests`).
pub const DEFAULT_BREAKER_TRIAL_REQUESTS: u32 = 3;

/// Longest a client may take over its TLS handshake, from accept to the last handshake
/// message (`tls.handshake_timeout_ms`). Breach: the connection is closed and logged. It
/// holds a connection slot meanwhile, so a client that stalls mid-handshake must not hold
/// one for long; ten seconds leave room for a slow mobile round trip or two.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS sessions remembered for resumption by session ID (`tls.session_cache_entries`; 0
/// turns the cache off). About 200 bytes each. Breach: the oldest is forgotten and that
/// client does a full handshake. Clients that take tickets (every TLS 1.3 client) need no
/// entry here.
pub const DEFAULT_TLS_SESSION_CACHE_ENTRIES: usize = 4096;

/// Largest certificate chain, key or CA file read (internal bound). Breach: the file is
/// refused. A long chain is a few KiB; this only keeps a wrong path (a log file) from being
/// read into memory.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// A certificate that expires within this window is reported by `--check` and at load
/// (internal). Two weeks: ACME clients renew with a month left, so a certificate this close
/// to its end means renewal has failed.
pub const CERTIFICATE_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// How often the certificate and key files are checked for changes besides the file watch
/// (internal): the watch reports a change at once; this catches what it cannot see (a file
/// system without change events, a symlink target in a directory not watched), so a
/// replaced certificate is in use within two seconds either way.
pub const CERTIFICATE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Clients tracked per rate limit (`rate_limit.max_keys`), about 40 bytes each, so 40 MB at
/// most per limit. Breach: the new client's entry replaces the one closest to expiring
/// among a few sampled in its shard (idle ones are dropped first); the client it replaces
/// starts again with a full burst.
pub const DEFAULT_RATE_LIMIT_MAX_KEYS: usize = 1_000_000;
/// Highest accepted `rate_limit.max_keys`.
pub const MAX_RATE_LIMIT_KEYS: usize = 100_000_000;
/// Highest accepted `requests_per_second`: a period of 1 µs, what the Redis script counts in.
pub const MAX_REQUESTS_PER_SECOND: u32 = 1_000_000;
/// Highest accepted `burst`.
pub const MAX_RATE_LIMIT_BURST: u32 = 10_000_000;
/// Longest a request waits for Redis's decision (`rate_limit.redis_timeout_ms`). Breach: the
/// instance's local limiter decides that request; three breaches in a row and the instance
/// stops asking Redis until a probe answers.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(5);
/// Highest accepted `rate_limit.redis_timeout_ms`: a decision is on every request's path.
pub const MAX_REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// Prepended to every Redis key (`rate_limit.redis_key_prefix`).
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "sentinel:rl:";
/// Redis decisions that fail in a row before an instance stops asking and limits locally
/// (internal): one lost reply is not an outage.
pub const REDIS_FAILURES_TO_FALL_BACK: u32 = 3;
/// Connecting to Redis and each probe of a Redis that failed (internal). Breach: the probe
/// counts as failed; the next one waits twice as long, up to `REDIS_MAX_BACKOFF`.
pub const REDIS_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// First and longest wait between probes of a Redis that failed (internal).
pub const REDIS_MIN_BACKOFF: Duration = Duration::from_millis(100);
pub const REDIS_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// `X-Forwarded-For` field lines walked (internal). Breach: the header is treated as
/// malformed and the peer address is the client.
pub const MAX_FORWARDED_FOR_LINES: usize = 16;
/// The whole of `sentinel --probe URL` (connect, ask, read the head). Breach: the probe fails
/// (exit 1), as a health check must when the server does not answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

// Response cache (`cache`, issue 19).
/// Memory for every stored response (`cache.max_bytes`): bodies, heads and keys. Breach:
/// the least valuable entries are evicted (TinyLFU admission, LRU order).
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Largest response stored (`cache.max_object_bytes`). Breach: the response streams through
/// to the client intact and is not stored.
pub const DEFAULT_CACHE_MAX_OBJECT_BYTES: u64 = 8 * 1024 * 1024;
/// Longest a miss waits for a concurrent miss on the same key (`cache.lock_timeout_ms`), as
/// nginx's `proxy_cache_lock_timeout`. Breach: the waiting request goes upstream itself.
pub const DEFAULT_CACHE_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Highest accepted `cache.lock_timeout_ms`.
pub const MAX_CACHE_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

// Access logs and request IDs (`logging.*`).

/// Bytes of formatted access-log lines each worker thread holds before the writer thread
/// takes them (`logging.access_log_buffer_bytes`). Breach: the line is dropped and counted
/// in `sentinel_access_log_dropped_total`; the request is never made to wait for the disk.
pub const DEFAULT_ACCESS_LOG_BUFFER_BYTES: usize = 256 * 1024;
/// Smallest and largest accepted `logging.access_log_buffer_bytes`.
pub const MIN_ACCESS_LOG_BUFFER_BYTES: usize = 1024;
pub const MAX_ACCESS_LOG_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// Longest a line waits in a worker's buffer before the writer thread writes it
/// (`logging.access_log_flush_ms`); a buffer half full wakes the writer sooner.
pub const DEFAULT_ACCESS_LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Highest accepted `logging.access_log_flush_ms`.
pub const MAX_ACCESS_LOG_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// Longest the process waits at exit for the writer thread's last flush (internal). Breach:
/// the process exits with the lines still unwritten (the file is stuck: a full disk, a FIFO
/// nobody reads).
pub const ACCESS_LOG_SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// At most one warning per this interval about dropped access-log lines or a failing log
/// file (internal): a stuck disk must not flood the error log too.
pub const ACCESS_LOG_WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Longest `X-Request-Id` kept from a client (internal); longer ones are replaced.
pub const MAX_REQUEST_ID_BYTES: usize = 200;

/// Bodies shorter than this are sent uncompressed (`compression.min_bytes`): below a packet
/// or so, the encoder's framing and CPU buy nothing on the wire.
pub const DEFAULT_COMPRESSION_MIN_BYTES: u64 = 1024;
/// Media types compressed on the fly unless `compression.types` says otherwise: text and
/// the structured text formats; never images, archives or video, which are compressed
/// already.
pub const DEFAULT_COMPRESSION_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/wasm",
    "application/manifest+json",
    "application/ld+json",
    "application/rss+xml",
    "application/atom+xml",
    "image/svg+xml",
    "image/x-icon",
    "font/ttf",
    "font/otf",
];
/// Highest accepted `compression.min_bytes` (1 GiB): a larger one is a typo for "off".
pub const MAX_COMPRESSION_MIN_BYTES: u64 = 1024 * 1024 * 1024;

/// From accept to the last byte of a PROXY protocol header, on a listener that expects one
/// (`server.proxy_protocol_timeout_ms`). Breach: the connection is closed, counted
/// (`sentinel_proxy_protocol_errors_total{reason="timeout"}`) and logged at debug. The
/// balancer sends the header in its first segment, so anything slower is not a balancer.
pub const DEFAULT_PROXY_PROTOCOL_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest PROXY protocol header read (`server.proxy_protocol_max_header_bytes`; at least
/// 232). A v1 header is at most 107 bytes by its grammar; a v2 header with TLVs may be longer
/// (cloud balancers add an endpoint id or TLS facts). Breach: closed and counted
/// (`reason="oversized"`).
pub const DEFAULT_PROXY_PROTOCOL_MAX_HEADER_BYTES: usize = 1024;

/// A plugin's linear memory may grow to this many bytes (`plugins[].max_memory_bytes`); a
/// `memory.grow` past it fails, and the plugin's failure policy (`on_error`) answers.
pub const DEFAULT_PLUGIN_MAX_MEMORY_BYTES: u64 = 64 * 1024 * 1024;
/// Largest `max_memory_bytes` accepted: a WebAssembly 1.0 memory is 32-bit (4 GiB).
pub const MAX_PLUGIN_MEMORY_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Wall-clock budget of one plugin callback (`plugins[].timeout_ms`); past it the callback
/// is interrupted (epoch interruption) and `on_error` answers.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest `timeout_ms` accepted: a callback runs on a worker thread, which serves nothing
/// else meanwhile.
pub const MAX_PLUGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Status of the answer when a `fail_closed` plugin fails (`plugins[].failure_status`).
pub const DEFAULT_PLUGIN_FAILURE_STATUS: u16 = 500;
/// The plugin watchdog's shortest sleep (internal): how often it moves the epoch while a
/// callback is overdue, and the floor of how often it looks for new deadlines.
pub const PLUGIN_EPOCH_TICK: Duration = Duration::from_millis(1);
/// How often the plugin files are looked at for a change (internal): a changed `.wasm`
/// reloads its plugin within this interval.
pub const PLUGIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Keys and values a plugin's shared data (`proxy_set_shared_data`) may hold in all
/// (internal): it lives in the host's memory, outside `max_memory_bytes`. Past it a set that
/// grows the data answers `BadArgument`.
pub const MAX_PLUGIN_SHARED_DATA_BYTES: usize = 16 * 1024 * 1024;
/// Metrics one plugin may define (`proxy_define_metric`, internal): each is a series on
/// `/metrics`. Past it a definition answers `BadArgument`.
pub const MAX_PLUGIN_METRICS: usize = 1000;
