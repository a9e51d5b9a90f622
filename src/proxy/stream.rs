//! The connection to a backend: plain TCP, or TLS over it. An enum rather than a trait
//! object: the plain arm is a direct call behind one branch, as fast as the bare socket it
//! replaced, and only the plain arm hands out its socket for `splice(2)`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::tls::{TlsFailure, TlsTarget};

#[derive(Debug)]
pub enum UpstreamStream {
    Plain(TcpStream),
    /// Boxed: rustls' session state is kilobytes, and streams move by value between the
    /// pool and a request.
    Tls(Box<TlsStream<TcpStream>>),
}

/// Why no connection to a backend was made. Nothing was sent: any request may go to the
/// next backend.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Tcp(io::Error),
    /// The TCP connect and the TLS handshake together took longer than the route's
    /// connection timeout.
    #[error("connect timed out")]
    TimedOut,
    #[error("TLS {0}")]
    Tls(TlsFailure),
}

impl ConnectError {
    /// The failure as counted in a backend's health record and rate-limited logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::Tcp(_) | ConnectError::TimedOut => "connect",
            ConnectError::Tls(failure) if failure.is_certificate() => "tls certificate",
            ConnectError::Tls(_) => "tls handshake",
        }
    }
}

/// A new connection to `address` (`literal` when it is an IP literal, so the common case
/// skips the resolver), with TLS on top when `tls` says so. No deadline of its own: callers
/// bound the whole of it.
pub async fn connect(
    address: &str,
    literal: Option<SocketAddr>,
    tls: Option<&TlsTarget>,
) -> Result<UpstreamStream, ConnectError> {
    let tcp = match literal {
        Some(addr) => TcpStream::connect(addr).await,
        None => TcpStream::connect(address).await,
    }
    .map_err(ConnectError::Tcp)?;
    tcp.set_nodelay(true).map_err(ConnectError::Tcp)?;
    match tls {
        None => Ok(UpstreamStream::Plain(tcp)),
        Some(target) => match target.handshake(tcp).await {
            Ok(stream) => Ok(UpstreamStream::Tls(Box::new(stream))),
            Err(failure) => Err(ConnectError::Tls(failure)),
        },
    }
}

impl UpstreamStream {
    /// The socket itself when bytes written to it reach the backend as they are.
    pub fn as_plain_tcp(&self) -> Option<&TcpStream> {
        match self {
            UpstreamStream::Plain(tcp) => Some(tcp),
            UpstreamStream::Tls(_) => None,
        }
    }

    fn socket(&self) -> &TcpStream {
        match self {
            UpstreamStream::Plain(tcp) => tcp,
            UpstreamStream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Hand whatever rustls still holds to the kernel, waiting at most `wait` for room. A
    /// write over TLS is done once rustls has the bytes: when the socket was full, the last
    /// records wait inside rustls for the next write, and at the end of a request there is
    /// none. A plain socket holds nothing back, and costs nothing here.
    pub async fn push_out(&mut self, wait: Duration) -> io::Result<()> {
        let UpstreamStream::Tls(tls) = self else {
            return Ok(());
        };
        match tokio::time::timeout(wait, tls.flush()).await {
            Ok(flushed) => flushed,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
    }

    /// Wait until the backend has sent something, without reading it. Over TLS that may be
    /// a record that holds no data for us (a session ticket): the read that follows then
    /// waits on. Nothing of a response can sit decrypted inside rustls at this point: a new
    /// connection has had no request yet, and a pooled one was vetted empty.
    pub async fn readable(&self) -> io::Result<()> {
        self.socket().readable().await
    }

    /// Whether an idle connection may carry another request: nothing to read. EOF means the
    /// backend closed it, and bytes mean it sent something we never asked for. The
    /// reactor's readiness answers "nothing happened" without a system call, which is the
    /// common case; only a connection marked readable is probed. (A close racing with reuse
    /// is covered by the retry of stale pooled connections.)
    pub fn is_reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self {
            UpstreamStream::Plain(tcp) => match tcp.poll_read_ready(&mut cx) {
                Poll::Pending => true,
                Poll::Ready(Err(_)) => false,
                Poll::Ready(Ok(())) => {
                    let mut probe = [0u8; 1];
                    matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                }
            },
            // What the backend sent while the connection was idle goes through rustls: a
            // session ticket or a key update is taken in and leaves nothing to read, a
            // close_notify reads as EOF, and data is a response nobody asked for.
            UpstreamStream::Tls(tls) => {
                let mut probe = [0u8; 1];
                let mut probe = ReadBuf::new(&mut probe);
                matches!(
                    Pin::new(tls.as_mut()).poll_read(&mut cx, &mut probe),
                    Poll::Pending
                )
            }
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            UpstreamStream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            UpstreamStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    /// Passed on so the plain socket keeps its writev(2) for a head and body in two pieces.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(tcp) => tcp.is_write_vectored(),
            UpstreamStream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            UpstreamStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            UpstreamStream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::config::TlsRoots;
    use crate::proxy::tls::GroupTls;

    /// A TLS server on loopback with a self-signed certificate for 127.0.0.1, and a target
    /// that trusts it.
    async fn tls_server() -> (TcpListener, TlsAcceptor, TlsTarget) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap();
        let roots = TlsRoots::File {
            path: "test.pem".into(),
            certificates: Arc::from(vec![certificate.der().clone()]),
        };
        let group = GroupTls::carried_over(&roots, None, "test");
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let target = TlsTarget::new(&group, rustls_pki_types::ServerName::from(ip));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        (listener, TlsAcceptor::from(Arc::new(config)), target)
    }

    #[tokio::test]
    async fn push_out_returns_once_the_kernel_has_every_record_rustls_held() {
        let (listener, acceptor, target) = tls_server().await;
        let addr = listener.local_addr().unwrap();
        let address = addr.to_string();
        let accept = async {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.unwrap()
        };
        let (client, server) = tokio::join!(connect(&address, Some(addr), Some(&target)), accept);
        let mut client = client.unwrap();
        let mut server = server;
        let UpstreamStream::Tls(tls) = &mut client else {
            panic!("not TLS");
        };
        // With no limit rustls takes any write at once, whatever the socket can take: far
        // more than a loopback socket buffers while its peer reads nothing.
        tls.get_mut().1.set_buffer_limit(None);
        let sent = vec![7u8; 48 * 1024 * 1024];
        assert_eq!(
            client.write(&sent).await.unwrap(),
            sent.len(),
            "all taken by rustls"
        );
        let stuck = client.push_out(Duration::from_millis(100)).await;
        assert_eq!(
            stuck.map_err(|e| e.kind()),
            Err(io::ErrorKind::TimedOut),
            "the peer reads nothing: the records cannot all have left"
        );
        let reader = tokio::spawn(async move {
            let mut received = 0;
            let mut chunk = vec![0u8; 256 * 1024];
            while received < sent.len() {
                let n = server.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed after {received} bytes");
                received += n;
            }
            received
        });
        client.push_out(Duration::from_secs(30)).await.unwrap();
        assert_eq!(reader.await.unwrap(), 48 * 1024 * 1024);
    }

    #[tokio::test]
    async fn push_out_on_a_plain_socket_is_free() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = connect(&addr.to_string(), Some(addr), None).await.unwrap();
        assert!(client.as_plain_tcp().is_some());
        client.push_out(Duration::ZERO).await.unwrap();
    }
}
