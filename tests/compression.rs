//! Issue 23, compression, through the real binary: static files compressed on the fly and
//! served from precompressed sidecars, proxied responses compressed on their way, every
//! never-compress case, ETag and Vary, bodies decoded by independent decoders (the `zstd`
//! and `brotli` command-line tools, Python's `gzip`) byte-identical to the original, and
//! memory bounded while a 1 GiB file is streamed compressed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::backend::{Backend, Reply};
use common::daemon::Daemon;
use common::{RawClient, Response};

/// Text that compresses well but not trivially: HTML-like lines with varying numbers.
fn page(len: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while text.len() < len {
        let line = format!(
            "<tr><td class=\"n\">{i}</td><td>{}</td><td>row {}</td></tr>\n",
            i * 7919 % 10007,
            i % 13
        );
        text.extend_from_slice(line.as_bytes());
        i += 1;
    }
    text.truncate(len);
    text
}

/// Decode `body` with a decoder that is not the one Sentinel encodes with.
fn decode_independently(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut command = match coding {
        "zstd" => {
            let mut c = Command::new("zstd");
            c.args(["-d", "-c", "-q"]);
            c
        }
        "br" => {
            let mut c = Command::new("brotli");
            c.args(["-d", "-c"]);
            c
        }
        "gzip" => {
            let mut c = Command::new("python3");
            c.args([
                "-c",
                "import gzip, sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))",
            ]);
            c
        }
        other => panic!("no decoder for {other}"),
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("the {coding} decoder must be installed: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = body.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("decoder output");
    writer.join().expect("writer").expect("feed the decoder");
    assert!(output.status.success(), "{coding} decoder failed");
    output.stdout
}

/// Compress with the distribution's tool, as an operator makes sidecars.
fn compress_independently(coding: &str, input: &Path, output: &Path) {
    let status = match coding {
        "zstd" => Command::new("zstd")
            .args(["-q", "-19", "-f", "-o"])
            .arg(output)
            .arg(input)
            .status(),
        "br" => Command::new("brotli")
            .args(["-f", "-q", "11", "-o"])
            .arg(output)
            .arg(input)
            .status(),
        "gzip" => Command::new("python3")
            .args([
                "-c",
                "import gzip, sys; open(sys.argv[2], 'wb').write(gzip.compress(open(sys.argv[1], 'rb').read(), 9))",
            ])
            .arg(input)
            .arg(output)
            .status(),
        other => panic!("no encoder for {other}"),
    };
    assert!(
        status.expect("run the encoder").success(),
        "{coding} encoder failed"
    );
}

/// A site: a large page (streamed), a small one (read whole), a tiny one, an image, JSON.
struct Site {
    dir: tempfile::TempDir,
    big: Vec<u8>,
    small: Vec<u8>,
}

const BIG_BYTES: usize = 300_000;
const SMALL_BYTES: usize = 3_000;

fn site() -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("public");
    std::fs::create_dir(&root).expect("root");
    let big = page(BIG_BYTES);
    let small = page(SMALL_BYTES);
    std::fs::write(root.join("big.html"), &big).unwrap();
    std::fs::write(root.join("small.html"), &small).unwrap();
    std::fs::write(root.join("data.json"), page(5_000)).unwrap();
    std::fs::write(root.join("tiny.txt"), page(100)).unwrap();
    std::fs::write(root.join("photo.png"), page(5_000)).unwrap();
    Site { dir, big, small }
}

impl Site {
    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("public")
    }

    /// A daemon serving the site, with `compression` (YAML lines at top level) and `extra`.
    fn start(&self, compression: &str, extra: &str) -> Daemon {
        self.start_with(compression, extra, "")
    }

    /// As `start`, with `static_extra` lines under `static_files`.
    fn start_with(&self, compression: &str, extra: &str, static_extra: &str) -> Daemon {
        // Files over 1 KiB are not cached, and files over 4 KiB are streamed in 4 KiB pieces:
        // `big.html` takes the streamed path, `small.html` the read-whole one.
        let yaml = format!(
            "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: \"{}\"\n  \
             read_chunk_bytes: 4096\n  cache_max_file_bytes: 1024\n{static_extra}{compression}{extra}",
            self.root().display()
        );
        Daemon::start_in(self.dir.path(), &yaml)
    }
}

const COMPRESSION: &str = "compression:\n  algorithms: [\"zstd\", \"br\", \"gzip\"]\n  \
                           min_bytes: 1024\n  precompressed: true\n  level: \"fast\"\n";

fn get(daemon: &Daemon, path: &str, headers: &str) -> Response {
    request(daemon, "GET", path, headers)
}

