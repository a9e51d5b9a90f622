//! PURE request-head parser: bytes in, `Complete(head, consumed)` | `Partial` | error out.
//! No I/O, no tokio, no config reads; limits are passed in. It allocates only the header
//! list of the head it returns.
//!
//! Incremental by re-parsing: the connection calls it again with the grown buffer. The
//! verdict depends only on the bytes, never on where reads split them, because
//! - lines are judged in order, each as soon as its LF has arrived, so the first error in
//!   the bytes is always the one reported;
//! - size limits are checked against fixed windows (`max_request_line_bytes + 2` from the
//!   start of the request line, `max_head_bytes` from the start of the buffer), so a limit
//!   trips at the same byte whether the head came in one read or in a thousand.
//!
//! Strictness (see `specs/http1.md` for the rule ids the tests cite): this parser sits in
//! front of other servers, so anything two implementations could read differently is
//! rejected rather than repaired. In particular a bare LF is *not* accepted as a line end
//! (RFC 9112 §2.2 makes that optional) because lenient and strict parsers disagreeing on
//! line ends is exactly how requests get smuggled.

use super::error::ParseError;
use super::request::{
    ConnectionOptions, HeaderSpan, Method, ParsedHead, RequestFraming, Span, Version,
};
use crate::limits;

/// The limits the parser enforces. Built from config by the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    pub max_request_line_bytes: usize,
    pub max_head_bytes: usize,
    pub max_headers: usize,
}

impl Default for ParseLimits {
    fn default() -> ParseLimits {
        ParseLimits {
            max_request_line_bytes: limits::DEFAULT_MAX_REQUEST_LINE_BYTES,
            max_head_bytes: limits::DEFAULT_MAX_HEAD_BYTES,
            max_headers: limits::DEFAULT_MAX_HEADERS,
        }
    }
}

/// Outcome of a parse attempt that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// A whole head; the `usize` is how many bytes of the buffer it used.
    Complete(ParsedHead, usize),
    /// No error so far, but the head is not complete yet: read more.
    Partial,
}

/// Parse one request head from the start of `buf`.
pub fn parse_request(buf: &[u8], limits: &ParseLimits) -> Result<Status, ParseError> {
    // RFC 9112 §2.2: ignore empty lines before the request line (some clients send a CRLF
    // after a body). They still count towards the head limit.
    let mut start = 0;
    loop {
        match buf.get(start..start + 2) {
            Some(b"\r\n") => start += 2,
            Some([b'\n', _]) => return Err(ParseError::BareLineFeed),
            None if buf.get(start..) == Some(b"\r") => return Ok(Status::Partial),
            None if buf.get(start) == Some(&b'\n') => return Err(ParseError::BareLineFeed),
            _ => break,
        }
        if start >= limits.max_head_bytes {
            return Err(ParseError::HeadTooLarge);
        }
    }

    // Two limits bound the request line: its own, and the head's (leading empty lines can
    // push it towards the latter). Whichever trips at the earlier byte is the verdict, for
    // every longer buffer too.
    let line_limit_end = start.saturating_add(limits.max_request_line_bytes.saturating_add(2));
    let window_limit = line_limit_end.min(limits.max_head_bytes);
    let line_window = buf.len().min(window_limit);
    let (request_line, line_end) = match fast_request_line(buf, start, line_window) {
        Some(parsed) => parsed?,
        None => {
            let Some(line_end) = find_line_end(buf, start, line_window)? else {
                return if buf.len() < window_limit {
                    Ok(Status::Partial)
                } else if line_limit_end <= limits.max_head_bytes {
                    Err(ParseError::RequestLineTooLong)
                } else {
                    Err(ParseError::HeadTooLarge)
                };
            };
            (
                parse_request_line(buf, Span::new(start, line_end))?,
                line_end,
            )
        }
    };

    let mut fields = FieldState::default();
    let mut pos = line_end + 2;
    let head_window = buf.len().min(limits.max_head_bytes);
    let mut headers = Vec::with_capacity(expected_field_count(
        head_window.saturating_sub(pos),
        limits,
    ));
    loop {
        // Fast path: a well-formed field line, scanned once. Anything else (the empty line,
        // an error, a line not complete in the window) goes the general way below, which
        // therefore decides every verdict except plain success.
        if let Some(line) = fast_field_line(buf, pos, head_window) {
            if headers.len() == limits.max_headers {
                return Err(ParseError::TooManyHeaders);
            }
            fields.observe(
                line.name,
                line.value,
                line.header.value,
                request_line.version,
            )?;
            headers.push(line.header);
            pos = line.cr + 2;
            continue;
        }
        // The empty line that ends the head, complete in the window: what `find_line_end`
        // would say, without a search.
        let end = if buf
            .get(pos..head_window)
            .is_some_and(|rest| rest.starts_with(b"\r\n"))
        {
            pos
        } else {
            let Some(end) = find_line_end(buf, pos, head_window)? else {
                return if buf.len() >= limits.max_head_bytes {
                    Err(ParseError::HeadTooLarge)
                } else {
                    Ok(Status::Partial)
                };
            };
            end
        };
        if end == pos {
            let consumed = end + 2;
            let parsed = fields.finish(request_line, headers)?;
            return Ok(Status::Complete(parsed, consumed));
        }
        if headers.len() == limits.max_headers {
            return Err(ParseError::TooManyHeaders);
        }
        let header = parse_field_line(buf, Span::new(pos, end))?;
        let (name, value) = (header.name.slice(buf), header.value.slice(buf));
        fields.observe(name, value, header.value, request_line.version)?;
        headers.push(header);
        pos = end + 2;
    }
}

