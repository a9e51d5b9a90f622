//! Per-backend balancing state shared by every request: requests in flight, the peak-EWMA
//! latency estimate, counters, and when the backend (re)joined, for slow start. Survives a
//! reload together with the backend's pool and health.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ewma::{self, PeakEwma};

/// Balancing settings of an upstream group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalanceSettings {
    /// Latency assumed for a backend before its first sample.
    pub default_latency: Duration,
    /// Time constant of the EWMA's decay.
    pub decay: Duration,
    /// Latency recorded for a failed request, and assumed for a backend with requests in
    /// flight but no sample yet.
    pub failure_penalty: Duration,
    /// Window over which a joining or recovering backend ramps up to its full weight; zero
    /// turns slow start off.
    pub slow_start: Duration,
}

/// Share of its weight a backend in slow start gets at first.
const SLOW_START_FLOOR: f64 = 0.1;

#[derive(Debug)]
pub struct BackendStats {
    in_flight: AtomicU64,
    samples: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    ewma: Mutex<PeakEwma>,
    joined: Mutex<Instant>,
    settings: BalanceSettings,
}

impl BackendStats {
    pub fn new(settings: BalanceSettings, now: Instant) -> BackendStats {
        BackendStats {
            in_flight: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ewma: Mutex::new(PeakEwma::new(settings.default_latency, settings.decay, now)),
            joined: Mutex::new(now),
            settings,
        }
    }

    pub fn settings(&self) -> BalanceSettings {
        self.settings
    }

    /// Count a request as in flight until the returned guard is dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight { stats: self }
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn ewma(&self) -> std::sync::MutexGuard<'_, PeakEwma> {
        self.ewma.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A response (head) arrived after `latency`.
    pub fn observe(&self, latency: Duration, now: Instant) {
        self.samples.fetch_add(1, Ordering::Relaxed);
        self.ewma().observe(latency, now);
    }

    /// The backend answered, but with a failure (a failure status, a response over the slow
    /// threshold): count an error and record the larger of the latency and the penalty, so
    /// failing fast never looks cheap.
    pub fn observe_failed_answer(&self, latency: Duration, now: Instant) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.samples.fetch_add(1, Ordering::Relaxed);
        self.ewma()
            .observe(latency.max(self.settings.failure_penalty), now);
    }

    /// The request failed: count it and record the penalty as its latency.
    pub fn observe_failure(&self, now: Instant) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.samples.fetch_add(1, Ordering::Relaxed);
        self.ewma().observe(self.settings.failure_penalty, now);
    }

    /// The latency estimate at `now`, in nanoseconds.
    pub fn latency_ns(&self, now: Instant) -> f64 {
        self.ewma().estimate_ns(now)
    }

    /// Adaptive cost of one more request, for a configured `weight`.
    pub fn cost(&self, now: Instant, weight: f64) -> f64 {
        ewma::cost(
            self.latency_ns(now),
            self.in_flight(),
            self.samples.load(Ordering::Relaxed),
            self.settings.failure_penalty.as_nanos() as f64,
            weight,
        )
    }

    /// Restart slow start (the backend came back from an ejection).
    pub fn rejoin(&self, now: Instant) {
        *self.joined.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// Share of its weight the backend gets at `now`: ramps linearly from 0.1 to 1 over the
    /// slow-start window after it joined.
    pub fn slow_start_factor(&self, now: Instant) -> f64 {
        let window = self.settings.slow_start;
        if window.is_zero() {
            return 1.0;
        }
        let joined = *self.joined.lock().unwrap_or_else(|p| p.into_inner());
        let progress = now.saturating_duration_since(joined).as_secs_f64() / window.as_secs_f64();
        progress.clamp(SLOW_START_FLOOR, 1.0)
    }
}

/// A request in flight; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight<'a> {
    stats: &'a BackendStats,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: BalanceSettings = BalanceSettings {
        default_latency: Duration::from_millis(10),
        decay: Duration::from_secs(10),
        failure_penalty: Duration::from_secs(1),
        slow_start: Duration::from_secs(10),
    };

    #[test]
    fn in_flight_follows_the_guards() {
        let stats = BackendStats::new(SETTINGS, Instant::now());
        let a = stats.start();
        let b = stats.start();
        assert_eq!(stats.in_flight(), 2);
        drop(a);
        assert_eq!(stats.in_flight(), 1);
        drop(b);
        assert_eq!((stats.in_flight(), stats.requests()), (0, 2));
    }

    #[test]
    fn failures_cost_the_penalty_and_unmeasured_in_flight_is_penalised() {
        let t0 = Instant::now();
        let stats = BackendStats::new(SETTINGS, t0);
        assert_eq!(
            stats.cost(t0, 1.0),
            10_000_000.0,
            "idle: the default latency"
        );
        let guard = stats.start();
        assert_eq!(stats.cost(t0, 1.0), 2.0 * 1e9, "in flight, never measured");
        drop(guard);
        let t1 = t0 + Duration::from_secs(1);
        stats.observe(Duration::from_millis(4), t1);
        assert!(stats.cost(t1, 1.0) < 10_000_000.0);
        stats.observe_failure(t1);
        assert_eq!(stats.cost(t1, 1.0), 1e9);
        assert_eq!(stats.errors(), 1);
    }

    #[test]
    fn slow_start_ramps_from_the_floor_to_full_weight() {
        let t0 = Instant::now();
        let stats = BackendStats::new(SETTINGS, t0);
        assert_eq!(stats.slow_start_factor(t0), SLOW_START_FLOOR);
        assert!((stats.slow_start_factor(t0 + Duration::from_secs(5)) - 0.5).abs() < 1e-9);
        assert_eq!(stats.slow_start_factor(t0 + Duration::from_secs(11)), 1.0);
        stats.rejoin(t0 + Duration::from_secs(20));
        assert!((stats.slow_start_factor(t0 + Duration::from_secs(22)) - 0.2).abs() < 1e-9);
        let off = BackendStats::new(
            BalanceSettings {
                slow_start: Duration::ZERO,
                ..SETTINGS
            },
            t0,
        );
        assert_eq!(off.slow_start_factor(t0), 1.0);
    }
}
