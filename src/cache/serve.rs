//! Answering from storage: which stored variant a request matches, and the head of the
//! answer (the stored status and fields with `Date` kept from the origin, `Age` on every
//! response, `Cache-Status`), a `304` for the client's own matching conditional and a `206`
//! for a `Range` over a stored whole response (the static handler's range and precondition
//! rules, RFC 9110 §13 and §14).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};

use super::directives::CacheControl;
use super::key::{secondary_key, PrimaryKey};
use super::store::{Store, StoredResponse};
use crate::http::request::RequestHead;
use crate::http::response::StatusCode;
use crate::http::writer::{
    put_decimal, put_framing_and_connection, put_status_line, ConnectionState, ResponseFraming,
};
use crate::static_files::conditional::{
    evaluate_preconditions, if_range_matches, parse_range, RangeRequest, Validators,
};

/// The primary key of a request: its host (as the client named it) and its full target.
pub fn key_of(head: &RequestHead, client_host: Option<&str>) -> PrimaryKey {
    PrimaryKey::new(client_host.unwrap_or(""), head.target())
}

/// The request's own `Cache-Control`.
pub fn request_directives(head: &RequestHead) -> CacheControl {
    CacheControl::parse(
        head.headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cache-control"))
            .map(|(_, v)| v),
    )
}

/// The stored variant the request selects (its values of the stored `Vary` fields).
pub fn find(store: &Store, key: &PrimaryKey, head: &RequestHead) -> Option<Arc<StoredResponse>> {
    store.lookup(key, |names| {
        secondary_key(names, |name| {
            head.headers()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
                .collect()
        })
    })
}

/// Whether the request carries a conditional of its own.
pub fn is_conditional(head: &RequestHead) -> bool {
    [
        "if-none-match",
        "if-modified-since",
        "if-match",
        "if-unmodified-since",
    ]
    .iter()
    .any(|name| head.header(name).is_some())
}

/// The validators a stored response carries, in the static handler's terms.
fn validators(stored: &StoredResponse) -> Validators {
    let last_modified = stored
        .field("last-modified")
        .and_then(super::freshness::http_date);
    Validators {
        etag: String::from_utf8_lossy(stored.field("etag").unwrap_or(b""))
            .into_owned()
            .into(),
        last_modified: None,
        modified_secs: last_modified
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
    }
}

/// The field lines of a conditional request that revalidates `stored` (RFC 9111 §4.3.1), or
/// `None` when it has no validator.
pub fn conditional_fields(stored: &StoredResponse) -> Option<Vec<u8>> {
    let mut lines = Vec::new();
    if let Some(etag) = stored.field("etag") {
        lines.extend_from_slice(b"If-None-Match: ");
        lines.extend_from_slice(etag);
        lines.extend_from_slice(b"\r\n");
    }
    if let Some(modified) = stored.field("last-modified") {
        lines.extend_from_slice(b"If-Modified-Since: ");
        lines.extend_from_slice(modified);
        lines.extend_from_slice(b"\r\n");
    }
    (!lines.is_empty()).then_some(lines)
}

/// The part of the stored body an answer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPart {
    pub start: usize,
    pub end: usize,
}