fn request(daemon: &Daemon, method: &str, path: &str, headers: &str) -> Response {
    let mut client = RawClient::connect(daemon.addr);
    client.send(format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes());
    client.read_response_to(method == "HEAD")
}

fn assert_identity(response: &Response, original: &[u8], what: &str) {
    assert_eq!(response.header("content-encoding"), None, "{what}");
    assert!(response.body == original, "{what}: body differs");
}

#[test]
fn static_files_round_trip_through_independent_decoders_for_every_coding() {
    let site = site();
    let daemon = site.start(COMPRESSION, "");
    for coding in ["zstd", "br", "gzip"] {
        for (path, original) in [("/big.html", &site.big), ("/small.html", &site.small)] {
            let response = get(&daemon, path, &format!("Accept-Encoding: {coding}\r\n"));
            assert_eq!(response.status, 200, "{coding} {path}");
            assert_eq!(response.header("content-encoding"), Some(coding), "{path}");
            assert_eq!(response.header("vary"), Some("Accept-Encoding"), "{path}");
            assert_eq!(response.header("accept-ranges"), None, "{path}");
            assert!(
                response.body.len() < original.len() / 3,
                "{coding} {path}: {} bytes",
                response.body.len()
            );
            let decoded = decode_independently(coding, &response.body);
            assert!(
                decoded == *original,
                "{coding} {path}: decoded body differs"
            );
        }
    }
    // The streamed page goes out chunked; the one read whole with its length.
    let big = get(&daemon, "/big.html", "Accept-Encoding: zstd\r\n");
    assert_eq!(big.header("transfer-encoding"), Some("chunked"));
    let small = get(&daemon, "/small.html", "Accept-Encoding: zstd\r\n");
    assert_eq!(
        small.header("content-length"),
        Some(small.body.len().to_string().as_str())
    );
}

#[test]
fn the_best_accepted_coding_is_chosen_with_server_preference_breaking_ties() {
    let site = site();
    let daemon = site.start(
        "compression:\n  algorithms: [\"br\", \"gzip\", \"zstd\"]\n",
        "",
    );
    let cases = [
        ("gzip, deflate, br, zstd", Some("br")),
        ("gzip;q=1, br;q=0.5", Some("gzip")),
        ("*", Some("br")),
        ("br;q=0, *;q=0.5", Some("gzip")),
        ("identity;q=0, zstd", Some("zstd")),
        ("x-gzip", Some("gzip")),
        ("deflate", None),
        ("identity", None),
        ("gzip;q=0, br;q=0, zstd;q=0", None),
    ];
    for (accept, want) in cases {
        let response = get(
            &daemon,
            "/small.html",
            &format!("Accept-Encoding: {accept}\r\n"),
        );
        assert_eq!(response.header("content-encoding"), want, "{accept}");
        assert_eq!(response.header("vary"), Some("Accept-Encoding"), "{accept}");
        match want {
            Some(coding) => assert!(decode_independently(coding, &response.body) == site.small),
            None => assert_identity(&response, &site.small, accept),
        }
    }
}

#[test]
fn static_never_compress_cases() {
    let site = site();
    let daemon = site.start(
        COMPRESSION,
        "routes:\n  - path_prefix: \"/plain\"\n    static: true\n    compression: false\n  \
         - path_prefix: \"/\"\n    static: true\n",
    );
    std::fs::create_dir(site.root().join("plain")).unwrap();
    std::fs::write(site.root().join("plain/page.html"), &site.small).unwrap();
    let accept = "Accept-Encoding: zstd, br, gzip\r\n";

    // The client did not ask: identity, but the answer says it could differ.
    let response = get(&daemon, "/small.html", "");
    assert_identity(&response, &site.small, "no Accept-Encoding");
    assert_eq!(response.header("vary"), Some("Accept-Encoding"));

    // A range is of the identity representation.
    let response = get(
        &daemon,
        "/big.html",
        &format!("{accept}Range: bytes=10-19\r\n"),
    );
    assert_eq!(response.status, 206);
    assert_identity(&response, &site.big[10..20], "range");

    // Under min_bytes, an image, the route that opted out: identity and no Vary.
    let tiny = std::fs::read(site.root().join("tiny.txt")).unwrap();
    let png = std::fs::read(site.root().join("photo.png")).unwrap();
    for (path, original, what) in [
        ("/tiny.txt", &tiny, "under min_bytes"),
        ("/photo.png", &png, "image"),
        ("/plain/page.html", &site.small, "route opted out"),
    ] {
        let response = get(&daemon, path, accept);
        assert_eq!(response.status, 200, "{what}");
        assert_identity(&response, original, what);
        assert_eq!(response.header("vary"), None, "{what}");
    }

    // An HTTP/1.0 client cannot take chunked framing: a streamed file goes as it is.
    let mut client = RawClient::connect(daemon.addr);
    client.send(format!("GET /big.html HTTP/1.0\r\n{accept}\r\n").as_bytes());
    let response = client.read_response();
    assert_identity(&response, &site.big, "HTTP/1.0");

    // JSON is on the default list.
    let response = get(&daemon, "/data.json", accept);
    assert_eq!(response.header("content-encoding"), Some("zstd"));
}

