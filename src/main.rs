//! The `sentinel` daemon: command line, config loading, logging, runtime, exit codes.
//! `anyhow` lives here and nowhere deeper.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use sentinel::config::{Config, RuntimeLayout};
use sentinel::privileges::Plan;
use sentinel::reload::{self, Reloader};
use sentinel::server::{Prebound, Server};

/// jemalloc rather than glibc's malloc: ~1,100 fewer instructions per keep-alive proxied
/// request, ~3,200 per new connection, and an idle connection's memory under 1.5 KiB in
/// every harness measured (ADR 0022).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The commit the binary was built from (`build.rs`), or `unknown` outside a git checkout.
const COMMIT: &str = env!("SENTINEL_COMMIT");

/// `--version`: `sentinel 0.1.0 (commit 1a2b3c4)`.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SENTINEL_COMMIT"),
    ")"
);

/// What `--help` says after the options: what the process reads besides its arguments.
const AFTER_HELP: &str = "\
Environment:
  LISTEN=IP:PORT     Overrides server.listen_addr (when set and non-empty);
                     tls.listen_addr is not affected
  LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES
                     Socket activation: listening sockets passed by systemd are
                     used instead of binding (named http, https, admin, or taken
                     in that order)
  NOTIFY_SOCKET, WATCHDOG_USEC
                     systemd notifications (READY, RELOADING, STOPPING) and
                     watchdog pings
  SENTINEL_UPGRADE_SOCKET, SENTINEL_UPGRADE_TOKEN
                     Set by a running Sentinel for the binary it starts on
                     SIGUSR2: where the new process reports that it serves
  RUST_LOG=FILTER    Overrides logging.level (tracing directives: info, debug, ...)

Signals:
  SIGHUP             Reload the configuration (changing the file reloads it too)
  SIGUSR1            Reopen logging.access_log_path (after logrotate moved it)
  SIGUSR2            Binary upgrade: start the binary at the path this process
                     was started from, hand it the listening sockets, and once it
                     reports ready stop accepting and drain (as on SIGTERM); if
                     it fails (exits, or is not ready within
                     server.upgrade_timeout_ms) keep serving
  SIGINT, SIGTERM    Stop accepting, let in-flight requests finish (up to
                     server.drain_timeout_ms), then exit 0; a second one exits at
                     once with status 1

Files:
  config.yaml        The configuration (--config); its directory is watched, and
                     relative paths in it resolve against it
  static_files.root, error pages, tls certificates and keys: named in the config

Started as root, Sentinel binds its listeners, then switches to server.user; without
server.user it refuses to serve as root beyond loopback (server.allow_root overrides).";

