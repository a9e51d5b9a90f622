//! PURE head rewriting for the proxy, both ways: the request head a backend receives and the
//! response head the client receives. No I/O.
//!
//! Hop-by-hop fields (RFC 9110 §7.6.1) never cross: `Connection`, every field it names,
//! `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding` and `Upgrade`
//! (unless the exchange is upgrading). Framing is never copied either: the writer states the
//! one framing that matches what is actually sent, so a message that reaches the other side
//! can only be read one way.

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};

use crate::compression::{merge_vary, weaken_etag};
use crate::http::parser::{eq_ignore_case_to_lowercase, trim_ows};
use crate::http::request::{HeaderSpan, RequestFraming, RequestHead};
use crate::http::response_parser::ParsedResponse;
use crate::http::scheme::Scheme;
use crate::http::writer::{
    is_safe_value, put_decimal, put_framing_and_connection, put_status_line, ConnectionState,
    ResponseFraming,
};

/// Our entry in `Via` (RFC 9110 §7.6.3).
const VIA: &[u8] = b"1.1 sentinel";

/// The field names the proxy treats specially, told apart by length and one comparison
/// (`FieldName::of`) rather than by comparing each name with every list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldName {
    // Hop-by-hop (RFC 9110 §7.6.1) or framing: never forwarded as received.
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    TransferEncoding,
    Upgrade,
    ContentLength,
    // Request fields we replace with values of our own.
    Host,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Via,
    XRequestId,
    // Added to responses when missing.
    Date,
    Other,
}

impl FieldName {
    fn of(name: &[u8]) -> FieldName {
        use FieldName::*;
        let first = name.first().map_or(0, u8::to_ascii_lowercase);
        let (spelled, field): (&[u8], FieldName) = match (name.len(), first) {
            (2, _) => (b"te", Te),
            (3, _) => (b"via", Via),
            (4, b'h') => (b"host", Host),
            (4, b'd') => (b"date", Date),
            (6, _) => (b"expect", Expect),
            (7, b't') => (b"trailer", Trailer),
            (7, b'u') => (b"upgrade", Upgrade),
            (10, b'c') => (b"connection", Connection),
            (10, b'k') => (b"keep-alive", KeepAlive),
            (12, b'x') => (b"x-request-id", XRequestId),
            (14, _) => (b"content-length", ContentLength),
            (15, _) => (b"x-forwarded-for", XForwardedFor),
            (16, b'p') => (b"proxy-connection", ProxyConnection),
            (16, b'x') => (b"x-forwarded-host", XForwardedHost),
            (17, b't') => (b"transfer-encoding", TransferEncoding),
            (17, b'x') => (b"x-forwarded-proto", XForwardedProto),
            _ => return Other,
        };
        // Field names are tokens, as `eq_ignore_case_to_lowercase` requires.
        if eq_ignore_case_to_lowercase(name, spelled) {
            field
        } else {
            Other
        }
    }

    /// Never forwarded in either direction (`Upgrade` passes only on a switch, by the caller).
    fn is_hop_by_hop(self) -> bool {
        use FieldName::*;
        matches!(
            self,
            Connection
                | KeepAlive
                | ProxyConnection
                | Te
                | Trailer
                | TransferEncoding
                | Upgrade
                | ContentLength
        )
    }

    /// Request fields whose received values are dropped: we write our own.
    fn is_rewritten_in_requests(self) -> bool {
        use FieldName::*;
        matches!(
            self,
            Host | Expect | XForwardedFor | XForwardedProto | XForwardedHost | Via
        )
    }
}

