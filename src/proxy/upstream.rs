//! Upstream groups and their backends: the runtime state the proxy keeps per backend (idle
//! connections, passive health, balancing statistics) and the choice of a backend for each
//! request by the group's strategy, over the backends that are available.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::active::{self, ActiveHealth};
use super::breaker::{Admission, Breaker, BreakerTransition};
use super::health::{PassiveHealth, Transition};
use super::log_limit::admit_failure;
use super::pool::Pool;
use super::retry_budget::RetryBudget;
use super::standing::{self, Signals, Standing};
use crate::balance::rng::with_thread_rng;
use crate::balance::stats::{BackendStats, InFlight};
use crate::balance::strategy::{self, hash_bytes, Candidate, HashKey, PickInput, Strategy};
pub use crate::config::{BackendSettings, GroupPolicy};
use crate::config::{CheckSettings, UpstreamConfig};

#[derive(Debug)]
pub struct Backend {
    /// Shared so each request's access-log entry can hold it without a copy.
    pub name: Arc<str>,
    /// `host:port` as configured.
    pub address: String,
    /// The address when it is an IP literal, so the common case skips the resolver.
    literal: Option<SocketAddr>,
    pub settings: BackendSettings,
    /// Relative share of traffic (`weight` in the config).
    pub weight: u32,
    /// Hash of the address: the backend's identity for consistent hashing.
    id_hash: u64,
    /// Runtime state, shared with the same backend in the next config after a reload.
    pub pool: Arc<Pool>,
    pub health: Arc<PassiveHealth>,
    pub stats: Arc<BackendStats>,
    pub breaker: Arc<Breaker>,
    /// Active health checks, when the group has them.
    pub active: Option<Arc<ActiveHealth>>,
}

impl Backend {
    pub fn new(name: String, address: String, weight: u32, settings: BackendSettings) -> Backend {
        Backend {
            literal: address.parse().ok(),
            id_hash: hash_bytes(address.as_bytes()),
            name: name.into(),
            address,
            settings,
            weight: weight.max(1),
            pool: Arc::new(Pool::new(settings.max_idle, settings.idle_timeout)),
            health: Arc::new(PassiveHealth::new(settings.health)),
            stats: Arc::new(BackendStats::new(settings.balance, Instant::now())),
            breaker: Arc::new(Breaker::new(settings.breaker, Instant::now())),
            active: None,
        }
    }

    /// With active health checks under `checks` (none when `None`).
    pub fn with_checks(mut self, checks: Option<&CheckSettings>) -> Backend {
        self.active = checks.map(|c| Arc::new(ActiveHealth::new(c.clone())));
        self
    }

    /// This backend as the next config defines it, keeping `previous`'s idle connections
    /// and health record when they describe the same place under the same settings.
    pub fn carried_over(
        name: String,
        address: String,
        weight: u32,
        settings: BackendSettings,
        checks: Option<&CheckSettings>,
        previous: &Backend,
    ) -> Backend {
        let mut backend = Backend::new(name, address, weight, settings).with_checks(checks);
        if let (Some(old), Some(checks)) = (&previous.active, checks) {
            if previous.address == backend.address && old.settings() == checks {
                backend.active = Some(Arc::clone(old));
            }
        }
        if previous.address == backend.address && previous.settings == settings {
            backend.pool = Arc::clone(&previous.pool);
            backend.health = Arc::clone(&previous.health);
            backend.stats = Arc::clone(&previous.stats);
            backend.breaker = Arc::clone(&previous.breaker);
        }
        backend
    }

    /// Whether it may take requests as far as its active health checks know.
    pub fn passes_checks(&self) -> bool {
        self.active.as_ref().is_none_or(|a| a.is_healthy())
    }

    /// Whether a pick may choose it at `now` outside fail-open: not ejected, admitted by its
    /// breaker, passing its active checks.
    fn is_selectable(&self, now: Instant) -> bool {
        self.health.is_available(now) && self.breaker.allows(now) && self.passes_checks()
    }

