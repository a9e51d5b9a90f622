//! Certificate hot reload: watch the directories of the certificate and key files (and of
//! the files their symlinks lead to) and have the store re-read the pairs after each burst
//! of changes, plus a look every `CERTIFICATE_POLL_INTERVAL` for what a watch cannot see.
//! Directories rather than files for the reason the config watch gives: certbot renews by
//! pointing a symlink at new files, Kubernetes by swapping a symlinked directory, editors
//! by renaming over the file; each replaces the inode a file watch would hold.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{watch_dir, DEBOUNCE};
use crate::limits::CERTIFICATE_POLL_INTERVAL;
use crate::server::tls::{CertificateStore, Look};

/// Keep `store` in step with its files until the runtime stops. A watch that cannot be set
/// up is logged; the periodic look still picks up changes within its interval.
pub fn watch(store: Arc<CertificateStore>) {
    let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = events_tx.send(());
            }
        }
    });
    let mut watched = Watched {
        watcher: match watcher {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the certificate files; checking them every second instead");
                None
            }
        },
        dirs: BTreeSet::new(),
    };
    watched.follow(&store.files());
    tracing::info!(
        dirs = ?watched.dirs,
        poll_ms = CERTIFICATE_POLL_INTERVAL.as_millis() as u64,
        "watching the certificate files for changes"
    );
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(CERTIFICATE_POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Closed when there is no watcher: the periodic look alone remains.
        let mut watching = watched.watcher.is_some();
        loop {
            let look = tokio::select! {
                event = events.recv(), if watching => match event {
                    Some(()) => {
                        // Wait for the burst to end: a pair is often two writes or renames.
                        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, events.recv()).await {}
                        Look::Always
                    }
                    None => {
                        watching = false;
                        continue;
                    }
                },
                _ = poll.tick() => Look::IfStamped,
            };
            let refreshing = Arc::clone(&store);
            let _ = tokio::task::spawn_blocking(move || refreshing.refresh(look)).await;
            // The list may have changed with a config reload, and symlinks may lead elsewhere.
            watched.follow(&store.files());
        }
    });
}

/// The directories being watched.
struct Watched {
    watcher: Option<RecommendedWatcher>,
    dirs: BTreeSet<PathBuf>,
}

impl Watched {
    /// Watch the directories `files` (and their symlink targets) are in, and only those.
    fn follow(&mut self, files: &[PathBuf]) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let wanted = dirs_of(files);
        for gone in self.dirs.difference(&wanted) {
            let _ = watcher.unwatch(gone);
        }
        for new in wanted.difference(&self.dirs) {
            if let Err(error) = watcher.watch(new, RecursiveMode::NonRecursive) {
                tracing::debug!(dir = %new.display(), %error, "cannot watch a certificate directory");
            }
        }
        self.dirs = wanted;
    }
}

/// The directory of each file, and of the file its symlinks finally lead to.
fn dirs_of(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for file in files {
        // Resolved, so one directory named two ways (`./certs`, `/srv/certs`) is one watch.
        let dir = watch_dir(file);
        dirs.insert(std::fs::canonicalize(&dir).unwrap_or(dir));
        if let Ok(target) = std::fs::canonicalize(file) {
            dirs.insert(watch_dir(&target));
        }
    }
    dirs.retain(|dir| Path::is_dir(dir));
    dirs
}
