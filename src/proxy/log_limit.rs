//! Which repeated backend-failure warnings reach the log. When a backend is down every
//! request meets the same failure again (a connect refused per backend, then "no backend
//! could take the request"), and a warning per request buries everything else. So the first
//! failure per (backend, reason) in a window is logged and the rest of that window only
//! counted; the next one logged carries the count (`suppressed`). Ejection and recovery are
//! logged where they happen, once per transition, and are not limited here.
//!
//! [`LogLimiter`] is the pure core, with the clock passed in; [`admit_failure`] is the
//! process-wide instance the proxy asks.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::limits::{FAILURE_LOG_WINDOW, MAX_FAILURE_LOG_KEYS};

/// What to do with one occurrence of a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it; `suppressed` occurrences of the same key were held back since the last one
    /// logged.
    Log { suppressed: u64 },
    /// Hold it back; it is counted into the next `Log`.
    Suppress,
}

/// At most one logged occurrence per key per `window`, counting the rest.
#[derive(Debug)]
pub struct LogLimiter<K> {
    window: Duration,
    /// Keys tracked at most: beyond it, keys whose window has passed are forgotten, and if
    /// none has, a new key is logged untracked rather than growing the map.
    max_keys: usize,
    keys: HashMap<K, Logged>,
}

#[derive(Debug)]
struct Logged {
    /// When the key was last logged: its window runs from here.
    at: Instant,
    suppressed: u64,
}

impl<K: Hash + Eq> LogLimiter<K> {
    pub fn new(window: Duration, max_keys: usize) -> LogLimiter<K> {
        LogLimiter {
            window,
            max_keys,
            keys: HashMap::new(),
        }
    }

    /// Whether the occurrence of `key` at `now` is logged.
    pub fn admit(&mut self, key: K, now: Instant) -> Admit {
        let window = self.window;
        let within_window = |logged: &Logged| now.saturating_duration_since(logged.at) < window;
        if let Some(logged) = self.keys.get_mut(&key) {
            if within_window(logged) {
                logged.suppressed = logged.suppressed.saturating_add(1);
                return Admit::Suppress;
            }
            logged.at = now;
            return Admit::Log {
                suppressed: std::mem::take(&mut logged.suppressed),
            };
        }
        if self.keys.len() >= self.max_keys {
            self.keys.retain(|_, logged| within_window(logged));
            if self.keys.len() >= self.max_keys {
                return Admit::Log { suppressed: 0 };
            }
        }
        self.keys.insert(
            key,
            Logged {
                at: now,
                suppressed: 0,
            },
        );
        Admit::Log { suppressed: 0 }
    }
}

static FAILURES: LazyLock<Mutex<LogLimiter<(String, &'static str)>>> =
    LazyLock::new(|| Mutex::new(LogLimiter::new(FAILURE_LOG_WINDOW, MAX_FAILURE_LOG_KEYS)));

/// `Some(suppressed)` when this failure of `subject` (a backend's address, or a group's
/// name for group-wide failures) for `reason` is to be logged now. Only failures take the
/// lock, for the length of one map lookup.
pub(super) fn admit_failure(subject: &str, reason: &'static str) -> Option<u64> {
    let mut limiter = FAILURES.lock().unwrap_or_else(PoisonError::into_inner);
    match limiter.admit((subject.to_owned(), reason), Instant::now()) {
        Admit::Log { suppressed } => Some(suppressed),
        Admit::Suppress => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn the_first_per_window_is_logged_and_the_next_one_logged_carries_the_count() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(WINDOW, 16);
        assert_eq!(limiter.admit("a", start), Admit::Log { suppressed: 0 });
        for millis in [1, 5_000, 9_999] {
            assert_eq!(limiter.admit("a", at(start, millis)), Admit::Suppress);
        }
        assert_eq!(
            limiter.admit("a", at(start, 10_000)),
            Admit::Log { suppressed: 3 }
        );
        // The window restarts at the line just logged, and the count with it.
        assert_eq!(limiter.admit("a", at(start, 19_999)), Admit::Suppress);
        assert_eq!(
            limiter.admit("a", at(start, 20_000)),
            Admit::Log { suppressed: 1 }
        );
        assert_eq!(
            limiter.admit("a", at(start, 60_000)),
            Admit::Log { suppressed: 0 }
        );
    }

    #[test]
    fn keys_are_limited_independently() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(WINDOW, 16);
        assert_eq!(
            limiter.admit(("10.0.0.1:80", "connect"), start),
            Admit::Log { suppressed: 0 }
        );
        assert_eq!(
            limiter.admit(("10.0.0.2:80", "connect"), start),
            Admit::Log { suppressed: 0 }
        );
        assert_eq!(
            limiter.admit(("10.0.0.1:80", "timeout"), start),
            Admit::Log { suppressed: 0 }
        );
        assert_eq!(
            limiter.admit(("10.0.0.1:80", "connect"), start),
            Admit::Suppress
        );
    }

    #[test]
    fn a_clock_going_backwards_suppresses_rather_than_panics() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut limiter = LogLimiter::new(WINDOW, 16);
        limiter.admit("a", start);
        assert_eq!(
            limiter.admit("a", start - Duration::from_secs(1)),
            Admit::Suppress
        );
    }

    #[test]
    fn a_full_map_forgets_expired_keys_and_never_grows_past_its_cap() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(WINDOW, 2);
        limiter.admit(1, start);
        limiter.admit(2, at(start, 5_000));
        // Full, nothing expired: logged, untracked.
        assert_eq!(
            limiter.admit(3, at(start, 6_000)),
            Admit::Log { suppressed: 0 }
        );
        assert_eq!(
            limiter.admit(3, at(start, 6_001)),
            Admit::Log { suppressed: 0 }
        );
        assert_eq!(limiter.keys.len(), 2);
        // Key 1's window has passed: it makes room for 3, which is then limited.
        assert_eq!(
            limiter.admit(3, at(start, 10_000)),
            Admit::Log { suppressed: 0 }
        );
        assert_eq!(limiter.admit(3, at(start, 10_001)), Admit::Suppress);
        assert_eq!(limiter.keys.len(), 2);
    }
}
