//! TLS handshake counters: how each handshake on the HTTPS listener ended, and which protocol
//! version the successful ones negotiated. Shared atomics rather than per-thread shards: a
//! handshake costs two orders of magnitude more than an uncontended add, and happens once
//! per connection, not per request.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::encode_counters;

/// How a handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeResult {
    /// Completed; the version is counted too.
    Success(TlsVersion),
    /// Refused by rustls (a version, cipher suite or certificate the two sides do not share,
    /// a malformed message).
    Failed,
    /// Not complete within `tls.handshake_timeout_ms`.
    Timeout,
    /// The first byte was not a TLS handshake record: plain HTTP to the HTTPS port.
    PlainHttp,
    /// The client closed or the socket failed before the handshake began.
    Closed,
}

/// The protocol version a handshake negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
    Other,
}

const RESULTS: [&str; 5] = ["success", "failed", "timeout", "plain_http", "closed"];
const VERSIONS: [&str; 3] = ["TLSv1.2", "TLSv1.3", "other"];

static BY_RESULT: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
static BY_VERSION: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// Count one handshake's end.
pub fn record(result: HandshakeResult) {
    let index = match result {
        HandshakeResult::Success(version) => {
            let version = match version {
                TlsVersion::Tls12 => 0,
                TlsVersion::Tls13 => 1,
                TlsVersion::Other => 2,
            };
            BY_VERSION[version].fetch_add(1, Ordering::Relaxed);
            0
        }
        HandshakeResult::Failed => 1,
        HandshakeResult::Timeout => 2,
        HandshakeResult::PlainHttp => 3,
        HandshakeResult::Closed => 4,
    };
    BY_RESULT[index].fetch_add(1, Ordering::Relaxed);
}

/// `sentinel_tls_handshakes_total{result}` and `sentinel_tls_handshake_versions_total{version}`.
/// Both are empty (no samples) until the process has seen a handshake, so a server without
/// `tls` shows no TLS series.
#[derive(Debug)]
pub struct TlsHandshakeCounters;

impl Collector for TlsHandshakeCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let results: Vec<u64> = BY_RESULT
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        if results.iter().all(|&count| count == 0) {
            return Ok(());
        }
        encode_counters(
            &mut encoder,
            "sentinel_tls_handshakes",
            "TLS handshakes on the HTTPS listener, by how they ended: success, failed (refused by TLS), timeout, plain_http (plain HTTP sent to the HTTPS port), closed (before the handshake began).",
            None,
            RESULTS
                .iter()
                .zip(&results)
                .map(|(result, &count)| ([("result", *result)], count)),
        )?;
        encode_counters(
            &mut encoder,
            "sentinel_tls_handshake_versions",
            "Successful TLS handshakes by negotiated protocol version.",
            None,
            VERSIONS
                .iter()
                .zip(&BY_VERSION)
                .map(|(version, count)| ([("version", *version)], count.load(Ordering::Relaxed))),
        )
    }
}
