//! PURE: whether a response may be compressed, and the header changes compression makes.
//! `can_vary` answers for the representation (status, type, size, existing coding,
//! `no-transform`): when it says yes, the encoding depends on `Accept-Encoding` and the
//! response says so with `Vary`. Whether this client gets it compressed is then only a
//! matter of what it accepts and whether it asked for a range (callers check both).

use crate::http::parser::trim_ows;
use crate::http::response::StatusCode;

/// One entry of `compression.types`: `text/html`, or `text/*` for a whole top-level type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaRange {
    /// `type/subtype`, lower-case.
    Exact(String),
    /// `type/*`: every subtype; holds `type/`, lower-case.
    AnySubtype(String),
}

impl MediaRange {
    /// `None` for what is no media range (`*/*` is refused: it would compress images).
    pub fn parse(text: &str) -> Option<MediaRange> {
        let text = text.trim().to_ascii_lowercase();
        let (top, sub) = text.split_once('/')?;
        let is_token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        if !is_token(top) {
            return None;
        }
        match sub {
            "*" => Some(MediaRange::AnySubtype(format!("{top}/"))),
            _ if is_token(sub) => Some(MediaRange::Exact(text)),
            _ => None,
        }
    }

    /// Whether `media_type` (`type/subtype`, lower-case, no parameters) falls in this range.
    fn contains(&self, media_type: &str) -> bool {
        match self {
            MediaRange::Exact(exact) => exact == media_type,
            MediaRange::AnySubtype(prefix) => media_type.starts_with(prefix.as_str()),
        }
    }
}

/// Whether a `Content-Type` value names a type in `types` (parameters such as `charset` are
/// ignored; no `Content-Type` at all is never compressible: we would be guessing).
pub fn is_compressible(content_type: Option<&[u8]>, types: &[MediaRange]) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let essence = value.split(|&b| b == b';').next().unwrap_or(value);
    let Ok(essence) = std::str::from_utf8(essence) else {
        return false;
    };
    let essence = essence.trim().to_ascii_lowercase();
    types.iter().any(|range| range.contains(&essence))
}

/// What the policy reads of one response.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseFacts<'a> {
    pub status: u16,
    pub content_type: Option<&'a [u8]>,
    /// The response's `Content-Encoding`, when it already has one.
    pub content_encoding: Option<&'a [u8]>,
    pub cache_control: Option<&'a [u8]>,
    /// The body's length when known in advance (a file's size, a backend's Content-Length).
    pub length: Option<u64>,
}

/// Why a response is sent as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// 1xx, 204, 304 carry no body; 206 is a byte range of the identity representation.
    Status,
    /// `Content-Encoding` other than `identity` is already there: never encoded twice.
    AlreadyEncoded,
    /// `Cache-Control: no-transform` (RFC 9110 §7.7).
    NoTransform,
    /// Not one of `compression.types` (images, archives, video are already compressed).
    Type,
    /// Shorter than `compression.min_bytes`.
    TooSmall,
}

/// Whether this response's encoding may depend on `Accept-Encoding`.
pub fn can_vary(
    facts: &ResponseFacts<'_>,
    types: &[MediaRange],
    min_bytes: u64,
) -> Result<(), Skip> {
    let status = StatusCode::from_u16(facts.status).ok_or(Skip::Status)?;
    if status.is_bodyless() || status == StatusCode::PARTIAL_CONTENT {
        return Err(Skip::Status);
    }
    if facts
        .content_encoding
        .is_some_and(|coding| !trim_ows(coding).eq_ignore_ascii_case(b"identity"))
    {
        return Err(Skip::AlreadyEncoded);
    }
    if facts.cache_control.is_some_and(has_no_transform) {
        return Err(Skip::NoTransform);
    }
    if !is_compressible(facts.content_type, types) {
        return Err(Skip::Type);
    }
    if facts.length.is_some_and(|length| length < min_bytes) {
        return Err(Skip::TooSmall);
    }
    Ok(())
}

fn has_no_transform(cache_control: &[u8]) -> bool {
    cache_control
        .split(|&b| b == b',')
        .any(|directive| trim_ows(directive).eq_ignore_ascii_case(b"no-transform"))
}

/// A `Vary` value that includes `Accept-Encoding`: `existing` as it is when it already names
/// it or is `*`, else with it appended. `None` in, `Accept-Encoding` out.
pub fn merge_vary(existing: Option<&[u8]>) -> Vec<u8> {
    let Some(existing) = existing.map(trim_ows).filter(|e| !e.is_empty()) else {
        return b"Accept-Encoding".to_vec();
    };
    let named = existing
        .split(|&b| b == b',')
        .map(trim_ows)
        .any(|field| field == b"*" || field.eq_ignore_ascii_case(b"accept-encoding"));
    let mut merged = existing.to_vec();
    if !named {
        merged.extend_from_slice(b", Accept-Encoding");
    }
    merged
}

