//! The `proxy` and `routes` sections: upstream groups (the original `proxy.backends` is the
//! group named `default`), pool and health settings, and the routes that send a request to
//! an upstream or to the static handler.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;
use std::time::Duration;

use super::backend_tls::{BackendTls, TlsRoots};
use super::raw::{RawBackend, RawHealthCheck, RawProxy, RawRoute, RawStrategy};
use super::upstream::{
    BackendSettings, BreakerSettings, CheckSettings, GroupPolicy, HealthSettings,
    RetryBudgetSettings, UpstreamConfig,
};
use super::Validator;
use crate::balance::stats::BalanceSettings;
use crate::balance::strategy::{HashKey, Strategy};
use crate::http::response_parser::ResponseLimits;
use crate::limits::{
    DEFAULT_ADAPTIVE_ERROR_STATUSES, FAILURE_RATE_DECAY, MAX_BACKEND_WEIGHT, MAX_RESPONSE_HEADERS,
    RETRY_BUDGET_WINDOW,
};

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
    /// `None`: plain HTTP.
    pub tls: Option<BackendTls>,
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
    /// The `route` label of its metrics (`name` in the config); by default its index in
    /// `routes`, as [`RouteConfig::metrics_label`] says.
    pub name: Option<String>,
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

/// The `route` label of requests that no route took (metrics); no route may be named so.
pub const UNROUTED_NAME: &str = "none";

