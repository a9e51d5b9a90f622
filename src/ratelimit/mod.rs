//! Rate limiting, the first stage a request meets after its head: who the client is
//! (`identity`), how fast it may go (`gcra`), and where its state lives (`local`, or
//! `redis` for one limit shared by every instance, failing open to `local`). The
//! connection makes one call, [`RateLimits::check`], after routing and before any handler.
//!
//! The limits are runtime state built beside the config snapshot: a reload that leaves a
//! limit's settings as they were keeps its clients' state (and the Redis connection, and
//! the counters).
//!
//! Counters (allowed and limited per route, decisions made locally because Redis failed)
//! are kept here, striped per thread; `/metrics` reads them at scrape time through
//! [`RateLimits::route_counts`] and [`RateLimits::fallback_decisions`].

pub mod gcra;
pub mod identity;
pub mod local;
pub mod redis;

use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{LimitSettings, RateLimitConfig, RouteConfig, RouteLimit};
use crate::http::request::RequestHead;
use crate::http::response::HeaderValue;
use crate::limits::MAX_FORWARDED_FOR_LINES;
use crate::routing::Routed;
use gcra::Gcra;
use identity::ClientKey;
use local::{KeyHasher, LocalStore};
use redis::{RedisState, RedisStore};

/// The name of the top-level limit in the response headers and the logs.
const DEFAULT_POLICY: &str = "default";

/// Nanoseconds per second and per microsecond.
const NANOS_PER_SECOND: u64 = 1_000_000_000;
const NANOS_PER_MICRO: u64 = 1_000;

/// Every limit of one config, with its state.
#[derive(Debug)]
pub struct RateLimits {
    config: RateLimitConfig,
    policies: Vec<Arc<Policy>>,
    /// Per route index: the policy (index into `policies`) that applies, if any.
    route_policies: Vec<Option<usize>>,
    /// For requests no route takes (404s, CONNECT): the default limit, if any.
    unrouted_policy: Option<usize>,
    /// Per route index, then one for requests no route takes.
    counters: Vec<Arc<RouteCounters>>,
    redis: Option<RedisStore>,
    fallbacks: Arc<Counter>,
}

/// One limit and the clients it tracks.
#[derive(Debug)]
pub struct Policy {
    name: Arc<str>,
    settings: LimitSettings,
    max_keys: usize,
    gcra: Gcra,
    store: LocalStore,
    hasher: KeyHasher,
    /// The store's clock starts here.
    epoch: Instant,
    /// `RateLimit-Policy`, ready to send.
    header: Arc<str>,
    /// The policy's name as a structured-field string, for `RateLimit`.
    quoted_name: Arc<str>,
}

impl Policy {
    fn new(name: String, settings: LimitSettings, max_keys: usize) -> Policy {
        let quoted_name = sf_string(&name);
        Policy {
            header: format!("{quoted_name};q={};w=1", settings.requests_per_second).into(),
            quoted_name: quoted_name.into(),
            name: name.into(),
            gcra: Gcra::new(settings.requests_per_second, settings.burst),
            store: LocalStore::new(max_keys),
            hasher: KeyHasher::default(),
            epoch: Instant::now(),
            settings,
            max_keys,
        }
    }

    fn is_same(&self, name: &str, settings: LimitSettings, max_keys: usize) -> bool {
        &*self.name == name && self.settings == settings && self.max_keys == max_keys
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Clients tracked in memory now.
    pub fn tracked_keys(&self) -> usize {
        self.store.len()
    }
}

/// What the limiter decided about one request, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note {
    pub limited: bool,
    pub key: LoggedKey,
}

/// The client key as the access log shows it: the address, or for a header key a short
/// fingerprint (header values such as API keys are secrets and stay out of logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggedKey {
    Address(IpAddr),
    Header(u32),
}