/// The ETag of a representation we transformed: weak, since the bytes are no longer the
/// backend's (RFC 9110 §8.8.1), as nginx does. A weak tag stays as it is.
pub fn weaken_etag(etag: &[u8]) -> Vec<u8> {
    let etag = trim_ows(etag);
    if etag.starts_with(b"W/") {
        return etag.to_vec();
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(etag);
    weak
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> Vec<MediaRange> {
        ["text/*", "application/json", "image/svg+xml"]
            .iter()
            .filter_map(|t| MediaRange::parse(t))
            .collect()
    }

    fn facts(content_type: &'static str) -> ResponseFacts<'static> {
        ResponseFacts {
            status: 200,
            content_type: Some(content_type.as_bytes()),
            content_encoding: None,
            cache_control: None,
            length: Some(10_000),
        }
    }

    #[test]
    fn each_never_compress_case() {
        let base = facts("text/html; charset=utf-8");
        let cases: &[(&str, ResponseFacts<'_>, Result<(), Skip>)] = &[
            ("html", base, Ok(())),
            ("json", facts("application/json"), Ok(())),
            ("svg", facts("image/svg+xml"), Ok(())),
            ("upper-case type", facts("Text/CSS"), Ok(())),
            ("png", facts("image/png"), Err(Skip::Type)),
            ("zip", facts("application/zip"), Err(Skip::Type)),
            ("video", facts("video/mp4"), Err(Skip::Type)),
            (
                "no type",
                ResponseFacts {
                    content_type: None,
                    ..base
                },
                Err(Skip::Type),
            ),
            (
                "204",
                ResponseFacts {
                    status: 204,
                    ..base
                },
                Err(Skip::Status),
            ),
            (
                "304",
                ResponseFacts {
                    status: 304,
                    ..base
                },
                Err(Skip::Status),
            ),
            (
                "206",
                ResponseFacts {
                    status: 206,
                    ..base
                },
                Err(Skip::Status),
            ),
            (
                "101",
                ResponseFacts {
                    status: 101,
                    ..base
                },
                Err(Skip::Status),
            ),
            (
                "404 page",
                ResponseFacts {
                    status: 404,
                    ..base
                },
                Ok(()),
            ),
            (
                "already gzip",
                ResponseFacts {
                    content_encoding: Some(b"gzip"),
                    ..base
                },
                Err(Skip::AlreadyEncoded),
            ),
            (
                "identity coding",
                ResponseFacts {
                    content_encoding: Some(b" identity"),
                    ..base
                },
                Ok(()),
            ),
            (
                "no-transform",
                ResponseFacts {
                    cache_control: Some(b"public, No-Transform"),
                    ..base
                },
                Err(Skip::NoTransform),
            ),
            (
                "other directives",
                ResponseFacts {
                    cache_control: Some(b"max-age=60"),
                    ..base
                },
                Ok(()),
            ),
            (
                "too small",
                ResponseFacts {
                    length: Some(1023),
                    ..base
                },
                Err(Skip::TooSmall),
            ),
            (
                "exactly min",
                ResponseFacts {
                    length: Some(1024),
                    ..base
                },
                Ok(()),
            ),
            (
                "unknown length",
                ResponseFacts {
                    length: None,
                    ..base
                },
                Ok(()),
            ),
        ];
        for (name, facts, want) in cases {
            assert_eq!(can_vary(facts, &types(), 1024), *want, "{name}");
        }
    }

    #[test]
    fn media_ranges() {
        assert_eq!(
            MediaRange::parse(" Text/* "),
            Some(MediaRange::AnySubtype("text/".into()))
        );
        assert_eq!(MediaRange::parse("*/*"), None);
        assert_eq!(MediaRange::parse("text"), None);
        assert_eq!(MediaRange::parse("text/html;q=1"), None);
        assert!(!is_compressible(Some(b"textual/x"), &types()));
    }

    #[test]
    fn vary_is_merged_once() {
        let cases: &[(Option<&[u8]>, &[u8])] = &[
            (None, b"Accept-Encoding"),
            (Some(b""), b"Accept-Encoding"),
            (Some(b"Origin"), b"Origin, Accept-Encoding"),
            (Some(b"origin, accept-encoding"), b"origin, accept-encoding"),
            (Some(b"*"), b"*"),
        ];
        for (existing, want) in cases {
            assert_eq!(merge_vary(*existing), want.to_vec(), "{existing:?}");
        }
    }

    #[test]
    fn etags_become_weak() {
        assert_eq!(weaken_etag(b"\"abc\""), b"W/\"abc\"".to_vec());
        assert_eq!(weaken_etag(b"W/\"abc\""), b"W/\"abc\"".to_vec());
    }
}
