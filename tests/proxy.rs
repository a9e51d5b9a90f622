//! The reverse proxy over real sockets, against scripted in-process backends: balancing,
//! forwarding rules, streaming, pooling, failover, timeouts, passive health and routes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::backend::{closed_port, ok, Backend, Reply};
use common::{Options, TestServer};

/// Sentinel proxying to `backends` (named b0, b1, ...), with extra `proxy:` keys and extra
/// top-level YAML (routes). 502 and 504 have custom pages.
fn proxy_with(backends: &[&Backend], proxy_keys: &str, extra: &str) -> TestServer {
    let mut yaml = String::from("proxy:\n  backends:\n");
    for (i, backend) in backends.iter().enumerate() {
        yaml += &backend.yaml_entry(&format!("b{i}"), "    ");
    }
    yaml += proxy_keys;
    yaml += extra;
    TestServer::start_with(Options {
        static_yaml:
            "    bad_gateway: \"errors/502.html\"\n    gateway_timeout: \"errors/504.html\"\n"
                .into(),
        extra_yaml: yaml,
        ..Options::default()
    })
}

fn proxy(backends: &[&Backend]) -> TestServer {
    proxy_with(backends, "", "")
}

fn get(client: &mut common::RawClient, path: &str) -> common::Response {
    client.send(format!("GET {path} HTTP/1.1\r\nHost: site.test\r\n\r\n").as_bytes());
    client.read_response()
}

#[test]
fn round_robin_gives_three_backends_n_requests_each() {
    let backends = [
        Backend::named("b0"),
        Backend::named("b1"),
        Backend::named("b2"),
    ];
    let server = proxy(&backends.iter().collect::<Vec<_>>());
    let mut client = server.connect();
    let mut counts = std::collections::HashMap::new();
    for _ in 0..30 {
        let response = get(&mut client, "/");
        assert_eq!(response.status, 200);
        *counts.entry(response.body_text()).or_insert(0) += 1;
    }
    for name in ["b0", "b1", "b2"] {
        assert_eq!(counts.get(name), Some(&10), "{counts:?}");
    }
}