    /// Whether this backend shares its runtime state with `other`.
    pub fn shares_state_with(&self, other: &Backend) -> bool {
        Arc::ptr_eq(&self.health, &other.health)
    }

    /// A new connection, within `wait` (resolution included).
    pub async fn connect(&self, wait: Duration) -> io::Result<TcpStream> {
        let attempt = async {
            let stream = match self.literal {
                Some(addr) => TcpStream::connect(addr).await?,
                None => TcpStream::connect(self.address.as_str()).await?,
            };
            stream.set_nodelay(true)?;
            Ok(stream)
        };
        match tokio::time::timeout(wait, attempt).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }

    /// Whether it may take one more request under its concurrency cap.
    fn has_room(&self) -> bool {
        self.settings.max_concurrent == 0
            || self.stats.in_flight() < u64::from(self.settings.max_concurrent)
    }
}

/// What `Upstream::pick` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Use this backend; `fail_open` when no healthy, admitted one was left.
    Backend { index: usize, fail_open: bool },
    /// Every untried backend is at its concurrency cap: 503, try later.
    Saturated,
    /// No untried backend is left.
    Exhausted,
}

/// One try of one request on one backend: counted in flight while it lives, holding its
/// breaker admission, and recording its outcome (latency, health, breaker) exactly once.
#[derive(Debug)]
pub struct Attempt<'u> {
    pub upstream: &'u Upstream,
    pub backend: &'u Backend,
    admission: Admission,
    recorded: AtomicBool,
    _in_flight: InFlight<'u>,
}

impl Attempt<'_> {
    fn first_record(&self) -> bool {
        !self.recorded.swap(true, Ordering::AcqRel)
    }

    /// The backend answered in `latency`, at `now`.
    pub fn succeed(&self, latency: Duration, now: Instant) {
        if !self.first_record() {
            return;
        }
        let backend = self.backend;
        backend.stats.observe(latency, now);
        if let Some(Transition::Recovered) = backend.health.record_success() {
            backend.stats.rejoin(now);
            tracing::info!(backend = %backend.name, address = %backend.address, "backend recovered");
        }
        log_breaker(backend, backend.breaker.record(self.admission, true, now));
    }

    /// The backend failed this request for `reason`. `latency`, when it did answer (a
    /// failure status, a slow response), is a latency sample when it is slower than the
    /// estimate; either way the failure raises the backend's failure rate.
    pub fn fail(&self, reason: &'static str, latency: Option<Duration>) {
        if !self.first_record() {
            return;
        }
        let now = Instant::now();
        let backend = self.backend;
        match latency {
            Some(latency) => backend.stats.observe_failed_answer(latency, now),
            None => backend.stats.observe_failure(now),
        }
        let may_eject = self.upstream.may_eject(now);
        match backend.health.record_failure_for(reason, now, may_eject) {
            Some(Transition::Ejected {
                duration,
                ejections,
            }) => tracing::warn!(
                backend = %backend.name,
                address = %backend.address,
                reason,
                ejected_for_ms = duration.as_millis() as u64,
                ejections,
                "backend ejected"
            ),
            // Every failure of a held-back backend says the same: once per window will do.
            Some(Transition::HeldBack) => {
                if let Some(suppressed) = admit_failure(&backend.address, "held back") {
                    tracing::warn!(
                        backend = %backend.name,
                        address = %backend.address,
                        reason,
                        max_ejected_percent = self.upstream.policy.max_ejected_percent,
                        suppressed,
                        "backend not ejected: the group is at its ejection limit"
                    );
                }
            }
            _ => {}
        }
        log_breaker(backend, backend.breaker.record(self.admission, false, now));
    }
}

