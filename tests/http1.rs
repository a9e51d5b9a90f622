//! The connection state machine over real sockets: keep-alive, pipelining, body draining,
//! error statuses with custom pages, every limit at its edge, and every timeout.
//! Rule ids refer to `specs/http1.md`.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Options, TestServer};

fn server_with(server_yaml: &str) -> TestServer {
    TestServer::start_with(Options {
        server_yaml: server_yaml.to_string(),
        ..Options::default()
    })
}

#[test]
fn h1_040_http11_keeps_the_connection_alive_by_default() {
    let server = TestServer::start();
    let mut client = server.connect();
    for _ in 0..3 {
        client.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        let response = client.read_response();
        assert_eq!(response.status, 200);
        assert_eq!(response.body_text(), "hello, world\n");
        assert_eq!(response.header("connection"), None);
    }
}

#[test]
fn h1_040_connection_close_is_honoured() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.is_closed_within(Duration::from_secs(5)));
}

#[test]
fn h1_040_http10_closes_unless_keep_alive_is_asked_for() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.send(b"GET /hello.txt HTTP/1.0\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.is_closed_within(Duration::from_secs(5)));

    let mut client = server.connect();
    for _ in 0..2 {
        client.send(b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = client.read_response();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
}

#[test]
fn h1_041_pipelined_requests_are_answered_in_order() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.send(
        b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /missing HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /style.css HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /docs/page.html HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let first = client.read_response();
    assert_eq!(
        (first.status, first.body_text().as_str()),
        (200, "hello, world\n")
    );
    let second = client.read_response();
    assert_eq!(second.status, 404);
    let third = client.read_response_to(true);
    assert_eq!(third.status, 200);
    assert_eq!(third.header("content-length"), Some("22"));
    let fourth = client.read_response();
    assert_eq!(fourth.body_text(), "<p>page</p>\n");
    assert!(client.leftover().is_empty(), "no stray bytes after HEAD");
}

#[test]
fn h1_043_unread_bodies_are_drained_so_the_next_request_starts_in_the_right_place() {
    let server = TestServer::start();
    let mut client = server.connect();
    // The bodies contain text that would parse as requests if they were not skipped.
    client.send(
        b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 35\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n\
          POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          23\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n\r\n0\r\nTrailer: x\r\n\r\n\
          GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let post = client.read_response();
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let chunked = client.read_response();
    assert_eq!(chunked.status, 405);
    let get = client.read_response();
    assert_eq!(get.status, 200);
    assert_eq!(get.body_text(), "hello, world\n");
    assert!(client.leftover().is_empty());
}

#[test]
fn h1_043_a_body_too_big_to_drain_closes_the_connection() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 405);
    assert_eq!(response.header("connection"), Some("close"));
}

#[test]
fn h1_042_expect_continue_with_an_unwanted_body_gets_a_final_answer_and_close() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.send(b"PUT /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let response = client.read_response();
    assert_eq!(
        response.status, 405,
        "no 100 Continue for a body we will not read"
    );
    assert_eq!(response.header("connection"), Some("close"));
}

#[test]
fn h1_045_parse_errors_answer_with_status_and_custom_page_then_close() {
    let server = TestServer::start();
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: t\n\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: t\r\nExpect: x\r\n\r\n", 417),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
    ];
    for (request, status) in cases {
        let mut client = server.connect();
        client.send(request);
        // A pipelined request behind a bad one must never be answered.
        client.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        let response = client.read_response();
        let shown = String::from_utf8_lossy(request);
        assert_eq!(response.status, *status, "{shown:?}");
        assert_eq!(response.header("connection"), Some("close"), "{shown:?}");
        if *status == 400 {
            assert!(response.body_text().contains("CUSTOM-400"), "{shown:?}");
        }
        assert!(client.is_closed_within(Duration::from_secs(5)), "{shown:?}");
        assert!(
            client.leftover().is_empty(),
            "{shown:?}: answered past the error"
        );
    }
}

#[test]
fn h1_019_request_line_limit_edge_over_the_wire() {
    let server = server_with("  max_request_line_bytes: 100\n  max_head_bytes: 1024\n");
    let line = |len: usize| format!("GET /{} HTTP/1.1", "a".repeat(len - 14));
    let ok = server.request(format!("{}\r\nHost: t\r\n\r\n", line(100)).as_bytes());
    assert_eq!(ok.status, 404, "a 100-byte line is within the limit");
    let too_long = server.request(format!("{}\r\nHost: t\r\n\r\n", line(101)).as_bytes());
    assert_eq!(too_long.status, 414);
}

