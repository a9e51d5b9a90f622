//! TLS termination (issue 17) with real TLS clients: rustls for ordinary handshakes, raw
//! ClientHello bytes and `openssl s_client` where a test needs versions and cipher suites
//! that rustls clients cannot offer. Every certificate is made at run time by a test CA.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backend::{ok, Backend, Reply};
use common::tls::{connect, presented, tls_error, tls_yaml, trusting_anything, Issued, Pki};
use common::{Options, RawClient, TestServer, IO_TIMEOUT};
use rustls::version::{TLS12, TLS13};
use rustls::{AlertDescription, HandshakeKind};

/// How long a test waits for an effect before failing; each wait polls for its condition.
const WAIT: Duration = Duration::from_secs(10);

fn tls_server(certificates: &[(&Issued, &[&str])], tls_extra: &str, extra: &str) -> TestServer {
    TestServer::start_with(Options {
        extra_yaml: format!("{}{extra}", tls_yaml(certificates, tls_extra)),
        ..Options::default()
    })
}

fn https(server: &TestServer) -> SocketAddr {
    server.tls_addr.expect("the server has an HTTPS listener")
}

/// The alert the server answered a handshake with, from a failed client handshake.
fn alert_of(error: &std::io::Error) -> Option<AlertDescription> {
    match tls_error(error) {
        Some(rustls::Error::AlertReceived(alert)) => Some(*alert),
        _ => None,
    }
}

#[test]
fn tls_1_2_and_1_3_handshakes_succeed_and_choose_http_1_1() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(&[(&site, &["localhost"])], "", "");
    for version in [&TLS12, &TLS13] {
        let mut client =
            connect(https(&server), "localhost", pki.client(&[version])).expect("handshake");
        let connection = &client.stream.conn;
        assert_eq!(connection.protocol_version(), Some(version.version));
        // The client offered h2 first: only http/1.1 is on offer.
        assert_eq!(connection.alpn_protocol(), Some(&b"http/1.1"[..]));
        let suite = connection.negotiated_cipher_suite().expect("suite");
        let name = format!("{:?}", suite.suite());
        assert!(
            name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
            "{name} is not an AEAD suite"
        );
        if version == &TLS12 {
            assert!(
                name.starts_with("TLS_ECDHE_"),
                "{name} has no forward secrecy"
            );
        }
        client.send(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let response = client.read_response();
        assert_eq!(response.status, 200, "over {version:?}");
        assert_eq!(response.body, b"hello, world\n");
    }
}

#[test]
fn a_client_that_offers_only_h2_is_refused_in_the_handshake() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(&[(&site, &["localhost"])], "", "");
    let mut config = (*pki.client(&[&TLS13])).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let error = connect(https(&server), "localhost", Arc::new(config))
        .err()
        .expect("refused");
    assert_eq!(
        alert_of(&error),
        Some(AlertDescription::NoApplicationProtocol),
        "{error}"
    );
}

#[test]
fn min_version_1_3_refuses_a_client_that_speaks_only_1_2() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(&[(&site, &["localhost"])], "  min_version: \"1.3\"\n", "");
    let error = connect(https(&server), "localhost", pki.client(&[&TLS12]))
        .err()
        .expect("a TLS 1.2 client is refused");
    assert_eq!(
        alert_of(&error),
        Some(AlertDescription::ProtocolVersion),
        "{error}"
    );
    let client = connect(https(&server), "localhost", pki.client(&[&TLS13])).expect("TLS 1.3");
    assert_eq!(client.stream.conn.protocol_version(), Some(TLS13.version));
}

#[test]
fn sessions_resume_by_default_over_tls_1_2_and_1_3() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(&[(&site, &["localhost"])], "", "");
    for version in [&TLS12, &TLS13] {
        let config = pki.client(&[version]);
        let kinds: Vec<_> = (0..2)
            .map(|_| {
                let mut client =
                    connect(https(&server), "localhost", Arc::clone(&config)).expect("handshake");
                // A TLS 1.3 ticket comes after the handshake: a response reads it too.
                client.send(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
                assert_eq!(client.read_response().status, 200);
                client.stream.conn.handshake_kind()
            })
            .collect();
        assert_eq!(
            kinds,
            [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)],
            "over {version:?}"
        );
    }
}

