//! Integration tests for the static-file handler over real loopback sockets: lookup, headers,
//! error pages, redirects, traversal and symlink containment, hidden files, percent-decoding,
//! methods, conditional requests, byte ranges and piece-wise streaming of large files.

mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{Options, Response, TestServer, IO_TIMEOUT};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A string that exists only in the file planted outside the static root.
const OUTSIDE_MARKER: &str = "OUTSIDE-ROOT-MARKER-5f1e9c";

/// The bytes of `hello.txt` in the standard test site.
const HELLO: &[u8] = b"hello, world\n";

/// The default `read_chunk_bytes` (64 KiB): files above it take the streaming path.
const DEFAULT_PIECE: usize = 64 * 1024;

/// `method target HTTP/1.1` with a Host header and `headers`, as exact bytes.
fn request_bytes(method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// `GET target` with extra headers on a fresh connection.
fn get_with(server: &TestServer, target: &str, headers: &[(&str, &str)]) -> Response {
    server.request(&request_bytes("GET", target, headers))
}

/// `HEAD target` with extra headers on a fresh connection (no body is read whatever the
/// headers say).
fn head_with(server: &TestServer, target: &str, headers: &[(&str, &str)]) -> Response {
    let mut client = server.connect();
    client.send(&request_bytes("HEAD", target, headers));
    client.read_response_to(true)
}

/// The ETag the server currently gives `target`.
fn etag_of(server: &TestServer, target: &str) -> String {
    let response = server.get(target);
    assert_eq!(response.status, 200, "GET {target} for its ETag");
    response
        .header("etag")
        .unwrap_or_else(|| panic!("GET {target} has no ETag"))
        .to_string()
}

/// Write `outside.txt` carrying `OUTSIDE_MARKER` next to (not inside) the static root.
fn plant_outside_file(server: &TestServer) -> std::path::PathBuf {
    let path = server.dir.path().join("outside.txt");
    std::fs::write(&path, format!("{OUTSIDE_MARKER}\n")).unwrap();
    path
}

fn assert_no_marker(response: &Response, what: &str) {
    assert!(
        !response.body_text().contains(OUTSIDE_MARKER),
        "{what}: a file outside the root was served (status {})",
        response.status
    );
}

/// Deterministic, non-periodic-at-powers-of-two content (251 is prime), so a piece that is
/// duplicated, dropped or reordered changes the bytes received.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Set a file's modification time `secs` seconds into the past, so its Last-Modified is a
/// strong validator and date comparisons are deterministic.
fn age_file(path: &Path, secs: u64) -> SystemTime {
    let when = SystemTime::now() - Duration::from_secs(secs);
    let file = File::options().write(true).open(path).unwrap();
    file.set_modified(when).unwrap();
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// The value a conforming Last-Modified header has for `path`.
fn http_date_of_mtime(path: &Path) -> String {
    httpdate::fmt_http_date(std::fs::metadata(path).unwrap().modified().unwrap())
}

/// A response head read by `StreamClient` (the body is handed over piece by piece).
struct StreamedHead {
    status: u16,
    headers: Vec<(String, String)>,
}

impl StreamedHead {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> u64 {
        self.header("content-length")
            .expect("streamed responses are length-delimited")
            .parse()
            .expect("numeric content-length")
    }
}

/// A client for bodies too large to hold: parses the head with httparse, then passes each
/// body piece (with its offset in the body) to a callback without keeping it.
struct StreamClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl StreamClient {
    fn connect(addr: SocketAddr) -> StreamClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        StreamClient {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Read one response to a GET; returns its head and the number of body bytes received
    /// (exactly Content-Length unless the connection closed early).
    fn read_streamed(&mut self, mut on_body: impl FnMut(u64, &[u8])) -> (StreamedHead, u64) {
        let mut chunk = vec![0u8; 256 * 1024];
        let (head, head_len) = loop {
            let mut storage = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut storage);
            match parsed.parse(&self.buf).expect("malformed response head") {
                httparse::Status::Complete(len) => {
                    let headers = parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let status = parsed.code.unwrap();
                    break (StreamedHead { status, headers }, len);
                }
                httparse::Status::Partial => {
                    let n = self.stream.read(&mut chunk).expect("read head");
                    assert!(n > 0, "connection closed before a response head");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        };
        self.buf.drain(..head_len);
        let length = head.content_length();
        let mut received: u64 = 0;
        let already = (self.buf.len() as u64).min(length) as usize;
        if already > 0 {
            on_body(0, &self.buf[..already]);
            received += already as u64;
            self.buf.drain(..already);
        }
        while received < length {
            let n = self.stream.read(&mut chunk).expect("read body");
            if n == 0 {
                break;
            }
            let take = ((length - received) as usize).min(n);
            on_body(received, &chunk[..take]);
            received += take as u64;
            self.buf.extend_from_slice(&chunk[take..n]);
        }
        (head, received)
    }
}

/// Checks streamed pieces of a sparse file against its expected content (zeros plus a few
/// markers) without holding the file. Comparisons are slice equality (memcmp), so the check
/// stays cheap even in an unoptimised test build.
struct SparseChecker<'a> {
    /// Offset in the file of body byte 0.
    base: u64,
    markers: &'a [(u64, &'a [u8])],
    zeros: Vec<u8>,
    first_mismatch: Option<u64>,
}

impl<'a> SparseChecker<'a> {
    fn new(base: u64, markers: &'a [(u64, &'a [u8])]) -> SparseChecker<'a> {
        SparseChecker {
            base,
            markers,
            zeros: vec![0; 1024 * 1024],
            first_mismatch: None,
        }
    }

    fn check(&mut self, body_offset: u64, piece: &[u8]) {
        if self.first_mismatch.is_some() {
            return;
        }
        let start = self.base + body_offset;
        let end = start + piece.len() as u64;
        if self.zeros.len() < piece.len() {
            self.zeros = vec![0; piece.len()];
        }
        let touched = self
            .markers
            .iter()
            .any(|(at, bytes)| *at < end && at + bytes.len() as u64 > start);
        let matches = if touched {
            let mut expected = self.zeros[..piece.len()].to_vec();
            for (at, bytes) in self.markers {
                for (i, &b) in bytes.iter().enumerate() {
                    let pos = at + i as u64;
                    if pos >= start && pos < end {
                        expected[(pos - start) as usize] = b;
                    }
                }
            }
            if piece == &expected[..] {
                None
            } else {
                Some(expected)
            }
        } else if piece == &self.zeros[..piece.len()] {
            None
        } else {
            Some(self.zeros[..piece.len()].to_vec())
        };
        if let Some(expected) = matches {
            let i = piece
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            self.first_mismatch = Some(start + i as u64);
        }
    }
}

const LARGE_SIZE: u64 = 64 * 1024 * 1024;
const LARGE_MIDDLE: u64 = 32 * 1024 * 1024 - 5;