impl fmt::Display for LoggedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoggedKey::Address(address) => write!(f, "{address}"),
            LoggedKey::Header(fingerprint) => write!(f, "header#{fingerprint:08x}"),
        }
    }
}

/// The access log's `rate_limit` and `rate_limit_key` fields for a request's note.
pub fn log_fields(note: Option<&Note>) -> (&'static str, LogKey) {
    match note {
        None => ("-", LogKey(None)),
        Some(note) if note.limited => ("limited", LogKey(Some(note.key))),
        Some(note) => ("allowed", LogKey(Some(note.key))),
    }
}

/// `-` when no limit applied.
#[derive(Debug, Clone, Copy)]
pub struct LogKey(Option<LoggedKey>);

impl fmt::Display for LogKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(key) => key.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// Why a request is refused: what the 429 says.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Whole seconds until a request would be allowed, rounded up.
    pub retry_after_secs: u64,
    policy_name: Arc<str>,
    policy_quoted: Arc<str>,
    policy_header: Arc<str>,
}

impl Refusal {
    pub fn policy(&self) -> &str {
        &self.policy_name
    }

    /// `Retry-After` (RFC 9110 §10.2.3) and the fields of
    /// draft-ietf-httpapi-ratelimit-headers-10: `RateLimit-Policy` (the quota per window)
    /// and `RateLimit` (none remaining, and when that changes).
    pub fn headers(&self) -> [(&'static str, HeaderValue); 3] {
        let secs = self.retry_after_secs;
        [
            ("Retry-After", secs.to_string().into()),
            ("RateLimit-Policy", self.policy_header.to_string().into()),
            (
                "RateLimit",
                format!("{};r=0;t={secs}", self.policy_quoted).into(),
            ),
        ]
    }
}

/// What [`RateLimits::check`] found.
#[derive(Debug)]
pub struct Verdict {
    pub note: Note,
    /// Set when the request is over its limit.
    pub refusal: Option<Refusal>,
}

impl RateLimits {
    /// The limits `config` describes for `routes`, carrying over from `previous` every
    /// limit (with its clients), the Redis connection and the counters whose settings did
    /// not change. `None` when nothing is limited.
    pub fn build(
        config: &RateLimitConfig,
        routes: &[RouteConfig],
        previous: Option<&RateLimits>,
    ) -> Option<RateLimits> {
        if !config.is_enabled() {
            return None;
        }
        let previous_policies = previous.map_or(&[][..], |p| &p.policies[..]);
        let mut policies: Vec<Arc<Policy>> = Vec::new();
        let mut policy = |name: String, settings: LimitSettings| -> usize {
            let reused = previous_policies
                .iter()
                .find(|p| p.is_same(&name, settings, config.max_keys))
                .cloned();
            policies.push(
                reused.unwrap_or_else(|| Arc::new(Policy::new(name, settings, config.max_keys))),
            );
            policies.len() - 1
        };
        let default = config
            .default
            .map(|settings| policy(DEFAULT_POLICY.to_string(), settings));
        let route_policies: Vec<Option<usize>> = routes
            .iter()
            .enumerate()
            .map(|(i, route)| match config.routes.get(i).copied() {
                Some(RouteLimit::Own(settings)) => Some(policy(route_label(route), settings)),
                Some(RouteLimit::Off) => None,
                Some(RouteLimit::Inherit) | None => default,
            })
            .collect();
        let previous_counters = previous.map_or(&[][..], |p| &p.counters[..]);
        let counters = routes
            .iter()
            .map(route_label)
            .chain(std::iter::once("-".to_string()))
            .map(|label| {
                previous_counters
                    .iter()
                    .find(|c| c.route == label)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(RouteCounters::new(label)))
            })
            .collect();
        let redis = config.redis.as_ref().and_then(|settings| {
            let reused = previous
                .and_then(|p| p.redis.as_ref())
                .filter(|r| r.settings() == settings)
                .cloned();
            match reused.map_or_else(|| RedisStore::start(settings), Ok) {
                Ok(store) => Some(store),
                Err(error) => {
                    tracing::error!(error = %error, "rate limits stay local to this instance");
                    None
                }
            }
        });
        Some(RateLimits {
            config: config.clone(),
            policies,
            route_policies,
            unrouted_policy: default,
            counters,
            redis,
            fallbacks: previous.map_or_else(
                || Arc::new(Counter::default()),
                |p| Arc::clone(&p.fallbacks),
            ),
        })
    }

