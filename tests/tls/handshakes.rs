//! Handshakes that succeed and what they negotiate: versions, ALPN, resumption, the
//! certificate SNI picks, client certificates.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::version::{TLS12, TLS13};
use rustls::{AlertDescription, HandshakeKind};

use super::common::tls::{connect, presented, trusting_anything, Pki};
use super::common::TestServer;
use super::{alert_of, https, tls_server};

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
