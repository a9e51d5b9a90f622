//! The recorder: per-thread shards of every recorded series, the label sets behind the
//! series ids, and the merge a scrape reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::histogram::{HistogramCell, HistogramTotals};
use super::shards::{Chunked, Counter, Shards, MAX_SERIES};
use super::status_codes::{self, SLOTS};
use super::{AttemptOutcome, BackendSeries, Listener, RouteSeries, UpstreamSeries, UNROUTED_LABEL};

/// Everything recorded, and the labels of every series.
#[derive(Debug)]
pub struct Recorder {
    shards: Shards<Shard>,
    routes: Interner<String>,
    backends: Interner<(String, String)>,
    upstreams: Interner<String>,
    reloads: Reloads,
}

/// One thread's (or group of threads') cells.
#[derive(Debug, Default)]
struct Shard {
    routes: Chunked<RouteCell>,
    backends: Chunked<BackendCell>,
    upstreams: Chunked<UpstreamCell>,
    listeners: [ListenerCell; Listener::ALL.len()],
}

#[derive(Debug)]
struct RouteCell {
    codes: [Counter; SLOTS],
    duration: HistogramCell,
    request_bytes: Counter,
    response_bytes: Counter,
}

impl Default for RouteCell {
    fn default() -> RouteCell {
        RouteCell {
            codes: std::array::from_fn(|_| Counter::default()),
            duration: HistogramCell::default(),
            request_bytes: Counter::default(),
            response_bytes: Counter::default(),
        }
    }
}

#[derive(Debug, Default)]
struct BackendCell {
    outcomes: [Counter; AttemptOutcome::ALL.len()],
    duration: HistogramCell,
}

#[derive(Debug, Default)]
struct UpstreamCell {
    retry_budget_exhausted: Counter,
}

/// Open connections are `accepted - closed`, each only ever growing, so a connection may
/// close on another thread than the one that accepted it and the sums still agree.
#[derive(Debug, Default)]
struct ListenerCell {
    accepted: Counter,
    closed: Counter,
}

/// Reloads are rare: plain shared atomics.
#[derive(Debug, Default)]
struct Reloads {
    applied: AtomicU64,
    rejected: AtomicU64,
    /// Milliseconds since the Unix epoch; 0 before the first config was loaded.
    last_success_ms: AtomicU64,
}

/// Label sets in the order they were first seen; a label set's index is its series id.
#[derive(Debug)]
struct Interner<K> {
    keys: Mutex<Vec<K>>,
}

impl<K: PartialEq + Clone> Interner<K> {
    fn new() -> Interner<K> {
        Interner {
            keys: Mutex::new(Vec::new()),
        }
    }

    fn intern(&self, key: K) -> Option<u32> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = keys.iter().position(|k| *k == key) {
            return u32::try_from(index).ok();
        }
        if keys.len() >= MAX_SERIES {
            tracing::warn!(
                max = MAX_SERIES,
                "too many metric series of one kind; the new one is not recorded"
            );
            return None;
        }
        keys.push(key);
        u32::try_from(keys.len() - 1).ok()
    }

    fn keys(&self) -> Vec<K> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A route's requests, summed over the shards.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTotals {
    pub label: String,
    /// `(code label, requests)` for every code seen.
    pub codes: Vec<(String, u64)>,
    pub duration: HistogramTotals,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// A backend's attempts, summed over the shards.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendTotals {
    pub upstream: String,
    pub backend: String,
    /// Attempts per outcome, in the order of [`AttemptOutcome::ALL`].
    pub outcomes: [u64; AttemptOutcome::ALL.len()],
    pub duration: HistogramTotals,
}

/// Connections of one listener, summed over the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerTotals {
    pub listener: Listener,
    pub accepted: u64,
    pub open: u64,
}

/// Config loads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReloadTotals {
    pub applied: u64,
    pub rejected: u64,
    /// Seconds since the Unix epoch of the last config applied (the start counts).
    pub last_success_seconds: f64,
}

impl Recorder {
    /// A recorder with `shards` shards (one per recording thread is best).
    pub fn new(shards: usize) -> Recorder {
        let recorder = Recorder {
            shards: Shards::new(shards),
            routes: Interner::new(),
            backends: Interner::new(),
            upstreams: Interner::new(),
            reloads: Reloads::default(),
        };
        // Id 0, `RouteSeries::UNROUTED`.
        let _ = recorder.routes.intern(UNROUTED_LABEL.to_string());
        recorder
    }

    pub fn route_series(&self, label: &str) -> Option<RouteSeries> {
        self.routes.intern(label.to_string()).map(RouteSeries)
    }

