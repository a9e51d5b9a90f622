//! The decaying share of a backend's recent requests that failed, for the adaptive cost. Kept
//! apart from the latency estimate: a failure used to be recorded there as a 1 s latency
//! sample, and the peak EWMA, which takes a slow sample at once and let it go with a 10 s
//! time constant then, held a backend that had failed for a moment at 1 s for most of a
//! minute (issue 16, phase D: the healed backend got 10 % of the traffic instead of a third).
//!
//! The rate is a time-weighted EWMA of outcomes (1 for a failure, 0 for a success) with its
//! own, short time constant: an outcome arriving `Δt` after the previous one turns the rate
//! `r` into `r·w + x·(1 − w)`, `w = exp(−Δt/τ)`. It is symmetric (unlike the peak latency
//! estimate): successes pull it down exactly as fast as failures push it up, so a backend
//! that answers well again is back to a clean record within a few `τ`, whatever its request
//! rate. Like the latency estimate, it also decays toward zero while no outcome arrives,
//! evaluated when read and not stored, so a backend that failed and was then avoided is tried
//! again after a while instead of being avoided for ever.
//!
//! Pure arithmetic on an injected clock.

use std::time::{Duration, Instant};

use super::ewma::decay_weight;

#[derive(Debug, Clone, Copy)]
pub struct FailureRate {
    rate: f64,
    stamp: Instant,
    tau_ns: f64,
}

impl FailureRate {
    /// A clean record at `now`, decaying with time constant `tau`.
    pub fn new(tau: Duration, now: Instant) -> FailureRate {
        FailureRate {
            rate: 0.0,
            stamp: now,
            tau_ns: (tau.as_nanos() as f64).max(1.0),
        }
    }

    /// Weight of the stored rate after `now - stamp` has passed.
    fn weight(&self, now: Instant) -> f64 {
        decay_weight(self.stamp, now, self.tau_ns)
    }

    /// Record the outcome of one request, finished at `now`. The time since the previous
    /// outcome is credited to this one, so one failure after a long quiet spell weighs
    /// almost 1 (the backend was tried again and still fails) and one among many weighs its
    /// share of the time.
    pub fn observe(&mut self, failed: bool, now: Instant) {
        let w = self.weight(now);
        let outcome = if failed { 1.0 } else { 0.0 };
        self.rate = self.rate * w + outcome * (1.0 - w);
        self.stamp = now;
    }

    /// The rate at `now`, in `0..=1`, decayed for the time since the last outcome.
    pub fn rate(&self, now: Instant) -> f64 {
        self.rate * self.weight(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = Duration::from_millis(400);

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn a_failure_after_a_quiet_spell_raises_the_rate_almost_to_one() {
        let t0 = Instant::now();
        let mut rate = FailureRate::new(TAU, t0);
        assert_eq!(rate.rate(t0), 0.0);
        rate.observe(true, t0 + Duration::from_secs(10));
        assert!(rate.rate(t0 + Duration::from_secs(10)) > 0.999);
    }

    #[test]
    fn steady_outcomes_settle_at_the_failing_share() {
        // Every other request fails, one every 10 ms: the rate settles at a half (within the
        // wobble of the last outcome's 10 ms worth, 1 - e^(-10/400) = 2.5 %).
        let t0 = Instant::now();
        let mut rate = FailureRate::new(TAU, t0);
        let mut now = t0;
        for i in 0..1000 {
            now += ms(10);
            rate.observe(i % 2 == 0, now);
        }
        let settled = rate.rate(now);
        assert!((settled - 0.5).abs() < 0.02, "{settled}");
    }

    #[test]
    fn successes_bring_it_down_with_the_time_constant_whatever_their_rate() {
        for interval in [ms(1), ms(10), ms(100)] {
            let t0 = Instant::now();
            let mut rate = FailureRate::new(TAU, t0);
            rate.observe(true, t0 + Duration::from_secs(10));
            let start = t0 + Duration::from_secs(10);
            let mut now = start;
            while now < start + Duration::from_secs(2) {
                now += interval;
                rate.observe(false, now);
            }
            // Five time constants: e^-5 of the failure is left, whatever the spacing.
            let left = rate.rate(now);
            let expected = (-5.0f64).exp();
            assert!(
                (left - expected).abs() < 0.001,
                "every {interval:?}: {left}, expected {expected}"
            );
        }
    }

    #[test]
    fn the_rate_decays_while_no_outcome_arrives_without_being_stored() {
        let t0 = Instant::now();
        let mut rate = FailureRate::new(TAU, t0);
        rate.observe(true, t0 + Duration::from_secs(10));
        let then = t0 + Duration::from_secs(10);
        let later = rate.rate(then + TAU);
        assert!((later - (-1.0f64).exp()).abs() < 0.001, "{later}");
        // Reading did not move the stamp: a success one τ later weighs 1 - 1/e, as if the
        // reading had never happened.
        rate.observe(false, then + TAU);
        assert!((rate.rate(then + TAU) - (-1.0f64).exp()).abs() < 0.001);
    }
}
