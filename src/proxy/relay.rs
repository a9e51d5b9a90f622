//! Relaying a response to the client once its head has arrived: the framing each side uses,
//! the body piece by piece (re-chunked where the framing changes), the upstream connection
//! back to its pool when it ended clean. (`101 Switching Protocols` tunnels: `tunnel.rs`.)

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::buffered::{read_body, BufferError};
use super::exchange::{
    BodyEdit, Client, Destination, ForwardError, HeadEdit, Outcome, ResponseHook, UpstreamError,
    RELAY_BUFFER_BYTES,
};
use super::headers::{encode_response_head, AddedFields, Recoding};
use super::log_limit::admit_failure;
use super::stream::UpstreamStream;
use super::upstream::Attempt;
use crate::cache::fill::{Begun, Capture};
use crate::compression::{can_vary, negotiate, Algorithm, Encoder, ResponseFacts, Settings};
use crate::http::body::{BodyDecoder, BodyLimits, ChunkedDecoder, Step};
use crate::http::date::with_http_date;
use crate::http::persistence::Persistence;
use crate::http::refield;
use crate::http::request::{Method, RequestHead, Version};
use crate::http::response_parser::{
    parse_response, DeclaredFraming, ParsedResponse, ResponseLimits, ResponseStatus,
};
use crate::http::writer::{
    encode_chunk_header, ConnectionState, ResponseFraming, CHUNK_DATA_END, LAST_CHUNK,
};
use crate::transport::{write_all_with_progress, Transport};

/// Largest body piece copied behind a staged head or chunk header so both leave in one
/// send(2); larger pieces go out beside it with a vectored write.
const COPY_BEHIND_STAGED_BYTES: usize = 512;

/// How the response body is delimited on each side.
struct Framings {
    /// How to read it from the backend (`None`: there is no body).
    upstream: Option<DeclaredFraming>,
    /// What the client is told.
    client: ResponseFraming,
    /// Whether the client reads the body until we close (HTTP/1.0 clients of a response
    /// whose length is not known in advance).
    client_until_close: bool,
}

fn framings(method: Method, version: Version, response: &ParsedResponse) -> Framings {
    let status = response.status;
    // RFC 9112 §6.3 rules 1 and 2: no body, whatever the fields say.
    if status.is_bodyless() {
        return Framings {
            upstream: None,
            client: ResponseFraming::Bodyless,
            client_until_close: false,
        };
    }
    if method == Method::Head {
        let client = match response.framing {
            DeclaredFraming::Length(length) => ResponseFraming::Length(length),
            _ => ResponseFraming::Bodyless,
        };
        return Framings {
            upstream: None,
            client,
            client_until_close: false,
        };
    }
    match (response.framing, version) {
        (DeclaredFraming::Length(length), _) => Framings {
            upstream: Some(response.framing),
            client: ResponseFraming::Length(length),
            client_until_close: false,
        },
        (_, Version::Http11) => Framings {
            upstream: Some(response.framing),
            client: ResponseFraming::Chunked,
            client_until_close: false,
        },
        (_, Version::Http10) => Framings {
            upstream: Some(response.framing),
            client: ResponseFraming::Bodyless,
            client_until_close: true,
        },
    }
}

