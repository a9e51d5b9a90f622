//! PURE request routing: which route takes a request (host and path prefix, first match in
//! config order) and the target to send upstream. No I/O.
//!
//! Matching uses the path with dot segments removed (RFC 3986 §5.2.4), and that same path is
//! what a backend receives, so `/static/../api/x` cannot be matched as one route and served
//! as another.

use std::borrow::Cow;

use crate::config::{RouteConfig, RouteTarget};
use crate::http::request::{Method, RequestHead};

#[derive(Debug)]
pub enum Routed<'a> {
    Static {
        route: &'a RouteConfig,
    },
    Proxy {
        route: &'a RouteConfig,
        /// Index of the upstream group (`RouteTarget::Upstream`).
        upstream: usize,
        /// Origin-form target for the backend: normalized path (prefix stripped when the
        /// route says so) and the query as received. Borrowed from the request when that is
        /// what it already is, as it nearly always is.
        target: Cow<'a, str>,
        /// The host the client asked for (absolute-form authority, else `Host`), if any.
        client_host: Option<&'a str>,
    },
    /// No route matches.
    NotFound,
    /// CONNECT: we are not a forward proxy, and the static handler takes GET and HEAD only.
    MethodNotAllowed,
}

impl Routed<'_> {
    /// The route that took the request, if one did.
    pub fn route(&self) -> Option<&RouteConfig> {
        match self {
            Routed::Static { route } | Routed::Proxy { route, .. } => Some(route),
            Routed::NotFound | Routed::MethodNotAllowed => None,
        }
    }
}

pub fn route<'a>(head: &'a RequestHead, routes: &'a [RouteConfig]) -> Routed<'a> {
    route_indexed(head, routes).1
}

/// [`route`], and the index in `routes` of the route that took the request (`None` when
/// none did), which names the request's metrics.
pub fn route_indexed<'a>(
    head: &'a RequestHead,
    routes: &'a [RouteConfig],
) -> (Option<usize>, Routed<'a>) {
    // An authority-form target has no path to match: decide before matching.
    if head.method() == Method::Connect {
        return (None, Routed::MethodNotAllowed);
    }
    let parts = TargetParts::of(head.target());
    let client_host = parts.authority.or(head.host());
    let host = client_host.map(strip_port);
    let path = remove_dot_segments(parts.path);
    let Some((index, route)) = routes.iter().enumerate().find(|(_, route)| {
        route
            .host
            .as_deref()
            .is_none_or(|want| host.is_some_and(|have| have.eq_ignore_ascii_case(want)))
            && prefix_matches(&route.path_prefix, &path)
    }) else {
        return (None, Routed::NotFound);
    };
    let routed = match &route.target {
        RouteTarget::Static => Routed::Static { route },
        RouteTarget::Upstream(upstream) => {
            let upstream = *upstream;
            let unchanged = !route.strip_prefix
                && parts.authority.is_none()
                && matches!(path, Cow::Borrowed(_));
            let path = if route.strip_prefix {
                strip_prefix(&route.path_prefix, &path)
            } else {
                path.as_ref()
            };
            let target = if unchanged || parts.asterisk {
                Cow::Borrowed(head.target())
            } else {
                Cow::Owned(format!("{path}{}", parts.query))
            };
            Routed::Proxy {
                route,
                upstream,
                target,
                client_host,
            }
        }
    };
    (Some(index), routed)
}

/// The pieces of a request target that routing needs.
struct TargetParts<'a> {
    authority: Option<&'a str>,
    path: &'a str,
    /// `?` and what follows, or empty.
    query: &'a str,
    asterisk: bool,
}

