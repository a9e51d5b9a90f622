//! Request smuggling, response desync and framing through the reverse proxy, over real
//! sockets against scripted backends. A backend records every request it can read, and reads
//! whatever follows one request as the next one, so a request that reaches it in two readings
//! shows up as an extra recorded request.
//!
//! Rejections are checked on both sides: the client gets the status `ParseError::status` maps
//! the error to (400, or 501 for a transfer coding we do not implement) and a closed
//! connection, and the backend gets nothing at all (no request, not even a connection).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use common::backend::{closed_port, ok, Backend, Reply, Seen};
use common::{Options, RawClient, TestServer, IO_TIMEOUT};

/// How long the server gets to close a connection it said it would close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// After the client has its answer, how long something the proxy wrongly sent on gets to show
/// up at the backend. Only ever a bound on a negative check: passing tests never wait on it
/// for anything but its own expiry, and a failing one fails as soon as the request shows up.
const SETTLE: Duration = Duration::from_millis(150);

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

fn proxy_with(backend: &Backend, server_yaml: &str) -> TestServer {
    let mut yaml = String::from("proxy:\n  backends:\n");
    yaml += &backend.yaml_entry("b0", "    ");
    TestServer::start_with(Options {
        server_yaml: server_yaml.to_string(),
        extra_yaml: yaml,
        ..Options::default()
    })
}

fn proxy(backend: &Backend) -> TestServer {
    proxy_with(backend, "")
}

/// Answers every request with 200 and `"<n> <method> <target>"`, `n` counting from 1, so a
/// response can be matched to the request that caused it.
fn echo_backend() -> Backend {
    let counter = AtomicUsize::new(0);
    Backend::start(move |seen| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        Reply::Send(ok(&format!("{n} {} {}", seen.method, seen.target)))
    })
}

/// Misbehaves (by `first`) on the first request, then answers each later one with
/// `"genuine <n> <target>"`.
fn first_then_genuine(first: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Backend {
    let counter = AtomicUsize::new(0);
    Backend::start(move |seen| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 {
            first(seen)
        } else {
            Reply::Send(ok(&format!("genuine {n} {}", seen.target)))
        }
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn describe(seen: &[Seen]) -> String {
    seen.iter()
        .map(|s| format!("[conn {}] {:?}", s.connection, text(&s.raw)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The backend got no connection and no request, now or within [`SETTLE`].
fn assert_backend_untouched(backend: &Backend, case: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (connections, requests) = (backend.connection_count(), backend.request_count());
        assert!(
            connections == 0 && requests == 0,
            "{case}: backend got {connections} connection(s), {requests} request(s):\n{}",
            describe(&backend.seen())
        );
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The backend recorded no complete request, now or within [`SETTLE`] (it may have been
/// connected to: the proxy streams a body it has not finished validating).
fn assert_no_request_recorded(backend: &Backend, case: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        assert_eq!(
            backend.request_count(),
            0,
            "{case}: backend recorded requests:\n{}",
            describe(&backend.seen())
        );
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait (bounded) until `condition` holds.
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A request is pipelined after every malformed one, so a parser that resynchronised
/// anywhere in the bad bytes would forward something.
const PROBE: &[u8] = b"GET /probe HTTP/1.1\r\nHost: t\r\n\r\n";

/// Send `request` (and [`PROBE`] behind it) through a proxy: the client must get `status`
/// and a closed connection, and the backend nothing at all.
fn assert_rejected(request: &[u8], status: u16) {
    let case = text(request);
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(&[request, PROBE].concat());
    let response = client.read_response();
    assert_eq!(
        response.status,
        status,
        "{case:?}: {}",
        response.body_text()
    );
    assert!(
        client.is_closed_within(CLOSE_WAIT),
        "{case:?}: connection left open after a rejected head; received {:?}",
        text(client.leftover())
    );
    assert_backend_untouched(&backend, &case);
}

/// The head is fine but the body is not: the proxy may already have connected and streamed
/// part of it, but the backend must never get a complete request, and the client gets
/// `status` and a closed connection.
fn assert_body_rejected(request: &[u8], status: u16) {
    let case = text(request);
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(&[request, PROBE].concat());
    let response = client.read_response();
    assert_eq!(
        response.status,
        status,
        "{case:?}: {}",
        response.body_text()
    );
    assert!(
        client.is_closed_within(CLOSE_WAIT),
        "{case:?}: connection left open after a rejected body; received {:?}",
        text(client.leftover())
    );
    assert_no_request_recorded(&backend, &case);
}

/// The one request carrying a body reached the backend framed exactly one way.
fn assert_chunked_once(seen: &Seen, body: &[u8]) {
    let raw = text(&seen.raw);
    assert_eq!(seen.header_count("transfer-encoding"), 1, "{raw:?}");
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"), "{raw:?}");
    assert_eq!(seen.header_count("content-length"), 0, "{raw:?}");
    assert_eq!(seen.body, body, "{raw:?}");
}

fn assert_length_once(seen: &Seen, body: &[u8]) {
    let raw = text(&seen.raw);
    assert_eq!(seen.header_count("content-length"), 1, "{raw:?}");
    assert_eq!(
        seen.header("content-length"),
        Some(body.len().to_string().as_str()),
        "{raw:?}"
    );
    assert_eq!(seen.header_count("transfer-encoding"), 0, "{raw:?}");
    assert_eq!(seen.body, body, "{raw:?}");
}

/// A response as it crossed the wire: the decoded body and the body bytes as sent.
#[derive(Debug)]
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    raw_body: Vec<u8>,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }
}

/// A client that reads responses of any framing, strictly: chunked bodies must be exactly
/// `hex CRLF data CRLF ... 0 CRLF CRLF` (no extensions, no trailers), since that is all the
/// proxy should ever produce.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn connect(server: &TestServer) -> Conn {
        let stream = TcpStream::connect(server.addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Read more; 0 on EOF or reset. A timeout fails the test.
    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("read failed (proxy hung?): {e}; have {:?}", text(&self.buf)),
        }
    }

    fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(
                self.fill() > 0,
                "connection closed mid-line: {:?}",
                text(&self.buf)
            );
        }
    }

    fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill() > 0, "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    fn head(&mut self) -> (u16, Vec<(String, String)>) {
        loop {
            let mut storage = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut storage);
            match parsed.parse(&self.buf).expect("malformed response head") {
                httparse::Status::Complete(len) => {
                    let headers = parsed
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), text(h.value)))
                        .collect();
                    let status = parsed.code.unwrap();
                    self.buf.drain(..len);
                    return (status, headers);
                }
                httparse::Status::Partial => {
                    assert!(self.fill() > 0, "connection closed before a response head")
                }
            }
        }
    }

    fn read_response(&mut self, head_request: bool) -> Wire {
        let (status, headers) = self.head();
        let mut wire = Wire {
            status,
            headers,
            body: Vec::new(),
            raw_body: Vec::new(),
        };
        if head_request || status < 200 || status == 204 || status == 304 {
            return wire;
        }
        let chunked = wire
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            loop {
                let size_line = self.line();
                let size_text = text(&size_line);
                assert!(
                    !size_text.is_empty() && size_text.bytes().all(|b| b.is_ascii_hexdigit()),
                    "chunk size line {size_text:?} is not bare hex"
                );
                let size = usize::from_str_radix(&size_text, 16).unwrap();
                wire.raw_body.extend_from_slice(&size_line);
                wire.raw_body.extend_from_slice(b"\r\n");
                if size == 0 {
                    let end = self.line();
                    assert!(
                        end.is_empty(),
                        "trailer {:?} sent to the client",
                        text(&end)
                    );
                    wire.raw_body.extend_from_slice(b"\r\n");
                    return wire;
                }
                let data = self.exact(size);
                let crlf = self.exact(2);
                assert_eq!(crlf, b"\r\n", "chunk data not followed by CRLF");
                wire.body.extend_from_slice(&data);
                wire.raw_body.extend_from_slice(&data);
                wire.raw_body.extend_from_slice(b"\r\n");
            }
        } else if let Some(length) = wire.header("content-length") {
            let length: usize = length.parse().expect("numeric content-length");
            wire.body = self.exact(length);
            wire.raw_body = wire.body.clone();
        } else {
            wire.body = self.read_to_end();
            wire.raw_body = wire.body.clone();
        }
        wire
    }

    /// Everything until the server closes (bounded by the read timeout).
    fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill() > 0 {}
        std::mem::take(&mut self.buf)
    }
}