#[test]
fn the_request_is_rewritten_for_the_backend() {
    let backend = Backend::named("b0");
    let server = proxy(&[&backend]);
    let mut client = server.connect();
    client.send(
        b"GET http://example.com/a/b?x=1 HTTP/1.1\r\nHost: ignored.test\r\nX-Forwarded-For: 10.1.1.1\r\n\
          X-Forwarded-Proto: https\r\nConnection: keep-alive, X-Private\r\nX-Private: secret\r\n\
          Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n\
          Accept: text/plain\r\n\r\n",
    );
    assert_eq!(client.read_response().status, 200);
    let seen = &backend.seen()[0];
    assert_eq!(seen.target, "/a/b?x=1", "absolute-form becomes origin-form");
    assert_eq!(seen.header("host"), Some("example.com"));
    assert_eq!(seen.header("x-forwarded-for"), Some("10.1.1.1, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("example.com"));
    assert_eq!(seen.header("via"), Some("1.1 sentinel"));
    assert_eq!(seen.header("accept"), Some("text/plain"));
    for hop in [
        "x-private",
        "keep-alive",
        "te",
        "proxy-connection",
        "upgrade",
        "connection",
    ] {
        assert_eq!(seen.header(hop), None, "{hop} reached the backend");
    }
}

#[test]
fn host_is_passed_through_or_replaced_by_the_backend_address() {
    let backend = Backend::named("b0");
    let server = proxy(&[&backend]);
    get(&mut server.connect(), "/");
    assert_eq!(backend.seen()[0].header("host"), Some("site.test"));

    let backend = Backend::named("b0");
    let server = proxy_with(&[&backend], "  pass_host: false\n", "");
    get(&mut server.connect(), "/");
    let expected = backend.addr.to_string();
    assert_eq!(backend.seen()[0].header("host"), Some(expected.as_str()));
}

#[test]
fn response_hop_by_hop_fields_stay_behind_and_via_is_added() {
    let backend = Backend::start(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=9\r\n\
              X-Kept: yes\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    });
    let server = proxy(&[&backend]);
    let response = get(&mut server.connect(), "/");
    assert_eq!(response.body_text(), "ok");
    assert_eq!(response.header("x-kept"), Some("yes"));
    assert_eq!(response.header("x-hop"), None);
    assert_eq!(response.header("keep-alive"), None);
    assert_eq!(response.header("via"), Some("1.1 sentinel"));
    assert!(response.header("date").is_some(), "Date added when missing");
}

#[test]
fn request_bodies_arrive_exactly_by_length_and_rechunked() {
    let backend = Backend::start(|seen| Reply::Send(ok(&seen.body.len().to_string())));
    let server = proxy(&[&backend]);
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut client = server.connect();
    client.send(
        format!(
            "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    client.send(&body);
    assert_eq!(client.read_response().body_text(), "1000000");

    let mut chunked =
        b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in body.chunks(70_000) {
        chunked.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    client.send(&chunked);
    assert_eq!(client.read_response().body_text(), "1000000");

    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, body);
    assert_eq!(seen[0].header("content-length"), Some("1000000"));
    assert_eq!(seen[1].body, body);
    assert_eq!(seen[1].header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen[1].header("content-length"), None);
    let raw = String::from_utf8_lossy(&seen[1].raw);
    assert!(
        !raw.contains("ext=1") && !raw.contains("X-Trailer"),
        "extensions and trailers stay behind"
    );
}

#[test]
fn expect_100_continue_is_answered_by_the_proxy() {
    let backend = Backend::start(|seen| Reply::Send(ok(&String::from_utf8_lossy(&seen.body))));
    let server = proxy(&[&backend]);
    let mut client = server.connect();
    client.send(b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = client.read_response();
    assert_eq!(interim.status, 100);
    client.send(b"hello");
    let response = client.read_response();
    assert_eq!(
        (response.status, response.body_text().as_str()),
        (200, "hello")
    );
    assert_eq!(backend.seen()[0].header("expect"), None);
}

/// A small body piece is copied behind what is staged (the head, a chunk header) and both go
/// out in one send; a larger one goes out beside it. Re-chunked pieces on both sides of that
/// line, and small and large bodies by length, must keep every byte in order and frame each
/// piece once.
#[test]
fn small_and_large_body_pieces_are_relayed_byte_exact() {
    let pieces: Vec<Vec<u8>> = [3usize, 700, 1, 40_000, 300, 9_000, 2]
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|j| b'a' + ((i * 7 + j) % 26) as u8).collect())
        .collect();
    let whole: Vec<u8> = pieces.concat();
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in &pieces {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let by_length = |body: &[u8]| {
        let mut response =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        response.extend_from_slice(body);
        response
    };
    let (large, small) = (by_length(&whole), by_length(&whole[..300]));
    let backend = Backend::start(move |seen| match seen.target.as_str() {
        "/chunked" => Reply::Send(chunked.clone()),
        "/small" => Reply::Send(small.clone()),
        _ => Reply::Send(large.clone()),
    });
    let server = proxy(&[&backend]);
    let mut client = server.connect();
    for (path, want) in [
        ("/chunked", &whole[..]),
        ("/small", &whole[..300]),
        ("/large", &whole[..]),
        ("/chunked", &whole[..]),
    ] {
        let response = get(&mut client, path);
        assert_eq!(response.status, 200, "{path}");
        assert!(
            response.body == want,
            "{path}: body differs ({} bytes)",
            response.body.len()
        );
    }
}

#[test]
fn response_framings_are_relayed_and_reframed() {
    let backend = Backend::start(|seen| {
        match seen.target.as_str() {
        "/chunked" => Reply::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: 1\r\n\r\n".to_vec(),
        ),
        "/close" => Reply::SendAndClose(b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec()),
        "/head" => Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n".to_vec()),
        "/204" => Reply::Send(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        "/304" => Reply::Send(b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n".to_vec()),
        "/interim" => Reply::Send(
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal".to_vec(),
        ),
        _ => Reply::Send(ok("plain")),
    }
    });
    let server = proxy(&[&backend]);
    let mut client = server.connect();

    let response = get(&mut client, "/chunked");
    assert_eq!(response.body_text(), "hello world");
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.header("t"), None, "trailers are not relayed");

    let response = get(&mut client, "/close");
    assert_eq!(response.body_text(), "until close");
    assert_eq!(
        response.header("transfer-encoding"),
        Some("chunked"),
        "1.1 client: chunked"
    );

    client.send(b"HEAD /head HTTP/1.1\r\nHost: t\r\n\r\n");
    let response = client.read_response_to(true);
    assert_eq!(response.header("content-length"), Some("1234"));
    assert!(response.body.is_empty());

    let response = get(&mut client, "/204");
    assert_eq!(response.status, 204);
    assert_eq!(response.header("content-length"), None);
    let response = get(&mut client, "/304");
    assert_eq!(response.status, 304);
    assert_eq!(response.header("etag"), Some("\"a\""));
    let response = get(&mut client, "/interim");
    assert_eq!(
        (response.status, response.body_text().as_str()),
        (200, "final")
    );
    // All of that on one client connection: every response was framed right.
    assert_eq!(get(&mut client, "/").body_text(), "plain");

    // An HTTP/1.0 client cannot read chunked: the body is delimited by closing.
    let mut client = server.connect();
    client.send(b"GET /chunked HTTP/1.0\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.body_text(), "hello world");
    assert_eq!(response.header("transfer-encoding"), None);
    assert_eq!(response.header("connection"), Some("close"));
}

#[test]
fn upstream_connections_are_pooled_and_reused() {
    let backend = Backend::named("b0");
    let server = proxy(&[&backend]);
    for _ in 0..3 {
        let mut client = server.connect();
        for _ in 0..5 {
            assert_eq!(get(&mut client, "/").status, 200);
        }
    }
    assert_eq!(backend.request_count(), 15);
    assert_eq!(
        backend.connection_count(),
        1,
        "one pooled connection served every request"
    );
}

#[test]
fn a_pooled_connection_the_backend_closed_is_replaced_transparently() {
    // Claims keep-alive, then closes each connection right after answering.
    let backend = Backend::start(|_| Reply::SendAndClose(ok("b0")));
    let server = proxy(&[&backend]);
    let mut client = server.connect();
    for _ in 0..5 {
        assert_eq!(get(&mut client, "/").status, 200);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(backend.request_count(), 5);
}

#[test]
fn connect_failures_go_to_the_next_backend_and_clients_see_no_error() {
    let dead = closed_port();
    let up = Backend::named("up");
    let yaml = format!(
        "proxy:\n  backends:\n    - name: dead\n      address: \"{dead}\"\n{}",
        up.yaml_entry("up", "    ")
    );
    let server = TestServer::start_with(Options {
        extra_yaml: yaml,
        ..Options::default()
    });
    let mut client = server.connect();
    for _ in 0..20 {
        let response = get(&mut client, "/");
        assert_eq!(
            (response.status, response.body_text().as_str()),
            (200, "up")
        );
    }
    // POST with a body too: nothing was sent to the dead one, so it may go elsewhere.
    client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(client.read_response().status, 200);
}

#[test]
fn a_reset_before_the_response_is_retried_elsewhere_only_when_idempotent() {
    let flaky = Backend::start(|_| Reply::Close);
    let good = Backend::named("good");
    // Never eject, so the flaky backend keeps getting its turn.
    let server = proxy_with(&[&flaky, &good], "  max_fails: 0\n", "");
    let mut client = server.connect();
    for _ in 0..4 {
        let response = get(&mut client, "/");
        assert_eq!(
            (response.status, response.body_text().as_str()),
            (200, "good")
        );
    }
    assert!(
        flaky.request_count() >= 2,
        "the flaky backend was never tried"
    );
    // POST is not idempotent: it reaches exactly one backend, and on the flaky one it is a 502.
    let (flaky_before, good_before) = (flaky.request_count(), good.request_count());
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            let mut client = server.connect();
            client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
            client.read_response().status
        })
        .collect();
    let delivered = (flaky.request_count() - flaky_before) + (good.request_count() - good_before);
    assert_eq!(delivered, 4, "a POST was sent twice");
    assert!(statuses.contains(&502), "{statuses:?}");
}

#[test]
fn every_backend_failing_is_a_502_with_the_custom_page() {
    let dead = closed_port();
    let yaml = format!("proxy:\n  backends:\n    - name: dead\n      address: \"{dead}\"\n");
    let server = TestServer::start_with(Options {
        static_yaml: "    bad_gateway: \"errors/502.html\"\n".into(),
        extra_yaml: yaml,
        ..Options::default()
    });
    let started = Instant::now();
    let response = server.get("/");
    assert_eq!(response.status, 502);
    assert_eq!(response.body_text(), "CUSTOM-502 page\n");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "502 must come at once"
    );
}

#[test]
fn no_response_within_the_request_timeout_is_a_504_and_the_connection_is_dropped() {
    let closed_by_proxy = Arc::new(AtomicUsize::new(0));
    let closed = closed_by_proxy.clone();
    let backend = Backend::start(move |_| {
        let closed = closed.clone();
        Reply::Takeover(
            Vec::new(),
            Box::new(move |mut stream: TcpStream| {
                // Never answer; see whether the proxy hangs up on us.
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut byte = [0u8; 1];
                if let Ok(0) = stream.read(&mut byte) {
                    closed.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
    });
    let server = proxy_with(&[&backend], "  request_timeout_ms: 300\n", "");
    let started = Instant::now();
    let response = server.get("/");
    assert_eq!(response.status, 504);
    assert_eq!(response.body_text(), "CUSTOM-504 page\n");
    assert!(started.elapsed() >= Duration::from_millis(250));
    let deadline = Instant::now() + Duration::from_secs(5);
    while closed_by_proxy.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        closed_by_proxy.load(Ordering::SeqCst),
        1,
        "timed-out connection was kept"
    );
}

/// Sentinel proxying to one backend at `address`, with extra `proxy:` and `server:` keys.
fn proxy_to(address: SocketAddr, proxy_keys: &str, server_yaml: &str) -> TestServer {
    TestServer::start_with(Options {
        server_yaml: server_yaml.into(),
        static_yaml: "    gateway_timeout: \"errors/504.html\"\n".into(),
        extra_yaml: format!(
            "proxy:\n  backends:\n    - name: \"b0\"\n      address: \"{address}\"\n{proxy_keys}"
        ),
    })
}

/// A backend that reads one request head and then nothing more, holding the connection
/// until the returned sender is dropped.
fn backend_reading_only_the_head() -> (SocketAddr, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (release, released) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        // Byte by byte, so not one byte of the body is taken off the socket.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let _ = released.recv_timeout(common::IO_TIMEOUT);
    });
    (address, release)
}

#[test]
fn a_backend_that_stops_taking_the_request_body_is_a_504_after_the_send_timeout() {
    let (address, release) = backend_reading_only_the_head();
    let server = proxy_to(
        address,
        "  request_timeout_ms: 10000\n  send_timeout_ms: 200\n",
        "  max_body_bytes: 1073741824\n",
    );
    // Far more than the socket buffers between the proxy and the backend hold.
    let len = 64 * 1024 * 1024;
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        let head = format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n");
        writer.write_all(head.as_bytes())?;
        let piece = vec![b'u'; 256 * 1024];
        for _ in 0..len / piece.len() {
            writer.write_all(&piece)?;
        }
        Ok::<(), std::io::Error>(())
    });
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(n @ 1..) => received.extend_from_slice(&chunk[..n]),
            other => panic!("no response head: {other:?}"),
        }
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 504 "), "{text}");
    assert!(took >= Duration::from_millis(150), "504 after {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "the send timeout, not the request timeout, decides: {took:?}"
    );
    // Unblock the client's writer (its body will never be read), then the backend.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    drop(release);
}

