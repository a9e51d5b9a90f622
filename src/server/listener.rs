//! Accept loops: one task per connection, a semaphore for `server.max_connections`, and a
//! shutdown signal that stops accepting, tells idle connections to close, and waits (up to
//! `server.drain_timeout_ms`) for in-flight requests to finish. One loop on the caller's
//! runtime, or (`server.runtime: per_core`) one per worker thread, each with a runtime and
//! an `SO_REUSEPORT` listening socket of its own. With `tls` configured, each loop has an
//! HTTPS sibling on `tls.listen_addr` under the same connection cap, shutdown and drain,
//! whose connections complete a TLS handshake before they are served.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::admission::{admit, admit_client, expects_proxy_header, ConnectionsPerAddress};
use super::connection::serve_connection;
use super::handover::{ListeningSockets, Role};
use super::holding::Holding;
use super::tls::{self, TlsError, TlsTerminator};
use crate::config::Config;
use crate::metrics::{Listener, OpenConnection};
use crate::snapshot::{SharedSnapshot, Snapshot};

/// Start accepting on `new`; `old` closes (connections it accepted carry on). `new` is
/// registered here, with the reactor of the runtime that will poll it.
fn switch_listener(old: TcpListener, new: std::net::TcpListener) -> TcpListener {
    let new = match TcpListener::from_std(new) {
        Ok(new) => new,
        Err(error) => {
            tracing::error!(%error, "cannot use the new listening socket; keeping the old one");
            return old;
        }
    };
    // Once per accept loop; the operator's line is logged once, by `ServerHandle::rebind`.
    tracing::debug!(
        from = %old.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        to = %new.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        "accept loop moved to the new address"
    );
    new
}