/// Capacity for the header list, guessed from the bytes that may hold field lines: one field
/// per `ASSUMED_FIELD_LINE_BYTES`, at least `MIN_HEADERS_CAPACITY`, at most `max_headers`.
/// Growing by doubling from 16 took two reallocations for the 40 fields of `many_headers`
/// in `benches/parser.rs`; bytes of a body already in the buffer can only make the guess too
/// large, never larger than `max_headers`.
fn expected_field_count(field_bytes: usize, limits: &ParseLimits) -> usize {
    const ASSUMED_FIELD_LINE_BYTES: usize = 40;
    const MIN_HEADERS_CAPACITY: usize = 16;
    (field_bytes / ASSUMED_FIELD_LINE_BYTES)
        .max(MIN_HEADERS_CAPACITY)
        .min(limits.max_headers)
}

/// The common request line, `token SP target SP HTTP/1.1 CRLF` (or 1.0) with a target of
/// visible bytes and its CRLF inside `window_end`, in one pass and without first searching
/// for the LF. `None` for anything else, which `parse_request_line` then judges. No byte it
/// accepts is a LF, so it sees the line `find_line_end` would find, splits it where
/// `parse_request_line` would, and applies the same target rules: same verdicts.
#[inline]
fn fast_request_line(
    buf: &[u8],
    start: usize,
    window_end: usize,
) -> Option<Result<(RequestLine, usize), ParseError>> {
    let line = buf.get(start..window_end)?;
    let sp1 = run_of(&TCHAR, line);
    if sp1 == 0 || line.get(sp1) != Some(&b' ') {
        return None;
    }
    let rest = line.get(sp1 + 1..)?;
    let sp2 = run_of(&TARGET_BYTE, rest);
    if sp2 == 0 || rest.get(sp2) != Some(&b' ') {
        return None;
    }
    let version = match rest.get(sp2 + 1..sp2 + 11)? {
        b"HTTP/1.1\r\n" => Version::Http11,
        b"HTTP/1.0\r\n" => Version::Http10,
        _ => return None,
    };
    let method = Method::from_token(line.get(..sp1)?);
    if let Err(error) = validate_target_form(method, rest.get(..sp2)?) {
        return Some(Err(error));
    }
    let method_span = Span::new(start, start + sp1);
    let target = Span::new(method_span.end + 1, method_span.end + 1 + sp2);
    let request_line = RequestLine {
        method,
        method_span,
        target,
        version,
    };
    Some(Ok((request_line, target.end + 9)))
}

