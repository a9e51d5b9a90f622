//! Per-backend balancing state shared by every request: requests in flight, the peak-EWMA
//! latency estimate, the typical latency, the failure rate, the probe allowance, counters,
//! and when the backend (re)joined, for slow start. Survives a reload together with the
//! backend's pool and health.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ewma::{self, Load, MeanEwma, PeakEwma};
use super::failure_rate::FailureRate;
use super::outlier::{ProbeAllowance, ProbeRule};
use crate::limits::TYPICAL_LATENCY_DECAY;

/// Balancing settings of an upstream group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalanceSettings {
    /// Latency assumed for a backend before its first sample.
    pub default_latency: Duration,
    /// Time constant of the EWMA's decay.
    pub decay: Duration,
    /// What one failure costs in the adaptive cost (the failure rate is multiplied by it and
    /// added to the latency), and the latency assumed for a backend with requests in flight
    /// but no sample yet.
    pub failure_penalty: Duration,
    /// Time constant of the failure rate's decay.
    pub failure_decay: Duration,
    /// Window over which a joining or recovering backend ramps up to its full weight; zero
    /// turns slow start off.
    pub slow_start: Duration,
}

/// Share of its weight a backend in slow start gets at first.
const SLOW_START_FLOOR: f64 = 0.1;

/// The estimates one lock guards: every outcome updates them together.
#[derive(Debug)]
struct Estimates {
    /// For the cost: peaks at once, recovers with `decay`.
    latency: PeakEwma,
    /// For the outlier rule: the plain average, moved only by samples.
    typical: MeanEwma,
    failures: FailureRate,
}

#[derive(Debug)]
pub struct BackendStats {
    in_flight: AtomicU64,
    samples: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    estimates: Mutex<Estimates>,
    probe: Mutex<ProbeAllowance>,
    /// Kept out of an adaptive group's race by the outlier rule's last verdict.
    outlier: AtomicBool,
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
            estimates: Mutex::new(Estimates {
                latency: PeakEwma::new(settings.default_latency, settings.decay, now),
                typical: MeanEwma::new(settings.default_latency, TYPICAL_LATENCY_DECAY, now),
                failures: FailureRate::new(settings.failure_decay, now),
            }),
            probe: Mutex::new(ProbeAllowance::new()),
            outlier: AtomicBool::new(false),
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

    fn estimates(&self) -> std::sync::MutexGuard<'_, Estimates> {
        self.estimates.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A response (head) arrived after `latency`: a latency sample and a success.
    pub fn observe(&self, latency: Duration, now: Instant) {
        self.samples.fetch_add(1, Ordering::Relaxed);
        let mut estimates = self.estimates();
        estimates.latency.observe(latency, now);
        estimates.typical.observe(latency, now);
        estimates.failures.observe(false, now);
    }

    /// A probe was answered after `latency`: the only news about a backend kept out of the
    /// race, so it replaces both latency estimates rather than being averaged into what made
    /// the backend an outlier. A backend that recovered is back in the race at its new
    /// latency at once (averaged in, one answer a second would take several seconds to undo
    /// a 20× slowdown); one that did not is judged by this answer alone, and stays out.
    pub fn observe_probe_answer(&self, latency: Duration, now: Instant) {
        self.samples.fetch_add(1, Ordering::Relaxed);
        let mut estimates = self.estimates();
        estimates.latency.reset(latency, now);
        estimates.typical.reset(latency, now);
        estimates.failures.observe(false, now);
    }

