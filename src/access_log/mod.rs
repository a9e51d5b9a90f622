//! Access logs in formats log tools read (`logging.access_log_format`: nginx's `combined`,
//! JSON lines, or the `text` line shaped as the `sentinel::access` tracing event), written
//! off the request path by one writer thread (`writer`), and the count of lines dropped when
//! the file does not keep up, for `/metrics`.

pub mod format;
pub mod writer;

use std::sync::atomic::{AtomicU8, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::config::{AccessLogFormat, LogFormat, LoggingConfig};
use crate::metrics::encode_counters;

pub use format::{Record, RequestLine, RouteLabel};

/// Where a `text` access line goes, decided once per configuration (startup, reload) rather
/// than asked of the tracing filter per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRoute {
    /// As a `tracing` event: nothing configured the writer (a server embedded in a test).
    Event = 0,
    /// Not written: the log filter (`logging.level`, `RUST_LOG`) turns `sentinel::access` off.
    Filtered = 1,
    /// Through the writer, shaped as the text formatter shaped the event.
    WriterText = 2,
    /// Through the writer, shaped as the JSON formatter shaped the event.
    WriterJson = 3,
}

static TEXT_ROUTE: AtomicU8 = AtomicU8::new(TextRoute::Event as u8);

/// How `text` access lines are written under the configuration applied last.
pub fn text_route() -> TextRoute {
    match TEXT_ROUTE.load(Ordering::Relaxed) {
        1 => TextRoute::Filtered,
        2 => TextRoute::WriterText,
        3 => TextRoute::WriterJson,
        _ => TextRoute::Event,
    }
}

/// Start (or retune) the writer for `logging`. Called after the tracing subscriber is
/// installed and after a reload has applied `logging.level`: whether the filter lets
/// `sentinel::access` at `info` through is read here, once, not per request (issue 24: the
/// event through the subscriber cost two thirds of a cache hit). A format switched by a
/// reload leaves the writer thread in place.
pub fn configure(logging: &LoggingConfig) -> std::io::Result<()> {
    if !logging.access_log {
        return Ok(());
    }
    if logging.access_log_format == AccessLogFormat::Text {
        let route = if !tracing::enabled!(target: "sentinel::access", tracing::Level::INFO) {
            TextRoute::Filtered
        } else {
            // The shape of the lines the subscriber writes: `logging.format` is restart-only,
            // so a reload that changes it must not change the access line alone.
            match crate::logging::installed_format().unwrap_or(logging.format) {
                LogFormat::Text => TextRoute::WriterText,
                LogFormat::Json => TextRoute::WriterJson,
            }
        };
        TEXT_ROUTE.store(route as u8, Ordering::Relaxed);
    }
    writer::configure(writer::Settings {
        path: logging.access_log_path.clone(),
        buffer_bytes: logging.access_log_buffer_bytes,
        flush_interval: logging.access_log_flush_interval,
    })
}

/// Format `record` as `format` says into this thread's buffer. For `text`, the caller has
/// asked `text_route` and only calls this for the writer's routes.
pub fn write(format: AccessLogFormat, record: &Record<'_>) {
    match format {
        AccessLogFormat::Combined => writer::write_line(|out| format::combined(out, record)),
        AccessLogFormat::Json => writer::write_line(|out| format::json(out, record)),
        AccessLogFormat::Text => match text_route() {
            TextRoute::WriterText => writer::write_line(|out| format::event_text(out, record)),
            TextRoute::WriterJson => writer::write_line(|out| format::event_json(out, record)),
            TextRoute::Event | TextRoute::Filtered => {}
        },
    }
}

/// `sentinel_access_log_dropped_total`, read at scrape time.
#[derive(Debug)]
pub struct AccessLogCounters;

impl Collector for AccessLogCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_counters(
            &mut encoder,
            "sentinel_access_log_dropped",
            "Access-log lines dropped because a worker's buffer was full (the log file did not keep up) or the write failed.",
            None,
            [(&[] as &[(&str, &str)], writer::dropped())],
        )
    }
}
