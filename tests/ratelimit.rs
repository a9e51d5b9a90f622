//! Rate limiting through the real binary (issue 20): the admitted count over a window,
//! route overrides, the client behind a trusted proxy, the 429's shape, limits that survive
//! a reload, and three instances sharing one limit on a real `redis-server` that is then
//! stopped (fail open, no stall) and restarted (shared again).
//!
//! Rates are measured over whole windows with the tolerances the issue states; every load
//! loop is bounded in requests and in time.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_sentinel");

/// How long a test waits for an effect (a log line, a reload) before failing.
const WAIT: Duration = Duration::from_secs(10);

/// The binary on `sections` (YAML after `server:`), serving a small site from `site/`.
fn start(sections: &str) -> Daemon {
    start_with(sections, true)
}

/// As `start`, with or without the access log.
fn start_with(sections: &str, access_log: bool) -> Daemon {
    Daemon::start(
        &config(sections).replace("access_log: true", &format!("access_log: {access_log}")),
        &[
            ("site/index.html", "home"),
            ("site/login", "login"),
            ("site/free/x.txt", "free"),
            ("site/429.html", "CUSTOM-429 slow down"),
        ],
    )
}

fn config(sections: &str) -> String {
    format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\n\
         static_files:\n  root: site\n  error_pages:\n    too_many_requests: 429.html\n\
         {sections}\
         logging:\n  level: info\n  access_log: true\n"
    )
}

/// One response: status, header fields, body.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive client that sends one GET at a time.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn get(&mut self, path: &str, extra: &str) -> Response {
        self.try_get(path, extra).expect("response")
    }

    fn try_get(&mut self, path: &str, extra: &str) -> std::io::Result<Response> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
        self.stream.write_all(request.as_bytes())?;
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.get(9..12))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while self.buf.len() < head_end + length {
            self.fill()?;
        }
        let body = String::from_utf8_lossy(&self.buf[head_end..head_end + length]).into_owned();
        self.buf.drain(..head_end + length);
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk)? {
            0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }
}

/// What a paced run of requests saw.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    admitted: u64,
    limited: u64,
    /// Other answers (or none).
    failed: u64,
    /// The slowest answer.
    slowest: Duration,
    /// From the first request sent to the last.
    elapsed: Duration,
}

/// GET `path` every `1/rate` s for `duration` (at most `rate × duration` requests), on one
/// keep-alive connection, reconnecting if the server closes it.
fn paced(addr: SocketAddr, path: &str, extra: &str, rate: u32, duration: Duration) -> Tally {
    let gap = Duration::from_secs(1) / rate;
    let most = (duration.as_secs_f64() * f64::from(rate)).ceil() as u64;
    let mut tally = Tally::default();
    let mut client = Client::connect(addr);
    let start = Instant::now();
    for i in 0..most {
        let due = start + gap * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = Instant::now();
        tally.elapsed = sent - start;
        match client.try_get(path, extra) {
            Ok(response) => match response.status {
                200 => tally.admitted += 1,
                429 => tally.limited += 1,
                _ => tally.failed += 1,
            },
            Err(_) => {
                tally.failed += 1;
                client = Client::connect(addr);
            }
        }
        tally.slowest = tally.slowest.max(sent.elapsed());
    }
    tally
}

/// What GCRA admits over `elapsed` at `rps` with `burst`: the rate, plus the burst and the
/// one request the rate allows at once.
fn expected(rps: u32, burst: u32, elapsed: Duration) -> f64 {
    f64::from(rps) * elapsed.as_secs_f64() + f64::from(burst) + 1.0
}

fn assert_within(actual: u64, expected: f64, tolerance: f64, what: &str) {
    let low = expected * (1.0 - tolerance);
    let high = expected * (1.0 + tolerance);
    assert!(
        (low..=high).contains(&(actual as f64)),
        "{what}: admitted {actual}, expected {expected:.1} ±{:.0}%",
        tolerance * 100.0
    );
}