/// What the request head sent upstream is built from, besides the client's head.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamRequest<'a> {
    /// Origin-form target (path and query) to send.
    pub target: &'a str,
    /// `Host` to send.
    pub host: &'a str,
    /// The host the client asked for, for `X-Forwarded-Host`.
    pub client_host: Option<&'a str>,
    pub client_ip: IpAddr,
    /// The `Upgrade` value to pass on when the client asked to switch protocols.
    pub upgrade: Option<&'a [u8]>,
    /// How the client reached us, for `X-Forwarded-Proto`.
    pub scheme: Scheme,
    /// The request's ID: replaces any `X-Request-Id` the client sent (it is the client's
    /// own when that was valid). `None`: IDs are off and the client's field passes as is.
    pub request_id: Option<&'a [u8]>,
}

/// Append the request head for the backend to `dst`.
pub fn encode_request_head(dst: &mut BytesMut, head: &RequestHead, request: &UpstreamRequest<'_>) {
    dst.reserve(512);
    dst.put_slice(head.method_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(request.target.as_bytes());
    dst.put_slice(b" HTTP/1.1\r\nHost: ");
    dst.put_slice(request.host.as_bytes());
    dst.put_slice(b"\r\n");

    let listed = Listed::from_fields(head.fields());
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    let mut via: Vec<&[u8]> = Vec::new();
    let (raw, spans) = head.raw_fields();
    let mut kept = KeptLines::default();
    for header in spans {
        let (name, value) = (header.name.slice(raw), header.value.slice(raw));
        let field = FieldName::of(name);
        match field {
            FieldName::XForwardedFor => forwarded_for.push(value),
            FieldName::Via => via.push(value),
            _ => {}
        }
        // Names with `_` are dropped (as nginx does): CGI-style backends map `-` and `_` to
        // the same variable, so `Transfer_Encoding` could pass for a field we removed.
        let dropped = field.is_hop_by_hop()
            || field.is_rewritten_in_requests()
            || (field == FieldName::XRequestId && request.request_id.is_some())
            || name.contains(&b'_')
            || listed.names(name);
        if !dropped {
            kept.add(dst, raw, header);
        }
    }
    kept.flush(dst, raw);

    dst.put_slice(b"X-Forwarded-For: ");
    for value in &forwarded_for {
        dst.put_slice(value);
        dst.put_slice(b", ");
    }
    put_ip(dst, request.client_ip);
    dst.put_slice(b"\r\nX-Forwarded-Proto: ");
    dst.put_slice(request.scheme.as_str().as_bytes());
    dst.put_slice(b"\r\n");
    if let Some(host) = request.client_host {
        // The client's Host value or absolute-form authority: parsed, so copied as is.
        put_parsed_field(dst, b"X-Forwarded-Host", host.as_bytes());
    }
    put_via(dst, &via);
    if let Some(id) = request.request_id {
        put_field(dst, b"X-Request-Id", id);
    }

    match head.framing() {
        RequestFraming::Length(length) => {
            dst.put_slice(b"Content-Length: ");
            put_decimal(dst, length);
            dst.put_slice(b"\r\n");
        }
        RequestFraming::Chunked => dst.put_slice(b"Transfer-Encoding: chunked\r\n"),
        // RFC 9110 §8.6: a request whose method expects content says when it has none.
        RequestFraming::Empty if head.method().expects_body() => {
            dst.put_slice(b"Content-Length: 0\r\n")
        }
        RequestFraming::Empty => {}
    }
    if let Some(protocol) = request.upgrade {
        dst.put_slice(b"Connection: upgrade\r\n");
        put_field(dst, b"Upgrade", protocol);
    }
    dst.put_slice(b"\r\n");
}

/// Fields of our own a response to the client gets, besides `Date` and `Via`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AddedFields<'a> {
    /// `(field name, backend name)` when `proxy.backend_header` is set.
    pub backend_header: Option<(&'a str, &'a str)>,
    /// The request's ID, replacing any `X-Request-Id` the backend sent.
    pub request_id: Option<&'a [u8]>,
    /// What compression on the way changes in the head.
    pub recoding: Recoding,
}

