//! The `rate_limit` section and each route's `rate_limit`: validated into plain settings.
//! The limiter builds its runtime state (stores, the Redis connection) from these, beside
//! the config snapshot, never inside it.

use std::net::IpAddr;
use std::time::Duration;

use super::raw::{RawLimit, RawRateLimit, RawRoute, RawRouteLimit};
use super::Validator;
use crate::limits::{
    DEFAULT_RATE_LIMIT_MAX_KEYS, DEFAULT_REDIS_KEY_PREFIX, MAX_RATE_LIMIT_BURST,
    MAX_RATE_LIMIT_KEYS, MAX_REDIS_TIMEOUT, MAX_REQUESTS_PER_SECOND,
};

/// Every rate limit of the config. `default` is `None` when there is no top-level rate;
/// routes may still have their own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateLimitConfig {
    /// The limit every route without its own applies.
    pub default: Option<LimitSettings>,
    /// What identifies a client.
    pub key: KeySource,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Most clients tracked per limit; see `limits::DEFAULT_RATE_LIMIT_MAX_KEYS`.
    pub max_keys: usize,
    /// One limit for every instance, when set.
    pub redis: Option<RedisSettings>,
    /// One per entry of `Config::routes`, at the same index.
    pub routes: Vec<RouteLimit>,
}

impl RateLimitConfig {
    /// Whether any request can be limited at all.
    pub fn is_enabled(&self) -> bool {
        self.default.is_some() || self.routes.iter().any(|r| matches!(r, RouteLimit::Own(_)))
    }
}

/// One rate: `requests_per_second` sustained, `burst` more at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    pub requests_per_second: u32,
    pub burst: u32,
}

/// What a route does with the default limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLimit {
    /// Applies the default limit (when there is one), sharing its counts with the other
    /// routes that do.
    Inherit,
    /// Not limited.
    Off,
    /// A limit of its own, counted apart from every other route's.
    Own(LimitSettings),
}

/// `rate_limit.key`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeySource {
    /// The client's address (after the trusted-proxy walk).
    #[default]
    ClientIp,
    /// This request header's value (lower-case name); the client address when absent.
    Header(String),
}

/// The shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    /// The longest a request waits for Redis's decision before the local one is taken.
    pub timeout: Duration,
    /// Prepended to every key, so several fleets can share one Redis.
    pub key_prefix: String,
}

/// An address block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a block of
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `text` as a block; `None` if it is not one (bits set past the prefix are refused:
    /// `10.0.0.1/8` is a typo more often than a choice).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().ok()?;
        let network = network.to_canonical();
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => width,
        };
        if prefix > width {
            return None;
        }
        (mask_bits(network, prefix) == bits(network)).then_some(Cidr { network, prefix })
    }

    /// Whether `address` is in the block. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        address.is_ipv4() == self.network.is_ipv4()
            && mask_bits(address, self.prefix) == mask_bits(self.network, self.prefix)
    }
}

/// The address as a 128-bit number (IPv4 in the low 32 bits).
fn bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The first `prefix` bits of the address, the rest zero.
fn mask_bits(address: IpAddr, prefix: u8) -> u128 {
    let width: u32 = if address.is_ipv4() { 32 } else { 128 };
    let prefix = u32::from(prefix).min(width);
    let host_bits = width - prefix;
    let value = bits(address);
    if host_bits >= 128 {
        0
    } else {
        value >> host_bits << host_bits
    }
}