#[test]
fn a_client_over_the_rate_gets_the_rate_and_one_under_it_never_a_429() {
    let daemon =
        start("rate_limit:\n  requests_per_second: 20\n  burst: 5\n  key: \"header:X-Client\"\n");
    let addr = daemon.addr;
    let window = Duration::from_secs(10);
    let fast = std::thread::spawn(move || paced(addr, "/", "X-Client: fast\r\n", 60, window));
    let slow = std::thread::spawn(move || paced(addr, "/", "X-Client: slow\r\n", 15, window));
    let fast = fast.join().expect("fast client");
    eprintln!("over the rate: {fast:?}");
    let slow = slow.join().expect("slow client");
    assert_eq!(fast.failed, 0, "{fast:?}");
    assert_within(
        fast.admitted,
        expected(20, 5, fast.elapsed),
        0.05,
        "over the rate",
    );
    assert_eq!(
        (slow.limited, slow.failed),
        (0, 0),
        "under the rate: {slow:?}"
    );
    // Back under the rate, the fast client is served again at once.
    std::thread::sleep(Duration::from_millis(100));
    let recovered = paced(addr, "/", "X-Client: fast\r\n", 10, Duration::from_secs(2));
    assert_eq!(recovered.limited, 0, "{recovered:?}");
}

#[test]
fn a_route_may_tighten_or_disable_the_limit() {
    let daemon = start(
        "rate_limit:\n  requests_per_second: 1000\n\
         routes:\n  - path_prefix: /login\n    static: true\n    \
         rate_limit: { requests_per_second: 1, burst: 2 }\n  \
         - path_prefix: /free\n    static: true\n    rate_limit: false\n  \
         - path_prefix: /\n    static: true\n",
    );
    let mut client = Client::connect(daemon.addr);
    let statuses: Vec<u16> = (0..5).map(|_| client.get("/login", "").status).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // Other routes count apart from /login's limit.
    assert_eq!(client.get("/", "").status, 200);
    // No limit at all on /free, and /login's refusals do not reach it.
    let tightened = start(
        "rate_limit:\n  requests_per_second: 1\n  burst: 0\n\
         routes:\n  - path_prefix: /free\n    static: true\n    rate_limit: false\n  \
         - path_prefix: /\n    static: true\n",
    );
    let mut client = Client::connect(tightened.addr);
    assert_eq!(client.get("/", "").status, 200);
    assert_eq!(client.get("/", "").status, 429);
    for i in 0..50 {
        assert_eq!(client.get("/free/x.txt", "").status, 200, "request {i}");
    }
    let line = tightened.wait_for_log_after(0, "/free/x.txt", WAIT);
    assert!(line.contains("rate_limit=\"-\""), "{line}");
}

#[test]
fn the_client_behind_a_trusted_proxy_is_the_one_it_names_not_the_left_most() {
    let daemon = start(
        "rate_limit:\n  requests_per_second: 1\n  burst: 0\n  \
         trusted_proxies: [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n",
    );
    let mut client = Client::connect(daemon.addr);
    let via = |chain: &str| format!("X-Forwarded-For: {chain}\r\n");
    assert_eq!(client.get("/", &via("6.6.6.6, 198.51.100.1")).status, 200);
    // The same client, whatever it writes on the left.
    assert_eq!(client.get("/", &via("7.7.7.7, 198.51.100.1")).status, 429);
    assert_eq!(
        client.get("/", &via("198.51.100.1, 10.1.2.3")).status,
        429,
        "a trusted hop is walked past"
    );
    // Another client through the same proxy has its own limit.
    assert_eq!(client.get("/", &via("6.6.6.6, 198.51.100.2")).status, 200);
    // Garbage: the proxy itself is the client.
    assert_eq!(client.get("/", &via("not-an-address")).status, 200);
    assert_eq!(client.get("/", "").status, 429);
    let line = daemon.wait_for_log_after(0, "rate_limit_key=198.51.100.2", WAIT);
    assert!(line.contains("rate_limit=\"allowed\""), "{line}");
}

