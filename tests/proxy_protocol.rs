//! Behind an L4 balancer, through the real binary: the PROXY protocol header (v1 and v2,
//! valid, `LOCAL`, truncated, missing, oversized, from an untrusted peer) decides the client
//! address seen in the access log and by a backend (`X-Forwarded-For`), or closes the
//! connection and counts why; and `server.max_connections_per_ip` at its edge.
#![cfg(unix)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::backend::{ok, Backend, Reply};
use common::daemon::{addr_in, Daemon};

const WAIT: Duration = Duration::from_secs(5);

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Sentinel proxying everything to `backend`, with `server_keys` under `server:` and an
/// admin listener for `/metrics`.
fn start(backend: &Backend, server_keys: &str) -> (Daemon, SocketAddr) {
    let yaml = format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\n{server_keys}\
         proxy:\n  backends:\n{backends}\
         admin:\n  listen_addr: \"127.0.0.1:0\"\n\
         logging:\n  level: info\n  access_log: true\n",
        backends = backend.yaml_entry("b0", "    "),
    );
    let daemon = Daemon::start(&yaml, &[]);
    let admin = addr_in(&daemon.wait_for_log("admin listening", WAIT));
    (daemon, admin)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream
}

const REQUEST: &[u8] = b"GET /who HTTP/1.1\r\nHost: site.test\r\n\r\n";

/// Read one response's head and a body of `Content-Length`, as text.
fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "no whole response: {text:?}");
        let n = stream.read(&mut buf).expect("read a response");
        assert!(n > 0, "closed mid-response: {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// The server closed the connection without a byte of response.
fn assert_closed_without_response(stream: &mut TcpStream) {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(n) => panic!(
            "expected a close, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("expected a close, got {e}"),
    }
}

fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn v2_inet6(source: &str, port: u16) -> Vec<u8> {
    let source: std::net::Ipv6Addr = source.parse().unwrap();
    let mut body = source.octets().to_vec();
    body.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&port.to_be_bytes());
    body.extend_from_slice(&80u16.to_be_bytes());
    // A TLV the server skips (PP2_TYPE_AUTHORITY).
    body.extend_from_slice(&[0x02, 0x00, 0x04]);
    body.extend_from_slice(b"a.b.");
    v2(1, 0x21, &body)
}

