//! The `proxy` and `routes` sections: upstream groups (the original `proxy.backends` is the
//! group named `default`), pool and health settings, and the routes that send a request to
//! an upstream or to the static handler.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use super::raw::{RawBackend, RawHealthCheck, RawProxy, RawRoute, RawStrategy};
use super::upstream::{
    BackendSettings, BreakerSettings, CheckSettings, GroupPolicy, HealthSettings,
    RetryBudgetSettings, UpstreamConfig,
};
use super::{ConfigError, Validator};
use crate::balance::stats::BalanceSettings;
use crate::balance::strategy::{HashKey, Strategy};
use crate::http::response_parser::ResponseLimits;
use crate::limits::{MAX_BACKEND_WEIGHT, MAX_RESPONSE_HEADERS, RETRY_BUDGET_WINDOW};

/// The name `proxy.backends` is known by in `routes`.
pub const DEFAULT_UPSTREAM: &str = "default";

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Every group: `default` (`proxy.backends`, possibly empty) first, then the others by
    /// name. Routes refer to a group by its index here; the runtime state built from each
    /// group (pools, health) sits at the same index beside the snapshot.
    pub upstreams: Vec<UpstreamConfig>,
    pub response_limits: ResponseLimits,
    /// Response header naming the backend that answered (`proxy.backend_header`).
    pub backend_header: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub name: String,
    /// `host:port`; resolved when connecting.
    pub address: String,
    pub weight: u32,
}

impl ProxyConfig {
    /// The index of the group called `name`.
    pub fn upstream_index(&self, name: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| u.name == name)
    }
}

/// Where a route sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTarget {
    Static,
    /// The group at this index of `ProxyConfig::upstreams`.
    Upstream(usize),
}

/// One route, in the order routes are tried.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<String>,
    /// Matches whole path segments: `/api` matches `/api` and `/api/x`, not `/apix`.
    pub path_prefix: String,
    pub target: RouteTarget,
    /// Remove `path_prefix` from the path sent upstream.
    pub strip_prefix: bool,
    /// Send the client's `Host` upstream (otherwise the backend's address).
    pub pass_host: bool,
    pub connection_timeout: Duration,
    /// The wait for the response head, once the request is sent.
    pub request_timeout: Duration,
    /// The longest the backend may accept none of the request.
    pub send_timeout: Duration,
    /// The longest gap between two reads of the response body.
    pub read_timeout: Duration,
    /// The longest a `101` tunnel may carry no byte either way.
    pub tunnel_idle_timeout: Duration,
}

/// Per-group settings resolved against the proxy-wide defaults.
struct GroupDefaults {
    connection_timeout: Duration,
    request_timeout: Duration,
    send_timeout: Duration,
    read_timeout: Duration,
    tunnel_idle_timeout: Duration,
    pass_host: bool,
}