impl Validator<'_> {
    pub(super) fn rate_limit(
        &self,
        raw: Option<&RawRateLimit>,
        routes: &[RawRoute],
        route_count: usize,
    ) -> RateLimitConfig {
        let mut config = RateLimitConfig {
            max_keys: DEFAULT_RATE_LIMIT_MAX_KEYS,
            ..RateLimitConfig::default()
        };
        if let Some(raw) = raw {
            config.default = match (raw.requests_per_second, raw.burst) {
                (Some(rps), burst) => Some(self.limit_settings("rate_limit", rps, burst)),
                (None, Some(_)) => {
                    self.report(
                        "rate_limit.burst",
                        "needs rate_limit.requests_per_second beside it",
                    );
                    None
                }
                (None, None) => None,
            };
            config.key = self.key_source(&raw.key);
            config.trusted_proxies = self.cidrs("rate_limit.trusted_proxies", &raw.trusted_proxies);
            if raw.max_keys == 0 || raw.max_keys > MAX_RATE_LIMIT_KEYS {
                self.report(
                    "rate_limit.max_keys",
                    format!("must be between 1 and {MAX_RATE_LIMIT_KEYS}"),
                );
            }
            config.max_keys = raw.max_keys.clamp(1, MAX_RATE_LIMIT_KEYS);
            let timeout = Duration::from_millis(raw.redis_timeout_ms);
            if timeout.is_zero() || timeout > MAX_REDIS_TIMEOUT {
                self.report(
                    "rate_limit.redis_timeout_ms",
                    format!(
                        "must be between 1 and {} (a request waits this long at most)",
                        MAX_REDIS_TIMEOUT.as_millis()
                    ),
                );
            }
            config.redis = raw.redis_url.as_ref().map(|url| {
                if let Err(error) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
                    self.report(
                        "rate_limit.redis_url",
                        format!(
                            "{url:?} is not a Redis URL such as redis://127.0.0.1:6379 ({})",
                            error.detail().unwrap_or("unparseable")
                        ),
                    );
                }
                RedisSettings {
                    url: url.clone(),
                    timeout,
                    key_prefix: raw
                        .redis_key_prefix
                        .clone()
                        .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_string()),
                }
            });
        }
        config.routes = if routes.is_empty() {
            vec![RouteLimit::Inherit; route_count]
        } else {
            routes
                .iter()
                .enumerate()
                .map(|(i, route)| match &route.rate_limit {
                    RawRouteLimit::Inherit => RouteLimit::Inherit,
                    RawRouteLimit::Off => RouteLimit::Off,
                    RawRouteLimit::Own(RawLimit {
                        requests_per_second,
                        burst,
                    }) => RouteLimit::Own(self.limit_settings(
                        &format!("routes[{i}].rate_limit"),
                        *requests_per_second,
                        *burst,
                    )),
                })
                .collect()
        };
        config
    }

    fn limit_settings(&self, key: &str, rps: u64, burst: Option<u64>) -> LimitSettings {
        if rps == 0 || rps > u64::from(MAX_REQUESTS_PER_SECOND) {
            self.report(
                &format!("{key}.requests_per_second"),
                format!("must be between 1 and {MAX_REQUESTS_PER_SECOND}"),
            );
        }
        // One second's worth by default: a page that fetches its assets at once is not
        // refused under a limit it keeps to on average.
        let burst = burst.unwrap_or(rps);
        if burst > u64::from(MAX_RATE_LIMIT_BURST) {
            self.report(
                &format!("{key}.burst"),
                format!("must be at most {MAX_RATE_LIMIT_BURST}"),
            );
        }
        LimitSettings {
            requests_per_second: u32::try_from(rps.clamp(1, u64::from(MAX_REQUESTS_PER_SECOND)))
                .unwrap_or(MAX_REQUESTS_PER_SECOND),
            burst: u32::try_from(burst.min(u64::from(MAX_RATE_LIMIT_BURST)))
                .unwrap_or(MAX_RATE_LIMIT_BURST),
        }
    }

    fn key_source(&self, text: &str) -> KeySource {
        if text == "client_ip" {
            return KeySource::ClientIp;
        }
        match text.strip_prefix("header:") {
            Some(name) if !name.is_empty() && name.bytes().all(crate::http::parser::is_tchar) => {
                KeySource::Header(name.to_ascii_lowercase())
            }
            _ => {
                self.report(
                    "rate_limit.key",
                    format!("{text:?} must be client_ip or header:NAME (such as header:X-Api-Key)"),
                );
                KeySource::ClientIp
            }
        }
    }
}

impl Validator<'_> {
    /// Each entry of the list `key` as an address block; a bad one is reported with its index
    /// and left out. Shared by every list of trusted peers.
    pub(super) fn cidrs(&self, key: &str, texts: &[String]) -> Vec<Cidr> {
        texts
            .iter()
            .enumerate()
            .filter_map(|(i, text)| {
                let cidr = Cidr::parse(text.trim());
                if cidr.is_none() {
                    self.report(
                        &format!("{key}[{i}]"),
                        format!(
                            "{text:?} is not an address block (such as 10.0.0.0/8 or \
                             2001:db8::/32)"
                        ),
                    );
                }
                cidr
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| panic!("{text}"))
    }

    #[test]
    fn blocks_parse_and_contain_what_they_should() {
        let ten = Cidr::parse("10.0.0.0/8").expect("10/8");
        assert!(ten.contains(ip("10.1.2.3")));
        assert!(ten.contains(ip("::ffff:10.9.9.9")));
        assert!(!ten.contains(ip("11.0.0.1")));
        assert!(!ten.contains(ip("::a00:1")));
        let one = Cidr::parse("127.0.0.9").expect("bare address");
        assert!(one.contains(ip("127.0.0.9")) && !one.contains(ip("127.0.0.8")));
        let v6 = Cidr::parse("2001:db8::/32").expect("v6");
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("all")
            .contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::/0").expect("all v6").contains(ip("::1")));
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "garbage",
            "::1/129",
            "10.0.0.0/+8",
            "",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
