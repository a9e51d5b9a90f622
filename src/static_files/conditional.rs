//! PURE conditional and range request logic (RFC 9110 §13 and §14): validators of one file
//! version, precondition evaluation in the RFC's order, and `Range` parsing.

use std::fs::Metadata;
use std::time::UNIX_EPOCH;

use crate::http::request::RequestHead;
use crate::http::response::{HeaderValue, StatusCode};

/// Validators of one file version, formatted once (and cached with the file).
#[derive(Debug, Clone)]
pub struct Validators {
    pub etag: HeaderValue,
    pub last_modified: Option<HeaderValue>,
    /// Modification time at HTTP-date resolution (whole seconds).
    pub modified_secs: Option<u64>,
}

impl Validators {
    /// A strong ETag from size and modification time to the nanosecond: it changes whenever
    /// the content can have changed, and costs no read of the file.
    pub fn of(metadata: &Metadata) -> Validators {
        let modified = metadata.modified().ok();
        let since_epoch = modified.and_then(|m| m.duration_since(UNIX_EPOCH).ok());
        let nanos = since_epoch.map(|d| d.as_nanos()).unwrap_or(0);
        Validators {
            etag: format!("\"{:x}-{:x}\"", metadata.len(), nanos).into(),
            last_modified: modified.map(|m| httpdate::fmt_http_date(m).into()),
            modified_secs: since_epoch.map(|d| d.as_secs()),
        }
    }
}

/// RFC 9110 §13.2.2: evaluate conditional headers in the defined order. `None` means serve
/// normally.
pub fn evaluate_preconditions(head: &RequestHead, validators: &Validators) -> Option<StatusCode> {
    if let Some(if_match) = head.header("if-match") {
        if !etag_list_matches(if_match, validators.etag.as_bytes(), Comparison::Strong) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    } else if let Some(since) = head.header("if-unmodified-since").and_then(parse_http_date) {
        if validators.modified_secs.is_some_and(|m| m > since) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    }
    if let Some(if_none_match) = head.header("if-none-match") {
        if etag_list_matches(if_none_match, validators.etag.as_bytes(), Comparison::Weak) {
            return Some(StatusCode::NOT_MODIFIED);
        }
    } else if let Some(since) = head.header("if-modified-since").and_then(parse_http_date) {
        if validators.modified_secs.is_some_and(|m| m <= since) {
            return Some(StatusCode::NOT_MODIFIED);
        }
    }
    None
}

/// RFC 9110 §13.1.5: a Range applies only if If-Range (an ETag or a date) still matches.
pub fn if_range_matches(head: &RequestHead, validators: &Validators) -> bool {
    let Some(if_range) = head.header("if-range") else {
        return true;
    };
    let value = trim(if_range);
    if value.starts_with(b"\"") {
        // Strong comparison only: a weak tag never matches (§13.1.5).
        return value == validators.etag.as_bytes();
    }
    match (parse_http_date(value), validators.modified_secs) {
        (Some(date), Some(modified)) => date == modified,
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Strong,
    Weak,
}

/// Does a comma-separated entity-tag list (or `*`) match our `etag`? Ours is weak only for
/// a body compressed on the fly (RFC 9110 §8.8.3.2: weak tags never match strongly).
fn etag_list_matches(list: &[u8], etag: &[u8], comparison: Comparison) -> bool {
    if trim(list) == b"*" {
        return true;
    }
    let (ours_weak, ours) = split_weak(etag);
    list.split(|&b| b == b',').map(trim).any(|candidate| {
        let (theirs_weak, theirs) = split_weak(candidate);
        match comparison {
            Comparison::Weak => theirs == ours,
            Comparison::Strong => !ours_weak && !theirs_weak && theirs == ours,
        }
    })
}

/// Whether an entity tag is weak, and its opaque part.
fn split_weak(etag: &[u8]) -> (bool, &[u8]) {
    match etag.strip_prefix(b"W/") {
        Some(opaque) => (true, opaque),
        None => (false, etag),
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

fn parse_http_date(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// What a `Range` header asks of a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range (absent, malformed, several ranges, or not bytes): send it all.
    Full,
    /// Inclusive byte positions, already clamped to the representation.
    Satisfiable {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// RFC 9110 §14.2: one `bytes=` range. A malformed header is ignored (full 200), as the RFC
/// allows; several ranges are served in full too rather than as multipart.
pub fn parse_range(header: &[u8], size: u64) -> RangeRequest {
    let Ok(text) = std::str::from_utf8(header) else {
        return RangeRequest::Full;
    };
    let Some((unit, spec)) = text.trim().split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let digits = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.is_empty(), last.is_empty()) {
        (true, true) => RangeRequest::Full,
        (true, false) => match digits(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(suffix) => RangeRequest::Satisfiable {
                start: size.saturating_sub(suffix),
                end: size - 1,
            },
            None => RangeRequest::Full,
        },
        (false, _) => {
            let Some(start) = digits(first) else {
                return RangeRequest::Full;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match digits(last) {
                    Some(end) if end >= start => end,
                    _ => return RangeRequest::Full,
                }
            };
            if start >= size {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Satisfiable {
                    start,
                    end: end.min(size - 1),
                }
            }
        }
    }
}
