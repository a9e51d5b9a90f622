//! What the client connection and the proxy hand each other for one request: the client
//! side (its stream, buffered bytes and limits), where the request goes, and how it ended.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::stream::ConnectError;
use super::upstream::Upstream;
use crate::buffer_pool;
use crate::compression::{Level, Settings};
use crate::config::{ConnectionLimits, RouteConfig};
use crate::http::error::{BodyError, ParseError};
use crate::http::lazy_timer::LazyTimer;
use crate::http::persistence::Persistence;
use crate::http::request::HeaderSpan;
use crate::http::response::StatusCode;
use crate::http::response_parser::ResponseLimits;

/// Size of the buffer upstream bytes are read into; also the largest piece relayed at once.
pub(super) const RELAY_BUFFER_BYTES: usize = buffer_pool::Kind::Relay.bytes();

/// The client side of the exchange, lent by the connection for the length of one request.
pub struct Client<'a, S> {
    pub stream: &'a mut S,
    /// Bytes read from the client and not yet used: the start of the request body.
    pub read_buf: &'a mut BytesMut,
    pub peer: SocketAddr,
    pub limits: &'a ConnectionLimits,
    /// Whether the client asked to keep the connection open after this response.
    pub keep_alive: bool,
    /// The wait for each response head, on one lazily re-armed timer per client connection.
    pub(crate) response_timer: &'a mut LazyTimer,
    /// The backend whose response head reached us, and how long it took: for the access log.
    pub answered_by: Option<AnsweredBy>,
}

/// Which backend address answered a forwarded request and how long its response head took
/// from the end of sending the request (nginx's `$upstream_addr`, `$upstream_header_time`).
#[derive(Debug, Clone)]
pub struct AnsweredBy {
    pub address: Arc<str>,
    pub header_time: std::time::Duration,
}

/// Where and how to forward.
pub struct Destination<'a> {
    pub upstream: &'a Upstream,
    pub route: &'a RouteConfig,
    /// Origin-form target to send.
    pub target: &'a str,
    pub client_host: Option<&'a str>,
    pub response_limits: ResponseLimits,
    /// Response header naming the backend, when configured.
    pub backend_header: Option<&'a str>,
    /// The response cache's part in this request (`None`: the route does not cache).
    pub cache: Option<&'a crate::cache::fill::Fill<'a>>,
    /// The request's ID, sent to the backend and back to the client in `X-Request-Id`.
    pub request_id: Option<&'a [u8]>,
    /// Compression of the response, unless off or the route opted out.
    pub compression: Option<&'a Settings>,
    /// What sees and may change the response head before it goes to the client (the
    /// plugins); `None` costs nothing.
    pub response_hook: Option<&'a dyn ResponseHook>,
}

/// Something the response head passes by before it is relayed: the proxy-wasm plugins.
/// A trait here so the proxy does not import the layer above it.
pub trait ResponseHook: Send + Sync {
    /// `fields` are the backend's, as received (spans of `head`); `upstream` the backend's
    /// address.
    fn on_response_head(
        &self,
        status: StatusCode,
        head: &[u8],
        fields: &[HeaderSpan],
        upstream: &str,
    ) -> HeadEdit;

    /// Whether the hook asked, in `on_response_head`, for the whole response body.
    fn wants_response_body(&self) -> bool;

    /// The whole response body (read up to the body limit); what to send instead.
    fn on_response_body(&self, body: Vec<u8>) -> BodyEdit;
}

/// What became of a response body the hook asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEdit {
    /// Send these bytes as the body (with a `Content-Length` of their own).
    Send(Vec<u8>),
    /// Send nothing of it: answer the client with this status.
    Refuse(StatusCode),
}

/// What became of a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadEdit {
    /// Relay it as it is.
    Keep,
    /// Relay this status and these fields instead (the framing stays the backend's).
    Replace {
        status: StatusCode,
        fields: Vec<(Bytes, Bytes)>,
    },
    /// Relay nothing: answer the client with this status.
    Refuse(StatusCode),
}

impl Destination<'_> {
    /// The encoder level for responses compressed on the way.
    pub(super) fn compression_level(&self) -> Level {
        self.compression.map_or(Level::Fast, |s| s.level)
    }
}

/// How a forwarded request ended, for the connection to act on and log.
#[derive(Debug)]
pub enum Outcome {
    /// A response head reached the client (the body may have been cut short, in which case
    /// the connection must close).
    Responded {
        status: StatusCode,
        body_bytes: u64,
        persistence: Persistence,
        backend: Arc<str>,
    },
    /// Nothing was sent to the client: answer with the error page the error table gives.
    Failed {
        error: ForwardError,
        /// `LingeringClose` when part of the request body may still be unread.
        persistence: Persistence,
        /// The backend of the last attempt, for the access log (`None`: none was tried).
        backend: Option<Arc<str>>,
    },
    /// The client went away.
    ClientGone,
}

impl Outcome {
    /// A failure found while talking to `backend` names it, unless it already names one.
    pub(super) fn naming_backend(self, backend: &Arc<str>) -> Outcome {
        match self {
            Outcome::Failed {
                error,
                persistence,
                backend: None,
            } => Outcome::Failed {
                error,
                persistence,
                backend: Some(Arc::clone(backend)),
            },
            other => other,
        }
    }
}

/// Why no response came back from upstream, as the client will be told (the error table in
/// `fault.rs` gives each its status). Per-attempt failures that were retried are logged where
/// they happen and never reach this.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("every backend is at its concurrency cap")]
    Saturated,
    #[error(
        "no backend could take the request (tried {tried}){}",
        LastFailure(last)
    )]
    NoBackend {
        tried: usize,
        /// Why the last backend tried could not be connected to, when that is how it
        /// failed (a refused TLS certificate among them).
        last: Option<ConnectError>,
    },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The client's request body was malformed or over a limit while it was being sent on.
    #[error("request body: {0}")]
    ClientBody(BodyError),
    #[error("request body timed out")]
    ClientBodyTimeout,
    /// A plugin refused the response (it failed under `on_error: fail_closed`).
    #[error("a plugin refused the response")]
    RefusedByPlugin(StatusCode),
}

/// What went wrong with one backend before its response could be relayed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Sending failed, or the backend closed or reset the connection before any byte of a
    /// response.
    #[error("failed before responding: {0}")]
    NoResponse(std::io::Error),
    /// The backend accepted none of the request for the send timeout (nginx answers its
    /// `proxy_send_timeout` with 504 too).
    #[error("the backend took none of the request within the send timeout")]
    SendTimeout,
    #[error("no response head within the request timeout")]
    Timeout,
    #[error("malformed response head: {0}")]
    MalformedHead(ParseError),
    #[error("connection closed in the middle of the response head")]
    ClosedMidHead,
    #[error("connection failed in the middle of the response head: {0}")]
    FailedMidHead(std::io::Error),
    /// `101 Switching Protocols` to a request that asked for no upgrade (RFC 9110 §15.2.2).
    #[error("switched protocols although the request asked for no upgrade")]
    UnrequestedUpgrade,
}

/// `; last: <why>` after the `NoBackend` message when there is a why.
struct LastFailure<'a>(&'a Option<ConnectError>);

impl std::fmt::Display for LastFailure<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(error) => write!(f, "; last: {error}"),
            None => Ok(()),
        }
    }
}