#[test]
fn resumption_can_be_turned_off() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(
        &[(&site, &["localhost"])],
        "  session_tickets: false\n  session_cache_entries: 0\n",
        "",
    );
    for version in [&TLS12, &TLS13] {
        let config = pki.client(&[version]);
        for _ in 0..2 {
            let mut client =
                connect(https(&server), "localhost", Arc::clone(&config)).expect("handshake");
            client.send(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
            assert_eq!(client.read_response().status, 200);
            assert_eq!(
                client.stream.conn.handshake_kind(),
                Some(HandshakeKind::Full)
            );
        }
    }
}

#[test]
fn sni_picks_the_exact_name_then_a_wildcard_then_the_default() {
    let pki = Pki::default();
    let default = pki.issue("default", &["default.test"]);
    let wildcard = pki.issue("wildcard", &["*.example.com"]);
    let exact = pki.issue("exact", &["www.example.com", "example.com"]);
    let server = tls_server(
        &[
            (&default, &["default.test"]),
            (&wildcard, &["*.example.com"]),
            (&exact, &["www.example.com", "example.com"]),
        ],
        "",
        "",
    );
    let cases = [
        ("www.example.com", &exact),
        ("EXAMPLE.com", &exact),
        ("api.example.com", &wildcard),
        // A wildcard stands for one label.
        ("a.b.example.com", &default),
        ("unknown.test", &default),
        ("default.test", &default),
        // An address: the client sends no SNI at all.
        ("127.0.0.1", &default),
    ];
    for (name, want) in cases {
        let client = connect(https(&server), name, trusting_anything()).expect("handshake");
        assert!(
            presented(&client) == want.der,
            "{name} got the wrong certificate"
        );
    }
}

#[test]
fn keep_alive_pipelining_static_files_and_proxying_work_over_tls() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let backend = Backend::start(|_| Reply::Send(ok("from backend")));
    let proxy = format!(
        "proxy:\n  backends:\n{}routes:\n  - path_prefix: \"/api\"\n    upstream: \"default\"\n  \
         - path_prefix: \"/\"\n    static: true\n",
        backend.yaml_entry("b", "    ")
    );
    let server = tls_server(&[(&site, &["localhost"])], "", &proxy);
    let mut client =
        connect(https(&server), "localhost", pki.client(&[&TLS13])).expect("handshake");
    // Three requests in one write: answered in order on the one connection.
    client.send(
        b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /api/x?y=1 HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: http\r\n\r\n\
          GET /digits.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    let first = client.read_response();
    assert_eq!(
        (first.status, first.body_text().as_str()),
        (200, "hello, world\n")
    );
    let second = client.read_response();
    assert_eq!(
        (second.status, second.body_text().as_str()),
        (200, "from backend")
    );
    let third = client.read_response();
    assert_eq!(third.status, 200);
    assert_eq!(third.body.len(), 1000, "a file body sent without sendfile");
    // Still open: a fourth request on the same connection.
    client.send(b"GET /style.css HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(client.read_response().status, 200);
    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/api/x?y=1");
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen[0].header_count("x-forwarded-proto"), 1);
}

#[test]
fn a_handshake_that_stalls_is_closed_after_the_handshake_timeout() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(
        &[(&site, &["localhost"])],
        "  handshake_timeout_ms: 300\n",
        "",
    );
    // Silent after connecting, and silent after the first bytes of a ClientHello.
    for sent in [&b""[..], &client_hello(0x0303, &[0xc02b], true)[..20]] {
        let mut client = RawClient::connect(https(&server));
        client.send(sent);
        let started = Instant::now();
        assert!(client.is_closed_within(WAIT), "still open after {WAIT:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200),
            "closed after {waited:?}, before the timeout"
        );
    }
    // The timeout is the handshake's, not the connection's: a prompt client is served.
    let client = connect(https(&server), "localhost", pki.client(&[&TLS13]));
    assert!(client.is_ok());
}

#[test]
fn plain_http_to_the_https_port_gets_a_400_and_a_prompt_close() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(&[(&site, &["localhost"])], "", "");
    let mut client = RawClient::connect(https(&server));
    client.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 400);
    assert!(
        response
            .body_text()
            .contains("HTTP request was sent to the HTTPS port"),
        "{}",
        response.body_text()
    );
    assert!(client.is_closed_within(Duration::from_secs(2)));
}