#[test]
fn a_backend_stalling_mid_body_is_cut_after_the_read_timeout() {
    let backend = Backend::start(|_| {
        Reply::Takeover(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial".to_vec(),
            Box::new(|mut stream: TcpStream| {
                // Hold the connection open, silent, until the proxy gives up on it.
                stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
                let _ = stream.read(&mut [0u8; 1]);
            }),
        )
    });
    let server = proxy_with(
        &[&backend],
        "  request_timeout_ms: 10000\n  read_timeout_ms: 200\n",
        "",
    );
    let mut client = server.connect();
    let started = Instant::now();
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut received = Vec::new();
    let _ = client.stream.read_to_end(&mut received);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\npartial"), "{text}");
    assert!(took >= Duration::from_millis(150), "cut after {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "the read timeout, not the request timeout, decides: {took:?}"
    );
}

#[test]
fn a_body_trickling_faster_than_the_read_timeout_outlives_the_request_timeout() {
    // Five pieces 200 ms apart: every gap is over the request timeout and under the read
    // timeout, and the whole body takes longer than either.
    let backend = Backend::start(|_| {
        Reply::Takeover(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
            Box::new(|mut stream: TcpStream| {
                stream.set_nodelay(true).unwrap();
                for byte in b"abcde" {
                    std::thread::sleep(Duration::from_millis(200));
                    if stream.write_all(&[*byte]).is_err() {
                        return;
                    }
                }
            }),
        )
    });
    let server = proxy_with(
        &[&backend],
        "  request_timeout_ms: 100\n  read_timeout_ms: 600\n",
        "",
    );
    let mut client = server.connect();
    let started = Instant::now();
    let response = get(&mut client, "/");
    assert_eq!(response.status, 200);
    assert_eq!(response.body_text(), "abcde");
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[test]
fn a_malformed_response_is_a_502() {
    let backend =
        Backend::start(|_| Reply::Send(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n".to_vec()));
    let server = proxy(&[&backend]);
    assert_eq!(server.get("/").status, 502);
}

#[test]
fn a_backend_dying_mid_body_cuts_the_client_connection() {
    let backend = Backend::start(|_| {
        Reply::SendAndClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this much".to_vec(),
        )
    });
    let server = proxy(&[&backend]);
    let mut client = server.connect();
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut received = Vec::new();
    let _ = client.stream.read_to_end(&mut received);
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Length: 1000\r\n"));
    assert!(
        text.ends_with("only this much"),
        "the client sees a short body and a close: {text}"
    );
}

#[test]
fn consecutive_failures_eject_a_backend_until_its_cooldown_ends() {
    // Fails (closes without answering) until told to work.
    let working = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = working.clone();
    let flaky = Backend::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            Reply::Send(ok("flaky"))
        } else {
            Reply::Close
        }
    });
    let good = Backend::named("good");
    let server = proxy_with(
        &[&flaky, &good],
        "  max_fails: 2\n  fail_timeout_ms: 400\n  max_fail_timeout_ms: 400\n",
        "",
    );
    let mut client = server.connect();
    for _ in 0..6 {
        assert_eq!(get(&mut client, "/").status, 200);
    }
    let failures_when_ejected = flaky.request_count();
    assert_eq!(failures_when_ejected, 2, "ejected after max_fails");
    for _ in 0..10 {
        assert_eq!(get(&mut client, "/").body_text(), "good");
    }
    assert_eq!(
        flaky.request_count(),
        failures_when_ejected,
        "ejected backend got traffic"
    );
    working.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    let bodies: Vec<String> = (0..6).map(|_| get(&mut client, "/").body_text()).collect();
    assert!(
        bodies.iter().any(|b| b == "flaky"),
        "never came back: {bodies:?}"
    );
}

