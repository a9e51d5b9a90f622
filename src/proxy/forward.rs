//! Forwarding one request: pick a backend, send the rewritten head and stream the body,
//! read the response head, stream the response body to the client, and return the upstream
//! connection to its pool when it is clean. Failover, retries and timeouts live here.
//!
//! Memory per request is bounded by the buffers below whatever the body sizes: bodies are
//! relayed piece by piece, and a piece is only read after the previous one was written, so a
//! slow reader on either side slows the other down (backpressure) instead of filling memory.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::AsyncReadExt;

use super::exchange::RELAY_BUFFER_BYTES;
pub use super::exchange::{AnsweredBy, Client, Destination, ForwardError, Outcome, UpstreamError};
use super::headers::{encode_request_head, UpstreamRequest};
use super::log_limit::admit_failure;
use super::relay::relay_response;
use super::stream::{ConnectError, UpstreamStream};
use super::tunnel::tunnel;
use super::upstream::{Attempt, Pick, Upstream};
use crate::balance::strategy::{hash_bytes, HashKey};
use crate::buffer_pool;
use crate::http::body::{BodyDecoder, Step};
use crate::http::error::BodyError;
use crate::http::lazy_timer::LazyTimer;
use crate::http::persistence::Persistence;
use crate::http::request::{RequestHead, Version};
use crate::http::response::StatusCode;
use crate::http::response_parser::{
    parse_response, ParsedResponse, ResponseLimits, ResponseStatus,
};
use crate::http::writer::{encode_chunk, CONTINUE_RESPONSE, LAST_CHUNK};
use crate::metrics::AttemptOutcome;
use crate::transport::{write_all_with_progress, Transport};

/// Most bytes one read takes while the response head is incomplete: a head and a small body
/// arrive whole, and a body long enough to be spliced (Linux) is left in the socket for
/// `splice(2)` instead of being copied through the buffer.
const HEAD_READ_BYTES: usize = 16 * 1024;

/// Most backends one request is offered to (connect failures move on to the next).
const MAX_ATTEMPTS: usize = 8;

/// Why one attempt at one backend failed, which decides what happens next.
enum AttemptError {
    /// No connection was made: nothing was sent, any request may go elsewhere.
    Connect(ConnectError),
    /// The connection failed before any byte of a response: sending failed, or the
    /// backend closed or reset it.
    NoResponse(io::Error),
    /// The backend accepted none of the request for the send timeout.
    SendTimeout,
    /// No response head within the request timeout.
    Timeout,
    /// The backend's response head is not valid HTTP/1.1, or was cut short.
    BadResponse(UpstreamError),
    /// The backend answered with one of the group's failure statuses, and the request is
    /// going to be retried on another backend.
    RetryStatus(StatusCode),
    /// The client side ended the exchange (its body was bad, late, or it left).
    Client(Outcome),
}

