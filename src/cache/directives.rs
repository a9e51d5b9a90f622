//! PURE `Cache-Control` parsing (RFC 9111 §5.2) for requests and responses: every field line
//! of the message in, the directives a shared cache acts on out. The parse never fails: an
//! unknown directive is ignored (§5.2.3), and a malformed or conflicting freshness directive
//! makes the response stale rather than fresh, which is the safe reading (§4.2.1, §1.2.2).

use crate::http::parser::trim_ows;

/// Seconds as a cache counts them: a delta above 2³¹ is taken as 2³¹ (RFC 9111 §1.2.2).
pub type Seconds = u32;

/// The largest delta-seconds a cache has to represent (RFC 9111 §1.2.2).
const MAX_DELTA_SECONDS: Seconds = 1 << 31;

/// `max-stale` on a request: any staleness, or at most this much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    Any,
    Seconds(Seconds),
}

/// The directives of one message's `Cache-Control` lines, request and response directives
/// together (each side reads its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<Seconds>,
    pub s_maxage: Option<Seconds>,
    pub no_store: bool,
    /// Qualified or not: `no-cache="Set-Cookie"` is treated as unqualified, which §5.2.2.4
    /// allows and which never serves a field the origin wanted revalidated.
    pub no_cache: bool,
    /// Qualified or not: a shared cache does not store a `private` response at all.
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub no_transform: bool,
    pub stale_while_revalidate: Option<Seconds>,
    pub stale_if_error: Option<Seconds>,
    pub max_stale: Option<MaxStale>,
    pub min_fresh: Option<Seconds>,
    pub only_if_cached: bool,
}

impl CacheControl {
    /// Parse every `Cache-Control` field line of a message, in order.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> CacheControl {
        let mut cc = CacheControl::default();
        for line in lines {
            for (name, value) in directives(line) {
                cc.apply(name, value);
            }
        }
        cc
    }

    fn apply(&mut self, name: &[u8], value: Option<Value<'_>>) {
        let is = |expected: &str| name.eq_ignore_ascii_case(expected.as_bytes());
        if is("max-age") {
            conflict_is_stale(&mut self.max_age, delta(value));
        } else if is("s-maxage") {
            conflict_is_stale(&mut self.s_maxage, delta(value));
        } else if is("no-store") {
            self.no_store = true;
        } else if is("no-cache") {
            self.no_cache = true;
        } else if is("private") {
            self.private = true;
        } else if is("public") {
            self.public = true;
        } else if is("must-revalidate") {
            self.must_revalidate = true;
        } else if is("proxy-revalidate") {
            self.proxy_revalidate = true;
        } else if is("must-understand") {
            self.must_understand = true;
        } else if is("no-transform") {
            self.no_transform = true;
        } else if is("stale-while-revalidate") {
            // A malformed window grants nothing: serving stale is an extension, not a default.
            smallest(&mut self.stale_while_revalidate, delta(value));
        } else if is("stale-if-error") {
            smallest(&mut self.stale_if_error, delta(value));
        } else if is("max-stale") {
            self.max_stale = match (value, self.max_stale) {
                (None, _) => Some(MaxStale::Any),
                (Some(v), previous) => match (parse_delta(v), previous) {
                    (Some(s), Some(MaxStale::Seconds(p))) => Some(MaxStale::Seconds(s.min(p))),
                    (Some(s), None) => Some(MaxStale::Seconds(s)),
                    // Malformed: ask for no stale answer at all.
                    (None, _) => Some(MaxStale::Seconds(0)),
                    (Some(_), Some(MaxStale::Any)) => Some(MaxStale::Any),
                },
            };
        } else if is("min-fresh") {
            // Malformed or repeated: the strictest reading (the largest demand).
            let asked = delta(value).unwrap_or(MAX_DELTA_SECONDS);
            self.min_fresh = Some(self.min_fresh.map_or(asked, |m| m.max(asked)));
        } else if is("only-if-cached") {
            self.only_if_cached = true;
        }
    }
}

/// A directive's argument: a token, or the inside of a quoted-string (escapes not undone:
/// no directive we read has a value that needs them).
type Value<'a> = &'a [u8];

/// A delta-seconds argument, or `None` when absent or malformed.
fn delta(value: Option<Value<'_>>) -> Option<Seconds> {
    value.and_then(parse_delta)
}

fn parse_delta(value: &[u8]) -> Option<Seconds> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut seconds: u64 = 0;
    for digit in value {
        seconds = (seconds * 10 + u64::from(digit - b'0')).min(u64::from(MAX_DELTA_SECONDS));
    }
    Some(seconds as Seconds)
}

/// `max-age`/`s-maxage`: a malformed value, or two different values, make the response stale
/// (RFC 9111 §4.2.1 lets a cache take the first or consider the response stale; stale is the
/// reading that never serves what the origin did not mean to be served).
fn conflict_is_stale(slot: &mut Option<Seconds>, parsed: Option<Seconds>) {
    *slot = match (*slot, parsed) {
        (None, Some(s)) => Some(s),
        (Some(a), Some(b)) if a == b => Some(a),
        _ => Some(0),
    };
}