/// Send the response head and body to the client. Errors here cannot become error pages (the
/// head is out): they end in a cut connection.
///
/// `buf` starts with the response head (`head_len` bytes) and whatever body bytes came with
/// it. The head is re-encoded and then skipped in place rather than split off, so that `buf`
/// stays the sole owner of its memory and is reused for the body instead of reallocated.
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay_response<S: Transport>(
    client: &mut Client<'_, S>,
    head: &RequestHead,
    mut upstream: UpstreamStream,
    response: ParsedResponse,
    head_len: usize,
    buf: &mut BytesMut,
    attempt: &Attempt<'_>,
    destination: &Destination<'_>,
) -> Outcome {
    let backend = attempt.backend;
    let mut framings = framings(head.method(), head.version(), &response);
    let response_head = &buf[..head_len];
    let (recoding, algorithm) = match destination.compression {
        Some(settings) => recoding(head, &response, response_head, settings),
        None => (Recoding::NONE, None),
    };
    if algorithm.is_some() {
        // The compressed length is not known in advance (HEAD says what GET would).
        framings.client = ResponseFraming::Chunked;
    }
    let keep_alive = client.keep_alive && !framings.client_until_close;
    // The plugins see the head first; what they change is relayed instead (the framing,
    // decided above from the backend's head, stays).
    let edited = match destination.response_hook {
        None => None,
        Some(hook) => {
            let fields = &response.headers;
            match hook.on_response_head(response.status, response_head, fields, &backend.address) {
                HeadEdit::Keep => None,
                HeadEdit::Replace { status, fields } => edited_head(
                    &response,
                    response_head,
                    status,
                    &fields,
                    &destination.response_limits,
                ),
                HeadEdit::Refuse(status) => {
                    return Outcome::Failed {
                        error: ForwardError::RefusedByPlugin(status),
                        // The backend's body is unread: neither side's connection is reused.
                        persistence: Persistence::Close,
                        backend: Some(Arc::clone(&backend.name)),
                    };
                }
            }
        }
    };
    // A plugin that asked for the body gets it whole before anything is sent (not on a
    // caching route: the cache stores what the backend sent, as it streams).
    let buffering = destination
        .response_hook
        .filter(|hook| hook.wants_response_body())
        .zip(framings.upstream)
        .filter(|_| destination.cache.is_none());
    if let Some((hook, upstream_framing)) = buffering {
        let (parsed, client_head) =
            edited.unwrap_or_else(|| (response.clone(), BytesMut::from(response_head)));
        buf.advance(head_len);
        let head_out = HeadOut {
            parsed: &parsed,
            bytes: &client_head,
            keep_alive,
        };
        return relay_buffered(
            client,
            head,
            upstream,
            &response,
            head_out,
            buf,
            attempt,
            destination,
            (hook, upstream_framing),
        )
        .await;
    }
    let (client_response, client_head) = match &edited {
        Some((parsed, bytes)) => (parsed, &bytes[..]),
        None => (&response, response_head),
    };
    // Room for the fields we add and a small body behind the head (see `Relay::send`).
    let mut out = BytesMut::with_capacity(response_head.len() + COPY_BEHIND_STAGED_BYTES);
    with_http_date(|date| {
        encode_response_head(
            &mut out,
            client_response,
            client_head,
            framings.client,
            ConnectionState {
                request_version: head.version(),
                keep_alive,
            },
            date,
            AddedFields {
                backend_header: destination
                    .backend_header
                    .map(|name| (name, &*backend.name)),
                request_id: destination.request_id,
                recoding,
            },
        )
    });
    let capture = match destination
        .cache
        .map(|fill| fill.begin(&response, response_head))
    {
        Some(Begun::TakeOver) => {
            // The cache answers instead (a 304 to its revalidation, a 5xx a stale entry
            // stands in for): nothing reached the client. A bodyless 304 leaves the
            // connection clean; a 5xx's body is unread, so that connection goes.
            if response.status.is_bodyless() && buf.len() == head_len && response.keeps_alive() {
                backend.pool.put(upstream);
            }
            return Outcome::Responded {
                status: response.status,
                body_bytes: 0,
                persistence: Persistence::keep_if(keep_alive),
                backend: Arc::clone(&backend.name),
            };
        }
        Some(Begun::Relay {
            cache_status,
            capture,
        }) => {
            insert_after_status_line(&mut out, &cache_status);
            capture
        }
        None => None,
    };
    buf.advance(head_len);
    // The status the client gets (a plugin may have changed the backend's).
    let status = client_response.status;
    let backend_name = Arc::clone(&backend.name);
    let Some(upstream_framing) = framings.upstream else {
        let sent =
            write_all_with_progress(client.stream, &mut &out[..], client.limits.write_timeout)
                .await;
        // A bodyless answer to a GET (204, say) is stored whole once it is out.
        if let (Some(fill), Some(capture), true) = (destination.cache, capture, sent.is_ok()) {
            fill.complete(capture);
        }
        // A bodyless response leaves the connection clean only if nothing followed it.
        if buf.is_empty() && response.keeps_alive() {
            backend.pool.put(upstream);
        }
        return Outcome::Responded {
            status,
            body_bytes: 0,
            persistence: Persistence::keep_if(keep_alive && sent.is_ok()),
            backend: backend_name,
        };
    };
    let encoder = match algorithm {
        Some(algorithm) => match Encoder::new(algorithm, destination.compression_level()) {
            Ok(encoder) => Some(encoder),
            Err(error) => {
                // The head promised an encoding: only closing can end this response now.
                tracing::warn!(%error, "no encoder for a proxied response");
                return Outcome::Responded {
                    status,
                    body_bytes: 0,
                    persistence: Persistence::Close,
                    backend: backend_name,
                };
            }
        },
        None => None,
    };
    let mut relay = Relay {
        client,
        out,
        chunked: framings.client == ResponseFraming::Chunked,
        sent: 0,
        capture,
        encoder,
        encoded: Vec::new(),
    };
    let finished = relay
        .body(
            &mut upstream,
            buf,
            upstream_framing,
            destination.route.read_timeout,
        )
        .await;
    let body_bytes = relay.sent;
    match finished {
        Ok(()) => {
            if let (Some(fill), Some(capture)) = (destination.cache, relay.capture.take()) {
                fill.complete(capture);
            }
            if buf.is_empty()
                && response.keeps_alive()
                && upstream_framing != DeclaredFraming::UntilClose
            {
                backend.pool.put(upstream);
            }
            Outcome::Responded {
                status,
                body_bytes,
                persistence: Persistence::keep_if(keep_alive),
                backend: backend_name,
            }
        }
        Err(RelayError::Upstream(error)) => {
            // The client got a head promising more than it will get: only closing tells it.
            if let Some(suppressed) = admit_failure(&backend.address, "failed mid-response") {
                tracing::warn!(backend = %backend.name, address = %backend.address, %error, sent = body_bytes, suppressed, "backend failed mid-response; cutting the client connection");
            }
            attempt.fail("failed mid-response", None);
            Outcome::Responded {
                status,
                body_bytes,
                persistence: Persistence::Close,
                backend: backend_name,
            }
        }
        Err(RelayError::Client(error)) => {
            tracing::debug!(client = %relay.client.peer, %error, "client write failed mid-response");
            Outcome::Responded {
                status,
                body_bytes,
                persistence: Persistence::Close,
                backend: backend_name,
            }
        }
    }
}