/// A 64 MiB sparse file with markers at its start, across the 32 MiB piece boundary, and at
/// its very end.
fn write_large_sparse(path: &Path) -> Vec<(u64, &'static [u8])> {
    let markers: Vec<(u64, &'static [u8])> = vec![
        (0, b"BEGIN-OF-LARGE"),
        (LARGE_MIDDLE, b"MIDDLE-OF-LARGE-FILE"),
        (LARGE_SIZE - 3, b"END"),
    ];
    let mut file = File::create(path).unwrap();
    file.set_len(LARGE_SIZE).unwrap();
    for (at, bytes) in &markers {
        file.seek(SeekFrom::Start(*at)).unwrap();
        file.write_all(bytes).unwrap();
    }
    markers
}

// ---------------------------------------------------------------------------------------------
// Lookup, bodies and headers
// ---------------------------------------------------------------------------------------------

#[test]
fn root_path_serves_root_index_html() {
    let server = TestServer::start();
    let response = server.get("/");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"<h1>home</h1>\n");
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
}

#[test]
fn nested_directory_with_trailing_slash_serves_its_index() {
    let server = TestServer::start();
    let response = server.get("/docs/");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"<h1>docs</h1>\n");
    let page = server.get("/docs/page.html");
    assert_eq!(page.status, 200);
    assert_eq!(page.body, b"<p>page</p>\n");
}

#[test]
fn file_is_served_with_exact_body_and_content_length() {
    let server = TestServer::start();
    let response = server.get("/hello.txt");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, HELLO);
    assert_eq!(
        response.header("content-length"),
        Some(HELLO.len().to_string().as_str())
    );
}

#[test]
fn content_length_equals_body_length_with_no_trailing_bytes() {
    let server = TestServer::start();
    let mut client = server.connect();
    for target in ["/hello.txt", "/style.css", "/digits.txt", "/", "/docs/"] {
        client.send(&request_bytes("GET", target, &[]));
        let response = client.read_response();
        assert_eq!(response.status, 200, "{target}");
        let length: usize = response.header("content-length").unwrap().parse().unwrap();
        assert_eq!(length, response.body.len(), "{target}");
    }
    // Every byte sent so far belonged to a response: a final request still parses cleanly.
    client.send(&request_bytes("GET", "/hello.txt", &[]));
    assert_eq!(client.read_response().body, HELLO);
    assert!(client.leftover().is_empty());
}

#[test]
fn text_types_are_declared_utf8() {
    let server = TestServer::start();
    std::fs::write(server.root().join("data.json"), "{}").unwrap();
    let cases = [
        ("/index.html", "text/html; charset=utf-8"),
        ("/hello.txt", "text/plain; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/data.json", "application/json; charset=utf-8"),
    ];
    for (target, expected) in cases {
        let response = server.get(target);
        assert_eq!(response.status, 200, "{target}");
        assert_eq!(response.header("content-type"), Some(expected), "{target}");
    }
}

#[test]
fn binary_types_have_no_charset_and_unknown_extensions_are_octet_stream() {
    let server = TestServer::start();
    let png: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    std::fs::write(server.root().join("logo.png"), png).unwrap();
    std::fs::write(server.root().join("blob.unknownext"), b"\x00\x01\x02").unwrap();
    std::fs::write(server.root().join("noext"), b"raw").unwrap();

    let response = server.get("/logo.png");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("image/png"));
    assert_eq!(response.body, png);

    for target in ["/blob.unknownext", "/noext"] {
        let response = server.get(target);
        assert_eq!(response.status, 200, "{target}");
        assert_eq!(
            response.header("content-type"),
            Some("application/octet-stream"),
            "{target}"
        );
    }
}

#[test]
fn last_modified_is_file_mtime_and_etag_is_strong_and_quoted() {
    let server = TestServer::start();
    let path = server.root().join("hello.txt");
    age_file(&path, 3600);
    let response = server.get("/hello.txt");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("last-modified"),
        Some(http_date_of_mtime(&path).as_str())
    );
    let etag = response.header("etag").expect("ETag present");
    assert!(!etag.starts_with("W/"), "ETag must be strong: {etag}");
    assert!(
        etag.len() >= 3 && etag.starts_with('"') && etag.ends_with('"'),
        "ETag must be a quoted string: {etag}"
    );
    assert!(
        !etag[1..etag.len() - 1].contains('"'),
        "ETag must not contain inner quotes: {etag}"
    );
}

#[test]
fn etag_is_stable_and_changes_when_the_file_changes() {
    let server = TestServer::start();
    let first = etag_of(&server, "/hello.txt");
    assert_eq!(
        etag_of(&server, "/hello.txt"),
        first,
        "same file, same ETag"
    );
    std::fs::write(server.root().join("hello.txt"), "changed content, longer\n").unwrap();
    let second = etag_of(&server, "/hello.txt");
    assert_ne!(second, first, "new content must get a new ETag");
    assert_ne!(
        etag_of(&server, "/style.css"),
        second,
        "different files, different ETags"
    );
}

#[test]
fn accept_ranges_bytes_is_advertised() {
    let server = TestServer::start();
    for target in ["/hello.txt", "/digits.txt", "/"] {
        assert_eq!(
            server.get(target).header("accept-ranges"),
            Some("bytes"),
            "{target}"
        );
    }
}

#[test]
fn server_and_date_headers_are_present_and_date_is_current() {
    let server = TestServer::start();
    let response = server.get("/hello.txt");
    let name = response.header("server").expect("Server header");
    assert!(name.starts_with("sentinel"), "Server: {name}");
    let date = response.header("date").expect("Date header");
    let date = httpdate::parse_http_date(date).expect("Date is an HTTP-date");
    let now = SystemTime::now();
    let skew = now.duration_since(date).unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_secs(60), "Date is {skew:?} off");
}

#[test]
fn empty_file_is_200_with_zero_content_length() {
    let server = TestServer::start();
    std::fs::write(server.root().join("empty.txt"), b"").unwrap();
    let mut client = server.connect();
    client.send(&request_bytes("GET", "/empty.txt", &[]));
    let response = client.read_response();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("0"));
    assert!(response.body.is_empty());
    assert!(response.header("etag").is_some());
    client.send(&request_bytes("GET", "/hello.txt", &[]));
    assert_eq!(client.read_response().body, HELLO);
}

// ---------------------------------------------------------------------------------------------
// Error pages, redirects, directories
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_file_gets_custom_404_page_as_html() {
    let server = TestServer::start();
    for target in ["/nope.html", "/docs/missing.txt", "/no/such/dir/file"] {
        let response = server.get(target);
        assert_eq!(response.status, 404, "{target}");
        assert!(response.body_text().contains("CUSTOM-404"), "{target}");
        assert_eq!(
            response.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{target}"
        );
    }
}

#[test]
fn path_below_a_regular_file_is_not_found() {
    let server = TestServer::start();
    let response = server.get("/hello.txt/more");
    assert_eq!(response.status, 404);
    assert!(response.body_text().contains("CUSTOM-404"));
}