/// Forward `head` (and its body, from `body`) and relay the response to the client.
pub async fn forward<S: Transport>(
    client: &mut Client<'_, S>,
    head: &RequestHead,
    mut body: BodyDecoder,
    destination: &Destination<'_>,
) -> Outcome {
    let upstream = destination.upstream;
    // Only a request with no body can be sent twice: a streamed body is gone once sent.
    let replayable = body.is_done();
    let idempotent = head.method().is_idempotent();
    let policy = &upstream.policy;
    let mut tried = [0usize; MAX_ATTEMPTS];
    let mut tries = 0;
    let mut retries = 0;
    let arrived = Instant::now();
    upstream.retry_budget.deposit(arrived);
    let peer = client.peer;
    let key_hash = |key: &HashKey| request_key_hash(key, head, peer, destination.target);
    // Named in the access log when every attempt failed.
    let mut last_tried: Option<Arc<str>> = None;
    // Why the last attempt could not connect, when that is how it failed.
    let mut last_connect: Option<ConnectError> = None;
    while tries < MAX_ATTEMPTS {
        // One clock read serves the first pick too: it is the common, only one.
        let now = if tries == 0 { arrived } else { Instant::now() };
        let (index, via) = match upstream.pick(now, &tried[..tries], key_hash) {
            Pick::Backend { index, via } => (index, via),
            Pick::Saturated => {
                if let Some(suppressed) = admit_failure(&upstream.name, "saturated") {
                    tracing::warn!(upstream = %upstream.name, suppressed, "every backend is at its concurrency cap");
                }
                return Outcome::Failed {
                    error: ForwardError::Saturated,
                    persistence: Persistence::after_body(body.is_done()),
                    backend: None,
                };
            }
            Pick::Exhausted => break,
        };
        tried[tries] = index;
        tries += 1;
        // The breaker's last trial slot went to another request meanwhile: choose again.
        let Some(attempt) = upstream.begin(index, via, now) else {
            continue;
        };
        let backend = attempt.backend;
        last_tried = Some(Arc::clone(&backend.name));
        // A retry after something was sent needs an idempotent, replayable request, a retry
        // left and, at the time of the failure, a token from the group's budget.
        let may_retry = replayable
            && idempotent
            && retries < policy.max_retries
            && tries < upstream.backends.len().min(MAX_ATTEMPTS);
        let result = try_backend(
            client,
            head,
            &mut body,
            &attempt,
            destination,
            may_retry,
            now,
        )
        .await;
        record_attempt(upstream, index, &result, now);
        let error = match result {
            Ok(outcome) => return outcome,
            Err(error) => error,
        };
        // A failed attempt may have consumed part of the request body: then the client
        // connection cannot carry another request.
        let persistence = Persistence::after_body(body.is_done());
        last_connect = None;
        match error {
            AttemptError::Connect(error) => {
                let reason = error.reason();
                if let Some(suppressed) = admit_failure(&backend.address, reason) {
                    match &error {
                        ConnectError::Tls(failure) => {
                            tracing::warn!(backend = %backend.name, address = %backend.address, reason = %failure, suppressed, "TLS handshake with backend failed");
                        }
                        ConnectError::Tcp(_) | ConnectError::TimedOut => {
                            tracing::warn!(backend = %backend.name, address = %backend.address, %error, suppressed, "connect to backend failed");
                        }
                    }
                }
                attempt.fail(reason, None);
                last_connect = Some(error);
            }
            AttemptError::NoResponse(error) => {
                if let Some(suppressed) = admit_failure(&backend.address, "no response") {
                    tracing::warn!(backend = %backend.name, address = %backend.address, %error, suppressed, "backend failed before responding");
                }
                attempt.fail("no response", None);
                if !(may_retry && withdraw_retry(upstream)) {
                    return Outcome::Failed {
                        error: UpstreamError::NoResponse(error).into(),
                        persistence,
                        backend: Some(Arc::clone(&backend.name)),
                    };
                }
                retries += 1;
            }
            // Recorded, and the budget paid, where the status was seen.
            AttemptError::RetryStatus(status) => {
                tracing::info!(backend = %backend.name, status = status.as_u16(), "retrying a failure status on another backend");
                retries += 1;
            }
            AttemptError::SendTimeout => {
                if let Some(suppressed) = admit_failure(&backend.address, "send timeout") {
                    tracing::warn!(backend = %backend.name, address = %backend.address, timeout_ms = destination.route.send_timeout.as_millis() as u64, suppressed, "backend stopped taking the request");
                }
                attempt.fail("send timeout", None);
                return Outcome::Failed {
                    error: UpstreamError::SendTimeout.into(),
                    persistence,
                    backend: Some(Arc::clone(&backend.name)),
                };
            }
            AttemptError::Timeout => {
                if let Some(suppressed) = admit_failure(&backend.address, "timeout") {
                    tracing::warn!(backend = %backend.name, address = %backend.address, timeout_ms = destination.route.request_timeout.as_millis() as u64, suppressed, "backend response timed out");
                }
                attempt.fail("timeout", None);
                return Outcome::Failed {
                    error: UpstreamError::Timeout.into(),
                    persistence,
                    backend: Some(Arc::clone(&backend.name)),
                };
            }
            AttemptError::BadResponse(error) => {
                if let Some(suppressed) = admit_failure(&backend.address, "malformed response") {
                    tracing::warn!(backend = %backend.name, address = %backend.address, %error, suppressed, "malformed response from backend");
                }
                attempt.fail("malformed response", None);
                return Outcome::Failed {
                    error: error.into(),
                    persistence,
                    backend: Some(Arc::clone(&backend.name)),
                };
            }
            AttemptError::Client(outcome) => return outcome.naming_backend(&backend.name),
        }
    }
    if let Some(suppressed) = admit_failure(&upstream.name, "no backend") {
        tracing::warn!(upstream = %upstream.name, tried = tries, suppressed, "no backend could take the request");
    }
    Outcome::Failed {
        error: ForwardError::NoBackend {
            tried: tries,
            last: last_connect,
        },
        persistence: Persistence::after_body(body.is_done()),
        backend: last_tried,
    }
}