/// HTTP/1.1 web server and adaptive reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "sentinel", version = VERSION, about, after_help = AFTER_HELP)]
struct Cli {
    /// Configuration file.
    #[arg(short, long, value_name = "PATH", default_value = "config.yaml")]
    config: PathBuf,
    /// Validate the configuration and exit: 0 when valid, 1 otherwise.
    #[arg(short = 't', long)]
    check: bool,
    /// Health-check a running Sentinel and exit: `GET URL` (http://HOST:PORT/PATH, e.g. the
    /// admin listener's /healthz or /readyz); 0 on a 2xx answer, 1 otherwise. For container
    /// health checks in images without curl.
    #[arg(long, value_name = "URL", conflicts_with = "check")]
    probe: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // A config with several errors is one per line (then a count): each gets the
            // prefix, so every line of the output says where it came from.
            for line in format!("{error:#}").lines() {
                eprintln!("sentinel: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(url) = &cli.probe {
        return run_probe(url);
    }
    let listen = std::env::var("LISTEN").ok().filter(|v| !v.is_empty());
    if cli.check {
        let checked = Config::check(&cli.config, listen.as_deref());
        for warning in &checked.warnings {
            eprintln!("sentinel: warning: {warning}");
        }
        let config = checked.result?;
        // Plugins are loaded as a start would: one that does not compile, lacks an export
        // or refuses its configuration fails the check.
        if let Some(plugins) = &config.plugins {
            sentinel::plugins::check(plugins).map_err(anyhow::Error::msg)?;
        }
        println!(
            "sentinel: configuration file {} is valid",
            cli.config.display()
        );
        return Ok(());
    }
    // First, while the process has one thread: adopting the passed sockets removes the
    // variables that describe them.
    #[cfg(unix)]
    let mut inherited = sentinel::systemd::activation::InheritedListeners::from_env()
        .context("cannot use the sockets passed in LISTEN_FDS")?;
    #[cfg(unix)]
    let upgrade = Upgrade {
        parent: sentinel::upgrade::ready::Parent::from_env(),
        upgrader: sentinel::upgrade::Upgrader::from_start(),
    };
    let config = Config::load(&cli.config, listen.as_deref())?;
    sentinel::logging::init(&config.logging);
    if let Some(plugins) = &config.plugins {
        sentinel::plugins::check(plugins)
            .map_err(anyhow::Error::msg)
            .context("cannot load the plugins")?;
    }
    #[cfg(unix)]
    let (prebound, admin_listener) = {
        let passed = !inherited.is_empty();
        let prebound = Prebound {
            http: inherited.take_all("http"),
            https: match config.tls {
                Some(_) => inherited.take_all("https"),
                None => Vec::new(),
            },
        };
        let admin = match config.admin.as_ref().and_then(|_| inherited.take("admin")) {
            Some(passed) => Some(
                sentinel::server::adopt_listener(passed)
                    .context("cannot use the admin socket passed in LISTEN_FDS")?,
            ),
            None => None,
        };
        if passed {
            tracing::info!(
                http = prebound.http.len(),
                https = prebound.https.len(),
                admin = admin.is_some(),
                unused = inherited.left_over(),
                "using the listening sockets passed in LISTEN_FDS"
            );
        }
        // Closed now: a passed socket no listener took (its section left the config) would
        // accept handshakes nobody serves instead of refusing them.
        drop(inherited);
        (prebound, admin)
    };
    #[cfg(not(unix))]
    let (prebound, admin_listener, upgrade) = (Prebound::default(), None, Upgrade);
    for warning in &config.warnings {
        tracing::warn!(%warning, "configuration warning");
    }
    sentinel::metrics::record_config_loaded();
    // Decided before binding, so a refused root start binds nothing.
    let plan = sentinel::privileges::plan(&config)?;
    sentinel::access_log::configure(&config.logging)
        .context("cannot start the access log's writer thread")?;
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let per_core = workers > 1 && config.server.runtime == RuntimeLayout::PerCore;
    // Bound before any runtime exists: the per-core layout starts its threads and runtimes
    // here, and a runtime that fails to start must not be dropped inside another one.
    let server = Server::bind_with(config, per_core.then_some(workers), prebound)?;
    // One worker: a current-thread runtime. Its single run queue served connections more
    // evenly than the multi-thread scheduler with one worker: 512 connections on one core,
    // p99 ~72 -> ~50 ms at a similar median and CPU per request (docs/BENCHMARKS.md).
    // Per-core: this thread's runtime only waits for signals, reloads, admin requests and
    // health checks; the worker threads have runtimes of their own.
    let mut runtime = if workers == 1 || per_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(
        server,
        admin_listener,
        cli.config,
        listen,
        plan,
        upgrade,
    ))
}

/// Both sides of a binary upgrade: the process that started this one (to tell it when this
/// one serves), and how to start the next.
#[cfg(unix)]
struct Upgrade {
    parent: Option<sentinel::upgrade::ready::Parent>,
    upgrader: std::io::Result<sentinel::upgrade::Upgrader>,
}

#[cfg(not(unix))]
struct Upgrade;

/// `--probe URL`: the answer's status on stdout, success only for a 2xx.
fn run_probe(url: &str) -> anyhow::Result<()> {
    use sentinel::probe::{probe, ProbeTarget};
    let target = ProbeTarget::parse(url)?;
    let status = probe(&target, sentinel::limits::PROBE_TIMEOUT)
        .with_context(|| format!("probe of {url} failed"))?;
    println!("sentinel: {url} answered {status}");
    anyhow::ensure!((200..300).contains(&status), "{url} answered {status}");
    Ok(())
}