/// A well-formed field line found by `fast_field_line`: its spans, its name and value bytes
/// (handed on so that `FieldState::observe` need not slice again), and the index of its CR.
struct FieldLine<'a> {
    header: HeaderSpan,
    name: &'a [u8],
    value: &'a [u8],
    cr: usize,
}

/// A valid `field-name ":" OWS field-value OWS CRLF` starting at `pos` and ending inside
/// `window_end`, in one pass. `None` for anything else. No byte it accepts is a LF, so the
/// CRLF it ends at is the one `find_line_end` would find: same line, same spans.
#[inline]
fn fast_field_line(buf: &[u8], pos: usize, window_end: usize) -> Option<FieldLine<'_>> {
    let line = buf.get(pos..window_end)?;
    let colon = run_of(&TCHAR, line);
    if colon == 0 || line.get(colon) != Some(&b':') {
        return None;
    }
    let mut value_start = colon + 1;
    while matches!(line.get(value_start), Some(b' ' | b'\t')) {
        value_start += 1;
    }
    let cr = field_value_run(line, value_start);
    if line.get(cr..cr + 2) != Some(b"\r\n") {
        return None;
    }
    let name = line.get(..colon)?;
    let value = trim_trailing_ows(line.get(value_start..cr)?);
    Some(FieldLine {
        header: HeaderSpan {
            name: Span::new(pos, pos + colon),
            value: Span::new(pos + value_start, pos + value_start + value.len()),
        },
        name,
        value,
        cr: pos + cr,
    })
}

/// Length of the run of bytes that `table` admits at the start of `bytes`. Eight bytes a
/// step: their lookups do not depend on each other, and the first miss comes out of a bit
/// mask instead of a branch per byte (`benches/parser.rs`: header names and the target
/// are most of what is not a field value).
#[inline(always)]
fn run_of(table: &[bool; 256], bytes: &[u8]) -> usize {
    let mut i = 0;
    while let Some(chunk) = bytes
        .get(i..i + 8)
        .and_then(|c| <&[u8; 8]>::try_from(c).ok())
    {
        let mut admitted = 0u32;
        for (k, &b) in chunk.iter().enumerate() {
            admitted |= u32::from(table[usize::from(b)]) << k;
        }
        if admitted != 0xff {
            return i + admitted.trailing_ones() as usize;
        }
        i += 8;
    }
    while bytes.get(i).is_some_and(|&b| table[usize::from(b)]) {
        i += 1;
    }
    i
}

/// The four bytes at `at`, first byte lowest.
#[inline(always)]
fn half_word_at(bytes: &[u8], at: usize) -> Option<u32> {
    let chunk = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(chunk.try_into().ok()?))
}

/// `field-value` bytes (RFC 9110 §5.5): HTAB, SP, VCHAR, obs-text.
#[inline(always)]
fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// The eight bytes at `at`, first byte lowest.
#[inline(always)]
fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(chunk.try_into().ok()?))
}

/// The high bit of every byte of `word` that is below 0x20 or is 0x7F, plus possibly some
/// bytes above a flagged one (a borrow runs upwards). Never misses a byte; bytes below the
/// lowest flagged one are all field-value bytes, except that HTAB is flagged too.
#[inline(always)]
fn flag_non_value_bytes(word: u64) -> u64 {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // Some byte < 0x20 (bytes >= 0x80 are excluded by `!word`).
    let low = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    // Some byte == 0x7F.
    let del_x = word ^ (ONES * 0x7f);
    let del = del_x.wrapping_sub(ONES) & !del_x & HIGH;
    low | del
}