/// Record how the attempt on backend `index`, started at `started`, ended (when the group
/// records metrics): one count per attempt, under the outcome that ended it.
fn record_attempt(
    upstream: &Upstream,
    index: usize,
    result: &Result<Outcome, AttemptError>,
    started: Instant,
) {
    let series = upstream.metrics.as_ref();
    let Some(series) = series.and_then(|m| m.backends.get(index).copied().flatten()) else {
        return;
    };
    let outcome = match result {
        Ok(_) => AttemptOutcome::Response,
        Err(AttemptError::Connect(_)) => AttemptOutcome::ConnectError,
        Err(AttemptError::NoResponse(_)) => AttemptOutcome::Reset,
        Err(AttemptError::SendTimeout | AttemptError::Timeout) => AttemptOutcome::Timeout,
        Err(AttemptError::BadResponse(_)) => AttemptOutcome::Malformed,
        Err(AttemptError::RetryStatus(_)) => AttemptOutcome::Retried,
        Err(AttemptError::Client(_)) => AttemptOutcome::ClientAborted,
    };
    crate::metrics::record_attempt(series, outcome, started.elapsed());
}

/// A token from the group's retry budget for one retry; a refusal is counted
/// (`sentinel_retry_budget_exhausted_total`).
fn withdraw_retry(upstream: &Upstream) -> bool {
    let granted = upstream.retry_budget.try_withdraw(Instant::now());
    if !granted {
        if let Some(series) = upstream.metrics.as_ref().and_then(|m| m.group) {
            crate::metrics::record_retry_budget_exhausted(series);
        }
    }
    granted
}

/// One backend, picked at `now`: a pooled connection if there is a live one, else a new one. A pooled
/// connection that turns out dead before any response byte is normal (the backend closed it
/// while idle): the request goes once more over a new connection, when it can be replayed.
async fn try_backend<S: Transport>(
    client: &mut Client<'_, S>,
    head: &RequestHead,
    body: &mut BodyDecoder,
    attempt: &Attempt<'_>,
    destination: &Destination<'_>,
    may_retry: bool,
    now: Instant,
) -> Result<Outcome, AttemptError> {
    let backend = attempt.backend;
    let connect_timeout = destination.route.connection_timeout;
    if let Some(pooled) = backend.pool.take_at(now) {
        let replayable = body.is_done();
        match exchange(client, head, body, pooled, attempt, destination, may_retry).await {
            Err(AttemptError::NoResponse(error)) if replayable => {
                tracing::debug!(backend = %backend.name, %error, "pooled connection was stale; reconnecting");
            }
            other => return other,
        }
    }
    let stream = backend
        .connect(connect_timeout)
        .await
        .map_err(AttemptError::Connect)?;
    exchange(client, head, body, stream, attempt, destination, may_retry).await
}

