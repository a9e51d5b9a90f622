//! Upstream groups and their backends: the runtime state the proxy keeps per backend (idle
//! connections, passive health, balancing statistics) and the choice of a backend for each
//! request by the group's strategy, over the backends that are available.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::health::{HealthSettings, PassiveHealth, Transition};
use super::pool::Pool;
use crate::balance::rng::with_thread_rng;
use crate::balance::stats::{BackendStats, BalanceSettings};
use crate::balance::strategy::{self, hash_bytes, Candidate, HashKey, PickInput, Strategy};

/// Settings shared by every backend of a group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendSettings {
    pub max_idle: usize,
    pub idle_timeout: Duration,
    pub health: HealthSettings,
    pub balance: BalanceSettings,
}

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
        }
    }

    /// This backend as the next config defines it, keeping `previous`'s idle connections
    /// and health record when they describe the same place under the same settings.
    pub fn carried_over(
        name: String,
        address: String,
        weight: u32,
        settings: BackendSettings,
        previous: &Backend,
    ) -> Backend {
        let mut backend = Backend::new(name, address, weight, settings);
        if previous.address == backend.address && previous.settings == settings {
            backend.pool = Arc::clone(&previous.pool);
            backend.health = Arc::clone(&previous.health);
            backend.stats = Arc::clone(&previous.stats);
        }
        backend
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

    pub fn record_success(&self) {
        if let Some(Transition::Recovered) = self.health.record_success() {
            self.stats.rejoin(Instant::now());
            tracing::info!(backend = %self.name, address = %self.address, "backend recovered");
        }
    }

    pub fn record_failure(&self, reason: &str) {
        let now = Instant::now();
        self.stats.observe_failure(now);
        if let Some(Transition::Ejected {
            duration,
            ejections,
        }) = self.health.record_failure(now)
        {
            tracing::warn!(
                backend = %self.name,
                address = %self.address,
                reason,
                ejected_for_ms = duration.as_millis() as u64,
                ejections,
                "backend ejected"
            );
        }
    }
}

/// A named pool of backends.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub backends: Vec<Arc<Backend>>,
    pub strategy: Strategy,
    cursor: AtomicUsize,
    /// Smooth weighted round-robin's running weights, one per backend.
    swrr: Mutex<Vec<f64>>,
}

impl Upstream {
    pub fn new(name: String, backends: Vec<Arc<Backend>>, strategy: Strategy) -> Upstream {
        let swrr = Mutex::new(vec![0.0; backends.len()]);
        Upstream {
            name,
            backends,
            strategy,
            cursor: AtomicUsize::new(0),
            swrr,
        }
    }

    /// Choose a backend not in `tried`, by the group's strategy, among the available ones.
    /// When every untried backend is ejected, the pool fails open and chooses among those
    /// anyway: a guess beats a certain 502, and it finds a recovered backend at once.
    /// `key_hash` is asked for the request's key only by consistent hashing.
    pub fn pick(
        &self,
        now: Instant,
        tried: &[usize],
        key_hash: impl FnOnce(&HashKey) -> u64,
    ) -> Option<usize> {
        let count = self.backends.len();
        if count == 0 {
            return None;
        }
        let rotation = self.cursor.fetch_add(1, Ordering::Relaxed);
        if self.strategy == Strategy::RoundRobin {
            return self.pick_round_robin(now, tried, rotation);
        }
        let untried = |i: &usize| !tried.contains(i);
        let available: Vec<Candidate> = (0..count)
            .filter(untried)
            .filter(|&i| self.backends[i].health.is_available(now))
            .map(|i| self.candidate(i, now))
            .collect();
        let candidates = if available.is_empty() {
            (0..count)
                .filter(untried)
                .map(|i| self.candidate(i, now))
                .collect()
        } else {
            available
        };
        if candidates.is_empty() {
            return None;
        }
        let key_hash = match &self.strategy {
            Strategy::ConsistentHash(key) => key_hash(key),
            _ => 0,
        };
        let mut swrr = self.swrr.lock().unwrap_or_else(|p| p.into_inner());
        with_thread_rng(|rng| {
            strategy::pick(
                &self.strategy,
                &candidates,
                PickInput {
                    rotation,
                    rng,
                    key_hash,
                    swrr: &mut swrr,
                },
            )
        })
    }

    /// Round-robin without building a candidate list: the next untried available backend
    /// from the rotation point, or the first untried one when none is available.
    fn pick_round_robin(&self, now: Instant, tried: &[usize], rotation: usize) -> Option<usize> {
        let count = self.backends.len();
        let start = rotation % count;
        let mut fallback = None;
        for index in (0..count).map(|step| (start + step) % count) {
            if tried.contains(&index) {
                continue;
            }
            if self.backends[index].health.is_available(now) {
                return Some(index);
            }
            fallback.get_or_insert(index);
        }
        fallback
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
                slow_start: Duration::ZERO,
            },
        };
        let backends = (0..count)
            .map(|i| {
                let address = format!("127.0.0.1:{}", 1000 + i);
                Arc::new(Backend::new(format!("b{i}"), address, 1, settings))
            })
            .collect();
        Upstream::new("test".into(), backends, strategy)
    }

    #[test]
    fn round_robin_gives_each_backend_an_equal_share() {
        let upstream = upstream(3);
        let now = Instant::now();
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[upstream.pick(now, &[], |_| 0).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn ejected_and_tried_backends_are_skipped_until_none_is_left() {
        let upstream = upstream(3);
        let now = Instant::now();
        upstream.backends[1].health.record_failure(now);
        for _ in 0..30 {
            let pick = upstream.pick(now, &[], |_| 0).unwrap();
            assert_ne!(pick, 1);
            assert_ne!(upstream.pick(now, &[pick], |_| 0).unwrap(), pick);
        }
        // Only the ejected one is untried: fail open to it rather than give up.
        assert_eq!(upstream.pick(now, &[0, 2], |_| 0), Some(1));
        assert_eq!(upstream.pick(now, &[0, 1, 2], |_| 0), None);
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
            upstream.backends[1].health.record_failure(now);
            for key in 0..50u64 {
                let pick = upstream.pick(now, &[], |_| key).unwrap();
                assert_ne!(pick, 1, "{strategy:?} picked an ejected backend");
                let other = upstream.pick(now, &[pick], |_| key).unwrap();
                assert!(other != pick && other != 1, "{strategy:?}");
            }
            assert_eq!(
                upstream.pick(now, &[0, 2], |_| 7),
                Some(1),
                "{strategy:?} fails open"
            );
            assert_eq!(upstream.pick(now, &[0, 1, 2], |_| 7), None);
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
            counts[upstream.pick(t0, &[], |_| 0).unwrap()] += 1;
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
            counts[upstream.pick(later, &[], |_| 0).unwrap()] += 1;
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
        let upstream = Upstream::new("w".into(), vec![heavy, light], Strategy::WeightedRoundRobin);
        let now = Instant::now();
        let mut counts = [0; 2];
        for _ in 0..100 {
            counts[upstream.pick(now, &[], |_| 0).unwrap()] += 1;
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
        let upstream = Upstream::new("s".into(), vec![old, new], Strategy::WeightedRoundRobin);
        let joined = Instant::now();
        let share = |at: Instant| {
            let picks = (0..110).filter(|_| upstream.pick(at, &[], |_| 0) == Some(1));
            picks.count()
        };
        assert_eq!(share(joined), 10, "a tenth of its weight: 1 in 11");
        assert_eq!(
            share(joined + Duration::from_secs(20)),
            55,
            "full weight after the window"
        );
    }
}
