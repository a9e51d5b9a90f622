//! Peak-EWMA latency estimate (Finagle's and Linkerd's "peak EWMA"): a slower sample than the
//! estimate replaces it at once; faster ones pull it down exponentially with time constant
//! `tau`. The estimate also decays toward zero while no sample arrives, evaluated at pick
//! time, so a backend penalised long ago is tried again and re-measured. Reading the estimate
//! does not store the decayed value or move the stamp (tower's `load()` does both), so how
//! much a sample counts depends on the time since the previous sample, not on how often the
//! backend was considered in between.
//!
//! Pure arithmetic on an injected clock. Nanoseconds as `f64`: the range needed (µs to
//! minutes) is far inside its exact integer range, and `exp` is the natural operation.

use std::time::{Duration, Instant};

/// `exp(−Δt/τ)` for the `Δt` from `stamp` to `now` (zero if `now` is earlier): how much a
/// value recorded at `stamp` still weighs at `now`. Every time-weighted average of the
/// balancer decays with it.
pub(super) fn decay_weight(stamp: Instant, now: Instant, tau_ns: f64) -> f64 {
    let elapsed = nanos(now.saturating_duration_since(stamp));
    (-elapsed / tau_ns).exp()
}

/// `duration` in nanoseconds as `f64`, from its two parts: `as_nanos() as f64` converts a
/// `u128`, a library call of ~50 instructions, and each request makes several of these.
pub(super) fn nanos(duration: Duration) -> f64 {
    duration.as_secs() as f64 * 1e9 + f64::from(duration.subsec_nanos())
}

#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    estimate_ns: f64,
    stamp: Instant,
    tau_ns: f64,
}

impl PeakEwma {
    /// A fresh estimate of `initial` (the configured default latency) at `now`.
    pub fn new(initial: Duration, tau: Duration, now: Instant) -> PeakEwma {
        PeakEwma {
            estimate_ns: nanos(initial),
            stamp: now,
            tau_ns: (tau.as_nanos() as f64).max(1.0),
        }
    }

    /// Weight of the old estimate after `now - stamp` has passed.
    fn weight(&self, now: Instant) -> f64 {
        decay_weight(self.stamp, now, self.tau_ns)
    }

    /// Record a latency sample taken at `now`. A sample above the stored estimate replaces it
    /// (the peak); any other is averaged in as `old·w + sample·(1 − w)`, `w = exp(−Δt/τ)` for
    /// the `Δt` since the previous sample, as Finagle's and Linkerd's (tower's) peak EWMA do.
    ///
    /// `w` is applied once. The decay toward zero that `estimate_ns` shows between samples is
    /// that same `old·w` term, not an extra step: multiplying the decayed value by `w` again
    /// would weigh the old estimate `w²`, leave the weights summing below 1 (a sample equal to
    /// the estimate would lower it), and halve the time constant.
    ///
    /// The comparison is against the stored estimate, not the decayed one, so the result is
    /// `max(sample, old·w + sample·(1 − w))`: continuous and rising in the sample. Comparing
    /// with the decayed value instead would let a slightly slower sample leave a lower
    /// estimate than a slightly faster one.
    pub fn observe(&mut self, sample: Duration, now: Instant) {
        let sample_ns = nanos(sample);
        self.estimate_ns = if sample_ns > self.estimate_ns {
            sample_ns
        } else {
            let w = self.weight(now);
            self.estimate_ns * w + sample_ns * (1.0 - w)
        };
        self.stamp = now;
    }

    /// The estimate at `now`, decayed for the time since the last sample (not stored: only
    /// samples move the stamp).
    pub fn estimate_ns(&self, now: Instant) -> f64 {
        self.estimate_ns * self.weight(now)
    }

    /// Forget the past: the estimate becomes `sample`, as if it were the first.
    pub fn reset(&mut self, sample: Duration, now: Instant) {
        self.estimate_ns = nanos(sample);
        self.stamp = now;
    }
}

/// A plain time-weighted EWMA of latency that moves only on samples: the backend's *typical*
/// latency, which the latency-outlier rule compares between backends (`balance/outlier.rs`).
/// The peak estimate does not serve there: it sits near the largest latency of the last few
/// time constants, and a healthy backend's queueing peaks are several times its typical
/// latency, so comparing peaks would flag healthy backends and miss slow ones. Nor does it
/// decay while no sample arrives: a backend kept out of the race gets only probes, and
/// between two probes nothing new is known about it; a reading that drifted toward zero
/// would let it back in before any probe said it recovered.
#[derive(Debug, Clone, Copy)]
pub struct MeanEwma {
    value_ns: f64,
    stamp: Instant,
    tau_ns: f64,
}

impl MeanEwma {
    /// A fresh estimate of `initial` at `now`.
    pub fn new(initial: Duration, tau: Duration, now: Instant) -> MeanEwma {
        MeanEwma {
            value_ns: nanos(initial),
            stamp: now,
            tau_ns: (tau.as_nanos() as f64).max(1.0),
        }
    }