#[test]
fn switching_protocols_becomes_a_tunnel() {
    let backend = Backend::start(|seen| {
        assert_eq!(seen.header("upgrade"), Some("websocket"));
        Reply::Takeover(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                .to_vec(),
            Box::new(|mut stream: TcpStream| {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    let reply: Vec<u8> = buf[..n].iter().map(u8::to_ascii_uppercase).collect();
                    if stream.write_all(&reply).is_err() {
                        break;
                    }
                }
            }),
        )
    });
    let server = proxy(&[&backend]);
    let mut client = server.connect();
    client
        .send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let response = client.read_response_to(true);
    assert_eq!(response.status, 101);
    assert_eq!(response.header("upgrade"), Some("websocket"));
    client.send(b"ping");
    let mut echoed = [0u8; 4];
    let mut got = client.leftover().to_vec();
    while got.len() < 4 {
        let n = client.stream.read(&mut echoed).unwrap();
        assert!(n > 0, "tunnel closed");
        got.extend_from_slice(&echoed[..n]);
    }
    assert_eq!(&got[..4], b"PING");

    // Other protocols are not tunnelled: the Upgrade never reaches the backend.
    let plain = Backend::start(|seen| Reply::Send(ok(seen.header("upgrade").unwrap_or("none"))));
    let server = proxy(&[&plain]);
    let response = server.request(
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    );
    assert_eq!(
        (response.status, response.body_text().as_str()),
        (200, "none")
    );
}

