//! What the balancer believes about one backend and why: passive ejection, the active health
//! check, the circuit breaker, the group's ejection limit and (in adaptive groups) the
//! latency-outlier rule and probes combined into one state and one sentence, by the same
//! rules the pick follows. Pure: it reads the snapshots of a backend's
//! state taken at one `now`; `Upstream::standings` gathers them and the admin endpoint only
//! serializes the result.

use std::fmt::Write;

use super::active::ActiveSnapshot;
use super::breaker::BreakerState;
use super::health::HealthSnapshot;
use crate::balance::outlier::Outlier;

/// One backend's state, in the order of precedence: when several hold, the first one named
/// here is the state and the reason lists the others after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// The active health check marked it down (`fall` failed probes in a row): out of
    /// rotation until `rise` good probes in a row.
    Down,
    /// Passive health ejected it (`max_fails` failures in a row) for a cooldown.
    Ejected,
    /// Its circuit breaker is open (the failure rate over the window reached the
    /// threshold): no requests until the open time is up.
    BreakerOpen,
    /// The breaker's open time is up: a few trial requests decide whether it closes. In
    /// rotation for those trials only.
    HalfOpen,
    /// Its failures in a row reached `max_fails`, but the group already has as many backends
    /// ejected as `max_ejected_percent` allows: kept in rotation although failing.
    KeptByEjectionLimit,
    /// Adaptive groups: its typical latency is far above the others', so it is out of the
    /// cost race and gets probes only, until a probe's answer brings it back under the bar.
    Probing,
    /// In rotation and nothing holds against it.
    Healthy,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Down => "down",
            BackendState::Ejected => "ejected",
            BackendState::BreakerOpen => "breaker_open",
            BackendState::HalfOpen => "half_open",
            BackendState::KeptByEjectionLimit => "kept_by_ejection_limit",
            BackendState::Probing => "probing",
            BackendState::Healthy => "healthy",
        }
    }
}

/// The verdict on one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    pub state: BackendState,
    /// Why, in a sentence: every condition that holds, the state's own first.
    pub reason: String,
    /// Whether a pick may choose it now: it is healthy, half-open or kept by the ejection
    /// limit, or the group fails open (no backend passes every filter, so all are tried).
    pub in_rotation: bool,
    /// The most probes a second it gets while out of the race; `None` when not probed.
    pub probe_rate: Option<f64>,
}

/// Everything the verdict depends on, read at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Signals<'a> {
    pub passive: &'a HealthSnapshot,
    /// `proxy.max_fails` of the backend's group (0: passive ejection is off).
    pub max_fails: u32,
    pub breaker: BreakerState,
    /// Whether the breaker admits a request now (a half-open breaker with every trial slot
    /// taken does not).
    pub breaker_admits: bool,
    /// `None` when the group has no active checks.
    pub active: Option<&'a ActiveSnapshot>,
    pub max_ejected_percent: u32,
    /// No backend of the group passes every filter: the pick ignores them all.
    pub group_fails_open: bool,
    /// Adaptive groups: the latency-outlier rule's verdict against it, among the backends
    /// that pass every filter.
    pub outlier: Option<Outlier>,
    /// Adaptive groups: the most probes a second it gets while out of the race (a latency
    /// outlier, or ejected or its breaker open); `None` when it is not probed.
    pub probe_rate: Option<f64>,
}