impl Drop for Attempt<'_> {
    /// An attempt that ended without a verdict (the client left) says nothing about the
    /// backend, but a trial slot it held must be given back.
    fn drop(&mut self) {
        if self.first_record() && self.admission == Admission::Trial {
            let outcome = self
                .backend
                .breaker
                .record(self.admission, true, Instant::now());
            log_breaker(self.backend, outcome);
        }
    }
}

fn log_breaker(backend: &Backend, transition: Option<BreakerTransition>) {
    match transition {
        Some(BreakerTransition::Opened {
            failure_rate,
            requests,
        }) => tracing::warn!(
            backend = %backend.name,
            address = %backend.address,
            failure_rate,
            requests,
            "circuit breaker opened"
        ),
        Some(BreakerTransition::HalfOpened) => tracing::info!(
            backend = %backend.name,
            address = %backend.address,
            "circuit breaker half-open: sending trial requests"
        ),
        Some(BreakerTransition::Closed) => tracing::info!(
            backend = %backend.name,
            address = %backend.address,
            "circuit breaker closed"
        ),
        None => {}
    }
}

/// Start the active health checks of every backend of `upstreams` that has them and no
/// task yet. Call it on the runtime, after startup and after every reload.
pub fn start_health_checks(upstreams: &[Arc<Upstream>]) {
    for backend in upstreams.iter().flat_map(|u| u.backends.iter()) {
        if let Some(checks) = &backend.active {
            active::start(checks, &backend.stats, &backend.name, &backend.address);
        }
    }
}

/// A named pool of backends.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub backends: Vec<Arc<Backend>>,
    pub strategy: Strategy,
    pub policy: GroupPolicy,
    pub retry_budget: RetryBudget,
    cursor: AtomicUsize,
    /// Smooth weighted round-robin's running weights, one per backend.
    swrr: Mutex<Vec<f64>>,
}

impl Upstream {
    pub fn new(
        name: String,
        backends: Vec<Arc<Backend>>,
        strategy: Strategy,
        policy: GroupPolicy,
    ) -> Upstream {
        let swrr = Mutex::new(vec![0.0; backends.len()]);
        Upstream {
            name,
            backends,
            strategy,
            retry_budget: RetryBudget::new(policy.retry_budget, Instant::now()),
            policy,
            cursor: AtomicUsize::new(0),
            swrr,
        }
    }

    /// The group `config` describes. A backend whose address is anywhere in `previous` (the
    /// running snapshot's groups) is the same backend, whatever group or name it now has: it
    /// keeps its idle connections, health, statistics and breaker when its settings did not
    /// change, and its active checks when theirs did not.
    pub fn build(config: &UpstreamConfig, previous: &[Arc<Upstream>]) -> Upstream {
        let backends = config
            .backends
            .iter()
            .map(|b| {
                let (name, address) = (b.name.clone(), b.address.clone());
                let same = previous
                    .iter()
                    .flat_map(|u| u.backends.iter())
                    .find(|old| old.address == b.address);
                let checks = config.checks.as_ref();
                Arc::new(match same {
                    Some(old) => {
                        Backend::carried_over(name, address, b.weight, config.settings, checks, old)
                    }
                    None => {
                        Backend::new(name, address, b.weight, config.settings).with_checks(checks)
                    }
                })
            })
            .collect();
        Upstream::new(
            config.name.clone(),
            backends,
            config.strategy.clone(),
            config.policy.clone(),
        )
    }