/// Errors that concern one pending connection, not the listener or the process.
pub(crate) fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Pause after an accept error such as EMFILE, so a full fd table does not spin the loop.
pub(crate) const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Listening sockets are handed over as `std` sockets and registered by the accept loop that
/// uses them: a tokio socket belongs to the reactor of the runtime that registered it.
type Rebind = mpsc::UnboundedSender<std::net::TcpListener>;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on {addr} (tls.listen_addr)")]
    ListenTls {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up TLS")]
    Tls(#[source] TlsError),
    #[error("cannot start a worker thread")]
    Worker(#[source] io::Error),
}

pub struct Server {
    /// One per accept loop, all bound to the same address (`SO_REUSEPORT` when more than one).
    listeners: Vec<std::net::TcpListener>,
    config: SharedSnapshot,
    /// Per accept loop: listeners bound by a reload for a new `listen_addr`; the loop switches
    /// to each as it arrives and closes the old one.
    rebinds: Vec<mpsc::UnboundedReceiver<std::net::TcpListener>>,
    rebind_txs: Arc<[Rebind]>,
    /// Per-core layout: the worker threads, one per accept loop, each waiting for its loop.
    /// `None`: the accept loop runs as a task on the caller's runtime.
    workers: Option<Vec<Worker>>,
    /// The HTTPS listener, when `tls` is configured: an accept loop beside each plain one.
    tls: Option<TlsListeners>,
    /// The port the HTTPS listener is bound to, for redirects from the plain one; 0: none.
    https_port: Arc<AtomicU16>,
    /// Copies of the listening sockets in use, for a binary upgrade.
    sockets: Arc<ListeningSockets>,
}

/// The HTTPS listening sockets (one per accept loop) and their TLS state.
struct TlsListeners {
    listeners: Vec<std::net::TcpListener>,
    rebinds: Vec<mpsc::UnboundedReceiver<std::net::TcpListener>>,
    rebind_txs: Arc<[Rebind]>,
    terminator: Arc<TlsTerminator>,
}

/// What a reload needs to change a running server: the config handle and a way to hand the
/// accept loops new listeners.
#[derive(Clone)]
pub struct ServerHandle {
    pub config: SharedSnapshot,
    rebind_txs: Arc<[Rebind]>,
    tls: Option<TlsHandle>,
    https_port: Arc<AtomicU16>,
    sockets: Arc<ListeningSockets>,
}

#[derive(Clone)]
struct TlsHandle {
    rebind_txs: Arc<[Rebind]>,
    terminator: Arc<TlsTerminator>,
}

/// Listening sockets bound for a new address, not yet in use (see [`Rebound::switch`]).
pub struct Rebound {
    listeners: Vec<std::net::TcpListener>,
    rebind_txs: Arc<[Rebind]>,
    addr: SocketAddr,
    https_port: Option<Arc<AtomicU16>>,
    role: Role,
    sockets: Arc<ListeningSockets>,
}

impl Rebound {
    /// Have the accept loops move to the new sockets; the old ones close once the new ones
    /// accept.
    pub fn switch(self) -> io::Result<SocketAddr> {
        self.sockets.set(self.role, &self.listeners);
        for (tx, listener) in self.rebind_txs.iter().zip(self.listeners) {
            tx.send(listener)
                .map_err(|_| io::Error::other("the server has stopped"))?;
        }
        if let Some(port) = self.https_port {
            port.store(self.addr.port(), Ordering::Relaxed);
        }
        tracing::info!(addr = %self.addr, accept_loops = self.rebind_txs.len(), "listening on the new address");
        Ok(self.addr)
    }
}

fn bind_for(
    rebind_txs: &Arc<[Rebind]>,
    addr: SocketAddr,
    backlog: u32,
    https_port: Option<&Arc<AtomicU16>>,
    sockets: &Arc<ListeningSockets>,
) -> io::Result<Rebound> {
    let listeners = bind_listeners(addr, backlog, rebind_txs.len())?;
    Ok(Rebound {
        addr: first_addr(&listeners)?,
        listeners,
        rebind_txs: Arc::clone(rebind_txs),
        role: if https_port.is_some() {
            Role::Https
        } else {
            Role::Http
        },
        https_port: https_port.map(Arc::clone),
        sockets: Arc::clone(sockets),
    })
}

impl ServerHandle {
    /// Bind `addr` now, once per accept loop (so a failure leaves everything as it was), and
    /// have the accept loops move to it; the old listeners close once the new ones accept.
    pub fn rebind(&self, addr: SocketAddr, backlog: u32) -> io::Result<SocketAddr> {
        bind_for(&self.rebind_txs, addr, backlog, None, &self.sockets)?.switch()
    }

    /// Bind `addr` for the HTTPS accept loops, for [`Rebound::switch`] once everything else
    /// a reload needs has been bound too.
    pub fn bind_tls(&self, addr: SocketAddr, backlog: u32) -> io::Result<Rebound> {
        let tls = self
            .tls
            .as_ref()
            .ok_or_else(|| io::Error::other("no HTTPS listener is running"))?;
        bind_for(
            &tls.rebind_txs,
            addr,
            backlog,
            Some(&self.https_port),
            &self.sockets,
        )
    }

    /// The HTTPS listener's TLS state, when it runs.
    pub fn tls(&self) -> Option<&Arc<TlsTerminator>> {
        self.tls.as_ref().map(|tls| &tls.terminator)
    }

    /// The listening sockets in use (the admin listener's are registered by its owner).
    pub fn sockets(&self) -> &Arc<ListeningSockets> {
        &self.sockets
    }
}

/// Listening sockets the process was handed already bound (socket activation, or a binary
/// upgrade): used instead of binding `server.listen_addr` / `tls.listen_addr`. Empty: bind.
#[derive(Debug, Default)]
pub struct Prebound {
    pub http: Vec<std::net::TcpListener>,
    pub https: Vec<std::net::TcpListener>,
}

impl Prebound {
    /// The fewest accept loops that use every passed socket. Each passed socket has a queue
    /// of its own (a previous process's `SO_REUSEPORT` group keeps spreading connections over
    /// all of them), so a socket without a loop would hold connections nobody accepts.
    pub fn accept_loops_needed(&self) -> usize {
        self.http.len().max(self.https.len())
    }
}

/// `count` accept loops (at least as many as sockets were passed) on the passed sockets:
/// one loop each, and the loops beyond share duplicates of them in turn. Loops on one
/// socket share its accept queue; each accept goes to whichever loop wakes first.
fn share_listeners(
    passed: Vec<std::net::TcpListener>,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = passed
        .into_iter()
        .map(adopt_listener)
        .collect::<io::Result<Vec<_>>>()?;
    let passed = listeners.len();
    for extra in 0..count.saturating_sub(passed) {
        let copy = listeners[extra % passed].try_clone()?;
        listeners.push(copy);
    }
    Ok(listeners)
}

/// A passed listening socket set up as the ones bound here are: non-blocking (passed
/// sockets usually are blocking, and tokio refuses those) with Nagle off.
pub fn adopt_listener(listener: std::net::TcpListener) -> io::Result<std::net::TcpListener> {
    listener.set_nonblocking(true)?;
    socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
    Ok(listener)
}

impl Server {
    /// Bind `config.server.listen_addr` for one accept loop on the caller's runtime. Fails at
    /// once (address in use, no permission) so the process can exit with a clear message.
    pub fn bind(config: Config) -> Result<Server, BindError> {
        Server::bind_loops(config, 1, Prebound::default())
    }

    /// As [`Server::bind`] (`threads: None`) or [`Server::bind_per_core`], using the passed
    /// sockets in `prebound` where there are some.
    pub fn bind_with(
        config: Config,
        threads: Option<usize>,
        prebound: Prebound,
    ) -> Result<Server, BindError> {
        match threads {
            None => Server::bind_loops(config, 1, prebound),
            Some(threads) => Server::per_core(config, threads, prebound),
        }
    }

    /// Bind `config.server.listen_addr` once per worker thread with `SO_REUSEPORT`, and
    /// start the threads, each with its own current-thread runtime, waiting for `run`. All
    /// that can fail fails here, before anything is served; call it outside any runtime (a
    /// runtime that fails to start is dropped here, which no async context allows).
    pub fn bind_per_core(config: Config, threads: usize) -> Result<Server, BindError> {
        Server::per_core(config, threads, Prebound::default())
    }

    fn per_core(config: Config, threads: usize, prebound: Prebound) -> Result<Server, BindError> {
        let needed = prebound.accept_loops_needed();
        if needed > threads {
            tracing::warn!(
                workers = threads,
                passed_sockets = needed,
                "more listening sockets were passed than there are workers; one worker per socket"
            );
        }
        let threads = threads.max(needed).max(1);
        let mut server = Server::bind_loops(config, threads, prebound)?;
        crate::proxy::pool::set_worker_threads(threads);
        let workers = (0..threads)
            .map(start_worker)
            .collect::<io::Result<Vec<_>>>()
            .map_err(BindError::Worker)?;
        server.workers = Some(workers);
        Ok(server)
    }

    fn bind_loops(config: Config, loops: usize, prebound: Prebound) -> Result<Server, BindError> {
        let loops = loops.max(prebound.accept_loops_needed());
        let addr = config.server.listen_addr;
        let backlog = config.server.listen_backlog;
        let listeners = match prebound.http {
            passed if passed.is_empty() => bind_listeners(addr, backlog, loops),
            passed => share_listeners(passed, loops),
        }
        .map_err(|source| BindError::Listen { addr, source })?;
        let sockets = Arc::new(ListeningSockets::default());
        sockets.set(Role::Http, &listeners);
        let (rebind_txs, rebinds): (Vec<_>, Vec<_>) =
            (0..loops).map(|_| mpsc::unbounded_channel()).unzip();
        let https_port = Arc::new(AtomicU16::new(0));
        let tls = match &config.tls {
            Some(tls_config) => {
                let addr = tls_config.listen_addr;
                let listeners = match prebound.https {
                    passed if passed.is_empty() => bind_listeners(addr, backlog, loops),
                    passed => share_listeners(passed, loops),
                }
                .map_err(|source| BindError::ListenTls { addr, source })?;
                sockets.set(Role::Https, &listeners);
                let bound = first_addr(&listeners)
                    .map_err(|source| BindError::ListenTls { addr, source })?;
                https_port.store(bound.port(), Ordering::Relaxed);
                let terminator = TlsTerminator::new(tls_config).map_err(BindError::Tls)?;
                let (rebind_txs, rebinds): (Vec<_>, Vec<_>) =
                    (0..loops).map(|_| mpsc::unbounded_channel()).unzip();
                Some(TlsListeners {
                    listeners,
                    rebinds,
                    rebind_txs: rebind_txs.into(),
                    terminator: Arc::new(terminator),
                })
            }
            None => None,
        };
        Ok(Server {
            listeners,
            config: Snapshot::shared(config),
            rebinds,
            rebind_txs: rebind_txs.into(),
            workers: None,
            tls,
            https_port,
            sockets,
        })
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            config: Arc::clone(&self.config),
            rebind_txs: Arc::clone(&self.rebind_txs),
            tls: self.tls.as_ref().map(|tls| TlsHandle {
                rebind_txs: Arc::clone(&tls.rebind_txs),
                terminator: Arc::clone(&tls.terminator),
            }),
            https_port: Arc::clone(&self.https_port),
            sockets: Arc::clone(&self.sockets),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        first_addr(&self.listeners)
    }

    /// The HTTPS listener's address, when `tls` is configured.
    pub fn tls_local_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.tls.as_ref().map(|tls| first_addr(&tls.listeners))
    }

    /// How many threads accept and serve connections: the per-core threads, or `None` when
    /// the accept loop runs on the caller's runtime.
    pub fn worker_threads(&self) -> Option<usize> {
        self.workers.as_ref().map(Vec::len)
    }

    /// The handle through which a reload publishes a new configuration.
    pub fn config(&self) -> SharedSnapshot {
        Arc::clone(&self.config)
    }

    /// Serve until `shutdown` completes, then drain: every accept loop stops accepting, idle
    /// connections close, and each loop waits up to `server.drain_timeout_ms` for the rest.
    /// Active health checks run on the caller's runtime.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.config.load().start_health_checks();
        let max_connections = self.config.load().config.server.max_connections;
        // One semaphore for every loop: `max_connections` bounds the process, not a thread.
        let permits = Arc::new(Semaphore::new(max_connections));
        let per_address = Arc::new(ConnectionsPerAddress::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let Server {
            listeners,
            config,
            rebinds,
            workers,
            tls,
            https_port,
            sockets,
            ..
        } = self;
        let mut workers = workers.map(Vec::into_iter);
        let mut running = Vec::with_capacity(listeners.len());
        let mut closing = Vec::with_capacity(listeners.len());
        let mut new_loop = |listener, rebinds, protocol| {
            let (closed, closed_rx) = oneshot::channel();
            closing.push(closed_rx);
            AcceptLoop {
                listener,
                rebinds,
                protocol,
                config: Arc::clone(&config),
                permits: Arc::clone(&permits),
                per_address: Arc::clone(&per_address),
                stop: stop_rx.clone(),
                closed,
            }
        };
        // Per accept loop, the plain listener's and (when TLS is on) the HTTPS listener's
        // sockets: both loops of a worker run on its runtime.
        let mut tls_sockets = tls.map(|tls| {
            let terminator = tls.terminator;
            tls.listeners
                .into_iter()
                .zip(tls.rebinds)
                .map(move |(listener, rebinds)| (listener, rebinds, Arc::clone(&terminator)))
        });
        for (listener, rebinds) in listeners.into_iter().zip(rebinds) {
            let mut loops = vec![new_loop(
                listener,
                rebinds,
                Protocol::Plain {
                    https_port: Arc::clone(&https_port),
                },
            )];
            if let Some((listener, rebinds, terminator)) =
                tls_sockets.as_mut().and_then(Iterator::next)
            {
                loops.push(new_loop(listener, rebinds, Protocol::Tls(terminator)));
            }
            match workers.as_mut().and_then(Iterator::next) {
                Some(worker) => running.push(worker.start(loops)),
                // On the caller's runtime each loop is a task of its own, so a multi-thread
                // runtime runs it on a worker: from the thread blocked in `block_on`, every
                // accepted connection would be handed across threads (a futex wake and two
                // context switches per connection, measured at ~20 % of the CPU time of
                // short connections).
                None => {
                    for accept in loops {
                        running.push(Running::Task(tokio::spawn(accept.run())));
                    }
                }
            }
        }
        shutdown.await;
        sockets.clear();
        let _ = stop_tx.send(true);
        // Logged once every listening socket is closed, so that from this line on a new
        // connection is refused (an error means the loop is gone, its socket with it).
        for closed in closing {
            let _ = closed.await;
        }
        tracing::info!(
            in_flight = max_connections - permits.available_permits(),
            drain_timeout = ?config.load().config.server.drain_timeout,
            "stopped accepting; draining connections"
        );
        let mut still_open = 0;
        for accept in running {
            still_open += accept.finished().await;
        }
        if still_open == 0 {
            tracing::info!("all connections closed");
        } else {
            tracing::warn!(
                still_open,
                "drain timeout reached; exiting with connections open"
            );
        }
    }
}

/// A per-core worker thread, started by `bind_per_core` and idle until `run` hands it its
/// accept loop. Dropping it unstarted ends the thread.
struct Worker {
    start: oneshot::Sender<Vec<AcceptLoop>>,
    done: oneshot::Receiver<usize>,
}

impl Worker {
    fn start(self, loops: Vec<AcceptLoop>) -> Running {
        // A thread that is gone has already reported through `done` (its channel closed).
        let _ = self.start.send(loops);
        Running::Thread(self.done)
    }
}

/// Worker thread `index` with its current-thread runtime. The runtime lives and dies on the
/// thread: connections past the drain timeout end with it, before `done` reports.
fn start_worker(index: usize) -> io::Result<Worker> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (start, start_rx) = oneshot::channel::<Vec<AcceptLoop>>();
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("sentinel-worker-{index}"))
        .spawn(move || {
            crate::proxy::pool::set_thread_worker(Some(index));
            let still_open = runtime.block_on(async {
                match start_rx.await {
                    Ok(loops) => run_together(loops).await,
                    Err(_) => 0,
                }
            });
            drop(runtime);
            let _ = done_tx.send(still_open);
        })?;
    Ok(Worker { start, done })
}

