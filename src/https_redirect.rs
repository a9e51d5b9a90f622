//! PURE: the answer of the plain listener when `tls.redirect_http` is on: `308 Permanent
//! Redirect` to the same host, path and query over HTTPS. 308 rather than 301 because a
//! client must repeat the request with the same method and body (RFC 9110 §15.4.9), and a
//! POST turned into a GET would lose its body silently.

use crate::fault::Fault;
use crate::http::request::{Method, RequestHead};
use crate::http::response::{Response, StatusCode};
use crate::http::scheme::Scheme;

/// The redirect for `head` to `port` (omitted when it is 443, HTTPS's default).
pub fn respond(head: &RequestHead, port: u16) -> Result<Response, Fault> {
    // An authority-form target names a tunnel, not a resource: there is nothing to redirect.
    if head.method() == Method::Connect {
        return Err(Fault::MethodNotAllowed);
    }
    let location = location(head.target(), head.host(), port).ok_or(Fault::NoHostToRedirect)?;
    Ok(Response::new(StatusCode::PERMANENT_REDIRECT).with_header("Location", location))
}

/// `https://host[:port]/path?query` for a request with `target` and `Host` value `host`,
/// or `None` when the request names no host. The parser has admitted the target's and
/// Host's bytes already, so they go into the header as they are.
fn location(target: &str, host: Option<&str>, port: u16) -> Option<String> {
    // absolute-form (RFC 9112 §3.2.2): its authority replaces Host.
    let (authority, path) = match target.split_once("://") {
        Some((_, rest)) if !target.starts_with('/') => {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            (Some(&rest[..end]), &rest[end..])
        }
        _ => (None, target),
    };
    let authority = authority.or(host).filter(|a| !a.is_empty())?;
    let host = without_port(authority);
    if host.is_empty() {
        return None;
    }
    let path = match path {
        "" | "*" => "/",
        path if path.starts_with('?') => return Some(join(host, port, &format!("/{path}"))),
        path => path,
    };
    Some(join(host, port, path))
}

fn join(host: &str, port: u16, path: &str) -> String {
    let scheme = Scheme::Https;
    if port == scheme.default_port() {
        format!("{}://{host}{path}", scheme.as_str())
    } else {
        format!("{}://{host}:{port}{path}", scheme.as_str())
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
fn without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_path_and_query_and_swaps_the_port() {
        let cases = [
            (
                "/a/b?x=1&y=%20",
                Some("example.com"),
                443,
                "https://example.com/a/b?x=1&y=%20",
            ),
            (
                "/",
                Some("example.com:8080"),
                8443,
                "https://example.com:8443/",
            ),
            ("/p", Some("[::1]:8080"), 8443, "https://[::1]:8443/p"),
            ("/p", Some("[::1]"), 443, "https://[::1]/p"),
            (
                "http://other.test:80/x?q",
                Some("ignored"),
                443,
                "https://other.test/x?q",
            ),
            ("http://other.test", None, 443, "https://other.test/"),
            (
                "http://other.test?q=1",
                None,
                443,
                "https://other.test/?q=1",
            ),
            ("*", Some("example.com"), 443, "https://example.com/"),
        ];
        for (target, host, port, want) in cases {
            assert_eq!(
                location(target, host, port).as_deref(),
                Some(want),
                "{target} {host:?}"
            );
        }
    }

    #[test]
    fn no_host_no_redirect() {
        assert_eq!(location("/x", None, 443), None);
        assert_eq!(location("/x", Some(""), 443), None);
        assert_eq!(location("/x", Some(":80"), 443), None);
    }
}
