//! Hot reload: re-read the config file when it changes (watched with `notify`) or on SIGHUP,
//! validate the whole new config, carry runtime state over, bind a new listen address (and
//! admin and HTTPS addresses) first if it changed, prepare the new TLS settings, and
//! publish the result with one atomic swap. A config that fails any step is logged (file,
//! line, reason) and the running one keeps serving. Certificate files are watched on their
//! own (see [`certificates`]).
//!
//! The directory is watched rather than the file, because editors save by writing a new
//! file and renaming it over the old one, and orchestrators swap a symlink: both replace the
//! inode a file watch would be attached to.

pub mod certificates;
pub mod plugins;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigError, RouteTarget};
use crate::limits::ADMIN_LISTEN_BACKLOG;
use crate::metrics::ReloadResult;
use crate::plugins::PluginSet;
use crate::server::handover::Role;
use crate::server::tls::{Look, TlsError};
use crate::server::{bind_lone_listener, ServerHandle};
use crate::snapshot::Snapshot;

/// Quiet time after the last file event before reloading: a save is often several events
/// (truncate, write, rename), and reading between them would see half a file.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} (admin.listen_addr): {source}")]
    AdminBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} (tls.listen_addr): {source}")]
    TlsBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("plugin {plugin:?}: {error}")]
    Plugin {
        plugin: Arc<str>,
        error: crate::plugins::PluginError,
    },
}

/// Where a reload sends the admin listener's next listening socket (bound by the reload,
/// so a failure rejects it), or `None` to stop it. The admin task holds the receiving end:
/// a plain channel, so this layer does not import the one above it.
pub type AdminMoves = mpsc::UnboundedSender<Option<std::net::TcpListener>>;

/// What a successful reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// `group/name address` of backends that are new.
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    pub routes_changed: bool,
    pub listen_changed: bool,
    /// `admin.listen_addr` was added, changed or removed.
    pub admin_changed: bool,
    /// Any `tls` setting, the certificate list included.
    pub tls_changed: bool,
}

impl Changes {
    /// One line on what changed, for the dashboard's list of reloads.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.backends_added.is_empty() {
            parts.push(format!(
                "backends added: {}",
                self.backends_added.join(", ")
            ));
        }
        if !self.backends_removed.is_empty() {
            parts.push(format!(
                "backends removed: {}",
                self.backends_removed.join(", ")
            ));
        }
        for (changed, what) in [
            (self.routes_changed, "routes changed"),
            (self.listen_changed, "listen address moved"),
            (self.admin_changed, "admin listener moved"),
            (self.tls_changed, "TLS changed"),
        ] {
            if changed {
                parts.push(what.to_string());
            }
        }
        if parts.is_empty() {
            "no backend, route or listener changed".to_string()
        } else {
            parts.join("; ")
        }
    }
}

