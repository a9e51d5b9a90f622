//! File responses without copying the file through user space (Linux): the head goes out
//! with `MSG_MORE`, so the kernel sends it in the same segment as the start of the file, then
//! `sendfile(2)` moves the file from the page cache to the socket. Safe wrappers from
//! `rustix`; readiness and the write timeout from tokio, as for every other write.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Most bytes one `sendfile` call may move: bounded so one connection cannot hog the worker.
const SENDFILE_CHUNK: usize = 1 << 20;

/// Send `head`, then `len` bytes of `file` from `offset`. `sent` counts file bytes that
/// reached the socket. Fails when the client accepts nothing for `write_timeout`, or when
/// the file shrank below what the head announced (only closing can tell the client then).
pub async fn send_file(
    stream: &mut TcpStream,
    head: &[u8],
    file: &std::fs::File,
    offset: u64,
    len: u64,
    write_timeout: Duration,
    sent: &mut u64,
) -> io::Result<()> {
    let mut head = head;
    while !head.is_empty() {
        let written = with_deadline(write_timeout, async {
            loop {
                stream.writable().await?;
                let more = if len > 0 {
                    rustix::net::SendFlags::MORE
                } else {
                    rustix::net::SendFlags::empty()
                };
                match stream.try_io(Interest::WRITABLE, || {
                    rustix::net::send(stream.as_fd(), head, more).map_err(io::Error::from)
                }) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
        })
        .await?;
        head = &head[written..];
    }
    let mut position = offset;
    let end = offset + len;
    while position < end {
        let want = usize::try_from(end - position)
            .unwrap_or(usize::MAX)
            .min(SENDFILE_CHUNK);
        let moved = with_deadline(write_timeout, async {
            loop {
                stream.writable().await?;
                match stream.try_io(Interest::WRITABLE, || {
                    rustix::fs::sendfile(stream.as_fd(), file.as_fd(), Some(&mut position), want)
                        .map_err(io::Error::from)
                }) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
        })
        .await?;
        if moved == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being sent",
            ));
        }
        *sent += moved as u64;
    }
    Ok(())
}

async fn with_deadline<T>(
    wait: Duration,
    work: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(wait, work).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}
