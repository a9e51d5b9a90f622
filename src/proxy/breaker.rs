//! A circuit breaker per backend, driven by the failure *rate* over a rolling window (the
//! passive ejection next door counts *consecutive* failures, which a backend failing every
//! other request never reaches).
//!
//! Closed: requests flow; outcomes are counted in two half-window buckets. When at least
//! `min_requests` were seen in the window and the failure share reaches `failure_rate`, the
//! breaker opens. Open: no requests for `open_for`. Half-open: at most `trial_requests` in
//! flight; that many successes close it, any failure opens it again.
//!
//! Pure state on an injected clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub use crate::config::BreakerSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BreakerTransition {
    Opened { failure_rate: f64, requests: u32 },
    HalfOpened,
    Closed,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// Closed: (start, requests, failures) of the current and the previous half-window.
    current: Bucket,
    previous: Bucket,
    opened_at: Instant,
    trials_in_flight: u32,
    trial_successes: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    requests: u32,
    failures: u32,
}

impl Bucket {
    fn new(start: Instant) -> Bucket {
        Bucket {
            start,
            requests: 0,
            failures: 0,
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    /// Mirrors `inner.state == Closed`, so choosing among healthy backends (every request,
    /// every candidate) takes no lock.
    closed: AtomicBool,
}

impl Breaker {
    pub fn new(settings: BreakerSettings, now: Instant) -> Breaker {
        Breaker {
            settings,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                current: Bucket::new(now),
                previous: Bucket::new(now),
                opened_at: now,
                trials_in_flight: 0,
                trial_successes: 0,
            }),
            closed: AtomicBool::new(true),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enabled(&self) -> bool {
        self.settings.failure_rate > 0.0
    }

    /// The state at `now` (an open breaker whose time is up reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        let inner = self.inner();
        match inner.state {
            BreakerState::Open if now >= inner.opened_at + self.settings.open_for => {
                BreakerState::HalfOpen
            }
            state => state,
        }
    }

    /// Whether a request may be sent now, without reserving anything (for choosing).
    pub fn allows(&self, now: Instant) -> bool {
        if !self.enabled() || self.closed.load(Ordering::Acquire) {
            return true;
        }
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => self.inner().trials_in_flight < self.settings.trial_requests,
        }
    }

    /// Reserve the right to send a request now. In half-open this takes one of the trial
    /// slots; `None` when the breaker refuses. A refused or finished request must be
    /// reported with [`Breaker::record`].
    pub fn admit(&self, now: Instant) -> Option<(Admission, Option<BreakerTransition>)> {
        if !self.enabled() {
            return Some((Admission::Normal, None));
        }
        let mut inner = self.inner();
        let mut transition = None;
        if inner.state == BreakerState::Open && now >= inner.opened_at + self.settings.open_for {
            inner.state = BreakerState::HalfOpen;
            self.closed.store(false, Ordering::Release);
            inner.trials_in_flight = 0;
            inner.trial_successes = 0;
            transition = Some(BreakerTransition::HalfOpened);
        }
        match inner.state {
            BreakerState::Closed => Some((Admission::Normal, transition)),
            BreakerState::Open => None,
            BreakerState::HalfOpen if inner.trials_in_flight < self.settings.trial_requests => {
                inner.trials_in_flight += 1;
                Some((Admission::Trial, transition))
            }
            BreakerState::HalfOpen => None,
        }
    }

    /// The outcome of an admitted request.
    pub fn record(
        &self,
        admission: Admission,
        success: bool,
        now: Instant,
    ) -> Option<BreakerTransition> {
        if !self.enabled() {
            return None;
        }
        let settings = self.settings;
        let mut inner = self.inner();
        if admission == Admission::Probe && inner.state == BreakerState::Open {
            // A probe past an open breaker (adaptive groups probe backends out of the race):
            // a success ends the open time early, and the trials decide as usual; a failure
            // starts it again.
            if success {
                inner.state = BreakerState::HalfOpen;
                inner.trials_in_flight = 0;
                inner.trial_successes = 0;
                return Some(BreakerTransition::HalfOpened);
            }
            inner.opened_at = now;
            return None;
        }
        if admission == Admission::Trial && inner.state == BreakerState::HalfOpen {
            inner.trials_in_flight = inner.trials_in_flight.saturating_sub(1);
            if !success {
                inner.state = BreakerState::Open;
                self.closed.store(false, Ordering::Release);
                inner.opened_at = now;
                return Some(BreakerTransition::Opened {
                    failure_rate: 1.0,
                    requests: inner.trial_successes + 1,
                });
            }
            inner.trial_successes += 1;
            if inner.trial_successes >= settings.trial_requests {
                inner.state = BreakerState::Closed;
                self.closed.store(true, Ordering::Release);
                inner.current = Bucket::new(now);
                inner.previous = Bucket::new(now);
                return Some(BreakerTransition::Closed);
            }
            return None;
        }
        if inner.state != BreakerState::Closed {
            // A request admitted before the breaker opened: its outcome is old news.
            return None;
        }
        let half = settings.window / 2;
        if now >= inner.current.start + half {
            // Roll: the current bucket becomes the previous one; a long silence empties both.
            inner.previous = if now >= inner.current.start + settings.window {
                Bucket::new(now)
            } else {
                inner.current
            };
            inner.current = Bucket::new(now);
        }
        inner.current.requests += 1;
        inner.current.failures += u32::from(!success);
        let requests = inner.current.requests + inner.previous.requests;
        let failures = inner.current.failures + inner.previous.failures;
        let rate = f64::from(failures) / f64::from(requests.max(1));
        if requests >= settings.min_requests && rate >= settings.failure_rate {
            inner.state = BreakerState::Open;
            self.closed.store(false, Ordering::Release);
            inner.opened_at = now;
            return Some(BreakerTransition::Opened {
                failure_rate: rate,
                requests,
            });
        }
        None
    }
}

