//! Through the real binary: certificate problems in the log, config reload of the `tls`
//! section, `--check`.
#![cfg(unix)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::common::daemon::{self, addr_in};
use super::common::tls::{connect, presented, tls_yaml, Issued, Pki};
use rustls::version::{TLS12, TLS13};

use super::{leaf_of_new_handshake, wait_until, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_sentinel");

/// A config serving a static site from `dir/site`, with `tls` as given.
fn config(dir: &Path, tls: &str) -> String {
    std::fs::create_dir_all(dir.join("site")).unwrap();
    std::fs::write(dir.join("site/hello.txt"), "hello\n").unwrap();
    format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: \"{}\"\n\
         logging:\n  level: \"info\"\n  access_log: false\n{tls}",
        dir.join("site").display()
    )
}

/// The binary serving `yaml` (as `dir/config.yaml`), its log collected line by line.
struct Daemon {
    inner: daemon::Daemon,
    https: SocketAddr,
}

impl Daemon {
    fn start(dir: &Path, yaml: &str) -> Daemon {
        let inner = daemon::Daemon::start_in(dir, yaml);
        let https = addr_in(&inner.wait_for_log_after(0, "listening for HTTPS", WAIT));
        inner.wait_for_log_after(0, "watching the certificate files", WAIT);
        inner.wait_for_log_after(0, "watching the config", WAIT);
        Daemon { inner, https }
    }

    /// The first line after `skip` containing `needle`.
    fn wait_for_log_after(&self, skip: usize, needle: &str) -> String {
        self.inner.wait_for_log_after(skip, needle, WAIT)
    }
}

impl std::ops::Deref for Daemon {
    type Target = daemon::Daemon;

    fn deref(&self) -> &daemon::Daemon {
        &self.inner
    }
}

#[test]
fn a_bad_or_mismatched_pair_is_kept_out_and_logged_once() {
    let pki = Pki::default();
    let first = pki.issue("site", &["localhost"]);
    let other = pki.issue("other", &["localhost"]);
    let daemon = Daemon::start(
        pki.dir.path(),
        &config(pki.dir.path(), &tls_yaml(&[(&first, &["localhost"])], "")),
    );
    assert_eq!(leaf_of_new_handshake(daemon.https), Some(first.der.clone()));

    // The key alone: a pair that does not match.
    let mark = daemon.log_len();
    std::fs::write(&first.key, &other.key_pem).unwrap();
    let line = daemon.wait_for_log_after(mark, "certificate pair rejected");
    assert!(line.contains("does not belong"), "{line}");
    assert!(
        line.contains(&format!("file={}", first.key.display())),
        "{line}"
    );
    assert_eq!(leaf_of_new_handshake(daemon.https), Some(first.der.clone()));
    // The same bad key written again is not news.
    std::fs::write(&first.key, &other.key_pem).unwrap();
    // Then the certificate: the pair matches and serves.
    std::fs::write(&first.cert, &other.cert_pem).unwrap();
    daemon.wait_for_log_after(mark, "certificate reloaded");
    let rejected = daemon
        .lines_after(mark)
        .iter()
        .filter(|line| line.contains("certificate pair rejected"))
        .count();
    assert_eq!(rejected, 1, "{}", daemon.lines_after(mark).join("\n"));
    assert_eq!(leaf_of_new_handshake(daemon.https), Some(other.der.clone()));

    // A certificate file that does not parse: named, and the pair before it serves on.
    let mark = daemon.log_len();
    std::fs::write(&first.cert, "not a certificate\n").unwrap();
    let line = daemon.wait_for_log_after(mark, "certificate pair rejected");
    assert!(line.contains("no certificate in it"), "{line}");
    assert!(
        line.contains(&format!("file={}", first.cert.display())),
        "{line}"
    );
    assert_eq!(leaf_of_new_handshake(daemon.https), Some(other.der.clone()));
}

