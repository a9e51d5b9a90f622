//! The `plugins` section (proxy-wasm modules) and each route's `plugins: [names]`,
//! validated into plain settings. Compiling and running the modules is `crate::plugins`'
//! business: the config only checks what it can check without running them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::raw::{RawPlugin, RawRoute};
use super::{io_reason, Validator};
use crate::http::response::StatusCode;
use crate::limits::{MAX_PLUGIN_MEMORY_BYTES, MAX_PLUGIN_TIMEOUT};

/// What a plugin that traps, runs out of memory or past its budget does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Answer `failure_status` (500 by default); the request goes no further.
    FailClosed,
    /// Skip the plugin for this request, as if it were not configured.
    FailOpen,
}

/// One configured plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// Unique among the plugins; the label of its metrics and the field of its log lines.
    pub name: Arc<str>,
    /// The `.wasm` file, resolved against the config file's directory.
    pub path: PathBuf,
    /// The SDK's root context id (`root_id`, default: the name).
    pub root_id: Arc<str>,
    /// The plugin configuration buffer, handed over in `proxy_on_configure`.
    pub configuration: Arc<[u8]>,
    /// The VM configuration buffer, handed over in `proxy_on_vm_start`.
    pub vm_configuration: Arc<[u8]>,
    pub on_error: OnError,
    /// The status `fail_closed` answers with.
    pub failure_status: StatusCode,
    /// The most its linear memory may grow to.
    pub max_memory_bytes: u64,
    /// The wall-clock budget of one callback.
    pub timeout: Duration,
}

/// The plugins as configured; `Config::plugins` is `None` when none is defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginsConfig {
    pub plugins: Vec<PluginConfig>,
    /// The chain every request runs unless its route lists its own: every plugin, in order.
    pub default_chain: Arc<[usize]>,
    /// One per entry of `Config::routes`, at the same index: the route's own chain (indexes
    /// into `plugins`), or `None` to run the default one.
    pub routes: Vec<Option<Arc<[usize]>>>,
}

impl PluginsConfig {
    /// The plugins, in order, that run for a request route `route` took (`None`: no route).
    pub fn chain(&self, route: Option<usize>) -> &[usize] {
        match route.and_then(|index| self.routes.get(index)) {
            Some(Some(own)) => own,
            _ => &self.default_chain,
        }
    }
}

/// Whether `name` can name a plugin: short and safe in a metrics label or a log line.
fn is_plugin_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Validator<'_> {
    pub(super) fn plugins(
        &self,
        raw: &[RawPlugin],
        routes: &[RawRoute],
        route_count: usize,
    ) -> Option<PluginsConfig> {
        let mut plugins: Vec<PluginConfig> = Vec::with_capacity(raw.len());
        for (index, plugin) in raw.iter().enumerate() {
            let key = |field: &str| format!("plugins[{index}].{field}");
            if !is_plugin_name(&plugin.name) {
                self.report(
                    &key("name"),
                    format!(
                        "{:?} must be 1 to 64 letters, digits, '_', '-' or '.'",
                        plugin.name
                    ),
                );
            } else if plugins.iter().any(|p| *p.name == *plugin.name) {
                self.report(&key("name"), format!("{:?} names two plugins", plugin.name));
            }
            let path = self.resolve(&plugin.path);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {}
                Ok(_) => self.report(&key("path"), format!("{} is not a file", path.display())),
                Err(error) => self.report(&key("path"), io_reason(&path, &error)),
            }
            let on_error = match plugin.on_error.as_str() {
                "fail_closed" => OnError::FailClosed,
                "fail_open" => OnError::FailOpen,
                other => {
                    self.report(
                        &key("on_error"),
                        format!("{other:?} is not one of \"fail_closed\", \"fail_open\""),
                    );
                    OnError::FailClosed
                }
            };
            let failure_status = match StatusCode::from_u16(plugin.failure_status) {
                Some(status) if (400..=599).contains(&plugin.failure_status) => status,
                _ => {
                    self.report(&key("failure_status"), "must be between 400 and 599");
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            };
            if plugin.max_memory_bytes == 0 || plugin.max_memory_bytes > MAX_PLUGIN_MEMORY_BYTES {
                self.report(
                    &key("max_memory_bytes"),
                    format!("must be between 1 and {MAX_PLUGIN_MEMORY_BYTES}"),
                );
            }
            let timeout = Duration::from_millis(plugin.timeout_ms);
            if timeout.is_zero() || timeout > MAX_PLUGIN_TIMEOUT {
                self.report(
                    &key("timeout_ms"),
                    format!("must be between 1 and {}", MAX_PLUGIN_TIMEOUT.as_millis()),
                );
            }
            let name: Arc<str> = Arc::from(plugin.name.as_str());
            plugins.push(PluginConfig {
                root_id: plugin
                    .root_id
                    .as_deref()
                    .map_or_else(|| Arc::clone(&name), Arc::from),
                name,
                path,
                configuration: Arc::from(plugin.configuration.as_bytes()),
                vm_configuration: Arc::from(plugin.vm_configuration.as_bytes()),
                on_error,
                failure_status,
                max_memory_bytes: plugin.max_memory_bytes,
                timeout,
            });
        }
        let mut route_chains: Vec<Option<Arc<[usize]>>> = Vec::with_capacity(route_count);
        for (index, route) in routes.iter().enumerate() {
            let Some(names) = &route.plugins else {
                route_chains.push(None);
                continue;
            };
            let mut chain = Vec::with_capacity(names.len());
            for name in names {
                match plugins.iter().position(|p| *p.name == **name) {
                    Some(found) if !chain.contains(&found) => chain.push(found),
                    Some(_) => self.report(
                        &format!("routes[{index}].plugins"),
                        format!("{name:?} is listed twice"),
                    ),
                    None => self.report(
                        &format!("routes[{index}].plugins"),
                        format!("{name:?} is not the name of a plugin in `plugins`"),
                    ),
                }
            }
            route_chains.push(Some(Arc::from(chain)));
        }
        // The implicit route (no `routes` section) runs the default chain.
        route_chains.resize(route_count, None);
        if plugins.is_empty() {
            return None;
        }
        Some(PluginsConfig {
            default_chain: (0..plugins.len()).collect(),
            plugins,
            routes: route_chains,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_list_overrides_the_default_chain() {
        let config = PluginsConfig {
            plugins: Vec::new(),
            default_chain: Arc::from(vec![0, 1]),
            routes: vec![None, Some(Arc::from(vec![1])), Some(Arc::from(Vec::new()))],
        };
        assert_eq!(config.chain(None), &[0, 1]);
        assert_eq!(config.chain(Some(0)), &[0, 1]);
        assert_eq!(config.chain(Some(1)), &[1]);
        assert!(config.chain(Some(2)).is_empty());
        assert_eq!(config.chain(Some(9)), &[0, 1]);
    }

    #[test]
    fn plugin_names_are_label_safe() {
        assert!(is_plugin_name("auth-v2.1_x"));
        assert!(!is_plugin_name(""));
        assert!(!is_plugin_name("a b"));
        assert!(!is_plugin_name(&"a".repeat(65)));
    }
}
