//! The admin listener (`admin.listen_addr`, off unless set): `GET /admin/backends` answers
//! JSON describing every upstream group and backend as the balancer sees it right now, so
//! an operator can see why traffic goes where it goes.
//!
//! Deliberately small: one request per connection, the same strict request parser as the
//! main listener, a short deadline per connection. It should listen on loopback or a private
//! interface: it has no authentication.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::balance::strategy::Strategy;
use crate::http::parser::{parse_request, ParseLimits, Status};
use crate::http::request::{Method, RequestHead};
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

async fn serve(mut stream: TcpStream, config: &SharedSnapshot) {
    let mut buf = BytesMut::with_capacity(2048);
    let limits = ParseLimits::default();
    let head = loop {
        match parse_request(&buf, &limits) {
            Ok(Status::Complete(parsed, used)) => {
                break RequestHead::new(buf.split_to(used).freeze(), parsed)
            }
            Ok(Status::Partial) => {}
            Err(_) => return respond(&mut stream, 400, "text/plain", "bad request\n").await,
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    };
    let path = head.target().split('?').next().unwrap_or("");
    match (head.method(), path) {
        (Method::Get | Method::Head, "/admin/backends") => {
            let body = backends_json(&config.load(), Instant::now());
            respond(&mut stream, 200, "application/json", &body).await
        }
        (_, "/admin/backends") => respond(&mut stream, 405, "text/plain", "GET only\n").await,
        _ => respond(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

async fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &str) {
    let reason = crate::http::response::StatusCode::from_u16(status).map_or("", |s| s.reason());
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
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
