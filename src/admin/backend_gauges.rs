//! The backend families read at scrape time from the state the balancer keeps anyway
//! (health, breaker, statistics), so the hot path records nothing for them: in-flight
//! attempts, healthy or not, latency EWMA, ejections and breaker state.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;

use crate::metrics::{encode_counters, encode_gauges};
use crate::proxy::breaker::BreakerState;
use crate::proxy::standing::BackendState;
use crate::snapshot::Snapshot;

/// The backends of one snapshot, as a `prometheus_client` collector.
#[derive(Debug)]
pub struct BackendGauges(pub Arc<Snapshot>);

/// One backend's values at the scrape.
struct Row<'a> {
    upstream: &'a str,
    backend: &'a str,
    in_flight: u64,
    healthy: u8,
    latency_ewma_seconds: f64,
    ejections: u64,
    breaker: u8,
}

/// 1 unless a failure signal holds the backend out (or half out) of rotation: a latency
/// outlier being probed is slow, not unhealthy.
fn is_healthy(state: BackendState) -> bool {
    match state {
        BackendState::Healthy | BackendState::Probing => true,
        BackendState::Down
        | BackendState::Ejected
        | BackendState::BreakerOpen
        | BackendState::HalfOpen
        | BackendState::KeptByEjectionLimit => false,
    }
}

/// `sentinel_backend_breaker_state`: 0 closed, 1 half-open, 2 open.
fn breaker_value(state: BreakerState) -> u8 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

impl BackendGauges {
    fn rows(&self, now: Instant) -> Vec<Row<'_>> {
        let mut rows = Vec::new();
        for upstream in &self.0.upstreams {
            for (backend, standing) in upstream.backends.iter().zip(upstream.standings(now)) {
                rows.push(Row {
                    upstream: &upstream.name,
                    backend: &backend.name,
                    in_flight: backend.stats.in_flight(),
                    healthy: u8::from(is_healthy(standing.state)),
                    latency_ewma_seconds: backend.stats.latency_ns(now) / 1e9,
                    ejections: backend.health.snapshot(now).total_ejections,
                    breaker: breaker_value(backend.breaker.state(now)),
                });
            }
        }
        rows
    }
}

fn labels<'a>(row: &Row<'a>) -> [(&'static str, &'a str); 2] {
    [("upstream", row.upstream), ("backend", row.backend)]
}

impl Collector for BackendGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.rows(Instant::now());
        encode_gauges(
            &mut encoder,
            "sentinel_upstream_in_flight",
            "Attempts on the backend in progress now.",
            None,
            rows.iter().map(|row| (labels(row), row.in_flight)),
        )?;
        encode_gauges(
            &mut encoder,
            "sentinel_backend_healthy",
            "1 when nothing holds the backend out of rotation (state healthy or probing in \
             /admin/backends), else 0.",
            None,
            rows.iter().map(|row| (labels(row), u32::from(row.healthy))),
        )?;
        encode_gauges(
            &mut encoder,
            "sentinel_backend_latency_ewma",
            "The balancer's peak-EWMA estimate of the backend's response latency.",
            Some(&Unit::Seconds),
            rows.iter()
                .map(|row| (labels(row), row.latency_ewma_seconds)),
        )?;
        encode_counters(
            &mut encoder,
            "sentinel_backend_ejections",
            "Times passive health ejected the backend.",
            None,
            rows.iter().map(|row| (labels(row), row.ejections)),
        )?;
        encode_gauges(
            &mut encoder,
            "sentinel_backend_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            None,
            rows.iter().map(|row| (labels(row), u32::from(row.breaker))),
        )
    }
}