/// Send the request over `upstream` and relay the response.
async fn exchange<S: Transport>(
    client: &mut Client<'_, S>,
    head: &RequestHead,
    body: &mut BodyDecoder,
    mut upstream: UpstreamStream,
    attempt: &Attempt<'_>,
    destination: &Destination<'_>,
    may_retry: bool,
) -> Result<Outcome, AttemptError> {
    let backend = attempt.backend;
    let route = destination.route;
    let upgrade = upgrade_protocol(head);
    let host = match (route.pass_host, destination.client_host) {
        (true, Some(host)) => host,
        _ => &backend.address,
    };
    let mut out = BytesMut::with_capacity(1024);
    encode_request_head(
        &mut out,
        head,
        &UpstreamRequest {
            target: destination.target,
            host,
            client_host: destination.client_host,
            client_ip: client.peer.ip(),
            upgrade,
            scheme: client.stream.scheme(),
            request_id: destination.request_id,
        },
    );
    if let Some(fill) = destination.cache {
        fill.add_request_fields(&mut out);
    }
    let send_timeout = route.send_timeout;
    if body.is_done() {
        send_staged(&mut upstream, &mut out, send_timeout).await?;
    } else {
        send_body(client, head, body, &mut upstream, out, send_timeout).await?;
    }

    // Taken from the pool only once the backend has something to say (read_response_head):
    // with thousands of requests waiting on backends at once, a buffer each would be
    // thousands of 64 KiB allocations whose touched pages stay resident after the burst.
    let mut response_buf = BytesMut::new();
    let result = receive(
        client,
        head,
        upstream,
        upgrade,
        &mut response_buf,
        attempt,
        destination,
        may_retry,
    )
    .await;
    buffer_pool::give_back(buffer_pool::Kind::Relay, response_buf);
    result
}

/// Read the response head from `upstream` and relay the response.
#[allow(clippy::too_many_arguments)]
async fn receive<S: Transport>(
    client: &mut Client<'_, S>,
    head: &RequestHead,
    mut upstream: UpstreamStream,
    upgrade: Option<&[u8]>,
    response_buf: &mut BytesMut,
    attempt: &Attempt<'_>,
    destination: &Destination<'_>,
    may_retry: bool,
) -> Result<Outcome, AttemptError> {
    let route = destination.route;
    let upstream_group = attempt.upstream;
    let sent = Instant::now();
    let (response, head_len) = read_response_head(
        &mut upstream,
        client.response_timer,
        response_buf,
        &destination.response_limits,
        route.request_timeout,
    )
    .await?;
    // The backend answered with a valid head. Whether that counts as a success depends on
    // the group's policy: a failure or error status, or a response over the slow threshold,
    // does not.
    let answered = Instant::now();
    let latency = answered.duration_since(sent);
    client.answered_by = Some(AnsweredBy {
        address: Arc::clone(&attempt.backend.address),
        header_time: latency,
    });
    let policy = &upstream_group.policy;
    let status = response.status.as_u16();
    if policy.failure_statuses.contains(&status) {
        attempt.fail("failure status", Some(latency));
        // Retry elsewhere if allowed (the connection is dropped: its body is not read);
        // otherwise the client gets this response as it is.
        if may_retry && withdraw_retry(upstream_group) {
            return Err(AttemptError::RetryStatus(response.status));
        }
    } else if policy.error_statuses.contains(&status) {
        // Counted against the backend (its cost, passive health, breaker), never retried:
        // the client gets the backend's answer.
        attempt.fail("error status", Some(latency));
    } else if !policy.slow_response.is_zero() && latency > policy.slow_response {
        attempt.fail("slow response", Some(latency));
    } else {
        attempt.succeed(latency, answered);
    }

    if response.status.as_u16() == 101 {
        if upgrade.is_none() {
            return Err(AttemptError::BadResponse(UpstreamError::UnrequestedUpgrade));
        }
        let response_head = response_buf.split_to(head_len);
        return Ok(tunnel(
            client,
            upstream,
            &response,
            &response_head,
            std::mem::take(response_buf),
            attempt.backend,
            route.tunnel_idle_timeout,
        )
        .await);
    }
    Ok(relay_response(
        client,
        head,
        upstream,
        response,
        head_len,
        response_buf,
        attempt,
        destination,
    )
    .await)
}

