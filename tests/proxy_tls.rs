//! TLS to backends (issue 17) over real loopback sockets: HTTPS backends made at test time
//! with certificates from a CA generated at run time, verified against `tls_ca_file`;
//! pooled, resumed and health-checked like plain ones; every way a handshake can be refused
//! is a connect failure that moves on to the next backend, then 502.

#[path = "proxy_tls/certs.rs"]
mod certs;
mod common;
#[path = "proxy_tls/https_backend.rs"]
mod https_backend;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certs::{self_signed, TestCa};
use common::backend::Backend;
use common::{Options, RawClient, Response, TestServer};
use https_backend::HttpsBackend;
use sentinel::config::Config;
use sentinel::snapshot::Snapshot;

/// How long a test waits for an effect (a probe verdict) before failing; a passing test
/// waits only as long as the effect takes.
const WAIT: Duration = Duration::from_secs(10);

/// A CA certificate in a file of its own, for `tls_ca_file`.
struct CaFile {
    dir: tempfile::TempDir,
}

impl CaFile {
    fn new(pem: &str) -> CaFile {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), pem).unwrap();
        CaFile { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// Sentinel with `yaml` (a `proxy:` section, routes) added to the test site's config.
fn sentinel(yaml: String) -> TestServer {
    TestServer::start_with(Options {
        extra_yaml: yaml,
        ..Options::default()
    })
}

/// `proxy:` trusting `ca` for the default group, with `entries` as its backends.
fn proxy_trusting(ca: &CaFile, entries: &[String], keys: &str) -> TestServer {
    sentinel(format!(
        "proxy:\n  tls_ca_file: \"{}\"\n{keys}  backends:\n{}",
        ca.path().display(),
        entries.concat()
    ))
}

fn get(client: &mut RawClient, path: &str) -> Response {
    client.send(format!("GET {path} HTTP/1.1\r\nHost: site.test\r\n\r\n").as_bytes());
    client.read_response()
}

/// Wait until `condition` holds; fail with `what` after [`WAIT`].
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn get_and_post_reach_an_https_backend_verified_against_the_ca_file() {
    let ca = TestCa::new("group CA");
    let backend = HttpsBackend::start("secure", ca.leaf(&["backend.test", "127.0.0.1"]));
    let ca_file = CaFile::new(&ca.pem);
    let server = proxy_trusting(&ca_file, &[backend.yaml_entry("secure", "")], "");
    let mut client = server.connect();

    let got = get(&mut client, "/hello?x=1");
    assert_eq!(got.status, 200, "{}", got.body_text());
    assert_eq!(got.body_text(), "secure GET /hello?x=1 ");

    client
        .send(b"POST /submit HTTP/1.1\r\nHost: site.test\r\nContent-Length: 11\r\n\r\nhello world");
    let posted = client.read_response();
    assert_eq!(posted.status, 200);
    assert_eq!(posted.body_text(), "secure POST /submit hello world");

    // Large enough both ways that the request is written in many records and the response
    // would be spliced from a plain socket: over TLS it is copied instead.
    let big = "x".repeat(300 * 1024);
    client.send(
        format!(
            "POST /big HTTP/1.1\r\nHost: site.test\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        )
        .as_bytes(),
    );
    let echoed = client.read_response();
    assert_eq!(echoed.status, 200);
    assert_eq!(echoed.body_text(), format!("secure POST /big {big}"));

    let handshakes = backend.handshakes();
    assert_eq!(handshakes.len(), 1, "{handshakes:?}");
    assert_eq!(handshakes[0].alpn.as_deref(), Some(&b"http/1.1"[..]));
    // The default name is the address's host, an IP: verified against the IP SAN, and no
    // SNI (RFC 6066 §3 allows host names only).
    assert_eq!(handshakes[0].server_name, None);
}

/// Backpressure over TLS: the upload goes out as fast as the backend takes it, and the last
/// records are pushed out of rustls, not left waiting for a write that never comes (see
/// `UpstreamStream::push_out` for the deterministic test).
#[test]
fn a_request_body_sent_faster_than_the_backend_reads_arrives_whole() {
    let ca = TestCa::new("slow CA");
    let backend =
        HttpsBackend::slow_reader("slow", ca.leaf(&["127.0.0.1"]), Duration::from_millis(1));
    let ca_file = CaFile::new(&ca.pem);
    let server = proxy_trusting(
        &ca_file,
        &[backend.yaml_entry("slow", "")],
        "  request_timeout_ms: 5000\n",
    );
    let mut client = server.connect();
    let body = "y".repeat(2 * 1024 * 1024);
    client.send(
        format!(
            "POST /upload HTTP/1.1\r\nHost: site.test\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let response = client.read_response();
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert_eq!(response.body.len(), "slow POST /upload ".len() + body.len());
}

#[test]
fn keep_alive_reuses_one_tls_connection_for_every_request() {
    let ca = TestCa::new("pool CA");
    let backend = HttpsBackend::start("pooled", ca.leaf(&["127.0.0.1"]));
    let ca_file = CaFile::new(&ca.pem);
    let server = proxy_trusting(&ca_file, &[backend.yaml_entry("pooled", "")], "");
    let mut client = server.connect();
    for i in 0..5 {
        assert_eq!(get(&mut client, &format!("/{i}")).status, 200);
    }
    // New client connections take the same pooled upstream connection.
    for i in 5..8 {
        assert_eq!(get(&mut server.connect(), &format!("/{i}")).status, 200);
    }
    let requests = backend.requests();
    assert_eq!(requests.len(), 8);
    assert!(requests.iter().all(|r| r.connection == 0), "{requests:?}");
    assert_eq!(backend.handshakes().len(), 1);
}

#[test]
fn new_tls_connections_resume_the_session() {
    let ca = TestCa::new("resumption CA");
    let backend = HttpsBackend::start("resumed", ca.leaf(&["127.0.0.1"]));
    let ca_file = CaFile::new(&ca.pem);
    // No pooling: every request needs a new connection, and so a handshake.
    let server = proxy_trusting(
        &ca_file,
        &[backend.yaml_entry("resumed", "")],
        "  max_idle_per_backend: 0\n",
    );
    for _ in 0..3 {
        assert_eq!(get(&mut server.connect(), "/").status, 200);
    }
    let handshakes = backend.handshakes();
    assert_eq!(handshakes.len(), 3, "{handshakes:?}");
    assert!(!handshakes[0].resumed, "{handshakes:?}");
    assert!(
        handshakes[1].resumed && handshakes[2].resumed,
        "{handshakes:?}"
    );
}

#[test]
fn tls_server_name_is_the_name_the_certificate_must_carry() {
    let ca = TestCa::new("names CA");
    let ca_file = CaFile::new(&ca.pem);
    // Valid for the DNS name only: the address (an IP) is not in it.
    let named = HttpsBackend::start("named", ca.leaf(&["backend.test"]));

    let server = proxy_trusting(
        &ca_file,
        &[named.yaml_entry("named", "tls_server_name: \"backend.test\"")],
        "",
    );
    let got = get(&mut server.connect(), "/");
    assert_eq!(got.status, 200, "{}", got.body_text());
    assert_eq!(
        named.handshakes()[0].server_name.as_deref(),
        Some("backend.test"),
        "sent as SNI"
    );
    drop(server);

    let by_address = proxy_trusting(&ca_file, &[named.yaml_entry("named", "")], "");
    assert_eq!(get(&mut by_address.connect(), "/").status, 502);
    drop(by_address);

    // A wrong name is refused like any bad certificate: the next backend serves.
    let plain = Backend::named("plain");
    let server = proxy_trusting(
        &ca_file,
        &[
            named.yaml_entry("named", "tls_server_name: \"wrong.test\""),
            plain.yaml_entry("plain", "    "),
        ],
        "",
    );
    let mut client = server.connect();
    for _ in 0..4 {
        let got = get(&mut client, "/");
        assert_eq!((got.status, got.body_text().as_str()), (200, "plain"));
    }
    assert_eq!(
        named.requests().len(),
        1,
        "only the first, good-name request"
    );
}

#[test]
fn a_self_signed_certificate_is_refused_and_a_plain_backend_serves() {
    let ca = TestCa::new("trusted CA");
    let ca_file = CaFile::new(&ca.pem);
    let rogue = HttpsBackend::start("rogue", self_signed(&["127.0.0.1"]));
    let plain = Backend::named("plain");
    let server = proxy_trusting(
        &ca_file,
        &[
            rogue.yaml_entry("rogue", ""),
            plain.yaml_entry("plain", "    "),
        ],
        "",
    );
    let mut client = server.connect();
    for _ in 0..4 {
        let got = get(&mut client, "/");
        assert_eq!((got.status, got.body_text().as_str()), (200, "plain"));
    }
    assert!(
        rogue.requests().is_empty(),
        "no request crossed a refused handshake"
    );
    wait_until("the backend to see the refusal", || {
        rogue.failed_handshakes() >= 1
    });
    // Counted against the backend like any connect failure, with its own reason.
    let snapshot = server.config.load();
    let health = snapshot.upstreams[0].backends[0]
        .health
        .snapshot(Instant::now());
    assert_eq!(health.last_failure, Some("tls certificate"), "{health:?}");
    assert!(health.consecutive_failures >= 1);
}

#[test]
fn an_expired_certificate_is_refused_with_a_502() {
    let ca = TestCa::new("expiry CA");
    let ca_file = CaFile::new(&ca.pem);
    let expired = HttpsBackend::start("expired", ca.expired_leaf(&["127.0.0.1"]));
    let server = proxy_trusting(
        &ca_file,
        &[expired.yaml_entry("expired", "")],
        "  health_check:\n    path: /healthz\n    interval_ms: 30\n    jitter_ms: 10\n",
    );
    assert_eq!(get(&mut server.connect(), "/").status, 502);
    assert!(expired.requests().is_empty());
    // The probes, refused the same way, keep the reason for operators.
    let reason = || {
        let snapshot = server.config.load();
        let active = snapshot.upstreams[0].backends[0].active.as_ref();
        active
            .and_then(|a| a.snapshot().last_error)
            .unwrap_or_default()
    };
    wait_until("a probe refused", || !reason().is_empty());
    assert!(
        reason().contains("certificate refused: certificate expired"),
        "{}",
        reason()
    );
    wait_until("the backend to see the refusal", || {
        expired.failed_handshakes() >= 1
    });
}

/// A backend that answers whatever it is sent with an HTTP error and keeps the connection
/// open, as a plain HTTP server that waits for the client to close does.
fn plain_http_listener() -> (std::net::SocketAddr, std::sync::mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut hello = [0u8; 512];
        let _ = stream.read(&mut hello);
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        // Held open until the test ends.
        let _ = wait.recv();
    });
    (addr, done)
}

#[test]
fn a_plain_http_backend_behind_tls_true_fails_the_handshake_at_once() {
    let (addr, _hold) = plain_http_listener();
    let server = sentinel(format!(
        "proxy:\n  connection_timeout_ms: 30000\n  backends:\n    - name: \"plain\"\n      \
         address: \"{addr}\"\n      tls: true\n"
    ));
    let started = Instant::now();
    assert_eq!(get(&mut server.connect(), "/").status, 502);
    // Refused on the first bytes, not after the connect timeout.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_silent_backend_is_bounded_by_the_connection_timeout() {
    // Accepts (through the kernel backlog) and never says a word: the handshake waits for
    // a ServerHello that never comes, and connection_timeout_ms covers that wait too.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = sentinel(format!(
        "proxy:\n  connection_timeout_ms: 200\n  backends:\n    - name: \"silent\"\n      \
         address: \"{addr}\"\n      tls: true\n"
    ));
    assert_eq!(get(&mut server.connect(), "/").status, 502);
    drop(listener);
}