    /// Decide whether the request may go on. `None` when no limit applies to its route.
    pub async fn check(
        &self,
        head: &RequestHead,
        peer: IpAddr,
        routed: &Routed<'_>,
        routes: &[RouteConfig],
    ) -> Option<Verdict> {
        let route = routed
            .route()
            .and_then(|route| routes.iter().position(|r| std::ptr::eq(r, route)));
        let policy_index = match route {
            Some(index) => self.route_policies.get(index).copied().flatten(),
            None => self.unrouted_policy,
        }?;
        let policy = self.policies.get(policy_index)?;
        let client = self.client_address(head, peer);
        let header = match &self.config.key {
            crate::config::KeySource::Header(name) => head.header(name),
            crate::config::KeySource::ClientIp => None,
        };
        let key = identity::client_key(&self.config.key, header, client);
        let hash = policy.hasher.hash(&key);
        let logged = match key {
            ClientKey::Address(address) => LoggedKey::Address(address),
            ClientKey::Header(_) => LoggedKey::Header((hash >> 32) as u32),
        };
        let (allowed, retry_after) = match self.shared_decision(policy, &key).await {
            Some(outcome) => (outcome.allowed, outcome.retry_after),
            None => {
                let outcome = policy.store.decide(hash, &policy.gcra, policy.now());
                (outcome.allowed, outcome.retry_after)
            }
        };
        let counters = route
            .and_then(|index| self.counters.get(index))
            .or_else(|| self.counters.last());
        if let Some(counters) = counters {
            if allowed {
                counters.allowed.add(1);
            } else {
                counters.limited.add(1);
            }
        }
        let note = Note {
            limited: !allowed,
            key: logged,
        };
        let refusal = (!allowed).then(|| Refusal {
            retry_after_secs: retry_after.div_ceil(NANOS_PER_SECOND).max(1),
            policy_name: Arc::clone(&policy.name),
            policy_quoted: Arc::clone(&policy.quoted_name),
            policy_header: Arc::clone(&policy.header),
        });
        Some(Verdict { note, refusal })
    }

    /// Redis's decision when Redis is configured and answering in time; `None` otherwise
    /// (the caller decides locally, and a failed Redis is counted).
    async fn shared_decision(
        &self,
        policy: &Policy,
        key: &ClientKey<'_>,
    ) -> Option<redis::SharedOutcome> {
        let store = self.redis.as_ref()?;
        if store.state() != RedisState::Shared {
            self.fallbacks.add(1);
            return None;
        }
        let redis_key = redis_key(&store.settings().key_prefix, &policy.name, key);
        let period_us = (policy.gcra.period() / NANOS_PER_MICRO).max(1);
        let tolerance_us = period_us.saturating_mul(u64::from(policy.settings.burst));
        // Boxed: only requests that go to Redis pay for its future's size.
        let outcome = Box::pin(store.decide(&redis_key, period_us, tolerance_us)).await;
        if outcome.is_none() {
            self.fallbacks.add(1);
        }
        outcome
    }