/// The response head to send on the buffered path.
struct HeadOut<'a> {
    parsed: &'a ParsedResponse,
    bytes: &'a [u8],
    keep_alive: bool,
}

/// The response when a plugin asked for its body: read whole (up to the client body
/// limit), handed to the plugin, then sent with a `Content-Length` of its own, uncompressed.
/// Nothing has reached the client before the plugin decided, so a failure is still an
/// error page.
#[allow(clippy::too_many_arguments)]
async fn relay_buffered<S: Transport>(
    client: &mut Client<'_, S>,
    head: &RequestHead,
    mut upstream: UpstreamStream,
    response: &ParsedResponse,
    head_out: HeadOut<'_>,
    buf: &mut BytesMut,
    attempt: &Attempt<'_>,
    destination: &Destination<'_>,
    (hook, framing): (&dyn ResponseHook, DeclaredFraming),
) -> Outcome {
    let backend = attempt.backend;
    let failed = |error| Outcome::Failed {
        error,
        // The backend's connection is not reused after a failure; the client's is fine.
        persistence: Persistence::keep_if(head_out.keep_alive),
        backend: Some(Arc::clone(&backend.name)),
    };
    let limit = client.limits.max_body_bytes;
    let body = match read_body(
        &mut upstream,
        buf,
        framing,
        destination.route.read_timeout,
        limit,
    )
    .await
    {
        Ok(body) => body,
        Err(BufferError::TooLarge(limit)) => {
            tracing::warn!(backend = %backend.name, limit, "a response body a plugin asked for is over the body limit");
            return failed(ForwardError::RefusedByPlugin(
                crate::http::response::StatusCode::BAD_GATEWAY,
            ));
        }
        Err(BufferError::Upstream(error)) => {
            attempt.fail("failed mid-response", None);
            return failed(ForwardError::Upstream(UpstreamError::NoResponse(error)));
        }
    };
    if buf.is_empty() && response.keeps_alive() && framing != DeclaredFraming::UntilClose {
        backend.pool.put(upstream);
    }
    let body = match hook.on_response_body(body) {
        BodyEdit::Send(body) => body,
        BodyEdit::Refuse(status) => return failed(ForwardError::RefusedByPlugin(status)),
    };
    let mut out = BytesMut::with_capacity(head_out.bytes.len() + 128 + body.len());
    with_http_date(|date| {
        encode_response_head(
            &mut out,
            head_out.parsed,
            head_out.bytes,
            ResponseFraming::Length(body.len() as u64),
            ConnectionState {
                request_version: head.version(),
                keep_alive: head_out.keep_alive,
            },
            date,
            AddedFields {
                backend_header: destination
                    .backend_header
                    .map(|name| (name, &*backend.name)),
                request_id: destination.request_id,
                recoding: Recoding::NONE,
            },
        )
    });
    out.extend_from_slice(&body);
    let sent =
        write_all_with_progress(client.stream, &mut &out[..], client.limits.write_timeout).await;
    Outcome::Responded {
        status: head_out.parsed.status,
        body_bytes: if sent.is_ok() { body.len() as u64 } else { 0 },
        persistence: Persistence::keep_if(head_out.keep_alive && sent.is_ok()),
        backend: Arc::clone(&backend.name),
    }
}