/// Run `loops` on the current runtime until each has drained; how many connections were
/// still open.
async fn run_together(loops: Vec<AcceptLoop>) -> usize {
    let tasks: Vec<_> = loops
        .into_iter()
        .map(|accept| tokio::spawn(accept.run()))
        .collect();
    let mut still_open = 0;
    for task in tasks {
        still_open += Running::Task(task).finished().await;
    }
    still_open
}

/// An accept loop that has been started.
enum Running {
    /// A task on the caller's runtime.
    Task(tokio::task::JoinHandle<usize>),
    /// A per-core worker thread; it reports when its runtime has stopped.
    Thread(oneshot::Receiver<usize>),
}

impl Running {
    /// Connections still open when the loop gave up draining.
    async fn finished(self) -> usize {
        match self {
            Running::Task(task) => task.await.unwrap_or_else(|error| {
                tracing::error!(%error, "an accept loop failed");
                0
            }),
            Running::Thread(done) => done.await.unwrap_or_else(|_| {
                tracing::error!("a worker thread failed");
                0
            }),
        }
    }
}

/// What an accept loop's connections speak.
enum Protocol {
    /// HTTP; `https_port` is where `tls.redirect_http` sends clients.
    Plain { https_port: Arc<AtomicU16> },
    /// HTTPS: each connection completes a TLS handshake first.
    Tls(Arc<TlsTerminator>),
}