/// Append the head of the answer to `head` from `stored` at `now` to `dst`; what part of
/// the body goes behind it (`None`: no body).
pub fn encode_answer(
    dst: &mut BytesMut,
    head: &RequestHead,
    stored: &StoredResponse,
    now: SystemTime,
    cache_status: &str,
    request_id: &[u8],
    connection: ConnectionState,
) -> Option<BodyPart> {
    let stored_status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let size = stored.body.len() as u64;
    let mut status = stored_status;
    let mut part = Some(BodyPart {
        start: 0,
        end: stored.body.len(),
    });
    let mut content_range = None;
    if stored.status == 200 {
        let validators = validators(stored);
        if let Some(precondition) = evaluate_preconditions(head, &validators) {
            status = precondition;
            part = None;
        } else if let Some(range) = head.header("range") {
            if if_range_matches(head, &validators) {
                match parse_range(range, size) {
                    RangeRequest::Full => {}
                    RangeRequest::Satisfiable { start, end } => {
                        status = StatusCode::PARTIAL_CONTENT;
                        content_range = Some(format!("bytes {start}-{end}/{size}"));
                        part = Some(BodyPart {
                            start: start as usize,
                            end: end as usize + 1,
                        });
                    }
                    RangeRequest::Unsatisfiable => {
                        status = StatusCode::RANGE_NOT_SATISFIABLE;
                        content_range = Some(format!("bytes */{size}"));
                        part = None;
                    }
                }
            }
        }
    }
    put_status_line(dst, status);
    let mut has_date = false;
    for (name, value) in &stored.fields {
        // A 416 describes the range, not the stored representation.
        if status == StatusCode::RANGE_NOT_SATISFIABLE && name.eq_ignore_ascii_case("content-type")
        {
            continue;
        }
        has_date |= name.eq_ignore_ascii_case("date");
        dst.put_slice(name.as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value);
        dst.put_slice(b"\r\n");
    }
    if !has_date {
        dst.put_slice(b"Date: ");
        dst.put_slice(httpdate::fmt_http_date(stored.times.date).as_bytes());
        dst.put_slice(b"\r\n");
    }
    dst.put_slice(b"Age: ");
    put_decimal(dst, stored.age(now).as_secs());
    dst.put_slice(b"\r\nCache-Status: ");
    dst.put_slice(cache_status.as_bytes());
    dst.put_slice(b"\r\n");
    if !request_id.is_empty() {
        dst.put_slice(crate::request_id::HEADER.as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(request_id);
        dst.put_slice(b"\r\n");
    }
    if let Some(range) = content_range {
        dst.put_slice(b"Content-Range: ");
        dst.put_slice(range.as_bytes());
        dst.put_slice(b"\r\n");
    }
    let framing = match part {
        _ if status.is_bodyless() => ResponseFraming::Bodyless,
        Some(part) => ResponseFraming::Length((part.end - part.start) as u64),
        None => ResponseFraming::Length(0),
    };
    put_framing_and_connection(dst, framing, connection);
    part.filter(|_| !status.is_bodyless())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::cache::freshness::ResponseTimes;
    use crate::http::parser::{parse_request, ParseLimits, Status};
    use crate::http::request::Version;

    fn head(extra: &str) -> RequestHead {
        let raw = Bytes::from(format!("GET /r HTTP/1.1\r\nHost: h\r\n{extra}\r\n"));
        match parse_request(&raw, &ParseLimits::default()).unwrap() {
            Status::Complete(parsed, used) => RequestHead::new(raw.slice(..used), parsed),
            Status::Partial => panic!("whole head"),
        }
    }

    fn stored(now: SystemTime) -> StoredResponse {
        let date = b"Mon, 07 Dec 2026 10:00:00 GMT";
        StoredResponse {
            status: 200,
            fields: vec![
                ("Date".into(), date.as_slice().into()),
                ("ETag".into(), b"\"v\"".as_slice().into()),
            ],
            body: Bytes::from_static(b"0123456789"),
            times: ResponseTimes::new(now, now, Some(date), Some(b"5")),
            lifetime: Duration::from_secs(60),
            cache_control: CacheControl::default(),
            vary: Vec::new(),
            secondary: Vec::new(),
        }
    }

    fn answer(extra: &str) -> (String, Option<BodyPart>) {
        let now = SystemTime::now();
        let mut dst = BytesMut::new();
        let connection = ConnectionState {
            request_version: Version::Http11,
            keep_alive: true,
        };
        let part = encode_answer(
            &mut dst,
            &head(extra),
            &stored(now),
            now,
            "sentinel; hit",
            b"",
            connection,
        );
        (String::from_utf8(dst.to_vec()).unwrap(), part)
    }

    #[test]
    fn a_hit_keeps_the_origin_date_and_carries_age_and_cache_status() {
        let (text, part) = answer("");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("Date: Mon, 07 Dec 2026 10:00:00 GMT\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("Date:").count(), 1, "{text}");
        // The Date is in the past: its apparent age wins over the Age field.
        assert!(text.contains("\r\nAge: "), "{text}");
        assert!(!text.contains("Age: 0\r\n"), "{text}");
        assert!(text.contains("Cache-Status: sentinel; hit\r\n"), "{text}");
        assert!(text.contains("Content-Length: 10\r\n"), "{text}");
        assert_eq!(part, Some(BodyPart { start: 0, end: 10 }));
    }

    #[test]
    fn a_matching_conditional_gets_304_and_a_range_206_or_416() {
        let (text, part) = answer("If-None-Match: W/\"v\"\r\n");
        assert!(text.starts_with("HTTP/1.1 304 "), "{text}");
        assert_eq!(part, None);
        let (text, part) = answer("Range: bytes=-3\r\n");
        assert!(text.starts_with("HTTP/1.1 206 "), "{text}");
        assert!(text.contains("Content-Range: bytes 7-9/10\r\n"), "{text}");
        assert_eq!(part, Some(BodyPart { start: 7, end: 10 }));
        let (text, _) = answer("Range: bytes=20-\r\n");
        assert!(text.starts_with("HTTP/1.1 416 "), "{text}");
        assert!(text.contains("Content-Range: bytes */10\r\n"), "{text}");
        // An If-Range that no longer matches gets the whole response.
        let (text, _) = answer("Range: bytes=0-1\r\nIf-Range: \"old\"\r\n");
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    }
}
