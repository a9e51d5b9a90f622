//! PURE request and response heads with their field lines replaced (the plugins' edits,
//! issue 21): written once, and not parsed again when what a parse would find is known in
//! advance.
//!
//! A head a plugin edited used to be re-serialised and parsed in full, the request by the
//! client parser, the response by the upstream one. When the start line is the one already
//! parsed, every field line is a plain token and field value, and the fields the parsers
//! act on (`NotableField`: the framing fields, Host, Connection, Expect) are the same ones,
//! in the same order, with the same values, as in the head already parsed, that parse can
//! only find what it found before, at the new offsets; those are known as the lines are
//! written. Anything else (a framing or Host field touched, a value with a CR, a head near
//! a limit) returns `None` and the caller parses in full, so a plugin still cannot send
//! what a client could not (ADR 0018, ADR 0020). The tests compare every fast answer with
//! the full parse of the same bytes.

use bytes::{BufMut, BytesMut};

use super::parser::{is_field_value, is_token, NotableField, ParseLimits};
use super::request::{HeaderSpan, ParsedHead, RequestHead, Span, Version};
use super::response::StatusCode;
use super::response_parser::{ParsedResponse, ResponseLimits};

/// How a field line's name is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameCase {
    /// As received (a field the plugins did not see as theirs).
    AsGiven,
    /// Lower-cased, as the plugins' header maps hand names over (and Envoy forwards them).
    Lower,
}

/// One field line; the spans it was written at.
pub fn put_field_line(out: &mut BytesMut, name: &[u8], value: &[u8], case: NameCase) -> HeaderSpan {
    let start = out.len();
    out.put_slice(name);
    if case == NameCase::Lower {
        if let Some(written) = out.get_mut(start..) {
            written.make_ascii_lowercase();
        }
    }
    out.put_slice(b": ");
    let value_start = out.len();
    out.put_slice(value);
    let spans = HeaderSpan {
        name: Span::new(start, start + name.len()),
        value: Span::new(value_start, value_start + value.len()),
    };
    out.put_slice(b"\r\n");
    spans
}

/// The request line of a rebuilt head.
pub fn put_request_line(out: &mut BytesMut, method: &[u8], target: &[u8], version: Version) {
    out.put_slice(method);
    out.put_u8(b' ');
    out.put_slice(target);
    out.put_u8(b' ');
    out.put_slice(version.as_str().as_bytes());
    out.put_slice(b"\r\n");
}

/// A field line a parse reads back exactly as written: a token for a name and a field
/// value with no whitespace to trim at either end (the parser would move the value's span).
fn is_plain_field(name: &[u8], value: &[u8]) -> bool {
    is_token(name)
        && is_field_value(value)
        && !matches!(value.first(), Some(b' ' | b'\t'))
        && !matches!(value.last(), Some(b' ' | b'\t'))
}

/// Whether `part` lies inside `whole` (is a slice of it, not just equal bytes).
fn is_within(part: &[u8], whole: &[u8]) -> bool {
    let (start, end) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
    let (whole_start, whole_end) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    !part.is_empty() && whole_start <= start && end <= whole_end
}

/// The fields a parser acts on, in order, with their values; `fields` must be tokens.
fn notable<'a>(
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> impl Iterator<Item = (NotableField, &'a [u8])> {
    fields.filter_map(|(name, value)| NotableField::named(name).map(|field| (field, value)))
}

