//! The recorded families as `prometheus-client` encodes them: a collector that merges the
//! shards once per scrape and writes each family with its labels.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::{AttemptOutcome, Recorder};

/// Everything the recorder holds, for a `prometheus_client` registry.
#[derive(Debug)]
pub struct RecordedMetrics(pub Arc<Recorder>);

impl Collector for RecordedMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let recorder = &self.0;
        let routes = recorder.routes();

        let mut family = encoder.encode_descriptor(
            "sentinel_http_requests",
            "Requests answered, by route and status code (499: the client left first).",
            None,
            MetricType::Counter,
        )?;
        for route in &routes {
            for (code, requests) in &route.codes {
                let labels = [("route", route.label.as_str()), ("code", code.as_str())];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(requests, None)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "sentinel_http_request_duration",
            "Time from a request's complete head to the end of its response, by route.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for route in &routes {
            let labels = [("route", route.label.as_str())];
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    route.duration.sum_seconds(),
                    route.duration.count(),
                    &route.duration.buckets(),
                    None,
                )?;
        }

        let mut family = encoder.encode_descriptor(
            "sentinel_http_request_size",
            "Request bytes received: heads, and bodies as their Content-Length declares.",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for route in &routes {
            let labels = [("route", route.label.as_str())];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&route.request_bytes, None)?;
        }

        let mut family = encoder.encode_descriptor(
            "sentinel_http_response_size",
            "Response body bytes sent to clients.",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for route in &routes {
            let labels = [("route", route.label.as_str())];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&route.response_bytes, None)?;
        }

        let listeners = recorder.listeners();
        // A listener that never accepted anything may not exist in this process.
        let used = || {
            listeners
                .iter()
                .filter(|l| l.accepted > 0 || l.listener == super::Listener::Http)
        };
        let mut family = encoder.encode_descriptor(
            "sentinel_connections_open",
            "Client connections open now, by listener.",
            None,
            MetricType::Gauge,
        )?;
        for listener in used() {
            let labels = [("listener", listener.listener.as_str())];
            family
                .encode_family(&labels)?
                .encode_gauge(&listener.open)?;
        }
        let mut family = encoder.encode_descriptor(
            "sentinel_connections_accepted",
            "Client connections accepted, by listener.",
            None,
            MetricType::Counter,
        )?;
        for listener in used() {
            let labels = [("listener", listener.listener.as_str())];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&listener.accepted, None)?;
        }

        let backends = recorder.backends();
        let mut family = encoder.encode_descriptor(
            "sentinel_upstream_requests",
            "Attempts of requests on backends, by how each ended.",
            None,
            MetricType::Counter,
        )?;
        for backend in &backends {
            for (outcome, attempts) in AttemptOutcome::ALL.iter().zip(backend.outcomes) {
                if attempts == 0 {
                    continue;
                }
                let labels = [
                    ("upstream", backend.upstream.as_str()),
                    ("backend", backend.backend.as_str()),
                    ("outcome", outcome.as_str()),
                ];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&attempts, None)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "sentinel_upstream_response_duration",
            "Time of each attempt on a backend, from the pick to the end of its response.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for backend in &backends {
            let labels = [
                ("upstream", backend.upstream.as_str()),
                ("backend", backend.backend.as_str()),
            ];
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    backend.duration.sum_seconds(),
                    backend.duration.count(),
                    &backend.duration.buckets(),
                    None,
                )?;
        }

        let mut family = encoder.encode_descriptor(
            "sentinel_retry_budget_exhausted",
            "Retries not made because the group's retry budget had no token left.",
            None,
            MetricType::Counter,
        )?;
        for (upstream, refused) in recorder.retry_budget_exhausted() {
            let labels = [("upstream", upstream.as_str())];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&refused, None)?;
        }

        let reloads = recorder.reloads();
        let mut family = encoder.encode_descriptor(
            "sentinel_config_reloads",
            "Config reloads, applied (success) or rejected (failure).",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in [("success", reloads.applied), ("failure", reloads.rejected)] {
            let labels = [("result", result)];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
        }
        let family = encoder.encode_descriptor(
            "sentinel_config_last_reload_success_timestamp",
            "When the running config was applied (the start counts), as Unix time.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        let mut family = family;
        family.encode_gauge(&reloads.last_success_seconds)?;
        Ok(())
    }
}
