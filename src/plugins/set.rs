//! The loaded plugins of one snapshot: each module compiled (or taken from the cache) and
//! proven to start, carried over by reloads while its settings and file are unchanged, kept
//! at its previous version when a new one fails to load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use super::engine::{self, Compiled, Digest};
use super::error::PluginError;
use super::host::{PluginShared, SharedData};
use super::metrics;
use super::vm;
use crate::config::{PluginConfig, PluginsConfig};

/// What a module file looked like (size, modification time, inode): a change is a cue to
/// read it again; whether it really changed is decided by its bytes (`Digest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl FileStamp {
    pub fn of(path: &std::path::Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        })
    }
}

/// One plugin ready to run: its compiled module and what its instances share.
pub struct LoadedPlugin {
    /// Unique per load: a worker's instance is keyed by it, so a reloaded module gets new
    /// instances and an unchanged one keeps its own.
    pub(super) id: u64,
    /// Dropped with the last snapshot holding this load: the workers then drop its
    /// instances (`vm::with_vm`).
    pub(super) alive: Arc<()>,
    pub(super) compiled: Compiled,
    pub(super) shared: Arc<PluginShared>,
    stamp: Option<FileStamp>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.shared.config.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    pub fn config(&self) -> &PluginConfig {
        &self.shared.config
    }
}

static LOADS: AtomicU64 = AtomicU64::new(1);

/// Compile `config`'s module (or take it from the cache) and start one instance to prove
/// it loads and accepts its configuration.
fn load(config: &PluginConfig, shared_data: Arc<SharedData>) -> Result<LoadedPlugin, PluginError> {
    let stamp = FileStamp::of(&config.path);
    let compiled = engine::compile(&config.path)?;
    let shared = Arc::new(PluginShared {
        config: config.clone(),
        shared_data,
        metrics: metrics::for_plugin(&config.name),
    });
    // The probe runs on a thread of its own: the caller may be a worker whose own
    // instances must not be disturbed, and the instance is thrown away anyway.
    let probe = {
        let compiled = compiled.clone();
        let shared = Arc::clone(&shared);
        std::thread::scope(|scope| {
            scope
                .spawn(move || vm::Vm::start(&compiled, shared).map(drop))
                .join()
        })
    };
    match probe {
        Ok(result) => result?,
        Err(_) => return Err(PluginError::Refused("the probe thread")),
    }
    Ok(LoadedPlugin {
        id: LOADS.fetch_add(1, Ordering::Relaxed),
        alive: Arc::new(()),
        compiled,
        shared,
        stamp,
    })
}

/// The loaded plugins of one snapshot, in the config's order, and the chains of its routes.
#[derive(Debug)]
pub struct PluginSet {
    pub plugins: Vec<Arc<LoadedPlugin>>,
    pub config: PluginsConfig,
}

/// The failed versions already reported, by plugin name, so a broken file is logged once
/// and not on every look at it.
type Reported = Vec<(Arc<str>, Option<Digest>)>;

fn reported_failures() -> &'static Mutex<Reported> {
    static REPORTED: OnceLock<Mutex<Reported>> = OnceLock::new();
    REPORTED.get_or_init(Default::default)
}

impl PluginSet {
    /// Load every plugin of `config`, reusing those of `previous` whose settings and file
    /// did not change. A plugin that fails to load keeps its previous version (logged once);
    /// with none to keep, the whole set fails.
    pub fn build(
        config: &PluginsConfig,
        previous: Option<&PluginSet>,
    ) -> Result<PluginSet, (Arc<str>, PluginError)> {
        let mut plugins = Vec::with_capacity(config.plugins.len());
        for plugin in &config.plugins {
            let before = previous.and_then(|p| {
                p.plugins
                    .iter()
                    .find(|old| old.shared.config.name == plugin.name)
            });
            let unchanged = before.filter(|old| {
                old.shared.config == *plugin && old.stamp == FileStamp::of(&plugin.path)
            });
            if let Some(old) = unchanged {
                plugins.push(Arc::clone(old));
                continue;
            }
            let shared_data =
                before.map_or_else(Default::default, |old| Arc::clone(&old.shared.shared_data));
            match load(plugin, shared_data) {
                Ok(loaded) => {
                    if before.is_some() {
                        tracing::info!(plugin = %plugin.name, "plugin reloaded");
                    }
                    plugins.push(Arc::new(loaded));
                }
                Err(error) => match before {
                    Some(old) => {
                        let digest = std::fs::read(&plugin.path).ok().map(|b| Digest::of(&b));
                        let mut reported = reported_failures()
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        let key = (Arc::clone(&plugin.name), digest);
                        if !reported.contains(&key) {
                            reported.retain(|(name, _)| *name != plugin.name);
                            reported.push(key);
                            tracing::error!(
                                plugin = %plugin.name,
                                %error,
                                "plugin not reloaded: the previous version keeps running"
                            );
                        }
                        // Looked at again only when the file changes once more.
                        let kept = LoadedPlugin {
                            id: old.id,
                            alive: Arc::clone(&old.alive),
                            compiled: old.compiled.clone(),
                            shared: Arc::clone(&old.shared),
                            stamp: FileStamp::of(&plugin.path),
                        };
                        plugins.push(Arc::new(kept));
                    }
                    None => return Err((Arc::clone(&plugin.name), error)),
                },
            }
        }
        Ok(PluginSet {
            plugins,
            config: config.clone(),
        })
    }

    /// Whether a plugin's file looks different from when it was loaded.
    pub fn files_changed(&self) -> bool {
        self.plugins
            .iter()
            .any(|p| p.stamp != FileStamp::of(&p.shared.config.path))
    }
}

/// Load every plugin of `config` once, for `--check`: a module that does not compile,
/// lacks an export or refuses its configuration is an error.
pub fn check(config: &PluginsConfig) -> Result<(), String> {
    PluginSet::build(config, None)
        .map(drop)
        .map_err(|(name, error)| format!("plugin {name:?}: {error}"))
}
