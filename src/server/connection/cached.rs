//! The response cache on a proxied route (RFC 9111): answer from storage when a stored
//! response may be used, otherwise forward with a [`Fill`] lent to the relay (which stores
//! the response when it may) — one upstream request per key at a time (coalescing),
//! conditional revalidation of stale entries, `stale-while-revalidate` refreshes in the
//! background, `stale-if-error`, and invalidation after unsafe methods. The rules are in
//! `crate::cache`; this file only sequences them around the connection.

use std::sync::Arc;
use std::time::SystemTime;

use super::{Connection, Exchange};
use crate::cache::coalesce::Turn;
use crate::cache::directives::CacheControl;
use crate::cache::fill::{Fill, TakenOver};
use crate::cache::freshness::{may_serve_on_error, standing, Standing};
use crate::cache::key::PrimaryKey;
use crate::cache::serve::{self, find};
use crate::cache::state::CacheState;
use crate::cache::stats::{self, Event};
use crate::cache::store::StoredResponse;
use crate::config::{Config, ConnectionLimits, RouteTarget};
use crate::fault::Fault;
use crate::http::body::BodyDecoder;
use crate::http::lazy_timer::LazyTimer;
use crate::http::persistence::Persistence;
use crate::http::request::{Method, RequestHead};
use crate::http::response::{Response, StatusCode};
use crate::http::writer::ConnectionState;
use crate::proxy::forward::{forward, Client, Destination, Outcome};
use crate::snapshot::Snapshot;
use crate::transport::Transport;

/// Where a background refresh goes: the route of the request that found the stale entry,
/// looked up again in the snapshot the refresh holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct RefreshRoute {
    pub route: usize,
}

