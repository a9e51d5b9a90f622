//! `GET /admin/dashboard.json`: what the dashboard page shows, in one document. Every
//! upstream and backend with the same report as `/admin/backends`, plus the rates of the
//! last sample and each backend's history after the sample the page already has
//! (`?since=N`, so a poll carries a point or two per backend rather than five minutes of
//! them), and the recent config loads.

use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::history::{History, Point};
use super::sampler::unix_ms;
use crate::admin::backends::{backend_report, round3, strategy_name, BackendReport};
use crate::metrics::ReloadEvent;
use crate::snapshot::Snapshot;

#[derive(Serialize)]
struct Feed<'a> {
    version: &'static str,
    /// Milliseconds since the Unix epoch, here and below.
    now_ms: u64,
    started_ms: Option<u64>,
    /// The last sample's number: the page asks for `?since=` it next time.
    seq: u64,
    sample_interval_ms: u64,
    /// Points each backend's history keeps.
    history_samples: usize,
    connections_open: u64,
    upstreams: Vec<UpstreamFeed<'a>>,
    reloads: ReloadsFeed,
}

#[derive(Serialize)]
struct UpstreamFeed<'a> {
    name: &'a str,
    strategy: String,
    fail_open: bool,
    backends: Vec<BackendFeed<'a>>,
}

/// One history point: `[at_ms, requests/s, errors/s, mean latency ms or null, EWMA ms,
/// in-flight]`, an array to keep polls small at 50 backends.
type PointRow = (u64, f64, f64, Option<f64>, f64, u64);

#[derive(Serialize)]
struct BackendFeed<'a> {
    #[serde(flatten)]
    report: BackendReport<'a>,
    /// Over the last sample interval.
    requests_per_sec: f64,
    errors_per_sec: f64,
    mean_latency_ms: Option<f64>,
    history: Vec<PointRow>,
}

#[derive(Serialize)]
struct ReloadsFeed {
    applied: u64,
    rejected: u64,
    last_success_ms: u64,
    /// Newest first.
    recent: Vec<ReloadFeed>,
}

#[derive(Serialize)]
struct ReloadFeed {
    at_ms: u64,
    result: &'static str,
    trigger: &'static str,
    detail: String,
}

/// What the dashboard's feed says about `snapshot` at `now`, with the history after sample
/// `since`.
pub fn dashboard_json(snapshot: &Snapshot, history: &History, since: u64, now: Instant) -> String {
    let admin = snapshot.config.admin.as_ref();
    let recorder = crate::metrics::global();
    let totals = recorder.reloads();
    let feed = Feed {
        version: env!("CARGO_PKG_VERSION"),
        now_ms: unix_ms(SystemTime::now()),
        started_ms: crate::metrics::process::sample()
            .start_time_seconds
            .map(|s| (s * 1e3) as u64),
        seq: history.seq(),
        sample_interval_ms: admin.map_or(0, |a| a.dashboard_sample_interval.as_millis() as u64),
        history_samples: admin.map_or(0, |a| a.dashboard_samples),
        connections_open: recorder.listeners().iter().map(|l| l.open).sum(),
        upstreams: snapshot
            .upstreams
            .iter()
            .map(|upstream| UpstreamFeed {
                name: &upstream.name,
                strategy: strategy_name(&upstream.strategy),
                fail_open: upstream.fails_open(now),
                backends: upstream
                    .backends
                    .iter()
                    .zip(upstream.standings(now))
                    .map(|(backend, standing)| {
                        let key = (upstream.name.clone(), backend.name.to_string());
                        let latest = history.latest(&key);
                        BackendFeed {
                            report: backend_report(backend, standing, now),
                            requests_per_sec: latest.map_or(0.0, |p| round3(p.requests_per_sec)),
                            errors_per_sec: latest.map_or(0.0, |p| round3(p.errors_per_sec)),
                            mean_latency_ms: latest.and_then(|p| p.mean_latency_ms).map(round3),
                            history: history.points_after(&key, since).iter().map(row).collect(),
                        }
                    })
                    .collect(),
            })
            .collect(),
        reloads: ReloadsFeed {
            applied: totals.applied,
            rejected: totals.rejected,
            last_success_ms: (totals.last_success_seconds * 1e3) as u64,
            recent: crate::metrics::recent_reloads()
                .iter()
                .rev()
                .map(reload)
                .collect(),
        },
    };
    serde_json::to_string(&feed).unwrap_or_else(|_| "{}".into())
}

fn row(point: &Point) -> PointRow {
    (
        point.at_ms,
        round3(point.requests_per_sec),
        round3(point.errors_per_sec),
        point.mean_latency_ms.map(round3),
        round3(point.latency_ewma_ms),
        point.in_flight,
    )
}

fn reload(event: &ReloadEvent) -> ReloadFeed {
    ReloadFeed {
        at_ms: unix_ms(event.at),
        result: event.result.as_str(),
        trigger: event.trigger,
        detail: event.detail.clone(),
    }
}