#[test]
fn compression_is_off_without_its_section() {
    let site = site();
    let daemon = site.start("", "");
    let response = get(&daemon, "/big.html", "Accept-Encoding: zstd, br, gzip\r\n");
    assert_identity(&response, &site.big, "no compression section");
    assert_eq!(response.header("vary"), None);
}

#[test]
fn head_answers_carry_the_headers_get_would() {
    let site = site();
    let daemon = site.start(COMPRESSION, "");
    for path in ["/big.html", "/small.html", "/tiny.txt"] {
        for accept in ["Accept-Encoding: gzip\r\n", ""] {
            let get = get(&daemon, path, accept);
            let head = request(&daemon, "HEAD", path, accept);
            assert_eq!(head.status, get.status, "{path} {accept:?}");
            for name in [
                "content-encoding",
                "content-length",
                "transfer-encoding",
                "etag",
                "vary",
                "content-type",
            ] {
                assert_eq!(
                    head.header(name),
                    get.header(name),
                    "{path} {accept:?}: {name}"
                );
            }
        }
    }
}

#[test]
fn etags_differ_per_encoding_and_revalidate() {
    let site = site();
    let daemon = site.start(COMPRESSION, "");
    let identity = get(&daemon, "/small.html", "");
    let identity_tag = identity.header("etag").expect("identity etag").to_string();
    assert!(identity_tag.starts_with('"'), "{identity_tag}");
    let zstd = get(&daemon, "/small.html", "Accept-Encoding: zstd\r\n");
    let zstd_tag = zstd.header("etag").expect("zstd etag").to_string();
    let gzip_tag = get(&daemon, "/small.html", "Accept-Encoding: gzip\r\n")
        .header("etag")
        .expect("gzip etag")
        .to_string();
    assert!(zstd_tag.starts_with("W/"), "on the fly is weak: {zstd_tag}");
    assert_ne!(zstd_tag, identity_tag);
    assert_ne!(zstd_tag, gzip_tag);

    // Each variant revalidates against its own tag, and a 304 says Vary too.
    let response = get(
        &daemon,
        "/small.html",
        &format!("Accept-Encoding: zstd\r\nIf-None-Match: {zstd_tag}\r\n"),
    );
    assert_eq!(response.status, 304);
    assert_eq!(response.header("etag"), Some(zstd_tag.as_str()));
    assert_eq!(response.header("vary"), Some("Accept-Encoding"));
    assert!(response.body.is_empty());
    // The identity tag does not validate the zstd variant, nor the zstd one the identity.
    let response = get(
        &daemon,
        "/small.html",
        &format!("Accept-Encoding: zstd\r\nIf-None-Match: {identity_tag}\r\n"),
    );
    assert_eq!(response.status, 200);
    let response = get(
        &daemon,
        "/small.html",
        &format!("If-None-Match: {zstd_tag}\r\n"),
    );
    assert_eq!(response.status, 200);
    let response = get(
        &daemon,
        "/small.html",
        &format!("If-None-Match: {identity_tag}\r\n"),
    );
    assert_eq!(response.status, 304);
}

