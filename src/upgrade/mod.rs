//! Zero-downtime binary upgrade (`SIGUSR2`, nginx's convention): start the binary found at
//! the path this process was started from, hand it every listening socket, and wait until it
//! says it serves. Only then does the caller stop accepting and drain. A new process that
//! exits first, or is not ready within `server.upgrade_timeout_ms`, is killed and reaped,
//! and this one keeps serving.
//!
//! The sockets travel as inherited descriptors 3, 4, ... named in `LISTEN_FDS` and
//! `LISTEN_FDNAMES`: the socket-activation protocol the new process already speaks
//! (`systemd::activation`), one name per socket (`http:http:https:https:admin`), so each
//! per-core `SO_REUSEPORT` socket, with its own queue of pending connections, finds an
//! accept loop in the new process. No connection is refused: the sockets never close, and
//! both processes accept from them until the old one stops.

pub mod ready;

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};

use std::future::Future;

use crate::server::handover::ListeningSockets;

/// The first descriptor a passed socket takes (`SD_LISTEN_FDS_START`).
const FIRST_PASSED_FD: i32 = 3;

/// Why an upgrade did not happen (the old process serves on, whatever the reason).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("cannot copy the listening sockets: {0}")]
    Sockets(#[source] io::Error),
    #[error("cannot open the socket the new process reports on: {0}")]
    ReadySocket(#[source] io::Error),
    #[error("cannot start {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the new process exited before it was ready ({0})")]
    Exited(ExitStatus),
    #[error("the new process was not ready within {0:?}; it was killed")]
    Timeout(Duration),
    #[error(
        "a reload moved a listener while the new process started; it was killed (signal again)"
    )]
    ListenersMoved,
    #[error("this process started to shut down; the new process was killed")]
    ShuttingDown,
    #[error("cannot wait for the new process: {0}")]
    Wait(#[source] io::Error),
}

/// How to start the new binary: the path and arguments this process was started with.
#[derive(Debug, Clone)]
pub struct Upgrader {
    program: PathBuf,
    args: Vec<OsString>,
}

impl Upgrader {
    /// Read at start: the path the binary was run from (not `/proc/self/exe`, which follows
    /// symlinks now and names a deleted file once the binary is replaced), made absolute
    /// against the working directory, or a bare name looked up in `PATH` as the shell did;
    /// the running executable's path when neither works.
    pub fn from_start() -> io::Result<Upgrader> {
        let mut args = std::env::args_os();
        let argv0 = args.next().map(PathBuf::from);
        let program = match argv0 {
            Some(path) if path.components().count() > 1 => std::env::current_dir()?.join(path),
            Some(name) => match search_path(&name) {
                Some(found) => found,
                None => std::env::current_exe()?,
            },
            None => std::env::current_exe()?,
        };
        Ok(Upgrader {
            program,
            args: args.collect(),
        })
    }

    /// The binary an upgrade starts.
    pub fn program(&self) -> &std::path::Path {
        &self.program
    }

    /// Start the new process with copies of `listening` and wait for its ready report: its
    /// PID once it serves. Killed and reaped instead when it exits first, when `timeout`
    /// passes, when `stop` completes (this process is shutting down), or when a reload moved
    /// a listener in the meantime (it would serve the old address).
    pub async fn start(
        &self,
        listening: &ListeningSockets,
        timeout: Duration,
        stop: impl Future<Output = ()>,
    ) -> Result<u32, UpgradeError> {
        let handover = listening.duplicates().map_err(UpgradeError::Sockets)?;
        let sockets = handover.sockets;
        // The name is public (every local user can list abstract sockets); the token, only
        // in the child's environment, is not.
        let token = random_token();
        let name = format!("sentinel-upgrade-{}-{}", std::process::id(), random_token());
        let reports = ready_socket(&name).map_err(UpgradeError::ReadySocket)?;
        let names: Vec<&str> = sockets.iter().map(|(role, _)| role.name()).collect();
        let names = names.join(":");
        let count = sockets.len();
        let mappings = sockets
            .into_iter()
            .zip(FIRST_PASSED_FD..)
            .map(|((_, fd), child_fd)| FdMapping {
                parent_fd: fd,
                child_fd,
            })
            .collect();
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .env("LISTEN_FDS", count.to_string())
            .env("LISTEN_FDNAMES", names)
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS_FIRST_FD")
            // Names this process: the new one would think the watchdog is not its own and
            // stop pinging, and systemd would abort it once it is the main process.
            .env_remove("WATCHDOG_PID")
            .env(ready::SOCKET_VAR, format!("@{name}"))
            .env(ready::TOKEN_VAR, &token);
        command
            .fd_mappings(mappings)
            .map_err(|_| UpgradeError::Spawn {
                path: self.program.clone(),
                source: io::Error::other("two sockets were given the same descriptor"),
            })?;
        let mut child = command.spawn().map_err(|source| UpgradeError::Spawn {
            path: self.program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        tracing::info!(pid, program = %self.program.display(), sockets = count, "upgrade: started the new binary; waiting for it to be ready");
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        tokio::pin!(stop);
        let mut datagram = [0u8; 512];
        let refused = loop {
            // The report first: one that arrived with the deadline still counts.
            tokio::select! {
                biased;
                received = reports.recv(&mut datagram) => match received {
                    Ok(len) if ready::is_ready(&datagram[..len], &token) => {
                        // A process that reported and died at once serves nothing.
                        match child.try_wait() {
                            Ok(Some(status)) => return Err(UpgradeError::Exited(status)),
                            Ok(None) => {}
                            Err(error) => return Err(UpgradeError::Wait(error)),
                        }
                        if listening.generation() != handover.generation {
                            break UpgradeError::ListenersMoved;
                        }
                        return Ok(pid);
                    }
                    Ok(_) => tracing::debug!("upgrade: ignored a datagram that is not the ready report"),
                    Err(error) => tracing::debug!(%error, "upgrade: cannot read the ready socket"),
                },
                status = child.wait() => {
                    return Err(match status {
                        Ok(status) => UpgradeError::Exited(status),
                        Err(error) => UpgradeError::Wait(error),
                    });
                }
                () = &mut stop => break UpgradeError::ShuttingDown,
                () = &mut deadline => break UpgradeError::Timeout(timeout),
            }
        };
        // Unless a reload raced it (then its first connections are reset), it has not
        // reported, so it has accepted nothing: its accept loops start after the report.
        // `kill` also reaps it, leaving no zombie.
        if let Err(error) = child.kill().await {
            tracing::warn!(%error, pid, "upgrade: cannot kill the new process");
        }
        Err(refused)
    }
}

/// `name` in the first directory of `PATH` that has it, as a shell found it.
fn search_path(name: &std::path::Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// An abstract Unix datagram socket named `name` (it disappears with its last descriptor:
/// nothing to clean up on disk).
#[cfg(target_os = "linux")]
fn ready_socket(name: &str) -> io::Result<tokio::net::UnixDatagram> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    socket.set_nonblocking(true)?;
    tokio::net::UnixDatagram::from_std(socket)
}

#[cfg(not(target_os = "linux"))]
fn ready_socket(_name: &str) -> io::Result<tokio::net::UnixDatagram> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "binary upgrade needs Linux abstract sockets",
    ))
}

/// 128 bits from the kernel's generator, in hex; where that cannot be read, the standard
/// library's per-process random hash keys (still unknown to other processes).
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        use std::hash::{BuildHasher, Hasher};
        for half in bytes.chunks_mut(8) {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            hasher.write_u128(now.map_or(0, |d| d.as_nanos()));
            half.copy_from_slice(&hasher.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_differ() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
