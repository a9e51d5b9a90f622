//! Accept loop: one task per connection, a semaphore for `server.max_connections`, and a
//! shutdown signal that stops accepting, tells idle connections to close, and waits (up to
//! `server.drain_timeout_ms`) for in-flight requests to finish.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use super::SharedConfig;
use crate::config::Config;
use crate::http::connection::serve_connection;

/// Start accepting on `new`; `old` closes (connections it accepted carry on).
fn switch_listener(old: TcpListener, new: TcpListener) -> TcpListener {
    tracing::info!(
        from = %old.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        to = %new.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        "listening on the new address"
    );
    new
}

/// Errors that concern one pending connection, not the listener or the process.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Pause after an accept error such as EMFILE, so a full fd table does not spin the loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

pub struct Server {
    listener: TcpListener,
    config: SharedConfig,
    /// Listeners bound by a reload for a new `listen_addr`; the accept loop switches to each
    /// as it arrives and closes the old one.
    rebinds: mpsc::UnboundedReceiver<TcpListener>,
    rebind_tx: mpsc::UnboundedSender<TcpListener>,
}

/// What a reload needs to change a running server: the config handle and a way to hand the
/// accept loop a new listener.
#[derive(Clone)]
pub struct ServerHandle {
    pub config: SharedConfig,
    rebind_tx: mpsc::UnboundedSender<TcpListener>,
}

impl ServerHandle {
    /// Bind `addr` now (so a failure leaves everything as it was) and have the accept loop
    /// move to it; the old listener closes once the new one is accepting.
    pub fn rebind(&self, addr: SocketAddr, backlog: u32) -> io::Result<SocketAddr> {
        let listener = bind_listener(addr, backlog)?;
        let bound = listener.local_addr()?;
        self.rebind_tx
            .send(listener)
            .map_err(|_| io::Error::other("the server has stopped"))?;
        Ok(bound)
    }
}

impl Server {
    /// Bind `config.server.listen_addr`. Fails at once (address in use, no permission) so the
    /// process can exit with a clear message.
    pub fn bind(config: Config) -> io::Result<Server> {
        let listener = bind_listener(config.server.listen_addr, config.server.listen_backlog)?;
        let (rebind_tx, rebinds) = mpsc::unbounded_channel();
        Ok(Server {
            listener,
            config: Arc::new(ArcSwap::from_pointee(config)),
            rebinds,
            rebind_tx,
        })
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            config: Arc::clone(&self.config),
            rebind_tx: self.rebind_tx.clone(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The handle through which a reload publishes a new configuration.
    pub fn config(&self) -> SharedConfig {
        Arc::clone(&self.config)
    }

    /// Serve until `shutdown` completes, then drain.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        crate::proxy::active::start_all(&self.config.load());
        let max_connections = self.config.load().server.max_connections;
        let permits = Arc::new(Semaphore::new(max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut listener = self.listener;
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                Some(new) = self.rebinds.recv() => {
                    listener = switch_listener(listener, new);
                    continue;
                }
                () = &mut shutdown => break,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                Some(new) = self.rebinds.recv() => {
                    listener = switch_listener(listener, new);
                    continue;
                }
                () = &mut shutdown => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    configure_stream(&stream);
                    let config = Arc::clone(&self.config);
                    let stop = stop_rx.clone();
                    tokio::spawn(async move {
                        serve_connection(stream, peer, config, stop).await;
                        drop(permit);
                    });
                }
                // A connection that died in the backlog is its client's problem: go on.
                Err(error) if is_per_connection(&error) => {
                    tracing::debug!(%error, "accepted connection failed");
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        let drain_timeout = self.config.load().server.drain_timeout;
        let in_flight = max_connections - permits.available_permits();
        tracing::info!(
            in_flight,
            ?drain_timeout,
            "stopped accepting; draining connections"
        );
        // Config caps max_connections at 2^24, so the count fits.
        let all_back = permits.acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX));
        let drained = tokio::time::timeout(drain_timeout, all_back).await.is_ok();
        if drained {
            tracing::info!("all connections closed");
        } else {
            tracing::warn!(
                still_open = max_connections - permits.available_permits(),
                "drain timeout reached; exiting with connections open"
            );
        }
    }
}

pub(crate) fn bind_listener(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // Lets a restarted server bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    // Responses are written whole, so Nagle would only delay the last segment of each. Linux
    // copies this to every accepted socket, which saves a system call per connection.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

/// Elsewhere accepted sockets do not inherit TCP_NODELAY from the listener.
#[cfg(not(target_os = "linux"))]
fn configure_stream(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "set_nodelay failed");
    }
}

#[cfg(target_os = "linux")]
fn configure_stream(_stream: &TcpStream) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nagle_off() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        configure_stream(&accepted);
        assert!(accepted.nodelay().unwrap());
    }
}
