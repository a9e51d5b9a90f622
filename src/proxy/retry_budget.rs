//! A retry budget per upstream group: retries may add at most `ratio` extra requests over
//! roughly the last `window`, plus a small floor per second so a quiet group can still retry.
//! A sick pool then gets a bounded trickle of retries instead of a storm.
//!
//! Tokens: each first attempt deposits `ratio`; each retry withdraws one; the balance decays
//! with time constant `window` (so deposits expire), and `min_per_sec` tokens accrue per
//! second up to a floor of the same size. Pure arithmetic on an injected clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub use crate::config::RetryBudgetSettings;

#[derive(Debug)]
pub struct RetryBudget {
    settings: RetryBudgetSettings,
    state: Mutex<(f64, f64, Instant)>,
    /// First attempts not yet folded into `state`: counted with one atomic add per request,
    /// settled under the lock when a retry asks or at most every second.
    pending_deposits: AtomicU64,
    /// Milliseconds after `epoch` of the last settlement.
    settled_ms: AtomicU64,
    epoch: Instant,
}

impl RetryBudget {
    pub fn new(settings: RetryBudgetSettings, now: Instant) -> RetryBudget {
        // Start with the floor so the first failures can be retried.
        RetryBudget {
            settings,
            state: Mutex::new((0.0, settings.min_per_sec, now)),
            pending_deposits: AtomicU64::new(0),
            settled_ms: AtomicU64::new(0),
            epoch: now,
        }
    }

    /// Bring both balances to `now`: deposits decay, the floor refills.
    fn advance(&self, state: &mut (f64, f64, Instant), now: Instant) {
        let elapsed = now.saturating_duration_since(state.2).as_secs_f64();
        let window = self.settings.window.as_secs_f64().max(1e-3);
        state.0 *= (-elapsed / window).exp();
        state.1 = (state.1 + elapsed * self.settings.min_per_sec).min(self.settings.min_per_sec);
        state.2 = now;
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Fold pending deposits in, as if made at the last settlement (at most a second ago
    /// while traffic flows), then bring the balances to `now`.
    fn settle(&self, state: &mut (f64, f64, Instant), now: Instant) {
        let pending = self.pending_deposits.swap(0, Ordering::Relaxed);
        state.0 += pending as f64 * self.settings.ratio;
        self.advance(state, now);
        self.settled_ms.store(self.ms(now), Ordering::Relaxed);
    }

    /// A first attempt was made.
    pub fn deposit(&self, now: Instant) {
        self.pending_deposits.fetch_add(1, Ordering::Relaxed);
        if self.ms(now) >= self.settled_ms.load(Ordering::Relaxed) + 1000 {
            if let Ok(mut state) = self.state.try_lock() {
                self.settle(&mut state, now);
            }
        }
    }

    /// May a retry be made now? Takes one token when it may.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.settle(&mut state, now);
        if state.0 >= 1.0 {
            state.0 -= 1.0;
            true
        } else if state.1 >= 1.0 {
            state.1 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SETTINGS: RetryBudgetSettings = RetryBudgetSettings {
        ratio: 0.2,
        min_per_sec: 3.0,
        window: Duration::from_secs(10),
    };

    #[test]
    fn retries_are_limited_to_the_ratio_plus_the_floor() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(SETTINGS, t0);
        // 1000 requests in one instant, each wanting a retry: 20 % plus the floor of 3.
        let mut allowed = 0;
        for _ in 0..1000 {
            budget.deposit(t0);
            allowed += usize::from(budget.try_withdraw(t0));
        }
        assert_eq!(allowed, 203);
    }

    #[test]
    fn the_floor_refills_and_old_deposits_expire() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(SETTINGS, t0);
        for _ in 0..100 {
            budget.deposit(t0);
        }
        // A minute later the deposits (20 tokens) have decayed away; only the floor is left.
        let t1 = t0 + Duration::from_secs(60);
        let allowed = (0..10).filter(|_| budget.try_withdraw(t1)).count();
        assert_eq!(allowed, 3);
        assert!(!budget.try_withdraw(t1));
        assert!(
            budget.try_withdraw(t1 + Duration::from_millis(400)),
            "1.2 tokens refilled"
        );
    }
}