    /// Choose a backend not in `tried`, by the group's strategy, among those that are
    /// healthy, whose breaker admits requests and that are under their concurrency cap.
    /// When none is both healthy and admitted, the group fails open: it chooses among all
    /// untried backends with room, ignoring health and breakers, since a guess beats a
    /// certain 502 and finds a recovered backend at once. Only when every untried backend is
    /// at its cap is the answer `Saturated`. `key_hash` is asked for the request's key only
    /// by consistent hashing.
    pub fn pick(
        &self,
        now: Instant,
        tried: &[usize],
        key_hash: impl FnOnce(&HashKey) -> u64,
    ) -> Pick {
        let count = self.backends.len();
        let rotation = self.cursor.fetch_add(1, Ordering::Relaxed);
        let untried = |i: &usize| !tried.contains(i);
        let with_room = |i: &usize| self.backends[*i].has_room();
        let healthy = |i: &usize| self.backends[*i].is_selectable(now);
        let Some(chooser) = self.strategy.chooser() else {
            return self.pick_round_robin(count, rotation, untried, with_room, healthy);
        };
        let mut fail_open = false;
        let mut candidates: Vec<Candidate> = (0..count)
            .filter(untried)
            .filter(with_room)
            .filter(healthy)
            .map(|i| self.candidate(i, now))
            .collect();
        if candidates.is_empty() {
            fail_open = true;
            candidates = (0..count)
                .filter(untried)
                .filter(with_room)
                .map(|i| self.candidate(i, now))
                .collect();
        }
        if candidates.is_empty() {
            return if (0..count).any(|i| untried(&i)) {
                Pick::Saturated
            } else {
                Pick::Exhausted
            };
        }
        let key_hash = match &self.strategy {
            Strategy::ConsistentHash(key) => key_hash(key),
            _ => 0,
        };
        let mut swrr = self.swrr.lock().unwrap_or_else(|p| p.into_inner());
        let chosen = with_thread_rng(|rng| {
            strategy::pick(
                chooser,
                &candidates,
                PickInput {
                    rotation,
                    rng,
                    key_hash,
                    swrr: &mut swrr,
                },
            )
        });
        if let Some(index) = chosen {
            if tracing::enabled!(tracing::Level::DEBUG) {
                let costs: Vec<String> = candidates
                    .iter()
                    .map(|c| {
                        format!(
                            "{}:in_flight={},cost_ms={:.3},weight={:.2}",
                            self.backends[c.index].name,
                            c.in_flight,
                            c.cost / 1e6,
                            c.weight
                        )
                    })
                    .collect();
                tracing::debug!(
                    upstream = %self.name,
                    chosen = %self.backends[index].name,
                    fail_open,
                    candidates = ?costs,
                    "picked a backend"
                );
            }
        }
        match chosen {
            Some(index) => Pick::Backend { index, fail_open },
            None => Pick::Exhausted,
        }
    }

    /// Round-robin without building a candidate list: the (rotation mod k)-th of the k
    /// backends that pass every filter, so the share of a backend that is out spreads
    /// evenly over the others instead of doubling the load on its neighbour; else the same
    /// among those with room (fail open).
    fn pick_round_robin(
        &self,
        count: usize,
        rotation: usize,
        untried: impl Fn(&usize) -> bool,
        with_room: impl Fn(&usize) -> bool,
        healthy: impl Fn(&usize) -> bool,
    ) -> Pick {
        let eligible = |i: &usize| untried(i) && with_room(i);
        let nth = |filter: &dyn Fn(&usize) -> bool| {
            let available = (0..count).filter(|i| filter(i)).count();
            (available > 0)
                .then(|| (0..count).filter(|i| filter(i)).nth(rotation % available))
                .flatten()
        };
        if let Some(index) = nth(&|i| eligible(i) && healthy(i)) {
            return Pick::Backend {
                index,
                fail_open: false,
            };
        }
        if let Some(index) = nth(&eligible) {
            return Pick::Backend {
                index,
                fail_open: true,
            };
        }
        if (0..count).any(|i| untried(&i)) {
            Pick::Saturated
        } else {
            Pick::Exhausted
        }
    }