/// Make `path`'s modification time `age` in the past.
fn age(path: &Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn fresh_sidecars_are_served_as_they_are_and_stale_ones_ignored() {
    let site = site();
    let root = site.root();
    let original = root.join("big.html");
    // The tools copy the original's time onto what they write; `brotli` copies only its
    // whole seconds, so a fresh `.br` is older than its original to the nanosecond.
    age(&original, Duration::from_secs(60));
    for coding in ["zstd", "br"] {
        let suffix = if coding == "zstd" { ".zst" } else { ".br" };
        compress_independently(coding, &original, &root.join(format!("big.html{suffix}")));
    }
    // Sidecars looked for on every request, so the edit below shows at once (the default
    // trusts a lookup for a second: `sidecar_lookups_are_trusted_for_sidecar_valid_ms`).
    let daemon = site.start_with(COMPRESSION, "", "  sidecar_valid_ms: 0\n");
    let zst = std::fs::read(root.join("big.html.zst")).unwrap();

    // The sidecar itself, with its own length and a strong tag of its own.
    let response = get(&daemon, "/big.html", "Accept-Encoding: zstd, gzip\r\n");
    assert_eq!(response.header("content-encoding"), Some("zstd"));
    assert_eq!(
        response.header("content-length"),
        Some(zst.len().to_string().as_str())
    );
    assert!(response.body == zst, "the sidecar's bytes");
    assert!(decode_independently("zstd", &response.body) == site.big);
    let sidecar_tag = response.header("etag").expect("etag").to_string();
    assert!(
        sidecar_tag.starts_with('"'),
        "a sidecar's tag is strong: {sidecar_tag}"
    );
    let identity_tag = get(&daemon, "/big.html", "")
        .header("etag")
        .unwrap()
        .to_string();
    assert_ne!(sidecar_tag, identity_tag);
    assert_eq!(response.header("vary"), Some("Accept-Encoding"));
    let revalidated = get(
        &daemon,
        "/big.html",
        &format!("Accept-Encoding: zstd\r\nIf-None-Match: {sidecar_tag}\r\n"),
    );
    assert_eq!(revalidated.status, 304);

    // The client's preference picks among sidecars; without one for gzip, on the fly.
    let response = get(
        &daemon,
        "/big.html",
        "Accept-Encoding: br;q=1, zstd;q=0.5\r\n",
    );
    assert!(response.body == std::fs::read(root.join("big.html.br")).unwrap());
    let response = get(&daemon, "/big.html", "Accept-Encoding: gzip\r\n");
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    assert!(response.header("etag").unwrap().starts_with("W/"));
    assert!(decode_independently("gzip", &response.body) == site.big);

    // HEAD states the sidecar's length.
    let head = request(&daemon, "HEAD", "/big.html", "Accept-Encoding: zstd\r\n");
    assert_eq!(
        head.header("content-length"),
        Some(zst.len().to_string().as_str())
    );

    // Edit the original after the sidecar was made: the sidecar is stale, so the page is
    // compressed from the new original instead.
    let edited = page(BIG_BYTES + 10);
    std::fs::write(&original, &edited).unwrap();
    let response = get(&daemon, "/big.html", "Accept-Encoding: zstd\r\n");
    assert_eq!(response.header("content-encoding"), Some("zstd"));
    assert!(response.body != zst, "the stale sidecar was served");
    assert!(decode_independently("zstd", &response.body) == edited);
}

#[test]
fn sidecars_are_off_unless_precompressed() {
    let site = site();
    let root = site.root();
    age(&root.join("small.html"), Duration::from_secs(60));
    // A sidecar whose content is not the page: served only if sidecars are looked for.
    std::fs::write(root.join("small.html.gz"), b"not the page").unwrap();
    let daemon = site.start("compression:\n  algorithms: [\"gzip\"]\n", "");
    let response = get(&daemon, "/small.html", "Accept-Encoding: gzip\r\n");
    assert!(decode_independently("gzip", &response.body) == site.small);
}

// ---- proxied responses ----

/// A backend answering each request from `respond(target) -> (head lines, body)`.
fn backend(respond: fn(&str) -> (String, Vec<u8>)) -> Backend {
    Backend::start(move |seen| {
        let (head, body) = respond(&seen.target);
        let mut bytes = format!("HTTP/1.1 200 OK\r\n{head}\r\n").into_bytes();
        if seen.method != "HEAD" {
            bytes.extend_from_slice(&body);
        }
        Reply::Send(bytes)
    })
}

fn proxy_page() -> Vec<u8> {
    page(200_000)
}

fn proxied(target: &str) -> (String, Vec<u8>) {
    let body = proxy_page();
    let len = body.len();
    let head = match target {
        "/api/page" | "/plain/page" => format!(
            "Content-Type: text/html\r\nContent-Length: {len}\r\nETag: \"v1\"\r\nVary: Origin\r\n"
        ),
        "/api/identity" => format!(
            "Content-Type: text/html\r\nContent-Length: {len}\r\nContent-Encoding: identity\r\n\
             Accept-Ranges: bytes\r\n"
        ),
        "/api/chunked" => "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n".into(),
        "/api/encoded" => format!(
            "Content-Type: text/html\r\nContent-Encoding: gzip\r\nContent-Length: {len}\r\n"
        ),
        "/api/no-transform" => format!(
            "Content-Type: text/html\r\nCache-Control: public, no-transform\r\nContent-Length: {len}\r\n"
        ),
        "/api/image" => format!("Content-Type: image/png\r\nContent-Length: {len}\r\n"),
        "/api/small" => "Content-Type: text/html\r\nContent-Length: 10\r\n".into(),
        _ => "Content-Length: 0\r\n".into(),
    };
    let body = match target {
        "/api/chunked" => {
            let mut chunked = Vec::new();
            for piece in body.chunks(30_000) {
                chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                chunked.extend_from_slice(piece);
                chunked.extend_from_slice(b"\r\n");
            }
            chunked.extend_from_slice(b"0\r\n\r\n");
            chunked
        }
        "/api/small" => b"0123456789".to_vec(),
        _ => body,
    };
    (head, body)
}

fn proxy_daemon(backend: &Backend) -> Daemon {
    let yaml = format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n{}{COMPRESSION}\
         routes:\n  - path_prefix: \"/plain\"\n    upstream: \"default\"\n    compression: false\n  \
         - path_prefix: \"/\"\n    upstream: \"default\"\n",
        backend.yaml_entry("b", "    ")
    );
    Daemon::start(&yaml, &[])
}