async fn serve(
    server: Server,
    admin_passed: Option<std::net::TcpListener>,
    path: PathBuf,
    listen: Option<String>,
    plan: Plan,
    upgrade: Upgrade,
) -> anyhow::Result<()> {
    let local = server.local_addr()?;
    let current = tokio::runtime::Handle::current();
    let (workers, runtime) = match server.worker_threads() {
        Some(threads) => (threads, "per_core"),
        None => match current.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => (1, "current_thread"),
            _ => (current.metrics().num_workers(), "shared"),
        },
    };
    tracing::info!(
        addr = %local,
        workers,
        runtime,
        version = env!("CARGO_PKG_VERSION"),
        commit = COMMIT,
        "listening"
    );
    if let Some(addr) = server.tls_local_addr() {
        tracing::info!(addr = %addr?, "listening for HTTPS");
    }
    let handle = server.handle();
    if let Some(tls) = handle.tls() {
        reload::certificates::watch(Arc::clone(tls.store()));
    }
    // One stop signal for the accept loops and the admin listener.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let admin_addr = server
        .handle()
        .config
        .load()
        .config
        .admin
        .as_ref()
        .map(|admin| admin.listen_addr);
    let admin_listener = match admin_addr {
        Some(_) if admin_passed.is_some() => admin_passed,
        Some(addr) => Some(
            sentinel::server::bind_lone_listener(addr, sentinel::limits::ADMIN_LISTEN_BACKLOG)
                .with_context(|| format!("cannot listen on {addr} (admin.listen_addr)"))?,
        ),
        None => None,
    };
    #[cfg(unix)]
    handle.sockets().set(
        sentinel::server::handover::Role::Admin,
        admin_listener.as_slice(),
    );
    // Every listener is bound and every file of the config read: no more need for root.
    match plan {
        Plan::Switch(account) => {
            sentinel::privileges::switch_to(account)?;
            tracing::info!(
                uid = account.uid,
                gid = account.gid,
                "switched to server.user"
            );
        }
        Plan::StayRoot(reason) => tracing::warn!(reason, "serving as root"),
        Plan::Stay => {}
    }
    // Always running, so a reload can start it when the config gains an admin section. It
    // outlives the drain (the stop signal only makes `/readyz` say 503) and stops after it.
    let (admin_moves, admin_moves_rx) = tokio::sync::mpsc::unbounded_channel();
    let (admin_stop, admin_stop_rx) = tokio::sync::watch::channel(false);
    let admin = sentinel::admin::spawn(
        admin_listener,
        admin_moves_rx,
        server.handle().config,
        stop_rx.clone(),
        admin_stop_rx,
    );
    let reloader = Arc::new(Reloader::new(path, listen, server.handle(), admin_moves));
    // Without a watch the server still runs (SIGHUP reloads); an operator should know.
    if let Err(error) = reload::watch(Arc::clone(&reloader)) {
        tracing::warn!(%error, "cannot watch the config file; reload with SIGHUP");
    }
    reload::plugins::watch(Arc::clone(&reloader));
    #[cfg(unix)]
    reload::reload_on_sighup(reloader).context("cannot watch SIGHUP")?;
    #[cfg(unix)]
    reopen_access_log_on_sigusr1().context("cannot watch SIGUSR1")?;
    let admin_stop = Arc::new(admin_stop);
    let admin_stop_early = Arc::clone(&admin_stop);
    // Set once a new binary serves: stop accepting and drain, as on SIGTERM.
    let upgraded = Arc::new(tokio::sync::Notify::new());
    #[cfg(unix)]
    match upgrade.upgrader {
        Ok(upgrader) => upgrade_on_sigusr2(
            upgrader,
            handle.clone(),
            Arc::clone(&upgraded),
            stop_rx.clone(),
        )
        .context("cannot watch SIGUSR2")?,
        Err(error) => {
            tracing::warn!(%error, "cannot find this binary's path; SIGUSR2 upgrades are off")
        }
    }
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown_signal() => {
                #[cfg(unix)]
                sentinel::systemd::notify::stopping();
            }
            // The service manager follows the new process now: no STOPPING for it. The
            // admin listener stops at once too, so probes reach the new process, not this
            // one's draining 503.
            () = upgraded.notified() => {
                let _ = admin_stop_early.send(true);
            }
        }
        let _ = stop_tx.send(true);
        // An operator who signals twice wants out now, not after the drain.
        shutdown_signal().await;
        tracing::warn!("second shutdown signal: exiting without waiting for the drain");
        std::process::exit(1);
    });
    // Every listener is bound (the accept loops start below; connections queue meanwhile).
    // Started for an upgrade, the previous process speaks to systemd for this one (it
    // reports this PID as the main one); a process that cannot tell it would be killed when
    // its wait runs out, so it stops before accepting anything.
    #[cfg(unix)]
    match &upgrade.parent {
        None => sentinel::systemd::notify::ready(),
        Some(parent) => {
            parent
                .announce()
                .context("upgrade: cannot tell the previous process that this one serves")?;
            tracing::info!("upgrade: told the previous process that this one serves");
        }
    }
    #[cfg(not(unix))]
    let Upgrade = upgrade;
    // Owned: aborted once the drain is over, so the last ping precedes the exit.
    #[cfg(unix)]
    let watchdog = sentinel::systemd::notify::watchdog_interval()
        .map(|interval| tokio::spawn(sentinel::systemd::notify::watchdog(interval)));
    // `run` puts the accept loops on the workers (tasks of the shared runtime, or the
    // per-core threads) and waits here for the stop and the drain.
    server
        .run(async {
            let _ = stop_rx.wait_for(|&stop| stop).await;
        })
        .await;
    #[cfg(unix)]
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    let _ = admin_stop.send(true);
    // Admin connections end within their own deadline, so this wait is bounded.
    if let Err(error) = admin.await {
        tracing::error!(%error, "the admin listener failed");
    }
    // Every request has been answered and logged: the last lines reach the file.
    sentinel::access_log::writer::finish();
    tracing::info!("stopped");
    Ok(())
}