/// One listening socket's accept loop and the connections it accepted.
struct AcceptLoop {
    listener: std::net::TcpListener,
    rebinds: mpsc::UnboundedReceiver<std::net::TcpListener>,
    protocol: Protocol,
    config: SharedSnapshot,
    permits: Arc<Semaphore>,
    /// Open connections per client address (`server.max_connections_per_ip`), process-wide.
    per_address: Arc<ConnectionsPerAddress>,
    /// `true` once shutdown starts: stop accepting; idle connections close.
    stop: watch::Receiver<bool>,
    /// Told when the listening socket has been closed at shutdown.
    closed: oneshot::Sender<()>,
}

impl AcceptLoop {
    /// Serve a connection whose admission has to wait (a PROXY header to read first, or the
    /// TLS listener's), in a task of its own: admit it, then `serve` it as the client
    /// admission names. The connection's place under the per-address cap and its `guards`
    /// are held until serving ends. Takes the loop's fields, not the loop: `run` has moved
    /// its listening socket out.
    fn spawn_admitted<F, Fut, G>(
        config: &SharedSnapshot,
        per_address: &Arc<ConnectionsPerAddress>,
        listener: Listener,
        (mut stream, peer): (TcpStream, SocketAddr),
        guards: G,
        serve: F,
    ) where
        F: FnOnce(TcpStream, SocketAddr, SharedSnapshot) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
        G: Send + 'static,
    {
        let config = Arc::clone(config);
        let per_address = Arc::clone(per_address);
        tokio::spawn(async move {
            if let Some(admitted) = admit(&mut stream, peer, &config, listener, &per_address).await
            {
                serve(stream, admitted.client, config).await;
                drop(admitted);
            }
            drop(guards);
        });
    }