/// `original` with its request line kept and its field lines replaced by `fields` (the
/// bytes the full path writes: `put_request_line`, then `put_field_line` each, names
/// lower-cased, then the empty line), and what `parse_request` would find in them; `None` when that is not
/// known without the parse (see the module's comment).
pub fn request_with_fields<'a>(
    original: &RequestHead,
    method: &[u8],
    target: &[u8],
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    limits: &ParseLimits,
) -> Option<RequestHead> {
    if method != original.method_str().as_bytes() || target != original.target().as_bytes() {
        return None;
    }
    let (received, _) = original.raw_fields();
    let mut count = 0;
    // Exactly what is written: the request line (two spaces, the version, CRLF) and the
    // empty line, then each field line; so the buffer never grows as it is written, and
    // freezing it allocates nothing more (both showed in the malloc profile of
    // bench/plugins.sh).
    let mut len = method.len() + target.len() + 2 + 8 + 2 + 2;
    for (name, value) in fields.clone() {
        // A field still made of the received head's bytes is one the parser accepted
        // (a plugin's names and values are copies of its memory, never these bytes).
        let received_field = is_within(name, received) && is_within(value, received);
        if !received_field && !is_plain_field(name, value) {
            return None;
        }
        count += 1;
        len += name.len() + value.len() + 4;
    }
    // Clear of the limits, so the parse could not have tripped one either.
    if count >= limits.max_headers || len >= limits.max_head_bytes {
        return None;
    }
    let (mut now, mut before) = (notable(fields.clone()), notable(original.fields()));
    loop {
        match (now.next(), before.next()) {
            (None, None) => break,
            (Some(now), Some(before)) if now == before => {}
            _ => return None,
        }
    }
    let mut out = BytesMut::with_capacity(len);
    put_request_line(&mut out, method, target, original.version());
    let mut headers = Vec::with_capacity(count);
    let mut host = None;
    for (name, value) in fields {
        let spans = put_field_line(&mut out, name, value, NameCase::Lower);
        if host.is_none() && NotableField::named(name) == Some(NotableField::Host) {
            host = Some(spans.value);
        }
        headers.push(spans);
    }
    out.put_slice(b"\r\n");
    let method_span = Span::new(0, method.len());
    let parsed = ParsedHead {
        method: original.method(),
        method_span,
        target: Span::new(method_span.end + 1, method_span.end + 1 + target.len()),
        version: original.version(),
        headers,
        framing: original.framing(),
        host,
        connection: original.connection_options(),
        expect_continue: original.expects_continue(),
    };
    Some(RequestHead::new(out.freeze(), parsed))
}

/// Whether a field may not come from a plugin into a response head: the writer keeps the
/// backend's framing fields.
pub fn is_response_framing(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding")
}