/// The state, reason and rotation of one backend from its `signals`.
pub fn judge(signals: &Signals<'_>) -> Standing {
    let mut conditions: Vec<(BackendState, String)> = Vec::new();
    let passive = signals.passive;
    let last_failure = passive
        .last_failure
        .map_or_else(String::new, |reason| format!(" (last: {reason})"));
    if let Some(active) = signals.active.filter(|a| !a.healthy) {
        let error = active
            .last_error
            .as_deref()
            .map_or_else(String::new, |error| format!(", last: {error}"));
        conditions.push((
            BackendState::Down,
            format!(
                "active health check down: {} failed probes in a row (fall {}){error}",
                active.failures_in_a_row, active.fall
            ),
        ));
    }
    if let Some(left) = passive.ejected_for {
        conditions.push((
            BackendState::Ejected,
            format!(
                "ejected for {:.1} s more after {} failures in a row{last_failure}",
                left.as_secs_f64(),
                passive.consecutive_failures
            ),
        ));
    }
    match signals.breaker {
        BreakerState::Open => conditions.push((
            BackendState::BreakerOpen,
            "circuit breaker open: its failure rate reached the threshold".into(),
        )),
        BreakerState::HalfOpen => conditions.push((
            BackendState::HalfOpen,
            "circuit breaker half-open: trial requests decide whether it closes".into(),
        )),
        BreakerState::Closed => {}
    }
    if passive.held_back && passive.ejected_for.is_none() {
        conditions.push((
            BackendState::KeptByEjectionLimit,
            format!(
                "{} failures in a row{last_failure} reached max_fails ({}), but the group \
                 already has as many backends ejected as max_ejected_percent ({}%) allows: \
                 kept in rotation",
                passive.consecutive_failures, signals.max_fails, signals.max_ejected_percent
            ),
        ));
    }
    if let Some(outlier) = signals.outlier {
        conditions.push((
            BackendState::Probing,
            format!(
                "latency estimate {:.1} ms is {:.1}× the group median {:.1} ms; probe rate {:.1}/s",
                outlier.latency_ns / 1e6,
                outlier.ratio(),
                outlier.median_ns / 1e6,
                signals.probe_rate.unwrap_or(0.0)
            ),
        ));
    }
    // Pushed in the order of precedence, so the first is the state.
    let state = conditions
        .first()
        .map_or(BackendState::Healthy, |(state, _)| *state);
    let mut reason = conditions
        .iter()
        .map(|(_, why)| why.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if state == BackendState::Healthy {
        reason.push_str("in rotation");
        if passive.ejections_in_a_row > 0 {
            // Ejected before and not yet succeeded since: one failure ejects it again.
            reason.push_str(" on probation after an ejection");
        } else if passive.consecutive_failures > 0 && signals.max_fails > 0 {
            let _ = write!(
                reason,
                "; {} of max_fails ({}) failures in a row{last_failure}",
                passive.consecutive_failures, signals.max_fails
            );
        }
    }
    if signals.outlier.is_none()
        && matches!(state, BackendState::Ejected | BackendState::BreakerOpen)
    {
        if let Some(rate) = signals.probe_rate {
            let _ = write!(
                reason,
                "; probe rate {rate:.1}/s: a probe that succeeds brings it back"
            );
        }
    }
    let selectable = match state {
        BackendState::Down
        | BackendState::Ejected
        | BackendState::BreakerOpen
        | BackendState::Probing => false,
        BackendState::HalfOpen => signals.breaker_admits,
        BackendState::KeptByEjectionLimit | BackendState::Healthy => true,
    };
    if !selectable && signals.group_fails_open {
        reason.push_str(
            "; no backend of the group is available, so the group fails open and tries it anyway",
        );
    }
    Standing {
        state,
        reason,
        in_rotation: selectable || signals.group_fails_open,
        probe_rate: signals.probe_rate,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn passive() -> HealthSnapshot {
        HealthSnapshot {
            ejected_for: None,
            consecutive_failures: 0,
            held_back: false,
            ejections_in_a_row: 0,
            total_ejections: 0,
            last_failure: None,
        }
    }

    fn active_down() -> ActiveSnapshot {
        ActiveSnapshot {
            healthy: false,
            successes_in_a_row: 0,
            failures_in_a_row: 3,
            last_error: Some("connect: Connection refused".into()),
            rise: 2,
            fall: 2,
        }
    }

    fn signals(passive: &HealthSnapshot) -> Signals<'_> {
        Signals {
            passive,
            max_fails: 3,
            breaker: BreakerState::Closed,
            breaker_admits: true,
            active: None,
            max_ejected_percent: 50,
            group_fails_open: false,
            outlier: None,
            probe_rate: None,
        }
    }

    #[test]
    fn nothing_against_it_is_healthy_and_counts_failures_toward_max_fails() {
        let quiet = passive();
        let standing = judge(&signals(&quiet));
        assert_eq!(standing.state, BackendState::Healthy);
        assert_eq!(standing.reason, "in rotation");
        assert!(standing.in_rotation);
        let failing = HealthSnapshot {
            consecutive_failures: 2,
            last_failure: Some("connect"),
            ..passive()
        };
        let standing = judge(&signals(&failing));
        assert_eq!(standing.state, BackendState::Healthy);
        assert_eq!(
            standing.reason,
            "in rotation; 2 of max_fails (3) failures in a row (last: connect)"
        );
    }

    #[test]
    fn an_active_check_that_failed_is_down_whatever_passive_health_says() {
        let quiet = passive();
        let down = active_down();
        let standing = judge(&Signals {
            active: Some(&down),
            ..signals(&quiet)
        });
        assert_eq!(standing.state, BackendState::Down);
        assert!(!standing.in_rotation);
        assert_eq!(
            standing.reason,
            "active health check down: 3 failed probes in a row (fall 2), last: connect: \
             Connection refused"
        );
        let up = ActiveSnapshot {
            healthy: true,
            ..active_down()
        };
        let standing = judge(&Signals {
            active: Some(&up),
            ..signals(&quiet)
        });
        assert_eq!(standing.state, BackendState::Healthy);
    }

    #[test]
    fn an_ejected_backend_names_the_failures_that_ejected_it() {
        let ejected = HealthSnapshot {
            ejected_for: Some(Duration::from_millis(9_240)),
            consecutive_failures: 3,
            ejections_in_a_row: 1,
            total_ejections: 1,
            last_failure: Some("no response"),
            ..passive()
        };
        let standing = judge(&signals(&ejected));
        assert_eq!(standing.state, BackendState::Ejected);
        assert!(!standing.in_rotation);
        assert_eq!(
            standing.reason,
            "ejected for 9.2 s more after 3 failures in a row (last: no response)"
        );
    }

    #[test]
    fn breaker_states_are_their_own() {
        let quiet = passive();
        let open = judge(&Signals {
            breaker: BreakerState::Open,
            breaker_admits: false,
            ..signals(&quiet)
        });
        assert_eq!(open.state, BackendState::BreakerOpen);
        assert!(!open.in_rotation);
        let half_open = judge(&Signals {
            breaker: BreakerState::HalfOpen,
            ..signals(&quiet)
        });
        assert_eq!(half_open.state, BackendState::HalfOpen);
        assert!(half_open.in_rotation, "for its trial requests");
        let trials_taken = judge(&Signals {
            breaker: BreakerState::HalfOpen,
            breaker_admits: false,
            ..signals(&quiet)
        });
        assert!(!trials_taken.in_rotation);
    }

    #[test]
    fn a_failing_backend_kept_by_the_ejection_limit_is_not_healthy() {
        let held = HealthSnapshot {
            consecutive_failures: 4,
            held_back: true,
            last_failure: Some("connect"),
            ..passive()
        };
        let standing = judge(&signals(&held));
        assert_eq!(standing.state, BackendState::KeptByEjectionLimit);
        assert!(standing.in_rotation);
        assert_eq!(
            standing.reason,
            "4 failures in a row (last: connect) reached max_fails (3), but the group already \
             has as many backends ejected as max_ejected_percent (50%) allows: kept in rotation"
        );
    }

    #[test]
    fn every_condition_is_in_the_reason_and_the_worst_is_the_state() {
        let ejected = HealthSnapshot {
            ejected_for: Some(Duration::from_secs(5)),
            consecutive_failures: 3,
            last_failure: Some("connect"),
            ..passive()
        };
        let down = active_down();
        let standing = judge(&Signals {
            active: Some(&down),
            breaker: BreakerState::Open,
            breaker_admits: false,
            ..signals(&ejected)
        });
        assert_eq!(standing.state, BackendState::Down);
        let parts: Vec<&str> = standing.reason.split("; ").collect();
        assert_eq!(parts.len(), 3, "{}", standing.reason);
        assert!(parts[0].starts_with("active health check down"));
        assert!(parts[1].starts_with("ejected for 5.0 s"));
        assert!(parts[2].starts_with("circuit breaker open"));
    }

    #[test]
    fn a_latency_outlier_is_probing_out_of_rotation_and_says_by_how_much() {
        let quiet = passive();
        let standing = judge(&Signals {
            outlier: Some(Outlier {
                latency_ns: 104.0e6,
                median_ns: 5.2e6,
            }),
            probe_rate: Some(1.5),
            ..signals(&quiet)
        });
        assert_eq!(standing.state, BackendState::Probing);
        assert_eq!(standing.state.as_str(), "probing");
        assert!(!standing.in_rotation, "it gets probes only");
        assert_eq!(
            standing.reason,
            "latency estimate 104.0 ms is 20.0× the group median 5.2 ms; probe rate 1.5/s"
        );
        // An ejection outranks it, and an ejected backend that is probed says so.
        let ejected = HealthSnapshot {
            ejected_for: Some(Duration::from_secs(4)),
            consecutive_failures: 3,
            last_failure: Some("error status"),
            ..passive()
        };
        let standing = judge(&Signals {
            probe_rate: Some(1.0),
            ..signals(&ejected)
        });
        assert_eq!(standing.state, BackendState::Ejected);
        assert!(
            standing
                .reason
                .ends_with("; probe rate 1.0/s: a probe that succeeds brings it back"),
            "{}",
            standing.reason
        );
    }

    #[test]
    fn when_the_group_fails_open_an_unavailable_backend_is_in_rotation_and_says_why() {
        let quiet = passive();
        let down = active_down();
        let standing = judge(&Signals {
            active: Some(&down),
            group_fails_open: true,
            ..signals(&quiet)
        });
        assert_eq!(standing.state, BackendState::Down, "its own state stays");
        assert!(standing.in_rotation);
        assert!(
            standing
                .reason
                .ends_with("so the group fails open and tries it anyway"),
            "{}",
            standing.reason
        );
    }
}