#[test]
fn h1_020_head_size_limit_edge_over_the_wire() {
    let server = server_with("  max_head_bytes: 256\n  max_request_line_bytes: 100\n");
    let build = |total: usize| {
        let base = "GET /hello.txt HTTP/1.1\r\nHost: t\r\nX: \r\n\r\n".len();
        format!(
            "GET /hello.txt HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
            "v".repeat(total - base)
        )
    };
    assert_eq!(server.request(build(256).as_bytes()).status, 200);
    assert_eq!(server.request(build(257).as_bytes()).status, 431);
}

#[test]
fn h1_021_header_count_limit_edge_over_the_wire() {
    let server = server_with("  max_headers: 5\n");
    let build = |count: usize| {
        let mut request = "GET /hello.txt HTTP/1.1\r\nHost: t\r\n".to_string();
        for i in 1..count {
            request.push_str(&format!("X-{i}: v\r\n"));
        }
        request + "\r\n"
    };
    assert_eq!(server.request(build(5).as_bytes()).status, 200);
    assert_eq!(server.request(build(6).as_bytes()).status, 431);
}

#[test]
fn h1_034_body_size_limit_edge_over_the_wire() {
    let server = server_with("  max_body_bytes: 1000\n");
    let with_length = |len: usize| {
        let mut request =
            format!("GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n")
                .into_bytes();
        request.extend(std::iter::repeat_n(b'b', len));
        request
    };
    assert_eq!(server.request(&with_length(1000)).status, 200);
    let over = server.request(&with_length(1001));
    assert_eq!(over.status, 413);
    assert_eq!(over.header("connection"), Some("close"));

    let chunked = |len: usize| {
        let mut request =
            b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend(format!("{:x}\r\n", len - 1).as_bytes());
        request.extend(std::iter::repeat_n(b'b', len - 1));
        request.extend(b"\r\n1\r\nb\r\n0\r\n\r\n");
        request
    };
    assert_eq!(server.request(&chunked(1000)).status, 200);
    assert_eq!(server.request(&chunked(1001)).status, 413);
}

#[test]
fn h1_031_chunk_extension_limit_edge_over_the_wire() {
    let server = server_with("  max_chunk_ext_bytes: 10\n");
    let request = |ext: usize| {
        format!(
            "GET /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\nb\r\n0\r\n\r\n",
            "e".repeat(ext - 1)
        )
    };
    assert_eq!(server.request(request(10).as_bytes()).status, 200);
    assert_eq!(server.request(request(11).as_bytes()).status, 400);
}