pub struct Reloader {
    path: PathBuf,
    listen_override: Option<String>,
    server: ServerHandle,
    admin: AdminMoves,
    /// The bytes of the file at the last attempt, good or bad, so events that did not change
    /// it (a touch, another file in the directory, our own log file) cost a read, not a
    /// reload, and a rejected file is reported once, not on every event.
    last_text: Mutex<Option<Vec<u8>>>,
    /// Held while a reload builds and swaps a snapshot: a config reload and a plugin file
    /// reload must not both build on the same snapshot and lose one's changes.
    swapping: Mutex<()>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        listen_override: Option<String>,
        server: ServerHandle,
        admin: AdminMoves,
    ) -> Reloader {
        let last_text = std::fs::read(&path).ok();
        Reloader {
            path,
            listen_override,
            server,
            admin,
            last_text: Mutex::new(last_text),
            swapping: Mutex::new(()),
        }
    }

    /// Reload now. `force` reloads even when the file's bytes did not change (SIGHUP: the
    /// operator may have changed an error page or a symlinked root).
    pub fn reload(&self, force: bool) -> Result<Option<Changes>, ReloadError> {
        let text = std::fs::read(&self.path).ok();
        {
            let mut last = self.last_text.lock().unwrap_or_else(|p| p.into_inner());
            if !force && text.is_some() && *last == text {
                return Ok(None);
            }
            last.clone_from(&text);
        }
        let _swapping = self.swapping.lock().unwrap_or_else(|p| p.into_inner());
        let current_snapshot = self.server.config.load_full();
        let current = &current_snapshot.config;
        let next = Config::load(&self.path, self.listen_override.as_deref())?;
        let changes = describe_changes(current, &next);
        // Plugins load (compile, start, accept their configuration) before anything moves:
        // a new plugin that cannot is a rejected reload; a changed one that cannot keeps
        // its previous version.
        let plugins = match next.plugins.as_ref() {
            Some(plugins) => {
                let previous = current_snapshot.plugins.as_deref();
                let set = PluginSet::build(plugins, previous)
                    .map_err(|(plugin, error)| ReloadError::Plugin { plugin, error })?;
                Some(Arc::new(set))
            }
            None => None,
        };
        // Everything that can fail is bound before anything moves: the admin socket is only
        // handed over once the main listener has moved too, and dropped (closed) otherwise.
        let admin_listener = match next.admin.as_ref().filter(|_| changes.admin_changed) {
            Some(admin) => {
                let addr = admin.listen_addr;
                let listener = bind_lone_listener(addr, ADMIN_LISTEN_BACKLOG)
                    .map_err(|source| ReloadError::AdminBind { addr, source })?;
                Some(listener)
            }
            None => None,
        };
        // The HTTPS listener runs with the settings it has until a restart when the section
        // is added or removed (see `startup_keys_changed`); otherwise it takes the new ones.
        let running_tls = self.server.tls().zip(next.tls.as_ref());
        let tls_prepared = match running_tls {
            // SIGHUP rebuilds it whatever changed: the operator may have replaced the CA file.
            Some((terminator, tls)) if changes.tls_changed || force => {
                Some(terminator.prepare(tls)?)
            }
            _ => None,
        };
        let tls_moved = match (running_tls, &current.tls) {
            (Some((_, tls)), Some(was)) if tls.listen_addr != was.listen_addr => {
                let addr = tls.listen_addr;
                let rebound = self
                    .server
                    .bind_tls(addr, next.server.listen_backlog)
                    .map_err(|source| ReloadError::TlsBind { addr, source })?;
                Some(rebound)
            }
            _ => None,
        };
        if changes.listen_changed {
            let addr = next.server.listen_addr;
            self.server
                .rebind(addr, next.server.listen_backlog)
                .map_err(|source| ReloadError::Bind { addr, source })?;
        }
        if let Some(rebound) = tls_moved {
            // Refused only when the accept loops have ended, that is while the process stops.
            let _ = rebound.switch();
        }
        if let (Some(prepared), Some(terminator)) = (tls_prepared, self.server.tls()) {
            terminator.commit(prepared);
            if force {
                terminator.store().refresh(Look::Always);
            }
        }
        if changes.admin_changed {
            self.server
                .sockets()
                .set(Role::Admin, admin_listener.as_slice());
            // Refused only when the admin task has ended, that is while the process stops.
            let _ = self.admin.send(admin_listener);
        }
        let restart_only = startup_keys_changed(current, &next);
        if !restart_only.is_empty() {
            tracing::warn!(
                keys = ?restart_only,
                "changed keys take effect only after a restart; the rest is applied now"
            );
        }
        for warning in &next.warnings {
            tracing::warn!(%warning, "configuration warning");
        }
        if next.logging.level != current.logging.level {
            crate::logging::set_level(&next.logging.level);
        }
        // A moved access log is reopened at its new path; a format that needs the writer
        // thread starts it.
        if let Err(error) = crate::access_log::configure(&next.logging) {
            tracing::error!(%error, "access log: cannot start the writer thread");
        }
        let next = Arc::new(Snapshot::with_plugins(
            next,
            Some(&current_snapshot),
            plugins,
        ));
        self.server.config.store(Arc::clone(&next));
        next.start_health_checks();
        Ok(Some(changes))
    }

    /// Load the plugins whose `.wasm` file changed, under the running config, and swap
    /// them in. A module that does not load keeps its previous version (logged once).
    /// Whether anything was swapped.
    pub fn reload_plugins(&self) -> bool {
        let _swapping = self.swapping.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.server.config.load_full();
        let (Some(config), Some(running)) = (&current.config.plugins, &current.plugins) else {
            return false;
        };
        if !running.files_changed() {
            return false;
        }
        let set = match PluginSet::build(config, Some(running)) {
            Ok(set) => set,
            Err((plugin, error)) => {
                tracing::error!(%plugin, %error, "plugin not reloaded");
                return false;
            }
        };
        let next =
            Snapshot::with_plugins(current.config.clone(), Some(&current), Some(Arc::new(set)));
        self.server.config.store(Arc::new(next));
        true
    }

    /// Reload and log the outcome, one line either way.
    pub fn reload_and_log(&self, trigger: &'static str, force: bool) {
        let started = Instant::now();
        // The service manager shows the reload and, for `systemctl reload`, waits for its end.
        #[cfg(unix)]
        crate::systemd::notify::reloading();
        let result = self.reload(force);
        #[cfg(unix)]
        crate::systemd::notify::reloaded();
        match &result {
            Ok(Some(changes)) => {
                crate::metrics::record_reload(true);
                crate::metrics::remember_reload(ReloadResult::Applied, trigger, changes.summary());
            }
            Ok(None) => {}
            Err(error) => {
                crate::metrics::record_reload(false);
                crate::metrics::remember_reload(ReloadResult::Rejected, trigger, error.to_string());
            }
        }
        match result {
            Ok(Some(changes)) => tracing::info!(
                trigger,
                file = %self.path.display(),
                took_us = started.elapsed().as_micros() as u64,
                backends_added = ?changes.backends_added,
                backends_removed = ?changes.backends_removed,
                routes_changed = changes.routes_changed,
                listen_changed = changes.listen_changed,
                admin_changed = changes.admin_changed,
                tls_changed = changes.tls_changed,
                "config reloaded"
            ),
            Ok(None) => tracing::debug!(trigger, "config file unchanged; not reloaded"),
            Err(error) => tracing::error!(
                trigger,
                %error,
                "config reload rejected; the running config stays"
            ),
        }
    }
}