#[test]
fn proxied_responses_are_compressed_on_the_way_for_every_coding() {
    let backend = backend(proxied);
    let daemon = proxy_daemon(&backend);
    let original = proxy_page();
    for coding in ["zstd", "br", "gzip"] {
        for path in ["/api/page", "/api/chunked"] {
            let response = get(&daemon, path, &format!("Accept-Encoding: {coding}\r\n"));
            assert_eq!(response.status, 200);
            assert_eq!(response.header("content-encoding"), Some(coding), "{path}");
            assert_eq!(
                response.header("transfer-encoding"),
                Some("chunked"),
                "{path}"
            );
            assert_eq!(response.header("content-length"), None, "{path}");
            assert!(response.body.len() < original.len() / 3, "{coding} {path}");
            assert!(
                decode_independently(coding, &response.body) == original,
                "{coding} {path}: decoded body differs"
            );
        }
    }
    let response = get(&daemon, "/api/page", "Accept-Encoding: gzip\r\n");
    assert_eq!(
        response.header("etag"),
        Some("W/\"v1\""),
        "a strong tag becomes weak"
    );
    // A backend's `identity` gives way to ours; a compressed body offers no byte ranges.
    let coded = get(&daemon, "/api/identity", "Accept-Encoding: gzip\r\n");
    let codings: Vec<_> = coded
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-encoding"))
        .collect();
    assert_eq!(codings.len(), 1, "{codings:?}");
    assert_eq!(coded.header("content-encoding"), Some("gzip"));
    assert_eq!(coded.header("accept-ranges"), None);
    assert!(decode_independently("gzip", &coded.body) == original);
    assert_eq!(response.header("vary"), Some("Origin, Accept-Encoding"));
    assert_eq!(
        response
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("vary"))
            .count(),
        1
    );
    // Not asked: the backend's bytes and length, its strong tag, and the Vary.
    let response = get(&daemon, "/api/page", "");
    assert_identity(&response, &original, "not asked");
    assert_eq!(
        response.header("content-length"),
        Some(original.len().to_string().as_str())
    );
    assert_eq!(response.header("etag"), Some("\"v1\""));
    assert_eq!(response.header("vary"), Some("Origin, Accept-Encoding"));
}

#[test]
fn proxied_never_compress_cases() {
    let backend = backend(proxied);
    let daemon = proxy_daemon(&backend);
    let original = proxy_page();
    let accept = "Accept-Encoding: zstd, br, gzip\r\n";
    for (path, what) in [
        ("/api/encoded", "already encoded"),
        ("/api/no-transform", "no-transform"),
        ("/api/image", "image"),
        ("/plain/page", "route opted out"),
    ] {
        let response = get(&daemon, path, accept);
        assert!(response.body == original, "{what}: the backend's bytes");
        assert_eq!(
            response.header("content-length"),
            Some(original.len().to_string().as_str()),
            "{what}"
        );
        assert_eq!(
            response.header("vary"),
            if what == "route opted out" {
                Some("Origin")
            } else {
                None
            },
            "{what}"
        );
        let coding = if what == "already encoded" {
            Some("gzip")
        } else {
            None
        };
        assert_eq!(response.header("content-encoding"), coding, "{what}");
    }
    let response = get(&daemon, "/api/small", accept);
    assert_identity(&response, b"0123456789", "under min_bytes");
    // A range request: the backend's answer as it is.
    let response = get(
        &daemon,
        "/api/page",
        &format!("{accept}Range: bytes=0-9\r\n"),
    );
    assert_identity(&response, &original, "range");
    // HEAD: the headers GET gets, no body.
    let get_response = get(&daemon, "/api/page", accept);
    let head = request(&daemon, "HEAD", "/api/page", accept);
    for name in [
        "content-encoding",
        "transfer-encoding",
        "content-length",
        "etag",
        "vary",
    ] {
        assert_eq!(head.header(name), get_response.header(name), "HEAD {name}");
    }
    // HTTP/1.0: no chunked framing, so no compression.
    let mut client = RawClient::connect(daemon.addr);
    client.send(format!("GET /api/page HTTP/1.0\r\n{accept}\r\n").as_bytes());
    assert_identity(&client.read_response(), &original, "HTTP/1.0");
}

