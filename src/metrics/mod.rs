//! The metrics registry: counters and histograms that every layer above records into, kept
//! per worker thread and added up when `/metrics` is scraped.
//!
//! Recording costs a few uncontended atomic adds on the recording thread's own shard: no
//! lock, no allocation, no label formatting. Label sets are resolved to small ids (series)
//! when a config snapshot is built ([`route_series`], [`backend_series`],
//! [`upstream_series`]), and a request carries the id. Scrapes merge the shards and hand
//! them to `prometheus-client` for the exposition ([`RecordedMetrics`]); what can be read
//! from state that exists anyway (backend health, in-flight counts) is read at scrape time
//! by the admin endpoint instead of being recorded.
//!
//! Imports nothing of the crate but `limits`: it sits below everything that records into it.

mod exposition;
mod histogram;
pub mod process;
mod recent_reloads;
mod recorder;
mod refusals;
mod shards;
mod status_codes;
pub mod tls_handshakes;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

pub use exposition::{encode_counters, encode_gauges, RecordedMetrics};
pub use recent_reloads::{ReloadEvent, ReloadResult};
pub use recorder::Recorder;
pub use refusals::{record_refusal, Refusal};
pub use shards::MAX_SERIES;

/// The process's recorder.
static GLOBAL: LazyLock<Arc<Recorder>> = LazyLock::new(|| {
    // One shard per thread that may serve requests, and one for the main thread (reloads,
    // admin, health checks); more threads than that share shards, which stays correct.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    Arc::new(Recorder::new(threads + 1))
});

/// The last few config loads, for the dashboard.
static RECENT_RELOADS: LazyLock<recent_reloads::RecentReloads> = LazyLock::new(Default::default);

/// The process's recorder, for the exposition.
pub fn global() -> &'static Arc<Recorder> {
    &GLOBAL
}

/// A route's label set, resolved once per snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSeries(u32);

impl RouteSeries {
    /// Requests no route took: no route matched, or no request head could be read.
    pub const UNROUTED: RouteSeries = RouteSeries(0);
}

/// An (upstream group, backend) label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendSeries(u32);

/// An upstream group's label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSeries(u32);

/// The series of one upstream group and of its backends (in the group's order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSeries {
    pub group: Option<UpstreamSeries>,
    pub backends: Vec<Option<BackendSeries>>,
}

impl GroupSeries {
    pub fn new<'a>(group: &str, backends: impl Iterator<Item = &'a str>) -> GroupSeries {
        GroupSeries {
            group: upstream_series(group),
            backends: backends.map(|b| backend_series(group, b)).collect(),
        }
    }
}

/// The `route` label of requests no route took.
pub const UNROUTED_LABEL: &str = "none";

/// The series of the route labelled `label` (its name, or its index in `routes`); `None`
/// once [`MAX_SERIES`] labels exist.
pub fn route_series(label: &str) -> Option<RouteSeries> {
    GLOBAL.route_series(label)
}

/// The series of backend `backend` of group `upstream`.
pub fn backend_series(upstream: &str, backend: &str) -> Option<BackendSeries> {
    GLOBAL.backend_series(upstream, backend)
}

/// The series of group `upstream`.
pub fn upstream_series(upstream: &str) -> Option<UpstreamSeries> {
    GLOBAL.upstream_series(upstream)
}

/// One request answered (or given up on: 499) on `route`, `duration` after its head
/// arrived, with `request_bytes` received and `response_bytes` of body sent.
#[inline]
pub fn record_request(
    route: RouteSeries,
    status: u16,
    duration: Duration,
    request_bytes: u64,
    response_bytes: u64,
) {
    GLOBAL.record_request(route, status, duration, request_bytes, response_bytes);
}

/// One attempt of a request on a backend ended with `outcome` after `duration`.
#[inline]
pub fn record_attempt(backend: BackendSeries, outcome: AttemptOutcome, duration: Duration) {
    GLOBAL.record_attempt(backend, outcome, duration);
}

/// A retry was wanted but the group's retry budget had no token.
pub fn record_retry_budget_exhausted(upstream: UpstreamSeries) {
    GLOBAL.record_retry_budget_exhausted(upstream);
}

/// A reload was applied (`true`) or rejected.
pub fn record_reload(applied: bool) {
    GLOBAL.record_reload(applied, std::time::SystemTime::now());
}

/// The first config was loaded: the "last successful reload" is the start.
pub fn record_config_loaded() {
    let now = std::time::SystemTime::now();
    GLOBAL.record_config_loaded(now);
    remember_reload(ReloadResult::Loaded, "startup", String::new());
}

/// Keep a config load for the dashboard's list of recent reloads: `detail` says what it
/// changed or why it was refused.
pub fn remember_reload(result: ReloadResult, trigger: &'static str, detail: String) {
    RECENT_RELOADS.remember(ReloadEvent {
        at: std::time::SystemTime::now(),
        result,
        trigger,
        detail,
    });
}

/// The newest config loads, oldest first.
pub fn recent_reloads() -> Vec<ReloadEvent> {
    RECENT_RELOADS.list()
}

/// Which listener a connection came in on (the `listener` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Http,
    Https,
    Admin,
}

impl Listener {
    pub const ALL: [Listener; 3] = [Listener::Http, Listener::Https, Listener::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Https => "https",
            Listener::Admin => "admin",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A connection counted open from its creation to its drop (accepted, then closed).
#[derive(Debug)]
pub struct OpenConnection(Listener);

impl OpenConnection {
    pub fn new(listener: Listener) -> OpenConnection {
        GLOBAL.connection_opened(listener);
        OpenConnection(listener)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        GLOBAL.connection_closed(self.0);
    }
}

/// How one attempt on a backend ended: each attempt counts once, under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A response head arrived and went to the client (whatever its status).
    Response,
    /// A response head arrived with one of the group's failure statuses and the request
    /// was sent to another backend instead.
    Retried,
    /// No connection: refused, unreachable, connect timeout, TLS handshake refused.
    ConnectError,
    /// The backend took none of the request for the send timeout, or sent no response
    /// head within the request timeout.
    Timeout,
    /// The connection failed or closed before any byte of a response.
    Reset,
    /// The response head was not valid HTTP/1.1, or was cut short.
    Malformed,
    /// The client left, or its body was bad or late: nothing is known of the backend.
    ClientAborted,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 7] = [
        AttemptOutcome::Response,
        AttemptOutcome::Retried,
        AttemptOutcome::ConnectError,
        AttemptOutcome::Timeout,
        AttemptOutcome::Reset,
        AttemptOutcome::Malformed,
        AttemptOutcome::ClientAborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Response => "response",
            AttemptOutcome::Retried => "retried",
            AttemptOutcome::ConnectError => "connect_error",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Reset => "reset",
            AttemptOutcome::Malformed => "malformed",
            AttemptOutcome::ClientAborted => "client_aborted",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}
