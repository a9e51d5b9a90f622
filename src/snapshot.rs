//! What a request runs on: one validated [`Config`] and the runtime state built beside it
//! (upstream groups with their pools, health and statistics; the static file cache). A
//! reload builds the next snapshot from the next config, carrying over the state of
//! whatever it still describes, and publishes it with one swap; a request loads one
//! snapshot and keeps it to its end.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::cache::state::CacheState;
use crate::config::Config;
use crate::metrics::{GroupSeries, RouteSeries};
use crate::plugins::PluginSet;
use crate::proxy::upstream::{start_health_checks, Upstream};
use crate::ratelimit::RateLimits;
use crate::static_files::{FileCache, SidecarLimits};

/// The live snapshot: each request loads one and keeps it; a reload swaps the whole thing.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    /// One per `config.proxy.upstreams`, at the same index (`RouteTarget::Upstream`).
    pub upstreams: Vec<Arc<Upstream>>,
    /// The static handler's small-file cache, when there is a static root.
    pub file_cache: Option<Arc<FileCache>>,
    /// Rate limits and their clients' state, when any limit is configured.
    pub rate_limits: Option<Arc<RateLimits>>,
    /// The response cache's store and misses in flight, when `cache` is configured.
    pub cache: Option<Arc<CacheState>>,
    /// The loaded proxy-wasm plugins, when any is configured: `None` costs a request one
    /// check.
    pub plugins: Option<Arc<PluginSet>>,
    /// Each route's metrics series, at its index in `config.routes`; empty when metrics
    /// are off.
    route_series: Vec<Option<RouteSeries>>,
}

impl Snapshot {
    /// The runtime state for `config`, carried over from `previous` where the config
    /// describes the same thing: backends with the same address and settings keep their idle
    /// connections, health and statistics; the same static root under the same cache limits
    /// keeps its file cache (entries are revalidated on every hit anyway).
    pub fn new(config: Config, previous: Option<&Snapshot>) -> Snapshot {
        let plugins = match config.plugins.as_ref() {
            None => None,
            Some(plugins) => {
                match PluginSet::build(plugins, previous.and_then(|p| p.plugins.as_deref())) {
                    Ok(set) => Some(Arc::new(set)),
                    Err((plugin, error)) => {
                        // Startup and reloads check the plugins before they get here; this
                        // is a file that changed in between.
                        tracing::error!(%plugin, %error, "plugins not loaded");
                        None
                    }
                }
            }
        };
        Snapshot::with_plugins(config, previous, plugins)
    }

    /// As [`Snapshot::new`], with the plugins loaded already (by a reload that had to know
    /// they load before swapping).
    pub fn with_plugins(
        config: Config,
        previous: Option<&Snapshot>,
        plugins: Option<Arc<PluginSet>>,
    ) -> Snapshot {
        let previous_upstreams = previous.map_or(&[][..], |p| &p.upstreams[..]);
        let upstreams = config
            .proxy
            .iter()
            .flat_map(|proxy| proxy.upstreams.iter())
            .map(|group| {
                let mut upstream = Upstream::build(group, previous_upstreams);
                if config.records_metrics() {
                    let backends = upstream.backends.iter().map(|b| &*b.name);
                    upstream.metrics = Some(GroupSeries::new(&upstream.name, backends));
                }
                Arc::new(upstream)
            })
            .collect();
        // Resolved here, once per config, so a request carries a number, not a label.
        let route_series = if config.records_metrics() {
            let labels = config.routes.iter().enumerate();
            labels
                .map(|(index, route)| crate::metrics::route_series(&route.metrics_label(index)))
                .collect()
        } else {
            Vec::new()
        };
        let file_cache = config.static_files.as_ref().map(|site| {
            let limits = (site.cache_max_bytes, site.cache_max_file_bytes);
            let sidecar_limits = SidecarLimits {
                valid_for: site.sidecar_valid,
                max_entries: site.sidecar_max_entries,
            };
            let reusable = previous.and_then(|p| {
                let old_site = p.config.static_files.as_ref()?;
                let old_cache = p.file_cache.as_ref()?;
                (old_site.root == site.root
                    && old_cache.limits() == limits
                    && old_cache.sidecar_limits() == sidecar_limits)
                    .then_some(old_cache)
            });
            match reusable {
                Some(cache) => {
                    // A reload may change what is compressed (`compression.types`,
                    // `precompressed`, a route's opt-out): sidecars are looked for again.
                    cache.forget_sidecars();
                    Arc::clone(cache)
                }
                None => Arc::new(FileCache::new(limits.0, limits.1).with_sidecars(sidecar_limits)),
            }
        });
        // Limits whose settings did not change keep their clients' state.
        let rate_limits = RateLimits::build(
            &config.rate_limit,
            &config.routes,
            previous.and_then(|p| p.rate_limits.as_deref()),
        )
        .map(Arc::new);
        // The same budgets keep the stored responses.
        let cache = CacheState::build(
            config.cache.as_ref(),
            previous.and_then(|p| p.cache.as_deref()),
        )
        .map(Arc::new);
        Snapshot {
            config,
            upstreams,
            file_cache,
            rate_limits,
            cache,
            plugins,
            route_series,
        }
    }

