//! Filling the cache from a forwarded response. The proxy's relay is lent a [`Fill`]: when
//! the response head arrives it asks `begin`, which decides (RFC 9111 §3) whether to capture
//! the body, adds the `Cache-Status` field and may take the response over instead of relaying
//! it (a `304` to our own revalidation, a `5xx` that a stale entry stands in for). The relay
//! appends each de-framed body piece to the [`Capture`]; only a body that ended correctly
//! and stayed within `cache.max_object_bytes` is stored.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};

use super::directives::CacheControl;
use super::freshness::{freshness_lifetime, ResponseTimes};
use super::key::{secondary_key, vary_names, PrimaryKey};
use super::storable::{decide, NotStored, RequestFacts, ResponseFacts};
use super::store::{Store, StoredResponse};
use crate::http::request::{Method, RequestHead};
use crate::http::response_parser::{DeclaredFraming, ParsedResponse};

/// What the cache lends one forwarded request.
#[derive(Debug)]
pub struct Fill<'a> {
    pub head: &'a RequestHead,
    pub store: &'a Store,
    pub key: PrimaryKey,
    pub max_object_bytes: u64,
    /// `fwd=` of the `Cache-Status` sent when the response is relayed (RFC 9211 §2.2).
    pub fwd: &'static str,
    /// The stale entry being revalidated: a `304` refreshes it instead of reaching the client.
    pub revalidating: Option<Arc<StoredResponse>>,
    /// A stale entry that may stand in for a `5xx` (`stale-if-error`).
    pub stale_on_error: Option<Arc<StoredResponse>>,
    /// When the request was sent (close enough: when the fill was made).
    pub request_time: SystemTime,
    /// Field lines added to the forwarded request (the conditional of a revalidation).
    pub request_fields: Option<Vec<u8>>,
    seen: Mutex<Seen>,
}

/// What the fill saw of the response.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub status: Option<u16>,
    /// `Location` and `Content-Location` values (for invalidation after an unsafe method).
    pub locations: Vec<Box<str>>,
    /// Whether the body was stored.
    pub stored: bool,
    /// The response was taken over, not relayed: the client still needs an answer.
    pub taken_over: Option<TakenOver>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakenOver {
    /// `304` to our conditional request: the entry was refreshed, serve it.
    Revalidated,
    /// A `5xx` within the stale entry's `stale-if-error` window: serve the stale entry.
    StaleOnError,
}

/// What the relay does with a response head.
#[derive(Debug)]
pub enum Begun {
    /// Relay it, with this field line added after the status line, capturing the body when
    /// a capture is given.
    Relay {
        cache_status: Vec<u8>,
        capture: Option<Box<Capture>>,
    },
    /// Do not relay it: the cache answers the client (see [`Seen::taken_over`]).
    TakeOver,
}

/// A body being captured.
#[derive(Debug)]
pub struct Capture {
    body: BytesMut,
    limit: u64,
    response: StoredResponse,
}

impl Capture {
    /// Append a piece of body; `false` (and the capture is to be dropped) once the body is
    /// larger than the object limit: the relay goes on, the response is just not stored.
    pub fn push(&mut self, data: &[u8]) -> bool {
        if (self.body.len() + data.len()) as u64 > self.limit {
            return false;
        }
        self.body.put_slice(data);
        true
    }
}

