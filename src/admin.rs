//! The admin listener (`admin.listen_addr`, off unless set): `GET /admin/backends` answers
//! JSON describing every upstream group and backend as the balancer sees it right now, so
//! an operator can see why traffic goes where it goes.
//!
//! Deliberately small: one request per connection, the same strict request parser as the
//! main listener, a short deadline per connection. It should listen on loopback or a private
//! interface: it has no authentication.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::balance::strategy::Strategy;
use crate::http::date::with_http_date;
use crate::http::parser::{parse_request, ParseLimits, Status};
use crate::http::request::{Method, RequestHead, Version};
use crate::http::response::{Response, ResponseBody, StatusCode};
use crate::http::writer::{encode_response_head, ConnectionState, ResponseFraming};
use crate::proxy::upstream::{Backend, Upstream};
use crate::snapshot::{SharedSnapshot, Snapshot};

/// Whole-connection deadline: an admin request is one small head.
const ADMIN_DEADLINE: Duration = Duration::from_secs(5);

/// Serve the admin endpoint on `listener` until the runtime stops.
pub fn spawn(listener: TcpListener, config: SharedSnapshot) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let config = config.clone();
            tokio::spawn(async move {
                if tokio::time::timeout(ADMIN_DEADLINE, serve(stream, &config))
                    .await
                    .is_err()
                {
                    tracing::debug!(%peer, "admin connection timed out");
                }
            });
        }
    });
}

/// Bind the admin address (at startup: a failure is fatal, like the main listener's).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Read one request, answer it, close.
async fn serve(mut stream: impl AsyncRead + AsyncWrite + Unpin, config: &SharedSnapshot) {
    let mut buf = BytesMut::with_capacity(2048);
    let limits = ParseLimits::default();
    let head = loop {
        match parse_request(&buf, &limits) {
            Ok(Status::Complete(parsed, used)) => {
                break RequestHead::new(buf.split_to(used).freeze(), parsed)
            }
            Ok(Status::Partial) => {}
            Err(_) => {
                let response = text(StatusCode::BAD_REQUEST, "bad request\n");
                return respond(&mut stream, response, Version::Http11, true).await;
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    };
    let response = route(&head, config);
    let send_body = head.method() != Method::Head;
    respond(&mut stream, response, head.version(), send_body).await
}

/// The answer to `head`.
fn route(head: &RequestHead, config: &SharedSnapshot) -> Response {
    let path = head.target().split('?').next().unwrap_or("");
    match (head.method(), path) {
        (Method::Get | Method::Head, "/admin/backends") => {
            let body = backends_json(&config.load(), Instant::now());
            Response::new(StatusCode::OK)
                .with_header("Content-Type", "application/json")
                .with_header("Cache-Control", "no-store")
                .with_body(ResponseBody::Full(Bytes::from(body)))
        }
        (_, "/admin/backends") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n").with_header("Allow", "GET, HEAD")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response {
    Response::new(status)
        .with_header("Content-Type", "text/plain")
        .with_header("Cache-Control", "no-store")
        .with_body(ResponseBody::Full(Bytes::from_static(body.as_bytes())))
}

/// Write `response` through the writer (framing, `Date`, `Server`, `Connection: close`),
/// its body too unless `send_body` is false (HEAD), and close.
async fn respond(
    stream: &mut (impl AsyncWrite + Unpin),
    response: Response,
    request_version: Version,
    send_body: bool,
) {
    let body = match response.body {
        ResponseBody::Full(bytes) => bytes,
        // The admin endpoint only builds in-memory bodies.
        ResponseBody::Empty | ResponseBody::File { .. } => Bytes::new(),
    };
    let mut out = BytesMut::with_capacity(256 + body.len());
    with_http_date(|date| {
        encode_response_head(
            &mut out,
            response.status,
            &response.headers,
            ResponseFraming::Length(body.len() as u64),
            ConnectionState {
                request_version,
                keep_alive: false,
            },
            date,
        )
    });
    if send_body {
        out.extend_from_slice(&body);
    }
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

#[derive(Serialize)]
struct Report<'a> {
    upstreams: Vec<UpstreamReport<'a>>,
}

#[derive(Serialize)]
struct UpstreamReport<'a> {
    name: &'a str,
    strategy: String,
    backends: Vec<BackendReport<'a>>,
}

#[derive(Serialize)]
struct BackendReport<'a> {
    name: &'a str,
    address: &'a str,
    /// "healthy", "ejected" or "breaker open".
    state: &'static str,
    /// Why the last failure counted (connect, timeout, failure status, ...).
    last_failure: Option<&'static str>,
    ejected_for_ms: Option<u64>,
    consecutive_failures: u32,
    ejections: u64,
    breaker: &'static str,
    in_flight: u64,
    latency_ewma_ms: f64,
    /// What the adaptive strategy would compare (lower is better).
    cost: f64,
    weight: u32,
    slow_start_factor: f64,
    requests: u64,
    errors: u64,
    idle_connections: usize,
}

/// The JSON document of `/admin/backends`.
pub fn backends_json(snapshot: &Snapshot, now: Instant) -> String {
    let upstreams = snapshot
        .upstreams
        .iter()
        .map(|u| upstream_report(u, now))
        .collect();
    serde_json::to_string_pretty(&Report { upstreams }).unwrap_or_else(|_| "{}".into())
}

fn upstream_report(upstream: &Upstream, now: Instant) -> UpstreamReport<'_> {
    UpstreamReport {
        name: &upstream.name,
        strategy: strategy_name(&upstream.strategy),
        backends: upstream
            .backends
            .iter()
            .map(|b| backend_report(b, now))
            .collect(),
    }
}