    /// The backend answered, but with a failure (an error or failure status, a response over
    /// the slow threshold): an error for the failure rate. Its latency is a sample only when
    /// it raises the estimate: a failure never makes a backend look faster (a `500` sent at
    /// once says nothing of how fast the backend serves), but a slow one is slow.
    pub fn observe_failed_answer(&self, latency: Duration, now: Instant) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut estimates = self.estimates();
        estimates.failures.observe(true, now);
        let latency_ns = ewma::nanos(latency);
        if latency_ns > estimates.latency.estimate_ns(now) {
            self.samples.fetch_add(1, Ordering::Relaxed);
            estimates.latency.observe(latency, now);
        }
        if latency_ns > estimates.typical.value_ns() {
            estimates.typical.observe(latency, now);
        }
    }

    /// The request failed without an answer (connect error, reset, timeout): an error for the
    /// failure rate, and no latency sample, since there was no answer to time.
    pub fn observe_failure(&self, now: Instant) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.estimates().failures.observe(true, now);
    }

    /// The latency estimate at `now`, in nanoseconds.
    pub fn latency_ns(&self, now: Instant) -> f64 {
        self.estimates().latency.estimate_ns(now)
    }

    /// The typical latency (the plain average, moved only by samples), in nanoseconds.
    pub fn typical_latency_ns(&self) -> f64 {
        self.estimates().typical.value_ns()
    }

    /// Whether the outlier rule's last verdict keeps it out of the race.
    pub fn is_outlier(&self) -> bool {
        self.outlier.load(Ordering::Relaxed)
    }

    /// Record the outlier rule's verdict.
    pub fn set_outlier(&self, outlier: bool) {
        self.outlier.store(outlier, Ordering::Relaxed);
    }

    fn probe(&self) -> std::sync::MutexGuard<'_, ProbeAllowance> {
        self.probe.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the probe token if the allowance has one at `now`, the group's `pick`-th pick in
    /// a group of `group_size`: then the caller sends a probe, and must call
    /// [`BackendStats::end_probe`] when it ends.
    pub fn try_probe(&self, rule: ProbeRule, now: Instant, pick: u64, group_size: usize) -> bool {
        let mut probe = self.probe();
        let due = probe.is_due(rule, now, pick, group_size);
        if due {
            probe.take(now, pick);
        }
        due
    }

    /// The probe taken with [`BackendStats::try_probe`] ended.
    pub fn end_probe(&self) {
        self.probe().finish();
    }

    /// The most probes a second the allowance gives now.
    pub fn probe_rate_per_sec(&self, rule: ProbeRule) -> f64 {
        self.probe().rate_per_sec(rule)
    }

    /// The failure rate at `now`, in `0..=1`.
    pub fn failure_rate(&self, now: Instant) -> f64 {
        self.estimates().failures.rate(now)
    }

    /// What the adaptive cost is computed from, at `now`.
    pub fn load(&self, now: Instant) -> Load {
        let estimates = self.estimates();
        Load {
            latency_ns: estimates.latency.estimate_ns(now),
            failure_rate: estimates.failures.rate(now),
            in_flight: self.in_flight(),
            samples: self.samples.load(Ordering::Relaxed),
        }
    }

    /// Adaptive cost of one more request, for a configured `weight`.
    pub fn cost(&self, now: Instant, weight: f64) -> f64 {
        ewma::cost(
            self.load(now),
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
        failure_decay: crate::limits::FAILURE_RATE_DECAY,
        slow_start: Duration::from_secs(10),
    };

    const MS: f64 = 1_000_000.0;

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
    fn unmeasured_in_flight_is_penalised_and_a_failure_adds_the_penalty_times_its_rate() {
        let t0 = Instant::now();
        let stats = BackendStats::new(SETTINGS, t0);
        assert_eq!(stats.cost(t0, 1.0), 10.0 * MS, "idle: the default latency");
        let guard = stats.start();
        assert_eq!(stats.cost(t0, 1.0), 2.0 * 1e9, "in flight, never measured");
        drop(guard);
        let t1 = t0 + Duration::from_secs(1);
        stats.observe(Duration::from_millis(4), t1);
        assert!(stats.cost(t1, 1.0) < 10.0 * MS);
        // A failure a second later weighs 1 - e^(-1 s/τ): the rate jumps almost to 1 and
        // the cost by that share of the penalty. It used to record a 1 s latency sample.
        let t2 = t1 + Duration::from_secs(1);
        let latency = stats.latency_ns(t2);
        stats.observe_failure(t2);
        let rate = 1.0 - (-1.0 / crate::limits::FAILURE_RATE_DECAY.as_secs_f64()).exp();
        assert!((stats.failure_rate(t2) - rate).abs() < 1e-9);
        assert_eq!(stats.latency_ns(t2), latency, "no latency sample");
        assert!((stats.cost(t2, 1.0) - (latency + rate * 1e9)).abs() < 1.0);
        assert_eq!(stats.errors(), 1);
    }

    /// A backend answering every 10 ms in `latency`, failing every `fail_every`-th request
    /// (0: never) at once, for `span` from `start`; returns the time of its last answer.
    fn serve(
        stats: &BackendStats,
        start: Instant,
        span: Duration,
        latency: Duration,
        fail_every: u32,
    ) -> Instant {
        let mut now = start;
        let mut i = 0;
        while now < start + span {
            now += Duration::from_millis(10);
            i += 1;
            if fail_every > 0 && i % fail_every == 0 {
                stats.observe_failed_answer(Duration::from_micros(200), now);
            } else {
                stats.observe(latency, now);
            }
        }
        now
    }

    #[test]
    fn a_backend_failing_half_its_requests_fast_costs_more_than_a_healthy_one_three_times_slower() {
        // Issue 16, phase C1: the failing backend answered its 500s at once and, to the old
        // cost, was the cheapest of the group.
        let t0 = Instant::now();
        let failing = BackendStats::new(SETTINGS, t0);
        let slower = BackendStats::new(SETTINGS, t0);
        let end = serve(
            &failing,
            t0,
            Duration::from_secs(5),
            Duration::from_millis(5),
            2,
        );
        serve(
            &slower,
            t0,
            Duration::from_secs(5),
            Duration::from_millis(15),
            0,
        );
        let (failing_cost, slower_cost) = (failing.cost(end, 1.0), slower.cost(end, 1.0));
        assert!(
            failing_cost > 3.0 * slower_cost,
            "failing {} ms, healthy but 3x slower {} ms",
            failing_cost / MS,
            slower_cost / MS
        );
        // Its fast 500s did not lower its latency estimate below its real answers' 5 ms.
        assert!(failing.latency_ns(end) >= 5.0 * MS);
    }

    #[test]
    fn three_seconds_of_successes_bring_a_failing_backend_back_within_a_fifth_of_its_peers() {
        // Issue 16, phase D: the healed backend's cost stayed up for most of a minute,
        // because each failure had put 1 s into its peak latency estimate.
        let t0 = Instant::now();
        let healed = BackendStats::new(SETTINGS, t0);
        let peer = BackendStats::new(SETTINGS, t0);
        let failing_until = serve(
            &healed,
            t0,
            Duration::from_secs(5),
            Duration::from_millis(5),
            2,
        );
        serve(
            &peer,
            t0,
            Duration::from_secs(5),
            Duration::from_millis(5),
            0,
        );
        let end = serve(
            &healed,
            failing_until,
            Duration::from_secs(3),
            Duration::from_millis(5),
            0,
        );
        serve(
            &peer,
            failing_until,
            Duration::from_secs(3),
            Duration::from_millis(5),
            0,
        );
        let ratio = healed.cost(end, 1.0) / peer.cost(end, 1.0);
        assert!(ratio <= 1.2, "{ratio}");
        // One second in, it is still well above them: the recovery is a ramp, not a switch.
        let mid = BackendStats::new(SETTINGS, t0);
        let until = serve(
            &mid,
            t0,
            Duration::from_secs(5),
            Duration::from_millis(5),
            2,
        );
        let one_second = serve(
            &mid,
            until,
            Duration::from_secs(1),
            Duration::from_millis(5),
            0,
        );
        assert!(mid.cost(one_second, 1.0) > 2.0 * peer.cost(end, 1.0));
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
