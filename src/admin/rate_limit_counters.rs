//! The rate limiter's families, read at scrape time from the counters the limiter keeps
//! anyway (`RateLimits::route_counts`, striped per thread), so `/metrics` adds nothing to a
//! request's path: decisions per route, decisions the local limiter made because Redis
//! failed, and where the shared store stands.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::config::UNROUTED_NAME;
use crate::metrics::encode_counters;
use crate::ratelimit::redis::RedisState;
use crate::snapshot::Snapshot;

/// The limiter of one snapshot, as a `prometheus_client` collector; nothing when no limit is
/// configured.
#[derive(Debug)]
pub struct RateLimitCounters(pub Arc<Snapshot>);

/// `(route label, decision, count)` for every route, in route order, then the requests no
/// route took: the route label is the one `sentinel_http_requests_total` uses.
fn decisions(snapshot: &Snapshot) -> Vec<(String, &'static str, u64)> {
    let Some(limits) = &snapshot.rate_limits else {
        return Vec::new();
    };
    let routes = &snapshot.config.routes;
    let mut rows = Vec::new();
    for (index, count) in limits.route_counts().into_iter().enumerate() {
        let label = routes
            .get(index)
            .map_or_else(|| UNROUTED_NAME.to_string(), |r| r.metrics_label(index));
        rows.push((label.clone(), "allowed", count.allowed));
        rows.push((label, "limited", count.limited));
    }
    rows
}

/// `sentinel_rate_limit_redis_state`: 0 connecting, 1 shared, 2 failed open to local limits.
fn redis_value(state: RedisState) -> u32 {
    match state {
        RedisState::Connecting => 0,
        RedisState::Shared => 1,
        RedisState::FailedOpen => 2,
    }
}

impl Collector for RateLimitCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(limits) = &self.0.rate_limits else {
            return Ok(());
        };
        let decisions = decisions(&self.0);
        encode_counters(
            &mut encoder,
            "sentinel_rate_limit_decisions",
            "Requests the rate limiter let through (allowed) or answered 429 (limited), by route.",
            None,
            decisions.iter().map(|(route, decision, count)| {
                ([("route", route.as_str()), ("decision", *decision)], *count)
            }),
        )?;
        // Families without labels: one value each, no label set to iterate.
        encoder
            .encode_descriptor(
                "sentinel_rate_limit_local_fallback_decisions",
                "Decisions the instance's own limiter made because the configured Redis failed.",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&limits.fallback_decisions(), None)?;
        if let Some(state) = limits.redis_state() {
            encoder
                .encode_descriptor(
                    "sentinel_rate_limit_redis_state",
                    "The shared store: 0 connecting, 1 shared limits, 2 failed open to local limits.",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&redis_value(state))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;

    use bytes::Bytes;

    use super::*;
    use crate::admin::exposition::{render, Format};
    use crate::config::Config;
    use crate::http::parser::{parse_request, ParseLimits, Status};
    use crate::http::request::RequestHead;

    fn snapshot(yaml: &str) -> Arc<Snapshot> {
        let config = Config::from_yaml(yaml, Path::new("test.yaml"), Path::new(".")).unwrap();
        Arc::new(Snapshot::new(config, None))
    }

    fn head(path: &str) -> RequestHead {
        let raw = Bytes::from(format!("GET {path} HTTP/1.1\r\nHost: site\r\n\r\n"));
        match parse_request(&raw, &ParseLimits::default()).unwrap() {
            Status::Complete(parsed, used) => RequestHead::new(raw.slice(..used), parsed),
            Status::Partial => panic!("whole head"),
        }
    }

    /// Send `count` requests for `path` from one client through the limiter.
    async fn send(snapshot: &Snapshot, path: &str, count: usize) {
        let limits = snapshot.rate_limits.as_ref().expect("limits configured");
        let peer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        for _ in 0..count {
            let head = head(path);
            let routed = crate::routing::route(&head, &snapshot.config.routes);
            let _ = limits
                .check(&head, peer, &routed, &snapshot.config.routes)
                .await;
        }
    }

    #[tokio::test]
    async fn decisions_are_counted_per_route_under_the_request_metrics_route_label() {
        let snapshot = snapshot(
            "server: {}\nstatic_files:\n  root: \".\"\nrate_limit:\n  requests_per_second: 1\n  \
             burst: 2\nroutes:\n  - path_prefix: \"/login\"\n    name: login\n    static: true\n  \
             - path_prefix: \"/\"\n    static: true\n",
        );
        // A fresh client gets burst + 1 at once: 3 allowed, then limited. Both routes take
        // the default limit, so on the other route the same client is limited too.
        send(&snapshot, "/login", 5).await;
        send(&snapshot, "/other", 1).await;
        let text = render(Arc::clone(&snapshot), Format::PrometheusText).unwrap();
        for line in [
            "sentinel_rate_limit_decisions_total{route=\"login\",decision=\"allowed\"} 3",
            "sentinel_rate_limit_decisions_total{route=\"login\",decision=\"limited\"} 2",
            "sentinel_rate_limit_decisions_total{route=\"1\",decision=\"limited\"} 1",
            "sentinel_rate_limit_decisions_total{route=\"none\",decision=\"allowed\"} 0",
            "sentinel_rate_limit_local_fallback_decisions_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // No Redis configured: no store state to report.
        assert!(!text.contains("sentinel_rate_limit_redis_state"), "{text}");
    }

    #[test]
    fn without_a_limit_there_is_no_family() {
        let snapshot = snapshot("server: {}\nstatic_files:\n  root: \".\"\n");
        let text = render(snapshot, Format::PrometheusText).unwrap();
        assert!(!text.contains("sentinel_rate_limit"), "{text}");
    }
}