    fn client_address(&self, head: &RequestHead, peer: IpAddr) -> IpAddr {
        let trusted = &self.config.trusted_proxies;
        if trusted.is_empty() {
            return peer.to_canonical();
        }
        // On the stack: a request with more lines than this is treated as malformed.
        let mut lines: [&[u8]; MAX_FORWARDED_FOR_LINES + 1] = [&[]; MAX_FORWARDED_FOR_LINES + 1];
        let mut count = 0;
        for (name, value) in head.fields() {
            if name.eq_ignore_ascii_case(b"x-forwarded-for") {
                if let Some(slot) = lines.get_mut(count) {
                    *slot = value;
                    count += 1;
                }
            }
        }
        identity::client_address(peer, lines.get(..count).unwrap_or_default(), trusted)
    }

    /// Allowed and limited requests per route since the route's counters were created
    /// (they survive reloads that keep the route), for the metrics registry to read.
    pub fn route_counts(&self) -> Vec<RouteCount> {
        self.counters
            .iter()
            .map(|c| RouteCount {
                route: c.route.clone(),
                allowed: c.allowed.get(),
                limited: c.limited.get(),
            })
            .collect()
    }

    /// Decisions made by the local limiter because Redis was configured but failed.
    pub fn fallback_decisions(&self) -> u64 {
        self.fallbacks.get()
    }

    /// Where the shared store stands, when there is one.
    pub fn redis_state(&self) -> Option<RedisState> {
        self.redis.as_ref().map(RedisStore::state)
    }

    /// The limits, default first, then routes' own in route order.
    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.policies
    }
}

/// One route's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCount {
    /// `host/prefix` or `/prefix`; `-` for requests no route takes.
    pub route: String,
    pub allowed: u64,
    pub limited: u64,
}

#[derive(Debug)]
struct RouteCounters {
    route: String,
    allowed: Counter,
    limited: Counter,
}

impl RouteCounters {
    fn new(route: String) -> RouteCounters {
        RouteCounters {
            route,
            allowed: Counter::default(),
            limited: Counter::default(),
        }
    }
}

/// Stripes of a counter, each on its own cache line.
const COUNTER_STRIPES: usize = 16;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Stripe(AtomicU64);

/// A counter written by every worker thread without them contending: each thread adds to
/// its own stripe; reads sum them.
#[derive(Debug, Default)]
struct Counter {
    stripes: [Stripe; COUNTER_STRIPES],
}

/// Hands each thread its stripe, in turn.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: Cell<usize> =
        Cell::new(NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % COUNTER_STRIPES);
}

