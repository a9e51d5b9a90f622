//! The parsed request head: method, target, version and header fields as spans over the
//! received bytes (no per-header allocation), plus the framing facts the parser derived.

use bytes::Bytes;

/// A byte range inside the head buffer. `Copy` and two words, so a header is four words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The bytes this span covers; empty if the span does not fit `buf`, so a mismatched
    /// buffer can never panic.
    pub fn slice(self, buf: &[u8]) -> &[u8] {
        buf.get(self.start..self.end).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    /// An extension method: a valid token we have no name for.
    Other,
}

impl Method {
    pub(crate) fn from_token(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"CONNECT" => Method::Connect,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    /// The method's name, for the methods we know by name (methods are case-sensitive, so
    /// this is exactly the token received).
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other => return None,
        })
    }

    /// RFC 9110 §9.2.2: methods whose repetition has the same effect as one request.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }

    /// Methods whose requests normally carry content, so an empty one is worth stating.
    pub fn expects_body(self) -> bool {
        matches!(self, Method::Post | Method::Put | Method::Patch)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the request body is delimited (RFC 9112 §6.3). Exactly one is ever chosen; a head
/// that would allow two readings is rejected by the parser instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No Content-Length and no Transfer-Encoding: the body is empty.
    Empty,
    Length(u64),
    Chunked,
}

/// The tokens of the `Connection` header that change how this connection behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSpan {
    pub name: Span,
    pub value: Span,
}

/// What the parser found in a head, as spans into the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHead {
    pub method: Method,
    pub method_span: Span,
    pub target: Span,
    pub version: Version,
    pub headers: Vec<HeaderSpan>,
    pub framing: RequestFraming,
    pub host: Option<Span>,
    pub connection: ConnectionOptions,
    pub expect_continue: bool,
}

/// A request head that owns its bytes: a share of the connection's read buffer when body
/// bytes or a pipelined request follow it, else a copy of its own (the buffer then goes back
/// to the pool while the request is served).
#[derive(Debug, Clone)]
pub struct RequestHead {
    bytes: Bytes,
    parsed: ParsedHead,
}

impl RequestHead {
    /// `bytes` must be the buffer (or its prefix) the head was parsed from.
    pub fn new(bytes: Bytes, parsed: ParsedHead) -> RequestHead {
        RequestHead { bytes, parsed }
    }

    pub fn method(&self) -> Method {
        self.parsed.method
    }

    pub fn method_str(&self) -> &str {
        self.parsed
            .method
            .name()
            .unwrap_or_else(|| self.str_of(self.parsed.method_span))
    }

    /// The request target exactly as received (origin-, absolute-, authority- or asterisk-form).
    pub fn target(&self) -> &str {
        self.str_of(self.parsed.target)
    }

    pub fn version(&self) -> Version {
        self.parsed.version
    }

    pub fn framing(&self) -> RequestFraming {
        self.parsed.framing
    }

    /// Bytes of the head as received, request line to the empty line.
    pub fn head_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn expects_continue(&self) -> bool {
        self.parsed.expect_continue
    }

    pub fn connection_options(&self) -> ConnectionOptions {
        self.parsed.connection
    }

    /// The Host header's value, if one was sent.
    pub fn host(&self) -> Option<&str> {
        self.parsed.host.map(|span| self.str_of(span))
    }

    /// RFC 9112 §9.3: persistence is the default in 1.1 and opt-in in 1.0.
    pub fn wants_keep_alive(&self) -> bool {
        let options = self.parsed.connection;
        match self.parsed.version {
            Version::Http11 => !options.close,
            Version::Http10 => options.keep_alive && !options.close,
        }
    }

    /// All header fields in order, names as sent (compare case-insensitively).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.parsed
            .headers
            .iter()
            .map(|h| (self.str_of(h.name), h.value.slice(&self.bytes)))
    }

    /// The bytes the head was parsed from and its fields' spans into them: for copying field
    /// lines as received.
    pub fn raw_fields(&self) -> (&[u8], &[HeaderSpan]) {
        (&self.bytes, &self.parsed.headers)
    }

    /// All header fields in order as bytes: the same as `headers()` without turning each
    /// name into a `str` (for code that walks every field on every request).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.parsed
            .headers
            .iter()
            .map(|h| (h.name.slice(&self.bytes), h.value.slice(&self.bytes)))
    }

    /// The method token, the target and the Host value (empty without one) as shares of
    /// the head's bytes: a count, not a copy, for what keeps them past a borrow of the head
    /// (the plugins' header maps).
    pub fn shared_request_line(&self) -> (Bytes, Bytes, Bytes) {
        let host = self
            .parsed
            .host
            .map_or_else(Bytes::new, |span| self.share(span));
        (
            self.share(self.parsed.method_span),
            self.share(self.parsed.target),
            host,
        )
    }

    /// The fields as `fields()` does, as shares of the head's bytes.
    pub fn shared_fields(&self) -> impl Iterator<Item = (Bytes, Bytes)> + '_ {
        self.parsed
            .headers
            .iter()
            .map(|h| (self.share(h.name), self.share(h.value)))
    }

    /// Empty if the span does not fit the bytes, as `Span::slice`.
    fn share(&self, span: Span) -> Bytes {
        if span.start <= span.end && span.end <= self.bytes.len() {
            self.bytes.slice(span.start..span.end)
        } else {
            Bytes::new()
        }
    }

    /// The value of the first field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn header_count(&self) -> usize {
        self.parsed.headers.len()
    }

    /// The parser only admits tokens and visible ASCII in these spans, so the UTF-8 check
    /// cannot fail; the fallback keeps that an invariant rather than a panic.
    fn str_of(&self, span: Span) -> &str {
        std::str::from_utf8(span.slice(&self.bytes)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_method_is_named_exactly_as_its_token() {
        for token in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            let method = Method::from_token(token.as_bytes());
            assert_ne!(method, Method::Other, "{token}");
            assert_eq!(method.name(), Some(token));
        }
        for token in ["get", "PROPFIND", "GETX"] {
            assert_eq!(Method::from_token(token.as_bytes()).name(), None, "{token}");
        }
    }
}