/// How a request got past the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Normal,
    /// One of the half-open state's trial requests.
    Trial,
    /// A probe, sent whatever the state (an adaptive group probes backends it keeps out of
    /// the race, an open breaker's among them). Not reserved with [`Breaker::admit`].
    Probe,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SETTINGS: BreakerSettings = BreakerSettings {
        failure_rate: 0.5,
        min_requests: 10,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(5),
        trial_requests: 2,
    };

    fn record_many(breaker: &Breaker, now: Instant, outcomes: &[bool]) -> Vec<BreakerTransition> {
        outcomes
            .iter()
            .filter_map(|&ok| {
                let (admission, _) = breaker.admit(now)?;
                breaker.record(admission, ok, now)
            })
            .collect()
    }

    #[test]
    fn a_failure_rate_at_the_threshold_opens_it_only_after_min_requests() {
        let t0 = Instant::now();
        let breaker = Breaker::new(SETTINGS, t0);
        // Alternating success and failure: 50 %, never two failures in a row.
        let alternating: Vec<bool> = (0..9).map(|i| i % 2 == 0).collect();
        assert!(
            record_many(&breaker, t0, &alternating).is_empty(),
            "9 < min_requests"
        );
        let opened = record_many(&breaker, t0, &[false]);
        assert!(matches!(
            opened[..],
            [BreakerTransition::Opened { requests: 10, .. }]
        ));
        assert_eq!(breaker.state(t0), BreakerState::Open);
        assert!(!breaker.allows(t0) && breaker.admit(t0).is_none());
    }

    #[test]
    fn a_healthy_rate_keeps_it_closed_and_old_failures_age_out() {
        let t0 = Instant::now();
        let breaker = Breaker::new(SETTINGS, t0);
        let mostly_ok: Vec<bool> = (0..100).map(|i| i % 5 != 0).collect();
        assert!(record_many(&breaker, t0, &mostly_ok).is_empty());
        // Failures 20 s ago are out of the window: 9 fresh failures alone are too few.
        let t1 = t0 + Duration::from_secs(20);
        assert!(record_many(&breaker, t1, &[false; 9]).is_empty());
        assert_eq!(breaker.state(t1), BreakerState::Closed);
    }

    #[test]
    fn half_open_admits_limited_trials_then_closes_or_reopens() {
        let t0 = Instant::now();
        let breaker = Breaker::new(SETTINGS, t0);
        record_many(&breaker, t0, &[false; 10]);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(breaker.state(t1), BreakerState::HalfOpen);
        let (first, transition) = breaker.admit(t1).unwrap();
        assert_eq!(
            (first, transition),
            (Admission::Trial, Some(BreakerTransition::HalfOpened))
        );
        let (second, _) = breaker.admit(t1).unwrap();
        assert!(breaker.admit(t1).is_none(), "only two trials at once");
        assert_eq!(breaker.record(first, true, t1), None);
        assert_eq!(
            breaker.record(second, true, t1),
            Some(BreakerTransition::Closed)
        );
        assert_eq!(breaker.state(t1), BreakerState::Closed);

        // Again, and this time a trial fails: open for another period.
        record_many(&breaker, t1, &[false; 10]);
        let t2 = t1 + Duration::from_secs(5);
        let (trial, _) = breaker.admit(t2).unwrap();
        assert!(matches!(
            breaker.record(trial, false, t2),
            Some(BreakerTransition::Opened { .. })
        ));
        assert!(!breaker.allows(t2 + Duration::from_secs(4)));
        assert!(breaker.allows(t2 + Duration::from_secs(5)));
    }

    #[test]
    fn a_probe_that_succeeds_ends_the_open_time_early_and_one_that_fails_restarts_it() {
        let t0 = Instant::now();
        let breaker = Breaker::new(SETTINGS, t0);
        record_many(&breaker, t0, &[false; 10]);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(breaker.record(Admission::Probe, false, t1), None);
        // Open for the full 5 s from the failed probe, not from the opening.
        assert!(!breaker.allows(t1 + Duration::from_millis(4_900)));
        assert!(breaker.allows(t1 + Duration::from_secs(5)));
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(
            breaker.record(Admission::Probe, true, t2),
            Some(BreakerTransition::HalfOpened)
        );
        assert_eq!(breaker.state(t2), BreakerState::HalfOpen);
        // Then the trials decide, as after an open time.
        let (first, _) = breaker.admit(t2).unwrap();
        let (second, _) = breaker.admit(t2).unwrap();
        assert_eq!(first, Admission::Trial);
        breaker.record(first, true, t2);
        assert_eq!(
            breaker.record(second, true, t2),
            Some(BreakerTransition::Closed)
        );
        // A probe of a closed breaker counts like any request.
        assert_eq!(breaker.record(Admission::Probe, true, t2), None);
    }

    #[test]
    fn a_zero_rate_disables_it() {
        let t0 = Instant::now();
        let breaker = Breaker::new(
            BreakerSettings {
                failure_rate: 0.0,
                ..SETTINGS
            },
            t0,
        );
        assert!(record_many(&breaker, t0, &[false; 100]).is_empty());
        assert!(breaker.allows(t0));
    }
}