#[test]
fn a_config_reload_applies_new_certificates_versions_and_address() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let extra = pki.issue("extra", &["extra.test"]);
    let dir = pki.dir.path();
    let daemon = Daemon::start(dir, &config(dir, &tls_yaml(&[(&site, &["localhost"])], "")));
    let old = daemon.https;

    // A second certificate, TLS 1.3 only, and a new address, in one reload.
    let new_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let tls = tls_yaml(
        &[(&site, &["localhost"]), (&extra, &["extra.test"])],
        "  min_version: \"1.3\"\n",
    )
    .replace("127.0.0.1:0", &new_addr.to_string());
    let mark = daemon.log_len();
    daemon.rewrite_config(&config(dir, &tls));
    let line = daemon.wait_for_log_after(mark, "config reloaded");
    assert!(line.contains("tls_changed=true"), "{line}");
    daemon.wait_for_log_after(mark, "listening on the new address");
    let client = connect(new_addr, "extra.test", pki.client(&[&TLS13])).expect("handshake");
    assert_eq!(presented(&client), extra.der);
    let refused = connect(new_addr, "localhost", pki.client(&[&TLS12]));
    assert!(refused.is_err(), "TLS 1.2 after min_version 1.3");
    let deadline = Instant::now() + WAIT;
    wait_until(deadline, "the old HTTPS address to close", || {
        std::net::TcpStream::connect(old).is_err()
    });

    // A certificate that does not parse: the reload is refused, with file and line.
    let broken = pki.dir.path().join("broken.pem");
    std::fs::write(&broken, "garbage").unwrap();
    let bad = Issued {
        cert: broken,
        key: extra.key.clone(),
        der: Vec::new(),
        cert_pem: String::new(),
        key_pem: String::new(),
    };
    let mark = daemon.log_len();
    daemon.rewrite_config(&config(dir, &tls_yaml(&[(&bad, &["localhost"])], "")));
    let line = daemon.wait_for_log_after(mark, "config reload rejected");
    assert!(line.contains("tls.certificates[0].cert"), "{line}");
    let client = connect(new_addr, "extra.test", pki.client(&[&TLS13])).expect("still served");
    assert_eq!(presented(&client), extra.der);
}

fn check(dir: &Path, yaml: &str) -> (Option<i32>, String) {
    let path = dir.join("check.yaml");
    std::fs::write(&path, yaml).unwrap();
    let output = Command::new(BIN)
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .env_remove("LISTEN")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn days_from_now(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

#[test]
fn check_reports_bad_mismatched_and_expired_certificates_and_warns_before_expiry() {
    let pki = Pki::default();
    let dir = pki.dir.path();
    let good = pki.issue("good", &["good.test"]);
    let other = pki.issue("other", &["other.test"]);
    let expired = pki.issue_until("expired", &["old.test"], days_from_now(-3));
    let soon = pki.issue_until("soon", &["soon.test"], days_from_now(5));
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let unparsable = Issued {
        cert: garbage,
        key: good.key.clone(),
        der: Vec::new(),
        cert_pem: String::new(),
        key_pem: String::new(),
    };
    let mismatched = Issued {
        cert: good.cert.clone(),
        key: other.key.clone(),
        der: Vec::new(),
        cert_pem: String::new(),
        key_pem: String::new(),
    };
    let missing = Issued {
        cert: dir.join("missing.pem"),
        key: good.key.clone(),
        der: Vec::new(),
        cert_pem: String::new(),
        key_pem: String::new(),
    };
    let yaml = config(
        dir,
        &tls_yaml(
            &[
                (&unparsable, &["a.test"]),
                (&mismatched, &["b.test"]),
                (&expired, &["c.test"]),
                (&missing, &["d.test"]),
                (&soon, &["e.test"]),
            ],
            "",
        ),
    );
    let (code, stderr) = check(dir, &yaml);
    assert_eq!(code, Some(1), "{stderr}");
    let line_of = |needle: &str| {
        stderr
            .lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{stderr}"))
            .to_string()
    };
    let bad = line_of("tls.certificates[0].cert");
    assert!(bad.contains("not valid PEM"), "{bad}");
    assert!(
        bad.contains("check.yaml:"),
        "the line number is given: {bad}"
    );
    let mismatch = line_of("tls.certificates[1].key");
    assert!(mismatch.contains("does not belong"), "{mismatch}");
    let old = line_of("tls.certificates[2].cert");
    assert!(old.contains("expired 3 days ago"), "{old}");
    let gone = line_of("tls.certificates[3].cert");
    assert!(gone.contains("does not exist"), "{gone}");
    assert!(stderr.contains("has 4 errors"), "{stderr}");
    let warning = line_of("tls.certificates[4].cert");
    assert!(
        warning.contains("warning:") && warning.contains("expires in 4 days"),
        "{warning}"
    );

    // Valid but close to its end: a warning, and the check passes.
    let yaml = config(dir, &tls_yaml(&[(&soon, &["e.test"])], ""));
    let (code, stderr) = check(dir, &yaml);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("expires in"),
        "{stderr}"
    );
}

#[test]
fn an_expired_certificate_is_served_with_a_warning() {
    let pki = Pki::default();
    let dir = pki.dir.path();
    let expired = pki.issue_until("expired", &["localhost"], days_from_now(-1));
    let daemon = Daemon::start(
        dir,
        &config(dir, &tls_yaml(&[(&expired, &["localhost"])], "")),
    );
    let line = daemon.wait_for_log_after(0, "configuration warning");
    assert!(line.contains("expired"), "{line}");
    assert_eq!(
        leaf_of_new_handshake(daemon.https),
        Some(expired.der.clone())
    );
}

/// `/metrics` of the admin listener at `admin`, the body only.
fn scrape(admin: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map_or(text.clone(), |(_, body)| body.to_string())
}

fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn handshakes_are_counted_by_result_and_version() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let yaml = config(pki.dir.path(), &tls_yaml(&[(&site, &["localhost"])], ""))
        + "admin:\n  listen_addr: \"127.0.0.1:0\"\n";
    let daemon = Daemon::start(pki.dir.path(), &yaml);
    let admin = addr_in(&daemon.wait_for_log_after(0, "admin listening"));
    assert!(!scrape(admin).contains("sentinel_tls_handshakes_total"));

    connect(daemon.https, "localhost", pki.client(&[&TLS13])).expect("TLS 1.3");
    connect(daemon.https, "localhost", pki.client(&[&TLS12])).expect("TLS 1.2");
    connect(daemon.https, "localhost", pki.client(&[&TLS13])).expect("TLS 1.3");
    // A client that does not trust our CA aborts the handshake with an alert.
    let untrusting = Pki::new("another CA");
    assert!(connect(daemon.https, "localhost", untrusting.client(&[&TLS13])).is_err());
    // Plain HTTP to the HTTPS port.
    {
        use std::io::{Read, Write};
        let mut plain = std::net::TcpStream::connect(daemon.https).unwrap();
        plain.set_read_timeout(Some(WAIT)).unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
    }
    let deadline = Instant::now() + WAIT;
    wait_until(deadline, "five handshakes counted", || {
        let metrics = scrape(admin);
        sample(
            &metrics,
            "sentinel_tls_handshakes_total{result=\"success\"}",
        ) == 3.0
            && sample(&metrics, "sentinel_tls_handshakes_total{result=\"failed\"}") == 1.0
            && sample(
                &metrics,
                "sentinel_tls_handshakes_total{result=\"plain_http\"}",
            ) == 1.0
    });
    let metrics = scrape(admin);
    assert_eq!(
        sample(
            &metrics,
            "sentinel_tls_handshake_versions_total{version=\"TLSv1.3\"}"
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "sentinel_tls_handshake_versions_total{version=\"TLSv1.2\"}"
        ),
        1.0,
        "{metrics}"
    );
}

