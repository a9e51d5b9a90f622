//! What the client connection and the proxy hand each other for one request: the client
//! side (its stream, buffered bytes and limits), where the request goes, and how it ended.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;

use super::upstream::Upstream;
use crate::buffer_pool;
use crate::config::{ConnectionLimits, RouteConfig};
use crate::http::lazy_timer::LazyTimer;
use crate::http::persistence::Persistence;
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
    /// Nothing was sent to the client: answer with this status's error page.
    Failed {
        status: StatusCode,
        /// `LingeringClose` when part of the request body may still be unread.
        persistence: Persistence,
    },
    /// The client went away.
    ClientGone,
}
