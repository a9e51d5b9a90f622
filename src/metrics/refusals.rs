//! Connections the listener closes before serving them: a bad or missing PROXY protocol
//! header, a peer not allowed to send one, a client address over its connection cap. Rare
//! by design (each is a misconfiguration or an abuse), so plain shared atomics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a connection was closed on accept; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No PROXY protocol signature where one was required.
    ProxyHeaderMissing,
    /// A PROXY protocol header that breaks the grammar.
    ProxyHeaderMalformed,
    /// A PROXY protocol header over `server.proxy_protocol_max_header_bytes`.
    ProxyHeaderOversized,
    /// No whole header within `server.proxy_protocol_timeout_ms`.
    ProxyHeaderTimeout,
    /// The peer closed (or the read failed) before the header was whole.
    ProxyHeaderTruncated,
    /// The peer is not in `server.proxy_protocol_trusted`.
    ProxyUntrustedPeer,
    /// The client address already holds `server.max_connections_per_ip` connections.
    PerIpCap,
}

impl Refusal {
    const ALL: [Refusal; 7] = [
        Refusal::ProxyHeaderMissing,
        Refusal::ProxyHeaderMalformed,
        Refusal::ProxyHeaderOversized,
        Refusal::ProxyHeaderTimeout,
        Refusal::ProxyHeaderTruncated,
        Refusal::ProxyUntrustedPeer,
        Refusal::PerIpCap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ProxyHeaderMissing => "missing",
            Refusal::ProxyHeaderMalformed => "malformed",
            Refusal::ProxyHeaderOversized => "oversized",
            Refusal::ProxyHeaderTimeout => "timeout",
            Refusal::ProxyHeaderTruncated => "truncated",
            Refusal::ProxyUntrustedPeer => "untrusted",
            Refusal::PerIpCap => "per_ip_cap",
        }
    }

    fn is_proxy_protocol(self) -> bool {
        self != Refusal::PerIpCap
    }
}

static COUNTS: [AtomicU64; Refusal::ALL.len()] = [const { AtomicU64::new(0) }; Refusal::ALL.len()];

/// Count one connection closed for `reason`.
pub fn record_refusal(reason: Refusal) {
    COUNTS[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// `(reason, count)` of the PROXY protocol failures
/// (`sentinel_proxy_protocol_errors_total`).
pub fn proxy_protocol_errors() -> impl Iterator<Item = (&'static str, u64)> {
    counts()
        .filter(|(reason, _)| reason.is_proxy_protocol())
        .map(|(r, n)| (r.as_str(), n))
}

/// Connections refused for `server.max_connections_per_ip`.
pub fn per_ip_refusals() -> u64 {
    COUNTS[Refusal::PerIpCap as usize].load(Ordering::Relaxed)
}

fn counts() -> impl Iterator<Item = (Refusal, u64)> {
    Refusal::ALL
        .into_iter()
        .map(|reason| (reason, COUNTS[reason as usize].load(Ordering::Relaxed)))
}