/// `tls.proxy_protocol`: the header comes before the ClientHello (in the same write here,
/// so the handshake must find its bytes untouched), and its address is the client in the
/// access log; the plain listener, without `server.proxy_protocol`, takes no header.
#[test]
fn the_https_listener_reads_a_proxy_header_before_the_handshake() {
    use std::io::Write;

    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let dir = pki.dir.path();
    let yaml = config(
        dir,
        &tls_yaml(&[(&site, &["localhost"])], "  proxy_protocol: true\n"),
    )
    .replace("access_log: false", "access_log: true");
    let daemon = Daemon::start(dir, &yaml);

    let mut tcp = std::net::TcpStream::connect(daemon.https).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let server_name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut connection = rustls::ClientConnection::new(pki.client(&[&TLS13]), server_name).unwrap();
    // The header and the ClientHello leave in one segment.
    let mut first = b"PROXY TCP4 198.51.100.4 10.0.0.1 40000 443\r\n".to_vec();
    connection.write_tls(&mut first).unwrap();
    tcp.write_all(&first).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    let mut client = super::common::RawClient::over(stream);
    client.send(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(client.read_response().status, 200);
    daemon.wait_for_log_after(0, "client=198.51.100.4:40000");

    // The plain listener still serves clients directly.
    let mut plain = super::common::RawClient::connect(daemon.addr);
    plain.send(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(plain.read_response().status, 200);

    // A TLS client that skips the balancer is closed before any handshake.
    let refused = connect(daemon.https, "localhost", pki.client(&[&TLS13]));
    assert!(
        refused.is_err(),
        "a handshake without a PROXY header succeeded"
    );
}