#[test]
fn a_429_has_retry_after_the_draft_fields_and_the_custom_page() {
    let daemon = start("rate_limit:\n  requests_per_second: 1\n  burst: 1\n");
    let mut client = Client::connect(daemon.addr);
    assert_eq!(client.get("/", "").status, 200);
    assert_eq!(client.get("/", "").status, 200);
    let refused = client.get("/", "");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body, "CUSTOM-429 slow down");
    let retry: u64 = refused
        .header("Retry-After")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert_eq!(retry, 1, "under a second away, rounded up");
    assert_eq!(
        refused.header("RateLimit-Policy"),
        Some("\"default\";q=1;w=1")
    );
    assert_eq!(refused.header("RateLimit"), Some("\"default\";r=0;t=1"));
    // The connection stays usable after a refusal.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(client.get("/", "").status, 200);
    let line = daemon.wait_for_log_after(0, "rate_limit=\"limited\"", WAIT);
    assert!(line.contains("status=429"), "{line}");
    assert!(line.contains("rate_limit_key=127.0.0.1"), "{line}");
}

#[test]
fn limits_survive_a_reload_that_keeps_their_settings() {
    let limit = "rate_limit:\n  requests_per_second: 1\n  burst: 2\n";
    let daemon = start(limit);
    daemon.wait_for_log_after(0, "watching the config", WAIT);
    let mut client = Client::connect(daemon.addr);
    let statuses: Vec<u16> = (0..4).map(|_| client.get("/", "").status).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    // An unrelated change: the spent burst stays spent.
    let skip = daemon.log_len();
    daemon.rewrite_config(&config(&format!(
        "{limit}admin:\n  listen_addr: \"127.0.0.1:0\"\n"
    )));
    daemon.wait_for_log_after(skip, "config reloaded", WAIT);
    assert_eq!(
        client.get("/", "").status,
        429,
        "state kept over the reload"
    );
    // A changed limit starts afresh.
    let skip = daemon.log_len();
    daemon.rewrite_config(&config(
        "rate_limit:\n  requests_per_second: 2\n  burst: 2\n",
    ));
    daemon.wait_for_log_after(skip, "config reloaded", WAIT);
    assert_eq!(client.get("/", "").status, 200, "a new limit, a new state");
}

/// A `redis-server` on a free loopback port, killed (by its PID) when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        let redis = Redis { child, port };
        let deadline = Instant::now() + WAIT;
        while !redis.answers_ping() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Each of `daemons` at `rate` req/s for `window`, at once; the tallies summed.