    /// Accept until the stop signal, then wait up to `drain_timeout_ms` for the connections
    /// this loop accepted (their tasks live on this loop's runtime, which must keep running
    /// until they end). Returns how many were still open.
    async fn run(mut self) -> usize {
        let mut listener = match TcpListener::from_std(self.listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "cannot use the listening socket");
                return 0;
            }
        };
        let driver = Driver::of_current_runtime();
        // Every connection task holds a sender; the receiver sees the end of the last one.
        let (drain_tx, mut drained) = mpsc::channel::<()>(1);
        let shutdown = stopped(self.stop.clone());
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&self.permits).acquire_owned() => match permit {
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
                accepted = accept(&listener, driver) => accepted,
                Some(new) = self.rebinds.recv() => {
                    listener = switch_listener(listener, new);
                    continue;
                }
                () = &mut shutdown => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let stop = self.stop.clone();
                    let drain = drain_tx.clone();
                    match &self.protocol {
                        Protocol::Plain { https_port } => {
                            let https_port = match https_port.load(Ordering::Relaxed) {
                                0 => None,
                                port => Some(port),
                            };
                            let open = OpenConnection::new(Listener::Http);
                            if expects_proxy_header(&self.config, Listener::Http) {
                                let serve = move |stream, client, config| {
                                    Box::pin(serve_connection(
                                        stream, client, config, stop, https_port,
                                    ))
                                };
                                let guards = (open, permit, drain);
                                Self::spawn_admitted(
                                    &self.config,
                                    &self.per_address,
                                    Listener::Http,
                                    (stream, peer),
                                    guards,
                                    serve,
                                );
                            } else if let Some(admitted) =
                                admit_client(peer, peer, &self.config, &self.per_address)
                            {
                                // Nothing to wait for before serving: the task is the
                                // connection itself, with its guards beside it.
                                let client = admitted.client;
                                let config = Arc::clone(&self.config);
                                let serve =
                                    serve_connection(stream, client, config, stop, https_port);
                                let guards = (admitted.into_slot(), open, permit, drain);
                                tokio::spawn(Holding::new(serve, guards));
                            }
                        }
                        Protocol::Tls(terminator) => {
                            let terminator = Arc::clone(terminator);
                            let open = OpenConnection::new(Listener::Https);
                            let serve = move |stream, client, config: SharedSnapshot| async move {
                                let limits = config.load().config.server.limits;
                                if let Some(stream) =
                                    tls::accept(stream, client, &terminator, &limits).await
                                {
                                    // Boxed: a TLS stream's state is large, and the
                                    // handshake's must not stay in the task.
                                    Box::pin(serve_connection(stream, client, config, stop, None))
                                        .await;
                                }
                            };
                            let guards = (open, permit, drain);
                            Self::spawn_admitted(
                                &self.config,
                                &self.per_address,
                                Listener::Https,
                                (stream, peer),
                                guards,
                                serve,
                            );
                        }
                    }
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
        let _ = self.closed.send(());
        drop(drain_tx);
        let drain_timeout = self.config.load().config.server.drain_timeout;
        match tokio::time::timeout(drain_timeout, drained.recv()).await {
            Ok(_) => 0,
            Err(_) => drained.sender_strong_count(),
        }
    }
}

