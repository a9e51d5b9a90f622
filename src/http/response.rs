//! Response types: status codes with their reason phrases, and the response a handler returns.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

/// An HTTP status code. A newtype rather than an enum so upstream statuses we do not know by
/// name still round-trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(u16);

impl StatusCode {
    pub const CONTINUE: StatusCode = StatusCode(100);
    pub const OK: StatusCode = StatusCode(200);
    pub const NO_CONTENT: StatusCode = StatusCode(204);
    pub const PARTIAL_CONTENT: StatusCode = StatusCode(206);
    pub const MOVED_PERMANENTLY: StatusCode = StatusCode(301);
    pub const NOT_MODIFIED: StatusCode = StatusCode(304);
    pub const PERMANENT_REDIRECT: StatusCode = StatusCode(308);
    pub const BAD_REQUEST: StatusCode = StatusCode(400);
    pub const UNAUTHORIZED: StatusCode = StatusCode(401);
    pub const FORBIDDEN: StatusCode = StatusCode(403);
    pub const NOT_FOUND: StatusCode = StatusCode(404);
    pub const METHOD_NOT_ALLOWED: StatusCode = StatusCode(405);
    pub const REQUEST_TIMEOUT: StatusCode = StatusCode(408);
    pub const PRECONDITION_FAILED: StatusCode = StatusCode(412);
    pub const PAYLOAD_TOO_LARGE: StatusCode = StatusCode(413);
    pub const URI_TOO_LONG: StatusCode = StatusCode(414);
    pub const RANGE_NOT_SATISFIABLE: StatusCode = StatusCode(416);
    pub const EXPECTATION_FAILED: StatusCode = StatusCode(417);
    pub const TOO_MANY_REQUESTS: StatusCode = StatusCode(429);
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: StatusCode = StatusCode(431);
    pub const INTERNAL_SERVER_ERROR: StatusCode = StatusCode(500);
    pub const NOT_IMPLEMENTED: StatusCode = StatusCode(501);
    pub const BAD_GATEWAY: StatusCode = StatusCode(502);
    pub const SERVICE_UNAVAILABLE: StatusCode = StatusCode(503);
    pub const GATEWAY_TIMEOUT: StatusCode = StatusCode(504);
    pub const HTTP_VERSION_NOT_SUPPORTED: StatusCode = StatusCode(505);

    /// A status from a three-digit number; `None` outside 100..=999.
    pub fn from_u16(code: u16) -> Option<StatusCode> {
        (100..=999).contains(&code).then_some(StatusCode(code))
    }

    pub fn as_u16(self) -> u16 {
        self.0
    }

    /// RFC 9110 §6.4.1 / §15: 1xx, 204 and 304 responses never carry content.
    pub fn is_bodyless(self) -> bool {
        self.0 < 200 || self.0 == 204 || self.0 == 304
    }

    pub fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            101 => "Switching Protocols",
            200 => "OK",
            201 => "Created",
            202 => "Accepted",
            204 => "No Content",
            206 => "Partial Content",
            301 => "Moved Permanently",
            302 => "Found",
            303 => "See Other",
            304 => "Not Modified",
            307 => "Temporary Redirect",
            308 => "Permanent Redirect",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            410 => "Gone",
            411 => "Length Required",
            412 => "Precondition Failed",
            413 => "Content Too Large",
            414 => "URI Too Long",
            415 => "Unsupported Media Type",
            416 => "Range Not Satisfiable",
            417 => "Expectation Failed",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            505 => "HTTP Version Not Supported",
            _ => "",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A header value of a response: a static string, a string formatted for this response, or
/// shared bytes (a cached file's ETag) that cost a reference count rather than a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderValue(Bytes);

impl HeaderValue {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&'static str> for HeaderValue {
    fn from(value: &'static str) -> HeaderValue {
        HeaderValue(Bytes::from_static(value.as_bytes()))
    }
}

/// Shared bytes, not copied. The writer drops a value holding CR, LF or other control bytes.
impl From<Bytes> for HeaderValue {
    fn from(value: Bytes) -> HeaderValue {
        HeaderValue(value)
    }
}

impl From<String> for HeaderValue {
    fn from(value: String) -> HeaderValue {
        HeaderValue(Bytes::from(value))
    }
}

impl From<Cow<'static, str>> for HeaderValue {
    fn from(value: Cow<'static, str>) -> HeaderValue {
        match value {
            Cow::Borrowed(text) => text.into(),
            Cow::Owned(text) => text.into(),
        }
    }
}

/// What follows a response head.
#[derive(Debug)]
pub enum ResponseBody {
    /// No content at all (and `Content-Length: 0` unless the status forbids content).
    Empty,
    /// Content already in memory: small files, error pages.
    Full(Bytes),
    /// A byte range of an open file, streamed in bounded pieces.
    File {
        file: std::fs::File,
        offset: u64,
        len: u64,
    },
    /// Content made piece by piece as it is sent (compressed on the fly): its length is not
    /// known in advance, so it goes out chunked (HTTP/1.1 requests only).
    Stream(Box<dyn BodyStream>),
}

/// A body produced as it is written, one bounded piece at a time, so memory per response
/// stays bounded whatever the content's size.
pub trait BodyStream: Send {
    /// Put the next piece in `out` (emptied first; it may stay empty). `Ok(false)`: the body
    /// is over, and `out` holds its last bytes.
    fn next_piece(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool>;
}

impl fmt::Debug for dyn BodyStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BodyStream")
    }
}

impl ResponseBody {
    /// Length of the content; what `Content-Length` announces (0 for a stream, whose
    /// length is unknown: it is sent chunked).
    pub fn len(&self) -> u64 {
        match self {
            ResponseBody::Empty | ResponseBody::Stream(_) => 0,
            ResponseBody::Full(bytes) => bytes.len() as u64,
            ResponseBody::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A complete response produced by a handler. Framing headers (`Content-Length`,
/// `Connection`, `Date`, `Server`) are added by the writer, never by handlers.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, HeaderValue)>,
    pub body: ResponseBody,
}

impl Response {
    pub fn new(status: StatusCode) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: ResponseBody::Empty,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<HeaderValue>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_body(mut self, body: ResponseBody) -> Response {
        self.body = body;
        self
    }
}
