//! The byte streams a client connection runs over, and the socket write helpers that both the
//! connection and the proxy use. A [`Transport`] is any async byte stream; plain TCP also
//! offers the zero-copy paths (`sendfile(2)`, `splice(2)`, `send(2)` with `MSG_MORE`) that only
//! a kernel socket can take, and every caller falls back to copying when a stream has none.

#[cfg(target_os = "linux")]
pub mod sendfile;
mod tls_server;

use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::http::scheme::Scheme;

/// A client connection's byte stream: plain TCP, or TLS over it.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// How the client reached us: what a backend is told (`X-Forwarded-Proto`) and whether
    /// `tls.redirect_http` sends the client elsewhere.
    fn scheme(&self) -> Scheme {
        Scheme::Http
    }

    /// Ready when a read would make progress, without reading: an idle keep-alive connection
    /// waits here holding no buffer. A stream that cannot tell (one that buffers inside, as
    /// TLS does) answers ready at once and the caller reads.
    fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The kernel socket under this stream when bytes written to it reach the peer as they
    /// are (plain TCP): the zero-copy paths write to it directly. `None` for anything that
    /// transforms the bytes on the way (TLS).
    fn as_plain_tcp(&mut self) -> Option<&mut TcpStream> {
        None
    }
}

impl Transport for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn as_plain_tcp(&mut self) -> Option<&mut TcpStream> {
        Some(self)
    }
}

/// Wait until `stream` has something to read (see [`Transport::poll_read_ready`]).
pub async fn readable<S: Transport>(stream: &mut S) -> io::Result<()> {
    std::future::poll_fn(move |cx| stream.poll_read_ready(cx)).await
}

/// Write all of `out`, failing only when the peer accepts nothing for `write_timeout`: a slow
/// reader that keeps making progress gets its whole response, a stalled one is cut off.
pub async fn write_all_with_progress<W, B>(
    stream: &mut W,
    out: &mut B,
    write_timeout: Duration,
) -> io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
    B: Buf,
{
    while out.has_remaining() {
        // One contiguous piece goes out with send(2): writev(2) with a single iovec costs the
        // kernel's vectored-I/O path for nothing (perf: ~0.4 µs of `vfs_writev` per call).
        let contiguous = out.chunk().len() == out.remaining();
        // Most writes are taken whole at the first try: only one that has to wait gets a
        // timer (a clock read and a timer entry per write, ~150 instructions, otherwise).
        let at_once = if contiguous {
            at_first_poll(stream.write(out.chunk())).await
        } else {
            at_first_poll(stream.write_buf(out)).await
        };
        let written = match at_once {
            Some(written) => Ok(written),
            None if contiguous => timeout(write_timeout, stream.write(out.chunk())).await,
            None => timeout(write_timeout, stream.write_buf(out)).await,
        };
        match written {
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
            Ok(Err(error)) => return Err(error),
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) if contiguous => out.advance(n),
            Ok(Ok(_)) => {}
        }
    }
    // A TLS stream reports bytes written once it holds them; when the socket was full, the
    // last records of a response wait inside it for a next write that may never come (the
    // client waits for them before it sends its next request). Plain TCP holds nothing back:
    // its flush is ready at the first poll, so only a flush that has to wait gets a timer.
    if let Some(flushed) = at_first_poll(stream.flush()).await {
        return flushed;
    }
    match timeout(write_timeout, stream.flush()).await {
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        Ok(flushed) => flushed,
    }
}

/// `future`'s output when it is ready at its first poll; `None`, the future dropped, when it
/// is not. Only for futures that do nothing until they are ready (a socket write or flush:
/// tokio's give up their turn without writing), so the caller can start them again under a
/// timeout. The first poll registers the task's waker like any other.
async fn at_first_poll<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        Poll::Ready(match future.as_mut().poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await
}
