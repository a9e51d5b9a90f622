//! Long response bodies through the reverse proxy. On Linux the long Content-Length stretch
//! of a body goes from the backend's socket to the client's with splice(2) instead of being
//! copied; these tests hold that path to the same rules as the copying one: exact bytes,
//! nothing past the announced length, both connections reusable afterwards, and failures on
//! either side ending in a cut connection within the configured timeouts.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::backend::{Backend, Reply};
use common::{Options, TestServer};

fn proxy_with(backend: &Backend, proxy_keys: &str, server_yaml: &str) -> TestServer {
    TestServer::start_with(Options {
        server_yaml: server_yaml.into(),
        extra_yaml: format!(
            "proxy:\n  backends:\n{}{proxy_keys}",
            backend.yaml_entry("b0", "    ")
        ),
        ..Options::default()
    })
}

/// `len` bytes that differ from one request to the next and along the body, so a byte out
/// of place or a body from another response cannot match.
fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

/// `GET /LEN/SEED` is answered with `body(LEN, SEED)`.
fn sized_backend() -> Backend {
    Backend::start(|seen| {
        let mut parts = seen.target.trim_start_matches('/').split('/');
        let len: usize = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let seed: u8 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let mut reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
        reply.extend_from_slice(&body(len, seed));
        Reply::Send(reply)
    })
}

#[test]
fn long_bodies_arrive_exactly_and_both_connections_are_reused() {
    let backend = sized_backend();
    let server = proxy_with(&backend, "", "");
    let mut client = server.connect();
    // Around the sizes where the proxy switches from copying to splicing, and well past them.
    let sizes = [
        0,
        1,
        16 * 1024 - 1,
        16 * 1024,
        16 * 1024 + 1,
        32 * 1024 - 1,
        32 * 1024,
        32 * 1024 + 1,
        64 * 1024,
        65 * 1024 + 3,
        200 * 1024,
        1024 * 1024 + 7,
        5 * 1024 * 1024,
    ];
    for (i, len) in sizes.into_iter().enumerate() {
        let seed = i as u8;
        client.send(format!("GET /{len}/{seed} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let response = client.read_response();
        assert_eq!(response.status, 200, "{len} bytes");
        assert_eq!(
            response.header("content-length"),
            Some(len.to_string().as_str())
        );
        assert!(
            response.body == body(len, seed),
            "{len} bytes: body differs"
        );
    }
    assert!(client.leftover().is_empty());
    assert_eq!(backend.request_count(), sizes.len());
    assert_eq!(
        backend.connection_count(),
        1,
        "the upstream connection was reused after every body"
    );
}

#[test]
fn bytes_after_a_long_body_never_reach_the_client() {
    // The first answer carries a complete extra response behind its 100 KiB body.
    let backend = Backend::start(|seen| {
        if seen.target == "/first" {
            let mut reply = b"HTTP/1.1 200 OK\r\nContent-Length: 102400\r\n\r\n".to_vec();
            reply.extend_from_slice(&body(102_400, 1));
            reply.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED");
            Reply::Send(reply)
        } else {
            Reply::Send(common::backend::ok("genuine"))
        }
    });
    let server = proxy_with(&backend, "", "");
    let mut client = server.connect();
    client.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
    let first = client.read_response();
    assert_eq!(first.status, 200);
    assert!(first.body == body(102_400, 1));
    client.send(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    let second = client.read_response();
    assert_eq!(second.body_text(), "genuine");
    assert!(client.leftover().is_empty());
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].connection, 1,
        "a connection with bytes left over was reused"
    );
}

/// A backend that sends a head announcing `announced` body bytes, then `sent` of them, then
/// either closes (`close`) or holds the connection open without sending more.
fn short_backend(announced: usize, sent: usize, close: bool) -> Backend {
    Backend::start(move |_| {
        let mut reply =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\n\r\n").into_bytes();
        reply.extend_from_slice(&body(sent, 9));
        if close {
            Reply::SendAndClose(reply)
        } else {
            Reply::Takeover(
                reply,
                Box::new(|mut stream: TcpStream| {
                    // Hold the connection open, silent, until the proxy gives up on it.
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let _ = stream.read(&mut [0u8; 1]);
                }),
            )
        }
    })
}

/// Read everything until the proxy closes the connection; returns the body bytes after
/// the head, and how long it took.
fn read_until_closed(server: &TestServer) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let head_end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    (received.split_off(head_end), started.elapsed())
}

#[test]
fn a_backend_dying_mid_way_through_a_long_body_cuts_the_client_connection() {
    let backend = short_backend(1024 * 1024, 200 * 1024, true);
    let server = proxy_with(&backend, "", "");
    let (received, _) = read_until_closed(&server);
    assert!(
        received == body(200 * 1024, 9),
        "the client gets exactly what the backend sent ({} bytes), then a close",
        received.len()
    );
}

#[test]
fn a_backend_stalling_mid_way_through_a_long_body_is_cut_after_the_read_timeout() {
    let backend = short_backend(1024 * 1024, 100 * 1024, false);
    let server = proxy_with(
        &backend,
        "  request_timeout_ms: 30000\n  read_timeout_ms: 300\n",
        "",
    );
    let (received, took) = read_until_closed(&server);
    assert!(received == body(100 * 1024, 9), "{} bytes", received.len());
    assert!(took >= Duration::from_millis(250), "cut after {took:?}");
    assert!(took < Duration::from_secs(8), "cut only after {took:?}");
}

#[test]
fn a_client_that_stops_reading_a_long_body_is_cut_after_the_write_timeout() {
    // Far more than the socket buffers on both sides hold; built before the request so the
    // backend answers at once.
    let len = 64 * 1024 * 1024;
    let mut reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    reply.resize(reply.len() + len, b'z');
    let reply = std::sync::Arc::new(reply);
    let backend = Backend::start(move |_| Reply::Send(reply.to_vec()));
    let server = proxy_with(&backend, "", "  write_timeout_ms: 300\n");
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // Now drain: the proxy must have given up, so the stream ends well short of the body.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut total = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the proxy kept the stalled connection open: {e}"),
        }
        assert!(
            total < len,
            "the whole body arrived: the write never timed out"
        );
    }
}