#[test]
fn redirect_http_answers_308_to_https_with_path_and_query_intact() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(&[(&site, &["localhost"])], "  redirect_http: true\n", "");
    let port = https(&server).port();
    let mut client = server.connect();
    client.send(b"GET /a/b?x=1&y=%2F HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 308);
    let want = format!("https://example.com:{port}/a/b?x=1&y=%2F");
    assert_eq!(response.header("location"), Some(want.as_str()));
    // Keep-alive goes on, and a body the redirect did not read is skipped.
    client.send(b"POST /form?z HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabc");
    let response = client.read_response();
    assert_eq!(response.status, 308);
    let want = format!("https://example.com:{port}/form?z");
    assert_eq!(response.header("location"), Some(want.as_str()));
    // No host to redirect to.
    client.send(b"GET /x HTTP/1.0\r\n\r\n");
    assert_eq!(client.read_response().status, 400);
    // Over TLS the request is served.
    let mut secure =
        connect(https(&server), "localhost", pki.client(&[&TLS13])).expect("handshake");
    secure.send(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(secure.read_response().status, 200);
}

#[test]
fn redirect_port_443_is_left_out_of_the_location() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(
        &[(&site, &["localhost"])],
        "  redirect_http: true\n  redirect_port: 443\n",
        "",
    );
    let response = server.get("/p?q=1");
    assert_eq!(response.status, 308);
    assert_eq!(response.header("location"), Some("https://test/p?q=1"));
}

#[test]
fn client_ca_admits_only_clients_with_a_certificate_it_issued() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(
        &[(&site, &["localhost"])],
        &format!("  client_ca: \"{}\"\n", pki.ca_path.display()),
        "",
    );
    let member = pki.issue("member", &["client.test"]);
    assert_eq!(
        try_get(&server, pki.client_with_certificate(&member)).ok(),
        Some(200)
    );
    // No certificate, or one from a CA the server does not trust.
    assert!(try_get(&server, pki.client(&[&TLS13])).is_err());
    assert!(try_get(&server, pki.client(&[&TLS12])).is_err());
    let stranger = Pki::new("Another CA").issue("stranger", &["client.test"]);
    assert!(try_get(&server, pki.client_with_certificate(&stranger)).is_err());
}

/// The status of `GET /hello.txt` over a new connection, or why there was none. A server
/// that refuses a TLS 1.3 client's certificate can only say so after the client's side of
/// the handshake is done, so the refusal may come as the first read failing.
fn try_get(server: &TestServer, config: Arc<rustls::ClientConfig>) -> std::io::Result<u16> {
    let mut client = connect(https(server), "localhost", config)?;
    client
        .stream
        .write_all(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut received = Vec::new();
    client.stream.read_to_end(&mut received)?;
    let text = String::from_utf8_lossy(&received);
    text.split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no response: {text:?}")))
}

// --- Versions and cipher suites that rustls clients cannot offer: raw ClientHellos. ---

/// A ClientHello record offering `version` and `suites`, with the extensions a TLS 1.2
/// client sends (so that what is refused is the version or the suites, not a missing
/// extension), and no `supported_versions` (so `version` is all it offers).
fn client_hello(version: u16, suites: &[u16], extensions: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null only
    if extensions {
        let mut ext = Vec::new();
        let mut add = |kind: u16, data: &[u8]| {
            ext.extend_from_slice(&kind.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(data);
        };
        // server_name: localhost
        add(
            0x0000,
            &[
                0, 12, 0, 0, 9, b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't',
            ],
        );
        // supported_groups: x25519, secp256r1
        add(0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]);
        // ec_point_formats: uncompressed
        add(0x000b, &[1, 0]);
        // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
        add(0x000d, &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
    }
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16];
    // Record versions above TLS 1.0 confuse some servers; clients write 0x0301 or their own.
    record.extend_from_slice(&version.min(0x0301).to_be_bytes());
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// What the server answered a raw ClientHello with.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// An alert record, by its description code.
    Alert(u8),
    ServerHello,
    Other(Vec<u8>),
}

fn send_hello(addr: SocketAddr, hello: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(hello).expect("send hello");
    let mut header = [0u8; 5];
    if stream.read_exact(&mut header).is_err() {
        return Answer::Other(Vec::new());
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).expect("record body");
    match (header[0], body.as_slice()) {
        (0x15, [_level, description, ..]) => Answer::Alert(*description),
        (0x16, [2, ..]) => Answer::ServerHello,
        _ => Answer::Other(header.iter().chain(&body).copied().collect()),
    }
}

/// TLS alert codes (RFC 8446 §6).
const HANDSHAKE_FAILURE: u8 = 40;
const PROTOCOL_VERSION: u8 = 70;

/// A suite every TLS 1.2 client offers and the server (ECDSA P-256 certificate) takes.
const ECDHE_ECDSA_AES128_GCM: u16 = 0xc02b;

#[test]
fn ssl_3_tls_1_0_and_tls_1_1_hellos_are_refused_with_a_protocol_version_alert() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(&[(&site, &["localhost"])], "", "");
    let suites = [ECDHE_ECDSA_AES128_GCM, 0xc009, 0xc013, 0x002f];
    // The same hello as TLS 1.2 is served: only the version is refused.
    assert_eq!(
        send_hello(https(&server), &client_hello(0x0303, &suites, true)),
        Answer::ServerHello
    );
    for (name, version) in [
        ("SSL 3.0", 0x0300),
        ("TLS 1.0", 0x0301),
        ("TLS 1.1", 0x0302),
    ] {
        assert_eq!(
            send_hello(https(&server), &client_hello(version, &suites, true)),
            Answer::Alert(PROTOCOL_VERSION),
            "{name}"
        );
    }
}

