//! Requests over TLS are the requests of plain HTTP; what the HTTPS port does with clients
//! that stall or speak plain HTTP; the plain listener's redirect to HTTPS.

use std::time::{Duration, Instant};

use rustls::version::TLS13;

use super::common::backend::{ok, Backend, Reply};
use super::common::tls::{connect, Pki};
use super::common::RawClient;
use super::refusals::client_hello;
use super::{https, tls_server, WAIT};

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