impl<'a> Fill<'a> {
    pub fn new(
        head: &'a RequestHead,
        store: &'a Store,
        key: PrimaryKey,
        max_object_bytes: u64,
    ) -> Fill<'a> {
        Fill {
            head,
            store,
            key,
            max_object_bytes,
            fwd: "uri-miss",
            revalidating: None,
            stale_on_error: None,
            request_time: SystemTime::now(),
            request_fields: None,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Add `request_fields` to the request head staged in `out` (which ends with its blank
    /// line).
    pub fn add_request_fields(&self, out: &mut BytesMut) {
        let Some(fields) = &self.request_fields else {
            return;
        };
        if !out.ends_with(b"\r\n\r\n") {
            return;
        }
        out.truncate(out.len() - 2);
        out.put_slice(fields);
        out.put_slice(b"\r\n");
    }

    /// What happened, once the forward is over.
    pub fn seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn note(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Decide what becomes of the response whose head is `response`, parsed from `raw`.
    pub fn begin(&self, response: &ParsedResponse, raw: &[u8]) -> Begun {
        let status = response.status.as_u16();
        let fields: Vec<(&[u8], &[u8])> = response
            .headers
            .iter()
            .map(|h| (h.name.slice(raw), h.value.slice(raw)))
            .collect();
        let locations = fields
            .iter()
            .filter(|(n, _)| {
                n.eq_ignore_ascii_case(b"location") || n.eq_ignore_ascii_case(b"content-location")
            })
            .map(|(_, v)| String::from_utf8_lossy(v).into())
            .collect();
        self.note(|seen| {
            seen.status = Some(status);
            seen.locations = locations;
        });
        if status == 304 {
            if let Some(stale) = &self.revalidating {
                self.refresh(stale, &fields);
                self.note(|seen| seen.taken_over = Some(TakenOver::Revalidated));
                return Begun::TakeOver;
            }
        }
        if status >= 500 && self.stale_on_error.is_some() {
            self.note(|seen| seen.taken_over = Some(TakenOver::StaleOnError));
            return Begun::TakeOver;
        }
        let capture = match self.capture(response, &fields) {
            Ok(capture) => Some(Box::new(capture)),
            Err(reason) => {
                tracing::debug!(target = %self.key.target(), %reason, "response not stored");
                None
            }
        };
        let mut cache_status = format!("Cache-Status: sentinel; fwd={}", self.fwd).into_bytes();
        if status == 304 && self.fwd == "stale" {
            cache_status.extend_from_slice(b"; fwd-status=304");
        }
        if capture.is_some() {
            cache_status.extend_from_slice(b"; stored");
        }
        cache_status.extend_from_slice(b"\r\n");
        Begun::Relay {
            cache_status,
            capture,
        }
    }

    fn capture(
        &self,
        response: &ParsedResponse,
        fields: &[(&[u8], &[u8])],
    ) -> Result<Capture, NotStored> {
        let lines = |name: &str| -> Vec<&[u8]> {
            fields
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| *v)
                .collect()
        };
        let first = |name: &str| lines(name).into_iter().next();
        let request_cc = CacheControl::parse(
            self.head
                .headers()
                .filter(|(n, _)| n.eq_ignore_ascii_case("cache-control"))
                .map(|(_, v)| v),
        );
        let cc = CacheControl::parse(lines("cache-control"));
        let vary = vary_names(lines("vary"));
        decide(
            RequestFacts {
                is_get: self.head.method() == Method::Get,
                has_authorization: self.head.header("authorization").is_some(),
                cache_control: &request_cc,
            },
            ResponseFacts {
                status: response.status.as_u16(),
                cache_control: &cc,
                expires: first("expires"),
                has_validator: first("etag").is_some() || first("last-modified").is_some(),
                has_set_cookie: first("set-cookie").is_some(),
                vary_star: vary.is_none(),
            },
        )?;
        // A request for part of the resource is not stored as if it were the whole, even
        // when the origin ignored the range and sent it all (that would be safe, but the
        // issue keeps cold ranges out of storage entirely).
        if self.head.header("range").is_some() {
            return Err(NotStored::Method);
        }
        if let DeclaredFraming::Length(length) = response.framing {
            if length > self.max_object_bytes {
                return Err(NotStored::Status(response.status.as_u16()));
            }
        }
        let vary = vary.unwrap_or_default();
        let secondary = secondary_key(&vary, |name| {
            self.head
                .headers()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
                .collect()
        });
        let times = ResponseTimes::new(
            self.request_time,
            SystemTime::now(),
            first("date"),
            first("age"),
        );
        let lifetime = freshness_lifetime(&cc, &times, first("expires"), first("last-modified"));
        let initial = match response.framing {
            DeclaredFraming::Length(length) => length as usize,
            _ => 0,
        };
        Ok(Capture {
            body: BytesMut::with_capacity(initial),
            limit: self.max_object_bytes,
            response: StoredResponse {
                status: response.status.as_u16(),
                fields: stored_fields(fields),
                body: Bytes::new(),
                times,
                lifetime,
                cache_control: cc,
                vary,
                secondary,
            },
        })
    }

    /// The body ended correctly: store it.
    pub fn complete(&self, capture: Box<Capture>) {
        let Capture {
            body, mut response, ..
        } = *capture;
        response.body = body.freeze();
        self.store.insert(self.key.clone(), response);
        self.note(|seen| seen.stored = true);
    }

    /// A `304` refreshes the stored entry's fields and times (RFC 9111 §4.3.4).
    fn refresh(&self, stale: &StoredResponse, fields: &[(&[u8], &[u8])]) {
        let mut merged = stale.fields.clone();
        for (name, value) in stored_fields(fields) {
            merged.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
            merged.push((name, value));
        }
        let first = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| *v)
        };
        let times = ResponseTimes::new(
            self.request_time,
            SystemTime::now(),
            first("date"),
            first("age"),
        );
        let cc = CacheControl::parse(
            merged
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("cache-control"))
                .map(|(_, v)| &**v),
        );
        let field = |name: &str| {
            merged
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| &**v)
        };
        let lifetime: Duration =
            freshness_lifetime(&cc, &times, field("expires"), field("last-modified"));
        let refreshed = StoredResponse {
            status: stale.status,
            fields: merged.clone(),
            body: stale.body.clone(),
            times,
            lifetime,
            cache_control: cc,
            vary: stale.vary.clone(),
            secondary: stale.secondary.clone(),
        };
        self.store.insert(self.key.clone(), refreshed);
    }
}

/// The fields a stored response keeps: end-to-end ones, without framing (the writer adds
/// its own), `Age` (recomputed on every use) and `Set-Cookie` (never handed to another
/// client), and without those the `Connection` field names.
pub fn stored_fields(fields: &[(&[u8], &[u8])]) -> Vec<(Box<str>, Box<[u8]>)> {
    // `X-Request-Id` names the request that filled the entry; each hit carries its own.
    const DROPPED: [&str; 12] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "age",
        "set-cookie",
        "proxy-authenticate",
        "x-request-id",
    ];
    let listed: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    fields
        .iter()
        .filter(|(name, _)| {
            !DROPPED
                .iter()
                .any(|d| name.eq_ignore_ascii_case(d.as_bytes()))
                && !listed.iter().any(|l| name.eq_ignore_ascii_case(l))
        })
        .map(|(name, value)| (String::from_utf8_lossy(name).into(), (*value).into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_fields_drop_hop_by_hop_framing_age_and_cookies() {
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b"Content-Type", b"text/plain"),
            (b"Connection", b"close, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Content-Length", b"5"),
            (b"Age", b"3"),
            (b"Set-Cookie", b"a=b"),
            (b"ETag", b"\"v1\""),
        ];
        let kept: Vec<String> = stored_fields(&fields)
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(kept, vec!["Content-Type", "ETag"]);
    }
}
