//! The settings of an upstream group and of its backends, as validated from the `proxy`
//! section: plain data. The proxy builds its runtime state (pools, health, statistics,
//! breakers, checks) from these, beside the config snapshot, never inside it.

use std::time::Duration;

use super::{BackendConfig, TlsRoots};
use crate::balance::stats::BalanceSettings;
use crate::balance::strategy::Strategy;

/// One upstream group as configured: `proxy.backends` (the group `default`) or an entry of
/// `proxy.upstreams`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub backends: Vec<BackendConfig>,
    pub settings: BackendSettings,
    /// What its TLS backends are verified against (`tls_ca_file`).
    pub tls_roots: TlsRoots,
    /// Active health checks, when the group has them.
    pub checks: Option<CheckSettings>,
    pub strategy: Strategy,
    pub policy: GroupPolicy,
}

/// Settings shared by every backend of a group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendSettings {
    pub max_idle: usize,
    pub idle_timeout: Duration,
    pub health: HealthSettings,
    pub balance: BalanceSettings,
    pub breaker: BreakerSettings,
    /// Most requests in flight at once; 0 for no limit.
    pub max_concurrent: u32,
}

/// What a group does with its backends' outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPolicy {
    /// Response statuses that count as a backend failure (and may be retried).
    pub failure_statuses: Vec<u16>,
    /// Response statuses that count as a backend failure without being retried: the client
    /// gets the response. `proxy.error_statuses`, or by default 500, 502, 503 and 504 for an
    /// adaptive group and none for the others.
    pub error_statuses: Vec<u16>,
    /// Responses slower than this count as a failure for health; zero turns it off.
    pub slow_response: Duration,
    /// Largest share of the group (percent) that may be ejected at once; at least one
    /// backend always may be.
    pub max_ejected_percent: u32,
    /// Retries of a request after the first attempt (failed sends and failure statuses).
    pub max_retries: u32,
    pub retry_budget: RetryBudgetSettings,
}

/// Passive health: when a backend is ejected and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Consecutive failures that eject the backend; 0 never ejects.
    pub max_fails: u32,
    /// Length of the first ejection.
    pub fail_timeout: Duration,
    /// Longest ejection.
    pub max_fail_timeout: Duration,
}

/// The circuit breaker of each backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Failure share (0..=1) that opens the breaker; 0 disables it.
    pub failure_rate: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub open_for: Duration,
    pub trial_requests: u32,
}

/// How many retries a group may add on top of its first attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetSettings {
    pub ratio: f64,
    pub min_per_sec: f64,
    pub window: Duration,
}

/// Active health checks: what to probe and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSettings {
    pub path: String,
    pub interval: Duration,
    /// Up to this much is added to each interval, so checks of many backends (and of many
    /// proxies) do not arrive in lockstep.
    pub jitter: Duration,
    pub timeout: Duration,
    pub expected_status: u16,
    /// Good probes in a row that bring a down backend back.
    pub rise: u32,
    /// Failed probes in a row that take a backend down.
    pub fall: u32,
}