#[test]
fn request_bodies_with_content_encoding_reach_the_backend_untouched() {
    let backend = backend(proxied);
    let daemon = proxy_daemon(&backend);
    let body: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03not-really-gzip";
    let mut client = RawClient::connect(daemon.addr);
    let mut request = format!(
        "POST /api/upload HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    client.send(&request);
    assert_eq!(client.read_response().status, 200);
    let seen = backend.seen();
    let upload = seen
        .iter()
        .find(|s| s.target == "/api/upload")
        .expect("forwarded");
    assert_eq!(upload.header("content-encoding"), Some("gzip"));
    assert_eq!(upload.body, body);
}

// ---- memory ----

/// Peak resident set of `pid`, KiB.
#[cfg(target_os = "linux")]
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[cfg(target_os = "linux")]
#[test]
fn a_1_gib_file_streams_compressed_in_bounded_memory() {
    const GIB: u64 = 1 << 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("public");
    std::fs::create_dir(&root).unwrap();
    // Sparse: a gigabyte of zeros that costs no disk.
    let file = std::fs::File::create(root.join("zeros.txt")).unwrap();
    file.set_len(GIB).unwrap();
    drop(file);
    let yaml = format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: \"{}\"\n\
         compression:\n  algorithms: [\"zstd\"]\n  level: \"fast\"\n",
        root.display()
    );
    let daemon = Daemon::start_in(dir.path(), &yaml);
    // Warm up so the baseline includes the runtime, buffers and one encoder.
    let small = get(&daemon, "/zeros.txt", "Range: bytes=0-9\r\n");
    assert_eq!(small.status, 206);
    let before = peak_rss_kib(daemon.pid());

    let mut stream = TcpStream::connect(daemon.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(b"GET /zeros.txt HTTP/1.1\r\nHost: m\r\nAccept-Encoding: zstd\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Decoded as it arrives by the zstd tool, never stored: only its length is counted.
    let mut decoder = Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the zstd tool must be installed");
    let mut decoded_out = decoder.stdout.take().unwrap();
    let counter = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let mut all_zero = true;
        loop {
            match decoded_out.read(&mut buf) {
                Ok(0) | Err(_) => return (total, all_zero),
                Ok(n) => {
                    all_zero &= buf[..n].iter().all(|&b| b == 0);
                    total += n as u64;
                }
            }
        }
    });
    let mut decoder_in = decoder.stdin.take().unwrap();
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    // The head, then the chunked body, unframed into the decoder.
    let mut wire = 0u64;
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        wire += n as u64;
        raw = unchunk_into(raw, &mut decoder_in);
        assert!(started.elapsed() < Duration::from_secs(120), "too slow");
    }
    drop(decoder_in);
    assert!(decoder.wait().unwrap().success(), "zstd decoded the stream");
    let (decoded, all_zero) = counter.join().unwrap();
    assert_eq!(decoded, GIB, "the whole file came through");
    assert!(all_zero);
    assert!(
        wire < GIB / 1000,
        "{wire} bytes on the wire for 1 GiB of zeros"
    );
    let after = peak_rss_kib(daemon.pid());
    let grown = after.saturating_sub(before);
    eprintln!(
        "1 GiB as zstd: {wire} bytes on the wire in {:?}; peak RSS {before} -> {after} KiB",
        started.elapsed()
    );
    assert!(
        grown < 64 * 1024,
        "peak RSS grew by {grown} KiB while streaming 1 GiB compressed ({before} -> {after})"
    );
}