/// Reads one response with the standard client and checks it came from the backend.
fn expect_ok(client: &mut RawClient, body: &str) {
    let response = client.read_response();
    assert_eq!(
        (response.status, response.body_text().as_str()),
        (200, body),
        "unexpected response"
    );
}

// ---------------------------------------------------------------------------------------
// Request framing that must be rejected before anything is forwarded
// ---------------------------------------------------------------------------------------

macro_rules! rejected {
    ($($name:ident: $status:expr, $request:expr;)*) => {
        $(
            #[test]
            fn $name() {
                assert_rejected($request, $status);
            }
        )*
    };
}

rejected! {
    // CL.TE: the classic front-end-uses-CL, back-end-uses-TE payload.
    cl_te_content_length_with_chunked_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nSMUGGLED";
    // TE.CL: the reverse order of the same two fields.
    te_cl_chunked_with_content_length_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n\
          5c\r\nGPOST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
          Content-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n";
    te_cl_content_length_zero_is_still_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n\
          0\r\n\r\n";
    te_cl_obfuscated_coding_with_content_length_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\nhello";
    // TE.TE: obfuscations one side might ignore and the other honour.
    te_te_second_field_with_unknown_coding_is_501: 501,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n\
          0\r\n\r\n";
    te_te_unknown_coding_then_chunked_field_is_501: 501,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\n";
    te_xchunked_is_501: 501,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n";
    te_chunk_is_501: 501,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunk\r\n\r\n0\r\n\r\n";
    te_chunked_then_identity_is_501: 501,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n";
    te_identity_then_chunked_is_501: 501,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n";
    te_chunked_twice_in_one_field_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n";
    te_chunked_in_two_fields_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\n";
    te_space_before_colon_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n";
    te_tab_before_colon_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n";
    te_obs_fold_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n";
    te_folded_into_previous_field_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nX-Padding: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    te_folded_with_tab_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nX-Padding: a\r\n\tTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    te_quoted_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n";
    te_with_parameter_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n";
    te_empty_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \r\n\r\n";
    te_empty_list_element_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n";
    te_vertical_tab_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n";
    te_form_feed_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\x0cchunked\r\n\r\n0\r\n\r\n";
    te_nul_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n";
    te_in_http10_is_400: 400,
        b"POST / HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    // Line endings a lenient parser would accept.
    bare_lf_everywhere_is_400: 400,
        b"POST / HTTP/1.1\nHost: t\nTransfer-Encoding: chunked\n\n0\n\n";
    bare_lf_ending_one_field_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc";
    bare_lf_ending_the_head_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\nhello";
    bare_cr_ending_a_field_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\rTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    // Content-Length spellings.
    cl_plus_sign_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello";
    cl_minus_sign_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\nhello";
    cl_hex_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhello";
    cl_inner_space_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1 0\r\n\r\nhelloworld";
    cl_empty_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: \r\n\r\n";
    cl_overflow_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551616\r\n\r\nhello";
    cl_differing_list_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!";
    cl_differing_duplicate_fields_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    cl_space_before_colon_is_400: 400,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\nhello";
    // Header bytes that could split or extend the upstream head.
    nul_in_header_value_is_400: 400,
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n";
    bare_cr_in_header_value_is_400: 400,
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rX-Injected: yes\r\n\r\n";
    bare_cr_in_header_name_is_400: 400,
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A\r: yes\r\n\r\n";
    del_in_header_value_is_400: 400,
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n";
    control_byte_in_header_value_is_400: 400,
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n";
    non_token_header_name_is_400: 400,
        b"GET / HTTP/1.1\r\nHost: t\r\nX\"A: 1\r\n\r\n";
    space_inside_header_name_is_400: 400,
        b"GET / HTTP/1.1\r\nHost: t\r\nX A: 1\r\n\r\n";
    bare_cr_in_target_is_400: 400,
        b"GET /a\rX-Injected: yes HTTP/1.1\r\nHost: t\r\n\r\n";
    control_byte_in_target_is_400: 400,
        b"GET /a\x01b HTTP/1.1\r\nHost: t\r\n\r\n";
    extra_token_in_request_line_is_400: 400,
        b"GET /a HTTP/1.1 HTTP/1.1\r\nHost: t\r\n\r\n";
    double_space_in_request_line_is_400: 400,
        b"GET  /a HTTP/1.1\r\nHost: t\r\n\r\n";
    // Host confusion: which host a request is for decides where it is routed.
    duplicate_host_is_400: 400,
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n";
    missing_host_is_400: 400,
        b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n";
    host_with_path_is_400: 400,
        b"GET / HTTP/1.1\r\nHost: a.test/evil\r\n\r\n";
    host_with_userinfo_is_400: 400,
        b"GET / HTTP/1.1\r\nHost: user@a.test\r\n\r\n";
    absolute_form_with_userinfo_is_400: 400,
        b"GET http://user@a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n";
    asterisk_form_on_get_is_400: 400,
        b"GET * HTTP/1.1\r\nHost: t\r\n\r\n";
    fragment_in_target_is_400: 400,
        b"GET /a#frag HTTP/1.1\r\nHost: t\r\n\r\n";
    // CONNECT takes `host:port` only.
    connect_origin_form_is_400: 400,
        b"CONNECT /x HTTP/1.1\r\nHost: t\r\n\r\n";
    connect_without_port_is_400: 400,
        b"CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n";
}

