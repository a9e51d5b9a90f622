//! Idle keep-alive connections to one backend, reused most-recently-used first (the one
//! least likely to have been closed by the backend). Each is checked before reuse: a
//! connection the backend has closed, or that has unread bytes, is dropped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

#[derive(Debug)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    since: Instant,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A live idle connection, if there is one.
    pub fn take(&self) -> Option<TcpStream> {
        let now = Instant::now();
        loop {
            let idle = self.idle().pop()?;
            if now.duration_since(idle.since) >= self.idle_timeout {
                // Everything below is older still.
                self.idle().clear();
                return None;
            }
            if is_reusable(&idle.stream) {
                return Some(idle.stream);
            }
        }
    }

    /// Keep `stream` for reuse, unless the pool is full.
    pub fn put(&self, stream: TcpStream) {
        let now = Instant::now();
        let mut idle = self.idle();
        // Oldest first: drop what expired so the pool never holds dead sockets for long.
        let expired = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) >= self.idle_timeout)
            .count();
        idle.drain(..expired);
        if idle.len() < self.max_idle {
            idle.push(Idle { stream, since: now });
        }
    }
}

impl Pool {
    /// Idle connections held now (for the admin endpoint).
    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }
}

/// An idle connection is reusable only if it has nothing to read: EOF means the backend
/// closed it, and bytes mean it sent something we never asked for. The reactor's readiness
/// answers "nothing happened" without a system call, which is the common case; only a
/// connection marked readable is probed. (A close racing with reuse is covered by the retry
/// of stale pooled connections.)
fn is_reusable(stream: &TcpStream) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        std::task::Poll::Pending => true,
        std::task::Poll::Ready(Err(_)) => false,
        std::task::Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// `n` client ends of loopback connections (the server ends are kept open in `keep`).
    async fn streams(n: usize, keep: &mut Vec<TcpStream>) -> Vec<TcpStream> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(TcpStream::connect(addr).await.unwrap());
            keep.push(listener.accept().await.unwrap().0);
        }
        out
    }

    #[tokio::test]
    async fn keeps_at_most_max_idle_connections() {
        let mut peers = Vec::new();
        let pool = Pool::new(2, Duration::from_secs(60));
        for stream in streams(3, &mut peers).await {
            pool.put(stream);
        }
        assert_eq!(
            pool.idle_count(),
            2,
            "the third connection is over the limit"
        );
        assert!(pool.take().is_some());
        assert!(pool.take().is_some());
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn zero_keeps_nothing() {
        let mut peers = Vec::new();
        let pool = Pool::new(0, Duration::from_secs(60));
        for stream in streams(1, &mut peers).await {
            pool.put(stream);
        }
        assert_eq!(pool.idle_count(), 0);
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn a_connection_closed_by_the_backend_is_not_reused() {
        let mut peers = Vec::new();
        let pool = Pool::new(4, Duration::from_secs(60));
        for stream in streams(1, &mut peers).await {
            pool.put(stream);
        }
        peers.clear(); // the backend closes its end
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take().is_none());
    }
}