fn backend_report(backend: &Backend, now: Instant) -> BackendReport<'_> {
    let health = backend.health.snapshot(now);
    let breaker = backend.breaker.state(now);
    let state = if health.ejected_for.is_some() {
        "ejected"
    } else if !backend.breaker.allows(now) {
        "breaker open"
    } else {
        "healthy"
    };
    let factor = backend.stats.slow_start_factor(now);
    let weight = f64::from(backend.weight) * factor;
    BackendReport {
        name: &backend.name,
        address: &backend.address,
        state,
        last_failure: health.last_failure,
        ejected_for_ms: health.ejected_for.map(|d| d.as_millis() as u64),
        consecutive_failures: health.consecutive_failures,
        ejections: health.total_ejections,
        breaker: breaker.as_str(),
        in_flight: backend.stats.in_flight(),
        latency_ewma_ms: round3(backend.stats.latency_ns(now) / 1e6),
        cost: round3(backend.stats.cost(now, weight) / 1e6),
        weight: backend.weight,
        slow_start_factor: round3(factor),
        requests: backend.stats.requests(),
        errors: backend.stats.errors(),
        idle_connections: backend.pool.idle_count(),
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn strategy_name(strategy: &Strategy) -> String {
    match strategy {
        Strategy::RoundRobin => "round_robin".into(),
        Strategy::WeightedRoundRobin => "weighted_round_robin".into(),
        Strategy::LeastConnections => "least_connections".into(),
        Strategy::Random => "random".into(),
        Strategy::P2c => "p2c".into(),
        Strategy::Adaptive => "adaptive".into(),
        Strategy::ConsistentHash(key) => format!("consistent_hash({key:?})"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::snapshot::Snapshot;

    fn snapshot() -> SharedSnapshot {
        let yaml =
            "server: {}\nproxy:\n  backends:\n    - name: a\n      address: \"127.0.0.1:1\"\n";
        let config = Config::from_yaml(yaml, Path::new("test.yaml"), Path::new(".")).unwrap();
        Snapshot::shared(config)
    }

    /// The bytes the admin endpoint answers `request` with.
    async fn exchange(request: &[u8]) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let config = snapshot();
        let serving = tokio::spawn(async move { serve(server, &config).await });
        client.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        serving.await.unwrap();
        String::from_utf8(answer).unwrap()
    }

    #[tokio::test]
    async fn answers_go_through_the_writer() {
        let answer = exchange(b"GET /admin/backends HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        for field in [
            "\r\nServer: sentinel/",
            "\r\nDate: ",
            "\r\nContent-Type: application/json\r\n",
            "\r\nConnection: close",
            &format!("\r\nContent-Length: {}", body.len()),
        ] {
            assert!(head.contains(field), "{field:?} missing:\n{head}");
        }
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["upstreams"][0]["backends"][0]["name"], "a");
    }

    #[tokio::test]
    async fn head_gets_the_length_without_the_body() {
        let answer = exchange(b"HEAD /admin/backends HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(!head.contains("Content-Length: 0\r\n"), "{head}");
        assert_eq!(body, "", "HEAD must not carry the body");
    }

    #[tokio::test]
    async fn other_methods_paths_and_bad_heads_are_refused() {
        let answer = exchange(b"POST /admin/backends HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(
            answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{answer}"
        );
        assert!(answer.contains("\r\nAllow: GET, HEAD\r\n"), "{answer}");
        let answer = exchange(b"GET /elsewhere HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        let answer = exchange(b"GET /admin/backends HTTP/1.1\nHost: a\r\n\r\n").await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
    }
}
