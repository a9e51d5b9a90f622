//! `101 Switching Protocols` tunnels (WebSocket): the response head to the client, then bytes
//! copied both ways until both sides have closed, either fails, or nothing moves in either
//! direction for the route's tunnel idle timeout (HAProxy's `timeout tunnel`).

use std::future::pending;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::exchange::{Client, Outcome};
use super::headers::{encode_response_head, AddedFields};
use super::stream::UpstreamStream;
use super::upstream::Backend;
use crate::http::date::with_http_date;
use crate::http::persistence::Persistence;
use crate::http::request::Version;
use crate::http::response_parser::ParsedResponse;
use crate::http::writer::{ConnectionState, ResponseFraming};
use crate::transport::{write_all_with_progress, Transport};

/// Bytes taken per read in each direction; a tunnel holds two such buffers for its whole
/// life, so they are kept small (tokio's `copy_bidirectional` uses the same).
const TUNNEL_BUFFER_BYTES: usize = 8 * 1024;

/// Send the `101` head, then carry bytes both ways until the tunnel ends. The client
/// connection is not reused afterwards, and the upstream one is closed.
pub(super) async fn tunnel<S: Transport>(
    client: &mut Client<'_, S>,
    mut upstream: UpstreamStream,
    response: &ParsedResponse,
    response_head: &[u8],
    leftover: BytesMut,
    backend: &Backend,
    idle_timeout: Duration,
) -> Outcome {
    let mut out = BytesMut::with_capacity(response_head.len() + 64);
    with_http_date(|date| {
        encode_response_head(
            &mut out,
            response,
            response_head,
            ResponseFraming::Bodyless,
            ConnectionState {
                request_version: Version::Http11,
                keep_alive: true,
            },
            date,
            AddedFields::default(),
        )
    });
    out.extend_from_slice(&leftover);
    let timeout = client.limits.write_timeout;
    let outcome = Outcome::Responded {
        status: response.status,
        body_bytes: 0,
        persistence: Persistence::Close,
        backend: Arc::clone(&backend.name),
    };
    if write_all_with_progress(client.stream, &mut &out[..], timeout)
        .await
        .is_err()
    {
        return outcome;
    }
    // Bytes the client sent after its head already belong to the new protocol.
    if !client.read_buf.is_empty() {
        let mut early = &client.read_buf[..];
        if write_all_with_progress(&mut upstream, &mut early, idle_timeout)
            .await
            .is_err()
        {
            return outcome;
        }
        // The client may wait to hear back before it sends more.
        if upstream.push_out(idle_timeout).await.is_err() {
            return outcome;
        }
        client.read_buf.clear();
    }
    let copied = copy_both_ways(client.stream, &mut upstream, idle_timeout).await;
    let (to_backend, to_client) = (copied.a_to_b, copied.b_to_a);
    match copied.end {
        TunnelEnd::Closed => {
            tracing::debug!(to_backend, to_client, "upgraded connection closed");
        }
        TunnelEnd::Idle => {
            let idle_ms = idle_timeout.as_millis() as u64;
            tracing::debug!(
                to_backend,
                to_client,
                idle_ms,
                "upgraded connection idle; closing"
            );
        }
        TunnelEnd::Failed(error) => {
            tracing::debug!(%error, to_backend, to_client, "upgraded connection failed");
        }
    }
    outcome
}

/// How a tunnel ended.
#[derive(Debug)]
enum TunnelEnd {
    /// Both sides closed their sending half.
    Closed,
    /// No byte moved in either direction for the idle timeout.
    Idle,
    /// A read or write on either side failed.
    Failed(io::Error),
}

/// The end of a tunnel and the bytes it carried each way.
#[derive(Debug)]
struct Copied {
    end: TunnelEnd,
    a_to_b: u64,
    b_to_a: u64,
}

/// Copy bytes from `a` to `b` and from `b` to `a` at the same time, each direction on its
/// own so a peer that stops reading stalls only the direction towards it. A side that
/// closes its sending half has that passed on (a half-close), and the other direction goes
/// on. Ends when both directions are closed, either fails, or no byte has moved either way
/// for `idle_timeout`; dropping the halves then leaves both streams to their owners to close.
async fn copy_both_ways<A, B>(a: &mut A, b: &mut B, idle_timeout: Duration) -> Copied
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let (mut a_to_b, mut b_to_a) = (0, 0);
    let end = {
        let forward = copy_one_way(&mut a_read, &mut b_write, &activity, &mut a_to_b);
        let backward = copy_one_way(&mut b_read, &mut a_write, &activity, &mut b_to_a);
        tokio::select! {
            copied = async { tokio::try_join!(forward, backward) } => match copied {
                Ok(_) => TunnelEnd::Closed,
                Err(error) => TunnelEnd::Failed(error),
            },
            () = activity.idle_for(idle_timeout) => TunnelEnd::Idle,
        }
    };
    Copied {
        end,
        a_to_b,
        b_to_a,
    }
}