/// A trailing slash asks for a directory; a regular file is not one (nginx and Apache answer
/// 404, as `open("hello.txt/")` fails with ENOTDIR). Serving the file here would give it a
/// second URL under which its relative links resolve against the wrong base.
#[test]
fn regular_file_requested_with_trailing_slash_is_not_found() {
    let server = TestServer::start();
    let response = server.get("/hello.txt/");
    assert_eq!(
        response.status,
        404,
        "a file must not be served under a directory URL (body {:?})",
        response.body_text()
    );
}

#[test]
fn traversal_is_rejected_with_custom_400_page() {
    let server = TestServer::start();
    let response = server.get("/../hello.txt");
    assert_eq!(response.status, 400);
    assert!(response.body_text().contains("CUSTOM-400"));
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
}

#[test]
fn directory_without_trailing_slash_redirects_301_to_slash() {
    let server = TestServer::start();
    std::fs::create_dir_all(server.root().join("docs/sub")).unwrap();
    for (target, location) in [
        ("/docs", "/docs/"),
        ("/docs/sub", "/docs/sub/"),
        ("/empty", "/empty/"),
    ] {
        let response = server.get(target);
        assert_eq!(response.status, 301, "{target}");
        assert_eq!(response.header("location"), Some(location), "{target}");
    }
}

#[test]
fn directory_redirect_preserves_query() {
    let server = TestServer::start();
    let response = server.get("/docs?x=1");
    assert_eq!(response.status, 301);
    assert_eq!(response.header("location"), Some("/docs/?x=1"));
    let response = server.get("/docs?a=1&b=%20two");
    assert_eq!(response.header("location"), Some("/docs/?a=1&b=%20two"));
}

#[test]
fn directory_redirect_keeps_percent_encoded_name() {
    let server = TestServer::start();
    std::fs::create_dir_all(server.root().join("my dir")).unwrap();
    std::fs::write(server.root().join("my dir/index.html"), "spaced").unwrap();
    let response = server.get("/my%20dir");
    assert_eq!(response.status, 301);
    assert_eq!(response.header("location"), Some("/my%20dir/"));
    let response = server.get("/my%20dir/");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"spaced");
}

/// A Location starting with `//` is a scheme-relative URL: browsers go to another host.
/// Building it from the raw target turns `//evil.example/../docs` (which normalises to the
/// local `docs` directory) into a redirect to evil.example.
#[test]
fn directory_redirect_is_never_scheme_relative_open_redirect() {
    let server = TestServer::start();
    let mut failures = Vec::new();
    for target in [
        "//evil.example/../docs",
        "//docs",
        "///docs",
        "//evil.example/%2e%2e/docs",
    ] {
        let response = server.get(target);
        if let Some(location) = response.header("location") {
            if !location.starts_with('/')
                || location.starts_with("//")
                || location.starts_with("/\\")
            {
                failures.push(format!(
                    "{target}: status {} redirects off-site to {location:?}",
                    response.status
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "open redirects:\n{}",
        failures.join("\n")
    );
}

#[test]
fn directory_without_index_is_forbidden() {
    let server = TestServer::start();
    let response = server.get("/empty/");
    assert_eq!(response.status, 403);
    assert!(!response.body_text().contains("CUSTOM-404"));
}

#[test]
fn absolute_form_target_is_served_by_its_path() {
    let server = TestServer::start();
    let response = server.request(b"GET http://test/hello.txt HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, HELLO);
    let response = server.request(b"GET http://test/docs HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(response.status, 301);
    assert_eq!(response.header("location"), Some("/docs/"));
}

// ---------------------------------------------------------------------------------------------
// Traversal
// ---------------------------------------------------------------------------------------------

#[test]
fn traversal_attempts_never_serve_outside_the_root() {
    let server = TestServer::start();
    plant_outside_file(&server);
    // Expected statuses follow `sanitize_path`: a `..` that climbs above the root, a
    // backslash, a NUL, bad UTF-8 → 400; anything that stays inside the root but names no
    // file → 404.
    let cases: &[(&str, u16)] = &[
        ("/../outside.txt", 400),
        ("/..", 400),
        ("/../../../../../../outside.txt", 400),
        ("/%2e%2e/outside.txt", 400),
        ("/%2E%2E/outside.txt", 400),
        ("/%2E%2E%2Foutside.txt", 400),
        ("/.%2e/outside.txt", 400),
        ("/%2e./outside.txt", 400),
        ("/docs/../../outside.txt", 400),
        ("/docs/..%2f..%2foutside.txt", 400),
        ("/docs/%2e%2e/%2e%2e/outside.txt", 400),
        ("/..%2foutside.txt", 400),
        ("/%2e%2e%2f%2e%2e%2foutside.txt", 400),
        ("/%2e%2e%5coutside.txt", 400),
        ("/..\\outside.txt", 400),
        ("/docs/..\\..\\outside.txt", 400),
        ("/%00", 400),
        ("/hello.txt%00.html", 400),
        ("/%00/../outside.txt", 400),
        ("/%c0%ae%c0%ae/outside.txt", 400),
        ("/%c0%af..%c0%afoutside.txt", 400),
        // Stays inside the root: `public/..` pops only what the request pushed.
        ("/public/../outside.txt", 404),
        ("/outside.txt", 404),
        // Double encoding is decoded once: `%2e%2e` is a literal (absent) directory name.
        ("/%252e%252e/outside.txt", 404),
        ("/%252e%252e%252foutside.txt", 404),
    ];
    let mut failures = Vec::new();
    for &(target, expected) in cases {
        let response = server.get(target);
        if response.body_text().contains(OUTSIDE_MARKER) {
            failures.push(format!("{target}: SERVED THE FILE OUTSIDE THE ROOT"));
        }
        if response.status != expected {
            failures.push(format!(
                "{target}: status {} (expected {expected})",
                response.status
            ));
        }
        let page = if expected == 400 {
            "CUSTOM-400"
        } else {
            "CUSTOM-404"
        };
        if response.status == expected && !response.body_text().contains(page) {
            failures.push(format!("{target}: {expected} without the {page} page"));
        }
    }
    assert!(
        failures.is_empty(),
        "traversal failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn absolute_form_target_cannot_traverse() {
    let server = TestServer::start();
    plant_outside_file(&server);
    for target in [
        "http://test/../outside.txt",
        "http://test/%2e%2e/outside.txt",
        "http://test/docs/../../outside.txt",
        "HTTP://test/../outside.txt",
    ] {
        let response = server.request(&request_bytes("GET", target, &[]));
        assert_no_marker(&response, target);
        assert_eq!(response.status, 400, "{target}");
    }
}

#[test]
fn double_encoded_dots_are_a_literal_name_not_decoded_twice() {
    let server = TestServer::start();
    plant_outside_file(&server);
    // A file whose name really is `%2e%2e`: asking for `%252e%252e` must reach exactly it.
    std::fs::write(server.root().join("%2e%2e"), "literal percent name").unwrap();
    let response = server.get("/%252e%252e");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"literal percent name");
    let response = server.get("/%252e%252e/outside.txt");
    assert_eq!(response.status, 404);
    assert_no_marker(&response, "/%252e%252e/outside.txt");
}

#[test]
fn dot_segments_that_stay_inside_the_root_are_normalised() {
    let server = TestServer::start();
    let cases: &[(&str, &[u8])] = &[
        ("/docs/../hello.txt", HELLO),
        ("/./hello.txt", HELLO),
        ("/%2e/hello.txt", HELLO),
        ("//hello.txt", HELLO),
        ("/docs//page.html", b"<p>page</p>\n"),
        ("/docs/./page.html", b"<p>page</p>\n"),
        ("/empty/../docs/page.html", b"<p>page</p>\n"),
        ("/docs/%2e%2e/hello.txt", HELLO),
        ("/docs/..", b"<h1>home</h1>\n"),
    ];
    for &(target, body) in cases {
        let response = server.get(target);
        assert_eq!(response.status, 200, "{target}");
        assert_eq!(response.body, body, "{target}");
    }
}

// ---------------------------------------------------------------------------------------------
// Symlinks
// ---------------------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn symlink_to_file_outside_root_is_forbidden() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start();
    let outside = plant_outside_file(&server);
    symlink(&outside, server.root().join("abs-link.txt")).unwrap();
    symlink("../outside.txt", server.root().join("rel-link.txt")).unwrap();
    for target in ["/abs-link.txt", "/rel-link.txt"] {
        let response = server.get(target);
        assert_no_marker(&response, target);
        assert_eq!(response.status, 403, "{target}");
    }
}

#[cfg(unix)]
#[test]
fn symlink_to_file_inside_root_is_served() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start();
    symlink("hello.txt", server.root().join("alias.txt")).unwrap();
    symlink("../hello.txt", server.root().join("docs/up-alias.txt")).unwrap();
    for target in ["/alias.txt", "/docs/up-alias.txt"] {
        let response = server.get(target);
        assert_eq!(response.status, 200, "{target}");
        assert_eq!(response.body, HELLO, "{target}");
    }
}

#[cfg(unix)]
#[test]
fn symlinked_directory_leaving_root_is_forbidden() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start();
    plant_outside_file(&server);
    let outside_dir = server.dir.path().join("outside-dir");
    std::fs::create_dir(&outside_dir).unwrap();
    std::fs::write(outside_dir.join("secret.txt"), OUTSIDE_MARKER).unwrap();
    std::fs::write(outside_dir.join("index.html"), OUTSIDE_MARKER).unwrap();
    symlink(&outside_dir, server.root().join("outlink")).unwrap();
    // Pointing at the root's parent exposes everything next to the root.
    symlink("..", server.root().join("parent")).unwrap();
    for target in [
        "/outlink/secret.txt",
        "/outlink/",
        "/outlink",
        "/parent/outside.txt",
        "/parent/outside-dir/secret.txt",
    ] {
        let response = server.get(target);
        assert_no_marker(&response, target);
        assert!(
            response.status == 403 || response.status == 404,
            "{target}: status {}",
            response.status
        );
    }
    assert_eq!(server.get("/outlink/secret.txt").status, 403);
}

/// Containment is decided per path component: a sibling directory whose name merely starts
/// with the root's name (`public-evil` next to `public`) is still outside.
#[cfg(unix)]
#[test]
fn symlink_into_sibling_with_root_name_as_prefix_is_forbidden() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start();
    let sibling = server.dir.path().join("public-evil");
    std::fs::create_dir(&sibling).unwrap();
    std::fs::write(sibling.join("x.txt"), OUTSIDE_MARKER).unwrap();
    symlink(sibling.join("x.txt"), server.root().join("sib.txt")).unwrap();
    symlink("../public-evil", server.root().join("sibdir")).unwrap();
    for target in ["/sib.txt", "/sibdir/x.txt"] {
        let response = server.get(target);
        assert_no_marker(&response, target);
        assert_eq!(response.status, 403, "{target}");
    }
}

#[cfg(unix)]
#[test]
fn symlinked_directory_inside_root_is_served() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start();
    symlink("docs", server.root().join("manual")).unwrap();
    let response = server.get("/manual/page.html");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"<p>page</p>\n");
    let response = server.get("/manual/");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"<h1>docs</h1>\n");
}