impl Counter {
    fn add(&self, n: u64) {
        let stripe = STRIPE.with(Cell::get);
        if let Some(stripe) = self.stripes.get(stripe) {
            stripe.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn get(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// How a route is named in counters and policies: `host/prefix`, or the prefix alone.
fn route_label(route: &RouteConfig) -> String {
    match &route.host {
        Some(host) => format!("{host}{}", route.path_prefix),
        None => route.path_prefix.clone(),
    }
}

/// `name` as a structured-field String (RFC 8941 §3.3.3): quoted, `"` and `\` escaped,
/// anything outside visible ASCII and space dropped.
fn sf_string(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            ' '..='~' => quoted.push(c),
            _ => {}
        }
    }
    quoted.push('"');
    quoted
}

/// `prefix` + policy + `:` + the client: the address as text, or `h:` and the SHA-1 of a
/// header value, so keys stay short and the values (API keys, often) are not stored in
/// Redis in the clear. The same on every instance, which is what makes the limit shared.
fn redis_key(prefix: &str, policy: &str, key: &ClientKey<'_>) -> Vec<u8> {
    let mut redis_key = Vec::with_capacity(prefix.len() + policy.len() + 48);
    redis_key.extend_from_slice(prefix.as_bytes());
    redis_key.extend_from_slice(policy.as_bytes());
    redis_key.push(b':');
    match key {
        ClientKey::Address(address) => {
            let _ = write!(redis_key, "{address}");
        }
        ClientKey::Header(value) => {
            let _ = write!(redis_key, "h:{}", sha1_smol::Sha1::from(value).digest());
        }
    }
    redis_key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_the_draft_headers() {
        let policy = Policy::new(
            "/login".into(),
            LimitSettings {
                requests_per_second: 5,
                burst: 5,
            },
            10,
        );
        let refusal = Refusal {
            retry_after_secs: 3,
            policy_name: Arc::clone(&policy.name),
            policy_quoted: Arc::clone(&policy.quoted_name),
            policy_header: Arc::clone(&policy.header),
        };
        let headers: Vec<(&str, String)> = refusal
            .headers()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        assert_eq!(
            headers,
            [
                ("Retry-After", "3".to_string()),
                ("RateLimit-Policy", "\"/login\";q=5;w=1".to_string()),
                ("RateLimit", "\"/login\";r=0;t=3".to_string()),
            ]
        );
    }

    #[test]
    fn names_are_escaped_as_structured_field_strings() {
        assert_eq!(sf_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(sf_string("x\u{1}é"), "\"x\"");
    }

    #[test]
    fn redis_keys_name_the_policy_and_the_client_and_stay_short() {
        let address = ClientKey::Address("192.0.2.1".parse().expect("ip"));
        assert_eq!(redis_key("p:", "default", &address), b"p:default:192.0.2.1");
        let header = redis_key("p:", "default", &ClientKey::Header(b"secret-api-key"));
        assert!(header.starts_with(b"p:default:h:"));
        assert_eq!(header.len(), "p:default:h:".len() + 40);
        assert!(
            !header.windows(6).any(|w| w == b"secret"),
            "no value in the clear"
        );
        let long = vec![b'a'; 10_000];
        assert_eq!(
            redis_key("p:", "default", &ClientKey::Header(&long)).len(),
            header.len()
        );
    }

    fn config(rate_limit: &str) -> crate::config::Config {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("public")).expect("root");
        let yaml = format!(
            "server: {{}}\nstatic_files:\n  root: public\n{rate_limit}\
             routes:\n  - path_prefix: /login\n    static: true\n    \
             rate_limit: {{ requests_per_second: 5 }}\n  - path_prefix: /\n    static: true\n"
        );
        crate::config::Config::from_yaml(&yaml, &dir.path().join("c.yaml"), dir.path())
            .expect("config")
    }

    fn build(config: &crate::config::Config, previous: Option<&RateLimits>) -> RateLimits {
        RateLimits::build(&config.rate_limit, &config.routes, previous).expect("enabled")
    }

    #[test]
    fn a_reload_keeps_the_state_of_limits_whose_settings_did_not_change() {
        let first = config("rate_limit:\n  requests_per_second: 10\n");
        let limits = build(&first, None);
        assert_eq!(limits.policies().len(), 2, "default and /login");
        let same = build(&first, Some(&limits));
        for (old, new) in limits.policies().iter().zip(same.policies()) {
            assert!(Arc::ptr_eq(old, new), "{} carried over", old.name);
        }
        let changed = build(
            &config("rate_limit:\n  requests_per_second: 11\n"),
            Some(&limits),
        );
        assert!(!Arc::ptr_eq(&limits.policies()[0], &changed.policies()[0]));
        assert!(
            Arc::ptr_eq(&limits.policies()[1], &changed.policies()[1]),
            "the route's own limit did not change"
        );
        let keys_changed = build(
            &config("rate_limit:\n  requests_per_second: 10\n  max_keys: 5\n"),
            Some(&limits),
        );
        assert!(!Arc::ptr_eq(
            &limits.policies()[0],
            &keys_changed.policies()[0]
        ));
        // Routes' own limits apply without a default one; with neither, nothing is built.
        assert_eq!(build(&config(""), None).policies().len(), 1);
        assert!(RateLimits::build(&RateLimitConfig::default(), &[], None).is_none());
    }

    #[test]
    fn counters_sum_their_stripes() {
        let counter = Arc::new(Counter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.add(1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert_eq!(counter.get(), 4000);
    }
}