/// The scraped `/metrics` value of `series` (a full series name with labels), or 0.
fn metric(admin: SocketAddr, series: &str) -> u64 {
    let mut stream = connect(admin);
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Wait until the counter `series` reaches `at_least`.
fn wait_for_metric(admin: SocketAddr, series: &str, at_least: u64) {
    let deadline = Instant::now() + WAIT;
    while metric(admin, series) < at_least {
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn echo_backend() -> Backend {
    Backend::start(|seen| {
        let xff = seen.header("x-forwarded-for").unwrap_or("-").to_owned();
        Reply::Send(ok(&xff))
    })
}

#[test]
fn a_v1_header_is_the_client_address_for_the_backend_and_the_access_log() {
    let backend = echo_backend();
    let (daemon, _admin) = start(&backend, "  proxy_protocol: true\n");
    let mut stream = connect(daemon.addr);
    // Header and request in one write: the bytes behind the header must reach the parser.
    let mut bytes = b"PROXY TCP4 203.0.113.9 10.0.0.1 51234 80\r\n".to_vec();
    bytes.extend_from_slice(REQUEST);
    stream.write_all(&bytes).unwrap();
    let response = read_response(&mut stream);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("\r\n\r\n203.0.113.9"), "{response}");
    // A second request on the same connection is the same client.
    stream.write_all(REQUEST).unwrap();
    assert!(read_response(&mut stream).ends_with("203.0.113.9"));
    daemon.wait_for_log("client=203.0.113.9:51234", WAIT);
}

#[test]
fn a_v2_header_sent_in_pieces_with_tlvs_is_the_client_address() {
    let backend = echo_backend();
    let (daemon, _admin) = start(&backend, "  proxy_protocol: true\n");
    let mut stream = connect(daemon.addr);
    let header = v2_inet6("2001:db8::7", 4000);
    // The header arrives over three segments, the request behind it: the reader waits for
    // the rest without consuming what it has seen.
    stream.write_all(&header[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    stream.write_all(&header[5..20]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut rest = header[20..].to_vec();
    rest.extend_from_slice(REQUEST);
    stream.write_all(&rest).unwrap();
    let response = read_response(&mut stream);
    assert!(response.ends_with("2001:db8::7"), "{response}");
    daemon.wait_for_log("client=[2001:db8::7]:4000", WAIT);
}

#[test]
fn a_local_header_keeps_the_tcp_peer_as_the_client() {
    let backend = echo_backend();
    let (daemon, _admin) = start(&backend, "  proxy_protocol: true\n");
    for header in [v2(0, 0x00, &[]), b"PROXY UNKNOWN\r\n".to_vec()] {
        let mut stream = connect(daemon.addr);
        let mut bytes = header;
        bytes.extend_from_slice(REQUEST);
        stream.write_all(&bytes).unwrap();
        assert!(read_response(&mut stream).ends_with("127.0.0.1"));
    }
}

#[test]
fn bad_headers_close_the_connection_and_are_counted_by_reason() {
    let backend = echo_backend();
    let (daemon, admin) = start(
        &backend,
        "  proxy_protocol: true\n  proxy_protocol_timeout_ms: 300\n",
    );
    let cases: [(&str, Vec<u8>); 4] = [
        ("missing", REQUEST.to_vec()),
        (
            "malformed",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n".to_vec(),
        ),
        ("oversized", {
            let mut h = V2_SIGNATURE.to_vec();
            h.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
            h
        }),
        ("malformed", {
            let mut h = b"PROXY TCP4 ".to_vec();
            h.extend_from_slice(&[0xff; 8]);
            h.extend_from_slice(b"\r\n");
            h
        }),
    ];
    for (reason, bytes) in &cases {
        let mut stream = connect(daemon.addr);
        stream.write_all(bytes).unwrap();
        assert_closed_without_response(&mut stream);
        let series = format!("sentinel_proxy_protocol_errors_total{{reason=\"{reason}\"}}");
        wait_for_metric(admin, &series, 1);
    }
    // Truncated: half a header, then the client leaves.
    let mut stream = connect(daemon.addr);
    stream.write_all(b"PROXY TCP4 203.0.113.9").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_closed_without_response(&mut stream);
    wait_for_metric(
        admin,
        "sentinel_proxy_protocol_errors_total{reason=\"truncated\"}",
        1,
    );
    // Half a header and silence: closed at the header's own deadline, well before the
    // request head's (10 s).
    let started = Instant::now();
    let mut stream = connect(daemon.addr);
    stream.write_all(&V2_SIGNATURE[..8]).unwrap();
    assert_closed_without_response(&mut stream);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    wait_for_metric(
        admin,
        "sentinel_proxy_protocol_errors_total{reason=\"timeout\"}",
        1,
    );
    // Nothing of it reached the backend or the access log.
    assert_eq!(backend.request_count(), 0);
    assert_eq!(daemon.count_log("sentinel::access"), 0);
}

#[test]
fn a_header_from_an_untrusted_peer_closes_the_connection() {
    let backend = echo_backend();
    let (daemon, admin) = start(
        &backend,
        "  proxy_protocol: true\n  proxy_protocol_trusted: [\"10.0.0.0/8\", \"2001:db8::/32\"]\n",
    );
    let mut stream = connect(daemon.addr);
    let mut bytes = b"PROXY TCP4 203.0.113.9 10.0.0.1 51234 80\r\n".to_vec();
    bytes.extend_from_slice(REQUEST);
    stream.write_all(&bytes).unwrap();
    assert_closed_without_response(&mut stream);
    wait_for_metric(
        admin,
        "sentinel_proxy_protocol_errors_total{reason=\"untrusted\"}",
        1,
    );
    assert_eq!(backend.request_count(), 0);
}

/// Open a connection and have one request answered on it, so it is surely admitted.
fn served(addr: SocketAddr, header: &[u8]) -> TcpStream {
    let mut stream = connect(addr);
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(REQUEST);
    stream.write_all(&bytes).unwrap();
    let response = read_response(&mut stream);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    stream
}

#[test]
fn the_per_ip_cap_admits_n_refuses_one_more_and_a_freed_slot_lets_one_in() {
    let backend = echo_backend();
    let (daemon, admin) = start(&backend, "  max_connections_per_ip: 3\n");
    let mut open: Vec<_> = (0..3).map(|_| served(daemon.addr, b"")).collect();
    let mut refused = connect(daemon.addr);
    refused.write_all(REQUEST).unwrap();
    assert_closed_without_response(&mut refused);
    wait_for_metric(
        admin,
        "sentinel_connections_refused_total{reason=\"per_ip_cap\"}",
        1,
    );
    // One closes; its slot goes back once the server has seen the close.
    drop(open.pop());
    let deadline = Instant::now() + WAIT;
    let fourth = loop {
        let mut stream = connect(daemon.addr);
        stream.write_all(REQUEST).unwrap();
        let mut buf = [0u8; 12];
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => break stream,
            _ => {}
        }
        assert!(Instant::now() < deadline, "the freed slot never came back");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(fourth);
    assert_eq!(open.len(), 2);
}

#[test]
fn behind_proxy_protocol_the_cap_counts_the_carried_address() {
    let backend = echo_backend();
    let (daemon, _admin) = start(
        &backend,
        "  proxy_protocol: true\n  max_connections_per_ip: 1\n",
    );
    // Both come from the balancer's address (127.0.0.1), for two different clients.
    let _first = served(daemon.addr, b"PROXY TCP4 203.0.113.1 10.0.0.1 1000 80\r\n");
    let _second = served(daemon.addr, b"PROXY TCP4 203.0.113.2 10.0.0.1 1000 80\r\n");
    // A second connection of the first client is over its cap.
    let mut again = connect(daemon.addr);
    again
        .write_all(b"PROXY TCP4 203.0.113.1 10.0.0.1 1001 80\r\n")
        .unwrap();
    again.write_all(REQUEST).unwrap();
    assert_closed_without_response(&mut again);
}

/// Two clients behind one balancer have rate limits of their own: the key is the PROXY
/// address, not the balancer's.
#[test]
fn the_rate_limit_key_is_the_carried_address() {
    let backend = echo_backend();
    let yaml = format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\n  proxy_protocol: true\n\
         proxy:\n  backends:\n{backends}\
         rate_limit:\n  requests_per_second: 1\n  burst: 0\n\
         logging:\n  level: info\n  access_log: true\n",
        backends = backend.yaml_entry("b0", "    "),
    );
    let daemon = Daemon::start(&yaml, &[]);
    let status = |source: &str| {
        let mut stream = connect(daemon.addr);
        let mut bytes = format!("PROXY TCP4 {source} 10.0.0.1 1000 80\r\n").into_bytes();
        bytes.extend_from_slice(REQUEST);
        stream.write_all(&bytes).unwrap();
        read_response(&mut stream)[9..12].to_owned()
    };
    assert_eq!(status("203.0.113.1"), "200");
    assert_eq!(status("203.0.113.1"), "429");
    // Another client through the same balancer is not limited by the first.
    assert_eq!(status("203.0.113.2"), "200");
    daemon.wait_for_log("rate_limit_key=203.0.113.2", WAIT);
}
