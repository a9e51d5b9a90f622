//! Requests over TLS are the requests of plain HTTP; what the HTTPS port does with clients
//! that stall or speak plain HTTP; the plain listener's redirect to HTTPS.

use std::sync::Arc;
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

#[test]
fn a_response_written_over_tls_leaves_nothing_behind_in_the_tls_stream() {
    // A TLS stream reports bytes written once it holds them; when its socket is full at the
    // last write, the final records wait inside it for a next write that never comes, and
    // the client waits for the end of the response. A 64-byte pipe is full at every write.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: usize = 256 * 1024;
    let pki = Pki::default();
    let site = pki.issue("site", &["localhost"]);
    let chain = vec![rustls::pki_types::CertificateDer::from(site.der.clone())];
    let key = rustls::pki_types::PrivateKeyDer::try_from(
        rustls::pki_types::pem::PemObject::from_pem_slice(site.key_pem.as_bytes())
            .map(|key: rustls::pki_types::PrivatePkcs8KeyDer<'static>| {
                key.secret_pkcs8_der().to_vec()
            })
            .expect("key"),
    )
    .expect("key der");
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    // No session tickets: the server would write them after the client's last handshake
    // flight, into a pipe the client no longer reads while it waits for the accept.
    let mut server_config = server_config;
    server_config.send_tls13_tickets = 0;
    let client_config = pki.client(&[&TLS13]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let (client_end, server_end) = tokio::io::duplex(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let connector = tokio_rustls::TlsConnector::from(client_config);
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let handshakes = tokio::time::timeout(
            WAIT,
            futures_join(
                acceptor.accept(server_end),
                connector.connect(name, client_end),
            ),
        )
        .await
        .expect("handshake within the wait");
        let (mut server, mut client) = (
            handshakes.0.expect("accept"),
            handshakes.1.expect("connect"),
        );
        let (written_tx, written_rx) = tokio::sync::oneshot::channel();
        // The server writes the response, then waits as a connection waits for the next
        // request: it writes nothing more until the client has read everything.
        let writer = tokio::spawn(async move {
            let body = vec![b'x'; BODY];
            let result = sentinel::transport::write_all_with_progress(
                &mut server,
                &mut &body[..],
                Duration::from_secs(10),
            )
            .await;
            let _ = written_tx.send(result.is_ok());
            let mut next_request = [0u8; 1];
            let _ = server.read(&mut next_request).await;
        });
        let mut received = vec![0u8; BODY];
        let read = tokio::time::timeout(WAIT, client.read_exact(&mut received)).await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "the client got only part of the response: {read:?}"
        );
        assert!(written_rx.await.expect("writer done"), "the write failed");
        client.write_all(b"x").await.expect("next request");
        writer.await.expect("writer task");
    });
}

async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}