/// A Content-Length beyond the body limit is refused before any byte of it is read, and
/// before the backend hears of the request.
#[test]
fn content_length_over_the_limit_is_413_and_never_forwarded() {
    let backend = echo_backend();
    let server = proxy_with(&backend, "  max_body_bytes: 16\n");
    let mut client = server.connect();
    client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n0123456789abcdefg");
    assert_eq!(client.read_response().status, 413);
    assert!(client.is_closed_within(CLOSE_WAIT));
    assert_backend_untouched(&backend, "Content-Length over the limit");
}

/// A head over the size limit is refused whole: a framing field beyond the limit can never
/// be half-seen.
#[test]
fn oversized_head_is_431_and_never_forwarded() {
    let mut request = b"POST / HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..400 {
        request.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "a".repeat(100)).as_bytes());
    }
    request.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_rejected(&request, 431);
}

// ---------------------------------------------------------------------------------------
// Chunked bodies that fail mid-stream: never a complete request upstream
// ---------------------------------------------------------------------------------------

macro_rules! body_rejected {
    ($($name:ident: $status:expr, $body:expr;)*) => {
        $(
            #[test]
            fn $name() {
                let head = b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
                assert_body_rejected(&[&head[..], $body].concat(), $status);
            }
        )*
    };
}

body_rejected! {
    chunk_size_not_hex_is_400: 400, b"5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n";
    chunk_size_with_0x_prefix_is_400: 400, b"0x5\r\nhello\r\n0\r\n\r\n";
    chunk_size_negative_is_400: 400, b"-5\r\nhello\r\n0\r\n\r\n";
    chunk_size_empty_is_400: 400, b"\r\nhello\r\n0\r\n\r\n";
    chunk_size_overflow_is_400: 400, b"10000000000000005\r\nhello\r\n0\r\n\r\n";
    chunk_size_trailing_space_without_extension_is_400: 400, b"5 \r\nhello\r\n0\r\n\r\n";
    chunk_size_line_bare_lf_is_400: 400, b"5\nhello\r\n0\r\n\r\n";
    chunk_data_longer_than_its_size_is_400: 400, b"3\r\nhello\r\n0\r\n\r\n";
    chunk_data_shorter_than_its_size_is_400: 400, b"8\r\nhello\r\n0\r\n\r\n\r\n";
    chunk_data_bare_lf_terminator_is_400: 400, b"5\r\nhello\n0\r\n\r\n";
    chunk_data_missing_terminator_is_400: 400, b"5\r\nhello0\r\n\r\n";
    last_chunk_bare_lf_is_400: 400, b"5\r\nhello\r\n0\n\n";
    trailer_obs_fold_is_400: 400, b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n";
    trailer_without_colon_is_400: 400, b"5\r\nhello\r\n0\r\nGET /smuggled HTTP/1.1\r\n\r\n";
    trailer_bare_lf_is_400: 400, b"5\r\nhello\r\n0\r\nX-T: a\n\r\n";
    chunk_extension_with_control_byte_is_400: 400, b"5;a=\x01\r\nhello\r\n0\r\n\r\n";
    chunk_extension_bare_lf_is_400: 400, b"5;a\nhello\r\n0\r\n\r\n";
}