/// Keys read once at startup (they size or start something that lives as long as the
/// process) whose value differs between `current` and `next`.
fn startup_keys_changed(current: &Config, next: &Config) -> Vec<&'static str> {
    let (was, now) = (&current.server, &next.server);
    [
        (
            "server.max_connections",
            was.max_connections != now.max_connections,
        ),
        (
            "server.listen_backlog",
            was.listen_backlog != now.listen_backlog,
        ),
        ("server.workers", was.workers != now.workers),
        ("server.runtime", was.runtime != now.runtime),
        ("server.user", was.run_as != now.run_as),
        (
            "logging.format",
            current.logging.format != next.logging.format,
        ),
        ("tls", current.tls.is_some() != next.tls.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// Watch the config file's directory and reload (debounced) on every change, until the
/// runtime stops. Returns once the watch is in place, so a change made after this returns is
/// seen.
pub fn watch(reloader: Arc<Reloader>) -> notify::Result<()> {
    let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Any event in the directory may be ours (a symlink swap renames a sibling), but
        // access events are not changes.
        if let Ok(event) = event {
            if !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = events_tx.send(());
            }
        }
    })?;
    let dir = watch_dir(&reloader.path);
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tracing::info!(
        dir = %dir.display(),
        file = %reloader.path.display(),
        "watching the config for changes"
    );
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        while events.recv().await.is_some() {
            // Wait for the burst to end.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, events.recv()).await {}
            let reloader = Arc::clone(&reloader);
            let _ =
                tokio::task::spawn_blocking(move || reloader.reload_and_log("file change", false))
                    .await;
        }
    });
    Ok(())
}

/// Reload on every SIGHUP, until the runtime stops.
#[cfg(unix)]
pub fn reload_on_sighup(reloader: Arc<Reloader>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let reloader = Arc::clone(&reloader);
            let _ =
                tokio::task::spawn_blocking(move || reloader.reload_and_log("SIGHUP", true)).await;
        }
    });
    Ok(())
}

fn watch_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Backends added and removed (by group, name and address), and whether routing changed.
pub fn describe_changes(old: &Config, new: &Config) -> Changes {
    let backends = |config: &Config| -> Vec<String> {
        config
            .proxy
            .iter()
            .flat_map(|p| p.upstreams.iter())
            .flat_map(|u| {
                u.backends
                    .iter()
                    .map(move |b| format!("{}/{} {}", u.name, b.name, b.address))
            })
            .collect()
    };
    let (before, after) = (backends(old), backends(new));
    let routes = |config: &Config| -> Vec<String> {
        config
            .routes
            .iter()
            .map(|r| {
                let target = match &r.target {
                    RouteTarget::Static => "static".to_string(),
                    RouteTarget::Upstream(index) => config
                        .proxy
                        .as_ref()
                        .and_then(|p| p.upstreams.get(*index))
                        .map_or_else(|| format!("#{index}"), |u| u.name.clone()),
                };
                format!(
                    "{:?} {} {} {} {} {:?} {:?} {:?} {:?} {:?}",
                    r.host,
                    r.path_prefix,
                    target,
                    r.strip_prefix,
                    r.pass_host,
                    r.connection_timeout,
                    r.request_timeout,
                    r.send_timeout,
                    r.read_timeout,
                    r.tunnel_idle_timeout
                )
            })
            .collect()
    };
    Changes {
        backends_added: after
            .iter()
            .filter(|b| !before.contains(b))
            .cloned()
            .collect(),
        backends_removed: before
            .iter()
            .filter(|b| !after.contains(b))
            .cloned()
            .collect(),
        routes_changed: routes(old) != routes(new),
        listen_changed: old.server.listen_addr != new.server.listen_addr,
        admin_changed: old.admin.as_ref().map(|a| a.listen_addr)
            != new.admin.as_ref().map(|a| a.listen_addr),
        tls_changed: old.tls != new.tls,
    }
}