/// Stream the request body from the client to `upstream`, behind the head in `out`, with the
/// one framing the head announced: the same bytes for Content-Length, re-chunked for chunked
/// (so chunk extensions and trailers never reach the backend).
async fn send_body<S: Transport>(
    client: &mut Client<'_, S>,
    head: &RequestHead,
    body: &mut BodyDecoder,
    upstream: &mut UpstreamStream,
    mut out: BytesMut,
    send_timeout: Duration,
) -> Result<(), AttemptError> {
    let chunked = matches!(body, BodyDecoder::Chunked(_));
    if head.expects_continue() {
        // The client waits for this before sending the body; the backend never sees the
        // expectation (we stripped it), so we answer it ourselves.
        if write_all_with_progress(
            client.stream,
            &mut &CONTINUE_RESPONSE[..],
            client.limits.write_timeout,
        )
        .await
        .is_err()
        {
            return Err(AttemptError::Client(Outcome::ClientGone));
        }
    }
    // Each turn decodes what the client sent so far: body data is framed into `out`, which
    // is sent when it is full or the client's bytes are used up (then more are read).
    loop {
        let step = body
            .decode(&client.read_buf[..])
            .map_err(client_body_error)?;
        match step {
            Step::Data { start, end } => {
                let data = &client.read_buf[start..end];
                if chunked {
                    encode_chunk(&mut out, data);
                } else {
                    out.put_slice(data);
                }
                client.read_buf.advance(end);
                if out.len() >= RELAY_BUFFER_BYTES {
                    send_staged(upstream, &mut out, send_timeout).await?;
                }
            }
            Step::Done { consumed } => {
                client.read_buf.advance(consumed);
                if chunked {
                    out.put_slice(LAST_CHUNK);
                }
                return send_staged(upstream, &mut out, send_timeout).await;
            }
            Step::NeedMore => {
                client.read_buf.clear();
                send_staged(upstream, &mut out, send_timeout).await?;
                read_client_body(client).await?;
            }
        }
    }
}

/// Send what is staged in `out` and empty it.
async fn send_staged(
    upstream: &mut UpstreamStream,
    out: &mut BytesMut,
    send_timeout: Duration,
) -> Result<(), AttemptError> {
    if out.is_empty() {
        return Ok(());
    }
    let sent = write_all_with_progress(upstream, &mut &out[..], send_timeout).await;
    out.clear();
    sent.map_err(send_error)?;
    // After the end of a request no later write would push out what rustls still holds.
    upstream.push_out(send_timeout).await.map_err(send_error)
}

/// Why sending the request failed: the backend took nothing for the send timeout, or the
/// connection failed. (An OS-level `ETIMEDOUT` means the kernel gave up retransmitting to it:
/// no less a stalled backend.)
fn send_error(error: io::Error) -> AttemptError {
    match error.kind() {
        io::ErrorKind::TimedOut => AttemptError::SendTimeout,
        _ => AttemptError::NoResponse(error),
    }
}

async fn read_client_body<S: Transport>(client: &mut Client<'_, S>) -> Result<(), AttemptError> {
    client.read_buf.reserve(RELAY_BUFFER_BYTES / 4);
    let read = tokio::time::timeout(
        client.limits.body_read_timeout,
        client.stream.read_buf(client.read_buf),
    )
    .await;
    match read {
        Err(_) => Err(AttemptError::Client(Outcome::Failed {
            error: ForwardError::ClientBodyTimeout,
            persistence: Persistence::LingeringClose,
            backend: None,
        })),
        Ok(Ok(0)) | Ok(Err(_)) => Err(AttemptError::Client(Outcome::ClientGone)),
        Ok(Ok(_)) => Ok(()),
    }
}