/// The first flagged byte of the word read at `base` that really is not a field-value
/// byte. Each flag is checked exactly, so a HTAB or a borrow's false flag is skipped.
#[inline(always)]
fn first_non_value_byte(bytes: &[u8], base: usize, mut flagged: u64) -> Option<usize> {
    while flagged != 0 {
        let at = base + (flagged.trailing_zeros() / 8) as usize;
        if !bytes.get(at).copied().is_some_and(is_field_value_byte) {
            return Some(at);
        }
        flagged &= flagged - 1;
    }
    None
}

/// Index of the first byte at or after `from` that may not appear in a field value, or
/// `bytes.len()`. A word with no byte below 0x20 and no 0x7F is valid as a whole; words are
/// tested two at a time while 16 bytes remain, then one at a time. The last 0-7 bytes are
/// judged by one overlapping read of the last eight when there are eight, so a value costs
/// no byte-by-byte tail.
#[inline(always)]
fn field_value_run(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    // Two words a step: one branch per 16 clean bytes.
    while let (Some(low), Some(high)) = (word_at(bytes, i), word_at(bytes, i + 8)) {
        let (low_flags, high_flags) = (flag_non_value_bytes(low), flag_non_value_bytes(high));
        if low_flags | high_flags != 0 {
            if let Some(at) = first_non_value_byte(bytes, i, low_flags) {
                return at;
            }
            if let Some(at) = first_non_value_byte(bytes, i + 8, high_flags) {
                return at;
            }
        }
        i += 16;
    }
    while let Some(word) = word_at(bytes, i) {
        if let Some(at) = first_non_value_byte(bytes, i, flag_non_value_bytes(word)) {
            return at;
        }
        i += 8;
    }
    if i >= bytes.len() {
        return bytes.len();
    }
    if let Some(base) = bytes.len().checked_sub(8) {
        if let Some(word) = word_at(bytes, base) {
            // Bytes before `i` are already judged; a flag on one of them must not count.
            let judged = u64::MAX.checked_shl(8 * (i.saturating_sub(base) as u32));
            let flagged = flag_non_value_bytes(word) & judged.unwrap_or(0);
            return first_non_value_byte(bytes, base, flagged).unwrap_or(bytes.len());
        }
    }
    while bytes.get(i).copied().is_some_and(is_field_value_byte) {
        i += 1;
    }
    i
}

fn trim_trailing_ows(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Index of the CR of the first CRLF at or after `from` and before `window_end`.
/// `Ok(None)` when no LF is in the window yet. A LF not preceded by CR is an error.
pub(super) fn find_line_end(
    buf: &[u8],
    from: usize,
    window_end: usize,
) -> Result<Option<usize>, ParseError> {
    let Some(window) = buf.get(from..window_end) else {
        return Ok(None);
    };
    let Some(offset) = memchr::memchr(b'\n', window) else {
        return Ok(None);
    };
    let lf = from + offset;
    if offset == 0 || buf[lf - 1] != b'\r' {
        return Err(ParseError::BareLineFeed);
    }
    Ok(Some(lf - 1))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RequestLine {
    method: Method,
    method_span: Span,
    target: Span,
    version: Version,
}

/// RFC 9112 §3: `method SP request-target SP HTTP-version`, single spaces, nothing else.
fn parse_request_line(buf: &[u8], line: Span) -> Result<RequestLine, ParseError> {
    let bytes = line.slice(buf);
    let Some(sp1) = bytes.iter().position(|&b| b == b' ') else {
        return Err(ParseError::InvalidRequestLine);
    };
    let method_bytes = &bytes[..sp1];
    if method_bytes.is_empty() || !method_bytes.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::InvalidMethod);
    }
    let rest = &bytes[sp1 + 1..];
    let method = Method::from_token(method_bytes);
    // Fast path: one pass that both finds the SP and checks the target's bytes.
    let t = run_of(&TARGET_BYTE, rest);
    let sp2 = if t > 0 && rest.get(t) == Some(&b' ') {
        validate_target_form(method, &rest[..t])?;
        t
    } else {
        let Some(sp2) = rest.iter().position(|&b| b == b' ') else {
            return Err(ParseError::InvalidRequestLine);
        };
        let target_bytes = &rest[..sp2];
        if target_bytes.is_empty() {
            return Err(ParseError::InvalidRequestLine);
        }
        validate_target(method, target_bytes)?;
        sp2
    };
    let version = parse_version(&rest[sp2 + 1..])?;

    let method_span = Span::new(line.start, line.start + sp1);
    let target_start = method_span.end + 1;
    Ok(RequestLine {
        method,
        method_span,
        target: Span::new(target_start, target_start + sp2),
        version,
    })
}