/// Strip the response head and chunk framing from the front of `raw`, writing chunk data to
/// `out`; returns what is left (an incomplete piece).
#[cfg(target_os = "linux")]
fn unchunk_into(mut raw: Vec<u8>, out: &mut impl Write) -> Vec<u8> {
    thread_local! {
        static IN_BODY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    let mut at = 0;
    if !IN_BODY.with(|b| b.get()) {
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            return raw;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(head.contains("content-encoding: zstd"), "{head}");
        IN_BODY.with(|b| b.set(true));
        at = end + 4;
    }
    while let Some(line_end) = raw[at..].windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&raw[at..at + line_end]).unwrap(), 16)
            .expect("chunk size");
        if size == 0 {
            at = raw.len();
            break;
        }
        let data_start = at + line_end + 2;
        if raw.len() < data_start + size + 2 {
            break;
        }
        out.write_all(&raw[data_start..data_start + size]).unwrap();
        at = data_start + size + 2;
    }
    raw.drain(..at);
    raw
}

#[test]
fn cached_sidecars_are_revalidated_and_still_served_by_name() {
    let site = site();
    let root = site.root();
    let original = root.join("small.html");
    age(&original, Duration::from_secs(60));
    compress_independently("zstd", &original, &root.join("small.html.zst"));
    // The default file cache: sidecars are kept in memory like the files they sit beside.
    // Sidecars looked for on every request, so each edit below shows at once.
    let yaml = format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: \"{}\"\n  \
         sidecar_valid_ms: 0\n{COMPRESSION}",
        root.display()
    );
    let daemon = Daemon::start_in(site.dir.path(), &yaml);
    let zst = std::fs::read(root.join("small.html.zst")).unwrap();
    for _ in 0..2 {
        let response = get(&daemon, "/small.html", "Accept-Encoding: zstd\r\n");
        assert!(response.body == zst, "the sidecar, read or cached");
        assert_eq!(
            response.header("content-type"),
            Some("text/html; charset=utf-8")
        );
    }
    // Asked for by name, the sidecar is a file of its own type, not an encoded page.
    let by_name = get(&daemon, "/small.html.zst", "Accept-Encoding: zstd\r\n");
    assert!(by_name.body == zst);
    assert_eq!(by_name.header("content-encoding"), None);
    assert_ne!(
        by_name.header("content-type"),
        Some("text/html; charset=utf-8")
    );

    // The original edited: the cached sidecar is stale.
    let edited = page(SMALL_BYTES + 7);
    std::fs::write(&original, &edited).unwrap();
    let response = get(&daemon, "/small.html", "Accept-Encoding: zstd\r\n");
    assert!(decode_independently("zstd", &response.body) == edited);
    assert!(
        response.header("etag").unwrap().starts_with("W/"),
        "compressed on the fly"
    );
    // A new sidecar made (with the edited original's time): served at once, the cached one
    // revalidated away.
    compress_independently("zstd", &original, &root.join("small.html.zst"));
    let fresh = std::fs::read(root.join("small.html.zst")).unwrap();
    let response = get(&daemon, "/small.html", "Accept-Encoding: zstd\r\n");
    assert!(response.body == fresh, "the new sidecar");
    assert!(response.header("etag").unwrap().starts_with('"'));
}

#[test]
fn sidecars_are_looked_for_only_where_the_encoding_may_vary() {
    let site = site();
    let root = site.root();
    age(&root.join("photo.png"), Duration::from_secs(60));
    age(&root.join("tiny.txt"), Duration::from_secs(60));
    std::fs::write(root.join("photo.png.zst"), b"never served").unwrap();
    std::fs::write(root.join("tiny.txt.zst"), b"never served").unwrap();
    let daemon = site.start(COMPRESSION, "");
    for path in ["/photo.png", "/tiny.txt"] {
        let response = get(&daemon, path, "Accept-Encoding: zstd\r\n");
        assert_eq!(response.header("content-encoding"), None, "{path}");
        assert_eq!(response.header("vary"), None, "{path}");
        assert_ne!(response.body, b"never served", "{path}");
    }
}

