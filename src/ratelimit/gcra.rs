//! PURE: the Generic Cell Rate Algorithm on integer nanoseconds. One number per client (the
//! theoretical arrival time, TAT) holds its whole state; the clock is passed in, so the
//! algorithm is tested without waiting and cannot drift: there is no float anywhere, and
//! the admitted count over any window is `window / period` plus the burst, exactly.

/// Nanoseconds in one second: the unit `requests_per_second` is divided into.
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// One rate: a request every `period` on average, up to `burst` more at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Nanoseconds between requests at the sustained rate (the emission interval).
    period: u64,
    /// How far ahead of the clock a client's TAT may run: `burst × period`.
    tolerance: u64,
}

/// What one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// The TAT to store: advanced by one period when allowed, unchanged when not.
    pub tat: u64,
    /// Requests the client could still send at once after this one.
    pub remaining: u64,
    /// Nanoseconds until the client's whole burst is available again.
    pub reset_after: u64,
    /// Nanoseconds until the next request would be allowed (0 when allowed).
    pub retry_after: u64,
}

impl Gcra {
    /// `requests_per_second` (at least 1; validated with the config) and `burst` extra
    /// requests at once. The period is rounded down to whole nanoseconds: at most one
    /// part in a billion faster than configured at 1 req/s, which no window can show.
    pub fn new(requests_per_second: u32, burst: u32) -> Gcra {
        let period = NANOS_PER_SECOND / u64::from(requests_per_second.max(1));
        Gcra {
            period,
            tolerance: period.saturating_mul(u64::from(burst)),
        }
    }

    /// The emission interval in nanoseconds.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// Requests a fresh client may send at once: the burst plus the one the rate allows.
    pub fn capacity(&self) -> u64 {
        self.tolerance / self.period.max(1) + 1
    }

    /// Decide a request arriving at `now` from a client whose stored TAT is `tat` (`None`
    /// when the client is unknown or forgotten, which is the same as a TAT in the past).
    pub fn decide(&self, tat: Option<u64>, now: u64) -> Outcome {
        let tat = tat.map_or(now, |tat| tat.max(now));
        // How far the client has run ahead of the sustained rate.
        let backlog = tat - now;
        if backlog > self.tolerance {
            return Outcome {
                allowed: false,
                tat,
                remaining: 0,
                reset_after: backlog,
                retry_after: backlog - self.tolerance,
            };
        }
        let after = backlog.saturating_add(self.period);
        Outcome {
            allowed: true,
            tat: now.saturating_add(after),
            remaining: (self.tolerance - backlog) / self.period.max(1),
            reset_after: after,
            retry_after: 0,
        }
    }

    /// Whether a stored TAT still says anything at `now`: one in the past is the same as no
    /// entry at all, so it can be dropped.
    pub fn is_idle(tat: u64, now: u64) -> bool {
        tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = NANOS_PER_SECOND;

    /// Offer a request every `gap` ns from `start` for `duration` ns; count the allowed.
    fn offer(gcra: &Gcra, tat: &mut Option<u64>, start: u64, gap: u64, duration: u64) -> u64 {
        let mut allowed = 0;
        let mut now = start;
        while now < start + duration {
            let outcome = gcra.decide(*tat, now);
            *tat = Some(outcome.tat);
            allowed += u64::from(outcome.allowed);
            now += gap;
        }
        allowed
    }

    #[test]
    fn a_fresh_client_gets_its_burst_plus_one_at_once_then_waits_one_period() {
        let gcra = Gcra::new(10, 4);
        let mut tat = None;
        for i in 0..5 {
            let outcome = gcra.decide(tat, 0);
            assert!(outcome.allowed, "request {i}");
            assert_eq!(outcome.remaining, 4 - i);
            tat = Some(outcome.tat);
        }
        let refused = gcra.decide(tat, 0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, SECOND / 10);
        assert_eq!(
            refused.tat,
            tat.unwrap_or_default(),
            "a refusal costs nothing"
        );
        assert!(gcra.decide(tat, SECOND / 10).allowed);
    }

    #[test]
    fn a_client_under_the_rate_is_never_refused() {
        let gcra = Gcra::new(100, 0);
        let mut tat = None;
        // 99 req/s for an hour of simulated time.
        let gap = SECOND / 99;
        let allowed = offer(&gcra, &mut tat, 0, gap, 3600 * SECOND);
        let offered = (3600 * SECOND).div_ceil(gap);
        assert_eq!(allowed, offered);
        // Exactly at the rate, with no burst, is not refused either.
        let mut tat = None;
        let allowed = offer(&gcra, &mut tat, 0, SECOND / 100, 10 * SECOND);
        assert_eq!(allowed, 1000);
    }

    #[test]
    fn a_client_over_the_rate_gets_exactly_the_rate_and_burst_per_window() {
        let gcra = Gcra::new(50, 10);
        let mut tat = None;
        // Three times the rate for 10 s: 50 × 10 plus the burst and the first one.
        let allowed = offer(&gcra, &mut tat, 0, SECOND / 150, 10 * SECOND);
        let expected = 50 * 10 + 11;
        assert!(allowed.abs_diff(expected) <= 1, "{allowed} vs {expected}");
        // And in the next 10 s, with the burst spent, the rate alone.
        let allowed = offer(&gcra, &mut tat, 10 * SECOND, SECOND / 150, 10 * SECOND);
        assert!(allowed.abs_diff(500) <= 1, "{allowed}");
    }

    #[test]
    fn no_drift_over_hours() {
        // 7 does not divide a second: the period is rounded, and still an hour at twice
        // the rate admits the rate's count to within one request.
        let gcra = Gcra::new(7, 0);
        let mut tat = None;
        let hour = 3600 * SECOND;
        let allowed = offer(&gcra, &mut tat, 5 * hour, SECOND / 14, hour);
        assert!(allowed.abs_diff(7 * 3600) <= 1, "{allowed}");
    }

    #[test]
    fn a_throttled_client_recovers_as_soon_as_its_rate_drops() {
        let gcra = Gcra::new(10, 2);
        let mut tat = None;
        offer(&gcra, &mut tat, 0, SECOND / 100, 5 * SECOND);
        // Now at the rate: from the first request after one period, nothing is refused.
        let start = 5 * SECOND + SECOND / 10;
        let allowed = offer(&gcra, &mut tat, start, SECOND / 10, 5 * SECOND);
        assert_eq!(allowed, 50);
    }

    #[test]
    fn the_full_burst_returns_after_capacity_periods() {
        let gcra = Gcra::new(4, 3);
        assert_eq!(gcra.capacity(), 4);
        let mut tat = None;
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            let outcome = gcra.decide(tat, 0);
            tat = Some(outcome.tat);
            outcomes.push(outcome);
        }
        let last = outcomes[3];
        assert!(last.allowed);
        assert_eq!(last.reset_after, SECOND);
        assert!(Gcra::is_idle(last.tat, SECOND));
        assert!(!Gcra::is_idle(last.tat, SECOND - 1));
        assert_eq!(gcra.decide(tat, SECOND).remaining, 3);
    }

    #[test]
    fn extreme_settings_do_not_overflow() {
        let gcra = Gcra::new(1, u32::MAX);
        let outcome = gcra.decide(Some(u64::MAX), u64::MAX - 1);
        assert!(outcome.allowed);
        let gcra = Gcra::new(u32::MAX, 0);
        assert!(gcra.decide(None, u64::MAX).allowed);
    }
}