#[cfg(unix)]
#[test]
fn symlink_chain_that_ends_outside_root_is_forbidden() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start();
    plant_outside_file(&server);
    // first -> docs/second (inside) -> ../../outside.txt (outside).
    symlink("../../outside.txt", server.root().join("docs/second")).unwrap();
    symlink("docs/second", server.root().join("first")).unwrap();
    let response = server.get("/first");
    assert_no_marker(&response, "/first");
    assert_eq!(response.status, 403);
}

#[cfg(unix)]
#[test]
fn index_file_symlinked_outside_root_is_forbidden() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start();
    let outside = plant_outside_file(&server);
    std::fs::create_dir(server.root().join("site")).unwrap();
    symlink(&outside, server.root().join("site/index.html")).unwrap();
    let response = server.get("/site/");
    assert_no_marker(&response, "/site/");
    assert_eq!(response.status, 403);
}

/// A FIFO in the root must not be opened for reading: `open` blocks until a writer appears,
/// and file calls run on the runtime's worker threads, so a couple of requests for it would
/// stall the whole server. nginx checks the type first (and opens non-blocking) and answers
/// 404 for anything that is not a regular file.
#[cfg(unix)]
#[test]
fn fifo_in_root_is_not_found_without_blocking() {
    let server = TestServer::start();
    let fifo = server.root().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream
        .write_all(&request_bytes("GET", "/pipe", &[]))
        .unwrap();
    let mut head = [0u8; 12];
    let answered = stream.read_exact(&mut head).is_ok();
    if !answered {
        // The server is stuck in open(2) on the FIFO: be its writer so it (and the test
        // server's shutdown) can proceed, then fail.
        drop(File::options().write(true).open(&fifo));
    }
    assert!(
        answered,
        "GET /pipe got no response: the server blocked opening a FIFO"
    );
    let status = String::from_utf8_lossy(&head[9..12]).into_owned();
    assert!(
        status == "404" || status == "403",
        "GET /pipe: status {status}"
    );
}

/// ENAMETOOLONG is the client's doing (nginx: 404), never a 500 plus an error-level log
/// line that any client can repeat at will.
#[test]
fn overlong_file_name_is_a_client_error_not_500() {
    let server = TestServer::start();
    let long_name = "a".repeat(300);
    let deep = format!("/{}", vec!["b".repeat(200); 25].join("/"));
    for target in [
        format!("/{long_name}"),
        format!("/docs/{long_name}.html"),
        deep,
    ] {
        let response = server.get(&target);
        assert!(
            matches!(response.status, 400 | 404 | 414),
            "{}...: status {}",
            &target[..20],
            response.status
        );
    }
}

