//! Plugin hot reload: a look at every plugin's `.wasm` file each `PLUGIN_POLL_INTERVAL`
//! (size, modification time, inode: a write in place and a rename over it both change
//! one), and a reload of the plugins whose file changed. A poll rather than a watch: the
//! files may sit anywhere, a look is one `stat` per plugin, and a second is soon enough
//! for a deployment.

use std::sync::Arc;

use super::Reloader;
use crate::limits::PLUGIN_POLL_INTERVAL;

/// Look at the plugin files until the runtime stops.
pub fn watch(reloader: Arc<Reloader>) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(PLUGIN_POLL_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let changed = {
                let snapshot = reloader.server.config.load();
                snapshot.plugins.as_ref().is_some_and(|p| p.files_changed())
            };
            if !changed {
                continue;
            }
            let reloader = Arc::clone(&reloader);
            // Compiling a module takes a while: off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || {
                if reloader.reload_plugins() {
                    tracing::info!("plugins reloaded after a change of their files");
                }
            })
            .await;
        }
    });
}