#[test]
fn chunked_body_over_the_limit_is_413_and_never_completed_upstream() {
    let backend = echo_backend();
    let server = proxy_with(&backend, "  max_body_bytes: 16\n");
    let mut client = server.connect();
    client.send(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          10\r\n0123456789abcdef\r\n1\r\nX\r\n0\r\n\r\n",
    );
    assert_eq!(client.read_response().status, 413);
    assert!(client.is_closed_within(CLOSE_WAIT));
    assert_no_request_recorded(&backend, "chunked body over the limit");
}

/// A request whose body failed after part of it went upstream leaves that upstream
/// connection mid-request: it must be closed, never pooled, or the next client's request
/// would be read as the rest of the body.
#[test]
fn upstream_connection_of_a_request_with_a_bad_body_is_never_reused() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    // The proxy connects only once it is forwarding, and writes what it has decoded before
    // it reads on: by now the head and first chunk are on their way to the backend.
    wait_until("the proxy to connect to the backend", || {
        backend.connection_count() == 1
    });
    client.send(b"zz\r\n");
    assert_eq!(client.read_response().status, 400);
    assert!(client.is_closed_within(CLOSE_WAIT));

    let mut other = server.connect();
    other.send(b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_ok(&mut other, "1 GET /b");
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "{}", describe(&seen));
    assert_eq!(seen[0].target, "/b");
    assert_eq!(seen[0].connection, 1, "the tainted connection was reused");
    assert!(seen[0].raw.starts_with(b"GET /b HTTP/1.1\r\n"));
}

/// Same, for a Content-Length body the client abandons part way.
#[test]
fn upstream_connection_of_an_abandoned_body_is_never_reused() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhello");
    wait_until("the proxy to connect to the backend", || {
        backend.connection_count() == 1
    });
    client.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(client);

    let mut other = server.connect();
    other.send(b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_ok(&mut other, "1 GET /b");
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "{}", describe(&seen));
    assert_eq!(seen[0].target, "/b");
    assert_eq!(seen[0].connection, 1, "the tainted connection was reused");
}

// ---------------------------------------------------------------------------------------
// Request framing that is accepted: forwarded exactly once, framed exactly one way
// ---------------------------------------------------------------------------------------

