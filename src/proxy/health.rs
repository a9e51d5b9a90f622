//! Passive health of one backend: consecutive failures eject it for a cooldown that doubles
//! with each ejection that is not followed by a success, up to a ceiling. When the cooldown
//! ends the backend is tried again; one success clears its record.
//!
//! Pure state and arithmetic on an injected clock (`now`), so every transition is unit-tested
//! without sleeping. The caller logs the transitions it is told about.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use crate::config::HealthSettings;

/// A change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Taken out of rotation for `duration` (the `ejections`-th time in a row).
    Ejected { duration: Duration, ejections: u32 },
    /// Succeeded again after having been ejected.
    Recovered,
    /// Reached the ejection threshold, but the group already has as many backends ejected
    /// as it may: kept in rotation.
    HeldBack,
}

#[derive(Debug, Default)]
struct State {
    /// Failures since the last success (not counting those of requests already in flight
    /// when the backend was ejected). Not reset by an ejection: it is what caused it.
    consecutive_failures: u32,
    /// Ejections since the last success; sets the next cooldown.
    ejections: u32,
    ejected_until: Option<Instant>,
    /// Why the last failure counted, for operators.
    last_failure: Option<&'static str>,
    /// Ejections over the backend's life.
    total_ejections: u64,
    /// The failures reached the threshold, but the group was at its ejection limit: kept
    /// in rotation until a success clears the record or the next failure ejects it.
    held_back: bool,
}

/// What the admin endpoint shows of a backend's passive health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSnapshot {
    pub ejected_for: Option<Duration>,
    /// Failures since the last success; on an ejected backend, those that ejected it.
    pub consecutive_failures: u32,
    /// Reached the ejection threshold while the group was at `max_ejected_percent`.
    pub held_back: bool,
    pub ejections_in_a_row: u32,
    pub total_ejections: u64,
    pub last_failure: Option<&'static str>,
}

/// The lock guards the counters; two atomics mirror what every request asks, so a healthy
/// backend costs no lock per request.
#[derive(Debug)]
pub struct PassiveHealth {
    settings: HealthSettings,
    state: Mutex<State>,
    /// Whether there is anything for a success to clear.
    has_record: AtomicBool,
    /// End of the current ejection in nanoseconds after `epoch`; 0 when not ejected.
    ejected_until_nanos: AtomicU64,
    epoch: Instant,
}