#[cfg(unix)]
#[test]
fn dangling_symlink_is_not_found() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start();
    symlink("does-not-exist.txt", server.root().join("dangling.txt")).unwrap();
    let response = server.get("/dangling.txt");
    assert_eq!(response.status, 404);
    assert!(response.body_text().contains("CUSTOM-404"));
}

// ---------------------------------------------------------------------------------------------
// Hidden files
// ---------------------------------------------------------------------------------------------

#[test]
fn hidden_files_are_not_found_by_default() {
    let server = TestServer::start();
    std::fs::create_dir(server.root().join(".git")).unwrap();
    std::fs::write(server.root().join(".git/config"), "hidden config").unwrap();
    std::fs::write(server.root().join("docs/.env"), "hidden env").unwrap();
    for target in [
        "/.secret",
        "/%2esecret",
        "/%2Esecret",
        "/.git/config",
        "/.git/",
        "/docs/.env",
        "/docs/../.secret",
    ] {
        let response = server.get(target);
        assert_eq!(response.status, 404, "{target}");
        assert!(response.body_text().contains("CUSTOM-404"), "{target}");
        assert!(!response.body_text().contains("hidden"), "{target}");
    }
}

#[test]
fn hidden_files_are_served_when_serve_hidden_is_enabled() {
    let server = TestServer::start_with(Options {
        static_yaml: "  serve_hidden: true\n".into(),
        ..Options::default()
    });
    std::fs::create_dir(server.root().join(".well-known")).unwrap();
    std::fs::write(server.root().join(".well-known/security.txt"), "contact").unwrap();
    let response = server.get("/.secret");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hidden\n");
    let response = server.get("/.well-known/security.txt");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"contact");
    // `..` is still a parent reference, never a hidden name.
    plant_outside_file(&server);
    let response = server.get("/../outside.txt");
    assert_no_marker(&response, "/../outside.txt with serve_hidden");
    assert_eq!(response.status, 400);
}

// ---------------------------------------------------------------------------------------------
// Percent-decoding and queries
// ---------------------------------------------------------------------------------------------

#[test]
fn percent_encoded_names_are_decoded() {
    let server = TestServer::start();
    std::fs::write(server.root().join("a b.txt"), "spaced").unwrap();
    std::fs::write(server.root().join("café.txt"), "accented").unwrap();
    std::fs::write(server.root().join("100%.txt"), "percent").unwrap();
    let cases: &[(&str, &[u8])] = &[
        ("/a%20b.txt", b"spaced"),
        ("/caf%C3%A9.txt", b"accented"),
        ("/caf%c3%a9.txt", b"accented"),
        ("/100%25.txt", b"percent"),
        ("/%68ello.txt", HELLO),
        ("/docs%2fpage.html", b"<p>page</p>\n"),
    ];
    for &(target, body) in cases {
        let response = server.get(target);
        assert_eq!(response.status, 200, "{target}");
        assert_eq!(response.body, body, "{target}");
    }
}

#[test]
fn plus_sign_in_path_is_literal_not_a_space() {
    let server = TestServer::start();
    std::fs::write(server.root().join("a+b.txt"), "plus").unwrap();
    let response = server.get("/a+b.txt");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"plus");
    assert_eq!(server.get("/a%2Bb.txt").body, b"plus");
}

#[test]
fn invalid_percent_escapes_are_bad_request() {
    let server = TestServer::start();
    for target in [
        "/%zz",
        "/%2",
        "/hello.txt%",
        "/%g0.txt",
        "/%%41",
        "/%ff",
        "/%C3",
    ] {
        let response = server.get(target);
        assert_eq!(response.status, 400, "{target}");
        assert!(response.body_text().contains("CUSTOM-400"), "{target}");
    }
}

#[test]
fn query_string_is_ignored_for_file_lookup() {
    let server = TestServer::start();
    plant_outside_file(&server);
    for target in [
        "/hello.txt?x=1",
        "/hello.txt?",
        "/hello.txt?../../outside.txt",
        "/hello.txt?%zz",
    ] {
        let response = server.get(target);
        assert_eq!(response.status, 200, "{target}");
        assert_eq!(response.body, HELLO, "{target}");
    }
    let response = server.get("/?q=1");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"<h1>home</h1>\n");
    assert_eq!(server.get("/docs/?q=1").body, b"<h1>docs</h1>\n");
    // An encoded `?` is part of the name, not a query separator.
    assert_eq!(server.get("/hello.txt%3Fx=1").status, 404);
}

// ---------------------------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------------------------

#[test]
fn unsupported_methods_get_405_with_allow_get_head() {
    let server = TestServer::start();
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"] {
        let response = server.request(&request_bytes(
            method,
            "/hello.txt",
            &[("Content-Length", "0")],
        ));
        assert_eq!(response.status, 405, "{method}");
        assert_eq!(response.header("allow"), Some("GET, HEAD"), "{method}");
        assert!(
            !response.body.starts_with(HELLO),
            "{method} leaked the file"
        );
    }
    // Also for paths that do not exist: the method is refused before any lookup.
    let response = server.request(&request_bytes("DELETE", "/nope", &[]));
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
}

#[test]
fn post_with_body_gets_405_and_connection_stays_usable() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.send(b"POST /hello.txt HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nabcde");
    let response = client.read_response();
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
    client.send(&request_bytes("GET", "/hello.txt", &[]));
    let response = client.read_response();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, HELLO);
}

/// The headers a HEAD and a GET must share: all but Date, which may tick over, and
/// X-Request-Id, which is new for every request.
fn comparable_headers(response: &Response) -> Vec<(String, String)> {
    let mut headers: Vec<_> = response
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("date") && !n.eq_ignore_ascii_case("x-request-id"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    headers.sort();
    headers
}

#[test]
fn head_has_same_headers_as_get_and_no_body() {
    let server = TestServer::start();
    let mut client = server.connect();
    for (target, size) in [("/hello.txt", HELLO.len()), ("/digits.txt", 1000)] {
        client.send(&request_bytes("HEAD", target, &[]));
        let head = client.read_response_to(true);
        // Any body bytes after the HEAD response would corrupt the next response.
        client.send(&request_bytes("GET", target, &[]));
        let get = client.read_response();
        assert_eq!(head.status, 200, "{target}");
        assert_eq!(get.status, 200, "{target}");
        assert_eq!(
            head.header("content-length"),
            Some(size.to_string().as_str()),
            "{target}"
        );
        assert_eq!(get.body.len(), size, "{target}");
        assert_eq!(
            comparable_headers(&head),
            comparable_headers(&get),
            "{target}"
        );
    }
    assert!(client.leftover().is_empty());
}

#[test]
fn head_of_file_larger_than_read_chunk_sends_no_body() {
    let server = TestServer::start();
    let content = pattern(200_000);
    std::fs::write(server.root().join("big.bin"), &content).unwrap();
    let mut client = server.connect();
    client.send(&request_bytes("HEAD", "/big.bin", &[]));
    let head = client.read_response_to(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("200000"));
    client.send(&request_bytes("GET", "/hello.txt", &[]));
    let get = client.read_response();
    assert_eq!(
        get.status, 200,
        "stray HEAD body bytes corrupted the next response"
    );
    assert_eq!(get.body, HELLO);
}

#[test]
fn head_of_missing_file_gets_404_head_without_body() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.send(&request_bytes("HEAD", "/nope.html", &[]));
    let head = client.read_response_to(true);
    assert_eq!(head.status, 404);
    let length: usize = head.header("content-length").unwrap().parse().unwrap();
    assert_eq!(length, "CUSTOM-404 page\n".len());
    client.send(&request_bytes("GET", "/hello.txt", &[]));
    assert_eq!(client.read_response().body, HELLO);
}