/// Sends `request` followed by `GET /next`; the backend must see exactly the POST (with
/// `body`, framed by `check`) and then `/next`, and the client the two answers in order.
fn assert_forwarded_once_then_next(request: &[u8], target: &str, check: impl Fn(&Seen)) {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(&[request, b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n"].concat());
    expect_ok(&mut client, &format!("1 POST {target}"));
    expect_ok(&mut client, "2 GET /next");
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{}", describe(&seen));
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("POST", target)
    );
    check(&seen[0]);
    assert_eq!(seen[1].target, "/next", "{}", describe(&seen));
    assert!(seen[1].raw.starts_with(b"GET /next HTTP/1.1\r\n"));
}

/// Tab is OWS (RFC 9110 §5.6.3), so `Transfer-Encoding:<TAB>chunked` is plain chunked.
#[test]
fn te_with_tab_before_the_value_is_chunked_and_forwarded_once() {
    assert_forwarded_once_then_next(
        b"POST /tab HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \tchunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "/tab",
        |seen| assert_chunked_once(seen, b"hello"),
    );
}

#[test]
fn te_without_space_and_in_odd_case_is_chunked_and_forwarded_once() {
    assert_forwarded_once_then_next(
        b"POST /case HTTP/1.1\r\nHost: t\r\ntransfer-ENCODING:ChUnKeD\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "/case",
        |seen| assert_chunked_once(seen, b"hello"),
    );
}

#[test]
fn identical_duplicate_content_lengths_become_one() {
    assert_forwarded_once_then_next(
        b"POST /dup HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "/dup",
        |seen| assert_length_once(seen, b"hello"),
    );
}

#[test]
fn identical_content_length_list_becomes_one() {
    assert_forwarded_once_then_next(
        b"POST /list HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello",
        "/list",
        |seen| assert_length_once(seen, b"hello"),
    );
}

#[test]
fn content_length_with_leading_zeros_is_sent_canonical() {
    assert_forwarded_once_then_next(
        b"POST /zeros HTTP/1.1\r\nHost: t\r\nContent-Length: 005\r\n\r\nhello",
        "/zeros",
        |seen| assert_length_once(seen, b"hello"),
    );
}

const EXT_AND_TRAILERS: &[u8] = b"POST /ext HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
    Trailer: X-Trailer-Secret\r\n\r\n\
    5;sig=deadbeef;q=\"a;b\"\r\nhello\r\n6 ;tabbed-ext\r\n world\r\n\
    0;final-ext=1\r\nX-Trailer-Secret: tsecret\r\nX-Other-Trailer: other\r\n\r\n";

fn assert_no_extension_or_trailer_upstream(seen: &Seen) {
    assert_chunked_once(seen, b"hello world");
    let raw = &seen.raw;
    for leaked in [
        &b"deadbeef"[..],
        b"tabbed-ext",
        b"final-ext",
        b"X-Trailer-Secret",
        b"tsecret",
        b"X-Other-Trailer",
        b";",
    ] {
        assert!(
            !contains(raw, leaked),
            "{:?} reached the backend: {:?}",
            text(leaked),
            text(raw)
        );
    }
    assert_eq!(seen.header("trailer"), None, "{:?}", text(raw));
    assert!(raw.ends_with(b"\r\n0\r\n\r\n"), "{:?}", text(raw));
}

/// Chunk extensions and trailers are consumed by the proxy: the backend gets the body
/// re-chunked, one `Transfer-Encoding: chunked`, no Content-Length, no extension, no trailer.
#[test]
fn chunk_extensions_and_trailers_never_reach_the_backend() {
    assert_forwarded_once_then_next(
        EXT_AND_TRAILERS,
        "/ext",
        assert_no_extension_or_trailer_upstream,
    );
}

/// The same request written one byte at a time: the proxy's decoding cannot depend on where
/// reads split the stream.
#[test]
fn chunked_request_sent_byte_by_byte_is_forwarded_the_same() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    for byte in EXT_AND_TRAILERS
        .iter()
        .chain(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
    {
        client.send(&[*byte]);
    }
    expect_ok(&mut client, "1 POST /ext");
    expect_ok(&mut client, "2 GET /next");
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{}", describe(&seen));
    assert_no_extension_or_trailer_upstream(&seen[0]);
    assert_eq!(seen[1].target, "/next");
}

/// A body and the next request in the same packet: the proxy must cut exactly at the end of
/// the body.
#[test]
fn request_pipelined_behind_a_length_body_is_forwarded_separately() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(
        b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          GET /second HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    expect_ok(&mut client, "1 POST /first");
    expect_ok(&mut client, "2 GET /second");
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{}", describe(&seen));
    assert_eq!(seen[0].target, "/first");
    assert_length_once(&seen[0], b"hello");
    assert_eq!(
        (seen[1].method.as_str(), seen[1].target.as_str()),
        ("GET", "/second")
    );
    assert!(seen[1].body.is_empty());
    assert!(seen[1].raw.starts_with(b"GET /second HTTP/1.1\r\n"));
}

/// A GET may carry a body too; dropping it without consuming it would turn it into a request.
#[test]
fn request_pipelined_behind_a_get_with_a_body_is_forwarded_separately() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(
        b"GET /first HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          GET /second HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    expect_ok(&mut client, "1 GET /first");
    expect_ok(&mut client, "2 GET /second");
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{}", describe(&seen));
    assert_length_once(&seen[0], b"hello");
    assert_eq!(seen[1].target, "/second");
}

#[test]
fn request_pipelined_behind_a_chunked_body_is_forwarded_separately() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    // The CRLF between the two requests is allowed (RFC 9112 §2.2) and must not be forwarded
    // as the start of the second one.
    client.send(
        b"POST /first HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
          \r\nGET /second HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    expect_ok(&mut client, "1 POST /first");
    expect_ok(&mut client, "2 GET /second");
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{}", describe(&seen));
    assert_chunked_once(&seen[0], b"hello");
    assert!(
        seen[1].raw.starts_with(b"GET /second HTTP/1.1\r\n"),
        "{}",
        describe(&seen)
    );
}

/// `Expect: 100-continue` is answered by the proxy; body and the request behind it still
/// split at the right byte, and the backend never sees the expectation.
#[test]
fn expect_continue_body_and_pipelined_request_stay_separate() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(
        b"POST /first HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello\
          GET /second HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let mut response = client.read_response();
    if response.status == 100 {
        response = client.read_response();
    }
    assert_eq!(
        (response.status, response.body_text().as_str()),
        (200, "1 POST /first")
    );
    expect_ok(&mut client, "2 GET /second");
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{}", describe(&seen));
    assert_length_once(&seen[0], b"hello");
    assert_eq!(seen[0].header("expect"), None);
    assert_eq!(seen[1].target, "/second");
}

/// Chunk data that looks like the end of the body and a new request is data: the backend
/// gets one request carrying those bytes, never a `/smuggled` request.
#[test]
fn request_inside_chunk_data_stays_inside_the_body() {
    let smuggled: &[u8] = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let request = [
        format!(
            "POST /carrier HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            smuggled.len()
        )
        .as_bytes(),
        smuggled,
        b"\r\n0\r\n\r\n",
    ]
    .concat();
    assert_forwarded_once_then_next(&request, "/carrier", |seen| {
        assert_chunked_once(seen, smuggled)
    });
}

#[test]
fn request_inside_a_length_body_stays_inside_the_body() {
    let smuggled: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let request = [
        format!(
            "POST /carrier HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            smuggled.len()
        )
        .as_bytes(),
        smuggled,
    ]
    .concat();
    assert_forwarded_once_then_next(&request, "/carrier", |seen| {
        assert_length_once(seen, smuggled)
    });
}

// ---------------------------------------------------------------------------------------
// Hop-by-hop fields
// ---------------------------------------------------------------------------------------

#[test]
fn fields_named_by_connection_never_reach_the_backend() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(
        b"GET /hop HTTP/1.1\r\nHost: t\r\nConnection: close, X-Foo\r\nX-Foo: secret\r\n\
          X-Kept: kept\r\n\r\n",
    );
    expect_ok(&mut client, "1 GET /hop");
    assert!(
        client.is_closed_within(CLOSE_WAIT),
        "Connection: close ignored"
    );
    let seen = &backend.seen()[0];
    assert_eq!(seen.header("x-foo"), None, "{:?}", text(&seen.raw));
    assert!(!contains(&seen.raw, b"secret"), "{:?}", text(&seen.raw));
    assert_eq!(seen.header("connection"), None, "{:?}", text(&seen.raw));
    assert_eq!(seen.header("x-kept"), Some("kept"));
}

#[test]
fn standard_hop_by_hop_fields_never_reach_the_backend() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(
        b"GET /hop HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, x-lower\r\nX-LOWER: 1\r\n\
          Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nProxy-Connection: keep-alive\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: HTTP2-Settings\r\n\r\n",
    );
    expect_ok(&mut client, "1 GET /hop");
    let seen = &backend.seen()[0];
    for hop in [
        "connection",
        "x-lower",
        "keep-alive",
        "te",
        "trailer",
        "proxy-connection",
        "upgrade",
        "http2-settings",
    ] {
        assert_eq!(
            seen.header(hop),
            None,
            "{hop} reached the backend: {:?}",
            text(&seen.raw)
        );
    }
    // The client connection is still HTTP/1.1 and still open.
    client.send(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_ok(&mut client, "2 GET /again");
}

