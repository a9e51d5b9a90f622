//! PURE response-head parser for what upstreams send: bytes in, `Complete(head, consumed)` |
//! `Partial` | error out. Same line and field rules as the request parser (CRLF only, no
//! obs-fold, token names), because a lenient reading of an upstream's framing is how a
//! response gets split or glued to the next one.

use super::error::ParseError;
use super::parser::{
    find_line_end, merge_content_length, observe_connection, parse_field_line, Codings,
    NotableField,
};
use super::request::{ConnectionOptions, HeaderSpan, Span, Version};
use super::response::StatusCode;

/// Limits for an upstream response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
}

/// How the upstream delimits the body, as its header fields declare it. Only `chunked` is
/// accepted as a transfer coding (RFC 9112 §6.1 lets a recipient refuse others). Whether a body exists
/// at all also depends on the request method and the status (RFC 9112 §6.3), which the
/// caller knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredFraming {
    Length(u64),
    Chunked,
    /// No length and no chunked coding: the body runs until the upstream closes.
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedResponse {
    pub version: Version,
    pub status: StatusCode,
    pub headers: Vec<HeaderSpan>,
    pub framing: DeclaredFraming,
    pub connection: ConnectionOptions,
}

impl ParsedResponse {
    /// Whether the upstream lets us send another request on this connection.
    pub fn keeps_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.connection.close,
            Version::Http10 => self.connection.keep_alive && !self.connection.close,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseStatus {
    Complete(ParsedResponse, usize),
    Partial,
}

/// Parse one response head from the start of `buf`.
pub fn parse_response(buf: &[u8], limits: &ResponseLimits) -> Result<ResponseStatus, ParseError> {
    let window = buf.len().min(limits.max_head_bytes);
    let partial_or_too_large = || {
        if buf.len() >= limits.max_head_bytes {
            Err(ParseError::HeadTooLarge)
        } else {
            Ok(ResponseStatus::Partial)
        }
    };
    let Some(line_end) = find_line_end(buf, 0, window)? else {
        return partial_or_too_large();
    };
    let (version, status) = parse_status_line(&buf[..line_end])?;

    let mut fields = ResponseFields::default();
    let mut headers = Vec::with_capacity(16);
    let mut pos = line_end + 2;
    loop {
        let Some(end) = find_line_end(buf, pos, window)? else {
            return partial_or_too_large();
        };
        if end == pos {
            let framing = fields.framing(version)?;
            let parsed = ParsedResponse {
                version,
                status,
                headers,
                framing,
                connection: fields.connection,
            };
            return Ok(ResponseStatus::Complete(parsed, end + 2));
        }
        if headers.len() == limits.max_headers {
            return Err(ParseError::TooManyHeaders);
        }
        let header = parse_field_line(buf, Span::new(pos, end))?;
        fields.observe(header.name.slice(buf), header.value.slice(buf))?;
        headers.push(header);
        pos = end + 2;
    }
}

/// RFC 9112 §4: `HTTP-version SP 3DIGIT SP [reason-phrase]`. The reason phrase is ignored
/// (clients must not rely on it); a missing space before an empty phrase is tolerated, as
/// every mainstream client does.
fn parse_status_line(line: &[u8]) -> Result<(Version, StatusCode), ParseError> {
    let version = match line.get(..8) {
        Some(b"HTTP/1.1") => Version::Http11,
        Some(b"HTTP/1.0") => Version::Http10,
        _ => return Err(ParseError::InvalidStatusLine),
    };
    let code = match line.get(8..12) {
        Some([b' ', a, b, c]) if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(ParseError::InvalidStatusLine),
    };
    let reason = &line[12..];
    if !(reason.is_empty() || reason[0] == b' ')
        || reason
            .iter()
            .any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f))
    {
        return Err(ParseError::InvalidStatusLine);
    }
    let status = StatusCode::from_u16(code)
        .filter(|s| s.as_u16() >= 100)
        .ok_or(ParseError::InvalidStatusLine)?;
    Ok((version, status))
}

#[derive(Debug, Default)]
struct ResponseFields {
    content_length: Option<u64>,
    codings: Codings,
    connection: ConnectionOptions,
}

impl ResponseFields {
    fn observe(&mut self, name: &[u8], value: &[u8]) -> Result<(), ParseError> {
        match NotableField::named(name) {
            Some(NotableField::ContentLength) => {
                merge_content_length(value, &mut self.content_length)
            }
            Some(NotableField::TransferEncoding) => self.codings.observe(value),
            Some(NotableField::Connection) => {
                observe_connection(value, &mut self.connection);
                Ok(())
            }
            // Request fields, without meaning in a response.
            Some(NotableField::Host | NotableField::Expect) | None => Ok(()),
        }
    }