/// SIGUSR1 reopens the access log file: logrotate moves the file, then signals, and the
/// next lines go to a new file at the configured path (nginx's convention).
#[cfg(unix)]
fn reopen_access_log_on_sigusr1() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut signals = signal(SignalKind::user_defined1())?;
    tokio::spawn(async move {
        while signals.recv().await.is_some() {
            tracing::info!("SIGUSR1: reopening the access log");
            sentinel::access_log::writer::reopen();
        }
    });
    Ok(())
}

/// SIGUSR2 starts the binary upgrade: one at a time; on success `upgraded` is notified and
/// this process drains, on failure it serves on.
#[cfg(unix)]
fn upgrade_on_sigusr2(
    upgrader: sentinel::upgrade::Upgrader,
    server: sentinel::server::ServerHandle,
    upgraded: Arc<tokio::sync::Notify>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut signals = signal(SignalKind::user_defined2())?;
    tokio::spawn(async move {
        // One upgrade at a time: signals that arrive meanwhile are merged into one, which
        // starts another attempt when this one has failed.
        while signals.recv().await.is_some() {
            tracing::info!(program = %upgrader.program().display(), "SIGUSR2: upgrading the binary");
            let timeout = server.config.load().config.server.upgrade_timeout;
            let mut stop = stop.clone();
            let stopping = async move {
                let _ = stop.wait_for(|&stop| stop).await;
            };
            let started = upgrader.start(server.sockets(), timeout, stopping).await;
            match started {
                Ok(pid) => {
                    tracing::info!(
                        pid,
                        "upgrade: the new process serves; this one stops accepting and drains"
                    );
                    sentinel::systemd::notify::main_pid_moved(pid);
                    upgraded.notify_one();
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "upgrade failed; this process serves on");
                }
            }
        }
    });
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("shutdown signal received");
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