    pub fn backend_series(&self, upstream: &str, backend: &str) -> Option<BackendSeries> {
        self.backends
            .intern((upstream.to_string(), backend.to_string()))
            .map(BackendSeries)
    }

    pub fn upstream_series(&self, upstream: &str) -> Option<UpstreamSeries> {
        self.upstreams
            .intern(upstream.to_string())
            .map(UpstreamSeries)
    }

    #[inline]
    pub fn record_request(
        &self,
        route: RouteSeries,
        status: u16,
        duration: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        self.record_request_on(
            self.shards.local(),
            route,
            status,
            duration,
            (request_bytes, response_bytes),
        );
    }

    #[inline]
    fn record_request_on(
        &self,
        shard: &Shard,
        route: RouteSeries,
        status: u16,
        duration: Duration,
        (request_bytes, response_bytes): (u64, u64),
    ) {
        let Some(cell) = shard.routes.cell(route.0 as usize) else {
            return;
        };
        if let Some(code) = cell.codes.get(status_codes::slot(status)) {
            code.add(1);
        }
        cell.duration.observe(duration);
        cell.request_bytes.add(request_bytes);
        cell.response_bytes.add(response_bytes);
    }

    #[inline]
    pub fn record_attempt(
        &self,
        backend: BackendSeries,
        outcome: AttemptOutcome,
        duration: Duration,
    ) {
        let Some(cell) = self.shards.local().backends.cell(backend.0 as usize) else {
            return;
        };
        if let Some(counter) = cell.outcomes.get(outcome.index()) {
            counter.add(1);
        }
        cell.duration.observe(duration);
    }

    pub fn record_retry_budget_exhausted(&self, upstream: UpstreamSeries) {
        if let Some(cell) = self.shards.local().upstreams.cell(upstream.0 as usize) {
            cell.retry_budget_exhausted.add(1);
        }
    }

    pub fn connection_opened(&self, listener: Listener) {
        if let Some(cell) = self.shards.local().listeners.get(listener.index()) {
            cell.accepted.add(1);
        }
    }

    pub fn connection_closed(&self, listener: Listener) {
        if let Some(cell) = self.shards.local().listeners.get(listener.index()) {
            cell.closed.add(1);
        }
    }

