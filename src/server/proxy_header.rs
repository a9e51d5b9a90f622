//! Reading the PROXY protocol header off a just-accepted socket, before TLS or HTTP see it.
//!
//! The socket is peeked at, never read past the header: once the parser says
//! `Complete(_, consumed)`, exactly `consumed` bytes are read and discarded, so whatever the
//! balancer sent behind the header in the same segment (a request, a ClientHello) is still in
//! the kernel's queue for the connection or the handshake, and the stream stays a plain
//! `TcpStream` with its zero-copy paths (no wrapper type replaying a buffer).

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;

use crate::config::ProxyProtocolConfig;
use crate::http::proxy_protocol::{self, Parsed, ProxyHeader, ProxyHeaderError};
use crate::metrics::Refusal;

/// Read the header under `settings.timeout`; the client's address (`peer` for `LOCAL` and
/// `UNKNOWN`), or why the connection must close.
pub(super) async fn read_proxy_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    settings: &ProxyProtocolConfig,
) -> Result<SocketAddr, Refusal> {
    if !settings.is_trusted(peer.ip()) {
        return Err(Refusal::ProxyUntrustedPeer);
    }
    let read = tokio::time::timeout(
        settings.timeout,
        peek_header(stream, settings.max_header_bytes),
    );
    let (header, consumed) = match read.await {
        Err(_) => return Err(Refusal::ProxyHeaderTimeout),
        Ok(Err(HeaderReadError::Header(error))) => return Err(refusal(error)),
        Ok(Err(HeaderReadError::Closed)) => return Err(Refusal::ProxyHeaderTruncated),
        Ok(Err(HeaderReadError::Io(error))) => {
            tracing::debug!(%peer, %error, "reading the PROXY protocol header failed");
            return Err(Refusal::ProxyHeaderTruncated);
        }
        Ok(Ok(parsed)) => parsed,
    };
    // The bytes are queued already: this read does not wait.
    let mut discard = vec![0u8; consumed];
    let consumed_now = tokio::time::timeout(settings.timeout, stream.read_exact(&mut discard));
    match consumed_now.await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => return Err(Refusal::ProxyHeaderTruncated),
    }
    Ok(match header {
        ProxyHeader::Proxied { source, .. } => source,
        ProxyHeader::Local => peer,
    })
}

fn refusal(error: ProxyHeaderError) -> Refusal {
    match error {
        ProxyHeaderError::Missing => Refusal::ProxyHeaderMissing,
        ProxyHeaderError::Malformed => Refusal::ProxyHeaderMalformed,
        ProxyHeaderError::Oversized => Refusal::ProxyHeaderOversized,
    }
}

enum HeaderReadError {
    Header(ProxyHeaderError),
    /// The peer closed before the header was whole.
    Closed,
    Io(io::Error),
}

/// Peek until the queued bytes hold a whole header (or cannot become one).
async fn peek_header(
    stream: &TcpStream,
    max_bytes: usize,
) -> Result<(ProxyHeader, usize), HeaderReadError> {
    let max_bytes = max_bytes.max(proxy_protocol::MIN_MAX_BYTES);
    let mut buf = vec![0u8; max_bytes];
    let mut seen = 0;
    loop {
        let queued = peek_more(stream, &mut buf, seen)
            .await
            .map_err(HeaderReadError::Io)?;
        if queued <= seen {
            return Err(HeaderReadError::Closed);
        }
        seen = queued;
        match proxy_protocol::parse(&buf[..seen], max_bytes) {
            Ok(Parsed::Complete(header, consumed)) => return Ok((header, consumed)),
            Ok(Parsed::Partial) if seen < buf.len() => {}
            // A full buffer that is still a prefix: the parser's limit says otherwise, but
            // never wait for bytes that could not fit.
            Ok(Parsed::Partial) => {
                return Err(HeaderReadError::Header(ProxyHeaderError::Oversized))
            }
            Err(error) => return Err(HeaderReadError::Header(error)),
        }
    }
}

/// Peek at the queued bytes once more than `seen` are queued; `seen` (or fewer) means the peer
/// closed. A peek does not consume, so tokio's readiness stays set after one that found data:
/// waiting again goes through `try_io`, whose `WouldBlock` clears the readiness it saw (not a
/// newer event), and the next wait is for the kernel's next edge.
async fn peek_more(stream: &TcpStream, buf: &mut [u8], seen: usize) -> io::Result<usize> {
    loop {
        let ready = stream.ready(Interest::READABLE).await?;
        let peeked = stream.try_io(Interest::READABLE, || {
            let queued = peek_now(stream, buf)?;
            if queued > seen || queued == 0 {
                Ok(queued)
            } else if ready.is_read_closed() {
                // The peer's FIN is behind the bytes already seen: nothing more will come.
                Ok(queued)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        });
        match peeked {
            Ok(queued) => return Ok(queued),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
    }
}

/// One non-blocking `recv(MSG_PEEK)`.
#[cfg(target_os = "linux")]
fn peek_now(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    Ok(rustix::net::recv(stream, buf, rustix::net::RecvFlags::PEEK)?.0)
}

/// Elsewhere through a duplicate of the socket (std's safe `peek`); a slow path only taken
/// while a header is incomplete.
#[cfg(not(target_os = "linux"))]
fn peek_now(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let duplicate: std::net::TcpStream = socket2::SockRef::from(stream).try_clone()?.into();
    duplicate.peek(buf)
}