/// The response head a plugin asked for, parsed as a backend's would be: `status`, its
/// `fields`, and the backend's own framing fields (a plugin cannot change how the body
/// that follows is delimited). `None` (the backend's head is relayed) when the result does
/// not parse; the plugin host has logged what the plugin did.
fn edited_head(
    response: &ParsedResponse,
    response_head: &[u8],
    status: crate::http::response::StatusCode,
    fields: &[(Bytes, Bytes)],
    limits: &ResponseLimits,
) -> Option<(ParsedResponse, BytesMut)> {
    let fields = fields.iter().map(|(name, value)| (&name[..], &value[..]));
    // Parsed again only when what the parse finds is not known as it is written.
    let (head, known) =
        refield::response_with_fields(response, response_head, status, fields, limits);
    if let Some(parsed) = known {
        return Some((parsed, head));
    }
    match parse_response(&head, limits) {
        Ok(ResponseStatus::Complete(parsed, _)) if parsed.framing == response.framing => {
            Some((parsed, head))
        }
        _ => {
            tracing::warn!("a plugin's response head does not parse; the backend's is relayed");
            None
        }
    }
}

/// Put the cache's `Cache-Status` line right after the status line of the staged head.
fn insert_after_status_line(out: &mut BytesMut, line: &[u8]) {
    let Some(end) = out.windows(2).position(|w| w == b"\r\n") else {
        return;
    };
    let rest = out.split_off(end + 2);
    out.reserve(line.len() + rest.len());
    out.put_slice(line);
    out.put_slice(&rest);
}

enum RelayError {
    Upstream(io::Error),
    Client(io::Error),
}

/// What compression does to this response: how its head changes, and the coding its body
/// is compressed with (`None`: relayed as it is). Compressed only for HTTP/1.1 clients
/// (chunked framing) that accept a coding, never for a range request, and only when the
/// policy allows it (`compression::can_vary`); `Vary` is added whenever it allows it.
fn recoding(
    head: &RequestHead,
    response: &ParsedResponse,
    response_head: &[u8],
    settings: &Settings,
) -> (Recoding, Option<Algorithm>) {
    let field = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| {
                h.name
                    .slice(response_head)
                    .eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|h| h.value.slice(response_head))
    };
    let facts = ResponseFacts {
        status: response.status.as_u16(),
        content_type: field("content-type"),
        content_encoding: field("content-encoding"),
        cache_control: field("cache-control"),
        length: match response.framing {
            DeclaredFraming::Length(length) => Some(length),
            DeclaredFraming::Chunked | DeclaredFraming::UntilClose => None,
        },
    };
    if can_vary(&facts, &settings.types, settings.min_bytes).is_err() {
        return (Recoding::NONE, None);
    }
    let algorithm = if head.header("range").is_some() || head.version() != Version::Http11 {
        None
    } else {
        negotiate(head.header("accept-encoding"), &settings.algorithms).best()
    };
    let recoding = Recoding {
        coding: algorithm.map(Algorithm::token),
        vary: true,
    };
    (recoding, algorithm)
}

