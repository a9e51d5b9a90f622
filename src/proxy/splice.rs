//! Response bodies moved from the backend's socket to the client's without passing through
//! user space (Linux): `splice(2)` into a pipe takes the received pages by reference, and
//! `splice(2)` out of it hands them to the client socket, so the two copies a read and a
//! write would make disappear. Used for the long Content-Length stretch of a body; heads,
//! chunked bodies and short bodies take the ordinary buffered path. Safe wrappers from
//! `rustix`; readiness and timeouts from tokio, as for every other read and write.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bodies with fewer bytes left than this are copied: below it the pipe's two extra system
/// calls per piece cost more than the copies they save.
pub const MIN_BYTES: u64 = 16 * 1024;

/// Most bytes moved per `splice` into the pipe: its capacity (the kernel's default, 16 pages),
/// so a full pipe never stalls the read side.
const PIPE_BYTES: usize = 64 * 1024;

/// Idle pipes kept per worker thread.
const KEEP: usize = 8;

thread_local! {
    static SPARE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// A pipe that is empty whenever it is not in use (a pipe with bytes left in it after an
/// error is closed, never reused).
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn take() -> io::Result<Pipe> {
        if let Some(pipe) = SPARE.with(|spare| spare.borrow_mut().pop()) {
            return Ok(pipe);
        }
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Pipe { read, write })
    }

    fn give_back(self) {
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < KEEP {
                spare.push(self);
            }
        });
    }
}

/// Which side failed, so the caller can blame the right peer.
#[derive(Debug)]
pub enum SpliceError {
    /// The pipe could not be created: nothing was moved, the caller may copy instead.
    Unavailable(io::Error),
    Upstream(io::Error),
    Client(io::Error),
}

/// Move exactly `len` body bytes from `upstream` to `client`. `sent` counts bytes that
/// reached the client. `idle_timeout` bounds each wait for the backend, `write_timeout`
/// each wait for the client to accept more, as on the buffered path.
pub async fn relay_body(
    upstream: &TcpStream,
    client: &TcpStream,
    len: u64,
    idle_timeout: Duration,
    write_timeout: Duration,
    sent: &mut u64,
) -> Result<(), SpliceError> {
    let pipe = Pipe::take().map_err(SpliceError::Unavailable)?;
    let mut remaining = len;
    while remaining > 0 {
        let want = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(PIPE_BYTES);
        let mut in_pipe = within(idle_timeout, "backend stalled mid-response", async {
            loop {
                upstream.readable().await?;
                match upstream.try_io(Interest::READABLE, || {
                    splice(
                        upstream.as_fd(),
                        None,
                        pipe.write.as_fd(),
                        None,
                        want,
                        SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
                    )
                    .map_err(io::Error::from)
                }) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
        })
        .await
        .map_err(SpliceError::Upstream)?;
        if in_pipe == 0 {
            return Err(SpliceError::Upstream(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "backend closed mid-response",
            )));
        }
        remaining -= in_pipe as u64;
        // The pipe is drained completely before the next fill, so EAGAIN on the way out
        // always means the client socket is full (and on the way in, the backend's empty).
        while in_pipe > 0 {
            let moved = within(write_timeout, "write timed out", async {
                loop {
                    client.writable().await?;
                    match client.try_io(Interest::WRITABLE, || {
                        splice(
                            pipe.read.as_fd(),
                            None,
                            client.as_fd(),
                            None,
                            in_pipe,
                            SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
                        )
                        .map_err(io::Error::from)
                    }) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        other => return other,
                    }
                }
            })
            .await
            .map_err(SpliceError::Client)?;
            if moved == 0 {
                return Err(SpliceError::Client(io::ErrorKind::WriteZero.into()));
            }
            in_pipe -= moved;
            *sent += moved as u64;
        }
    }
    pipe.give_back();
    Ok(())
}

async fn within<T>(
    wait: Duration,
    what: &'static str,
    work: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(wait, work).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, what)),
    }
}