/// Naming the framing fields or Host in `Connection` cannot strip them: the proxy states
/// framing and Host itself.
#[test]
fn connection_cannot_strip_framing_or_host() {
    assert_forwarded_once_then_next(
        b"POST /strip HTTP/1.1\r\nHost: t\r\nConnection: Content-Length, Host, Transfer-Encoding\r\n\
          Content-Length: 5\r\n\r\nhello",
        "/strip",
        |seen| {
            assert_length_once(seen, b"hello");
            assert_eq!(seen.header("host"), Some("t"), "{:?}", text(&seen.raw));
        },
    );
}

/// Response side: hop-by-hop fields stay behind, the body is re-framed (chunked, without the
/// backend's extensions and trailers), and exactly one framing field is stated.
#[test]
fn response_hop_by_hop_fields_stay_behind_and_chunked_is_reframed() {
    let backend = first_then_genuine(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nConnection: X-Bar\r\nX-Bar: 1\r\nKeep-Alive: timeout=5\r\n\
              Transfer-Encoding: chunked\r\nTrailer: X-Resp-Trailer\r\nProxy-Connection: keep-alive\r\n\
              Upgrade: h2c\r\nContent-Type: text/plain\r\n\r\n\
              5;resp-ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Resp-Trailer: rt\r\n\r\n"
                .to_vec(),
        )
    });
    let server = proxy(&backend);
    let mut conn = Conn::connect(&server);
    conn.send(b"GET /resp HTTP/1.1\r\nHost: t\r\n\r\n");
    let wire = conn.read_response(false);
    assert_eq!(wire.status, 200);
    for hop in [
        "x-bar",
        "keep-alive",
        "trailer",
        "proxy-connection",
        "upgrade",
        "x-resp-trailer",
    ] {
        assert_eq!(wire.header(hop), None, "{hop} reached the client: {wire:?}");
    }
    assert_eq!(
        wire.count("transfer-encoding") + wire.count("content-length"),
        1,
        "{wire:?}"
    );
    assert_eq!(wire.header("content-type"), Some("text/plain"));
    assert_eq!(wire.body, b"hello world");
    assert!(!contains(&wire.raw_body, b"resp-ext"), "{wire:?}");
    // The framing was right: the connection carries a next exchange.
    conn.send(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n");
    let next = conn.read_response(false);
    assert_eq!(
        (next.status, next.body.as_slice()),
        (200, &b"genuine 2 /next"[..])
    );
}

/// `Connection: close` from the backend is about the backend connection only.
#[test]
fn response_connection_close_and_te_fields_stay_behind() {
    let backend = first_then_genuine(|_| {
        Reply::SendAndClose(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nTE: trailers\r\nContent-Length: 5\r\n\r\nhello"
                .to_vec(),
        )
    });
    let server = proxy(&backend);
    let mut conn = Conn::connect(&server);
    conn.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
    let wire = conn.read_response(false);
    assert_eq!((wire.status, wire.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(wire.header("te"), None, "{wire:?}");
    assert_eq!(wire.header("connection"), None, "{wire:?}");
    assert_eq!(wire.count("content-length"), 1);
    assert_eq!(wire.count("transfer-encoding"), 0);
    conn.send(b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n");
    let next = conn.read_response(false);
    assert_eq!(
        (next.status, next.body.as_slice()),
        (200, &b"genuine 2 /b"[..])
    );
}

/// An HTTP/1.0 client cannot read chunked: it gets the decoded body, delimited by close.
#[test]
fn http10_client_gets_a_dechunked_body_delimited_by_close() {
    let backend = first_then_genuine(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                .to_vec(),
        )
    });
    let server = proxy(&backend);
    let mut conn = Conn::connect(&server);
    conn.send(b"GET /old HTTP/1.0\r\nHost: t\r\n\r\n");
    let wire = conn.read_response(false);
    assert_eq!(wire.status, 200);
    assert_eq!(wire.count("transfer-encoding"), 0, "{wire:?}");
    assert_eq!(wire.body, b"hello world", "{:?}", text(&wire.body));
}

/// No backend takes the request, so its body is never read: the connection must close after
/// the 502, or the unread body (here a whole request) would be parsed as the next request.
#[test]
fn unread_body_of_a_failed_request_is_never_parsed_as_a_request() {
    let yaml = format!(
        "proxy:\n  connection_timeout_ms: 2000\n  backends:\n    - name: \"dead\"\n      address: \"{}\"\n",
        closed_port()
    );
    let server = TestServer::start_with(Options {
        extra_yaml: yaml,
        ..Options::default()
    });
    let mut client = server.connect();
    let smuggled: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    client.send(
        &[
            format!(
                "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                smuggled.len()
            )
            .as_bytes(),
            smuggled,
        ]
        .concat(),
    );
    assert_eq!(client.read_response().status, 502);
    assert!(
        client.is_closed_within(CLOSE_WAIT),
        "after the 502 the connection stayed open and sent {:?}: the body was read as a request",
        text(client.leftover())
    );
}

/// A transfer coding other than chunked from the backend: the proxy decodes only chunked, so
/// it must either refuse the response (502) or keep announcing the coding it did not remove.
/// Dropping the `gzip` label while passing the gzip-coded bytes on would hand the client a
/// body it cannot tell is coded.
#[test]
fn upstream_transfer_coding_other_than_chunked_is_not_silently_dropped() {
    let backend = first_then_genuine(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
              4\r\n\x1f\x8b\x08\x00\r\n0\r\n\r\n"
                .to_vec(),
        )
    });
    let server = proxy(&backend);
    let mut conn = Conn::connect(&server);
    conn.send(b"GET /coded HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, headers) = conn.head();
    let codings: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        status == 502
            || codings
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("gzip")),
        "status {status}, Transfer-Encoding {codings:?}: the gzip coding was dropped but its \
         bytes passed on"
    );
}