/// The client's body is bad: the connection reports it (the error table logs it once).
fn client_body_error(error: BodyError) -> AttemptError {
    AttemptError::Client(Outcome::Failed {
        error: ForwardError::ClientBody(error),
        persistence: Persistence::LingeringClose,
        backend: None,
    })
}

/// Read until a whole response head is parsed, skipping interim 1xx responses (other than
/// 101, which ends the head). Returns the head and its length at the start of `buf`, which
/// comes from the relay-buffer pool once the backend's socket is readable when it has no
/// room yet.
async fn read_response_head(
    upstream: &mut UpstreamStream,
    timer: &mut LazyTimer,
    buf: &mut BytesMut,
    limits: &ResponseLimits,
    wait: Duration,
) -> Result<(ParsedResponse, usize), AttemptError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut received_any = false;
    loop {
        if !buf.is_empty() {
            match parse_response(buf, limits)
                .map_err(|error| AttemptError::BadResponse(UpstreamError::MalformedHead(error)))?
            {
                ResponseStatus::Complete(response, used) => {
                    let status = response.status.as_u16();
                    if (100..200).contains(&status) && status != 101 {
                        buf.advance(used);
                        continue;
                    }
                    return Ok((response, used));
                }
                ResponseStatus::Partial => {}
            }
        }
        if buf.capacity() == 0 {
            let ready = tokio::select! {
                biased;
                ready = upstream.readable() => Ok(ready),
                () = timer.until(deadline) => Err(()),
            };
            match ready {
                Err(()) => return Err(AttemptError::Timeout),
                Ok(Err(error)) => return Err(AttemptError::NoResponse(error)),
                Ok(Ok(())) => *buf = buffer_pool::take(buffer_pool::Kind::Relay),
            }
        }
        let mut window = (&mut *buf).limit(HEAD_READ_BYTES);
        let read = tokio::select! {
            biased;
            read = upstream.read_buf(&mut window) => Ok(read),
            () = timer.until(deadline) => Err(()),
        };
        match read {
            Err(_) => return Err(AttemptError::Timeout),
            Ok(Ok(0)) if !received_any => {
                return Err(AttemptError::NoResponse(
                    io::ErrorKind::UnexpectedEof.into(),
                ))
            }
            Ok(Ok(0)) => return Err(AttemptError::BadResponse(UpstreamError::ClosedMidHead)),
            Ok(Err(error)) if !received_any => return Err(AttemptError::NoResponse(error)),
            Ok(Err(error)) => {
                return Err(AttemptError::BadResponse(UpstreamError::FailedMidHead(
                    error,
                )))
            }
            Ok(Ok(_)) => received_any = true,
        }
    }
}

/// The hash of what a `consistent_hash` group keys on. A missing header falls back to the
/// client address, so such requests still stick somewhere.
fn request_key_hash(key: &HashKey, head: &RequestHead, peer: SocketAddr, target: &str) -> u64 {
    let ip_hash = || match peer.ip() {
        std::net::IpAddr::V4(ip) => hash_bytes(&ip.octets()),
        std::net::IpAddr::V6(ip) => hash_bytes(&ip.octets()),
    };
    match key {
        HashKey::ClientIp => ip_hash(),
        HashKey::Path => hash_bytes(target.split('?').next().unwrap_or(target).as_bytes()),
        HashKey::Header(name) => head.header(name).map_or_else(ip_hash, hash_bytes),
    }
}

/// The `Upgrade` value to pass on, when the client asked to switch to WebSocket. Other
/// protocols (h2c, ...) are not tunnelled: a tunnel escapes every per-request rule, so it is
/// opened only for the protocol that needs one.
fn upgrade_protocol(head: &RequestHead) -> Option<&[u8]> {
    if !head.connection_options().upgrade || head.version() != Version::Http11 {
        return None;
    }
    head.header("upgrade")
        .filter(|value| value.eq_ignore_ascii_case(b"websocket"))
}