/// A WebSocket backend whose tunnel does what the request path says: `/idle` nothing,
/// `/upload` reports each byte it receives, `/download` sends `xxxxxxxx!` a byte every
/// 100 ms. Each reports on `closed` when the proxy closes the tunnel.
fn tunnel_backend(received: mpsc::Sender<u8>, closed: mpsc::Sender<()>) -> Backend {
    let (received, closed) = (Mutex::new(received), Mutex::new(closed));
    Backend::start(move |seen| {
        let received = received.lock().unwrap().clone();
        let closed = closed.lock().unwrap().clone();
        let target = seen.target.clone();
        Reply::Takeover(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                .to_vec(),
            Box::new(move |mut stream: TcpStream| {
                stream.set_nodelay(true).unwrap();
                stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
                if target == "/download" {
                    for &byte in b"xxxxxxxx!" {
                        std::thread::sleep(Duration::from_millis(100));
                        if stream.write_all(&[byte]).is_err() {
                            return;
                        }
                    }
                }
                let mut byte = [0u8; 1];
                while let Ok(1) = stream.read(&mut byte) {
                    let _ = received.send(byte[0]);
                }
                let _ = closed.send(());
            }),
        )
    })
}

/// Open a WebSocket tunnel to `path`; the client's buffer may already hold tunnel bytes.
fn open_tunnel(server: &TestServer, path: &str) -> common::RawClient {
    let mut client = server.connect();
    client.send(
        format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(client.read_response_to(true).status, 101);
    client
}

const TUNNEL_IDLE: Duration = Duration::from_millis(400);

fn tunnel_proxy(backend: &Backend) -> TestServer {
    let keys = format!("  tunnel_idle_timeout_ms: {}\n", TUNNEL_IDLE.as_millis());
    proxy_with(&[backend], &keys, "")
}

#[test]
fn an_idle_tunnel_is_closed_on_both_sides_after_the_tunnel_idle_timeout() {
    let (received, _) = mpsc::channel();
    let (closed, backend_closed) = mpsc::channel();
    let backend = tunnel_backend(received, closed);
    let server = tunnel_proxy(&backend);
    let mut client = open_tunnel(&server, "/idle");
    let opened = Instant::now();
    assert!(
        client.is_closed_within(Duration::from_secs(5)),
        "the idle tunnel stayed open"
    );
    let took = opened.elapsed();
    assert!(
        took >= TUNNEL_IDLE - Duration::from_millis(50),
        "closed after {took:?}"
    );
    backend_closed
        .recv_timeout(Duration::from_secs(5))
        .expect("the backend side stayed open");
}

#[test]
fn a_tunnel_carrying_bytes_only_to_the_backend_stays_open_past_the_idle_timeout() {
    let (received, backend_received) = mpsc::channel();
    let (closed, backend_closed) = mpsc::channel();
    let backend = tunnel_backend(received, closed);
    let server = tunnel_proxy(&backend);
    let mut client = open_tunnel(&server, "/upload");
    let opened = Instant::now();
    // A byte every 100 ms for twice the idle timeout, nothing coming back.
    for byte in b"abcdefgh" {
        std::thread::sleep(Duration::from_millis(100));
        client.send(&[*byte]);
        let got = backend_received.recv_timeout(Duration::from_secs(5));
        assert_eq!(got, Ok(*byte), "after {:?}", opened.elapsed());
    }
    assert!(opened.elapsed() >= 2 * TUNNEL_IDLE);
    assert!(backend_closed.try_recv().is_err(), "closed while in use");
    // Once quiet, it is closed like any idle tunnel.
    assert!(client.is_closed_within(Duration::from_secs(5)));
}

#[test]
fn a_tunnel_carrying_bytes_only_to_the_client_stays_open_past_the_idle_timeout() {
    let (received, _) = mpsc::channel();
    let (closed, backend_closed) = mpsc::channel();
    let backend = tunnel_backend(received, closed);
    let server = tunnel_proxy(&backend);
    let mut client = open_tunnel(&server, "/download");
    let opened = Instant::now();
    let mut got = client.leftover().to_vec();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"!") {
        match client.stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            other => panic!("tunnel ended after {:?}: {other:?}", opened.elapsed()),
        }
    }
    assert_eq!(got, b"xxxxxxxx!");
    assert!(opened.elapsed() >= 2 * TUNNEL_IDLE - Duration::from_millis(100));
    assert!(client.is_closed_within(Duration::from_secs(5)));
    backend_closed
        .recv_timeout(Duration::from_secs(5))
        .expect("the backend side stayed open");
}