    pub fn record_reload(&self, applied: bool, at: SystemTime) {
        if applied {
            self.reloads.applied.fetch_add(1, Ordering::Relaxed);
            self.record_config_loaded(at);
        } else {
            self.reloads.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn record_config_loaded(&self, at: SystemTime) {
        let ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.reloads.last_success_ms.store(ms, Ordering::Relaxed);
    }

    /// Every route's requests, summed over the shards.
    pub fn routes(&self) -> Vec<RouteTotals> {
        self.routes
            .keys()
            .into_iter()
            .enumerate()
            .map(|(id, label)| {
                let mut codes = [0u64; SLOTS];
                let mut duration = HistogramTotals::default();
                let (mut request_bytes, mut response_bytes) = (0u64, 0u64);
                for cell in self.shards.iter().filter_map(|s| s.routes.existing(id)) {
                    for (total, counter) in codes.iter_mut().zip(&cell.codes) {
                        *total = total.wrapping_add(counter.get());
                    }
                    duration.add(&cell.duration);
                    request_bytes = request_bytes.wrapping_add(cell.request_bytes.get());
                    response_bytes = response_bytes.wrapping_add(cell.response_bytes.get());
                }
                RouteTotals {
                    label,
                    codes: codes
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0)
                        .map(|(slot, n)| (status_codes::label(slot), *n))
                        .collect(),
                    duration,
                    request_bytes,
                    response_bytes,
                }
            })
            .collect()
    }

    /// Every backend's attempts, summed over the shards.
    pub fn backends(&self) -> Vec<BackendTotals> {
        self.backends
            .keys()
            .into_iter()
            .enumerate()
            .map(|(id, (upstream, backend))| {
                let mut outcomes = [0u64; AttemptOutcome::ALL.len()];
                let mut duration = HistogramTotals::default();
                for cell in self.shards.iter().filter_map(|s| s.backends.existing(id)) {
                    for (total, counter) in outcomes.iter_mut().zip(&cell.outcomes) {
                        *total = total.wrapping_add(counter.get());
                    }
                    duration.add(&cell.duration);
                }
                BackendTotals {
                    upstream,
                    backend,
                    outcomes,
                    duration,
                }
            })
            .collect()
    }

    /// `(group, times its retry budget refused a retry)` for every group.
    pub fn retry_budget_exhausted(&self) -> Vec<(String, u64)> {
        self.upstreams
            .keys()
            .into_iter()
            .enumerate()
            .map(|(id, upstream)| {
                let total = self
                    .shards
                    .iter()
                    .filter_map(|s| s.upstreams.existing(id))
                    .fold(0u64, |sum, cell| {
                        sum.wrapping_add(cell.retry_budget_exhausted.get())
                    });
                (upstream, total)
            })
            .collect()
    }

    pub fn listeners(&self) -> Vec<ListenerTotals> {
        Listener::ALL
            .iter()
            .map(|&listener| {
                let (accepted, closed) = self
                    .shards
                    .iter()
                    .filter_map(|s| s.listeners.get(listener.index()))
                    .fold((0u64, 0u64), |(a, c), cell| {
                        (
                            a.wrapping_add(cell.accepted.get()),
                            c.wrapping_add(cell.closed.get()),
                        )
                    });
                ListenerTotals {
                    listener,
                    accepted,
                    // A scrape may read a close before the accept it follows (another
                    // shard, read earlier): never below zero.
                    open: accepted.saturating_sub(closed),
                }
            })
            .collect()
    }

    pub fn reloads(&self) -> ReloadTotals {
        ReloadTotals {
            applied: self.reloads.applied.load(Ordering::Relaxed),
            rejected: self.reloads.rejected.load(Ordering::Relaxed),
            last_success_seconds: self.reloads.last_success_ms.load(Ordering::Relaxed) as f64 / 1e3,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn requests_recorded_on_many_threads_add_up() {
        let recorder = Arc::new(Recorder::new(4));
        let route = recorder.route_series("api").unwrap();
        assert_eq!(recorder.route_series("api"), Some(route), "interned once");
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let recorder = Arc::clone(&recorder);
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        let status = if i % 10 == 0 { 503 } else { 200 };
                        recorder.record_request(route, status, Duration::from_millis(2), 10, 5);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let totals = recorder.routes();
        assert_eq!(totals[0].label, "none");
        let api = &totals[1];
        assert_eq!(api.label, "api");
        assert_eq!(
            api.codes,
            vec![("200".to_string(), 5400), ("503".to_string(), 600)]
        );
        assert_eq!(api.duration.count(), 6000);
        assert!((api.duration.sum_seconds() - 12.0).abs() < 1e-6);
        assert_eq!((api.request_bytes, api.response_bytes), (60_000, 30_000));
    }

    #[test]
    fn each_shard_is_counted_once() {
        let recorder = Recorder::new(3);
        let route = RouteSeries::UNROUTED;
        for slot in 0..7 {
            let shard = recorder.shards.at(slot);
            recorder.record_request_on(shard, route, 404, Duration::ZERO, (1, 0));
        }
        let none = &recorder.routes()[0];
        assert_eq!(none.codes, vec![("404".to_string(), 7)]);
        assert_eq!(none.request_bytes, 7);
    }

    #[test]
    fn attempts_are_counted_per_backend_and_outcome() {
        let recorder = Recorder::new(2);
        let a = recorder.backend_series("api", "a").unwrap();
        let b = recorder.backend_series("api", "b").unwrap();
        assert_ne!(a, b);
        recorder.record_attempt(a, AttemptOutcome::Response, Duration::from_millis(1));
        recorder.record_attempt(a, AttemptOutcome::Response, Duration::from_millis(1));
        recorder.record_attempt(b, AttemptOutcome::ConnectError, Duration::ZERO);
        let totals = recorder.backends();
        assert_eq!(totals[0].outcomes[0], 2);
        assert_eq!(totals[0].duration.count(), 2);
        assert_eq!(totals[1].backend, "b");
        assert_eq!(totals[1].outcomes[2], 1);
    }

    #[test]
    fn a_connection_closed_on_another_thread_still_closes() {
        let recorder = Arc::new(Recorder::new(8));
        recorder.connection_opened(Listener::Http);
        recorder.connection_opened(Listener::Http);
        let other = Arc::clone(&recorder);
        std::thread::spawn(move || other.connection_closed(Listener::Http))
            .join()
            .unwrap();
        let http = recorder.listeners()[0];
        assert_eq!((http.accepted, http.open), (2, 1));
    }

    #[test]
    fn reloads_count_both_ways_and_keep_the_last_success_time() {
        let recorder = Recorder::new(1);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        recorder.record_config_loaded(start);
        recorder.record_reload(false, start + Duration::from_secs(5));
        recorder.record_reload(true, start + Duration::from_millis(7500));
        let reloads = recorder.reloads();
        assert_eq!((reloads.applied, reloads.rejected), (1, 1));
        assert!((reloads.last_success_seconds - 1007.5).abs() < 1e-9);
    }
}