// ---------------------------------------------------------------------------------------------
// Conditional requests
// ---------------------------------------------------------------------------------------------

#[test]
fn if_none_match_with_current_etag_gives_304_without_body() {
    let server = TestServer::start();
    let etag = etag_of(&server, "/hello.txt");
    let mut client = server.connect();
    client.send(&request_bytes(
        "GET",
        "/hello.txt",
        &[("If-None-Match", &etag)],
    ));
    let response = client.read_response();
    assert_eq!(response.status, 304);
    assert_eq!(response.header("etag"), Some(etag.as_str()));
    assert!(response.header("last-modified").is_some());
    assert!(response.header("transfer-encoding").is_none());
    // No body follows a 304: the next response on the connection starts right after it.
    client.send(&request_bytes("GET", "/hello.txt", &[]));
    let next = client.read_response();
    assert_eq!(next.status, 200);
    assert_eq!(next.body, HELLO);
}

#[test]
fn if_none_match_weak_form_of_etag_gives_304() {
    let server = TestServer::start();
    let etag = etag_of(&server, "/hello.txt");
    let weak = format!("W/{etag}");
    let response = get_with(&server, "/hello.txt", &[("If-None-Match", &weak)]);
    assert_eq!(response.status, 304);
    assert_eq!(response.header("etag"), Some(etag.as_str()));
}

#[test]
fn if_none_match_non_matching_gives_200() {
    let server = TestServer::start();
    let etag = etag_of(&server, "/hello.txt");
    for value in [
        "\"something-else\"",
        "W/\"something-else\"",
        etag.trim_matches('"'),
    ] {
        let response = get_with(&server, "/hello.txt", &[("If-None-Match", value)]);
        assert_eq!(response.status, 200, "If-None-Match: {value}");
        assert_eq!(response.body, HELLO, "If-None-Match: {value}");
    }
}

#[test]
fn if_none_match_star_gives_304() {
    let server = TestServer::start();
    let response = get_with(&server, "/hello.txt", &[("If-None-Match", "*")]);
    assert_eq!(response.status, 304);
    assert!(response.header("etag").is_some());
}

#[test]
fn if_none_match_list_containing_etag_gives_304() {
    let server = TestServer::start();
    let etag = etag_of(&server, "/hello.txt");
    let list = format!("\"a\", W/\"b\",{etag} , \"c\"");
    let response = get_with(&server, "/hello.txt", &[("If-None-Match", &list)]);
    assert_eq!(response.status, 304);
}

#[test]
fn if_none_match_on_head_gives_304() {
    let server = TestServer::start();
    let etag = etag_of(&server, "/hello.txt");
    let response = head_with(&server, "/hello.txt", &[("If-None-Match", &etag)]);
    assert_eq!(response.status, 304);
    assert_eq!(response.header("etag"), Some(etag.as_str()));
}

#[test]
fn head_of_directory_without_slash_redirects_like_get() {
    let server = TestServer::start();
    let response = head_with(&server, "/docs?x=1", &[]);
    assert_eq!(response.status, 301);
    assert_eq!(response.header("location"), Some("/docs/?x=1"));
}

#[test]
fn stale_etag_after_file_change_gives_200() {
    let server = TestServer::start();
    let old = etag_of(&server, "/hello.txt");
    std::fs::write(server.root().join("hello.txt"), "new and longer content\n").unwrap();
    let response = get_with(&server, "/hello.txt", &[("If-None-Match", &old)]);
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"new and longer content\n");
}

#[test]
fn if_modified_since_equal_to_last_modified_gives_304() {
    let server = TestServer::start();
    age_file(&server.root().join("hello.txt"), 3600);
    let last_modified = server
        .get("/hello.txt")
        .header("last-modified")
        .unwrap()
        .to_string();
    let response = get_with(
        &server,
        "/hello.txt",
        &[("If-Modified-Since", &last_modified)],
    );
    assert_eq!(response.status, 304);
    assert!(response.header("etag").is_some());
    // A later date than the file's is also "not modified since".
    let later = httpdate::fmt_http_date(SystemTime::now());
    let response = get_with(&server, "/hello.txt", &[("If-Modified-Since", &later)]);
    assert_eq!(response.status, 304);
}

#[test]
fn if_modified_since_older_than_file_gives_200() {
    let server = TestServer::start();
    age_file(&server.root().join("hello.txt"), 3600);
    let older = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(7200));
    for date in [older.as_str(), "Sun, 06 Nov 1994 08:49:37 GMT"] {
        let response = get_with(&server, "/hello.txt", &[("If-Modified-Since", date)]);
        assert_eq!(response.status, 200, "If-Modified-Since: {date}");
        assert_eq!(response.body, HELLO);
    }
}

#[test]
fn if_modified_since_invalid_date_is_ignored() {
    let server = TestServer::start();
    for date in ["not a date", "yesterday", ""] {
        let response = get_with(&server, "/hello.txt", &[("If-Modified-Since", date)]);
        assert_eq!(response.status, 200, "If-Modified-Since: {date:?}");
        assert_eq!(response.body, HELLO);
    }
}

#[test]
fn if_none_match_takes_precedence_over_if_modified_since() {
    let server = TestServer::start();
    let fresh = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    let response = get_with(
        &server,
        "/hello.txt",
        &[
            ("If-None-Match", "\"not-the-etag\""),
            ("If-Modified-Since", &fresh),
        ],
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.body, HELLO);
}

#[test]
fn if_match_non_matching_gives_412() {
    let server = TestServer::start();
    let etag = etag_of(&server, "/hello.txt");
    let weak = format!("W/{etag}");
    // Weak tags never match If-Match (strong comparison, RFC 9110 §13.1.1).
    for value in ["\"not-the-etag\"", weak.as_str()] {
        let response = get_with(&server, "/hello.txt", &[("If-Match", value)]);
        assert_eq!(response.status, 412, "If-Match: {value}");
        assert!(!response.body.starts_with(HELLO));
    }
}

#[test]
fn if_match_current_etag_or_star_gives_200() {
    let server = TestServer::start();
    let etag = etag_of(&server, "/hello.txt");
    let list = format!("\"x\", {etag}");
    for value in [etag.as_str(), "*", list.as_str()] {
        let response = get_with(&server, "/hello.txt", &[("If-Match", value)]);
        assert_eq!(response.status, 200, "If-Match: {value}");
        assert_eq!(response.body, HELLO);
    }
}

