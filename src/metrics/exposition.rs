//! The recorded families as `prometheus-client` encodes them: a collector that merges the
//! shards once per scrape and writes each family with its labels.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::histogram::HistogramTotals;
use super::{AttemptOutcome, Recorder};

/// One counter family: its descriptor, then a value per label set.
pub fn encode_counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, value) in values {
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

/// One gauge family: its descriptor, then a value per label set.
pub fn encode_gauges<L: EncodeLabelSet, G: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: impl IntoIterator<Item = (L, G)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in values {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// One histogram family in seconds: its descriptor, then the totals per label set.
fn encode_histograms<'a, L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, &'a HistogramTotals)>,
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (labels, totals) in values {
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                totals.sum_seconds(),
                totals.count(),
                &totals.buckets(),
                None,
            )?;
    }
    Ok(())
}

/// Everything the recorder holds, for a `prometheus_client` registry.
#[derive(Debug)]
pub struct RecordedMetrics(pub Arc<Recorder>);

impl Collector for RecordedMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let recorder = &self.0;
        let routes = recorder.routes();

        encode_counters(
            &mut encoder,
            "sentinel_http_requests",
            "Requests answered, by route and status code (499: the client left first).",
            None,
            routes.iter().flat_map(|route| {
                route.codes.iter().map(|(code, requests)| {
                    (
                        [("route", route.label.as_str()), ("code", code.as_str())],
                        *requests,
                    )
                })
            }),
        )?;
        encode_histograms(
            &mut encoder,
            "sentinel_http_request_duration",
            "Time from a request's complete head to the end of its response, by route.",
            routes
                .iter()
                .map(|route| ([("route", route.label.as_str())], &route.duration)),
        )?;
        encode_counters(
            &mut encoder,
            "sentinel_http_request_size",
            "Request bytes received: heads, and bodies as their Content-Length declares.",
            Some(&Unit::Bytes),
            routes
                .iter()
                .map(|route| ([("route", route.label.as_str())], route.request_bytes)),
        )?;
        encode_counters(
            &mut encoder,
            "sentinel_http_response_size",
            "Response body bytes sent to clients.",
            Some(&Unit::Bytes),
            routes
                .iter()
                .map(|route| ([("route", route.label.as_str())], route.response_bytes)),
        )?;

        let listeners = recorder.listeners();
        // A listener that never accepted anything may not exist in this process.
        let used = || {
            listeners
                .iter()
                .filter(|l| l.accepted > 0 || l.listener == super::Listener::Http)
        };
        encode_gauges(
            &mut encoder,
            "sentinel_connections_open",
            "Client connections open now, by listener.",
            None,
            used().map(|l| ([("listener", l.listener.as_str())], l.open)),
        )?;
        encode_counters(
            &mut encoder,
            "sentinel_connections_accepted",
            "Client connections accepted, by listener.",
            None,
            used().map(|l| ([("listener", l.listener.as_str())], l.accepted)),
        )?;

        let backends = recorder.backends();
        encode_counters(
            &mut encoder,
            "sentinel_upstream_requests",
            "Attempts of requests on backends, by how each ended.",
            None,
            backends.iter().flat_map(|backend| {
                AttemptOutcome::ALL
                    .iter()
                    .zip(backend.outcomes)
                    .filter(|(_, attempts)| *attempts > 0)
                    .map(|(outcome, attempts)| {
                        let labels = [
                            ("upstream", backend.upstream.as_str()),
                            ("backend", backend.backend.as_str()),
                            ("outcome", outcome.as_str()),
                        ];
                        (labels, attempts)
                    })
            }),
        )?;
        encode_histograms(
            &mut encoder,
            "sentinel_upstream_response_duration",
            "Time of each attempt on a backend, from the pick to the end of its response.",
            backends.iter().map(|backend| {
                let labels = [
                    ("upstream", backend.upstream.as_str()),
                    ("backend", backend.backend.as_str()),
                ];
                (labels, &backend.duration)
            }),
        )?;

        let exhausted = recorder.retry_budget_exhausted();
        encode_counters(
            &mut encoder,
            "sentinel_retry_budget_exhausted",
            "Retries not made because the group's retry budget had no token left.",
            None,
            exhausted
                .iter()
                .map(|(upstream, refused)| ([("upstream", upstream.as_str())], *refused)),
        )?;

        let reloads = recorder.reloads();
        encode_counters(
            &mut encoder,
            "sentinel_config_reloads",
            "Config reloads, applied (success) or rejected (failure).",
            None,
            [("success", reloads.applied), ("failure", reloads.rejected)]
                .map(|(result, count)| ([("result", result)], count)),
        )?;
        let mut family = encoder.encode_descriptor(
            "sentinel_config_last_reload_success_timestamp",
            "When the running config was applied (the start counts), as Unix time.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        family.encode_gauge(&reloads.last_success_seconds)?;

        encode_counters(
            &mut encoder,
            "sentinel_proxy_protocol_errors",
            "Connections closed for their PROXY protocol header, or for sending one from a peer \
             not in server.proxy_protocol_trusted.",
            None,
            super::refusals::proxy_protocol_errors().map(|(reason, n)| ([("reason", reason)], n)),
        )?;
        encode_counters(
            &mut encoder,
            "sentinel_connections_refused",
            "Connections closed on accept because their client address held \
             server.max_connections_per_ip connections already.",
            None,
            [(
                [("reason", "per_ip_cap")],
                super::refusals::per_ip_refusals(),
            )],
        )?;
        Ok(())
    }
}