/// What compression changes in a relayed response head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recoding {
    /// The coding the body is compressed with on its way: `Content-Encoding` says it, and a
    /// strong `ETag` becomes weak (the bytes are no longer the backend's).
    pub coding: Option<&'static str>,
    /// The encoding could differ with `Accept-Encoding`: `Vary` names it (merged into the
    /// backend's own `Vary`).
    pub vary: bool,
}

impl Recoding {
    pub const NONE: Recoding = Recoding {
        coding: None,
        vary: false,
    };
}

/// Append the response head for the client to `dst`. `upstream_head` holds the bytes
/// `response` was parsed from. `Date` is added when the backend sent none.
pub fn encode_response_head(
    dst: &mut BytesMut,
    response: &ParsedResponse,
    upstream_head: &[u8],
    framing: ResponseFraming,
    connection: ConnectionState,
    date: &[u8],
    added: AddedFields<'_>,
) {
    let AddedFields {
        backend_header,
        request_id,
        recoding,
    } = added;
    dst.reserve(upstream_head.len() + 128);
    let mut vary: Vec<&[u8]> = Vec::new();
    let mut etag: Option<&[u8]> = None;
    put_status_line(dst, response.status);
    let fields = || {
        response
            .headers
            .iter()
            .map(|h| (h.name.slice(upstream_head), h.value.slice(upstream_head)))
    };
    let listed = Listed::from_fields(fields());
    let switching = response.status.as_u16() == 101;
    let mut has_date = false;
    let mut via: Vec<&[u8]> = Vec::new();
    let mut kept = KeptLines::default();
    for header in &response.headers {
        let (name, value) = (
            header.name.slice(upstream_head),
            header.value.slice(upstream_head),
        );
        let field = FieldName::of(name);
        let keep = match field {
            FieldName::Via => {
                via.push(value);
                false
            }
            FieldName::Upgrade if switching => true,
            // The client gets the ID it sent or we made, whatever the backend says.
            FieldName::XRequestId if request_id.is_some() => false,
            _ if field.is_hop_by_hop() => false,
            FieldName::Other if recoding.vary && name.eq_ignore_ascii_case(b"vary") => {
                vary.push(value);
                false
            }
            FieldName::Other if recoding.coding.is_some() && name.eq_ignore_ascii_case(b"etag") => {
                etag = Some(value);
                false
            }
            // Ours replaces a backend's `identity` (anything else is never recoded), and a
            // compressed body has no byte ranges to offer.
            FieldName::Other
                if recoding.coding.is_some()
                    && (name.eq_ignore_ascii_case(b"content-encoding")
                        || name.eq_ignore_ascii_case(b"accept-ranges")) =>
            {
                false
            }
            _ => !listed.names(name),
        };
        if keep {
            has_date |= field == FieldName::Date;
            kept.add(dst, upstream_head, header);
        }
    }
    kept.flush(dst, upstream_head);
    if !has_date {
        put_field(dst, b"Date", date);
    }
    if let Some((name, backend)) = backend_header {
        put_field(dst, name.as_bytes(), backend.as_bytes());
    }
    if let Some(id) = request_id {
        put_field(dst, b"X-Request-Id", id);
    }
    put_via(dst, &via);
    if let Some(coding) = recoding.coding {
        put_field(dst, b"Content-Encoding", coding.as_bytes());
        if let Some(etag) = etag {
            put_field(dst, b"ETag", &weaken_etag(etag));
        }
    }
    if recoding.vary {
        let existing = vary.join(&b", "[..]);
        put_field(dst, b"Vary", &merge_vary(Some(&existing)));
    }
    if switching {
        dst.put_slice(b"Connection: upgrade\r\n\r\n");
    } else {
        put_framing_and_connection(dst, framing, connection);
    }
}

/// Field lines that pass through, copied as the peer wrote them: the parser has admitted
/// every byte of each line already, and each run of adjacent kept lines goes out in one
/// copy (re-assembling each from name and value cost about 80 instructions a field).
#[derive(Default)]
struct KeptLines {
    start: usize,
    end: usize,
}