#[test]
fn if_unmodified_since_before_last_modification_gives_412() {
    let server = TestServer::start();
    age_file(&server.root().join("hello.txt"), 3600);
    let before = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(7200));
    let response = get_with(&server, "/hello.txt", &[("If-Unmodified-Since", &before)]);
    assert_eq!(response.status, 412);
    let after = httpdate::fmt_http_date(SystemTime::now());
    let response = get_with(&server, "/hello.txt", &[("If-Unmodified-Since", &after)]);
    assert_eq!(response.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Ranges
// ---------------------------------------------------------------------------------------------

fn digits() -> Vec<u8> {
    (0..1000u32).map(|i| b'0' + (i % 10) as u8).collect()
}

/// `GET /digits.txt` with `Range: range`, asserting a 206 with the given inclusive span.
fn assert_digits_range(server: &TestServer, range: &str, first: usize, last: usize) {
    let response = get_with(server, "/digits.txt", &[("Range", range)]);
    assert_eq!(response.status, 206, "Range: {range}");
    assert_eq!(
        response.header("content-range"),
        Some(format!("bytes {first}-{last}/1000").as_str()),
        "Range: {range}"
    );
    assert_eq!(
        response.header("content-length"),
        Some((last - first + 1).to_string().as_str()),
        "Range: {range}"
    );
    assert_eq!(response.body, &digits()[first..=last], "Range: {range}");
    assert!(response.header("etag").is_some(), "Range: {range}");
}

/// `GET /digits.txt` with `headers`, asserting the whole file as a 200.
fn assert_digits_full(server: &TestServer, headers: &[(&str, &str)]) {
    let response = get_with(server, "/digits.txt", headers);
    assert_eq!(response.status, 200, "{headers:?}");
    assert!(response.header("content-range").is_none(), "{headers:?}");
    assert_eq!(response.body, digits(), "{headers:?}");
}

#[test]
fn range_first_ten_bytes_gives_206() {
    let server = TestServer::start();
    let response = get_with(&server, "/digits.txt", &[("Range", "bytes=0-9")]);
    assert_eq!(response.status, 206);
    assert_eq!(response.body, b"0123456789");
    assert_eq!(response.header("content-range"), Some("bytes 0-9/1000"));
    assert_eq!(response.header("content-length"), Some("10"));
    assert_eq!(response.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

#[test]
fn range_middle_bytes_gives_exact_slice() {
    let server = TestServer::start();
    assert_digits_range(&server, "bytes=123-456", 123, 456);
    assert_digits_range(&server, "bytes=500-500", 500, 500);
}

#[test]
fn range_open_ended_gives_tail_from_start() {
    let server = TestServer::start();
    assert_digits_range(&server, "bytes=990-", 990, 999);
}

#[test]
fn range_suffix_gives_last_bytes() {
    let server = TestServer::start();
    assert_digits_range(&server, "bytes=-5", 995, 999);
}

#[test]
fn range_suffix_longer_than_file_gives_whole_file_as_206() {
    let server = TestServer::start();
    assert_digits_range(&server, "bytes=-5000", 0, 999);
}

#[test]
fn range_end_beyond_size_is_clamped() {
    let server = TestServer::start();
    assert_digits_range(&server, "bytes=995-2000", 995, 999);
}

#[test]
fn range_starting_at_or_after_size_is_416_with_star_content_range() {
    let server = TestServer::start();
    let mut client = server.connect();
    for range in [
        "bytes=1000-",
        "bytes=1000-1005",
        "bytes=5000-6000",
        "bytes=-0",
    ] {
        client.send(&request_bytes("GET", "/digits.txt", &[("Range", range)]));
        let response = client.read_response();
        assert_eq!(response.status, 416, "Range: {range}");
        assert_eq!(
            response.header("content-range"),
            Some("bytes */1000"),
            "Range: {range}"
        );
        assert!(
            !response.body.starts_with(b"0123456789"),
            "Range: {range} sent file content"
        );
    }
    client.send(&request_bytes("GET", "/hello.txt", &[]));
    assert_eq!(client.read_response().body, HELLO);
}

#[test]
fn range_invalid_spec_is_ignored_and_full_file_sent() {
    let server = TestServer::start();
    for range in [
        "bytes=5-2",
        "bytes=abc",
        "bytes=-",
        "bytes=1-x",
        "bytes 0-9",
        "items=0-9",
    ] {
        assert_digits_full(&server, &[("Range", range)]);
    }
}

#[test]
fn multiple_ranges_are_served_as_full_200() {
    let server = TestServer::start();
    assert_digits_full(&server, &[("Range", "bytes=0-1,5-6")]);
    assert_digits_full(&server, &[("Range", "bytes=0-1, 990-")]);
}

#[test]
fn range_unit_is_case_insensitive() {
    let server = TestServer::start();
    assert_digits_range(&server, "Bytes=0-9", 0, 9);
}

#[test]
fn if_range_with_current_etag_gives_206() {
    let server = TestServer::start();
    let etag = etag_of(&server, "/digits.txt");
    let response = get_with(
        &server,
        "/digits.txt",
        &[("Range", "bytes=0-9"), ("If-Range", &etag)],
    );
    assert_eq!(response.status, 206);
    assert_eq!(response.body, b"0123456789");
}

#[test]
fn if_range_with_stale_or_weak_etag_gives_full_200() {
    let server = TestServer::start();
    let etag = etag_of(&server, "/digits.txt");
    let weak = format!("W/{etag}");
    for if_range in ["\"stale-etag\"", weak.as_str()] {
        assert_digits_full(&server, &[("Range", "bytes=0-9"), ("If-Range", if_range)]);
    }
}

#[test]
fn if_range_with_last_modified_date_gives_206_and_other_date_gives_200() {
    let server = TestServer::start();
    age_file(&server.root().join("digits.txt"), 3600);
    let last_modified = server
        .get("/digits.txt")
        .header("last-modified")
        .unwrap()
        .to_string();
    let response = get_with(
        &server,
        "/digits.txt",
        &[("Range", "bytes=0-9"), ("If-Range", &last_modified)],
    );
    assert_eq!(response.status, 206);
    assert_eq!(response.body, b"0123456789");
    let other = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(7200));
    assert_digits_full(&server, &[("Range", "bytes=0-9"), ("If-Range", &other)]);
}

#[test]
fn if_none_match_304_wins_over_range() {
    let server = TestServer::start();
    let etag = etag_of(&server, "/digits.txt");
    let response = get_with(
        &server,
        "/digits.txt",
        &[("Range", "bytes=0-9"), ("If-None-Match", &etag)],
    );
    assert_eq!(response.status, 304);
}

#[test]
fn range_on_empty_file_is_416() {
    let server = TestServer::start();
    std::fs::write(server.root().join("empty.txt"), b"").unwrap();
    for range in ["bytes=0-", "bytes=-1", "bytes=0-0"] {
        let response = get_with(&server, "/empty.txt", &[("Range", range)]);
        assert_eq!(response.status, 416, "Range: {range}");
        assert_eq!(response.header("content-range"), Some("bytes */0"));
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming: files larger than read_chunk_bytes
// ---------------------------------------------------------------------------------------------

#[test]
fn file_larger_than_read_chunk_arrives_byte_identical() {
    let server = TestServer::start();
    let content = pattern(200_000);
    assert!(content.len() > DEFAULT_PIECE * 3);
    std::fs::write(server.root().join("big.bin"), &content).unwrap();
    let response = server.get("/big.bin");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("200000"));
    assert!(
        response.body == content,
        "streamed bytes differ from the file"
    );
}

#[test]
fn range_crossing_piece_boundaries_is_byte_identical() {
    let server = TestServer::start();
    let content = pattern(200_000);
    std::fs::write(server.root().join("big.bin"), &content).unwrap();
    // 65_000..=140_000 is larger than one piece and spans two piece boundaries of the file.
    let response = get_with(&server, "/big.bin", &[("Range", "bytes=65000-140000")]);
    assert_eq!(response.status, 206);
    assert_eq!(
        response.header("content-range"),
        Some("bytes 65000-140000/200000")
    );
    assert_eq!(response.header("content-length"), Some("75001"));
    assert!(
        response.body == content[65_000..=140_000],
        "range bytes differ"
    );
    // The tail, ending exactly at EOF.
    let response = get_with(&server, "/big.bin", &[("Range", "bytes=-70000")]);
    assert_eq!(response.status, 206);
    assert!(response.body == content[130_000..], "suffix bytes differ");
}

#[test]
fn streamed_response_is_followed_by_a_clean_keep_alive_response() {
    let server = TestServer::start();
    let content = pattern(200_000);
    std::fs::write(server.root().join("big.bin"), &content).unwrap();
    let mut client = server.connect();
    for _ in 0..2 {
        client.send(&request_bytes("GET", "/big.bin", &[]));
        let response = client.read_response();
        assert_eq!(response.status, 200);
        assert!(response.body == content);
        client.send(&request_bytes("GET", "/hello.txt", &[]));
        assert_eq!(client.read_response().body, HELLO);
    }
    assert!(client.leftover().is_empty());
}

#[test]
fn small_read_chunk_config_streams_many_pieces_exactly() {
    let server = TestServer::start_with(Options {
        static_yaml: "  read_chunk_bytes: 4096\n".into(),
        ..Options::default()
    });
    // At the threshold (read whole), one past it (streamed: a piece and one byte), and many
    // pieces.
    for len in [4096usize, 4097, 8192, 50_000] {
        let content = pattern(len);
        let name = format!("f{len}.bin");
        std::fs::write(server.root().join(&name), &content).unwrap();
        let response = server.get(&format!("/{name}"));
        assert_eq!(response.status, 200, "{len}");
        assert_eq!(
            response.header("content-length"),
            Some(len.to_string().as_str())
        );
        assert!(response.body == content, "{len}-byte file differs");
    }
    let content = pattern(50_000);
    let response = get_with(&server, "/f50000.bin", &[("Range", "bytes=4000-12345")]);
    assert_eq!(response.status, 206);
    assert!(response.body == content[4000..=12345]);
}

#[test]
fn concurrent_downloads_of_a_streamed_file_are_each_complete() {
    let server = TestServer::start();
    let content = pattern(300_000);
    std::fs::write(server.root().join("big.bin"), &content).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let mut client = server.connect();
                for _ in 0..2 {
                    client.send(&request_bytes("GET", "/big.bin", &[]));
                    let response = client.read_response();
                    assert_eq!(response.status, 200);
                    assert!(response.body == content, "a concurrent download differs");
                }
            });
        }
    });
}