#[test]
fn h1_023_a_request_trickled_byte_by_byte_is_served() {
    let server = TestServer::start();
    let mut client = server.connect();
    for &byte in b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nAccept: */*\r\n\r\n" {
        client.send(&[byte]);
        client.stream.flush().unwrap();
    }
    let response = client.read_response();
    assert_eq!(response.status, 200);
    assert_eq!(response.body_text(), "hello, world\n");
}

#[test]
fn h1_046_slowloris_head_gets_408_even_while_trickling() {
    let server = server_with("  header_read_timeout_ms: 300\n");
    let mut client = server.connect();
    let started = Instant::now();
    // Keep sending a byte every 50 ms (bounded to 2 s): progress must not extend the head
    // deadline. A write error means the server already answered and closed.
    for &byte in
        b"GET /hello.txt HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    {
        if client.stream.write_all(&[byte]).is_err() || started.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let response = client.read_response();
    assert_eq!(response.status, 408);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn h1_046_idle_first_connection_is_closed_after_the_header_timeout() {
    let server = server_with("  header_read_timeout_ms: 200\n");
    let mut client = server.connect();
    assert!(client.is_closed_within(Duration::from_secs(5)));
    assert!(
        client.leftover().is_empty(),
        "nothing was asked, nothing is answered"
    );
}

#[test]
fn h1_046_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    let server = server_with("  keepalive_timeout_ms: 200\n");
    let mut client = server.connect();
    client.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.read_response().status, 200);
    let idle_since = Instant::now();
    assert!(client.is_closed_within(Duration::from_secs(5)));
    assert!(idle_since.elapsed() >= Duration::from_millis(150));
}

#[test]
fn h1_046_stalled_body_gets_408() {
    let server = server_with("  body_read_timeout_ms: 200\n");
    let mut client = server.connect();
    client.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345");
    let response = client.read_response();
    assert_eq!(response.status, 408);
    assert!(client.is_closed_within(Duration::from_secs(5)));
}

#[test]
fn h1_046_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    let server = server_with("  write_timeout_ms: 300\n");
    let big = server.root().join("big.bin");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(256 * 1024 * 1024).unwrap();
    let mut client = server.connect();
    client.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    // Read nothing until the server has given up on us, then drain what the kernel held.
    std::thread::sleep(Duration::from_millis(1500));
    let mut received = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    let started = Instant::now();
    loop {
        match std::io::Read::read(&mut client.stream, &mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "server never closed"
        );
    }
    assert!(received > 0);
    assert!(
        received < 256 * 1024 * 1024,
        "the whole file arrived: no write timeout"
    );
}

#[test]
fn h1_047_max_requests_per_connection_closes_after_the_last() {
    let server = server_with("  max_requests_per_connection: 2\n");
    let mut client = server.connect();
    client.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.read_response().header("connection"), None);
    client.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let last = client.read_response();
    assert_eq!(last.status, 200);
    assert_eq!(last.header("connection"), Some("close"));
    assert!(client.is_closed_within(Duration::from_secs(5)));
}

#[test]
fn h1_050_responses_carry_date_and_server() {
    let server = TestServer::start();
    let response = server.get("/hello.txt");
    let date = response.header("date").expect("Date");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    assert!(response.header("server").unwrap().starts_with("sentinel/"));
}

#[test]
fn h1_046_slow_but_steady_reader_gets_the_whole_in_memory_body() {
    // 12 MiB held in memory (cached), more than loopback socket buffers hold, read slowly
    // for several times the write timeout: progress must keep the write alive.
    let server = TestServer::start_with(Options {
        server_yaml: "  write_timeout_ms: 500\n".into(),
        static_yaml: "  cache_max_file_bytes: 16777216\n".into(),
        ..Options::default()
    });
    let size = 12 * 1024 * 1024;
    std::fs::write(server.root().join("big.bin"), vec![b'x'; size]).unwrap();
    let mut client = server.connect();
    client.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let started = Instant::now();
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        match std::io::Read::read(&mut client.stream, &mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
        assert!(started.elapsed() < Duration::from_secs(30), "too slow");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "the reader was not slow enough for the test to mean anything"
    );
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(received.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!(received.len() - head_end, size, "response cut short");
}

#[test]
fn h1_046_empty_lines_between_requests_do_not_start_the_head_timeout() {
    let server = server_with("  header_read_timeout_ms: 200\n  keepalive_timeout_ms: 5000\n");
    let mut client = server.connect();
    client.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n\r\n");
    assert_eq!(client.read_response().status, 200);
    std::thread::sleep(Duration::from_millis(600));
    client.send(b"\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200, "an idle connection got {response:?}");
}

/// One rule for the bytes before every request on a connection (RFC 9112 §2.2): whole empty
/// lines (CRLF) are skipped, a bare CR or LF is refused with 400, the same before the first
/// request as after a bodiless one, a Content-Length body or a chunked one, whether the stray
/// bytes arrive with the request before them or with the one after.
#[test]
fn h1_002_only_whole_empty_lines_are_skipped_before_any_request() {
    let server = TestServer::start();
    let next = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let before: [(&str, &[u8], u16); 4] = [
        ("connection start", b"", 0),
        ("bodiless", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 200),
        (
            "content-length body",
            b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nZ",
            405,
        ),
        (
            "chunked body",
            b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nZ\r\n0\r\n\r\n",
            405,
        ),
    ];
    let separators: [(&[u8], u16); 6] = [
        (b"\r\n", 200),
        (b"\r\n\r\n", 200),
        (b"\r", 400),
        (b"\n", 400),
        (b"\r\r\n", 400),
        (b"\r\n\n", 400),
    ];
    for (position, first, first_status) in before {
        for (separator, expected) in separators {
            for split in [false, true] {
                let case = format!("{position}, {separator:?}, split between reads: {split}");
                let mut client = server.connect();
                let mut stray_first = first.to_vec();
                stray_first.extend_from_slice(separator);
                if split && !first.is_empty() {
                    client.send(&stray_first);
                    assert_eq!(client.read_response().status, first_status, "{case}");
                    client.send(next);
                } else {
                    let mut all = stray_first;
                    all.extend_from_slice(next);
                    client.send(&all);
                    if !first.is_empty() {
                        assert_eq!(client.read_response().status, first_status, "{case}");
                    }
                }
                let second = client.read_response();
                assert_eq!(second.status, expected, "{case}");
            }
        }
    }
}