impl KeptLines {
    /// Keep the line of `header`, whose spans point into `head`.
    fn add(&mut self, dst: &mut BytesMut, head: &[u8], header: &HeaderSpan) {
        if header.name.start != self.end {
            self.flush(dst, head);
            // A field line starts with its name (the parsers refuse leading whitespace).
            self.start = header.name.start;
        }
        // The line runs on past the value's trailing whitespace, to its CRLF.
        let mut end = header.value.end;
        while matches!(head.get(end), Some(b' ' | b'\t')) {
            end += 1;
        }
        self.end = (end + 2).min(head.len());
    }

    fn flush(&mut self, dst: &mut BytesMut, head: &[u8]) {
        if let Some(lines) = head.get(self.start..self.end) {
            dst.put_slice(lines);
        }
        self.start = self.end;
    }
}

/// A field we compose (Host, Date, the backend's name): its value is checked, since it did
/// not come through a parser.
fn put_field(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    if !is_safe_value(value) {
        return;
    }
    put_parsed_field(dst, name, value);
}

/// A field as one of our parsers admitted it: names are tokens and values hold no CR, LF or
/// other control bytes already (the parsers refuse anything else), so it is copied as is.
fn put_parsed_field(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    dst.put_slice(name);
    dst.put_slice(b": ");
    dst.put_slice(value);
    dst.put_slice(b"\r\n");
}

/// The client's address for X-Forwarded-For; IPv4 digit by digit, since `Display` goes
/// through the formatting machinery for every request.
fn put_ip(dst: &mut BytesMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(ip) => {
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    dst.put_u8(b'.');
                }
                put_decimal(dst, u64::from(octet));
            }
        }
        // Formatting into the buffer itself cannot fail.
        IpAddr::V6(ip) => {
            let _ = std::fmt::Write::write_fmt(dst, format_args!("{ip}"));
        }
    }
}

fn put_via(dst: &mut BytesMut, existing: &[&[u8]]) {
    dst.put_slice(b"Via: ");
    for value in existing {
        dst.put_slice(value);
        dst.put_slice(b", ");
    }
    dst.put_slice(VIA);
    dst.put_slice(b"\r\n");
}

/// The field names listed in every `Connection` field, compared case-insensitively. The
/// usual one or two tokens (`keep-alive`, `close`, `upgrade`) are held without allocating.
struct Listed<'a> {
    inline: [&'a [u8]; 4],
    len: usize,
    more: Vec<&'a [u8]>,
}

impl<'a> Listed<'a> {
    fn from_fields(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Listed<'a> {
        let mut listed = Listed {
            inline: [&[]; 4],
            len: 0,
            more: Vec::new(),
        };
        for (name, value) in fields {
            // The length alone turns away nearly every other field.
            if name.len() != b"connection".len() || FieldName::of(name) != FieldName::Connection {
                continue;
            }
            for token in value.split(|&b| b == b',').map(trim_ows) {
                // Hop-by-hop names (`keep-alive`, `upgrade`) are dropped, or kept for a
                // switch, whether listed or not: only the others need remembering.
                if token.is_empty() || FieldName::of(token).is_hop_by_hop() {
                    continue;
                }
                if listed.len < listed.inline.len() {
                    listed.inline[listed.len] = token;
                    listed.len += 1;
                } else {
                    listed.more.push(token);
                }
            }
        }
        listed
    }