/// RFC 9112 §2.3: `HTTP/` DIGIT `.` DIGIT, case-sensitive. A higher 1.x minor version is
/// served as 1.1 (RFC 9110 §2.5); other well-formed versions get 505; anything else is a
/// malformed request line.
fn parse_version(bytes: &[u8]) -> Result<Version, ParseError> {
    match bytes {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
            Ok(Version::Http11)
        }
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(ParseError::UnsupportedVersion)
        }
        _ => Err(ParseError::InvalidVersion),
    }
}

/// RFC 9112 §3.2: the four target forms, each only where it is allowed. Bytes are limited
/// to visible ASCII; a fragment (`#`) never belongs in a request.
fn validate_target(method: Method, target: &[u8]) -> Result<(), ParseError> {
    if !target
        .iter()
        .all(|&b| (0x21..=0x7e).contains(&b) && b != b'#')
    {
        return Err(ParseError::InvalidTarget);
    }
    validate_target_form(method, target)
}

static TARGET_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0x21;
    while i <= 0x7e {
        table[i] = i != b'#' as usize;
        i += 1;
    }
    table
};

/// The form rules of `validate_target`, for a target whose bytes are already checked.
fn validate_target_form(method: Method, target: &[u8]) -> Result<(), ParseError> {
    // RFC 9112 §3.2.3: CONNECT takes authority-form, `host:port`, and nothing else.
    if method == Method::Connect {
        let valid = match target.iter().rposition(|&b| b == b':') {
            Some(colon) => {
                colon > 0
                    && colon + 1 < target.len()
                    && target[colon + 1..].iter().all(u8::is_ascii_digit)
                    && is_valid_authority(target)
            }
            None => false,
        };
        return if valid {
            Ok(())
        } else {
            Err(ParseError::InvalidTarget)
        };
    }
    if target[0] == b'/' {
        return Ok(());
    }
    if target == b"*" {
        return match method {
            Method::Options => Ok(()),
            _ => Err(ParseError::InvalidTarget),
        };
    }
    let authority_start = if starts_with_ignore_case(target, b"http://") {
        7
    } else if starts_with_ignore_case(target, b"https://") {
        8
    } else {
        return Err(ParseError::InvalidTarget);
    };
    let authority = &target[authority_start..];
    let authority_end = authority
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(authority.len());
    if authority_end == 0 || !is_valid_authority(&authority[..authority_end]) {
        return Err(ParseError::InvalidTarget);
    }
    Ok(())
}

/// RFC 9112 §5: `field-name ":" OWS field-value OWS`.
pub(super) fn parse_field_line(buf: &[u8], line: Span) -> Result<HeaderSpan, ParseError> {
    let bytes = line.slice(buf);
    // RFC 9112 §5.2: obs-fold is rejected, never unfolded.
    if matches!(bytes.first(), Some(b' ' | b'\t')) {
        return Err(ParseError::ObsoleteLineFolding);
    }
    // The byte that ends the run of name bytes decides.
    let i = run_of(&TCHAR, bytes);
    let colon = match bytes.get(i) {
        Some(b':') if i > 0 => i,
        // RFC 9112 §5.1: MUST reject whitespace between field name and colon.
        Some(b' ' | b'\t') => return Err(ParseError::WhitespaceBeforeColon),
        Some(b'\r') => return Err(ParseError::BareCarriageReturn),
        _ => return Err(ParseError::InvalidHeaderName),
    };

    let mut value_start = colon + 1;
    let mut value_end = bytes.len();
    while value_start < value_end && matches!(bytes[value_start], b' ' | b'\t') {
        value_start += 1;
    }
    while value_end > value_start && matches!(bytes[value_end - 1], b' ' | b'\t') {
        value_end -= 1;
    }
    validate_field_value(&bytes[value_start..value_end])?;
    Ok(HeaderSpan {
        name: Span::new(line.start, line.start + colon),
        value: Span::new(line.start + value_start, line.start + value_end),
    })
}

