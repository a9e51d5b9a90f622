//! The response cache on the admin listener: `GET /admin/cache` dumps what is stored
//! (keys, bytes, budget) and the hit/miss/stale/stored counters; `POST
//! /admin/cache/purge?host=H&url=/path` drops one URL (every variant) and
//! `POST /admin/cache/purge?host=H&prefix=/path/` every URL of that host under a prefix.

use bytes::Bytes;
use serde::Serialize;

use crate::http::request::{Method, RequestHead};
use crate::http::response::{Response, ResponseBody, StatusCode};
use crate::snapshot::Snapshot;

/// Whether `path` is one of this file's endpoints.
pub fn owns(path: &str) -> bool {
    matches!(path, "/admin/cache" | "/admin/cache/purge")
}

#[derive(Serialize)]
struct Dump {
    enabled: bool,
    keys: u64,
    bytes: u64,
    max_bytes: u64,
    hits: u64,
    misses: u64,
    stale: u64,
    stored: u64,
}

#[derive(Serialize)]
struct Purged {
    purged: usize,
}

pub fn route(head: &RequestHead, path: &str, snapshot: &Snapshot) -> Response {
    let Some(cache) = snapshot.cache.as_ref() else {
        if path == "/admin/cache" {
            let counts = crate::cache::stats::counts();
            return json(&Dump {
                enabled: false,
                keys: 0,
                bytes: 0,
                max_bytes: 0,
                hits: counts.hits,
                misses: counts.misses,
                stale: counts.stale,
                stored: counts.stored,
            });
        }
        return plain(StatusCode::NOT_FOUND, "the cache is off\n");
    };
    match (path, head.method()) {
        ("/admin/cache", Method::Get | Method::Head) => {
            let usage = cache.store.usage();
            let counts = crate::cache::stats::counts();
            json(&Dump {
                enabled: true,
                keys: usage.keys,
                bytes: usage.bytes,
                max_bytes: usage.max_bytes,
                hits: counts.hits,
                misses: counts.misses,
                stale: counts.stale,
                stored: counts.stored,
            })
        }
        ("/admin/cache/purge", Method::Post) => {
            let query = head.target().split_once('?').map_or("", |(_, q)| q);
            let param = |name: &str| {
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(key, _)| *key == name)
                    .and_then(|(_, value)| percent_decode(value))
            };
            let host = param("host").unwrap_or_default();
            let purged = match (param("url"), param("prefix")) {
                (Some(url), None) => usize::from(
                    cache
                        .store
                        .invalidate(&crate::cache::key::PrimaryKey::new(&host, &url)),
                ),
                (None, Some(prefix)) => cache.store.purge_prefix(&host, &prefix),
                _ => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        "purge wants host= and one of url= or prefix=\n",
                    )
                }
            };
            tracing::info!(host = %host, purged, "cache purge");
            json(&Purged { purged })
        }
        ("/admin/cache", _) => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n").with_header("Allow", "GET, HEAD")
        }
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "POST only\n").with_header("Allow", "POST"),
    }
}

fn json(value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response::new(StatusCode::OK)
            .with_header("Content-Type", "application/json")
            .with_header("Cache-Control", "no-store")
            .with_body(ResponseBody::Full(Bytes::from(body))),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode\n"),
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    Response::new(status)
        .with_header("Content-Type", "text/plain")
        .with_header("Cache-Control", "no-store")
        .with_body(ResponseBody::Full(Bytes::from_static(body.as_bytes())))
}

/// `%XX` escapes of a query value decoded; `None` when malformed or not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The cache's families for `/metrics`, read at scrape time: requests by what the cache did
/// with them, responses stored, and the bytes held. Nothing when the cache is off.
#[derive(Debug)]
pub struct CacheCounters(pub std::sync::Arc<Snapshot>);

impl prometheus_client::collector::Collector for CacheCounters {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let Some(cache) = &self.0.cache else {
            return Ok(());
        };
        let counts = crate::cache::stats::counts();
        crate::metrics::encode_counters(
            &mut encoder,
            "sentinel_cache_requests",
            "Requests on caching routes by what the cache did: hit (served from storage), miss \
             (forwarded), stale (served stale, revalidated, or stood in for a failure).",
            None,
            [
                ([("result", "hit")], counts.hits),
                ([("result", "miss")], counts.misses),
                ([("result", "stale")], counts.stale),
            ],
        )?;
        crate::metrics::encode_counters(
            &mut encoder,
            "sentinel_cache_stored_responses",
            "Responses stored in the cache.",
            None,
            [([("cache", "memory")], counts.stored)],
        )?;
        let usage = cache.store.usage();
        crate::metrics::encode_gauges(
            &mut encoder,
            "sentinel_cache_bytes",
            "Bytes the cache holds (bodies, fields, keys), against cache.max_bytes.",
            None,
            [
                ([("kind", "used")], usage.bytes as i64),
                ([("kind", "max")], usage.max_bytes as i64),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("/a%3Fb%3D1").as_deref(), Some("/a?b=1"));
        assert_eq!(percent_decode("/bad%4"), None);
    }
}