#[test]
fn active_health_checks_probe_over_tls() {
    let ca = TestCa::new("checks CA");
    let ca_file = CaFile::new(&ca.pem);
    let good = HttpsBackend::start("good", ca.leaf(&["127.0.0.1"]));
    let rogue = HttpsBackend::start("rogue", self_signed(&["127.0.0.1"]));
    let server = proxy_trusting(
        &ca_file,
        &[good.yaml_entry("good", ""), rogue.yaml_entry("rogue", "")],
        "  health_check:\n    path: /healthz\n    interval_ms: 30\n    jitter_ms: 10\n    \
         timeout_ms: 2000\n    rise: 2\n    fall: 2\n",
    );
    let check = |index: usize| {
        let snapshot = server.config.load();
        let backend = &snapshot.upstreams[0].backends[index];
        backend
            .active
            .as_ref()
            .expect("checks configured")
            .snapshot()
    };
    let probes = || {
        good.requests()
            .iter()
            .filter(|r| r.target == "/healthz")
            .count()
    };
    wait_until("probes over TLS", || probes() >= 2);
    assert!(check(0).healthy);
    wait_until("the self-signed backend to go down", || !check(1).healthy);
    let refused = check(1).last_error.unwrap_or_default();
    assert!(refused.contains("certificate refused"), "{refused}");

    good.set_healthy(false);
    wait_until("a 503 probe to take it down", || !check(0).healthy);
    good.set_healthy(true);
    wait_until("good probes to bring it back", || check(0).healthy);
    assert!(
        good.handshakes().iter().all(|h| h.alpn.is_some()),
        "every probe was TLS"
    );
}