/// Resolves once `stop` says true (or its sender is gone, which also means stop).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|&stop| stop).await;
}

fn first_addr(listeners: &[std::net::TcpListener]) -> io::Result<SocketAddr> {
    listeners
        .first()
        .ok_or_else(|| io::Error::other("no listening socket"))?
        .local_addr()
}

/// `count` listening sockets on `addr`. More than one share the address with `SO_REUSEPORT`
/// (the kernel spreads new connections over them); when `addr` has port 0 they all get the
/// port the first one picked.
pub(crate) fn bind_listeners(
    addr: SocketAddr,
    backlog: u32,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    if count <= 1 {
        return Ok(vec![bind_listener(addr, backlog, false)?]);
    }
    // SO_REUSEPORT would also let the group join sockets that another process of the same
    // user already listens with on `addr` (a second copy started by mistake would silently
    // take half the connections). So first claim the address alone, as a lone socket would,
    // failing with "address in use" like one, then let the group bind it.
    let claim = claim_address(addr)?;
    let bound = claim.local_addr()?;
    drop(claim);
    (0..count)
        .map(|_| bind_listener(bound, backlog, true))
        .collect()
}

/// One listening socket on `addr` for a listener of its own (the admin endpoint), set up as
/// the main listener's are (`SO_REUSEADDR`, non-blocking, Nagle off) and not yet registered
/// with a runtime: the task that accepts on it registers it.
pub fn bind_lone_listener(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    bind_listener(addr, backlog, false)
}