// ---------------------------------------------------------------------------------------
// Upstream responses that would desynchronise the client connection
// ---------------------------------------------------------------------------------------

/// The backend's first response is `bad`: the client gets 502, its connection stays usable,
/// and its next request gets a genuine answer on a fresh upstream connection.
fn assert_bad_upstream_response(bad: &'static [u8]) {
    let case = text(bad);
    let backend = first_then_genuine(move |_| Reply::Send(bad.to_vec()));
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 502, "{case:?}: {}", response.body_text());
    assert!(
        !contains(&response.body, b"hello") && !contains(&response.body, b"INJECTED"),
        "{case:?}: backend bytes reached the client: {}",
        response.body_text()
    );
    assert!(
        client.leftover().is_empty(),
        "{case:?}: {:?}",
        text(client.leftover())
    );
    client.send(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    let next = client.read_response();
    assert_eq!(
        (next.status, next.body_text().as_str()),
        (200, "genuine 2 /second"),
        "{case:?}"
    );
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{case:?}:\n{}", describe(&seen));
    assert_eq!(
        seen[1].connection, 1,
        "{case:?}: the bad connection was reused"
    );
}

macro_rules! bad_upstream {
    ($($name:ident: $response:expr;)*) => {
        $(
            #[test]
            fn $name() {
                assert_bad_upstream_response($response);
            }
        )*
    };
}

bad_upstream! {
    upstream_content_length_with_chunked_is_502:
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    upstream_chunked_with_content_length_is_502:
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    upstream_two_different_content_lengths_is_502:
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED";
    upstream_differing_content_length_list_is_502:
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 40\r\n\r\nhello";
    upstream_signed_content_length_is_502:
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello";
    upstream_chunked_twice_is_502:
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    upstream_http10_with_transfer_encoding_is_502:
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    upstream_space_before_colon_is_502:
        b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello";
    upstream_obs_fold_is_502:
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
    upstream_bare_lf_is_502:
        b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello";
    upstream_nul_in_field_is_502:
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello";
    upstream_bare_cr_in_field_is_502:
        b"HTTP/1.1 200 OK\r\nX-A: a\rX-Injected: 1\r\nContent-Length: 5\r\n\r\nhello";
    upstream_malformed_status_line_is_502:
        b"HTTP/1.1 200OK\r\nContent-Length: 5\r\n\r\nhello";
    upstream_unsolicited_switching_protocols_is_502:
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\nhelloINJECTED";
}

/// The backend sends more than its Content-Length in the same write: the client gets exactly
/// the body, and the extra bytes never become the answer to the client's next request.
#[test]
fn extra_bytes_after_a_length_body_are_never_a_response() {
    let backend = first_then_genuine(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
              EXTRA-HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED"
                .to_vec(),
        )
    });
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_ok(&mut client, "hello");
    assert!(
        client.leftover().is_empty(),
        "{:?}",
        text(client.leftover())
    );
    client.send(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_ok(&mut client, "genuine 2 /second");
    assert!(
        client.leftover().is_empty(),
        "{:?}",
        text(client.leftover())
    );
}