/// A response head as the relay rebuilds it for a plugin's edit: `status`, the backend's
/// framing fields (from `original`, parsed from `original_head`), then `fields` but theirs
/// (names lower-cased).
/// Returns the bytes and, when it is known without a parse, what `parse_response` would
/// find in them (`None`: parse them).
pub fn response_with_fields<'a>(
    original: &ParsedResponse,
    original_head: &[u8],
    status: StatusCode,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    limits: &ResponseLimits,
) -> (BytesMut, Option<ParsedResponse>) {
    let mut out = BytesMut::with_capacity(original_head.len() + 256);
    out.put_slice(b"HTTP/1.1 ");
    let code = status.as_u16();
    out.put_slice(&[
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]);
    out.put_u8(b' ');
    out.put_slice(status.reason().as_bytes());
    out.put_slice(b"\r\n");
    let mut headers = Vec::with_capacity(original.headers.len() + 4);
    for header in &original.headers {
        let name = header.name.slice(original_head);
        if is_response_framing(name) {
            let value = header.value.slice(original_head);
            headers.push(put_field_line(&mut out, name, value, NameCase::AsGiven));
        }
    }
    // A plugin's field the parser would act on (Connection, here) or could read otherwise
    // than written, or a head near a limit: the caller parses it in full.
    let mut known = original.version == Version::Http11;
    for (name, value) in fields.filter(|(name, _)| !is_response_framing(name)) {
        known &= is_plain_field(name, value)
            && !matches!(
                NotableField::named(name),
                Some(NotableField::ContentLength)
                    | Some(NotableField::TransferEncoding)
                    | Some(NotableField::Connection)
            );
        headers.push(put_field_line(&mut out, name, value, NameCase::Lower));
    }
    out.put_slice(b"\r\n");
    known &= headers.len() < limits.max_headers && out.len() < limits.max_head_bytes;
    let parsed = known.then(|| ParsedResponse {
        version: Version::Http11,
        status,
        headers,
        framing: original.framing,
        // The backend's Connection fields are not written: what the rebuilt head says.
        connection: Default::default(),
    });
    (out, parsed)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::http::parser::{parse_request, Status};
    use crate::http::response_parser::{parse_response, ResponseStatus};

    /// Field lines as (name, value).
    type Fields = Vec<(&'static [u8], &'static [u8])>;

    const LIMITS: ParseLimits = ParseLimits {
        max_request_line_bytes: 1024,
        max_head_bytes: 1024,
        max_headers: 16,
    };

    fn head(raw: &[u8]) -> RequestHead {
        let bytes = Bytes::copy_from_slice(raw);
        match parse_request(&bytes, &LIMITS) {
            Ok(Status::Complete(parsed, _)) => RequestHead::new(bytes, parsed),
            other => panic!("{other:?}"),
        }
    }

    /// The full path: the same bytes, parsed.
    fn parsed_in_full(original: &RequestHead, fields: &[(&[u8], &[u8])]) -> Option<RequestHead> {
        let mut out = BytesMut::new();
        put_request_line(
            &mut out,
            original.method_str().as_bytes(),
            original.target().as_bytes(),
            original.version(),
        );
        for (name, value) in fields {
            put_field_line(&mut out, name, value, NameCase::Lower);
        }
        out.put_slice(b"\r\n");
        let bytes = out.freeze();
        match parse_request(&bytes, &LIMITS) {
            Ok(Status::Complete(parsed, used)) if used == bytes.len() => {
                Some(RequestHead::new(bytes, parsed))
            }
            _ => None,
        }
    }

    fn fast(original: &RequestHead, fields: &[(&[u8], &[u8])]) -> Option<RequestHead> {
        request_with_fields(
            original,
            original.method_str().as_bytes(),
            original.target().as_bytes(),
            fields.iter().map(|(n, v)| (*n, *v)),
            &LIMITS,
        )
    }

    fn same(a: &RequestHead, b: &RequestHead) -> bool {
        let (a_bytes, _) = a.raw_fields();
        let (b_bytes, _) = b.raw_fields();
        a_bytes == b_bytes
            && a.fields().eq(b.fields())
            && a.method() == b.method()
            && a.method_str() == b.method_str()
            && a.target() == b.target()
            && a.framing() == b.framing()
            && a.host() == b.host()
            && a.connection_options() == b.connection_options()
            && a.expects_continue() == b.expects_continue()
    }

    const ORIGINAL: &[u8] = b"POST /p?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\
        Content-Length: 3\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\n";

    fn original_fields() -> Vec<(&'static [u8], &'static [u8])> {
        vec![
            (b"Host", b"example.com"),
            (b"User-Agent", b"t"),
            (b"Content-Length", b"3"),
            (b"Connection", b"keep-alive"),
            (b"Expect", b"100-continue"),
        ]
    }

    /// Edits a plugin makes to ordinary fields: the fast answer is the full parse's, byte
    /// for byte and span for span.
    #[test]
    fn plain_edits_are_what_a_full_parse_finds() {
        let original = head(ORIGINAL);
        let mut cases: Vec<Vec<(&[u8], &[u8])>> = Vec::new();
        let mut added = original_fields();
        added.push((b"x-plugin", b"on"));
        cases.push(added);
        let mut removed = original_fields();
        removed.remove(1);
        cases.push(removed);
        let mut replaced = original_fields();
        replaced.remove(1);
        replaced.push((b"user-agent", b"plugin/1 (obs-text \x80)"));
        cases.push(replaced);
        let mut empty_value = original_fields();
        empty_value.insert(0, (b"x-empty", b""));
        cases.push(empty_value);
        let mut inner_space = original_fields();
        inner_space.push((b"X-Mixed-Case", b"a \t b"));
        cases.push(inner_space);
        // The received fields themselves (shares of the head: not checked again), plus one.
        let mut shared: Vec<(&[u8], &[u8])> = original.fields().collect();
        shared.push((b"x-plugin", b"on"));
        cases.push(shared);
        for fields in cases {
            let fast = fast(&original, &fields).unwrap_or_else(|| panic!("{fields:?}"));
            let full = parsed_in_full(&original, &fields).unwrap_or_else(|| panic!("{fields:?}"));
            assert!(same(&fast, &full), "{fields:?}");
            assert_eq!(fast.host(), Some("example.com"));
        }
    }

    /// What the parser acts on (framing, Host, Connection, Expect) changed, or a line it
    /// would read otherwise than written, or a limit near: no fast answer, so the caller
    /// parses in full and refuses what a client could not send.
    #[test]
    fn edits_the_parser_acts_on_are_left_to_the_full_parse() {
        let original = head(ORIGINAL);
        let with = |extra: (&'static [u8], &'static [u8])| {
            let mut fields = original_fields();
            fields.push(extra);
            fields
        };
        let mut cases = vec![
            with((b"content-length", b"3")),
            with((b"transfer-encoding", b"chunked")),
            with((b"host", b"other")),
            with((b"connection", b"close")),
            with((b"expect", b"100-continue")),
            with((b"x-smuggle", b"a\r\nContent-Length: 0")),
            with((b"x-bare-lf", b"a\nb")),
            with((b"x-nul", b"a\0b")),
            with((b"bad name", b"v")),
            with((b"", b"v")),
            with((b"x-padded", b" v")),
            with((b"x-padded", b"v\t")),
        ];
        let mut moved_length = original_fields();
        moved_length.retain(|(name, _)| !name.eq_ignore_ascii_case(b"content-length"));
        cases.push(moved_length);
        let mut changed_host = original_fields();
        changed_host[0] = (b"host", b"elsewhere.example");
        cases.push(changed_host);
        let mut reordered = original_fields();
        reordered.swap(2, 3);
        reordered.push((b"content-length", b"3"));
        cases.push(reordered);
        for fields in &cases {
            assert!(fast(&original, fields).is_none(), "{fields:?}");
        }
        // Received fields beside a plugin's smuggling one: still refused.
        let mut shared: Vec<(&[u8], &[u8])> = original.fields().collect();
        shared.push((b"x-smuggle", b"a\r\nContent-Length: 0"));
        assert!(fast(&original, &shared).is_none());
        let many: Vec<(&[u8], &[u8])> = (0..LIMITS.max_headers)
            .map(|_| (&b"x"[..], &b"y"[..]))
            .collect();
        assert!(fast(&original, &many).is_none());
        let long = vec![b'v'; LIMITS.max_head_bytes];
        let mut big = original_fields();
        big.push((b"x-long", &long));
        assert!(fast(&original, &big).is_none());
    }

    /// A changed request line is parsed in full.
    #[test]
    fn a_changed_request_line_is_left_to_the_full_parse() {
        let original = head(ORIGINAL);
        let fields = original_fields();
        let iter = || fields.iter().map(|(n, v)| (*n, *v));
        assert!(request_with_fields(&original, b"GET", b"/p?q=1", iter(), &LIMITS).is_none());
        assert!(request_with_fields(&original, b"POST", b"/other", iter(), &LIMITS).is_none());
    }

    const RESPONSE_LIMITS: ResponseLimits = ResponseLimits {
        max_head_bytes: 1024,
        max_headers: 16,
    };

    fn response(raw: &[u8]) -> ParsedResponse {
        match parse_response(raw, &RESPONSE_LIMITS) {
            Ok(ResponseStatus::Complete(parsed, _)) => parsed,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_response_edits_are_what_a_full_parse_finds() {
        let raw: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\n\
            Connection: keep-alive\r\nETag: \"x\"\r\n\r\n";
        let original = response(raw);
        let cases: Vec<(StatusCode, Fields)> = vec![
            (
                StatusCode::OK,
                vec![(b"server", b"nginx"), (b"x-plugin", b"on")],
            ),
            (
                StatusCode::NOT_FOUND,
                vec![(b"ETag", b"\"y\""), (b"content-length", b"9")],
            ),
            (StatusCode::OK, vec![]),
        ];
        for (status, fields) in cases {
            let iter = fields.iter().map(|(n, v)| (*n, *v));
            let (bytes, fast) =
                response_with_fields(&original, raw, status, iter, &RESPONSE_LIMITS);
            let fast = fast.unwrap_or_else(|| panic!("{fields:?}"));
            assert_eq!(Some(fast), Some(response(&bytes)), "{fields:?}");
        }
    }

    #[test]
    fn response_edits_the_parser_acts_on_are_left_to_the_full_parse() {
        let raw: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let original = response(raw);
        let cases: Vec<Vec<(&[u8], &[u8])>> = vec![
            vec![(b"connection", b"close")],
            vec![(b"x-smuggle", b"a\r\nContent-Length: 0")],
            vec![(b"x-padded", b"v ")],
            vec![(b"bad name", b"v")],
        ];
        for fields in cases {
            let iter = fields.iter().map(|(n, v)| (*n, *v));
            let (_, fast) =
                response_with_fields(&original, raw, StatusCode::OK, iter, &RESPONSE_LIMITS);
            assert!(fast.is_none(), "{fields:?}");
        }
        let old: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n";
        let original = response(old);
        let (_, fast) = response_with_fields(
            &original,
            old,
            StatusCode::OK,
            std::iter::empty(),
            &RESPONSE_LIMITS,
        );
        assert!(
            fast.is_none(),
            "a 1.0 backend's head is rewritten as 1.1: parsed in full"
        );
    }
}