#[test]
fn weak_cipher_suites_are_refused_with_a_handshake_failure_alert() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(&[(&site, &["localhost"])], "", "");
    assert_eq!(
        send_hello(
            https(&server),
            &client_hello(0x0303, &[ECDHE_ECDSA_AES128_GCM], true)
        ),
        Answer::ServerHello,
        "the control hello, with one good suite"
    );
    let weak: [(&str, &[u16]); 7] = [
        ("RC4", &[0x0005, 0xc007, 0xc011]),
        ("3DES", &[0x000a, 0xc008, 0xc012]),
        ("NULL", &[0x003b, 0x0002, 0xc006]),
        ("EXPORT", &[0x0003, 0x0008, 0x0014]),
        ("anonymous", &[0x00a6, 0x0034, 0xc018]),
        (
            "static RSA key exchange (no forward secrecy)",
            &[0x009c, 0x002f],
        ),
        ("CBC (not AEAD)", &[0xc009, 0xc013, 0xc023]),
    ];
    for (name, suites) in weak {
        assert_eq!(
            send_hello(https(&server), &client_hello(0x0303, suites, true)),
            Answer::Alert(HANDSHAKE_FAILURE),
            "{name}"
        );
    }
}

/// `openssl s_client` against the server with `args`; its combined output. Missing
/// `openssl` fails the test: `.ci/run` installs it.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let output = std::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(["-servername", "localhost"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run openssl ({error}): install it (Debian: apt-get install openssl)")
        });
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The suites `spec` names that this openssl can offer: the test must offer some, or its
/// failure would be the client's own.
fn openssl_suites(spec: &str) -> Vec<String> {
    let output = std::process::Command::new("openssl")
        .args(["ciphers", "-s", "-tls1_2", spec])
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run openssl ({error}): install it (Debian: apt-get install openssl)")
        });
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .split(':')
        .filter(|suite| !suite.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn openssl_clients_with_old_versions_or_weak_suites_get_the_servers_alert() {
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let server = tls_server(&[(&site, &["localhost"])], "", "");
    let addr = https(&server);
    let good = s_client(
        addr,
        &["-tls1_2", "-CAfile", &pki.ca_path.display().to_string()],
    );
    assert!(good.contains("Verify return code: 0 (ok)"), "{good}");
    // A TLS 1.0 or 1.1 hello carries no signature_algorithms extension, and rustls names
    // that missing (handshake_failure) before the version (protocol_version, as the raw
    // hellos above show); either way it is the server's alert that ends the handshake.
    for version in ["-tls1", "-tls1_1"] {
        let output = s_client(addr, &[version, "-cipher", "DEFAULT:@SECLEVEL=0"]);
        assert!(
            received_alert(&output, 70) || received_alert(&output, 40),
            "{version}: {output}"
        );
        assert!(output.contains("Cipher is (NONE)"), "{version}: {output}");
    }
    let weak = "RC4:3DES:eNULL:aNULL:EXPORT:@SECLEVEL=0";
    let offered = openssl_suites(weak);
    assert!(!offered.is_empty(), "this openssl offers none of {weak}");
    let output = s_client(addr, &["-tls1_2", "-cipher", weak]);
    assert!(
        received_alert(&output, 40),
        "offering {offered:?}: {output}"
    );
}

/// openssl reports an alert it received (not one it sent) from its record reader.
fn received_alert(output: &str, code: u8) -> bool {
    output.lines().any(|line| {
        line.contains("ssl3_read_bytes") && line.ends_with(&format!("SSL alert number {code}"))
    })
}

// --- Certificate hot reload ---

/// Poll `condition` until it holds; fail with `what` at `deadline`.
fn wait_until(deadline: Instant, what: &str, mut condition: impl FnMut() -> bool) {
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The leaf a new handshake as `localhost` gets.
fn leaf_of_new_handshake(addr: SocketAddr) -> Option<Vec<u8>> {
    connect(addr, "localhost", trusting_anything())
        .ok()
        .map(|client| presented(&client))
}

/// The issue's promise: a replaced certificate is used by new handshakes within 2 s.
const ROTATION_DEADLINE: Duration = Duration::from_secs(2);

/// Keep-alive clients looping over requests on one connection each until told to stop;
/// each returns how many requests it made (a failure panics its thread).
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<std::thread::JoinHandle<usize>>,
}

impl Load {
    fn start(addr: SocketAddr, config: Arc<rustls::ClientConfig>, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|_| {
                let (stop, started, config) =
                    (Arc::clone(&stop), Arc::clone(&started), Arc::clone(&config));
                std::thread::spawn(move || {
                    let mut client = connect(addr, "localhost", config).expect("handshake");
                    let mut requests = 0;
                    while !stop.load(Ordering::SeqCst) {
                        client.send(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
                        let response = client.read_response();
                        assert_eq!(response.status, 200);
                        assert_eq!(response.body, b"hello, world\n");
                        requests += 1;
                        if requests == 1 {
                            started.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    requests
                })
            })
            .collect::<Vec<_>>();
        let count = clients.len();
        wait_until(Instant::now() + WAIT, "the load to start", || {
            started.load(Ordering::SeqCst) == count
        });
        Load { stop, clients }
    }

    /// Stop, and check every client got through without an error.
    fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            let requests = client.join().expect("a keep-alive client failed");
            assert!(requests > 0);
        }
    }
}

/// A backend whose `/slow` answers only when the test says so: a request in flight for as
/// long as the test needs, without guessing a duration.
fn held_backend() -> (Backend, std::sync::mpsc::Sender<()>) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let backend = Backend::start(move |seen| {
        if seen.target.starts_with("/slow") {
            let _ = released.lock().unwrap().recv_timeout(WAIT);
        }
        Reply::Send(ok("slow done"))
    });
    (backend, release)
}

