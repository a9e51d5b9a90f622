//! Access logs in formats log tools read (`logging.access_log_format`: nginx's `combined`,
//! or JSON lines), written off the request path by one writer thread (`writer`), and the
//! count of lines dropped when the file does not keep up, for `/metrics`.

pub mod format;
pub mod writer;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::config::{AccessLogFormat, LoggingConfig};
use crate::metrics::encode_counters;

pub use format::{Record, RequestLine, RouteLabel};

/// Start (or retune) the writer for `logging`: only the `combined` and `json` formats need
/// it. A format switched back to `text` by a reload leaves the idle thread in place.
pub fn configure(logging: &LoggingConfig) -> std::io::Result<()> {
    if !logging.access_log || logging.access_log_format == AccessLogFormat::Text {
        return Ok(());
    }
    writer::configure(writer::Settings {
        path: logging.access_log_path.clone(),
        buffer_bytes: logging.access_log_buffer_bytes,
        flush_interval: logging.access_log_flush_interval,
    })
}

/// Format `record` as `format` says into this thread's buffer (`text` is not ours: the
/// caller logs it as a tracing event).
pub fn write(format: AccessLogFormat, record: &Record<'_>) {
    match format {
        AccessLogFormat::Combined => writer::write_line(|out| format::combined(out, record)),
        AccessLogFormat::Json => writer::write_line(|out| format::json(out, record)),
        AccessLogFormat::Text => {}
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
