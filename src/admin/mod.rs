//! The admin listener (`admin.listen_addr`, off unless set): `GET /metrics` (Prometheus
//! text or OpenMetrics), the probes `GET /healthz` and `GET /readyz`, and `GET
//! /admin/backends`, JSON describing every upstream group and backend as the balancer sees
//! it right now, so an operator can see why traffic goes where it goes.
//!
//! Deliberately small: one request per connection, the same strict request parser and
//! response writer as the main listener, a deadline per connection
//! ([`ADMIN_CONNECTION_TIMEOUT`]) and a cap on connections (`admin.max_connections`: more
//! wait in the backlog). A reload may start it, move it or stop it. It keeps answering
//! while the server drains (`/readyz` says 503 then) and stops after. With `admin.token`
//! set, every endpoint but the probes and the dashboard's data-free page wants that bearer
//! token; the config refuses an address off loopback without one.

mod auth;
mod backend_gauges;
mod backends;
mod cache;
mod dashboard;
mod exposition;
mod plugin_counters;
mod rate_limit_counters;

pub use auth::tokens_match;
pub use backends::backends_json;
pub use exposition::{Format, OPENMETRICS_CONTENT_TYPE};

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::http::date::with_http_date;
use crate::http::parser::{parse_request, ParseLimits, Status};
use crate::http::request::{Method, RequestHead, Version};
use crate::http::response::{Response, ResponseBody, StatusCode};
use crate::http::writer::{encode_response_head, ConnectionState, ResponseFraming};
use crate::limits::{ADMIN_CONNECTION_TIMEOUT, DEFAULT_ADMIN_MAX_CONNECTIONS};
use crate::metrics::{Listener, OpenConnection};
use crate::server::{is_per_connection, ACCEPT_ERROR_BACKOFF};
use crate::snapshot::SharedSnapshot;
use dashboard::{History, SharedHistory};

/// Start the admin task. It serves on `initial` (the startup address, already bound) when
/// there is one, then on each listening socket `moves` hands it (a reload bound it, so a
/// failed bind rejected the reload instead): the new socket is listening before the old
/// one closes; `None` stops serving. `/readyz` answers 503 from the moment `draining`
/// turns true (the server stopped accepting). When `stop` turns true the listening socket
/// closes at once, connections waiting for their request close, an answer being written
/// finishes, and the task ends after the last connection (each has
/// [`ADMIN_CONNECTION_TIMEOUT`] in all). Await the handle to wait for that.
pub fn spawn(
    initial: Option<std::net::TcpListener>,
    moves: mpsc::UnboundedReceiver<Option<std::net::TcpListener>>,
    config: SharedSnapshot,
    draining: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let cap = max_connections(&config);
    let history: SharedHistory = Arc::new(std::sync::Mutex::new(History::new(1)));
    let sampler = dashboard::spawn_sampler(Arc::clone(&config), Arc::clone(&history), stop.clone());
    let admin = AdminLoop {
        history,
        sampler: Some(sampler),
        listener: None,
        moves,
        moves_open: true,
        config,
        permits: Arc::new(Semaphore::new(cap)),
        cap,
        draining,
        stop,
    };
    tokio::spawn(admin.run(initial).instrument(tracing::debug_span!("admin")))
}

/// The cap the current config sets (the default when the admin section is gone: a moment
/// before a stop arrives).
fn max_connections(config: &SharedSnapshot) -> usize {
    config
        .load()
        .config
        .admin
        .as_ref()
        .map_or(DEFAULT_ADMIN_MAX_CONNECTIONS, |admin| admin.max_connections)
}

/// The admin accept loop and the connections it accepted.
struct AdminLoop {
    /// The dashboard's samples, filled by `sampler`.
    history: SharedHistory,
    /// Ends when `stop` turns true, like the loop.
    sampler: Option<JoinHandle<()>>,
    listener: Option<TcpListener>,
    moves: mpsc::UnboundedReceiver<Option<std::net::TcpListener>>,
    /// False once every sender is gone: no move can come any more.
    moves_open: bool,
    config: SharedSnapshot,
    permits: Arc<Semaphore>,
    /// The size `permits` was made with.
    cap: usize,
    /// True once the server drains: not ready for new traffic.
    draining: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
}