#[test]
fn large_sparse_file_streams_its_full_length() {
    let server = TestServer::start();
    let markers = write_large_sparse(&server.root().join("large.bin"));
    let mut client = StreamClient::connect(server.addr);
    client.send(&request_bytes("GET", "/large.bin", &[]));
    let mut checker = SparseChecker::new(0, &markers);
    let (head, received) = client.read_streamed(|offset, piece| checker.check(offset, piece));
    assert_eq!(head.status, 200);
    assert_eq!(head.content_length(), LARGE_SIZE);
    assert_eq!(received, LARGE_SIZE, "body ended early");
    assert_eq!(
        checker.first_mismatch, None,
        "content differs at this offset"
    );
    // The connection is still in step: another request gets its own clean response.
    client.send(&request_bytes("GET", "/hello.txt", &[]));
    let mut body = Vec::new();
    let (head, _) = client.read_streamed(|_, piece| body.extend_from_slice(piece));
    assert_eq!(head.status, 200);
    assert_eq!(body, HELLO);
}

#[test]
fn large_file_range_from_the_middle_is_exact() {
    let server = TestServer::start();
    let markers = write_large_sparse(&server.root().join("large.bin"));
    // Longer than one 64 KiB piece, and straddling the marker at the 32 MiB boundary.
    let (first, last) = (LARGE_MIDDLE - 70_000, LARGE_MIDDLE + 70_000);
    let range = format!("bytes={first}-{last}");
    let mut client = StreamClient::connect(server.addr);
    client.send(&request_bytes("GET", "/large.bin", &[("Range", &range)]));
    let mut checker = SparseChecker::new(first, &markers);
    let (head, received) = client.read_streamed(|offset, piece| checker.check(offset, piece));
    assert_eq!(head.status, 206);
    assert_eq!(
        head.header("content-range"),
        Some(format!("bytes {first}-{last}/{LARGE_SIZE}").as_str())
    );
    assert_eq!(head.content_length(), last - first + 1);
    assert_eq!(received, last - first + 1);
    assert_eq!(
        checker.first_mismatch, None,
        "content differs at this offset"
    );

    // The last three bytes, by suffix.
    client.send(&request_bytes(
        "GET",
        "/large.bin",
        &[("Range", "bytes=-3")],
    ));
    let mut body = Vec::new();
    let (head, _) = client.read_streamed(|_, piece| body.extend_from_slice(piece));
    assert_eq!(head.status, 206);
    assert_eq!(body, b"END");
}

#[test]
fn sf_009_a_file_that_shrinks_mid_response_ends_in_a_cut_connection_not_a_hang() {
    let server = TestServer::start();
    let path = server.root().join("shrinking.bin");
    let size: u64 = 64 * 1024 * 1024;
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let mut client = server.connect();
    client.send(b"GET /shrinking.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut first = [0u8; 1024];
    let n = std::io::Read::read(&mut client.stream, &mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1024 * 1024)
        .unwrap();
    let mut received = n as u64;
    let mut chunk = vec![0u8; 1 << 20];
    let started = std::time::Instant::now();
    loop {
        match std::io::Read::read(&mut client.stream, &mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => received += k as u64,
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "hung after the file shrank"
        );
    }
    assert!(
        received < size,
        "a complete-looking response for a file that shrank"
    );
}