/// Copy until `reader` ends, then shut `writer` down. Every read and every write that moves
/// bytes counts as activity, so a slow but moving transfer is not idle.
async fn copy_one_way<R, W>(
    reader: &mut R,
    writer: &mut W,
    activity: &Activity,
    copied: &mut u64,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; TUNNEL_BUFFER_BYTES];
    loop {
        let read = reader.read(&mut buf).await?;
        if read == 0 {
            return writer.shutdown().await;
        }
        activity.touch();
        let mut pending = &buf[..read];
        while !pending.is_empty() {
            let written = writer.write(pending).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            activity.touch();
            pending = pending.get(written..).unwrap_or_default();
            *copied += written as u64;
        }
        // A TLS writer may hold the last records back until its next write, which only
        // comes when the other side sends more; a socket flushes at once.
        writer.flush().await?;
    }
}

/// When a byte last moved in either direction. Both directions write it and the idle
/// watchdog reads it; an atomic rather than a `Cell` so the connection's future stays `Send`.
struct Activity {
    opened: Instant,
    /// Milliseconds from `opened` to the last movement.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(elapsed, Ordering::Relaxed);
    }

    /// Returns once nothing has moved for `timeout`. While traffic flows it wakes once per
    /// `timeout` and sleeps again until the new deadline, instead of re-arming a timer on
    /// every read and write.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let Some(deadline) = self
                .opened
                .checked_add(last)
                .and_then(|moved| moved.checked_add(timeout))
            else {
                // Further than the clock reaches: never idle.
                return pending().await;
            };
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    const IDLE: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_ends_after_the_idle_timeout() {
        let (mut a, _a_peer) = duplex(64);
        let (mut b, _b_peer) = duplex(64);
        let started = Instant::now();
        let copied = copy_both_ways(&mut a, &mut b, IDLE).await;
        assert!(matches!(copied.end, TunnelEnd::Idle), "{copied:?}");
        assert_eq!(started.elapsed(), IDLE);
    }

    /// Traffic one way only, a byte every 600 ms for 3 s: the tunnel outlives the 1 s idle
    /// timeout and ends one idle timeout after the last byte.
    async fn traffic_one_way(a_to_b: bool) {
        let (mut a, mut a_peer) = duplex(64);
        let (mut b, mut b_peer) = duplex(64);
        let started = Instant::now();
        let (sender, receiver) = if a_to_b {
            (&mut a_peer, &mut b_peer)
        } else {
            (&mut b_peer, &mut a_peer)
        };
        let peers = async {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(600)).await;
                sender.write_all(b"x").await.unwrap();
                let mut byte = [0u8; 1];
                receiver.read_exact(&mut byte).await.unwrap();
            }
            // Keep both peers open (and silent) until the tunnel gives up.
            pending::<()>().await
        };
        let copied = tokio::select! {
            copied = copy_both_ways(&mut a, &mut b, IDLE) => copied,
            () = peers => unreachable!(),
        };
        assert!(matches!(copied.end, TunnelEnd::Idle), "{copied:?}");
        assert_eq!(started.elapsed(), Duration::from_millis(3000) + IDLE);
        let expected = if a_to_b { (5, 0) } else { (0, 5) };
        assert_eq!((copied.a_to_b, copied.b_to_a), expected);
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_from_a_alone_keeps_the_tunnel_open() {
        traffic_one_way(true).await;
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_from_b_alone_keeps_the_tunnel_open() {
        traffic_one_way(false).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_close_is_passed_on_and_the_other_way_goes_on() {
        let (mut a, mut a_peer) = duplex(64);
        let (mut b, mut b_peer) = duplex(64);
        let peers = async {
            a_peer.write_all(b"bye").await.unwrap();
            a_peer.shutdown().await.unwrap();
            let mut got = Vec::new();
            b_peer.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"bye", "a's data then its close reach b");
            b_peer.write_all(b"late reply").await.unwrap();
            b_peer.shutdown().await.unwrap();
            let mut got = Vec::new();
            a_peer.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"late reply");
        };
        let (copied, ()) = tokio::join!(copy_both_ways(&mut a, &mut b, IDLE), peers);
        assert!(matches!(copied.end, TunnelEnd::Closed), "{copied:?}");
        assert_eq!((copied.a_to_b, copied.b_to_a), (3, 10));
    }
}