/// RFC 9110 §5.5 `field-value`; the first byte that does not belong decides the error.
fn validate_field_value(value: &[u8]) -> Result<(), ParseError> {
    match value.get(field_value_run(value, 0)) {
        None => Ok(()),
        Some(b'\r') => Err(ParseError::BareCarriageReturn),
        Some(_) => Err(ParseError::InvalidHeaderValue),
    }
}

/// Facts gathered from the fields that decide framing and connection handling.
#[derive(Debug, Default)]
struct FieldState {
    content_length: Option<u64>,
    codings: Codings,
    host: Option<Span>,
    host_count: usize,
    connection: ConnectionOptions,
    expect_continue: bool,
}

impl FieldState {
    /// One field, as its name and value bytes (`value_span` locates the value for `host`).
    /// Inlined into the header loop: most fields are none of the notable ones, and for
    /// those this is one table load and, at most, one failed comparison.
    #[inline(always)]
    fn observe(
        &mut self,
        name: &[u8],
        value: &[u8],
        value_span: Span,
        version: Version,
    ) -> Result<(), ParseError> {
        match NotableField::named(name) {
            Some(field) => self.observe_notable(field, value, value_span, version),
            None => Ok(()),
        }
    }

    fn observe_notable(
        &mut self,
        field: NotableField,
        value: &[u8],
        value_span: Span,
        version: Version,
    ) -> Result<(), ParseError> {
        match field {
            NotableField::ContentLength => merge_content_length(value, &mut self.content_length),
            NotableField::TransferEncoding => self.codings.observe(value),
            NotableField::Host => {
                self.host_count += 1;
                if !is_valid_authority(value) && !value.is_empty() {
                    return Err(ParseError::InvalidHost);
                }
                self.host.get_or_insert(value_span);
                Ok(())
            }
            NotableField::Connection => {
                observe_connection(value, &mut self.connection);
                Ok(())
            }
            NotableField::Expect => {
                // RFC 9110 §10.1.1: 100-continue is the only expectation defined; a 1.0
                // request must have it ignored.
                if !eq_ignore_case_to_lowercase(value, b"100-continue") {
                    return Err(ParseError::UnsupportedExpectation);
                }
                self.expect_continue = version == Version::Http11;
                Ok(())
            }
        }
    }

    fn finish(self, line: RequestLine, headers: Vec<HeaderSpan>) -> Result<ParsedHead, ParseError> {
        // RFC 9112 §3.2: a 1.1 request carries exactly one Host; more than one is never valid.
        match (line.version, self.host_count) {
            (Version::Http11, 0) => return Err(ParseError::MissingHost),
            (_, count) if count > 1 => return Err(ParseError::DuplicateHost),
            _ => {}
        }
        let codings = self.codings;
        let framing = if codings.present {
            codings.require_chunked_framing(line.version, self.content_length.is_some())?;
            RequestFraming::Chunked
        } else if let Some(length) = self.content_length {
            RequestFraming::Length(length)
        } else {
            RequestFraming::Empty
        };
        Ok(ParsedHead {
            method: line.method,
            method_span: line.method_span,
            target: line.target,
            version: line.version,
            headers,
            framing,
            host: self.host,
            connection: self.connection,
            expect_continue: self.expect_continue,
        })
    }
}

/// The fields whose values `FieldState` acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotableField {
    ContentLength,
    TransferEncoding,
    Host,
    Connection,
    Expect,
}