impl AdminLoop {
    async fn run(mut self, initial: Option<std::net::TcpListener>) {
        if let Some(initial) = initial {
            self.move_to(Some(initial));
        }
        // Every connection task holds a sender; the receiver sees the end of the last one.
        let (drain_tx, mut drained) = mpsc::channel::<()>(1);
        let shutdown = stopped(self.stop.clone());
        tokio::pin!(shutdown);
        loop {
            self.follow_cap();
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                moved = self.moves.recv(), if self.moves_open => {
                    match moved {
                        Some(next) => self.move_to(next),
                        None => self.moves_open = false,
                    }
                    continue;
                }
                accepted = accept_within_cap(self.listener.as_ref(), &self.permits) => accepted,
            };
            match accepted {
                (permit, Ok((stream, peer))) => {
                    let open = OpenConnection::new(Listener::Admin);
                    let state = AdminState {
                        config: Arc::clone(&self.config),
                        draining: self.draining.clone(),
                        history: Arc::clone(&self.history),
                    };
                    let stop = self.stop.clone();
                    let drain = drain_tx.clone();
                    let connection = async move {
                        let served = tokio::time::timeout(
                            ADMIN_CONNECTION_TIMEOUT,
                            serve(stream, &state, stop),
                        );
                        if served.await.is_err() {
                            tracing::debug!("admin connection timed out");
                        }
                        drop(permit);
                        drop(open);
                        drop(drain);
                    };
                    tokio::spawn(connection.instrument(tracing::debug_span!("conn", %peer)));
                }
                (_, Err(error)) if is_per_connection(&error) => {
                    tracing::debug!(%error, "accepted admin connection failed");
                }
                (_, Err(error)) => {
                    tracing::warn!(%error, "admin accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
        if let Some(listener) = self.listener.take() {
            drop(listener);
            tracing::info!("admin listener closed");
        }
        drop(drain_tx);
        // Bounded anyway: each connection ends within its own deadline.
        let _ = tokio::time::timeout(ADMIN_CONNECTION_TIMEOUT, drained.recv()).await;
        if let Some(sampler) = self.sampler.take() {
            // It saw the same stop; a sample in progress takes microseconds.
            let _ = sampler.await;
        }
    }

    /// Serve on `next` from now on (closing the current socket after `next` is in place),
    /// or on nothing when `None`. Connections already accepted carry on.
    fn move_to(&mut self, next: Option<std::net::TcpListener>) {
        let Some(next) = next else {
            if self.listener.take().is_some() {
                tracing::info!("admin listener stopped");
            }
            return;
        };
        match TcpListener::from_std(next) {
            Ok(next) => {
                let addr = next
                    .local_addr()
                    .map_or_else(|e| e.to_string(), |a| a.to_string());
                tracing::info!(%addr, "admin listening");
                self.listener = Some(next);
            }
            Err(error) => {
                tracing::error!(%error, "cannot use the new admin socket; keeping the old one");
            }
        }
    }

    /// A reload may have changed `admin.max_connections`: connections accepted from now on
    /// count against the new cap, those already open against the old one (they end within
    /// their deadline).
    fn follow_cap(&mut self) {
        let cap = max_connections(&self.config);
        if cap != self.cap {
            self.permits = Arc::new(Semaphore::new(cap));
            self.cap = cap;
        }
    }
}

/// The next connection on `listener` once a permit is free; never, without a listener.
async fn accept_within_cap(
    listener: Option<&TcpListener>,
    permits: &Arc<Semaphore>,
) -> (
    Option<OwnedSemaphorePermit>,
    std::io::Result<(TcpStream, std::net::SocketAddr)>,
) {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    // A closed semaphore never happens (nothing closes it); treat it as no cap.
    let permit = Arc::clone(permits).acquire_owned().await.ok();
    (permit, listener.accept().await)
}

/// Resolves once `stop` says true (or its sender is gone, which also means stop).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|&stop| stop).await;
}

/// What an admin request is answered from.
struct AdminState {
    config: SharedSnapshot,
    draining: watch::Receiver<bool>,
    history: SharedHistory,
}

/// Read one request, answer it, close. A connection still waiting for its request when
/// `stop` turns true is closed without an answer.
async fn serve(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    state: &AdminState,
    stop: watch::Receiver<bool>,
) {
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
        let read = tokio::select! {
            read = stream.read_buf(&mut buf) => read,
            () = stopped(stop.clone()) => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    };
    let response = route(&head, state);
    let send_body = head.method() != Method::Head;
    respond(&mut stream, response, head.version(), send_body).await
}

/// The endpoints, by path.
const ENDPOINTS: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/admin/backends",
    dashboard::FEED_PATH,
];

/// The answer to `head`.
fn route(head: &RequestHead, state: &AdminState) -> Response {
    let path = head.target().split('?').next().unwrap_or("");
    let snapshot = state.config.load_full();
    // The probes, and the dashboard's page and assets: they carry no data (the page asks
    // for the token and sends it with every poll of its feed).
    let page = dashboard::asset(path);
    let is_public = matches!(path, "/healthz" | "/readyz") || page.is_some();
    let token = snapshot
        .config
        .admin
        .as_ref()
        .and_then(|a| a.token.as_ref());
    if !is_public && !auth::is_authorized(head, token) {
        return text(StatusCode::UNAUTHORIZED, "unauthorized\n")
            .with_header("WWW-Authenticate", "Bearer");
    }
    if cache::owns(path) {
        return cache::route(head, path, &snapshot);
    }
    if !ENDPOINTS.contains(&path) && page.is_none() {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !matches!(head.method(), Method::Get | Method::Head) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n")
            .with_header("Allow", "GET, HEAD");
    }
    if let Some(page) = page {
        return dashboard::asset_response(page);
    }
    match path {
        // The process answers, so it serves (an orchestrator restarts it when it does not).
        "/healthz" => text(StatusCode::OK, "ok\n"),
        // Listeners are bound and the config loaded before this task starts; draining
        // tells a load balancer to stop sending while in-flight requests finish.
        "/readyz" if *state.draining.borrow() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/metrics" => {
            let format = Format::negotiate(head.header("accept"));
            match exposition::render(snapshot, format) {
                Ok(body) => Response::new(StatusCode::OK)
                    .with_header("Content-Type", format.content_type())
                    .with_header("Cache-Control", "no-store")
                    .with_body(ResponseBody::Full(Bytes::from(body))),
                Err(_) => {
                    tracing::error!("cannot encode the metrics");
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot encode the metrics\n",
                    )
                }
            }
        }
        dashboard::FEED_PATH => {
            let since = dashboard::since(head.target());
            let history = state.history.lock().unwrap_or_else(|p| p.into_inner());
            let json = dashboard::dashboard_json(&snapshot, &history, since, Instant::now());
            drop(history);
            dashboard::feed_response(json)
        }
        // `/admin/backends`, the one endpoint left.
        _ => {
            let body = backends_json(&snapshot, Instant::now());
            Response::new(StatusCode::OK)
                .with_header("Content-Type", "application/json")
                .with_header("Cache-Control", "no-store")
                .with_body(ResponseBody::Full(Bytes::from(body)))
        }
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
        ResponseBody::Empty | ResponseBody::File { .. } | ResponseBody::Stream(_) => Bytes::new(),
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::snapshot::Snapshot;

