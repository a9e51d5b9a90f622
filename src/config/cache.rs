//! The `cache` section and each route's `cache` switch: validated into plain settings. The
//! store and the coalescer are runtime state built from these beside the config snapshot
//! (`crate::cache::CacheState`), never inside it.

use std::time::Duration;

use super::raw::{RawCache, RawRoute};
use super::Validator;
use crate::limits::MAX_CACHE_LOCK_TIMEOUT;

/// The response cache's settings (RFC 9111, issue 19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Memory budget of every stored response (bodies, heads and keys).
    pub max_bytes: u64,
    /// Larger responses stream through and are never stored.
    pub max_object_bytes: u64,
    /// The longest a miss waits for a concurrent miss on the same key to fill it.
    pub lock_timeout: Duration,
    /// One per entry of `Config::routes`, at the same index: whether that route caches.
    pub routes: Vec<bool>,
}

impl CacheConfig {
    /// Whether route `index` stores and serves from the cache.
    pub fn route_enabled(&self, index: usize) -> bool {
        self.routes.get(index).copied().unwrap_or(false)
    }

    /// Whether a store built for `other` serves this config as it is: the same budgets
    /// (a reload that changes only the routes or the lock wait keeps the stored entries).
    pub fn same_store(&self, other: &CacheConfig) -> bool {
        self.max_bytes == other.max_bytes && self.max_object_bytes == other.max_object_bytes
    }
}

impl Validator<'_> {
    pub(super) fn cache(
        &self,
        raw: Option<&RawCache>,
        routes: &[RawRoute],
        route_count: usize,
    ) -> Option<CacheConfig> {
        let Some(raw) = raw else {
            for (i, route) in routes.iter().enumerate() {
                if route.cache == Some(true) {
                    self.report(
                        &format!("routes[{i}].cache"),
                        "needs a top-level cache section",
                    );
                }
            }
            return None;
        };
        let max_bytes = self.positive("cache.max_bytes", raw.max_bytes);
        // An object larger than the whole budget could never be kept: the smaller wins.
        let max_object_bytes = self
            .positive("cache.max_object_bytes", raw.max_object_bytes)
            .min(max_bytes);
        let lock_timeout = self.positive_millis("cache.lock_timeout_ms", raw.lock_timeout_ms);
        if lock_timeout > MAX_CACHE_LOCK_TIMEOUT {
            self.report(
                "cache.lock_timeout_ms",
                format!(
                    "at most {} (a waiting request holds its client that long)",
                    MAX_CACHE_LOCK_TIMEOUT.as_millis()
                ),
            );
        }
        Some(CacheConfig {
            max_bytes,
            max_object_bytes,
            lock_timeout,
            // Without routes in the file, the one implicit route caches.
            routes: if routes.is_empty() {
                vec![true; route_count]
            } else {
                routes.iter().map(|r| r.cache != Some(false)).collect()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::Config;
    use crate::limits::{DEFAULT_CACHE_MAX_BYTES, DEFAULT_CACHE_MAX_OBJECT_BYTES};

    fn parse(extra: &str) -> Result<Config, String> {
        let yaml = format!(
            "server: {{}}\nproxy:\n  backends:\n    - name: a\n      address: \"127.0.0.1:1\"\n{extra}"
        );
        Config::from_yaml(&yaml, Path::new("test.yaml"), Path::new(".")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_route_switches_and_refusals() {
        assert!(parse("").unwrap().cache.is_none());
        let cache = parse("cache: {}\n").unwrap().cache.unwrap();
        assert_eq!(cache.max_bytes, DEFAULT_CACHE_MAX_BYTES);
        assert_eq!(cache.max_object_bytes, DEFAULT_CACHE_MAX_OBJECT_BYTES);
        assert_eq!(cache.lock_timeout, Duration::from_secs(5));
        assert!(cache.route_enabled(0), "the implicit route caches");
        let routes = "routes:\n  - path_prefix: /api\n    upstream: default\n    cache: false\n  \
                      - path_prefix: /\n    upstream: default\n    cache: true\n";
        let cache = parse(&format!("cache:\n  max_bytes: 1000\n{routes}"))
            .unwrap()
            .cache
            .unwrap();
        assert_eq!(cache.routes, vec![false, true]);
        assert_eq!(cache.max_object_bytes, 1000, "capped at the whole budget");
        let error = parse(routes).unwrap_err();
        assert!(error.contains("routes[1].cache"), "{error}");
        for bad in [
            "cache:\n  max_bytes: 0\n",
            "cache:\n  lock_timeout_ms: 600000\n",
            "cache:\n  size: 1\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