impl NotableField {
    /// The notable field `name` names (case-insensitively), if any; `name` must be a
    /// token, as every field name the parser has accepted is. The five names have five
    /// different lengths, so the length picks the one candidate by a table load rather than
    /// a `match` on it: that compiled to a jump table whose indirect branch, taken once per
    /// field, was the parser's most mispredicted (callgrind --branch-sim, 40-header input).
    #[inline(always)]
    pub(super) fn named(name: &[u8]) -> Option<NotableField> {
        const BY_NAME_LENGTH: [Option<NotableField>; 18] = {
            let mut table = [None; 18];
            table[4] = Some(NotableField::Host);
            table[6] = Some(NotableField::Expect);
            table[10] = Some(NotableField::Connection);
            table[14] = Some(NotableField::ContentLength);
            table[17] = Some(NotableField::TransferEncoding);
            table
        };
        let candidate = BY_NAME_LENGTH.get(name.len()).copied().flatten()?;
        eq_ignore_case_to_lowercase(name, candidate.lowercase_name()).then_some(candidate)
    }

    fn lowercase_name(self) -> &'static [u8] {
        match self {
            NotableField::ContentLength => b"content-length",
            NotableField::TransferEncoding => b"transfer-encoding",
            NotableField::Host => b"host",
            NotableField::Connection => b"connection",
            NotableField::Expect => b"expect",
        }
    }
}

/// `bytes` equals `lowercase` ignoring ASCII case, a word at a time, for `bytes` with no
/// control byte but HTAB (true of every field name and field value the parser accepted)
/// and a `lowercase` of lowercase letters, digits and `-`. Setting bit 0x20 maps a byte onto
/// a lowercase letter only from that letter's two cases, and onto a digit or `-` only from
/// itself or a control byte (0x10-0x19, CR), never from HTAB; so for these inputs this is
/// `eq_ignore_ascii_case`. The inlined byte loop of that cost about 900 instructions per
/// head of the POST input of `benches/parser.rs` (callgrind).
#[inline(always)]
pub(crate) fn eq_ignore_case_to_lowercase(bytes: &[u8], lowercase: &[u8]) -> bool {
    debug_assert!(bytes.iter().all(|&b| b == b'\t' || b >= 0x20));
    debug_assert!(lowercase
        .iter()
        .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    const CASE_BITS: u64 = u64::from_le_bytes([0x20; 8]);
    let len = bytes.len();
    if len != lowercase.len() {
        return false;
    }
    let word_matches = |at: usize| match (word_at(bytes, at), word_at(lowercase, at)) {
        (Some(word), Some(expected)) => word | CASE_BITS == expected,
        _ => false,
    };
    if len >= 8 {
        // Whole words, then one overlapping word for the rest.
        let mut at = 0;
        while at + 8 < len {
            if !word_matches(at) {
                return false;
            }
            at += 8;
        }
        return word_matches(len - 8);
    }
    let half_word_matches = |at: usize| match (half_word_at(bytes, at), half_word_at(lowercase, at))
    {
        (Some(word), Some(expected)) => word | CASE_BITS as u32 == expected,
        _ => false,
    };
    if len >= 4 {
        return half_word_matches(0) && half_word_matches(len - 4);
    }
    bytes
        .iter()
        .zip(lowercase)
        .all(|(&b, &expected)| b | 0x20 == expected)
}

/// RFC 9110 §8.6: a Content-Length field value, merged with the value of earlier fields
/// (`seen`). A list of identical values is that value; differing values are fatal.
pub(super) fn merge_content_length(value: &[u8], seen: &mut Option<u64>) -> Result<(), ParseError> {
    for element in value.split(|&b| b == b',') {
        let length = parse_content_length(trim_ows(element))?;
        match *seen {
            Some(existing) if existing != length => {
                return Err(ParseError::ConflictingContentLength)
            }
            _ => *seen = Some(length),
        }
    }
    Ok(())
}

/// The transfer codings named by every Transfer-Encoding field of a message.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Codings {
    pub present: bool,
    pub chunked_count: usize,
    pub last_is_chunked: bool,
    /// Any coding other than chunked.
    pub other: bool,
}