fn smallest(slot: &mut Option<Seconds>, parsed: Option<Seconds>) {
    let parsed = parsed.unwrap_or(0);
    *slot = Some(slot.map_or(parsed, |s| s.min(parsed)));
}

/// The `name[=value]` items of one field line, split at commas outside quoted-strings.
fn directives(line: &[u8]) -> impl Iterator<Item = (&[u8], Option<Value<'_>>)> {
    let mut rest = line;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let end = item_end(rest);
        let item = trim_ows(&rest[..end]);
        rest = rest.get(end + 1..).unwrap_or_default();
        if item.is_empty() {
            continue;
        }
        return Some(match item.iter().position(|&b| b == b'=') {
            None => (item, None),
            Some(eq) => {
                let value = trim_ows(&item[eq + 1..]);
                let value = value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value);
                (trim_ows(&item[..eq]), Some(value))
            }
        });
    })
}

/// Where the item starting at `bytes[0]` ends: the first comma outside a quoted-string (with
/// backslash escapes), or the end.
fn item_end(bytes: &[u8]) -> usize {
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        match (quoted, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, false, b'"') => quoted = !quoted,
            (false, _, b',') => return i,
            _ => {}
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(lines: &[&str]) -> CacheControl {
        CacheControl::parse(lines.iter().map(|l| l.as_bytes()))
    }

    #[test]
    fn response_directives_are_read_case_insensitively_across_lines() {
        let parsed = cc(&["Public, MAX-AGE=60", "s-maxage=\"120\", must-revalidate"]);
        assert!(parsed.public && parsed.must_revalidate);
        assert_eq!(parsed.max_age, Some(60));
        assert_eq!(parsed.s_maxage, Some(120));
        assert!(!parsed.no_store && !parsed.private && !parsed.no_cache);
    }

    #[test]
    fn commas_inside_quoted_strings_do_not_split_directives() {
        let parsed = cc(&["no-cache=\"Set-Cookie, X-A\", max-age=5, private=\"a,\\\"b\""]);
        assert!(parsed.no_cache && parsed.private);
        assert_eq!(parsed.max_age, Some(5));
    }

    #[test]
    fn malformed_or_conflicting_freshness_is_stale() {
        for lines in [
            &["max-age=abc"][..],
            &["max-age="],
            &["max-age"],
            &["max-age=-1"],
            &["max-age=10, max-age=20"],
            &["max-age=10", "max-age=1 0"],
        ] {
            assert_eq!(cc(lines).max_age, Some(0), "{lines:?}");
        }
        assert_eq!(cc(&["max-age=10, max-age=10"]).max_age, Some(10));
        assert_eq!(cc(&["s-maxage=x"]).s_maxage, Some(0));
    }

    #[test]
    fn huge_deltas_are_capped_at_two_to_the_31() {
        assert_eq!(
            cc(&["max-age=99999999999999999999999"]).max_age,
            Some(MAX_DELTA_SECONDS)
        );
    }

    #[test]
    fn stale_windows_take_the_smallest_and_a_malformed_one_grants_nothing() {
        let parsed = cc(&["stale-while-revalidate=30, stale-if-error=600, stale-if-error=60"]);
        assert_eq!(parsed.stale_while_revalidate, Some(30));
        assert_eq!(parsed.stale_if_error, Some(60));
        assert_eq!(
            cc(&["stale-while-revalidate=x"]).stale_while_revalidate,
            Some(0)
        );
    }

    #[test]
    fn request_directives() {
        let parsed = cc(&["max-stale, min-fresh=5, only-if-cached, no-store"]);
        assert_eq!(parsed.max_stale, Some(MaxStale::Any));
        assert_eq!(parsed.min_fresh, Some(5));
        assert!(parsed.only_if_cached && parsed.no_store);
        assert_eq!(
            cc(&["max-stale=10, max-stale=3"]).max_stale,
            Some(MaxStale::Seconds(3))
        );
        assert_eq!(cc(&["max-stale=x"]).max_stale, Some(MaxStale::Seconds(0)));
        assert_eq!(cc(&["min-fresh=1, min-fresh=9"]).min_fresh, Some(9));
    }

    #[test]
    fn unknown_and_empty_items_are_ignored() {
        let parsed = cc(&[" , ,community=\"UCI\", max-age=3 ,,", ""]);
        assert_eq!(parsed.max_age, Some(3));
        assert_eq!(
            CacheControl {
                max_age: Some(3),
                ..Default::default()
            },
            parsed
        );
    }

    #[test]
    fn any_bytes_parse_without_panicking() {
        let samples: [&[u8]; 6] = [
            b"\"",
            b"=",
            b"max-age=\"",
            b"\\,\"\\",
            b"\xff\xfe=\x00",
            b"a=\"b",
        ];
        for sample in samples {
            let _ = CacheControl::parse([sample]);
        }
    }
}