#[test]
fn a_certificate_replaced_in_place_or_by_rename_serves_new_handshakes_under_load() {
    let pki = Pki::default();
    let first = pki.issue("site", &["localhost"]);
    let second = pki.issue("second", &["localhost"]);
    let third = pki.issue("third", &["localhost"]);
    let (backend, release) = held_backend();
    let routes = format!(
        "proxy:\n  backends:\n{}routes:\n  - path_prefix: \"/slow\"\n    upstream: \"default\"\n  \
         - path_prefix: \"/\"\n    static: true\n",
        backend.yaml_entry("b", "    ")
    );
    let server = tls_server(&[(&first, &["localhost"])], "", &routes);
    let addr = https(&server);
    assert_eq!(leaf_of_new_handshake(addr), Some(first.der.clone()));

    let load = Load::start(addr, pki.client(&[&TLS13]), 3);
    let mut in_flight = connect(addr, "localhost", pki.client(&[&TLS12])).expect("handshake");
    in_flight.send(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n");
    wait_until(
        Instant::now() + WAIT,
        "the slow request to reach the backend",
        || backend.request_count() == 1,
    );

    // In place, one file at a time, key first (the pair is mismatched in between).
    std::fs::write(&first.key, &second.key_pem).unwrap();
    std::fs::write(&first.cert, &second.cert_pem).unwrap();
    let written = Instant::now();
    wait_until(
        written + ROTATION_DEADLINE,
        "the in-place certificate",
        || leaf_of_new_handshake(addr) == Some(second.der.clone()),
    );

    // By rename, as certbot and editors replace files.
    let (cert_tmp, key_tmp) = (
        first.cert.with_extension("pem.new"),
        first.key.with_extension("key.new"),
    );
    std::fs::write(&key_tmp, &third.key_pem).unwrap();
    std::fs::write(&cert_tmp, &third.cert_pem).unwrap();
    std::fs::rename(&key_tmp, &first.key).unwrap();
    std::fs::rename(&cert_tmp, &first.cert).unwrap();
    let renamed = Instant::now();
    wait_until(
        renamed + ROTATION_DEADLINE,
        "the renamed certificate",
        || leaf_of_new_handshake(addr) == Some(third.der.clone()),
    );

    // The connections made before all this were not touched.
    release.send(()).unwrap();
    let slow = in_flight.read_response();
    assert_eq!((slow.status, slow.body_text().as_str()), (200, "slow done"));
    assert_eq!(presented(&in_flight), first.der);
    in_flight.send(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(in_flight.read_response().status, 200);
    load.finish();
}

#[cfg(unix)]
#[test]
fn a_kubernetes_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let pki = Pki::default();
    let first = pki.issue("first", &["localhost"]);
    let second = pki.issue("second", &["localhost"]);
    // secret/tls.crt -> ..data/tls.crt, ..data -> ..v1: the layout of a secret volume.
    let secret = pki.dir.path().join("secret");
    for (version, issued) in [("..v1", &first), ("..v2", &second)] {
        std::fs::create_dir_all(secret.join(version)).unwrap();
        std::fs::write(secret.join(version).join("tls.crt"), &issued.cert_pem).unwrap();
        std::fs::write(secret.join(version).join("tls.key"), &issued.key_pem).unwrap();
    }
    symlink("..v1", secret.join("..data")).unwrap();
    symlink("..data/tls.crt", secret.join("tls.crt")).unwrap();
    symlink("..data/tls.key", secret.join("tls.key")).unwrap();
    let linked = Issued {
        cert: secret.join("tls.crt"),
        key: secret.join("tls.key"),
        der: first.der.clone(),
        cert_pem: String::new(),
        key_pem: String::new(),
    };
    let server = tls_server(&[(&linked, &["localhost"])], "", "");
    let addr = https(&server);
    assert_eq!(leaf_of_new_handshake(addr), Some(first.der.clone()));
    // The kubelet's swap: a new link renamed over ..data.
    symlink("..v2", secret.join("..data_tmp")).unwrap();
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
    let swapped = Instant::now();
    wait_until(
        swapped + ROTATION_DEADLINE,
        "the swapped certificate",
        || leaf_of_new_handshake(addr) == Some(second.der.clone()),
    );
}

// --- The binary: logs, config reload, --check ---

#[cfg(unix)]
mod binary {
    use std::io::{BufRead, BufReader};
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::common::tls::{connect, tls_yaml, Issued, Pki};
    use super::{leaf_of_new_handshake, TLS12, TLS13, WAIT};

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
        child: Child,
        log: Arc<Mutex<Vec<String>>>,
        https: SocketAddr,
        path: PathBuf,
    }

    impl Daemon {
        fn start(dir: &Path, yaml: &str) -> Daemon {
            let path = dir.join("config.yaml");
            std::fs::write(&path, yaml).unwrap();
            let mut child = Command::new(BIN)
                .arg("--config")
                .arg(&path)
                .env_remove("RUST_LOG")
                .env_remove("LISTEN")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let lines = BufReader::new(child.stderr.take().unwrap()).lines();
            let log = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            let mut daemon = Daemon {
                child,
                log,
                https: "0.0.0.0:0".parse().unwrap(),
                path,
            };
            let line = daemon.wait_for_log_after(0, "listening for HTTPS");
            daemon.https = addr_in(&line);
            daemon.wait_for_log_after(0, "watching the certificate files");
            daemon.wait_for_log_after(0, "watching the config");
            daemon
        }

        fn log_len(&self) -> usize {
            self.log.lock().unwrap().len()
        }

        fn lines_after(&self, skip: usize) -> Vec<String> {
            self.log
                .lock()
                .unwrap()
                .iter()
                .skip(skip)
                .cloned()
                .collect()
        }

        /// The first line after `skip` containing `needle`.
        fn wait_for_log_after(&self, skip: usize, needle: &str) -> String {
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(line) = self
                    .lines_after(skip)
                    .into_iter()
                    .find(|l| l.contains(needle))
                {
                    return line;
                }
                assert!(
                    Instant::now() < deadline,
                    "no log line with {needle:?}:\n{}",
                    self.lines_after(0).join("\n")
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// Replace the config the way editors do.
        fn rewrite_config(&self, yaml: &str) {
            let temp = self.path.with_extension("yaml.tmp");
            std::fs::write(&temp, yaml).unwrap();
            std::fs::rename(&temp, &self.path).unwrap();
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn addr_in(line: &str) -> SocketAddr {
        line.split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line}"))
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
        assert_eq!(super::presented(&client), extra.der);
        let refused = connect(new_addr, "localhost", pki.client(&[&TLS12]));
        assert!(refused.is_err(), "TLS 1.2 after min_version 1.3");
        let deadline = Instant::now() + WAIT;
        super::wait_until(deadline, "the old HTTPS address to close", || {
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
        assert_eq!(super::presented(&client), extra.der);
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
}

// --- The `tls` section's validation ---

mod validation {
    use sentinel::config::{Config, TlsVersion};

    use super::common::tls::{tls_yaml, Pki};

    fn load(pki: &Pki, tls: &str) -> Result<Config, String> {
        let dir = pki.dir.path();
        std::fs::create_dir_all(dir.join("site")).unwrap();
        let yaml = format!(
            "server:\n  listen_addr: \"127.0.0.1:8080\"\nstatic_files:\n  root: \"site\"\n{tls}"
        );
        Config::from_yaml(&yaml, &dir.join("config.yaml"), dir).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_relative_paths() {
        let pki = Pki::default();
        pki.issue("site", &["localhost"]);
        let tls = "tls:\n  listen_addr: \"127.0.0.1:8443\"\n  certificates:\n    \
                   - cert: \"site.pem\"\n      key: \"site.key\"\n";
        let config = load(&pki, tls).expect("valid");
        let tls = config.tls.expect("tls");
        assert_eq!(tls.min_version, TlsVersion::Tls12);
        assert_eq!(tls.handshake_timeout, std::time::Duration::from_secs(10));
        assert!(!tls.redirect_http && tls.session_tickets && tls.client_ca.is_none());
        assert_eq!(tls.certificates[0].cert, pki.dir.path().join("site.pem"));
        // min_version unquoted reads as a number, and is taken as meant.
        let config = load(&pki, &format!("{}  min_version: 1.3\n", "tls:\n  listen_addr: \"127.0.0.1:8443\"\n  certificates:\n    - cert: \"site.pem\"\n      key: \"site.key\"\n")).expect("valid");
        assert_eq!(config.tls.expect("tls").min_version, TlsVersion::Tls13);
    }

    #[test]
    fn mistakes_are_reported_with_their_keys() {
        let pki = Pki::default();
        let one = pki.issue("one", &["a.test"]);
        let two = pki.issue("two", &["b.test"]);
        let cases = [
            (tls_yaml(&[(&one, &["a.test"])], "  min_version: \"1.1\"\n"), "is not a TLS version Sentinel speaks"),
            (tls_yaml(&[(&one, &["a.test"]), (&two, &["a.test"])], ""), "tls.certificates[1].server_names: \"a.test\" is already served by tls.certificates[0]"),
            (tls_yaml(&[(&one, &["a.test"]), (&two, &[])], ""), "tls.certificates[1]: is never chosen"),
            (tls_yaml(&[(&one, &["*.*.test"])], ""), "a wildcard stands for the whole first label only"),
            (tls_yaml(&[(&one, &["10.0.0.1"])], ""), "SNI never carries an IP address"),
            (tls_yaml(&[(&one, &["a.test"])], "  redirect_port: 0\n"), "tls.redirect_port: must be a port"),
            (tls_yaml(&[(&one, &["a.test"])], "  handshake_timeout_ms: 0\n"), "tls.handshake_timeout_ms: must be greater than 0"),
            (tls_yaml(&[(&one, &["a.test"])], "  client_ca: \"nowhere.pem\"\n"), "tls.client_ca: "),
            (tls_yaml(&[(&one, &["a.test"])], "").replace("127.0.0.1:0", "127.0.0.1:8080"), "is server.listen_addr too"),
            ("tls:\n  listen_addr: \"127.0.0.1:8443\"\n  certificates: []\n".to_string(), "needs at least one certificate"),
            (tls_yaml(&[(&one, &["a.test"])], "  ciphers: \"RC4\"\n"), "unknown key \"ciphers\""),
        ];
        for (tls, want) in cases {
            let error = load(&pki, &tls).expect_err(want);
            assert!(error.contains(want), "want {want:?} in:\n{error}");
        }
    }
}