/// Whether `name` can be a route's name: short, and safe in any label or log line.
fn is_route_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl RouteConfig {
    /// The `route` label of this route's metrics: its name, else its `index` in `routes`
    /// (which a reorder of the routes changes: name the routes for labels that last).
    pub fn metrics_label(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| index.to_string())
    }
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
    pub(super) fn proxy(&self, raw: &RawProxy) -> (ProxyConfig, ProxyDefaults) {
        let millis = |key: &str, value: u64| self.positive_millis(key, value);
        let settings = BackendSettings {
            max_idle: raw.max_idle_per_backend,
            idle_timeout: millis("proxy.idle_timeout_ms", raw.idle_timeout_ms),
            health: HealthSettings {
                max_fails: raw.max_fails,
                fail_timeout: millis("proxy.fail_timeout_ms", raw.fail_timeout_ms),
                max_fail_timeout: millis("proxy.max_fail_timeout_ms", raw.max_fail_timeout_ms),
            },
            balance: BalanceSettings {
                default_latency: millis("proxy.default_latency_ms", raw.default_latency_ms),
                decay: millis("proxy.ewma_decay_ms", raw.ewma_decay_ms),
                failure_penalty: millis("proxy.failure_penalty_ms", raw.failure_penalty_ms),
                failure_decay: FAILURE_RATE_DECAY,
                slow_start: Duration::from_millis(raw.slow_start_ms),
            },
            breaker: BreakerSettings {
                failure_rate: raw.breaker.failure_rate,
                min_requests: raw.breaker.min_requests.max(1),
                window: millis("proxy.breaker.window_ms", raw.breaker.window_ms),
                open_for: millis("proxy.breaker.open_ms", raw.breaker.open_ms),
                trial_requests: raw.breaker.trial_requests.max(1),
            },
            max_concurrent: raw.max_concurrent_requests,
        };
        if !(0.0..=1.0).contains(&raw.breaker.failure_rate) {
            self.report(
                "proxy.breaker.failure_rate",
                "must be between 0 (off) and 1",
            );
        }
        let statuses = [
            ("proxy.failure_statuses", Some(&raw.failure_statuses)),
            ("proxy.error_statuses", raw.error_statuses.as_ref()),
        ];
        for (key, list) in statuses {
            if let Some(bad) = list
                .into_iter()
                .flatten()
                .find(|s| !(400..=599).contains(*s))
            {
                self.report(key, format!("{bad} is not a 4xx or 5xx status"));
            }
        }
        if raw.max_ejected_percent > 100 {
            self.report("proxy.max_ejected_percent", "must be between 0 and 100");
        }
        if raw.retry_budget_percent > 1000 {
            self.report("proxy.retry_budget_percent", "must be between 0 and 1000");
        }
        let policy = GroupPolicy {
            failure_statuses: raw.failure_statuses.clone(),
            // Set per group below, by its strategy.
            error_statuses: Vec::new(),
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
            self.strategy("proxy.strategy", raw.strategy, raw.hash_key.as_deref());
        // `error_statuses` is one key for every group, but its default depends on the
        // group's strategy: only the adaptive one counts 5xx answers unless told to.
        let policy_for = |strategy: &Strategy| GroupPolicy {
            error_statuses: match (&raw.error_statuses, strategy) {
                (Some(statuses), _) => statuses.clone(),
                (None, Strategy::Adaptive) => DEFAULT_ADAPTIVE_ERROR_STATUSES.to_vec(),
                (None, _) => Vec::new(),
            },
            ..policy.clone()
        };
        let default_checks = raw
            .health_check
            .as_ref()
            .map(|check| self.health_check("proxy.health_check", check));
        // A zero timeout is reported above; compared with it, this would only repeat that.
        if raw.fail_timeout_ms != 0 && raw.max_fail_timeout_ms < raw.fail_timeout_ms {
            self.report(
                "proxy.max_fail_timeout_ms",
                "must be at least proxy.fail_timeout_ms",
            );
        }
        if raw.max_response_head_bytes < 1024 {
            self.report("proxy.max_response_head_bytes", "must be at least 1024");
        }
        let defaults = ProxyDefaults {
            connection_timeout: millis("proxy.connection_timeout_ms", raw.connection_timeout_ms),
            request_timeout: millis("proxy.request_timeout_ms", raw.request_timeout_ms),
            send_timeout: millis("proxy.send_timeout_ms", raw.send_timeout_ms),
            read_timeout: millis("proxy.read_timeout_ms", raw.read_timeout_ms),
            tunnel_idle_timeout: millis("proxy.tunnel_idle_timeout_ms", raw.tunnel_idle_timeout_ms),
            pass_host: raw.pass_host,
            has_default_group: !raw.backends.is_empty(),
            groups: BTreeMap::new(),
        };

        let backends = self.backends("proxy.backends", &raw.backends);
        let default_roots = self.tls_roots(
            "proxy.tls_ca_file",
            raw.tls_ca_file.as_deref(),
            &TlsRoots::System,
        );
        let mut upstreams = vec![UpstreamConfig {
            name: DEFAULT_UPSTREAM.to_string(),
            backends,
            settings,
            tls_roots: default_roots.clone(),
            checks: default_checks.clone(),
            strategy: default_strategy.clone(),
            policy: policy_for(&default_strategy),
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
                self.report(
                    &key,
                    "\"default\" is the name of proxy.backends; choose another name",
                );
                continue;
            }
            // Reported, but the group stays: routes to it are still checked, and not told
            // that it does not exist.
            if group.backends.is_empty() {
                self.report(&key, "an upstream needs at least one backend");
            }
            let backends = self.backends(&format!("{key}.backends"), &group.backends);
            let optional_millis = |field: &str, value: Option<u64>, fallback: Duration| {
                value.map_or(fallback, |value| millis(&format!("{key}.{field}"), value))
            };
            group_defaults.insert(
                name.clone(),
                GroupDefaults {
                    connection_timeout: optional_millis(
                        "connection_timeout_ms",
                        group.connection_timeout_ms,
                        defaults.connection_timeout,
                    ),
                    request_timeout: optional_millis(
                        "request_timeout_ms",
                        group.request_timeout_ms,
                        defaults.request_timeout,
                    ),
                    send_timeout: optional_millis(
                        "send_timeout_ms",
                        group.send_timeout_ms,
                        defaults.send_timeout,
                    ),
                    read_timeout: optional_millis(
                        "read_timeout_ms",
                        group.read_timeout_ms,
                        defaults.read_timeout,
                    ),
                    tunnel_idle_timeout: optional_millis(
                        "tunnel_idle_timeout_ms",
                        group.tunnel_idle_timeout_ms,
                        defaults.tunnel_idle_timeout,
                    ),
                    pass_host: group.pass_host.unwrap_or(defaults.pass_host),
                },
            );
            let strategy = match group.strategy {
                Some(strategy) => self.strategy(
                    &format!("{key}.strategy"),
                    strategy,
                    group.hash_key.as_deref().or(raw.hash_key.as_deref()),
                ),
                None => default_strategy.clone(),
            };
            let checks = match &group.health_check {
                Some(check) => Some(self.health_check(&format!("{key}.health_check"), check)),
                None => default_checks.clone(),
            };
            let tls_roots = self.tls_roots(
                &format!("{key}.tls_ca_file"),
                group.tls_ca_file.as_deref(),
                &default_roots,
            );
            upstreams.push(UpstreamConfig {
                name: name.clone(),
                backends,
                settings,
                tls_roots,
                checks,
                policy: policy_for(&strategy),
                strategy,
            });
        }
        if let Some(name) = &raw.backend_header {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                self.report(
                    "proxy.backend_header",
                    format!("{name:?} is not a header name"),
                );
            }
        }
        let config = ProxyConfig {
            upstreams,
            response_limits: ResponseLimits {
                max_head_bytes: raw.max_response_head_bytes,
                max_headers: MAX_RESPONSE_HEADERS,
            },
            backend_header: raw.backend_header.clone(),
        };
        (
            config,
            ProxyDefaults {
                groups: group_defaults,
                ..defaults
            },
        )
    }

    /// A strategy and, for `consistent_hash`, its key: `client_ip` (default), `path` or
    /// `header:NAME`.
    fn strategy(&self, key: &str, raw: RawStrategy, hash_key: Option<&str>) -> Strategy {
        match raw {
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
                        self.report(
                            key,
                            format!("hash_key {other:?} must be client_ip, path or header:NAME"),
                        );
                        HashKey::ClientIp
                    }
                },
            }),
        }
    }

    fn health_check(&self, key: &str, raw: &RawHealthCheck) -> CheckSettings {
        if !raw.path.starts_with('/') || !raw.path.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            self.report(
                &format!("{key}.path"),
                format!("{:?} must be an absolute path of visible ASCII", raw.path),
            );
        }
        if !(100..=599).contains(&raw.expected_status) {
            self.report(&format!("{key}.expected_status"), "not a status code");
        }
        CheckSettings {
            path: raw.path.clone(),
            interval: self.positive_millis(&format!("{key}.interval_ms"), raw.interval_ms),
            jitter: Duration::from_millis(raw.jitter_ms),
            timeout: self.positive_millis(&format!("{key}.timeout_ms"), raw.timeout_ms),
            expected_status: raw.expected_status,
            rise: raw.rise.max(1),
            fall: raw.fall.max(1),
        }
    }

    /// Each entry's errors name the entry and its key (`proxy.backends[1].address`), so the
    /// line is the entry's own, not the list's. Every entry is kept, good or not, so the
    /// group is not mistaken for an empty one.
    fn backends(&self, key: &str, raw: &[RawBackend]) -> Vec<BackendConfig> {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut backends = Vec::with_capacity(raw.len());
        for (i, backend) in raw.iter().enumerate() {
            let entry = format!("{key}[{i}]");
            if backend.name.is_empty() {
                self.report(&format!("{entry}.name"), "must not be empty");
            } else if let Some(first) = names.insert(backend.name.as_str(), i) {
                self.report(
                    &format!("{entry}.name"),
                    format!(
                        "backend names must be unique: {:?} is also {key}[{first}]",
                        backend.name
                    ),
                );
            }
            if let Err(reason) = check_host_port(&backend.address) {
                self.report(&format!("{entry}.address"), reason);
            }
            if backend.weight == 0 || backend.weight > MAX_BACKEND_WEIGHT {
                self.report(
                    &format!("{entry}.weight"),
                    format!("must be between 1 and {MAX_BACKEND_WEIGHT}"),
                );
            }
            backends.push(BackendConfig {
                name: backend.name.clone(),
                address: backend.address.clone(),
                weight: backend.weight,
                tls: self.backend_tls(&entry, backend),
            });
        }
        backends
    }

    /// Routes as configured, or the implicit one: everything to `default` when the proxy has
    /// backends, everything to the static handler otherwise.
    pub(super) fn routes(
        &self,
        raw: &[RawRoute],
        proxy: Option<(&ProxyConfig, &ProxyDefaults)>,
        has_static: bool,
    ) -> Vec<RouteConfig> {
        if raw.is_empty() {
            let route = match proxy {
                Some((_, defaults)) if defaults.has_default_group || !has_static => {
                    let group = &defaults.groups[DEFAULT_UPSTREAM];
                    RouteConfig {
                        name: None,
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
                    name: None,
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
            return vec![route];
        }
        let mut routes = Vec::with_capacity(raw.len());
        for (i, route) in raw.iter().enumerate() {
            let key = format!("routes[{i}]");
            if !route.path_prefix.starts_with('/') {
                self.report(
                    &format!("{key}.path_prefix"),
                    format!("path_prefix {:?} must start with /", route.path_prefix),
                );
            }
            let host = match &route.host {
                Some(host) if host.is_empty() || !host.bytes().all(is_host_byte) => {
                    self.report(
                        &format!("{key}.host"),
                        format!("host {host:?} is not a host name"),
                    );
                    None
                }
                Some(host) => Some(host.to_ascii_lowercase()),
                None => None,
            };
            let (target, group) = match (&route.upstream, route.static_files) {
                (Some(_), true) | (None, false) => {
                    self.report(
                        &key,
                        "needs exactly one of `upstream: NAME` or `static: true`",
                    );
                    (RouteTarget::Static, None)
                }
                (None, true) => {
                    if !has_static {
                        self.report(
                            &format!("{key}.static"),
                            "`static: true` needs a static_files section",
                        );
                    }
                    (RouteTarget::Static, None)
                }
                (Some(name), false) => {
                    let found = proxy.and_then(|(config, defaults)| {
                        let index = config.upstream_index(name)?;
                        let upstream = config.upstreams.get(index)?;
                        Some((index, upstream, defaults.groups.get(name)?))
                    });
                    match found {
                        // An empty named group is reported where it is defined; only the
                        // default one (no proxy.backends) is missing for a route.
                        Some((index, upstream, group))
                            if index != 0 || !upstream.backends.is_empty() =>
                        {
                            (RouteTarget::Upstream(index), Some(group))
                        }
                        _ => {
                            self.report(
                                &format!("{key}.upstream"),
                                format!(
                                    "upstream {name:?} is not defined (proxy.backends is \
                                     \"default\", others are under proxy.upstreams)"
                                ),
                            );
                            (RouteTarget::Static, None)
                        }
                    }
                }
            };
            let millis = |field: &str, value: Option<u64>, fallback: Duration| {
                value.map_or(fallback, |value| {
                    self.positive_millis(&format!("{key}.{field}"), value)
                })
            };
            let name = route.name.as_deref().and_then(|name| {
                let problem = if !is_route_name(name) {
                    Some(format!(
                        "name {name:?} must be 1 to 64 letters, digits, '_', '-' or '.'"
                    ))
                } else if name == UNROUTED_NAME {
                    Some(format!(
                        "name {name:?} is the label of requests no route took"
                    ))
                } else if name.bytes().all(|b| b.is_ascii_digit()) {
                    Some(format!(
                        "name {name:?} is a number, the label of an unnamed route"
                    ))
                } else if raw[..i].iter().any(|r| r.name.as_deref() == Some(name)) {
                    Some(format!("name {name:?} is already used by another route"))
                } else {
                    None
                };
                match problem {
                    Some(reason) => {
                        self.report(&format!("{key}.name"), reason);
                        None
                    }
                    None => Some(name.to_string()),
                }
            });
            routes.push(RouteConfig {
                name,
                host,
                path_prefix: route.path_prefix.clone(),
                target,
                strip_prefix: route.strip_prefix,
                pass_host: group.is_none_or(|g| g.pass_host),
                connection_timeout: millis(
                    "connection_timeout_ms",
                    route.connection_timeout_ms,
                    group.map_or(Duration::ZERO, |g| g.connection_timeout),
                ),
                request_timeout: millis(
                    "request_timeout_ms",
                    route.request_timeout_ms,
                    group.map_or(Duration::ZERO, |g| g.request_timeout),
                ),
                send_timeout: millis(
                    "send_timeout_ms",
                    route.send_timeout_ms,
                    group.map_or(Duration::ZERO, |g| g.send_timeout),
                ),
                read_timeout: millis(
                    "read_timeout_ms",
                    route.read_timeout_ms,
                    group.map_or(Duration::ZERO, |g| g.read_timeout),
                ),
                tunnel_idle_timeout: millis(
                    "tunnel_idle_timeout_ms",
                    route.tunnel_idle_timeout_ms,
                    group.map_or(Duration::ZERO, |g| g.tunnel_idle_timeout),
                ),
            });
        }
        routes
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

/// Highest TCP port; 0 is not a port one can connect to.
const PORTS: std::ops::RangeInclusive<u64> = 1..=65535;

/// `host:port` with a port in 1-65535 and a non-empty host (IPv6 in brackets); the reason in
/// the user's terms otherwise.
fn check_host_port(address: &str) -> Result<(), String> {
    let not_host_port = || format!("{address:?} is not host:port (such as 127.0.0.1:3000)");
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(not_host_port());
    };
    let is_host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => !host.is_empty() && host.bytes().all(is_host_byte),
    };
    if !is_host || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_host_port());
    }
    // Digits beyond u64 are out of range too, not "not a number".
    match port.parse::<u64>() {
        Ok(number) if PORTS.contains(&number) => Ok(()),
        _ => Err(format!("port {port} is out of range (1-65535)")),
    }
}
