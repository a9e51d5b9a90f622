//! The listener-level settings of `server`: the PROXY protocol header that an L4 balancer
//! sends before each connection (`server.proxy_protocol*`, `tls.proxy_protocol`) and the cap
//! on connections per client address (`server.max_connections_per_ip`).

use std::time::Duration;

use super::raw::RawServer;
use super::{Cidr, Validator};
use crate::http::proxy_protocol::MIN_MAX_BYTES;

/// How connections that begin with a PROXY protocol header are read. Which listeners expect
/// one is `ServerConfig::proxy_protocol` and `TlsConfig::proxy_protocol`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocolConfig {
    /// Peers allowed to send a header; empty: any peer. Another peer is closed on accept.
    pub trusted: Vec<Cidr>,
    /// From accept to the header's last byte (`server.proxy_protocol_timeout_ms`).
    pub timeout: Duration,
    /// Longest header accepted (`server.proxy_protocol_max_header_bytes`).
    pub max_header_bytes: usize,
}

impl ProxyProtocolConfig {
    /// Whether `peer` may send a header.
    pub fn is_trusted(&self, peer: std::net::IpAddr) -> bool {
        self.trusted.is_empty() || self.trusted.iter().any(|cidr| cidr.contains(peer))
    }
}

impl Validator<'_> {
    pub(super) fn proxy_protocol(&self, raw: &RawServer) -> ProxyProtocolConfig {
        let trusted = self.cidrs("server.proxy_protocol_trusted", &raw.proxy_protocol_trusted);
        if raw.proxy_protocol_max_header_bytes < MIN_MAX_BYTES {
            self.report(
                "server.proxy_protocol_max_header_bytes",
                format!("must be at least {MIN_MAX_BYTES} (a v2 header with AF_UNIX addresses)"),
            );
        }
        ProxyProtocolConfig {
            trusted,
            timeout: self.positive_millis(
                "server.proxy_protocol_timeout_ms",
                raw.proxy_protocol_timeout_ms,
            ),
            max_header_bytes: raw.proxy_protocol_max_header_bytes,
        }
    }
}