    /// Start an attempt on backend `index`: count it in flight and pass its breaker (unless
    /// the pick failed open, which tries breakers' backends anyway). `None` when the breaker
    /// refuses, which can happen when another request took the last trial slot meanwhile.
    pub fn begin(&self, index: usize, fail_open: bool, now: Instant) -> Option<Attempt<'_>> {
        let backend = &self.backends[index];
        let admission = if fail_open {
            Admission::Normal
        } else {
            let (admission, transition) = backend.breaker.admit(now)?;
            log_breaker(backend, transition);
            admission
        };
        Some(Attempt {
            upstream: self,
            backend,
            admission,
            recorded: AtomicBool::new(false),
            _in_flight: backend.stats.start(),
        })
    }

    /// Whether no backend passes every filter at `now`, so picks fail open and try them all
    /// (concurrency caps aside, which depend on the moment's requests).
    pub fn fails_open(&self, now: Instant) -> bool {
        !self.backends.iter().any(|b| b.is_selectable(now))
    }

    /// What the balancer believes about each backend at `now`, and why, in the order of
    /// `backends` (see [`standing::judge`]).
    pub fn standings(&self, now: Instant) -> Vec<Standing> {
        let group_fails_open = self.fails_open(now);
        self.backends
            .iter()
            .map(|backend| {
                let passive = backend.health.snapshot(now);
                let active = backend.active.as_ref().map(|a| a.snapshot());
                standing::judge(&Signals {
                    passive: &passive,
                    max_fails: backend.health.settings().max_fails,
                    breaker: backend.breaker.state(now),
                    breaker_admits: backend.breaker.allows(now),
                    active: active.as_ref(),
                    max_ejected_percent: self.policy.max_ejected_percent,
                    group_fails_open,
                })
            })
            .collect()
    }

    /// Whether one more backend may be ejected: the group's share of ejected backends stays
    /// within `max_ejected_percent` (one is always allowed).
    fn may_eject(&self, now: Instant) -> bool {
        let ejected = self
            .backends
            .iter()
            .filter(|b| !b.health.is_available(now))
            .count();
        let allowed = (self.backends.len() * self.policy.max_ejected_percent as usize / 100).max(1);
        ejected < allowed
    }

    fn candidate(&self, index: usize, now: Instant) -> Candidate {
        let backend = &self.backends[index];
        let weight = f64::from(backend.weight) * backend.stats.slow_start_factor(now);
        let cost = if self.strategy == Strategy::Adaptive {
            backend.stats.cost(now, weight)
        } else {
            0.0
        };
        Candidate {
            index,
            weight,
            in_flight: backend.stats.in_flight(),
            cost,
            id_hash: backend.id_hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::stats::BalanceSettings;
    use crate::config::{BreakerSettings, HealthSettings, RetryBudgetSettings};

    fn policy() -> GroupPolicy {
        GroupPolicy {
            failure_statuses: vec![],
            error_statuses: vec![],
            slow_response: Duration::ZERO,
            max_ejected_percent: 100,
            max_retries: 1,
            retry_budget: RetryBudgetSettings {
                ratio: 0.2,
                min_per_sec: 10.0,
                window: Duration::from_secs(10),
            },
        }
    }

    /// The backend a pick chose (panics on anything else).
    fn chosen(pick: Pick) -> usize {
        match pick {
            Pick::Backend { index, .. } => index,
            other => panic!("no backend: {other:?}"),
        }
    }

    fn upstream(count: usize) -> Upstream {
        upstream_with(count, Strategy::RoundRobin)
    }

    fn upstream_with(count: usize, strategy: Strategy) -> Upstream {
        let settings = BackendSettings {
            max_idle: 1,
            idle_timeout: Duration::from_secs(1),
            health: HealthSettings {
                max_fails: 1,
                fail_timeout: Duration::from_secs(10),
                max_fail_timeout: Duration::from_secs(10),
            },
            balance: BalanceSettings {
                default_latency: Duration::from_millis(10),
                decay: Duration::from_secs(10),
                failure_penalty: Duration::from_secs(1),
                failure_decay: crate::limits::FAILURE_RATE_DECAY,
                slow_start: Duration::ZERO,
            },
            breaker: BreakerSettings {
                failure_rate: 0.5,
                min_requests: 10,
                window: Duration::from_secs(10),
                open_for: Duration::from_secs(5),
                trial_requests: 1,
            },
            max_concurrent: 0,
        };
        let backends = (0..count)
            .map(|i| {
                let address = format!("127.0.0.1:{}", 1000 + i);
                Arc::new(Backend::new(format!("b{i}"), address, 1, settings))
            })
            .collect();
        Upstream::new("test".into(), backends, strategy, policy())
    }

    #[test]
    fn round_robin_gives_each_backend_an_equal_share() {
        let upstream = upstream(3);
        let now = Instant::now();
        let mut counts = [0; 3];
        let mut order = Vec::new();
        for _ in 0..300 {
            let index = chosen(upstream.pick(now, &[], |_| 0));
            counts[index] += 1;
            order.push(index);
        }
        assert_eq!(counts, [100, 100, 100]);
        assert_eq!(&order[..6], &[0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn an_ejected_backends_share_spreads_evenly_over_the_others() {
        let upstream = upstream(4);
        let now = Instant::now();
        upstream.backends[1].health.record_failure(now, true);
        let mut counts = [0; 4];
        for _ in 0..300 {
            counts[chosen(upstream.pick(now, &[], |_| 0))] += 1;
        }
        assert_eq!(counts, [100, 0, 100, 100]);
    }

    #[test]
    fn ejected_and_tried_backends_are_skipped_until_none_is_left() {
        let upstream = upstream(3);
        let now = Instant::now();
        upstream.backends[1].health.record_failure(now, true);
        for _ in 0..30 {
            let pick = chosen(upstream.pick(now, &[], |_| 0));
            assert_ne!(pick, 1);
            assert_ne!(chosen(upstream.pick(now, &[pick], |_| 0)), pick);
        }
        // Only the ejected one is untried: fail open to it rather than give up.
        assert_eq!(
            upstream.pick(now, &[0, 2], |_| 0),
            Pick::Backend {
                index: 1,
                fail_open: true
            }
        );
        assert_eq!(upstream.pick(now, &[0, 1, 2], |_| 0), Pick::Exhausted);
    }

    #[test]
    fn every_strategy_skips_ejected_and_tried_backends_and_fails_open() {
        let strategies = [
            Strategy::RoundRobin,
            Strategy::WeightedRoundRobin,
            Strategy::LeastConnections,
            Strategy::Random,
            Strategy::P2c,
            Strategy::ConsistentHash(HashKey::ClientIp),
            Strategy::Adaptive,
        ];
        for strategy in strategies {
            let upstream = upstream_with(3, strategy.clone());
            let now = Instant::now();
            upstream.backends[1].health.record_failure(now, true);
            for key in 0..50u64 {
                let pick = chosen(upstream.pick(now, &[], |_| key));
                assert_ne!(pick, 1, "{strategy:?} picked an ejected backend");
                let other = chosen(upstream.pick(now, &[pick], |_| key));
                assert!(other != pick && other != 1, "{strategy:?}");
            }
            assert_eq!(
                upstream.pick(now, &[0, 2], |_| 7),
                Pick::Backend {
                    index: 1,
                    fail_open: true
                },
                "{strategy:?} fails open"
            );
            assert_eq!(upstream.pick(now, &[0, 1, 2], |_| 7), Pick::Exhausted);
        }
    }

    #[test]
    fn adaptive_steers_away_from_a_slow_backend_and_back_after_it_recovers() {
        let upstream = upstream_with(3, Strategy::Adaptive);
        let t0 = Instant::now();
        for backend in &upstream.backends {
            backend.stats.observe(Duration::from_millis(5), t0);
        }
        upstream.backends[0]
            .stats
            .observe(Duration::from_millis(100), t0);
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[chosen(upstream.pick(t0, &[], |_| 0))] += 1;
        }
        assert_eq!(
            counts[0], 0,
            "a 20x slower backend loses every comparison: {counts:?}"
        );
        // Without new samples its estimate decays (10 s time constant): a minute later it is
        // cheap again and gets its share back.
        let later = t0 + Duration::from_secs(60);
        for backend in &upstream.backends[1..] {
            backend.stats.observe(Duration::from_millis(5), later);
        }
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[chosen(upstream.pick(later, &[], |_| 0))] += 1;
        }
        assert!(counts[0] > 60, "{counts:?}");
    }

    #[test]
    fn weights_and_slow_start_shape_the_share() {
        let base = upstream_with(1, Strategy::RoundRobin).backends[0].settings;
        let slow_start = BackendSettings {
            balance: BalanceSettings {
                slow_start: Duration::from_secs(10),
                ..base.balance
            },
            ..base
        };
        let heavy = Arc::new(Backend::new("heavy".into(), "127.0.0.1:1".into(), 3, base));
        let light = Arc::new(Backend::new("light".into(), "127.0.0.1:2".into(), 1, base));
        let upstream = Upstream::new(
            "w".into(),
            vec![heavy, light],
            Strategy::WeightedRoundRobin,
            policy(),
        );
        let now = Instant::now();
        let mut counts = [0; 2];
        for _ in 0..100 {
            counts[chosen(upstream.pick(now, &[], |_| 0))] += 1;
        }
        assert_eq!(counts, [75, 25]);

        // A backend that just joined starts at a tenth of its weight and ramps up.
        let old = Arc::new(Backend::new("old".into(), "127.0.0.1:1".into(), 1, base));
        let new = Arc::new(Backend::new(
            "new".into(),
            "127.0.0.1:2".into(),
            1,
            slow_start,
        ));
        let upstream = Upstream::new(
            "s".into(),
            vec![old, new],
            Strategy::WeightedRoundRobin,
            policy(),
        );
        let joined = Instant::now();
        let share = |at: Instant| {
            let picks = (0..110).filter(|_| {
                upstream.pick(at, &[], |_| 0)
                    == Pick::Backend {
                        index: 1,
                        fail_open: false,
                    }
            });
            picks.count()
        };
        assert_eq!(share(joined), 10, "a tenth of its weight: 1 in 11");
        assert_eq!(
            share(joined + Duration::from_secs(20)),
            55,
            "full weight after the window"
        );
    }

    #[test]
    fn caps_breakers_and_the_ejection_limit_shape_the_pick() {
        let now = Instant::now();
        // Concurrency caps: full backends are skipped; all full is Saturated, never fail-open.
        let base = upstream_with(1, Strategy::RoundRobin).backends[0].settings;
        let capped = BackendSettings {
            max_concurrent: 1,
            ..base
        };
        for strategy in [Strategy::RoundRobin, Strategy::LeastConnections] {
            let a = Arc::new(Backend::new("a".into(), "127.0.0.1:1".into(), 1, capped));
            let b = Arc::new(Backend::new("b".into(), "127.0.0.1:2".into(), 1, capped));
            let upstream = Upstream::new("c".into(), vec![a, b], strategy.clone(), policy());
            let first = upstream.begin(0, false, now).unwrap();
            for _ in 0..5 {
                assert_eq!(chosen(upstream.pick(now, &[], |_| 0)), 1, "{strategy:?}");
            }
            let second = upstream.begin(1, false, now).unwrap();
            assert_eq!(
                upstream.pick(now, &[], |_| 0),
                Pick::Saturated,
                "{strategy:?}"
            );
            drop((first, second));
            assert!(matches!(
                upstream.pick(now, &[], |_| 0),
                Pick::Backend { .. }
            ));
        }

        // An open breaker is skipped like an ejection; all open fails open.
        let upstream = upstream_with(2, Strategy::P2c);
        for _ in 0..10 {
            let attempt = upstream.begin(0, false, now).unwrap();
            attempt.fail("test", None);
        }
        assert_eq!(
            upstream.backends[0].breaker.state(now),
            super::super::breaker::BreakerState::Open
        );
        for _ in 0..20 {
            assert_eq!(chosen(upstream.pick(now, &[], |_| 0)), 1);
        }
        assert!(
            upstream.begin(0, false, now).is_none(),
            "the breaker refuses"
        );
        assert!(
            upstream.begin(0, true, now).is_some(),
            "fail-open bypasses it"
        );

        // max_ejected_percent 50 of 4 backends: two may be out at once, not three.
        let group = upstream_with(4, Strategy::RoundRobin);
        let group = Upstream::new(
            "e".into(),
            group.backends.clone(),
            Strategy::RoundRobin,
            GroupPolicy {
                max_ejected_percent: 50,
                ..policy()
            },
        );
        for index in 0..3 {
            group.begin(index, false, now).unwrap().fail("test", None);
        }
        let ejected = group
            .backends
            .iter()
            .filter(|b| !b.health.is_available(now))
            .count();
        assert_eq!(ejected, 2);
    }

    #[test]
    fn standings_follow_the_pick_at_an_injected_time() {
        use super::super::standing::BackendState;
        let checks = CheckSettings {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            jitter: Duration::ZERO,
            timeout: Duration::from_secs(1),
            expected_status: 200,
            rise: 1,
            fall: 1,
        };
        let plain = upstream_with(4, Strategy::RoundRobin);
        let backends: Vec<Arc<Backend>> = plain
            .backends
            .iter()
            .map(|b| {
                let backend = Backend::new(b.name.to_string(), b.address.clone(), 1, b.settings);
                Arc::new(backend.with_checks(Some(&checks)))
            })
            .collect();
        // 50 % of 4: two may be ejected at once.
        let group = Upstream::new(
            "s".into(),
            backends,
            Strategy::RoundRobin,
            GroupPolicy {
                max_ejected_percent: 50,
                ..policy()
            },
        );
        let t0 = Instant::now();
        let states = |at: Instant| -> Vec<(BackendState, bool)> {
            group
                .standings(at)
                .iter()
                .map(|s| (s.state, s.in_rotation))
                .collect()
        };
        assert!(states(t0)
            .iter()
            .all(|&state| state == (BackendState::Healthy, true)));

        // b0 and b1 ejected (max_fails 1), b2 held back by the limit, b3 down by its check.
        for index in 0..3 {
            group.begin(index, false, t0).unwrap().fail("connect", None);
        }
        let b3_checks = group.backends[3].active.as_ref().unwrap();
        assert_eq!(b3_checks.record(false), Some(false));
        assert_eq!(
            states(t0),
            [
                (BackendState::Ejected, false),
                (BackendState::Ejected, false),
                (BackendState::KeptByEjectionLimit, true),
                (BackendState::Down, false),
            ]
        );
        assert!(!group.fails_open(t0), "b2 is still selectable");
        let standings = group.standings(t0);
        assert!(
            standings[0]
                .reason
                .starts_with("ejected for 10.0 s more after 1 failures"),
            "{}",
            standings[0].reason
        );

        // The ejections (10 s from the failures, a moment after t0) are over: back in
        // rotation on probation.
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(states(t1)[0], (BackendState::Healthy, true));
        assert!(group.standings(t1)[0].reason.contains("on probation"));

        // With every backend out, the group fails open: each is in rotation, keeping its
        // own state.
        let b2_checks = group.backends[2].active.as_ref().unwrap();
        assert_eq!(b2_checks.record(false), Some(false));
        assert!(group.fails_open(t0));
        assert_eq!(
            states(t0),
            [
                (BackendState::Ejected, true),
                (BackendState::Ejected, true),
                (BackendState::Down, true),
                (BackendState::Down, true),
            ]
        );
        assert!(group.standings(t0)[2]
            .reason
            .ends_with("so the group fails open and tries it anyway"));
    }
}