fn load(daemons: &[Daemon], rate: u32, window: Duration) -> Tally {
    let threads: Vec<_> = daemons
        .iter()
        .map(|d| {
            let addr = d.addr;
            std::thread::spawn(move || paced(addr, "/", "", rate, window))
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("load thread"))
        .fold(Tally::default(), |sum, t| Tally {
            admitted: sum.admitted + t.admitted,
            limited: sum.limited + t.limited,
            failed: sum.failed + t.failed,
            slowest: sum.slowest.max(t.slowest),
            elapsed: sum.elapsed.max(t.elapsed),
        })
}

#[test]
fn three_instances_share_one_limit_on_redis_fail_open_without_it_and_share_again() {
    let mut redis = Redis::start_on(free_port());
    let (rps, burst) = (20, 5);
    let sections = format!(
        "rate_limit:\n  requests_per_second: {rps}\n  burst: {burst}\n  \
         redis_url: \"redis://127.0.0.1:{}\"\n  redis_timeout_ms: 250\n",
        redis.port
    );
    let daemons: Vec<Daemon> = (0..3).map(|_| start(&sections)).collect();
    for daemon in &daemons {
        daemon.wait_for_log_after(0, "rate limits shared on Redis", WAIT);
    }
    // 3 × 30 req/s from one client against one limit of 20 req/s.
    let shared = load(&daemons, 30, Duration::from_secs(8));
    eprintln!("shared: {shared:?}");
    assert_eq!(shared.failed, 0, "{shared:?}");
    assert_within(
        shared.admitted,
        expected(rps, burst, shared.elapsed),
        0.10,
        "three instances on one Redis",
    );

    // Redis gone: every request is still answered, at once, by the local limiters.
    let skips: Vec<usize> = daemons.iter().map(Daemon::log_len).collect();
    redis.stop();
    let alone = load(&daemons, 30, Duration::from_secs(4));
    eprintln!("redis stopped: {alone:?}");
    assert_eq!(alone.failed, 0, "{alone:?}");
    assert!(
        alone.slowest < Duration::from_secs(1),
        "a request stalled for {:?}",
        alone.slowest
    );
    for (daemon, skip) in daemons.iter().zip(&skips) {
        daemon.wait_for_log_after(*skip, "Redis unreachable", WAIT);
    }
    // Each instance limits on its own now: up to three times the limit gets through.
    assert!(
        alone.admitted as f64 > 1.5 * expected(rps, burst, alone.elapsed),
        "local limits: {alone:?}"
    );
    for daemon in &daemons {
        assert_eq!(
            daemon.count_log("Redis unreachable"),
            1,
            "one line per state change"
        );
    }

    // Redis back on the same port: shared again.
    let skips: Vec<usize> = daemons.iter().map(Daemon::log_len).collect();
    let _redis = Redis::start_on(redis.port);
    for (daemon, skip) in daemons.iter().zip(&skips) {
        daemon.wait_for_log_after(*skip, "rate limits shared on Redis", WAIT);
    }
    let again = load(&daemons, 30, Duration::from_secs(6));
    eprintln!("shared again: {again:?}");
    assert_eq!(again.failed, 0, "{again:?}");
    assert_within(
        again.admitted,
        expected(rps, burst, again.elapsed),
        0.10,
        "shared again",
    );
}

#[test]
fn check_reports_bad_rate_limit_settings_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("site")).expect("site");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: site\n\
         rate_limit:\n  requests_per_second: 0\n  key: \"cookie:x\"\n  \
         trusted_proxies: [\"10.0.0.1/8\", \"garbage\"]\n  redis_url: \"http://x\"\n\
         routes:\n  - path_prefix: /\n    static: true\n    \
         rate_limit: { requests_per_second: 5, bursts: 1 }\n",
    )
    .expect("config");
    let output = Command::new(BIN)
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run --check");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    // Serde stops at the unknown key; the rest is reported once that is fixed.
    assert!(text.contains("bursts"), "{text}");
    std::fs::write(
        &path,
        "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: site\n\
         rate_limit:\n  requests_per_second: 0\n  key: \"cookie:x\"\n  \
         trusted_proxies: [\"10.0.0.1/8\", \"garbage\"]\n  redis_url: \"http://x\"\n",
    )
    .expect("config");
    let output = Command::new(BIN)
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run --check");
    let text = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "rate_limit.requests_per_second: must be between 1",
        "rate_limit.key:",
        "rate_limit.trusted_proxies[0]",
        "rate_limit.trusted_proxies[1]",
        "rate_limit.redis_url:",
        "has 5 errors",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn a_slow_redis_never_stalls_a_request_and_is_used_again_once_it_answers() {
    let redis = Redis::start_on(free_port());
    let daemon = start(&format!(
        "rate_limit:\n  requests_per_second: 1000\n  \
         redis_url: \"redis://127.0.0.1:{}\"\n  redis_timeout_ms: 20\n",
        redis.port
    ));
    daemon.wait_for_log_after(0, "rate limits shared on Redis", WAIT);
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([name, &redis.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    // Frozen, not gone: connections stay open and answers never come.
    signal("-STOP");
    let skip = daemon.log_len();
    let frozen = paced(daemon.addr, "/", "", 50, Duration::from_secs(2));
    signal("-CONT");
    assert_eq!((frozen.failed, frozen.limited), (0, 0), "{frozen:?}");
    assert!(
        frozen.slowest < Duration::from_millis(500),
        "a request waited {:?} on a frozen Redis",
        frozen.slowest
    );
    daemon.wait_for_log_after(skip, "Redis unreachable", WAIT);
    daemon.wait_for_log_after(skip, "rate limits shared on Redis", WAIT);
}

#[test]
fn a_refused_request_never_reaches_the_backend() {
    let backend = TcpListener::bind("127.0.0.1:0").expect("backend");
    let backend_addr = backend.local_addr().expect("backend address");
    let arrived = Arc::new(Mutex::new(0u32));
    let count = Arc::clone(&arrived);
    std::thread::spawn(move || {
        for stream in backend.incoming() {
            let Ok(stream) = stream else { continue };
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    if line == "\r\n" {
                        *count.lock().unwrap() += 1;
                        let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if writer.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                    line.clear();
                }
            });
        }
    });
    let daemon = start(&format!(
        "proxy:\n  backends:\n    - name: b\n      address: \"{backend_addr}\"\n\
         rate_limit:\n  requests_per_second: 1\n  burst: 1\n\
         routes:\n  - path_prefix: /api\n    upstream: default\n  \
         - path_prefix: /\n    static: true\n"
    ));
    let mut client = Client::connect(daemon.addr);
    let statuses: Vec<u16> = (0..4).map(|_| client.get("/api/x", "").status).collect();
    assert_eq!(statuses, [200, 200, 429, 429]);
    assert_eq!(*arrived.lock().unwrap(), 2, "refusals stay in Sentinel");
}