/// A socket bound (not listening) to `addr` without `SO_REUSEPORT`: binding fails while any
/// other socket listens there.
fn claim_address(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = tcp_socket(addr)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A TCP socket for `addr`'s family with `SO_REUSEADDR`, which lets a restarted server bind
/// while old connections sit in TIME_WAIT.
fn tcp_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

fn bind_listener(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = tcp_socket(addr)?;
    // Only for our own sibling sockets: set on a lone socket it would let another process
    // of the same user bind the port too and take a share of its connections.
    if reuse_port {
        set_reuse_port(&socket)?;
    }
    socket.set_nonblocking(true)?;
    // Responses are written whole, so Nagle would only delay the last segment of each. Linux
    // copies this to every accepted socket, which saves a system call per connection.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

#[cfg(unix)]
fn set_reuse_port(socket: &socket2::Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

/// Without `SO_REUSEPORT` the sibling sockets cannot share the address: the bind fails and
/// says so.
#[cfg(not(unix))]
fn set_reuse_port(_socket: &socket2::Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "server.runtime: per_core needs SO_REUSEPORT",
    ))
}

/// Which threads turn the I/O driver of the runtime an accept loop runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// A current-thread runtime: only the accept loop's own thread, between task polls.
    ThisThread,
    /// A multi-thread runtime: any worker, at any moment.
    AnyWorker,
}

impl Driver {
    fn of_current_runtime() -> Driver {
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => Driver::ThisThread,
            _ => Driver::AnyWorker,
        }
    }
}

/// Accept a connection and configure its socket in the same poll: no `.await` may come
/// between the two, or the driver could turn in between (see `wait_for_first_bytes`).
async fn accept(listener: &TcpListener, driver: Driver) -> io::Result<(TcpStream, SocketAddr)> {
    let (stream, peer) = listener.accept().await?;
    configure_stream(&stream, driver);
    Ok((stream, peer))
}

fn configure_stream(stream: &TcpStream, driver: Driver) {
    // Linux accepted sockets inherit TCP_NODELAY from the listener; elsewhere they do not.
    #[cfg(not(target_os = "linux"))]
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "set_nodelay failed");
    }
    if driver == Driver::ThisThread {
        wait_for_first_bytes(stream);
    }
}