impl<S: Transport> Connection<S> {
    /// Serve a request on a route that caches.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn serve_with_cache(
        &mut self,
        head: &RequestHead,
        decoder: BodyDecoder,
        destination: &Destination<'_>,
        exchange: &mut Exchange,
        config: &Config,
        snapshot: &Arc<Snapshot>,
        cache: &CacheState,
        refresh: RefreshRoute,
    ) -> Persistence {
        let key = serve::key_of(head, destination.client_host);
        let method = head.method();
        let max_object = cache.config.max_object_bytes;
        if !matches!(method, Method::Get | Method::Head) || !decoder.is_done() {
            let mut fill = Fill::new(head, &cache.store, key.clone(), max_object);
            fill.fwd = "method";
            let persistence = self
                .forward_filling(head, decoder, destination, exchange, config, &fill)
                .await;
            if !matches!(method, Method::Options | Method::Trace) {
                invalidate_after(&cache.store, &key, &fill);
            }
            return persistence;
        }
        let request_cc = serve::request_directives(head);
        let now = SystemTime::now();
        if let Some(stored) = find(&cache.store, &key, head) {
            let age = stored.age(now);
            match standing(&stored.cache_control, &request_cc, age, stored.lifetime) {
                Standing::Fresh | Standing::StaleAccepted => {
                    stats::record(Event::Hit);
                    return self
                        .answer_stored(head, &stored, "sentinel; hit", exchange, config)
                        .await;
                }
                Standing::StaleWhileRevalidate => {
                    stats::record(Event::Stale);
                    spawn_refresh(
                        Arc::clone(snapshot),
                        refresh,
                        head.clone(),
                        destination.target.to_owned(),
                        destination.client_host.map(str::to_owned),
                        self.peer,
                        key,
                        Arc::clone(&stored),
                    );
                    return self
                        .answer_stored(
                            head,
                            &stored,
                            "sentinel; hit; detail=stale-while-revalidate",
                            exchange,
                            config,
                        )
                        .await;
                }
                Standing::MustRevalidate => {
                    let mut fill = Fill::new(head, &cache.store, key.clone(), max_object);
                    fill.fwd = "stale";
                    // The client's own conditional goes upstream as it is; ours only when it
                    // has none, so a 304 is always about the stored entry.
                    if !serve::is_conditional(head) && head.header("range").is_none() {
                        fill.request_fields = serve::conditional_fields(&stored);
                        if fill.request_fields.is_some() {
                            fill.revalidating = Some(Arc::clone(&stored));
                        }
                    }
                    if may_serve_on_error(&stored.cache_control, &request_cc, age, stored.lifetime)
                    {
                        fill.stale_on_error = Some(Arc::clone(&stored));
                    }
                    stats::record(Event::Stale);
                    // A storm on a key that just went stale sends one revalidation.
                    if method == Method::Get
                        && head.header("range").is_none()
                        && !serve::is_conditional(head)
                    {
                        return self
                            .forward_coalesced(
                                head,
                                decoder,
                                destination,
                                exchange,
                                config,
                                cache,
                                &request_cc,
                                &fill,
                            )
                            .await;
                    }
                    return self
                        .forward_filling(head, decoder, destination, exchange, config, &fill)
                        .await;
                }
            }
        }
        if request_cc.only_if_cached {
            // RFC 9111 §5.2.1.7: nothing stored that may be used, and no forwarding.
            let response = Response::new(StatusCode::GATEWAY_TIMEOUT)
                .with_header("Cache-Status", "sentinel; fwd=miss; detail=only-if-cached");
            let span = tracing::Span::current();
            return self.answer(response, head, exchange, config, &span).await;
        }
        stats::record(Event::Miss);
        let mut fill = Fill::new(head, &cache.store, key.clone(), max_object);
        // RFC 9211 §2.2: the URI is stored, but no variant matches this request's `Vary`
        // fields.
        if cache.store.has_key(&key) {
            fill.fwd = "vary-miss";
        }
        // HEAD, partial and conditional requests are forwarded as they are, not coalesced:
        // their answers (no body, 206, 304) are not stored.
        if method == Method::Head || head.header("range").is_some() || serve::is_conditional(head) {
            return self
                .forward_filling(head, decoder, destination, exchange, config, &fill)
                .await;
        }
        self.forward_coalesced(
            head,
            decoder,
            destination,
            exchange,
            config,
            cache,
            &request_cc,
            &fill,
        )
        .await
    }

    /// Forward a GET as the one request upstream for its key, or wait (bounded) for the
    /// request already there and answer from what it stored; when it stored nothing usable
    /// (uncacheable, failed, too slow), go upstream after all.
    #[allow(clippy::too_many_arguments)]
    async fn forward_coalesced(
        &mut self,
        head: &RequestHead,
        decoder: BodyDecoder,
        destination: &Destination<'_>,
        exchange: &mut Exchange,
        config: &Config,
        cache: &CacheState,
        request_cc: &CacheControl,
        fill: &Fill<'_>,
    ) -> Persistence {
        let key = &fill.key;
        match cache.coalescer.join(key) {
            Turn::Leader(guard) => {
                let persistence = self
                    .forward_filling(head, decoder, destination, exchange, config, fill)
                    .await;
                drop(guard);
                persistence
            }
            Turn::Follower(follower) => {
                follower.wait(cache.config.lock_timeout).await;
                let found = find(&cache.store, key, head).filter(|stored| {
                    let age = stored.age(SystemTime::now());
                    matches!(
                        standing(&stored.cache_control, request_cc, age, stored.lifetime),
                        Standing::Fresh | Standing::StaleAccepted
                    )
                });
                match found {
                    Some(stored) => {
                        self.answer_stored(
                            head,
                            &stored,
                            "sentinel; hit; detail=coalesced",
                            exchange,
                            config,
                        )
                        .await
                    }
                    // Not cacheable, failed, or too slow: go upstream ourselves.
                    None => {
                        self.forward_filling(head, decoder, destination, exchange, config, fill)
                            .await
                    }
                }
            }
        }
    }

    /// Forward with `fill` lent to the relay, then answer from storage when the relay left
    /// the answer to the cache (a 304 to our revalidation, a stale entry for a failure).
    async fn forward_filling(
        &mut self,
        head: &RequestHead,
        decoder: BodyDecoder,
        destination: &Destination<'_>,
        exchange: &mut Exchange,
        config: &Config,
        fill: &Fill<'_>,
    ) -> Persistence {
        let destination = Destination {
            cache: Some(fill),
            ..*destination
        };
        let mut client = self.lend_client(config, exchange);
        let outcome = Box::pin(forward(&mut client, head, decoder, &destination)).await;
        exchange.answered_by = client.answered_by.take();
        let seen = fill.seen();
        if seen.stored {
            stats::record(Event::Stored);
        }
        match outcome {
            Outcome::Responded {
                status,
                body_bytes,
                persistence,
                backend,
            } => {
                exchange.backend = Some(backend);
                exchange.persistence = exchange.persistence.and(persistence);
                match seen.taken_over {
                    Some(TakenOver::Revalidated) => {
                        match find(fill.store, &fill.key, head) {
                            Some(stored) => {
                                self.answer_stored(
                                    head,
                                    &stored,
                                    "sentinel; fwd=stale; fwd-status=304",
                                    exchange,
                                    config,
                                )
                                .await
                            }
                            // Evicted meanwhile: the stale copy is what the origin confirmed.
                            None => match &fill.revalidating {
                                Some(stored) => {
                                    self.answer_stored(
                                        head,
                                        stored,
                                        "sentinel; fwd=stale; fwd-status=304",
                                        exchange,
                                        config,
                                    )
                                    .await
                                }
                                None => Persistence::Close,
                            },
                        }
                    }
                    Some(TakenOver::StaleOnError) => match &fill.stale_on_error {
                        Some(stored) => {
                            let cache_status = format!(
                                "sentinel; fwd=stale; fwd-status={}; detail=stale-if-error",
                                status.as_u16()
                            );
                            self.answer_stored(head, stored, &cache_status, exchange, config)
                                .await
                        }
                        None => Persistence::Close,
                    },
                    None => {
                        self.log_access(config, Some(head), status.as_u16(), body_bytes, exchange);
                        exchange.persistence
                    }
                }
            }
            Outcome::Failed {
                error,
                persistence,
                backend,
            } => {
                exchange.persistence = exchange.persistence.and(persistence);
                exchange.backend = backend;
                let span = tracing::Span::current();
                if let Some(stored) = &fill.stale_on_error {
                    span.in_scope(|| Fault::Forward(error).log(self.peer, Some(head.target())));
                    return self
                        .answer_stored(
                            head,
                            stored,
                            "sentinel; fwd=stale; detail=stale-if-error",
                            exchange,
                            config,
                        )
                        .await;
                }
                self.refuse(Fault::Forward(error), head, exchange, config, &span)
                    .await
            }
            Outcome::ClientGone => {
                self.log_access(
                    config,
                    Some(head),
                    super::CLIENT_CLOSED_REQUEST,
                    0,
                    exchange,
                );
                Persistence::Close
            }
        }
    }

    /// Answer from `stored`, log it, and say what becomes of the connection.
    async fn answer_stored(
        &mut self,
        head: &RequestHead,
        stored: &StoredResponse,
        cache_status: &str,
        exchange: &Exchange,
        config: &Config,
    ) -> Persistence {
        self.write_buf.clear();
        let connection = ConnectionState {
            request_version: exchange.version,
            keep_alive: exchange.persistence.is_keep_alive(),
        };
        let part = serve::encode_answer(
            &mut self.write_buf,
            head,
            stored,
            SystemTime::now(),
            cache_status,
            &exchange.request_id,
            connection,
        );
        let status = self
            .write_buf
            .get(9..12)
            .and_then(|code| std::str::from_utf8(code).ok())
            .and_then(|code| code.parse().ok())
            .unwrap_or(stored.status);
        let body = match part {
            Some(part) if head.method() != Method::Head => &stored.body[part.start..part.end],
            _ => &[][..],
        };
        let write_timeout = config.server.limits.write_timeout;
        // A small body goes behind the head in one write, as local answers do.
        let result = if body.len() <= super::INLINE_BODY_BYTES {
            self.write_buf.extend_from_slice(body);
            self.flush_write_buf(write_timeout).await
        } else {
            self.flush_with_body(body, write_timeout).await
        };
        if let Err(error) = &result {
            tracing::debug!(%error, "response write failed");
        }
        let body_bytes = if result.is_ok() { body.len() as u64 } else { 0 };
        self.log_access(config, Some(head), status, body_bytes, exchange);
        exchange
            .persistence
            .and(Persistence::keep_if(result.is_ok()))
    }
}

/// RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target URI and
/// the `Location` and `Content-Location` URIs on the same host.
fn invalidate_after(store: &crate::cache::store::Store, key: &PrimaryKey, fill: &Fill<'_>) {
    let seen = fill.seen();
    if !seen.status.is_some_and(|s| (200..400).contains(&s)) {
        return;
    }
    store.invalidate(key);
    for location in &seen.locations {
        if let Some(target) = same_host_target(location, key.host()) {
            store.invalidate(&PrimaryKey::new(key.host(), &target));
        }
    }
}

/// The target of `location` when it names the same host: an absolute path, or an absolute
/// URI whose authority is the host (a URI on another host must not be invalidated, §4.4).
fn same_host_target(location: &str, host: &str) -> Option<String> {
    if location.starts_with('/') {
        return Some(location.to_owned());
    }
    let rest = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("https://"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    authority
        .eq_ignore_ascii_case(host)
        .then(|| path.to_owned())
}

/// A client stream for background refreshes: whatever the relay writes is dropped, nothing
/// is ever read.
struct Discard;

impl tokio::io::AsyncRead for Discard {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Discard {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl Transport for Discard {}

/// `stale-while-revalidate`: refresh `stored` in the background, once per key at a time
/// (a refresh already in flight is the one the others wait for).
#[allow(clippy::too_many_arguments)]
fn spawn_refresh(
    snapshot: Arc<Snapshot>,
    route: RefreshRoute,
    head: RequestHead,
    target: String,
    client_host: Option<String>,
    peer: std::net::SocketAddr,
    key: PrimaryKey,
    stored: Arc<StoredResponse>,
) {
    let Some(cache) = snapshot.cache.clone() else {
        return;
    };
    let Turn::Leader(guard) = cache.coalescer.join(&key) else {
        return;
    };
    tokio::spawn(async move {
        let _guard = guard;
        let config = &snapshot.config;
        let Some(route_config) = config.routes.get(route.route) else {
            return;
        };
        let RouteTarget::Upstream(index) = route_config.target else {
            return;
        };
        let Some(upstream) = snapshot.upstream(index) else {
            return;
        };
        let mut fill = Fill::new(&head, &cache.store, key, cache.config.max_object_bytes);
        fill.fwd = "stale";
        if !serve::is_conditional(&head) {
            fill.request_fields = serve::conditional_fields(&stored);
            if fill.request_fields.is_some() {
                fill.revalidating = Some(stored);
            }
        }
        let destination = Destination {
            upstream,
            route: route_config,
            target: &target,
            client_host: client_host.as_deref(),
            response_limits: config
                .proxy
                .as_ref()
                .map_or(super::DEFAULT_RESPONSE_LIMITS, |p| p.response_limits),
            backend_header: None,
            cache: Some(&fill),
            // A refresh nobody asked for carries no client's ID, and stores the body as the
            // origin sent it.
            request_id: None,
            compression: None,
            // A background refresh answers no client: no plugin sees it.
            response_hook: None,
        };
        let mut stream = Discard;
        let mut read_buf = bytes::BytesMut::new();
        let mut timer = LazyTimer::default();
        let limits: &ConnectionLimits = &config.server.limits;
        let mut client = Client {
            stream: &mut stream,
            read_buf: &mut read_buf,
            peer,
            limits,
            keep_alive: false,
            response_timer: &mut timer,
            answered_by: None,
        };
        let outcome = forward(
            &mut client,
            &head,
            BodyDecoder::Length { remaining: 0 },
            &destination,
        )
        .await;
        tracing::debug!(?outcome, target = %target, stored = fill.seen().stored, "background refresh done");
    });
}
