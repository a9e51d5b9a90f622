//! The task that feeds the dashboard's history: once per `admin.dashboard_sample_ms` it
//! reads every backend's counters (from the balancer's state and the metrics shards,
//! merged here, off the request path) into the [`History`]. It runs on the main thread's
//! runtime with the admin listener, samples only while an admin section is configured, and
//! ends when the admin task stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::history::{BackendKey, History, Reading};
use crate::limits::DEFAULT_DASHBOARD_SAMPLE_INTERVAL;
use crate::snapshot::{SharedSnapshot, Snapshot};

/// The history the sampler fills and the dashboard's feed reads (never locked across an
/// `.await`).
pub type SharedHistory = Arc<Mutex<History>>;

/// Start sampling into `history` until `stop` turns true (or its sender is gone).
pub fn spawn(
    config: SharedSnapshot,
    history: SharedHistory,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let sampling = async move {
        let mut last = Instant::now();
        let mut next = last;
        loop {
            let interval = config
                .load()
                .config
                .admin
                .as_ref()
                .map_or(DEFAULT_DASHBOARD_SAMPLE_INTERVAL, |a| {
                    a.dashboard_sample_interval
                });
            // A fixed cadence that does not drift with the work; after a stall (a
            // suspended process) it starts again from now instead of catching up.
            next += interval;
            let now = Instant::now();
            if next < now {
                next = now + interval;
            }
            tokio::select! {
                () = tokio::time::sleep_until(next.into()) => {}
                _ = stop.wait_for(|&stop| stop) => break,
            }
            let snapshot = config.load_full();
            let Some(admin) = snapshot.config.admin.as_ref() else {
                last = Instant::now();
                continue;
            };
            let now = Instant::now();
            let elapsed = now.duration_since(last).as_secs_f64();
            last = now;
            let readings = readings(&snapshot, now);
            let at_ms = unix_ms(SystemTime::now());
            let mut history = history.lock().unwrap_or_else(|p| p.into_inner());
            history.set_capacity(admin.dashboard_samples);
            history.record(at_ms, elapsed, readings);
        }
    };
    tokio::spawn(sampling.instrument(tracing::debug_span!("dashboard_sampler")))
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Every backend of `snapshot`, read at `now`.
fn readings(snapshot: &Snapshot, now: Instant) -> Vec<(BackendKey, Reading)> {
    // Attempt durations as the metrics histogram merged them: one merge per sample.
    let timed: HashMap<BackendKey, (u64, f64)> = crate::metrics::global()
        .backends()
        .into_iter()
        .map(|t| {
            let count = t.duration.count();
            let seconds = t.duration.sum_seconds();
            ((t.upstream, t.backend), (count, seconds))
        })
        .collect();
    let mut readings = Vec::new();
    for upstream in &snapshot.upstreams {
        for backend in &upstream.backends {
            let key = (upstream.name.clone(), backend.name.to_string());
            let (timed_count, timed_seconds) = timed.get(&key).copied().unwrap_or((0, 0.0));
            let reading = Reading {
                requests: backend.stats.requests(),
                errors: backend.stats.errors(),
                in_flight: backend.stats.in_flight(),
                latency_ewma_ms: backend.stats.latency_ns(now) / 1e6,
                timed: timed_count,
                timed_seconds,
            };
            readings.push((key, reading));
        }
    }
    readings
}