/// Relays a response body piece by piece, re-framing it for the client.
struct Relay<'c, 'a, S> {
    client: &'c mut Client<'a, S>,
    /// Bytes staged to go out before the next piece of body (the head, chunk framing).
    out: BytesMut,
    chunked: bool,
    /// Body bytes that reached the client.
    sent: u64,
    /// The body being stored by the cache, until it outgrows the object limit.
    capture: Option<Box<Capture>>,
    /// Compresses the body on its way, when the client gets it encoded.
    encoder: Option<Encoder>,
    /// The compressed bytes of the piece being sent (reused from piece to piece).
    encoded: Vec<u8>,
}

impl<S: Transport> Relay<'_, '_, S> {
    async fn body(
        &mut self,
        upstream: &mut UpstreamStream,
        buf: &mut BytesMut,
        framing: DeclaredFraming,
        read_timeout: Duration,
    ) -> Result<(), RelayError> {
        let mut decoder = match framing {
            DeclaredFraming::Length(length) => Some(BodyDecoder::Length { remaining: length }),
            DeclaredFraming::Chunked => {
                Some(BodyDecoder::Chunked(ChunkedDecoder::new(BodyLimits {
                    max_body_bytes: u64::MAX,
                    max_chunk_ext_bytes: crate::limits::DEFAULT_MAX_CHUNK_EXT_BYTES,
                    max_trailer_bytes: RELAY_BUFFER_BYTES,
                })))
            }
            DeclaredFraming::UntilClose => None,
        };
        // Each turn decodes what the backend sent so far and relays the body data in it;
        // when it is used up, more is read. A body read until close has no framing to decode.
        loop {
            let step = match decoder.as_mut() {
                Some(decoder) => decoder.decode(buf).map_err(|error| {
                    RelayError::Upstream(io::Error::new(io::ErrorKind::InvalidData, error))
                })?,
                None if buf.is_empty() => Step::NeedMore,
                None => Step::Data {
                    start: 0,
                    end: buf.len(),
                },
            };
            match step {
                Step::Data { start, end } => {
                    if let Some(capture) = self.capture.as_mut() {
                        if !capture.push(&buf[start..end]) {
                            self.capture = None;
                        }
                    }
                    self.send(&buf[start..end]).await?;
                    buf.advance(end);
                    continue;
                }
                Step::Done { consumed } => {
                    buf.advance(consumed);
                    return self.finish().await;
                }
                Step::NeedMore => buf.clear(),
            }
            // Only a plain backend socket holds the body as it is: TLS records must be
            // decrypted in user space, so those bodies are copied.
            #[cfg(target_os = "linux")]
            if let (Some(BodyDecoder::Length { remaining }), Some(socket)) =
                (decoder.as_mut(), upstream.as_plain_tcp())
            {
                // A body being stored must pass through user space.
                if !self.chunked && self.capture.is_none() && *remaining >= super::splice::MIN_BYTES
                {
                    match self.splice_rest(socket, *remaining, read_timeout).await {
                        Ok(true) => {
                            *remaining = 0;
                            return self.finish().await;
                        }
                        Ok(false) => {}
                        Err(error) => return Err(error),
                    }
                }
            }
            buf.reserve(RELAY_BUFFER_BYTES);
            let read = tokio::time::timeout(read_timeout, upstream.read_buf(buf)).await;
            match read {
                Err(_) => {
                    return Err(RelayError::Upstream(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "backend stalled mid-response",
                    )))
                }
                Ok(Ok(0)) if decoder.is_none() => return self.finish().await,
                Ok(Ok(0)) => {
                    return Err(RelayError::Upstream(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "backend closed mid-response",
                    )))
                }
                Ok(Err(error)) => return Err(RelayError::Upstream(error)),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Move the last `len` bytes of a Content-Length body with `splice(2)`, after whatever is
    /// staged. `Ok(false)`: no pipe could be had and nothing was moved; copy instead.
    #[cfg(target_os = "linux")]
    async fn splice_rest(
        &mut self,
        upstream: &tokio::net::TcpStream,
        len: u64,
        read_timeout: Duration,
    ) -> Result<bool, RelayError> {
        use super::splice::{relay_body, SpliceError};
        // Only a plain socket can take pages from a pipe; anything else gets copies.
        if self.client.stream.as_plain_tcp().is_none() {
            return Ok(false);
        }
        let write_timeout = self.client.limits.write_timeout;
        if !self.out.is_empty() {
            let staged =
                write_all_with_progress(self.client.stream, &mut &self.out[..], write_timeout)
                    .await;
            self.out.clear();
            staged.map_err(RelayError::Client)?;
        }
        let Some(client_socket) = self.client.stream.as_plain_tcp() else {
            return Ok(false);
        };
        let moved = relay_body(
            upstream,
            client_socket,
            len,
            read_timeout,
            write_timeout,
            &mut self.sent,
        )
        .await;
        match moved {
            Ok(()) => Ok(true),
            Err(SpliceError::Unavailable(error)) => {
                tracing::debug!(%error, "no pipe for splice; copying the body");
                Ok(false)
            }
            Err(SpliceError::Upstream(error)) => Err(RelayError::Upstream(error)),
            Err(SpliceError::Client(error)) => Err(RelayError::Client(error)),
        }
    }

    /// Write one piece of body (behind whatever is staged), compressed when the client
    /// gets it encoded. Each piece is flushed through the encoder: a streamed response
    /// (events, long polls) must reach the client as the backend sends it, not when the
    /// encoder's block fills.
    async fn send(&mut self, data: &[u8]) -> Result<(), RelayError> {
        let Some(encoder) = self.encoder.as_mut() else {
            return self.send_framed(data).await;
        };
        encoder
            .write(data, true, &mut self.encoded)
            .map_err(RelayError::Client)?;
        let encoded = std::mem::take(&mut self.encoded);
        let sent = self.send_framed(&encoded).await;
        self.encoded = encoded;
        sent
    }

    /// Write one piece of body (behind whatever is staged), framed for the client.
    async fn send_framed(&mut self, data: &[u8]) -> Result<(), RelayError> {
        if data.is_empty() {
            return Ok(());
        }
        let timeout = self.client.limits.write_timeout;
        let chunk_end: &[u8] = if self.chunked {
            encode_chunk_header(&mut self.out, data.len());
            CHUNK_DATA_END
        } else {
            b""
        };
        // A small piece behind staged bytes (the head, a chunk header) is copied after them and
        // the two go out in one send(2): cheaper than the kernel's vectored path, and the
        // common case of a head followed by a small body. Only into spare room: no allocation.
        let copy = !self.out.is_empty()
            && data.len() <= COPY_BEHIND_STAGED_BYTES
            && self.out.capacity() - self.out.len() >= data.len() + chunk_end.len();
        let result = if copy {
            self.out.put_slice(data);
            self.out.put_slice(chunk_end);
            write_all_with_progress(self.client.stream, &mut &self.out[..], timeout).await
        } else {
            let mut chain = Buf::chain(Buf::chain(&self.out[..], data), chunk_end);
            write_all_with_progress(self.client.stream, &mut chain, timeout).await
        };
        self.out.clear();
        result.map_err(RelayError::Client)?;
        self.sent += data.len() as u64;
        Ok(())
    }

    /// End the body: the last chunk when chunked, and whatever is still staged.
    async fn finish(&mut self) -> Result<(), RelayError> {
        if let Some(encoder) = self.encoder.take() {
            let last = encoder.finish().map_err(RelayError::Client)?;
            self.send_framed(&last).await?;
        }
        if self.chunked {
            self.out.put_slice(LAST_CHUNK);
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = self.client.limits.write_timeout;
        let result = write_all_with_progress(self.client.stream, &mut &self.out[..], timeout).await;
        self.out.clear();
        result.map_err(RelayError::Client)
    }
}