    fn names(&self, name: &[u8]) -> bool {
        self.inline[..self.len]
            .iter()
            .any(|token| token.eq_ignore_ascii_case(name))
            || self
                .more
                .iter()
                .any(|token| token.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parser::{parse_request, ParseLimits, Status};
    use crate::http::request::Version;
    use crate::http::response_parser::{parse_response, ResponseLimits, ResponseStatus};

    fn request(raw: &[u8]) -> RequestHead {
        match parse_request(raw, &ParseLimits::default()).unwrap() {
            Status::Complete(parsed, used) => {
                RequestHead::new(bytes::Bytes::copy_from_slice(&raw[..used]), parsed)
            }
            Status::Partial => panic!("partial"),
        }
    }

    fn upstream_text(raw: &[u8], upgrade: Option<&[u8]>) -> String {
        upstream_text_over(raw, upgrade, Scheme::Http)
    }

    fn upstream_text_over(raw: &[u8], upgrade: Option<&[u8]>, scheme: Scheme) -> String {
        let head = request(raw);
        let mut dst = BytesMut::new();
        encode_request_head(
            &mut dst,
            &head,
            &UpstreamRequest {
                target: "/x?y",
                host: head.host().unwrap_or("backend:1"),
                client_host: head.host(),
                client_ip: "10.0.0.9".parse().unwrap(),
                upgrade,
                scheme,
                request_id: None,
            },
        );
        String::from_utf8(dst.to_vec()).unwrap()
    }

    #[test]
    fn the_request_id_replaces_the_clients_field_both_ways() {
        let head = request(
            b"GET /a HTTP/1.1\r\nHost: site\r\nx-request-id: theirs\r\nAccept: */*\r\n\r\n",
        );
        let mut dst = BytesMut::new();
        let upstream = UpstreamRequest {
            target: "/a",
            host: "site",
            client_host: None,
            client_ip: "10.0.0.9".parse().unwrap(),
            upgrade: None,
            scheme: Scheme::Http,
            request_id: Some(b"ours"),
        };
        encode_request_head(&mut dst, &head, &upstream);
        let text = String::from_utf8(dst.to_vec()).unwrap();
        assert!(!text.contains("theirs"), "{text}");
        assert_eq!(text.matches("X-Request-Id: ours\r\n").count(), 1, "{text}");
        // Off: the client's field passes untouched.
        let mut dst = BytesMut::new();
        encode_request_head(
            &mut dst,
            &head,
            &UpstreamRequest {
                request_id: None,
                ..upstream
            },
        );
        assert!(String::from_utf8(dst.to_vec())
            .unwrap()
            .contains("x-request-id: theirs\r\n"));

        let raw = b"HTTP/1.1 200 OK\r\nX-Request-Id: backend\r\nContent-Length: 0\r\n\r\n";
        let limits = ResponseLimits {
            max_head_bytes: 4096,
            max_headers: 32,
        };
        let ResponseStatus::Complete(parsed, _) = parse_response(raw, &limits).unwrap() else {
            panic!("partial");
        };
        let mut dst = BytesMut::new();
        let connection = ConnectionState {
            request_version: Version::Http11,
            keep_alive: true,
        };
        encode_response_head(
            &mut dst,
            &parsed,
            raw,
            ResponseFraming::Length(0),
            connection,
            b"DATE",
            AddedFields {
                backend_header: None,
                request_id: Some(b"ours"),
                recoding: Recoding::NONE,
            },
        );
        let text = String::from_utf8(dst.to_vec()).unwrap();
        assert!(!text.contains("backend"), "{text}");
        assert_eq!(text.matches("X-Request-Id: ours\r\n").count(), 1, "{text}");
    }

    #[test]
    fn hop_by_hop_fields_and_the_fields_connection_names_are_removed() {
        let text = upstream_text(
            b"GET /a HTTP/1.1\r\nHost: site\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
              Keep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: h2c\r\n\
              Accept: */*\r\nX_Forwarded_For: 6.6.6.6\r\nTransfer_Encoding: chunked\r\n\r\n",
            None,
        );
        assert_eq!(
            text,
            "GET /x?y HTTP/1.1\r\nHost: site\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.9\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: site\r\nVia: 1.1 sentinel\r\n\r\n"
        );
    }

    #[test]
    fn a_request_that_came_over_tls_is_forwarded_as_https_whatever_the_client_claims() {
        let text = upstream_text_over(
            b"GET /a HTTP/1.1\r\nHost: site\r\nX-Forwarded-Proto: http\r\n\r\n",
            None,
            Scheme::Https,
        );
        assert_eq!(text.matches("X-Forwarded-Proto").count(), 1, "{text}");
        assert!(text.contains("X-Forwarded-Proto: https\r\n"), "{text}");
    }

    #[test]
    fn forwarding_fields_are_appended_to_and_spoofed_ones_replaced() {
        let text = upstream_text(
            b"POST /a HTTP/1.1\r\nHost: site\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n\
              X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nVia: 1.0 edge\r\nContent-Length: 3\r\n\r\n",
            None,
        );
        assert!(
            text.contains("X-Forwarded-For: 1.2.3.4, 5.6.7.8, 10.0.0.9\r\n"),
            "{text}"
        );
        assert!(text.contains("X-Forwarded-Proto: http\r\n"));
        assert!(!text.contains("https") && !text.contains("evil"), "{text}");
        assert!(text.contains("Via: 1.0 edge, 1.1 sentinel\r\n"));
        assert_eq!(text.matches("Content-Length").count(), 1);
        assert!(text.contains("Content-Length: 3\r\n"));
    }

    #[test]
    fn exactly_one_framing_is_stated() {
        let text = upstream_text(
            b"POST /a HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n",
            None,
        );
        assert_eq!(text.matches("Transfer-Encoding: chunked").count(), 1);
        assert!(!text.contains("Content-Length"));
        let text = upstream_text(b"POST /a HTTP/1.1\r\nHost: s\r\n\r\n", None);
        assert!(text.contains("Content-Length: 0\r\n"));
        let text = upstream_text(
            b"GET /a HTTP/1.1\r\nHost: s\r\nExpect: 100-continue\r\n\r\n",
            None,
        );
        assert!(
            !text.contains("Content-Length") && !text.contains("Expect"),
            "{text}"
        );
    }

    #[test]
    fn upgrade_passes_only_when_upgrading() {
        let raw =
            b"GET /ws HTTP/1.1\r\nHost: s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let text = upstream_text(raw, Some(b"websocket"));
        assert!(
            text.ends_with("Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
            "{text}"
        );
        let text = upstream_text(raw, None);
        assert!(
            !text.contains("Upgrade") && !text.contains("pgrade"),
            "{text}"
        );
    }

    fn response_text(raw: &[u8], framing: ResponseFraming, keep_alive: bool) -> String {
        let limits = ResponseLimits {
            max_head_bytes: 4096,
            max_headers: 32,
        };
        let ResponseStatus::Complete(parsed, _) = parse_response(raw, &limits).unwrap() else {
            panic!("partial");
        };
        let mut dst = BytesMut::new();
        let connection = ConnectionState {
            request_version: Version::Http11,
            keep_alive,
        };
        encode_response_head(
            &mut dst,
            &parsed,
            raw,
            framing,
            connection,
            b"DATE",
            AddedFields::default(),
        );
        String::from_utf8(dst.to_vec()).unwrap()
    }

    #[test]
    fn response_framing_is_ours_and_hop_by_hop_fields_stay_behind() {
        let text = response_text(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n\
              Keep-Alive: timeout=5\r\nContent-Type: text/plain\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
            ResponseFraming::Chunked,
            true,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Via: 1.1 sentinel\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let text = response_text(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            ResponseFraming::Length(5),
            false,
        );
        assert!(text.contains("Date: DATE\r\n"));
        assert!(
            text.ends_with("Content-Length: 5\r\nConnection: close\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn kept_response_fields_are_copied_as_the_backend_wrote_them() {
        let text = response_text(
            b"HTTP/1.1 200 OK\r\nA:1\r\nB:  two \t\r\nConnection: keep-alive\r\nC: 3\r\n\
              Keep-Alive: timeout=5\r\nVia: 1.0 a\r\nD: 4\r\nE: 5\r\nContent-Length: 0\r\n\r\n",
            ResponseFraming::Length(0),
            true,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nA:1\r\nB:  two \t\r\nC: 3\r\nD: 4\r\nE: 5\r\nDate: DATE\r\n\
             Via: 1.0 a, 1.1 sentinel\r\nContent-Length: 0\r\n\r\n"
        );
        // Nothing kept, and everything kept.
        let text = response_text(
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
            ResponseFraming::Bodyless,
            true,
        );
        assert_eq!(
            text,
            "HTTP/1.1 204 No Content\r\nDate: DATE\r\nVia: 1.1 sentinel\r\n\r\n"
        );
        let text = response_text(
            b"HTTP/1.1 204 No Content\r\nDate: x\r\nX: y\r\n\r\n",
            ResponseFraming::Bodyless,
            true,
        );
        assert_eq!(
            text,
            "HTTP/1.1 204 No Content\r\nDate: x\r\nX: y\r\nVia: 1.1 sentinel\r\n\r\n"
        );
    }

    #[test]
    fn switching_protocols_keeps_upgrade() {
        let text = response_text(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: abc\r\n\r\n",
            ResponseFraming::Bodyless,
            true,
        );
        assert!(
            text.starts_with("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"),
            "{text}"
        );
        assert!(text.contains("Sec-WebSocket-Accept: abc\r\n"));
        assert!(text.ends_with("Connection: upgrade\r\n\r\n"));
    }

    #[test]
    fn field_names_are_classified_by_their_spelling_in_any_case() {
        use FieldName::*;
        let known = [
            ("connection", Connection),
            ("keep-alive", KeepAlive),
            ("proxy-connection", ProxyConnection),
            ("te", Te),
            ("trailer", Trailer),
            ("transfer-encoding", TransferEncoding),
            ("upgrade", Upgrade),
            ("content-length", ContentLength),
            ("host", Host),
            ("expect", Expect),
            ("x-forwarded-for", XForwardedFor),
            ("x-forwarded-proto", XForwardedProto),
            ("x-forwarded-host", XForwardedHost),
            ("via", Via),
            ("date", Date),
        ];
        for (name, field) in known {
            assert_eq!(FieldName::of(name.as_bytes()), field, "{name}");
            let upper = name.to_ascii_uppercase();
            assert_eq!(FieldName::of(upper.as_bytes()), field, "{upper}");
            // Same length, one byte off, anywhere: not the field.
            for i in 0..name.len() {
                let mut near = name.as_bytes().to_vec();
                near[i] = b'z';
                assert_eq!(FieldName::of(&near), Other, "{near:?}");
            }
        }
        for other in [
            "",
            "t",
            "tee",
            "hosts",
            "dates",
            "accept",
            "content-type",
            "x-forwarded",
        ] {
            assert_eq!(FieldName::of(other.as_bytes()), Other, "{other}");
        }
    }

    #[test]
    fn kept_request_fields_are_copied_as_the_client_wrote_them() {
        let text = upstream_text(
            b"GET / HTTP/1.1\r\nA:1\r\nHost: s\r\nB:  two \t\r\nC:\r\nTE: x\r\nD: 4 \r\n\r\n",
            None,
        );
        assert_eq!(
            text,
            "GET /x?y HTTP/1.1\r\nHost: s\r\nA:1\r\nB:  two \t\r\nC:\r\nD: 4 \r\n\
             X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: s\r\n\
             Via: 1.1 sentinel\r\n\r\n"
        );
    }

    #[test]
    fn connection_may_list_many_fields() {
        let text = upstream_text(
            b"GET / HTTP/1.1\r\nHost: s\r\nConnection: a, b, c\r\nConnection: d,e, ,f\r\n\
              A: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\n\r\n",
            None,
        );
        for gone in ["A:", "B:", "C:", "D:", "E:", "F:", "Connection"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        assert!(text.contains("G: 1\r\n"), "{text}");
    }

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.9",
            "192.168.100.1",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut dst = BytesMut::new();
            put_ip(&mut dst, ip);
            assert_eq!(&dst[..], ip.to_string().as_bytes());
        }
    }
}