    /// Where a request that route `index` took (`None`: no route did) is recorded; `None`
    /// when metrics are off.
    pub fn route_series(&self, index: Option<usize>) -> Option<RouteSeries> {
        if !self.config.records_metrics() {
            return None;
        }
        match index {
            Some(index) => self.route_series.get(index).copied().flatten(),
            None => Some(RouteSeries::UNROUTED),
        }
    }

    /// A snapshot ready to be shared, for the first config of the process.
    pub fn shared(config: Config) -> SharedSnapshot {
        Arc::new(ArcSwap::from_pointee(Snapshot::new(config, None)))
    }

    /// The group a route's `RouteTarget::Upstream(index)` names.
    pub fn upstream(&self, index: usize) -> Option<&Arc<Upstream>> {
        self.upstreams.get(index)
    }

    /// Start the active health checks that are not running yet. Call it on the runtime,
    /// after startup and after every reload.
    pub fn start_health_checks(&self) {
        start_health_checks(&self.upstreams);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn snapshot(admin: &str) -> Snapshot {
        let yaml = format!(
            "server: {{}}\nproxy:\n  backends:\n    - name: a\n      address: \"127.0.0.1:1\"\n\
             routes:\n  - path_prefix: /api\n    upstream: default\n  \
             - name: rest\n    upstream: default\n{admin}"
        );
        let config = Config::from_yaml(&yaml, Path::new("test.yaml"), Path::new(".")).unwrap();
        Snapshot::new(config, None)
    }

    #[test]
    fn routes_are_labelled_by_name_else_index_and_unrouted_as_none() {
        let snapshot = snapshot("admin:\n  listen_addr: \"127.0.0.1:0\"\n");
        assert_eq!(
            snapshot.route_series(Some(0)),
            crate::metrics::route_series("0")
        );
        assert_eq!(
            snapshot.route_series(Some(1)),
            crate::metrics::route_series("rest")
        );
        assert_eq!(snapshot.route_series(None), Some(RouteSeries::UNROUTED));
        assert!(snapshot.upstreams[0].metrics.is_some());
    }

    #[test]
    fn with_metrics_off_nothing_is_resolved() {
        for admin in [
            "",
            "admin:\n  listen_addr: \"127.0.0.1:0\"\n  metrics: false\n",
        ] {
            let snapshot = snapshot(admin);
            assert_eq!(snapshot.route_series(Some(0)), None);
            assert_eq!(snapshot.route_series(None), None);
            assert!(snapshot.upstreams[0].metrics.is_none());
        }
    }

    #[test]
    fn a_reload_keeps_the_stored_responses_only_when_the_cache_budgets_did_not_change() {
        use crate::cache::key::PrimaryKey;
        let cached = |cache: &str, route_cache: &str| {
            let yaml = format!(
                "server: {{}}\nproxy:\n  backends:\n    - name: a\n      address: \"127.0.0.1:1\"\n\
                 routes:\n  - path_prefix: /api\n    upstream: default\n{route_cache}{cache}"
            );
            Config::from_yaml(&yaml, Path::new("test.yaml"), Path::new(".")).unwrap()
        };
        let first = Snapshot::new(cached("cache:\n  max_bytes: 1000000\n", ""), None);
        let state = first.cache.as_ref().expect("cache on");
        assert!(state.config.route_enabled(0));
        let key = PrimaryKey::new("h", "/api/x");
        let now = std::time::SystemTime::now();
        state.store.insert(
            key.clone(),
            crate::cache::store::StoredResponse {
                status: 200,
                fields: Vec::new(),
                body: bytes::Bytes::from_static(b"x"),
                times: crate::cache::freshness::ResponseTimes::new(now, now, None, None),
                lifetime: std::time::Duration::from_secs(60),
                cache_control: Default::default(),
                vary: Vec::new(),
                secondary: Vec::new(),
            },
        );
        let none = |_: &[Box<str>]| Vec::new();
        // Only a route switch changed: the entries stay.
        let second = Snapshot::new(
            cached("cache:\n  max_bytes: 1000000\n", "    cache: false\n"),
            Some(&first),
        );
        let kept = second.cache.as_ref().unwrap();
        assert!(!kept.config.route_enabled(0));
        assert!(kept.store.lookup(&key, none).is_some());
        // A new budget: a new, empty store.
        let third = Snapshot::new(cached("cache:\n  max_bytes: 2000000\n", ""), Some(&second));
        assert!(third
            .cache
            .as_ref()
            .unwrap()
            .store
            .lookup(&key, none)
            .is_none());
        // No section: no cache.
        assert!(Snapshot::new(cached("", ""), Some(&third)).cache.is_none());
    }
}