impl PassiveHealth {
    pub fn new(settings: HealthSettings) -> PassiveHealth {
        PassiveHealth {
            settings,
            state: Mutex::new(State::default()),
            has_record: AtomicBool::new(false),
            ejected_until_nanos: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain counters, valid after any panic elsewhere: keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        // 0 means "not ejected", so real instants start at 1.
        (at.saturating_duration_since(self.epoch).as_nanos() as u64).max(1)
    }

    /// Whether the backend may receive requests at `now`.
    pub fn is_available(&self, now: Instant) -> bool {
        let until = self.ejected_until_nanos.load(Ordering::Acquire);
        until == 0 || self.nanos_since_epoch(now) >= until
    }

    pub fn settings(&self) -> &HealthSettings {
        &self.settings
    }

    pub fn snapshot(&self, now: Instant) -> HealthSnapshot {
        let state = self.state();
        HealthSnapshot {
            ejected_for: state
                .ejected_until
                .filter(|&until| now < until)
                .map(|until| until - now),
            consecutive_failures: state.consecutive_failures,
            held_back: state.held_back,
            ejections_in_a_row: state.ejections,
            total_ejections: state.total_ejections,
            last_failure: state.last_failure,
        }
    }

    pub fn record_success(&self) -> Option<Transition> {
        if !self.has_record.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.state();
        let was_ejected = state.ejections > 0;
        *state = State {
            last_failure: state.last_failure,
            total_ejections: state.total_ejections,
            ..State::default()
        };
        self.has_record.store(false, Ordering::Release);
        self.ejected_until_nanos.store(0, Ordering::Release);
        was_ejected.then_some(Transition::Recovered)
    }

    /// A failure at `now`. `may_eject` is the group's say: false when ejecting one more
    /// backend would exceed its share of ejected backends.
    pub fn record_failure(&self, now: Instant, may_eject: bool) -> Option<Transition> {
        self.record_failure_for("failure", now, may_eject)
    }

    /// As [`PassiveHealth::record_failure`], remembering `reason` for the admin endpoint.
    pub fn record_failure_for(
        &self,
        reason: &'static str,
        now: Instant,
        may_eject: bool,
    ) -> Option<Transition> {
        let mut state = self.state();
        state.last_failure = Some(reason);
        if self.settings.max_fails == 0 {
            return None;
        }
        // Failures of requests that were already in flight when the backend was ejected
        // say nothing new: they must not extend the cooldown.
        if state.ejected_until.is_some_and(|until| now < until) {
            return None;
        }
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        self.has_record.store(true, Ordering::Release);
        // A backend on probation after a cooldown goes straight back out on its first failure.
        let threshold = if state.ejections > 0 {
            1
        } else {
            self.settings.max_fails
        };
        if state.consecutive_failures < threshold {
            return None;
        }
        if !may_eject {
            // At or past the threshold: the next failure asks again.
            state.held_back = true;
            return Some(Transition::HeldBack);
        }
        let doublings = state.ejections.min(16);
        let duration = self
            .settings
            .fail_timeout
            .saturating_mul(1 << doublings)
            .min(self.settings.max_fail_timeout);
        state.ejections += 1;
        state.total_ejections += 1;
        state.held_back = false;
        state.ejected_until = Some(now + duration);
        self.ejected_until_nanos
            .store(self.nanos_since_epoch(now + duration), Ordering::Release);
        Some(Transition::Ejected {
            duration,
            ejections: state.ejections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: HealthSettings = HealthSettings {
        max_fails: 3,
        fail_timeout: Duration::from_secs(10),
        max_fail_timeout: Duration::from_secs(35),
    };

    #[test]
    fn consecutive_failures_eject_and_the_cooldown_grows_to_its_ceiling() {
        let health = PassiveHealth::new(SETTINGS);
        let t0 = Instant::now();
        assert_eq!(health.record_failure(t0, true), None);
        assert_eq!(health.record_failure(t0, true), None);
        assert!(health.is_available(t0));
        assert_eq!(
            health.record_failure(t0, true),
            Some(Transition::Ejected {
                duration: Duration::from_secs(10),
                ejections: 1
            })
        );
        assert!(!health.is_available(t0 + Duration::from_secs(9)));
        // The count that ejected it stays on record (it used to read 0 once ejected).
        assert_eq!(health.snapshot(t0).consecutive_failures, 3);
        // In-flight failures during the ejection do not extend it.
        assert_eq!(
            health.record_failure(t0 + Duration::from_secs(5), true),
            None
        );
        let t1 = t0 + Duration::from_secs(10);
        assert!(health.is_available(t1));
        // On probation: one failure is enough, and the cooldown doubles.
        assert_eq!(
            health.record_failure(t1, true),
            Some(Transition::Ejected {
                duration: Duration::from_secs(20),
                ejections: 2
            })
        );
        let t2 = t1 + Duration::from_secs(20);
        assert_eq!(
            health.record_failure(t2, true),
            Some(Transition::Ejected {
                duration: Duration::from_secs(35),
                ejections: 3
            })
        );
    }

    #[test]
    fn a_success_clears_the_record_and_reports_recovery_once() {
        let health = PassiveHealth::new(SETTINGS);
        let t0 = Instant::now();
        health.record_failure(t0, true);
        health.record_failure(t0, true);
        assert_eq!(
            health.record_success(),
            None,
            "never ejected: nothing to report"
        );
        // The count restarted: two more failures do not eject.
        health.record_failure(t0, true);
        health.record_failure(t0, true);
        assert!(health.is_available(t0));
        health.record_failure(t0, true);
        assert!(!health.is_available(t0));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(health.record_success(), Some(Transition::Recovered));
        assert_eq!(health.record_success(), None);
        // Back to a fresh record: three failures again before an ejection of the base length.
        assert_eq!(health.record_failure(later, true), None);
    }

    #[test]
    fn a_group_at_its_ejection_limit_holds_the_backend_back() {
        let health = PassiveHealth::new(SETTINGS);
        let t0 = Instant::now();
        health.record_failure(t0, false);
        health.record_failure(t0, false);
        assert_eq!(health.record_failure(t0, false), Some(Transition::HeldBack));
        assert!(health.is_available(t0));
        let held = health.snapshot(t0);
        assert!(held.held_back);
        assert_eq!(
            held.consecutive_failures, 3,
            "the real count, not max_fails - 1"
        );
        assert_eq!(health.record_failure(t0, false), Some(Transition::HeldBack));
        assert_eq!(health.snapshot(t0).consecutive_failures, 4);
        // Once the group has room, the very next failure ejects.
        assert!(matches!(
            health.record_failure(t0, true),
            Some(Transition::Ejected { .. })
        ));
        assert!(!health.snapshot(t0).held_back);
    }

    #[test]
    fn max_fails_zero_never_ejects() {
        let health = PassiveHealth::new(HealthSettings {
            max_fails: 0,
            ..SETTINGS
        });
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(health.record_failure(t0, true), None);
        }
        assert!(health.is_available(t0));
    }
}