    fn snapshot(admin: &str) -> SharedSnapshot {
        let yaml = format!(
            "server: {{}}\nproxy:\n  backends:\n    - name: a\n      address: \"127.0.0.1:1\"\n{admin}"
        );
        let config = Config::from_yaml(&yaml, Path::new("test.yaml"), Path::new(".")).unwrap();
        Snapshot::shared(config)
    }

    /// The bytes the admin endpoint answers `request` with.
    async fn exchange(request: &[u8]) -> String {
        exchange_with("", false, request).await
    }

    /// The bytes the admin endpoint answers `request` with, under the `admin` section
    /// `admin` and while the server is `draining` or not.
    async fn exchange_with(admin: &str, draining: bool, request: &[u8]) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let state = AdminState {
            config: snapshot(admin),
            draining: watch::channel(draining).1,
            history: Arc::new(std::sync::Mutex::new(History::new(4))),
        };
        let (_stop_tx, stop) = watch::channel(false);
        let serving = tokio::spawn(async move { serve(server, &state, stop).await });
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

    const WITH_TOKEN: &str = "admin:\n  listen_addr: \"127.0.0.1:0\"\n  token: \"s3cret-token\"\n";

    #[tokio::test]
    async fn the_token_guards_everything_but_the_probes() {
        for path in [
            "/metrics",
            "/admin/backends",
            "/admin/dashboard.json",
            "/elsewhere",
        ] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
            let answer = exchange_with(WITH_TOKEN, false, request.as_bytes()).await;
            assert!(
                answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
                "{answer}"
            );
            assert!(
                answer.contains("\r\nWWW-Authenticate: Bearer\r\n"),
                "{answer}"
            );
            let wrong = format!(
                "GET {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret-tokex\r\n\r\n"
            );
            let answer = exchange_with(WITH_TOKEN, false, wrong.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
        }
        let right =
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret-token\r\n\r\n";
        let answer = exchange_with(WITH_TOKEN, false, right).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        let twice = b"GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret-token\r\n\
                      Authorization: Bearer s3cret-token\r\n\r\n";
        let answer = exchange_with(WITH_TOKEN, false, twice).await;
        assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
        // The probes, and the dashboard's page and assets (no data in them).
        for probe in [
            "/healthz",
            "/readyz",
            "/",
            "/dashboard.js",
            "/dashboard.css",
        ] {
            let request = format!("GET {probe} HTTP/1.1\r\nHost: a\r\n\r\n");
            let answer = exchange_with(WITH_TOKEN, false, request.as_bytes()).await;
            assert!(
                answer.starts_with("HTTP/1.1 200 OK\r\n"),
                "{probe}: {answer}"
            );
        }
    }

    #[tokio::test]
    async fn readiness_follows_the_drain_and_health_does_not() {
        let readyz = b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n";
        let healthz = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(exchange_with("", false, readyz)
            .await
            .starts_with("HTTP/1.1 200 "));
        let draining = exchange_with("", true, readyz).await;
        assert!(draining.starts_with("HTTP/1.1 503 "), "{draining}");
        assert!(exchange_with("", true, healthz)
            .await
            .starts_with("HTTP/1.1 200 "));
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text_unless_openmetrics_is_asked_for() {
        let plain = exchange(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(
            plain.contains("\r\nContent-Type: text/plain; version=0.0.4"),
            "{plain}"
        );
        assert!(plain.contains("\nsentinel_backend_healthy{upstream=\"default\",backend=\"a\"} "));
        assert!(!plain.contains("# EOF"));
        let open = exchange(
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text\r\n\r\n",
        )
        .await;
        assert!(
            open.contains("\r\nContent-Type: application/openmetrics-text;"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
    }
}