/// Drop tokio's guess that a just-accepted socket is readable, so the first read waits for
/// the driver's event instead of trying the socket. The guess pays off when the request is
/// already queued at accept; under load the accept usually wins the race with the client's
/// first bytes (a new connection per request from 64 clients: 0.8–0.9 `recvfrom` per
/// connection that found nothing). Clearing it costs no system call, and loses no wake-up as
/// long as the driver has not turned since the socket was registered: epoll then reports
/// bytes that are already there on its next turn. Only a current-thread runtime promises that
/// (its driver turns between task polls on this thread); on a multi-thread runtime another
/// worker may turn it in between, and the clear would erase the real, edge-triggered event.
///
/// This leans on two behaviours of tokio (1.54): accepted sockets start out assumed ready
/// (`with_many_workers_the_first_read_tries_the_socket_at_once` notices if that goes), and a
/// current-thread runtime's driver is turned only by the thread that runs it.
fn wait_for_first_bytes(stream: &TcpStream) {
    let _ = stream.try_io(tokio::io::Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nagle_off() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = accept(&listener, Driver::of_current_runtime())
            .await
            .unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    /// On a current-thread runtime the first read waits for the driver's event, and the
    /// event for bytes queued before the socket was registered still comes.
    #[tokio::test(flavor = "current_thread")]
    async fn on_one_thread_the_first_read_waits_for_the_driver_and_still_gets_the_bytes() {
        let accepted = accept_after_bytes_are_queued().await;
        assert_eq!(accepted.driver, Driver::ThisThread);
        let accepted = &accepted.stream;
        let mut buf = [0u8; 64];
        let tried = accepted.try_read(&mut buf);
        assert_eq!(tried.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        tokio::time::timeout(Duration::from_secs(5), accepted.readable())
            .await
            .expect("the driver reports bytes queued before registration")
            .unwrap();
        assert_eq!(accepted.try_read(&mut buf).unwrap(), 16);
    }

    /// On a multi-thread runtime the guess stays: the first read tries the socket.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_many_workers_the_first_read_tries_the_socket_at_once() {
        let accepted = accept_after_bytes_are_queued().await;
        assert_eq!(accepted.driver, Driver::AnyWorker);
        let mut buf = [0u8; 64];
        assert_eq!(accepted.stream.try_read(&mut buf).unwrap(), 16);
    }

    async fn accept_after_bytes_are_queued() -> Accepted {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut client, b"GET / HTTP/1.1\r\n").unwrap();
        let driver = Driver::of_current_runtime();
        let (accepted, _) = accept(&listener, driver).await.unwrap();
        Accepted {
            stream: accepted,
            _client: client,
            driver,
        }
    }

    struct Accepted {
        stream: TcpStream,
        /// Kept open for the test's reads.
        _client: std::net::TcpStream,
        driver: Driver,
    }

    #[test]
    fn sibling_listeners_share_the_port_the_first_one_picked() {
        let listeners = bind_listeners("127.0.0.1:0".parse().unwrap(), 16, 3).unwrap();
        let port = listeners[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for listener in &listeners {
            assert_eq!(listener.local_addr().unwrap().port(), port);
            assert!(socket2::SockRef::from(listener).reuse_port().unwrap());
        }
        // Only our own sockets share it: one without SO_REUSEPORT is refused.
        let taken = std::net::TcpListener::bind(("127.0.0.1", port));
        assert!(taken.is_err(), "an outsider bound the port");
    }

    /// A second copy of the server on the same address fails as it would without
    /// SO_REUSEPORT, instead of silently taking a share of the first one's connections.
    #[test]
    fn a_group_does_not_join_another_group_on_its_address() {
        let first = bind_listeners("127.0.0.1:0".parse().unwrap(), 16, 2).unwrap();
        let addr = first[0].local_addr().unwrap();
        let second = bind_listeners(addr, 16, 2);
        assert_eq!(
            second.map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::AddrInUse)
        );
    }

    #[test]
    fn a_lone_listener_does_not_share_its_port() {
        let listeners = bind_listeners("127.0.0.1:0".parse().unwrap(), 16, 1).unwrap();
        assert_eq!(listeners.len(), 1);
        assert!(!socket2::SockRef::from(&listeners[0]).reuse_port().unwrap());
    }
}