    /// Average in a sample taken at `now`, weighted by the time since the previous one:
    /// `value·w + sample·(1 − w)`, `w = exp(−Δt/τ)`. Sparse samples weigh much (a backend
    /// that gets a request a second is judged by its last few), dense ones little.
    pub fn observe(&mut self, sample: Duration, now: Instant) {
        let w = decay_weight(self.stamp, now, self.tau_ns);
        self.value_ns = self.value_ns * w + nanos(sample) * (1.0 - w);
        self.stamp = now;
    }

    /// Forget the past: the estimate becomes `sample` (a probe's answer is the only news
    /// about a backend kept out of the race).
    pub fn reset(&mut self, sample: Duration, now: Instant) {
        self.value_ns = nanos(sample);
        self.stamp = now;
    }

    pub fn value_ns(&self) -> f64 {
        self.value_ns
    }
}

/// Cost of sending one more request to a backend: its expected latency times the requests
/// it would then have in flight, divided by its effective weight. The expected latency is the
/// latency estimate plus the failure rate times `penalty_ns` (`failure_penalty_ms`): a failure
/// costs the client as much as an answer that took the penalty (an error, or a retry after a
/// wait), so a backend failing half its requests at once costs like one answering in half the
/// penalty, not like the fastest backend of the group.
///
/// A backend with requests in flight but no latency sample yet gets `penalty_ns` as its
/// latency: it might be arbitrarily slow, and looking cheap would send it everything until
/// the first answer comes back.
pub fn cost(load: Load, penalty_ns: f64, weight: f64) -> f64 {
    let latency = if load.samples == 0 && load.in_flight > 0 {
        penalty_ns
    } else {
        load.latency_ns
    };
    let expected = latency + load.failure_rate * penalty_ns;
    expected * (load.in_flight as f64 + 1.0) / weight.max(f64::MIN_POSITIVE)
}