impl<'a> TargetParts<'a> {
    fn of(target: &'a str) -> TargetParts<'a> {
        if target == "*" {
            return TargetParts {
                authority: None,
                path: "/",
                query: "",
                asterisk: true,
            };
        }
        // absolute-form (RFC 9112 §3.2.2): its authority replaces Host. Origin-form, nearly
        // every request, is told by its first byte without searching for "://".
        let absolute = if target.starts_with('/') {
            None
        } else {
            target.split_once("://")
        };
        let (authority, rest) = match absolute {
            Some((_, after_scheme)) => {
                let end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
                (Some(&after_scheme[..end]), &after_scheme[end..])
            }
            _ => (None, target),
        };
        let (path, query) = match memchr::memchr(b'?', rest.as_bytes()) {
            Some(q) => (&rest[..q], &rest[q..]),
            None => (rest, ""),
        };
        let path = if path.is_empty() { "/" } else { path };
        TargetParts {
            authority,
            path,
            query,
            asterisk: false,
        }
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Whole-segment prefix match: `/api` matches `/api` and `/api/x` but not `/apix`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn strip_prefix<'p>(prefix: &str, path: &'p str) -> &'p str {
    let rest = &path[prefix.len()..];
    // Keep the slash that separated the prefix from the rest.
    if rest.starts_with('/') {
        rest
    } else if prefix.ends_with('/') && path.len() > prefix.len() {
        &path[prefix.len() - 1..]
    } else {
        "/"
    }
}

/// RFC 3986 §5.2.4 for an absolute path. Borrowed when there is nothing to remove, which is
/// almost always.
pub fn remove_dot_segments(path: &str) -> Cow<'_, str> {
    if !has_dot_segment(path) {
        return Cow::Borrowed(path);
    }
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    output.push("");
                }
            }
            ".." => {
                output.pop();
                if last {
                    output.push("");
                }
            }
            other => output.push(other),
        }
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in &output {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    Cow::Owned(normalized)
}

/// Whether a `/`-separated segment of `path` is `.` or `..`. Looks only at the dots, since
/// most paths have none and the rest have one or two (a file extension).
fn has_dot_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    memchr::memchr_iter(b'.', bytes).any(|i| {
        let segment_start = i == 0 || bytes[i - 1] == b'/';
        segment_start && matches!(&bytes[i + 1..], [] | [b'/', ..] | [b'.'] | [b'.', b'/', ..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_exactly_where_a_segment_is_dot_or_dot_dot() {
        // Every string over these bytes up to length 6, against the definition.
        let alphabet = [b'/', b'.', b'a'];
        let mut inputs = vec![String::new()];
        for _ in 0..6 {
            let longer: Vec<String> = inputs
                .iter()
                .filter(|s| s.len() == inputs.last().map_or(0, String::len))
                .flat_map(|s| {
                    alphabet.iter().map(move |&b| {
                        let mut t = s.clone();
                        t.push(char::from(b));
                        t
                    })
                })
                .collect();
            inputs.extend(longer);
        }
        assert!(inputs.len() > 1000);
        for input in &inputs {
            let expected = input.split('/').any(|s| s == "." || s == "..");
            assert_eq!(has_dot_segment(input), expected, "{input:?}");
        }
    }

    #[test]
    fn dot_segments_are_removed_and_never_climb_above_the_root() {
        for (input, expected) in [
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/..", "/"),
            ("/static/../api/x", "/api/x"),
            ("/a//b/../c", "/a//c"),
            ("/a/..b/c", "/a/..b/c"),
        ] {
            assert_eq!(remove_dot_segments(input), expected, "{input}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/users"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/api/", "/api/users"));
        assert!(!prefix_matches("/api/", "/api"));
    }

    #[test]
    fn stripping_keeps_a_rooted_path() {
        assert_eq!(strip_prefix("/api", "/api/users"), "/users");
        assert_eq!(strip_prefix("/api", "/api"), "/");
        assert_eq!(strip_prefix("/api/", "/api/users"), "/users");
        assert_eq!(strip_prefix("/api/", "/api/"), "/");
        assert_eq!(strip_prefix("/", "/x"), "/x");
    }

    #[test]
    fn target_forms_split_into_authority_path_and_query() {
        let parts = TargetParts::of("http://example.com:8080/a/b?x=1");
        assert_eq!(parts.authority, Some("example.com:8080"));
        assert_eq!((parts.path, parts.query), ("/a/b", "?x=1"));
        let parts = TargetParts::of("http://example.com?x");
        assert_eq!((parts.path, parts.query), ("/", "?x"));
        let parts = TargetParts::of("/p?q://r");
        assert_eq!(parts.authority, None);
        assert_eq!((parts.path, parts.query), ("/p", "?q://r"));
        assert!(TargetParts::of("*").asterisk);
        assert_eq!(strip_port("Example.com:80"), "Example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
