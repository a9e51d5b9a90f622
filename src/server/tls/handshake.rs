//! From an accepted TCP connection to a TLS stream, or to nothing: the first byte tells a
//! TLS client from one speaking plain HTTP to the HTTPS port (who gets a plain-text 400 and
//! a close, never a hang), and the whole handshake runs under `tls.handshake_timeout_ms`,
//! so a client that stalls halfway holds its connection slot no longer than that.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::TlsTerminator;
use crate::config::ConnectionLimits;
use crate::metrics::tls_handshakes::{record, HandshakeResult, TlsVersion};

/// The content type of a TLS handshake record (RFC 8446 §5.1), the first byte any TLS
/// client sends. An HTTP request starts with a method name, which is letters.
const HANDSHAKE_RECORD: u8 = 0x16;

/// What a client that spoke plain HTTP to the HTTPS port is told.
const PLAIN_HTTP_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 85\r\n\
Connection: close\r\n\
\r\n\
An HTTP request was sent to the HTTPS port. Use https:// to reach this port, please.\n";

/// Complete the TLS handshake on `stream`, or log why not and close it.
pub(crate) async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    tls: &TlsTerminator,
    limits: &ConnectionLimits,
) -> Option<TlsStream<TcpStream>> {
    let active = tls.active();
    let handshake_timeout = active.handshake_timeout;
    let deadline = Instant::now() + handshake_timeout;
    let timeout_ms = handshake_timeout.as_millis() as u64;
    let mut first = [0u8; 1];
    match timeout_at(deadline, stream.peek(&mut first)).await {
        Err(_) => {
            tracing::debug!(client = %peer, timeout_ms, "TLS handshake timed out before it began");
            record(HandshakeResult::Timeout);
            return None;
        }
        Ok(Ok(0)) => {
            record(HandshakeResult::Closed);
            return None;
        }
        Ok(Err(error)) => {
            tracing::debug!(client = %peer, %error, "TLS connection failed before the handshake");
            record(HandshakeResult::Closed);
            return None;
        }
        Ok(Ok(_)) if first[0] != HANDSHAKE_RECORD => {
            tracing::debug!(client = %peer, first_byte = first[0], "plain HTTP sent to the HTTPS port; answered 400");
            record(HandshakeResult::PlainHttp);
            answer_plain_http(stream, limits).await;
            return None;
        }
        Ok(Ok(_)) => {}
    }
    let acceptor = TlsAcceptor::from(active.server_config.clone());
    match timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let version = match stream.get_ref().1.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_2) => TlsVersion::Tls12,
                Some(rustls::ProtocolVersion::TLSv1_3) => TlsVersion::Tls13,
                _ => TlsVersion::Other,
            };
            record(HandshakeResult::Success(version));
            Some(stream)
        }
        Ok(Err(error)) => {
            // rustls has sent the alert that tells the client why (a version or cipher
            // suite we do not speak, a certificate we do not trust).
            tracing::debug!(client = %peer, %error, "TLS handshake failed");
            record(HandshakeResult::Failed);
            None
        }
        Err(_) => {
            tracing::debug!(client = %peer, timeout_ms, "TLS handshake timed out");
            record(HandshakeResult::Timeout);
            None
        }
    }
}

/// Say in plain text what went wrong, then close as the connection would after a 400: the
/// write side first, then read and drop what the client still sends for a moment, so that
/// its unread request does not turn our close into a reset that destroys the answer.
async fn answer_plain_http(mut stream: TcpStream, limits: &ConnectionLimits) {
    let written = timeout(limits.write_timeout, stream.write_all(PLAIN_HTTP_RESPONSE)).await;
    if !matches!(written, Ok(Ok(()))) || stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + limits.linger_timeout;
    let mut scratch = [0u8; 1024];
    while let Ok(Ok(1..)) = timeout_at(deadline, stream.read(&mut scratch)).await {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_answer_announces_its_length_exactly() {
        let text = std::str::from_utf8(PLAIN_HTTP_RESPONSE).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .and_then(|value| value.parse().ok())
            .expect("Content-Length");
        assert_eq!(length, body.len());
    }
}