    /// RFC 9112 §6.3, strictly: both Content-Length and Transfer-Encoding, `chunked` twice,
    /// or Transfer-Encoding in a 1.0 response are refused rather than resolved, since the
    /// client behind us might resolve them differently.
    fn framing(&self, version: Version) -> Result<DeclaredFraming, ParseError> {
        if self.codings.present {
            // A coding other than chunked (gzip, ...) would reach the client unnamed once we
            // re-frame the body: refused like the rest.
            self.codings
                .require_chunked_framing(version, self.content_length.is_some())?;
            return Ok(DeclaredFraming::Chunked);
        }
        Ok(match self.content_length {
            Some(length) => DeclaredFraming::Length(length),
            None => DeclaredFraming::UntilClose,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ResponseLimits = ResponseLimits {
        max_head_bytes: 1024,
        max_headers: 8,
    };

    fn parse_all_splits(input: &[u8]) -> Result<ResponseStatus, ParseError> {
        let whole = parse_response(input, &LIMITS);
        let head_len = match &whole {
            Ok(ResponseStatus::Complete(_, used)) => *used,
            _ => input.len(),
        };
        for cut in 0..head_len {
            match parse_response(&input[..cut], &LIMITS) {
                Ok(ResponseStatus::Partial) => {}
                Err(error) => assert_eq!(Err(error), whole, "prefix {cut} disagrees"),
                Ok(ResponseStatus::Complete(..)) => {
                    panic!("prefix {cut} of a head parsed as complete")
                }
            }
        }
        whole
    }

    fn complete(input: &[u8]) -> (ParsedResponse, usize) {
        match parse_all_splits(input) {
            Ok(ResponseStatus::Complete(parsed, used)) => (parsed, used),
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(input)),
        }
    }

    fn error(input: &[u8]) -> ParseError {
        parse_all_splits(input).expect_err("should be rejected")
    }

    #[test]
    fn framing_is_read_from_the_fields() {
        let (parsed, used) = complete(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(parsed.status.as_u16(), 200);
        assert_eq!(parsed.framing, DeclaredFraming::Length(5));
        assert_eq!(used, 38);
        let (parsed, _) = complete(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(parsed.framing, DeclaredFraming::Chunked);
        for coding in ["gzip, chunked", "chunked, gzip", "gzip"] {
            let input = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\n\r\n");
            assert_eq!(
                error(input.as_bytes()),
                ParseError::UnsupportedTransferCoding,
                "{coding}"
            );
        }
        let (parsed, _) = complete(b"HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(parsed.framing, DeclaredFraming::UntilClose);
        assert!(!parsed.keeps_alive());
        let (parsed, _) = complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n");
        assert_eq!(parsed.framing, DeclaredFraming::Length(3));
    }

    #[test]
    fn status_lines() {
        assert_eq!(complete(b"HTTP/1.1 204\r\n\r\n").0.status.as_u16(), 204);
        assert_eq!(complete(b"HTTP/1.1 599 \r\n\r\n").0.status.as_u16(), 599);
        for bad in [
            &b"HTTP/1.1 20 OK\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/2.0 200 OK\r\n\r\n",
            b"http/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 099 OK\r\n\r\n",
            b"HTTP/1.1 200 O\x00K\r\n\r\n",
            b"HTTP/1.1  200 OK\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
        ] {
            assert_eq!(
                error(bad),
                ParseError::InvalidStatusLine,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let cases: [(&[u8], ParseError); 6] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                ParseError::ConflictingContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                ParseError::TransferEncodingWithContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                ParseError::InvalidTransferEncoding,
            ),
            (
                b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                ParseError::TransferEncodingInHttp10,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                ParseError::InvalidContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
                ParseError::ObsoleteLineFolding,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(error(input), expected, "{}", String::from_utf8_lossy(input));
        }
        assert_eq!(
            error(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
            ParseError::BareLineFeed
        );
    }

    #[test]
    fn limits_trip_at_the_same_byte_whatever_the_split() {
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2000));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(error(&big), ParseError::HeadTooLarge);
        let many: Vec<u8> = [&b"HTTP/1.1 200 OK\r\n"[..], &b"A: 1\r\n".repeat(9), b"\r\n"].concat();
        assert_eq!(error(&many), ParseError::TooManyHeaders);
    }

    #[test]
    fn connection_tokens_decide_reuse() {
        let (parsed, _) = complete(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert!(!parsed.keeps_alive());
        let (parsed, _) = complete(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(parsed.keeps_alive());
        let (parsed, _) =
            complete(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n");
        assert!(parsed.connection.upgrade);
    }
}
