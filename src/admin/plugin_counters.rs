//! The plugins' families, read at scrape time from what the plugin host counts anyway:
//! failed callbacks per plugin and reason, and the metrics plugins define themselves
//! (`proxy_define_metric`), one gauge family labelled with the plugin and the metric's name.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::metrics::{encode_counters, encode_gauges};
use crate::plugins::metrics::{all, MetricKind};

/// Every plugin loaded since the start (counters survive reloads); nothing without any.
#[derive(Debug)]
pub struct PluginCounters;

fn kind_label(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    }
}

impl Collector for PluginCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let plugins = all();
        if plugins.is_empty() {
            return Ok(());
        }
        let failures: Vec<(String, &'static str, u64)> = plugins
            .iter()
            .flat_map(|(name, metrics)| {
                metrics
                    .failures()
                    .map(|(reason, count)| (name.clone(), reason.label(), count))
            })
            .collect();
        encode_counters(
            &mut encoder,
            "sentinel_plugin_failures",
            "Plugin callbacks that trapped, ran past timeout_ms or out of memory, and modules that failed to start, by plugin.",
            None,
            failures
                .iter()
                .map(|(plugin, reason, count)| ([("plugin", plugin.as_str()), ("reason", *reason)], *count)),
        )?;
        let defined: Vec<(String, String, &'static str, i64)> = plugins
            .iter()
            .flat_map(|(plugin, metrics)| {
                metrics.defined().into_iter().map(move |metric| {
                    (
                        plugin.clone(),
                        metric.name.clone(),
                        kind_label(metric.kind),
                        metric.value.load(std::sync::atomic::Ordering::Relaxed),
                    )
                })
            })
            .collect();
        if defined.is_empty() {
            return Ok(());
        }
        encode_gauges(
            &mut encoder,
            "sentinel_plugin_metric",
            "The metrics plugins define (proxy_define_metric), by plugin, name and type.",
            None,
            defined.iter().map(|(plugin, name, kind, value)| {
                (
                    [
                        ("plugin", plugin.as_str()),
                        ("name", name.as_str()),
                        ("type", *kind),
                    ],
                    *value,
                )
            }),
        )
    }
}