impl Validator<'_> {
    pub(super) fn proxy(
        &self,
        raw: &RawProxy,
    ) -> Result<(ProxyConfig, ProxyDefaults), ConfigError> {
        let millis = |key: &str, value: u64| self.positive_millis(key, value);
        let settings = BackendSettings {
            max_idle: raw.max_idle_per_backend,
            idle_timeout: millis("proxy.idle_timeout_ms", raw.idle_timeout_ms)?,
            health: HealthSettings {
                max_fails: raw.max_fails,
                fail_timeout: millis("proxy.fail_timeout_ms", raw.fail_timeout_ms)?,
                max_fail_timeout: millis("proxy.max_fail_timeout_ms", raw.max_fail_timeout_ms)?,
            },
            balance: BalanceSettings {
                default_latency: millis("proxy.default_latency_ms", raw.default_latency_ms)?,
                decay: millis("proxy.ewma_decay_ms", raw.ewma_decay_ms)?,
                failure_penalty: millis("proxy.failure_penalty_ms", raw.failure_penalty_ms)?,
                slow_start: Duration::from_millis(raw.slow_start_ms),
            },
            breaker: BreakerSettings {
                failure_rate: raw.breaker.failure_rate,
                min_requests: raw.breaker.min_requests.max(1),
                window: millis("proxy.breaker.window_ms", raw.breaker.window_ms)?,
                open_for: millis("proxy.breaker.open_ms", raw.breaker.open_ms)?,
                trial_requests: raw.breaker.trial_requests.max(1),
            },
            max_concurrent: raw.max_concurrent_requests,
        };
        if !(0.0..=1.0).contains(&raw.breaker.failure_rate) {
            return Err(self.invalid(
                "proxy.breaker.failure_rate",
                "must be between 0 (off) and 1",
            ));
        }
        if let Some(bad) = raw
            .failure_statuses
            .iter()
            .find(|s| !(400..=599).contains(*s))
        {
            return Err(self.invalid(
                "proxy.failure_statuses",
                format!("{bad} is not a 4xx or 5xx status"),
            ));
        }
        if raw.max_ejected_percent > 100 || raw.retry_budget_percent > 1000 {
            return Err(self.invalid(
                if raw.max_ejected_percent > 100 {
                    "proxy.max_ejected_percent"
                } else {
                    "proxy.retry_budget_percent"
                },
                "out of range (max_ejected_percent 0..=100, retry_budget_percent 0..=1000)",
            ));
        }
        let policy = GroupPolicy {
            failure_statuses: raw.failure_statuses.clone(),
            slow_response: Duration::from_millis(raw.slow_response_ms),
            max_ejected_percent: raw.max_ejected_percent,
            max_retries: raw.max_retries,
            retry_budget: RetryBudgetSettings {
                ratio: f64::from(raw.retry_budget_percent) / 100.0,
                min_per_sec: f64::from(raw.retry_budget_min_per_sec),
                window: RETRY_BUDGET_WINDOW,
            },
        };
        let default_strategy =
            self.strategy("proxy.strategy", raw.strategy, raw.hash_key.as_deref())?;
        let default_checks = match &raw.health_check {
            Some(check) => Some(self.health_check("proxy.health_check", check)?),
            None => None,
        };
        if settings.health.max_fail_timeout < settings.health.fail_timeout {
            return Err(self.invalid(
                "proxy.max_fail_timeout_ms",
                "must be at least proxy.fail_timeout_ms",
            ));
        }
        if raw.max_response_head_bytes < 1024 {
            return Err(self.invalid("proxy.max_response_head_bytes", "must be at least 1024"));
        }
        let defaults = ProxyDefaults {
            connection_timeout: millis("proxy.connection_timeout_ms", raw.connection_timeout_ms)?,
            request_timeout: millis("proxy.request_timeout_ms", raw.request_timeout_ms)?,
            send_timeout: millis("proxy.send_timeout_ms", raw.send_timeout_ms)?,
            read_timeout: millis("proxy.read_timeout_ms", raw.read_timeout_ms)?,
            tunnel_idle_timeout: millis(
                "proxy.tunnel_idle_timeout_ms",
                raw.tunnel_idle_timeout_ms,
            )?,
            pass_host: raw.pass_host,
            has_default_group: !raw.backends.is_empty(),
            groups: BTreeMap::new(),
        };

        let backends = self.backends("proxy.backends", &raw.backends)?;
        let mut upstreams = vec![UpstreamConfig {
            name: DEFAULT_UPSTREAM.to_string(),
            backends,
            settings,
            checks: default_checks.clone(),
            strategy: default_strategy.clone(),
            policy: policy.clone(),
        }];
        let mut group_defaults = BTreeMap::new();
        group_defaults.insert(
            DEFAULT_UPSTREAM.to_string(),
            GroupDefaults {
                connection_timeout: defaults.connection_timeout,
                request_timeout: defaults.request_timeout,
                send_timeout: defaults.send_timeout,
                read_timeout: defaults.read_timeout,
                tunnel_idle_timeout: defaults.tunnel_idle_timeout,
                pass_host: defaults.pass_host,
            },
        );
        for (name, group) in &raw.upstreams {
            let key = format!("proxy.upstreams.{name}");
            if name == DEFAULT_UPSTREAM || name.is_empty() {
                return Err(self.invalid(
                    &key,
                    "\"default\" is the name of proxy.backends; choose another name",
                ));
            }
            if group.backends.is_empty() {
                return Err(self.invalid(&key, "an upstream needs at least one backend"));
            }
            let backends = self.backends(&format!("{key}.backends"), &group.backends)?;
            let optional_millis = |field: &str, value: Option<u64>, fallback: Duration| match value
            {
                Some(value) => millis(&format!("{key}.{field}"), value),
                None => Ok(fallback),
            };
            group_defaults.insert(
                name.clone(),
                GroupDefaults {
                    connection_timeout: optional_millis(
                        "connection_timeout_ms",
                        group.connection_timeout_ms,
                        defaults.connection_timeout,
                    )?,
                    request_timeout: optional_millis(
                        "request_timeout_ms",
                        group.request_timeout_ms,
                        defaults.request_timeout,
                    )?,
                    send_timeout: optional_millis(
                        "send_timeout_ms",
                        group.send_timeout_ms,
                        defaults.send_timeout,
                    )?,
                    read_timeout: optional_millis(
                        "read_timeout_ms",
                        group.read_timeout_ms,
                        defaults.read_timeout,
                    )?,
                    tunnel_idle_timeout: optional_millis(
                        "tunnel_idle_timeout_ms",
                        group.tunnel_idle_timeout_ms,
                        defaults.tunnel_idle_timeout,
                    )?,
                    pass_host: group.pass_host.unwrap_or(defaults.pass_host),
                },
            );
            let strategy = match group.strategy {
                Some(strategy) => self.strategy(
                    &format!("{key}.strategy"),
                    strategy,
                    group.hash_key.as_deref().or(raw.hash_key.as_deref()),
                )?,
                None => default_strategy.clone(),
            };
            let checks = match &group.health_check {
                Some(check) => Some(self.health_check(&format!("{key}.health_check"), check)?),
                None => default_checks.clone(),
            };
            upstreams.push(UpstreamConfig {
                name: name.clone(),
                backends,
                settings,
                checks,
                strategy,
                policy: policy.clone(),
            });
        }
        let config = ProxyConfig {
            upstreams,
            response_limits: ResponseLimits {
                max_head_bytes: raw.max_response_head_bytes,
                max_headers: MAX_RESPONSE_HEADERS,
            },
            backend_header: match &raw.backend_header {
                Some(name) if name.is_empty() || !name.bytes().all(is_token_byte) => {
                    return Err(self.invalid(
                        "proxy.backend_header",
                        format!("{name:?} is not a header name"),
                    ))
                }
                other => other.clone(),
            },
        };
        Ok((
            config,
            ProxyDefaults {
                groups: group_defaults,
                ..defaults
            },
        ))
    }

    /// A strategy and, for `consistent_hash`, its key: `client_ip` (default), `path` or
    /// `header:NAME`.
    fn strategy(
        &self,
        key: &str,
        raw: RawStrategy,
        hash_key: Option<&str>,
    ) -> Result<Strategy, ConfigError> {
        Ok(match raw {
            RawStrategy::RoundRobin => Strategy::RoundRobin,
            RawStrategy::WeightedRoundRobin => Strategy::WeightedRoundRobin,
            RawStrategy::LeastConnections => Strategy::LeastConnections,
            RawStrategy::Random => Strategy::Random,
            RawStrategy::P2c => Strategy::P2c,
            RawStrategy::Adaptive => Strategy::Adaptive,
            RawStrategy::ConsistentHash => Strategy::ConsistentHash(match hash_key {
                None | Some("client_ip") => HashKey::ClientIp,
                Some("path") => HashKey::Path,
                Some(other) => match other.strip_prefix("header:") {
                    Some(name) if !name.is_empty() && name.bytes().all(is_token_byte) => {
                        HashKey::Header(name.to_ascii_lowercase())
                    }
                    _ => {
                        return Err(self.invalid(
                            key,
                            format!("hash_key {other:?} must be client_ip, path or header:NAME"),
                        ))
                    }
                },
            }),
        })
    }

    fn health_check(&self, key: &str, raw: &RawHealthCheck) -> Result<CheckSettings, ConfigError> {
        if !raw.path.starts_with('/') || !raw.path.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(self.invalid(
                &format!("{key}.path"),
                format!("{:?} must be an absolute path of visible ASCII", raw.path),
            ));
        }
        if !(100..=599).contains(&raw.expected_status) {
            return Err(self.invalid(&format!("{key}.expected_status"), "not a status code"));
        }
        Ok(CheckSettings {
            path: raw.path.clone(),
            interval: self.positive_millis(&format!("{key}.interval_ms"), raw.interval_ms)?,
            jitter: Duration::from_millis(raw.jitter_ms),
            timeout: self.positive_millis(&format!("{key}.timeout_ms"), raw.timeout_ms)?,
            expected_status: raw.expected_status,
            rise: raw.rise.max(1),
            fall: raw.fall.max(1),
        })
    }

    fn backends(&self, key: &str, raw: &[RawBackend]) -> Result<Vec<BackendConfig>, ConfigError> {
        let mut names = HashSet::new();
        let mut backends = Vec::with_capacity(raw.len());
        for backend in raw {
            if backend.name.is_empty() || !names.insert(backend.name.as_str()) {
                return Err(self.invalid(
                    key,
                    format!(
                        "backend names must be unique and non-empty ({:?})",
                        backend.name
                    ),
                ));
            }
            if !is_host_port(&backend.address) {
                return Err(self.invalid(
                    key,
                    format!(
                        "backend {:?}: address {:?} is not host:port",
                        backend.name, backend.address
                    ),
                ));
            }
            if backend.weight == 0 || backend.weight > MAX_BACKEND_WEIGHT {
                return Err(self.invalid(
                    key,
                    format!(
                        "backend {:?}: weight must be between 1 and {MAX_BACKEND_WEIGHT}",
                        backend.name
                    ),
                ));
            }
            backends.push(BackendConfig {
                name: backend.name.clone(),
                address: backend.address.clone(),
                weight: backend.weight,
            });
        }
        Ok(backends)
    }

    /// Routes as configured, or the implicit one: everything to `default` when the proxy has
    /// backends, everything to the static handler otherwise.
    pub(super) fn routes(
        &self,
        raw: &[RawRoute],
        proxy: Option<(&ProxyConfig, &ProxyDefaults)>,
        has_static: bool,
    ) -> Result<Vec<RouteConfig>, ConfigError> {
        if raw.is_empty() {
            let route = match proxy {
                Some((_, defaults)) if defaults.has_default_group || !has_static => {
                    let group = &defaults.groups[DEFAULT_UPSTREAM];
                    RouteConfig {
                        host: None,
                        path_prefix: "/".into(),
                        target: RouteTarget::Upstream(0),
                        strip_prefix: false,
                        pass_host: group.pass_host,
                        connection_timeout: group.connection_timeout,
                        request_timeout: group.request_timeout,
                        send_timeout: group.send_timeout,
                        read_timeout: group.read_timeout,
                        tunnel_idle_timeout: group.tunnel_idle_timeout,
                    }
                }
                _ => RouteConfig {
                    host: None,
                    path_prefix: "/".into(),
                    target: RouteTarget::Static,
                    strip_prefix: false,
                    pass_host: true,
                    connection_timeout: Duration::ZERO,
                    request_timeout: Duration::ZERO,
                    send_timeout: Duration::ZERO,
                    read_timeout: Duration::ZERO,
                    tunnel_idle_timeout: Duration::ZERO,
                },
            };
            return Ok(vec![route]);
        }
        let mut routes = Vec::with_capacity(raw.len());
        for (i, route) in raw.iter().enumerate() {
            let key = format!("routes[{i}]");
            let invalid = |reason: String| self.invalid(&key, reason);
            if !route.path_prefix.starts_with('/') {
                return Err(invalid(format!(
                    "path_prefix {:?} must start with /",
                    route.path_prefix
                )));
            }
            let host = match &route.host {
                Some(host) if host.is_empty() || !host.bytes().all(is_host_byte) => {
                    return Err(invalid(format!("host {host:?} is not a host name")))
                }
                Some(host) => Some(host.to_ascii_lowercase()),
                None => None,
            };
            let (target, group) = match (&route.upstream, route.static_files) {
                (Some(_), true) | (None, false) => {
                    return Err(invalid(
                        "needs exactly one of `upstream: NAME` or `static: true`".into(),
                    ))
                }
                (None, true) if !has_static => {
                    return Err(invalid(
                        "`static: true` needs a static_files section".into(),
                    ))
                }
                (None, true) => (RouteTarget::Static, None),
                (Some(name), false) => {
                    let found = proxy.and_then(|(config, defaults)| {
                        let index = config.upstream_index(name)?;
                        Some((index, &config.upstreams[index], defaults.groups.get(name)?))
                    });
                    match found {
                        Some((index, upstream, group)) if !upstream.backends.is_empty() => {
                            (RouteTarget::Upstream(index), Some(group))
                        }
                        _ => {
                            return Err(invalid(format!(
                                "upstream {name:?} is not defined (proxy.backends is \"default\", \
                                 others are under proxy.upstreams)"
                            )))
                        }
                    }
                }
            };
            let millis = |field: &str, value: Option<u64>, fallback: Duration| match value {
                Some(value) => self.positive_millis(&format!("{key}.{field}"), value),
                None => Ok(fallback),
            };
            routes.push(RouteConfig {
                host,
                path_prefix: route.path_prefix.clone(),
                target,
                strip_prefix: route.strip_prefix,
                pass_host: group.is_none_or(|g| g.pass_host),
                connection_timeout: millis(
                    "connection_timeout_ms",
                    route.connection_timeout_ms,
                    group.map_or(Duration::ZERO, |g| g.connection_timeout),
                )?,
                request_timeout: millis(
                    "request_timeout_ms",
                    route.request_timeout_ms,
                    group.map_or(Duration::ZERO, |g| g.request_timeout),
                )?,
                send_timeout: millis(
                    "send_timeout_ms",
                    route.send_timeout_ms,
                    group.map_or(Duration::ZERO, |g| g.send_timeout),
                )?,
                read_timeout: millis(
                    "read_timeout_ms",
                    route.read_timeout_ms,
                    group.map_or(Duration::ZERO, |g| g.read_timeout),
                )?,
                tunnel_idle_timeout: millis(
                    "tunnel_idle_timeout_ms",
                    route.tunnel_idle_timeout_ms,
                    group.map_or(Duration::ZERO, |g| g.tunnel_idle_timeout),
                )?,
            });
        }
        Ok(routes)
    }
}

/// What routes inherit from the proxy section.
pub(super) struct ProxyDefaults {
    connection_timeout: Duration,
    request_timeout: Duration,
    send_timeout: Duration,
    read_timeout: Duration,
    tunnel_idle_timeout: Duration,
    pass_host: bool,
    has_default_group: bool,
    groups: BTreeMap<String, GroupDefaults>,
}

fn is_token_byte(b: u8) -> bool {
    crate::http::parser::is_tchar(b)
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

/// `host:port` with a numeric port and a non-empty host (IPv6 in brackets).
fn is_host_port(address: &str) -> bool {
    if let Ok(socket) = address.parse::<SocketAddr>() {
        return socket.port() != 0;
    }
    match address.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p != 0)
                && host.bytes().all(is_host_byte)
        }
        None => false,
    }
}