#[test]
fn routes_split_static_files_and_upstreams_by_host_and_prefix() {
    let api = Backend::start(|seen| Reply::Send(ok(&format!("api:{}", seen.target))));
    let admin = Backend::start(|seen| Reply::Send(ok(&format!("admin:{}", seen.target))));
    let proxy_keys = format!(
        "  upstreams:\n    api:\n      backends:\n{}    admin:\n      backends:\n{}",
        api.yaml_entry("api1", "        "),
        admin.yaml_entry("admin1", "        ")
    );
    let routes = "routes:\n  \
        - host: admin.test\n    upstream: admin\n  \
        - path_prefix: /api\n    upstream: api\n    strip_prefix: true\n  \
        - path_prefix: /\n    static: true\n";
    let server = TestServer::start_with(Options {
        extra_yaml: format!("proxy:\n{proxy_keys}{routes}"),
        ..Options::default()
    });
    let mut client = server.connect();
    assert_eq!(
        get(&mut client, "/api/users?id=1").body_text(),
        "api:/users?id=1"
    );
    assert_eq!(get(&mut client, "/api").body_text(), "api:/");
    assert_eq!(get(&mut client, "/hello.txt").body_text(), "hello, world\n");
    assert_eq!(
        get(&mut client, "/apix").status,
        404,
        "prefixes match whole segments"
    );
    // Dot segments cannot route a request one way and deliver it another.
    assert_eq!(get(&mut client, "/static/../api/x").body_text(), "api:/x");
    client.send(b"GET /anything HTTP/1.1\r\nHost: Admin.Test:8080\r\n\r\n");
    assert_eq!(client.read_response().body_text(), "admin:/anything");
}