/// The backend's first reply is `reply` (to a request made with `method`), followed, after
/// the proxy has had the reply, by `late` on the same connection, which the backend then
/// holds open. The proxy must not hand `late` to anyone as a response.
fn assert_late_bytes_never_a_response(method: &str, reply: &'static [u8], expect_body: &str) {
    let (tx, rx) = mpsc::channel::<()>();
    let tx = Mutex::new(tx);
    let late: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED";
    let backend = first_then_genuine(move |_| {
        let tx = tx.lock().unwrap().clone();
        Reply::Takeover(
            reply.to_vec(),
            Box::new(move |mut stream| {
                let _ = stream.write_all(late);
                let _ = tx.send(());
                // Keep the connection open so the only thing on it is the unrequested bytes.
                let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            }),
        )
    });
    let server = proxy(&backend);
    let mut conn = Conn::connect(&server);
    conn.send(format!("{method} /first HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let first = conn.read_response(method == "HEAD");
    assert_eq!(
        (first.status, text(&first.body).as_str()),
        (200, expect_body)
    );
    rx.recv_timeout(IO_TIMEOUT)
        .expect("backend never sent the late bytes");
    conn.send(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    let second = conn.read_response(false);
    assert_eq!(
        (second.status, text(&second.body).as_str()),
        (200, "genuine 2 /second"),
        "the late bytes became the response"
    );
    assert!(conn.buf.is_empty(), "{:?}", text(&conn.buf));
    assert_eq!(
        backend.connection_count(),
        2,
        "the dirty connection was reused"
    );
}

#[test]
fn late_bytes_after_a_length_body_are_never_a_response() {
    assert_late_bytes_never_a_response(
        "GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        "hello",
    );
}

#[test]
fn late_bytes_after_a_chunked_body_are_never_a_response() {
    assert_late_bytes_never_a_response(
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "hello",
    );
}

/// A backend that answers HEAD with a body: the body must not be taken as the response to the
/// client's next request.
#[test]
fn body_sent_with_a_head_response_is_never_a_response() {
    let backend = first_then_genuine(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 46\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED"
                .to_vec(),
        )
    });
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(b"HEAD /first HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = client.read_response_to(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("46"));
    client.send(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_ok(&mut client, "genuine 2 /second");
    assert!(
        client.leftover().is_empty(),
        "{:?}",
        text(client.leftover())
    );
}

#[test]
fn body_sent_late_after_a_head_response_is_never_a_response() {
    assert_late_bytes_never_a_response(
        "HEAD",
        b"HTTP/1.1 200 OK\r\nContent-Length: 46\r\n\r\n",
        "",
    );
}

#[test]
fn body_sent_with_a_204_is_never_a_response() {
    let backend = first_then_genuine(|_| {
        Reply::Send(
            b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED"
                .to_vec(),
        )
    });
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.read_response().status, 204);
    client.send(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_ok(&mut client, "genuine 2 /second");
    assert!(
        client.leftover().is_empty(),
        "{:?}",
        text(client.leftover())
    );
}

#[test]
fn extra_bytes_after_a_chunked_body_are_never_a_response() {
    let backend = first_then_genuine(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED"
                .to_vec(),
        )
    });
    let server = proxy(&backend);
    let mut conn = Conn::connect(&server);
    conn.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
    let first = conn.read_response(false);
    assert_eq!((first.status, first.body.as_slice()), (200, &b"hello"[..]));
    conn.send(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    let second = conn.read_response(false);
    assert_eq!(
        (second.status, text(&second.body)),
        (200, "genuine 2 /second".to_string())
    );
    assert!(conn.buf.is_empty(), "{:?}", text(&conn.buf));
}

/// A body delimited by the backend closing cannot leave the upstream connection reusable, and
/// reaches an HTTP/1.1 client chunked.
#[test]
fn until_close_response_is_chunked_for_the_client_and_not_reused() {
    let backend = first_then_genuine(|_| {
        Reply::SendAndClose(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close".to_vec(),
        )
    });
    let server = proxy(&backend);
    let mut conn = Conn::connect(&server);
    conn.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
    let first = conn.read_response(false);
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("transfer-encoding"),
        Some("chunked"),
        "{first:?}"
    );
    assert_eq!(first.body, b"until close");
    conn.send(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    let second = conn.read_response(false);
    assert_eq!(text(&second.body), "genuine 2 /second");
}

/// A chunked response that turns malformed after the head went out can only be cut: the
/// client must see the connection end without a last chunk (so it knows the body is
/// incomplete) and none of the bytes after the error.
#[test]
fn malformed_chunked_response_is_cut_not_completed() {
    let backend = first_then_genuine(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\
              0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED"
                .to_vec(),
        )
    });
    let server = proxy(&backend);
    let mut conn = Conn::connect(&server);
    conn.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, _) = conn.head();
    assert_eq!(status, 200);
    let rest = conn.read_to_end();
    assert!(
        !rest.ends_with(b"0\r\n\r\n"),
        "the client was told the body is complete: {:?}",
        text(&rest)
    );
    for leaked in [&b"zz"[..], b"INJECTED", b"HTTP/1.1"] {
        assert!(!contains(&rest, leaked), "{:?}", text(&rest));
    }
}

/// A backend that promises more than it sends: the client connection is cut short of the
/// promised length, never completed with other bytes.
#[test]
fn short_length_response_is_cut_not_completed() {
    let backend = first_then_genuine(|_| {
        Reply::SendAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello".to_vec())
    });
    let server = proxy(&backend);
    let mut conn = Conn::connect(&server);
    conn.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\nGET /second HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, headers) = conn.head();
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("content-length") && v == "10"));
    let rest = conn.read_to_end();
    assert_eq!(rest, b"hello", "{:?}", text(&rest));
}

// ---------------------------------------------------------------------------------------
// Request targets
// ---------------------------------------------------------------------------------------

#[test]
fn absolute_form_becomes_origin_form_and_its_authority_the_host() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(b"GET http://example.com/p?q HTTP/1.1\r\nHost: other\r\n\r\n");
    expect_ok(&mut client, "1 GET /p?q");
    let seen = &backend.seen()[0];
    assert_eq!(seen.target, "/p?q");
    assert_eq!(seen.header_count("host"), 1, "{:?}", text(&seen.raw));
    assert_eq!(seen.header("host"), Some("example.com"));
    assert!(!contains(&seen.raw, b"other"), "{:?}", text(&seen.raw));
}

#[test]
fn absolute_form_without_a_path_becomes_slash() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(b"GET HTTPS://Example.com:8443?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
    expect_ok(&mut client, "1 GET /?x=1");
    let seen = &backend.seen()[0];
    assert_eq!(seen.header("host"), Some("Example.com:8443"));
}

/// Percent-encoded CR LF in the target stays encoded: it cannot become a field upstream.
#[test]
fn percent_encoded_line_break_in_the_target_stays_encoded() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(
        b"GET /a%0d%0aX-Injected:%20yes%0d%0a%0d%0aGET%20/smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let response = client.read_response();
    assert_eq!(response.status, 200);
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "{}", describe(&seen));
    assert_eq!(
        seen[0].target,
        "/a%0d%0aX-Injected:%20yes%0d%0a%0d%0aGET%20/smuggled"
    );
    assert_eq!(seen[0].header("x-injected"), None);
}

#[test]
fn options_asterisk_is_forwarded_as_asterisk() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_ok(&mut client, "1 OPTIONS *");
}

/// We are not a forward proxy: CONNECT through a proxy route is refused and nothing is
/// opened to the backend.
#[test]
fn connect_is_405_and_never_reaches_the_backend() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    client.send(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n");
    assert_eq!(client.read_response().status, 405);
    assert_backend_untouched(&backend, "CONNECT");
}

#[test]
fn connect_with_a_body_is_405_and_the_body_never_becomes_a_request() {
    let backend = echo_backend();
    let server = proxy(&backend);
    let mut client = server.connect();
    let smuggled: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    client.send(
        &[
            format!(
                "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nContent-Length: {}\r\n\r\n",
                smuggled.len()
            )
            .as_bytes(),
            smuggled,
        ]
        .concat(),
    );
    assert_eq!(client.read_response().status, 405);
    assert_backend_untouched(&backend, "CONNECT with a body");
}