impl Codings {
    /// RFC 9112 §6.1 and §6.3, strictly, for a message that has Transfer-Encoding: it must be
    /// HTTP/1.1, without Content-Length, with `chunked` once and last, and no other coding.
    /// TE in a 1.0 message means something that does not understand it forwarded it; TE
    /// with CL is a smuggling attempt until proven otherwise; another coding is one we
    /// would have to pass on by name. Refused rather than resolved, since the peer on the
    /// other side might resolve it differently.
    pub(super) fn require_chunked_framing(
        self,
        version: Version,
        has_content_length: bool,
    ) -> Result<(), ParseError> {
        if version == Version::Http10 {
            return Err(ParseError::TransferEncodingInHttp10);
        }
        if has_content_length {
            return Err(ParseError::TransferEncodingWithContentLength);
        }
        if self.chunked_count > 1 {
            return Err(ParseError::InvalidTransferEncoding);
        }
        if self.other || !self.last_is_chunked {
            return Err(ParseError::UnsupportedTransferCoding);
        }
        Ok(())
    }

    /// One Transfer-Encoding field, from an accepted field value.
    pub(super) fn observe(&mut self, value: &[u8]) -> Result<(), ParseError> {
        self.present = true;
        for element in value.split(|&b| b == b',') {
            let coding = trim_ows(element);
            // Empty list elements are legal in general but have no business in the one
            // field that decides framing; a lenient peer may read them differently.
            if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
                return Err(ParseError::InvalidTransferEncoding);
            }
            self.last_is_chunked = eq_ignore_case_to_lowercase(coding, b"chunked");
            if self.last_is_chunked {
                self.chunked_count += 1;
            } else {
                self.other = true;
            }
        }
        Ok(())
    }
}

/// The `Connection` tokens that change how a connection behaves, from an accepted field
/// value.
pub(super) fn observe_connection(value: &[u8], options: &mut ConnectionOptions) {
    for token in value.split(|&b| b == b',').map(trim_ows) {
        if eq_ignore_case_to_lowercase(token, b"close") {
            options.close = true;
        } else if eq_ignore_case_to_lowercase(token, b"keep-alive") {
            options.keep_alive = true;
        } else if eq_ignore_case_to_lowercase(token, b"upgrade") {
            options.upgrade = true;
        }
    }
}

/// RFC 9110 §8.6: `1*DIGIT`; no sign, no spaces, no overflow.
pub(super) fn parse_content_length(digits: &[u8]) -> Result<u64, ParseError> {
    if digits.is_empty() {
        return Err(ParseError::InvalidContentLength);
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(ParseError::InvalidContentLength);
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(ParseError::InvalidContentLength)?;
    }
    Ok(value)
}

pub(crate) fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// RFC 3986 authority characters (reg-name, IP literals, port, percent escapes). Userinfo
/// (`@`) is refused: RFC 9110 §4.2.4 deprecates it and it has only ever been used to mislead.
fn is_valid_authority(bytes: &[u8]) -> bool {
    !bytes.is_empty() && run_of(&AUTHORITY_BYTE, bytes) == bytes.len()
}

static AUTHORITY_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
                    | b':'
                    | b'['
                    | b']'
            );
        i += 1;
    }
    table
};

/// A field name the parser accepts: a non-empty token (RFC 9110 §5.1).
pub(super) fn is_token(name: &[u8]) -> bool {
    !name.is_empty() && run_of(&TCHAR, name) == name.len()
}

/// A field value the parser accepts (RFC 9110 §5.5), before trimming.
pub(super) fn is_field_value(value: &[u8]) -> bool {
    field_value_run(value, 0) == value.len()
}

/// RFC 9110 §5.6.2 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    table
};

#[cfg(test)]
#[path = "parser_tests.rs"]
mod tests;