/// The process's resident set, from /proc (Linux).
#[cfg(target_os = "linux")]
fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// `count` requests from distinct addresses (through a trusted proxy), pipelined in batches,
/// a new connection per batch (a connection carries at most 1000 requests); every one
/// answered.
fn spray(addr: SocketAddr, first: u32, count: u32) {
    const BATCH: u32 = 1000;
    let mut sent = 0;
    while sent < count {
        let mut client = Client::connect(addr);
        let batch = BATCH.min(count - sent);
        let mut requests = String::new();
        for i in 0..batch {
            let client_ip = std::net::Ipv4Addr::from(0x0b00_0000 + first + sent + i);
            requests +=
                &format!("GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {client_ip}\r\n\r\n");
        }
        client.stream.write_all(requests.as_bytes()).expect("send");
        for _ in 0..batch {
            client.read_one().expect("answer");
        }
        sent += batch;
    }
}

impl Client {
    /// Read one response to a request already sent.
    fn read_one(&mut self) -> std::io::Result<u16> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let length: usize = head
            .split("\r\n")
            .filter_map(|l| l.split_once(": "))
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while self.buf.len() < head_end + length {
            self.fill()?;
        }
        self.buf.drain(..head_end + length);
        Ok(head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0))
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_spray_of_distinct_addresses_keeps_memory_bounded_by_max_keys() {
    // Without the access log: a line per request would dominate the run.
    let daemon = start_with(
        "rate_limit:\n  requests_per_second: 1\n  burst: 0\n  max_keys: 5000\n  \
         trusted_proxies: [\"127.0.0.1/32\"]\n",
        false,
    );
    spray(daemon.addr, 0, 20_000);
    let before = resident_kib(daemon.pid());
    spray(daemon.addr, 20_000, 200_000);
    let after = resident_kib(daemon.pid());
    eprintln!("VmRSS {before} kB -> {after} kB over 200000 distinct clients");
    // Untracked, 200,000 clients would take about 8 MB of table; capped, nothing grows.
    assert!(
        after.saturating_sub(before) < 3 * 1024,
        "resident set grew from {before} kB to {after} kB"
    );
}