#[test]
fn a_named_upstream_trusts_its_own_ca_file_and_others_inherit_the_proxys() {
    let proxy_ca = TestCa::new("proxy-wide CA");
    let group_ca = TestCa::new("group CA");
    let (proxy_file, group_file) = (CaFile::new(&proxy_ca.pem), CaFile::new(&group_ca.pem));
    let own = HttpsBackend::start("own", group_ca.leaf(&["127.0.0.1"]));
    let inherited = HttpsBackend::start("inherited", proxy_ca.leaf(&["127.0.0.1"]));
    // Backends of a named group sit two levels deeper than `proxy.backends`.
    let deeper =
        |entry: String| -> String { entry.lines().map(|l| format!("    {l}\n")).collect() };
    let server = sentinel(format!(
        "proxy:\n  tls_ca_file: \"{}\"\n  upstreams:\n    own:\n      tls_ca_file: \"{}\"\n      \
         backends:\n{}    inherited:\n      backends:\n{}\
         routes:\n  - path_prefix: /own\n    upstream: own\n  \
         - path_prefix: /inherited\n    upstream: inherited\n",
        proxy_file.path().display(),
        group_file.path().display(),
        deeper(own.yaml_entry("own", "")),
        deeper(inherited.yaml_entry("inherited", "")),
    ));
    let mut client = server.connect();
    assert_eq!(get(&mut client, "/own").body_text(), "own GET /own ");
    assert_eq!(
        get(&mut client, "/inherited").body_text(),
        "inherited GET /inherited "
    );
}