/// Issue 23: a lookup of a file's sidecars is trusted for `static_files.sidecar_valid_ms`, so
/// a precompressed answer costs no `stat`. Within a long interval, a sidecar made stale by an
/// edit of the original, or deleted, is still what is served (from the file cache), as
/// nginx's `open_file_cache_valid` would.
#[test]
fn sidecar_lookups_are_trusted_for_sidecar_valid_ms() {
    let site = site();
    let root = site.root();
    let original = root.join("small.html");
    age(&original, Duration::from_secs(60));
    compress_independently("zstd", &original, &root.join("small.html.zst"));
    let zst = std::fs::read(root.join("small.html.zst")).unwrap();
    let yaml = format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: \"{}\"\n  \
         sidecar_valid_ms: 60000\n{COMPRESSION}",
        root.display()
    );
    let daemon = Daemon::start_in(site.dir.path(), &yaml);
    let first = get(&daemon, "/small.html", "Accept-Encoding: zstd\r\n");
    assert!(first.body == zst);
    std::fs::write(&original, page(SMALL_BYTES + 3)).unwrap();
    std::fs::remove_file(root.join("small.html.zst")).unwrap();
    for _ in 0..3 {
        let again = get(&daemon, "/small.html", "Accept-Encoding: zstd\r\n");
        assert!(again.body == zst, "remembered within the interval");
        assert_eq!(again.header("etag"), first.header("etag"));
        assert_eq!(again.header("vary"), Some("Accept-Encoding"));
    }
    // HEAD and a revalidation answered from the remembered sidecar as GET's would be.
    let head = request(&daemon, "HEAD", "/small.html", "Accept-Encoding: zstd\r\n");
    assert_eq!(
        head.header("content-length"),
        Some(zst.len().to_string().as_str())
    );
    assert_eq!(head.header("content-encoding"), Some("zstd"));
    assert_eq!(head.header("accept-ranges"), None);
    let tag = first.header("etag").unwrap();
    let revalidated = get(
        &daemon,
        "/small.html",
        &format!("Accept-Encoding: zstd\r\nIf-None-Match: {tag}\r\n"),
    );
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("vary"), Some("Accept-Encoding"));
    // A range is of the identity file, which is looked at as before.
    let range = get(
        &daemon,
        "/small.html",
        "Accept-Encoding: zstd\r\nRange: bytes=0-9\r\n",
    );
    assert_eq!(range.status, 206);
    assert_eq!(range.header("content-encoding"), None);
}

/// Poll `/path` with `Accept-Encoding: zstd` until `done` accepts the answer; returns it.
fn poll_until(
    daemon: &Daemon,
    path: &str,
    what: &str,
    done: impl Fn(&Response) -> bool,
) -> Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = get(daemon, path, "Accept-Encoding: zstd\r\n");
        if done(&response) {
            return response;
        }
        assert!(Instant::now() < deadline, "{path}: never saw {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The edge of `sidecar_valid_ms`: a sidecar created, made stale, replaced and removed is
/// noticed once the interval has passed, for a cached (small) and a streamed (big) file.
#[test]
fn sidecar_changes_show_after_sidecar_valid_ms() {
    const VALID: Duration = Duration::from_millis(300);
    let site = site();
    let root = site.root();
    let daemon = site.start_with(
        COMPRESSION,
        "",
        &format!("  sidecar_valid_ms: {}\n", VALID.as_millis()),
    );
    for (name, len) in [("small.html", SMALL_BYTES), ("big.html", BIG_BYTES)] {
        let path = format!("/{name}");
        let original = root.join(name);
        let sidecar = root.join(format!("{name}.zst"));
        age(&original, Duration::from_secs(60));
        // No sidecar yet: compressed on the fly (a weak tag), and that lookup remembered.
        let on_the_fly = get(&daemon, &path, "Accept-Encoding: zstd\r\n");
        assert!(
            on_the_fly.header("etag").unwrap().starts_with("W/"),
            "{name}"
        );

        // Created: served once the interval has passed.
        compress_independently("zstd", &original, &sidecar);
        let made = Instant::now();
        let zst = std::fs::read(&sidecar).unwrap();
        let served = poll_until(&daemon, &path, "the new sidecar", |r| r.body == zst);
        assert!(served.header("etag").unwrap().starts_with('"'), "{name}");
        assert!(made.elapsed() < VALID * 20, "{name}: seen late");

        // Made stale by an edit of the original: compressed from the new original.
        let edited = page(len + 5);
        std::fs::write(&original, &edited).unwrap();
        let fresh = poll_until(&daemon, &path, "the edited page", |r| {
            r.header("etag").is_some_and(|t| t.starts_with("W/"))
        });
        assert!(
            decode_independently("zstd", &fresh.body) == edited,
            "{name}"
        );

        // A sidecar made again, then removed: served, then not.
        compress_independently("zstd", &original, &sidecar);
        let zst = std::fs::read(&sidecar).unwrap();
        poll_until(&daemon, &path, "the remade sidecar", |r| r.body == zst);
        std::fs::remove_file(&sidecar).unwrap();
        let gone = poll_until(&daemon, &path, "the sidecar gone", |r| {
            r.status == 200 && r.header("etag").is_some_and(|t| t.starts_with("W/"))
        });
        assert!(decode_independently("zstd", &gone.body) == edited, "{name}");
    }
}
