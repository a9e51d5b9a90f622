//! `GET /metrics`: the recorded families, the backend gauges and the process families in
//! the Prometheus text format, or in OpenMetrics when the scraper's `Accept` asks for it
//! (Prometheus does, and then gets the `# EOF` and unit lines the format has).

use std::sync::Arc;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

use super::backend_gauges::BackendGauges;
use super::rate_limit_counters::RateLimitCounters;
use crate::metrics::process::ProcessMetrics;
use crate::metrics::RecordedMetrics;
use crate::snapshot::Snapshot;

/// The `Content-Type` of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text, version 0.0.4: the default.
    PrometheusText,
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` value asks for: OpenMetrics when it lists
    /// `application/openmetrics-text` with a weight above zero, else the Prometheus text.
    pub fn negotiate(accept: Option<&[u8]>) -> Format {
        let Some(accept) = accept.and_then(|value| std::str::from_utf8(value).ok()) else {
            return Format::PrometheusText;
        };
        let wants_openmetrics = accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            media.eq_ignore_ascii_case("application/openmetrics-text")
                && !parts.any(|param| {
                    param
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::PrometheusText => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The whole exposition for `snapshot` (the backends it holds now) in `format`.
pub fn render(snapshot: Arc<Snapshot>, format: Format) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(RecordedMetrics(Arc::clone(
        crate::metrics::global(),
    ))));
    registry.register_collector(Box::new(BackendGauges(Arc::clone(&snapshot))));
    registry.register_collector(Box::new(super::cache::CacheCounters(Arc::clone(&snapshot))));
    registry.register_collector(Box::new(RateLimitCounters(snapshot)));
    registry.register_collector(Box::new(super::plugin_counters::PluginCounters));
    registry.register_collector(Box::new(ProcessMetrics));
    registry.register_collector(Box::new(crate::access_log::AccessLogCounters));
    registry.register_collector(Box::new(
        crate::metrics::tls_handshakes::TlsHandshakeCounters,
    ));
    let mut out = String::with_capacity(16 * 1024);
    match format {
        Format::PrometheusText => prometheus_text::encode(&mut out, &registry)?,
        Format::OpenMetrics => text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_for() {
        assert_eq!(Format::negotiate(None), Format::PrometheusText);
        assert_eq!(
            Format::negotiate(Some(b"text/plain;version=0.0.4")),
            Format::PrometheusText
        );
        let prometheus = b"application/openmetrics-text;version=1.0.0;q=0.5,\
                           text/plain;version=0.0.4;q=0.3,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some(b"Application/OpenMetrics-Text")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some(b"application/openmetrics-text;q=0, text/plain")),
            Format::PrometheusText
        );
    }
}