/// Loads `yaml` as if it were `dir/config.yaml`.
fn load(dir: &Path, yaml: &str) -> Config {
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    Config::load(&path, None).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

#[test]
fn a_reload_keeps_the_tls_configuration_and_pool_only_while_nothing_tls_changed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("reload CA");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("other.pem"), TestCa::new("other CA").pem).unwrap();
    let with = |ca_file: &str, tls: bool| {
        format!(
            "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  tls_ca_file: {ca_file}\n  \
             backends:\n    - name: b\n      address: \"127.0.0.1:9443\"\n      tls: {tls}\n"
        )
    };
    // Relative to the config file, like every path in it.
    let first = Snapshot::new(load(dir.path(), &with("ca.pem", true)), None);
    let same = Snapshot::new(load(dir.path(), &with("ca.pem", true)), Some(&first));
    let group_tls = |s: &Snapshot| Arc::clone(s.upstreams[0].tls.as_ref().unwrap());
    let pool = |s: &Snapshot| Arc::clone(&s.upstreams[0].backends[0].pool);
    assert!(Arc::ptr_eq(&group_tls(&first), &group_tls(&same)));
    assert!(Arc::ptr_eq(&pool(&first), &pool(&same)));

    let other_ca = Snapshot::new(load(dir.path(), &with("other.pem", true)), Some(&same));
    assert!(!Arc::ptr_eq(&group_tls(&same), &group_tls(&other_ca)));
    assert!(
        !Arc::ptr_eq(&pool(&same), &pool(&other_ca)),
        "connections verified against the old CA are not reused"
    );

    let plain = Snapshot::new(load(dir.path(), &with("other.pem", false)), Some(&other_ca));
    assert!(
        plain.upstreams[0].tls.is_none(),
        "no TLS backend, no config"
    );
    assert!(!Arc::ptr_eq(&pool(&other_ca), &pool(&plain)));
}

#[test]
fn the_tls_backends_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/tls-backends.yaml");
    let config = Config::load(&path, None).unwrap_or_else(|e| panic!("{e}"));
    let proxy = config.proxy.expect("proxy");
    let backends = &proxy.upstreams[0].backends;
    assert!(backends.iter().all(|b| b.tls.is_some()));
    assert_eq!(
        proxy.upstreams[0].tls_roots,
        sentinel::config::TlsRoots::System
    );
}

#[test]
fn check_refuses_a_missing_or_garbage_ca_file_and_a_name_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("check CA");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(
        dir.path().join("garbage.pem"),
        "this is not a certificate\n",
    )
    .unwrap();
    let check = |yaml: &str| {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_sentinel"))
            .args(["--check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let config = |proxy_ca: &str, group_ca: &str, extra: &str| {
        format!(
            "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  tls_ca_file: {proxy_ca}\n  \
             backends:\n    - name: a\n      address: \"127.0.0.1:9443\"\n      tls: true\n{extra}  \
             upstreams:\n    api:\n      tls_ca_file: {group_ca}\n      backends:\n        \
             - name: b\n          address: \"api.internal:443\"\n          tls: true\n"
        )
    };

    let (code, stderr) = check(&config("ca.pem", "ca.pem", ""));
    assert_eq!(code, Some(0), "a relative path to a good file: {stderr}");

    let (code, stderr) = check(&config("missing.pem", "garbage.pem", ""));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("proxy.tls_ca_file") && stderr.contains("missing.pem does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("proxy.upstreams.api.tls_ca_file")
            && stderr.contains("holds no PEM certificate"),
        "{stderr}"
    );

    let (code, stderr) = check(&config(
        "ca.pem",
        "ca.pem",
        "    - name: c\n      address: \"127.0.0.1:9444\"\n      \
         tls_server_name: \"c.internal\"\n",
    ));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("proxy.backends[1].tls_server_name") && stderr.contains("tls: true"),
        "{stderr}"
    );
}
