//! `GET /admin/backends`: every upstream group and backend as the balancer sees it right
//! now (state and why, in-flight, latency, cost, weight, breaker, counters), as JSON. The
//! dashboard's feed embeds the same per-backend report.

use std::time::Instant;

use serde::Serialize;

use crate::balance::strategy::Strategy;
use crate::proxy::standing::Standing;
use crate::proxy::upstream::{Backend, Upstream};
use crate::snapshot::Snapshot;

#[derive(Serialize)]
struct Report<'a> {
    upstreams: Vec<UpstreamReport<'a>>,
}

#[derive(Serialize)]
struct UpstreamReport<'a> {
    name: &'a str,
    strategy: String,
    /// No backend is available: every pick ignores health and breakers.
    fail_open: bool,
    backends: Vec<BackendReport<'a>>,
}

#[derive(Serialize)]
pub struct BackendReport<'a> {
    name: &'a str,
    address: &'a str,
    /// What the balancer believes, combining every signal (`proxy::standing`).
    state: &'static str,
    /// Why, in a sentence.
    reason: String,
    /// Whether a pick may choose it now.
    in_rotation: bool,
    /// The most probes a second it gets while out of the race; `null` when not probed.
    probe_rate_per_sec: Option<f64>,
    /// `null` when the group has no active checks.
    active_check: Option<ActiveCheckReport>,
    /// Why the last failure counted (connect, timeout, failure status, ...).
    last_failure: Option<&'static str>,
    ejected_for_ms: Option<u64>,
    /// Failures since the last success; on an ejected backend, those that ejected it.
    consecutive_failures: u32,
    ejections: u64,
    breaker: &'static str,
    in_flight: u64,
    latency_ewma_ms: f64,
    /// The plain average the latency-outlier rule compares.
    latency_typical_ms: f64,
    /// Decaying share of recent requests that failed, 0 to 1.
    failure_rate: f64,
    /// What the adaptive strategy would compare (lower is better).
    cost: f64,
    weight: u32,
    slow_start_factor: f64,
    requests: u64,
    errors: u64,
    idle_connections: usize,
}

/// The JSON document of `/admin/backends`.
pub fn backends_json(snapshot: &Snapshot, now: Instant) -> String {
    let upstreams = snapshot
        .upstreams
        .iter()
        .map(|u| upstream_report(u, now))
        .collect();
    serde_json::to_string_pretty(&Report { upstreams }).unwrap_or_else(|_| "{}".into())
}

#[derive(Serialize)]
struct ActiveCheckReport {
    /// "up" or "down".
    state: &'static str,
    consecutive_failures: u32,
    consecutive_successes: u32,
    /// Why the last failed probe failed (kept after later successes).
    last_error: Option<String>,
    fall: u32,
    rise: u32,
}

fn upstream_report(upstream: &Upstream, now: Instant) -> UpstreamReport<'_> {
    UpstreamReport {
        name: &upstream.name,
        strategy: strategy_name(&upstream.strategy),
        fail_open: upstream.fails_open(now),
        backends: upstream
            .backends
            .iter()
            .zip(upstream.standings(now))
            .map(|(backend, standing)| backend_report(backend, standing, now))
            .collect(),
    }
}

pub fn backend_report(backend: &Backend, standing: Standing, now: Instant) -> BackendReport<'_> {
    let health = backend.health.snapshot(now);
    let breaker = backend.breaker.state(now);
    let active_check = backend.active.as_ref().map(|active| {
        let active = active.snapshot();
        ActiveCheckReport {
            state: if active.healthy { "up" } else { "down" },
            consecutive_failures: active.failures_in_a_row,
            consecutive_successes: active.successes_in_a_row,
            last_error: active.last_error,
            fall: active.fall,
            rise: active.rise,
        }
    });
    let factor = backend.stats.slow_start_factor(now);
    let weight = f64::from(backend.weight) * factor;
    BackendReport {
        name: &backend.name,
        address: &backend.address,
        state: standing.state.as_str(),
        reason: standing.reason,
        in_rotation: standing.in_rotation,
        probe_rate_per_sec: standing.probe_rate.map(round3),
        active_check,
        last_failure: health.last_failure,
        ejected_for_ms: health.ejected_for.map(|d| d.as_millis() as u64),
        consecutive_failures: health.consecutive_failures,
        ejections: health.total_ejections,
        breaker: breaker.as_str(),
        in_flight: backend.stats.in_flight(),
        latency_ewma_ms: round3(backend.stats.latency_ns(now) / 1e6),
        latency_typical_ms: round3(backend.stats.typical_latency_ns() / 1e6),
        failure_rate: round3(backend.stats.failure_rate(now)),
        cost: round3(backend.stats.cost(now, weight) / 1e6),
        weight: backend.weight,
        slow_start_factor: round3(factor),
        requests: backend.stats.requests(),
        errors: backend.stats.errors(),
        idle_connections: backend.pool.idle_count(),
    }
}

pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

pub fn strategy_name(strategy: &Strategy) -> String {
    match strategy {
        Strategy::RoundRobin => "round_robin".into(),
        Strategy::WeightedRoundRobin => "weighted_round_robin".into(),
        Strategy::LeastConnections => "least_connections".into(),
        Strategy::Random => "random".into(),
        Strategy::P2c => "p2c".into(),
        Strategy::Adaptive => "adaptive".into(),
        Strategy::ConsistentHash(key) => format!("consistent_hash({key:?})"),
    }
}