/// What the cost of one backend is computed from, read at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// The latency estimate, decayed to now.
    pub latency_ns: f64,
    /// The failure rate, decayed to now, in `0..=1`.
    pub failure_rate: f64,
    pub in_flight: u64,
    /// Latency samples recorded so far.
    pub samples: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1_000_000.0;

    #[test]
    fn nanos_from_the_parts_is_the_exact_count() {
        for duration in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::new(3, 999_999_999),
            Duration::from_secs(86_400 * 100),
        ] {
            assert_eq!(nanos(duration), duration.as_nanos() as f64, "{duration:?}");
        }
    }

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn a_slow_sample_raises_the_estimate_at_once() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(ms(10), Duration::from_secs(10), t0);
        ewma.observe(ms(200), t0 + ms(1));
        assert_eq!(ewma.estimate_ns(t0 + ms(1)), 200.0 * MS);
    }

    #[test]
    fn fast_samples_pull_it_down_with_the_time_constant() {
        let t0 = Instant::now();
        let tau = Duration::from_secs(10);
        let mut ewma = PeakEwma::new(ms(100), tau, t0);
        // One time constant later, a 10 ms sample: the old 100 ms weighs e^-1 once, the
        // sample 1 - e^-1.
        let t1 = t0 + tau;
        ewma.observe(ms(10), t1);
        let w = (-1.0f64).exp();
        let expected = 100.0 * MS * w + 10.0 * MS * (1.0 - w);
        assert!(
            (ewma.estimate_ns(t1) - expected).abs() < 1.0,
            "{}",
            ewma.estimate_ns(t1)
        );
        // Samples at the same instant as the last one have weight 1 on the old estimate
        // (no time passed), so equal samples leave it unchanged.
        let before = ewma.estimate_ns(t1);
        ewma.observe(Duration::from_nanos(before as u64), t1);
        assert!((ewma.estimate_ns(t1) - before).abs() < 2.0);
    }

    #[test]
    fn a_sample_equal_to_the_estimate_leaves_it_unchanged_however_late() {
        // The weights of old estimate and sample sum to 1. With the decay applied twice they
        // would sum to w^2 + 1 - w < 1, and a backend answering exactly at its estimate would
        // look faster with every answer.
        let t0 = Instant::now();
        let tau = Duration::from_secs(10);
        for elapsed in [
            ms(1),
            ms(500),
            Duration::from_secs(10),
            Duration::from_secs(30),
        ] {
            let mut ewma = PeakEwma::new(ms(50), tau, t0);
            ewma.observe(ms(50), t0 + elapsed);
            let estimate = ewma.estimate_ns(t0 + elapsed);
            assert!(
                (estimate - 50.0 * MS).abs() < 1.0,
                "after {elapsed:?}: {} ms",
                estimate / MS
            );
        }
    }

    #[test]
    fn the_time_constant_holds_for_steady_samples_after_a_step_down() {
        // A backend that answered in 100 ms starts answering in 10 ms. With samples arriving
        // at a fixed interval, after one time constant the estimate has covered 1 - 1/e
        // (63.2 %) of the step, whatever the interval.
        let tau = Duration::from_secs(1);
        let (high, low) = (100.0 * MS, 10.0 * MS);
        let expected = 1.0 - (-1.0f64).exp();
        for interval in [ms(1), ms(10), ms(100)] {
            let t0 = Instant::now();
            let mut ewma = PeakEwma::new(ms(100), tau, t0);
            ewma.observe(ms(100), t0);
            let steps = (tau.as_nanos() / interval.as_nanos()) as u32;
            let mut now = t0;
            for _ in 0..steps {
                now += interval;
                ewma.observe(ms(10), now);
            }
            assert_eq!(now - t0, tau);
            let moved = (high - ewma.estimate_ns(now)) / (high - low);
            assert!(
                (moved - expected).abs() <= 0.05 * expected,
                "every {interval:?}: moved {:.1} % of the step in one time constant",
                moved * 100.0
            );
        }
    }

    #[test]
    fn a_slower_sample_never_leaves_a_lower_estimate_than_a_faster_one() {
        // Continuity at the peak threshold: samples between the decayed and the stored
        // estimate must not fall into a gap where the result drops.
        let t0 = Instant::now();
        let tau = Duration::from_secs(1);
        let later = t0 + ms(700);
        let mut previous = 0.0;
        for sample_ms in 0..=200 {
            let mut ewma = PeakEwma::new(ms(100), tau, t0);
            ewma.observe(ms(sample_ms), later);
            let estimate = ewma.estimate_ns(later);
            assert!(
                estimate >= previous,
                "{sample_ms} ms gave {} ms, below {} ms for a faster sample",
                estimate / MS,
                previous / MS
            );
            assert!(
                estimate >= ms(sample_ms).as_nanos() as f64,
                "below the sample"
            );
            previous = estimate;
        }
    }

    #[test]
    fn the_estimate_decays_while_no_sample_arrives() {
        let t0 = Instant::now();
        let tau = Duration::from_secs(10);
        let ewma = PeakEwma::new(ms(1000), tau, t0);
        let later = ewma.estimate_ns(t0 + Duration::from_secs(30));
        assert!((later - 1000.0 * MS * (-3.0f64).exp()).abs() < 1.0);
        assert!(ewma.estimate_ns(t0 + Duration::from_secs(300)) < 1.0);
    }

    #[test]
    fn recovery_returns_to_the_fast_level_within_a_few_time_constants() {
        let t0 = Instant::now();
        let tau = Duration::from_secs(1);
        let mut ewma = PeakEwma::new(ms(5), tau, t0);
        ewma.observe(ms(100), t0);
        // Then a steady 5 ms every 10 ms for 5 s, five time constants: e^-5, under 1 % of
        // the 95 ms step, is left.
        let mut now = t0;
        for _ in 0..500 {
            now += ms(10);
            ewma.observe(ms(5), now);
        }
        let estimate = ewma.estimate_ns(now) / MS;
        assert!((4.0..6.5).contains(&estimate), "{estimate} ms");
    }

    #[test]
    fn the_mean_moves_only_on_samples_and_sparse_samples_weigh_more() {
        let t0 = Instant::now();
        let tau = Duration::from_secs(1);
        let mut mean = MeanEwma::new(ms(5), tau, t0);
        // No decay while nothing is observed, however long.
        assert_eq!(mean.value_ns(), 5.0 * MS);
        // A slow sample after a second of silence weighs 1 - 1/e; the same sample 10 ms
        // after the previous one weighs 1 %.
        mean.observe(ms(100), t0 + Duration::from_secs(1));
        let w = (-1.0f64).exp();
        assert!((mean.value_ns() - (5.0 * w + 100.0 * (1.0 - w)) * MS).abs() < 1.0);
        let mut dense = MeanEwma::new(ms(5), tau, t0);
        dense.observe(ms(100), t0 + ms(10));
        assert!(dense.value_ns() < 6.0 * MS, "{}", dense.value_ns() / MS);
        // Unlike the peak, a fast sample counts as much as a slow one.
        let before = mean.value_ns();
        mean.observe(ms(5), t0 + Duration::from_secs(2));
        assert!(mean.value_ns() < before * 0.5);
        mean.reset(ms(7), t0 + Duration::from_secs(3));
        assert_eq!(mean.value_ns(), 7.0 * MS);
    }

    #[test]
    fn cost_grows_with_load_and_failures_and_shrinks_with_weight_and_penalises_the_unmeasured() {
        let load = |latency_ns, failure_rate, in_flight, samples| Load {
            latency_ns,
            failure_rate,
            in_flight,
            samples,
        };
        assert_eq!(cost(load(10.0, 0.0, 0, 5), 1e9, 1.0), 10.0);
        assert_eq!(cost(load(10.0, 0.0, 3, 5), 1e9, 1.0), 40.0);
        assert_eq!(cost(load(10.0, 0.0, 3, 5), 1e9, 2.0), 20.0);
        // In flight but never answered: the penalty, not the (default) estimate.
        assert_eq!(cost(load(10.0, 0.0, 1, 0), 1e9, 1.0), 2e9);
        // Idle and never measured: the default estimate, so new backends get tried.
        assert_eq!(cost(load(10.0, 0.0, 0, 0), 1e9, 1.0), 10.0);
        // Failing a tenth of its requests adds a tenth of the penalty to each.
        assert_eq!(cost(load(10.0, 0.1, 1, 5), 1000.0, 1.0), 220.0);
    }
}