#[test]
fn per_route_timeouts_override_the_proxy_ones() {
    let slow = Backend::start(|_| {
        std::thread::sleep(Duration::from_millis(400));
        Reply::Send(ok("slow"))
    });
    let proxy_keys = format!(
        "  request_timeout_ms: 5000\n  upstreams:\n    slow:\n      backends:\n{}",
        slow.yaml_entry("s", "        ")
    );
    let routes = "routes:\n  \
        - path_prefix: /fast\n    upstream: slow\n    request_timeout_ms: 100\n  \
        - path_prefix: /\n    upstream: slow\n";
    let server = TestServer::start_with(Options {
        extra_yaml: format!("proxy:\n{proxy_keys}{routes}"),
        ..Options::default()
    });
    assert_eq!(server.get("/fast").status, 504);
    assert_eq!(server.get("/other").body_text(), "slow");
}

#[test]
fn idle_upstream_connections_expire_and_the_pool_is_bounded() {
    let backend = Backend::named("b0");
    let server = proxy_with(&[&backend], "  idle_timeout_ms: 100\n", "");
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.get("/").status, 200);
    assert_eq!(
        backend.connection_count(),
        1,
        "reused within the idle timeout"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.get("/").status, 200);
    assert_eq!(
        backend.connection_count(),
        2,
        "an expired connection was reused"
    );

    // max_idle_per_backend: 0 keeps nothing: a connection per request.
    let backend = Backend::named("b0");
    let server = proxy_with(&[&backend], "  max_idle_per_backend: 0\n", "");
    for _ in 0..3 {
        assert_eq!(server.get("/").status, 200);
    }
    assert_eq!(backend.connection_count(), 3);
}
