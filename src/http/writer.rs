//! PURE response encoding: status line, headers and framing into a `BytesMut`. No I/O.
//! Also the heads of the few requests Sentinel sends on its own behalf (health probes);
//! forwarded requests are rewritten by `proxy::headers`.
//!
//! Framing headers are decided here and nowhere else, so a handler can never announce a
//! length that disagrees with what is sent, or a body on a status that forbids one.

use bytes::{BufMut, BytesMut};

use super::error::RequestHeadError;
use super::request::{Method, Version};
use super::response::{HeaderValue, StatusCode};

/// The `Server` header value.
pub const SERVER_NAME: &str = concat!("sentinel/", env!("CARGO_PKG_VERSION"));

/// How the content after the head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// `Content-Length: n` (also sent for HEAD, announcing what GET would return).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// 1xx, 204 and 304: no content and no framing header at all.
    Bodyless,
}

/// Everything about the connection the head must state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionState {
    /// Version of the request being answered: a 1.0 client needs keep-alive spelled out.
    pub request_version: Version,
    pub keep_alive: bool,
}

/// Append a response head to `dst`.
///
/// Header values containing CR, LF or other controls are dropped rather than written: a
/// value built from client input must never be able to split the response.
pub fn encode_response_head(
    dst: &mut BytesMut,
    status: StatusCode,
    headers: &[(&'static str, HeaderValue)],
    framing: ResponseFraming,
    connection: ConnectionState,
    date: &[u8],
) {
    dst.reserve(256);
    put_status_line(dst, status);
    dst.put_slice(b"Server: ");
    dst.put_slice(SERVER_NAME.as_bytes());
    dst.put_slice(b"\r\nDate: ");
    dst.put_slice(date);
    dst.put_slice(b"\r\n");
    for (name, value) in headers {
        if !is_safe_header_value(value) || is_writer_owned(name) {
            continue;
        }
        dst.put_slice(name.as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
    put_framing_and_connection(dst, framing, connection);
}

/// `HTTP/1.1 <code> <reason>` and its CRLF.
pub(crate) fn put_status_line(dst: &mut BytesMut, status: StatusCode) {
    dst.put_slice(b"HTTP/1.1 ");
    put_decimal(dst, u64::from(status.as_u16()));
    dst.put_u8(b' ');
    dst.put_slice(status.reason().as_bytes());
    dst.put_slice(b"\r\n");
}

/// The framing header, the `Connection` header when one is needed, and the blank line that
/// ends the head.
pub(crate) fn put_framing_and_connection(
    dst: &mut BytesMut,
    framing: ResponseFraming,
    connection: ConnectionState,
) {
    match framing {
        ResponseFraming::Length(length) => {
            dst.put_slice(b"Content-Length: ");
            put_decimal(dst, length);
            dst.put_slice(b"\r\n");
        }
        ResponseFraming::Chunked => dst.put_slice(b"Transfer-Encoding: chunked\r\n"),
        ResponseFraming::Bodyless => {}
    }
    match (connection.keep_alive, connection.request_version) {
        (false, _) => dst.put_slice(b"Connection: close\r\n"),
        (true, Version::Http10) => dst.put_slice(b"Connection: keep-alive\r\n"),
        (true, Version::Http11) => {}
    }
    dst.put_slice(b"\r\n");
}

/// Append the head of a request Sentinel originates (a health probe), as opposed to one it
/// forwards (`proxy::headers::encode_request_head`): the request line, `headers` (which
/// must include `Host`), `Connection: close` and the blank line. No content: one request
/// per connection, so a probe never depends on a pooled connection's state.
///
/// Writes nothing and fails when `method` has no name or `target` is not an origin-form
/// path of visible ASCII: a space or CRLF in it would change the request line or start a
/// second request. As in responses, header values with controls are dropped, and framing
/// and `Connection` fields are the writer's.
pub fn encode_originated_request_head(
    dst: &mut BytesMut,
    method: Method,
    target: &str,
    headers: &[(&'static str, HeaderValue)],
) -> Result<(), RequestHeadError> {
    let method = method.name().ok_or(RequestHeadError::UnnamedMethod)?;
    let is_origin_form =
        target.starts_with('/') && target.bytes().all(|b| (0x21..0x7f).contains(&b));
    if !is_origin_form {
        return Err(RequestHeadError::InvalidTarget);
    }
    dst.reserve(128 + target.len());
    dst.put_slice(method.as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(target.as_bytes());
    dst.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if !is_safe_header_value(value) || is_framing(name) {
            continue;
        }
        dst.put_slice(name.as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
    dst.put_slice(b"Connection: close\r\n\r\n");
    Ok(())
}

/// The interim response that tells a client waiting on `Expect: 100-continue` to send.
pub const CONTINUE_RESPONSE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

// Chunked framing as we send it (RFC 9112 §7.1), the one place both directions of the proxy
// take it from: a size line, the data, `CHUNK_DATA_END`; after the last chunk, `LAST_CHUNK`.
// We never send chunk extensions or trailers.

/// The chunk-size line of a chunk of `len` bytes (`len` must not be 0: that ends the body).
/// For a caller that sends the data without copying it behind the size line.
pub fn encode_chunk_header(dst: &mut BytesMut, len: usize) {
    let mut hex = [0u8; 16];
    dst.put_slice(format_hex(len as u64, &mut hex));
    dst.put_slice(b"\r\n");
}

/// What follows a chunk's data.
pub const CHUNK_DATA_END: &[u8] = b"\r\n";

/// The zero-size chunk and the empty trailer section that end a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// One whole chunk carrying `data` (which must not be empty: that would end the body).
pub fn encode_chunk(dst: &mut BytesMut, data: &[u8]) {
    encode_chunk_header(dst, data.len());
    dst.put_slice(data);
    dst.put_slice(CHUNK_DATA_END);
}

/// Fields only the writer states, so a handler can never contradict the framing it chose.
fn is_writer_owned(name: &str) -> bool {
    is_framing(name)
        || ["date", "server"]
            .iter()
            .any(|owned| name.eq_ignore_ascii_case(owned))
}

/// Fields that frame a message or manage its connection: only the writer states them.
fn is_framing(name: &str) -> bool {
    ["content-length", "transfer-encoding", "connection"]
        .iter()
        .any(|owned| name.eq_ignore_ascii_case(owned))
}

fn is_safe_header_value(value: &HeaderValue) -> bool {
    is_safe_value(value.as_bytes())
}

/// No CR, LF or other controls: a value that cannot split a head.
pub(crate) fn is_safe_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)
}

pub(crate) fn put_decimal(dst: &mut BytesMut, value: u64) {
    let mut buffer = itoa::Buffer::new();
    dst.put_slice(buffer.format(value).as_bytes());
}

fn format_hex(mut value: u64, out: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = DIGITS[(value & 0xf) as usize];
        value >>= 4;
        if value == 0 {
            break;
        }
    }
    &out[i..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::{BodyLimits, ChunkedDecoder, Step};

    fn head(
        status: StatusCode,
        headers: &[(&'static str, HeaderValue)],
        framing: ResponseFraming,
        version: Version,
        keep_alive: bool,
    ) -> String {
        let mut dst = BytesMut::new();
        let connection = ConnectionState {
            request_version: version,
            keep_alive,
        };
        let date = b"Sun, 06 Nov 1994 08:49:37 GMT";
        encode_response_head(&mut dst, status, headers, framing, connection, date);
        String::from_utf8(dst.to_vec()).unwrap()
    }

    #[test]
    fn keep_alive_11_response_has_length_and_no_connection_header() {
        let text = head(
            StatusCode::OK,
            &[("Content-Type", "text/plain".into())],
            ResponseFraming::Length(5),
            Version::Http11,
            true,
        );
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 200 OK\r\nServer: {SERVER_NAME}\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
                 Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
            )
        );
    }

    #[test]
    fn http10_keep_alive_is_spelled_out_and_close_is_always_stated() {
        let text = head(
            StatusCode::OK,
            &[],
            ResponseFraming::Length(0),
            Version::Http10,
            true,
        );
        assert!(text.contains("Connection: keep-alive\r\n"));
        let text = head(
            StatusCode::OK,
            &[],
            ResponseFraming::Length(0),
            Version::Http11,
            false,
        );
        assert!(text.contains("Connection: close\r\n"));
    }

    #[test]
    fn bodyless_statuses_carry_no_framing_header() {
        let text = head(
            StatusCode::NOT_MODIFIED,
            &[],
            ResponseFraming::Bodyless,
            Version::Http11,
            true,
        );
        assert!(!text.contains("Content-Length"));
        assert!(!text.contains("Transfer-Encoding"));
    }

    #[test]
    fn header_values_with_line_breaks_are_dropped() {
        let text = head(
            StatusCode::OK,
            &[
                ("Location", "/a\r\nSet-Cookie: x=1".into()),
                ("X-Ok", "fine".into()),
            ],
            ResponseFraming::Length(0),
            Version::Http11,
            true,
        );
        assert!(!text.contains("Set-Cookie"));
        assert!(!text.contains("Location"));
        assert!(text.contains("X-Ok: fine\r\n"));
    }

    #[test]
    fn chunk_sizes_are_lower_case_hex() {
        for (len, line) in [(1, "1\r\n"), (26, "1a\r\n"), (65536, "10000\r\n")] {
            let mut dst = BytesMut::new();
            encode_chunk_header(&mut dst, len);
            assert_eq!(dst, line.as_bytes());
        }
    }

    #[test]
    fn encoded_chunks_decode_to_the_same_body() {
        let mut dst = BytesMut::new();
        encode_chunk(&mut dst, b"hello");
        assert_eq!(dst, &b"5\r\nhello\r\n"[..]);
        let long = vec![b'x'; 300];
        encode_chunk(&mut dst, &long);
        dst.extend_from_slice(LAST_CHUNK);

        let mut decoder = ChunkedDecoder::new(BodyLimits {
            max_body_bytes: u64::MAX,
            max_chunk_ext_bytes: 0,
            max_trailer_bytes: 0,
        });
        let mut body = Vec::new();
        let mut input = &dst[..];
        loop {
            match decoder.decode(input).unwrap() {
                Step::Data { start, end } => {
                    body.extend_from_slice(&input[start..end]);
                    input = &input[end..];
                }
                Step::Done { consumed } => {
                    assert_eq!(consumed, input.len(), "nothing after the last chunk");
                    break;
                }
                Step::NeedMore => panic!("framing ended early"),
            }
        }
        assert_eq!(&body[..5], b"hello");
        assert_eq!(&body[5..], &long[..]);
    }

    #[test]
    fn handlers_cannot_state_framing_or_connection_fields() {
        let text = head(
            StatusCode::OK,
            &[
                ("Content-Length", "999".into()),
                ("transfer-encoding", "chunked".into()),
                ("Connection", "keep-alive".into()),
                ("Server", "other".into()),
                ("Date", "then".into()),
                ("X-Ok", "fine".into()),
            ],
            ResponseFraming::Length(3),
            Version::Http11,
            true,
        );
        assert_eq!(text.matches("Content-Length").count(), 1);
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(
            !text.contains("chunked") && !text.contains("keep-alive"),
            "{text}"
        );
        assert!(!text.contains("other") && !text.contains("then"), "{text}");
        assert!(text.contains("X-Ok: fine\r\n"));
    }

    fn originated(method: Method, target: &str, headers: &[(&'static str, HeaderValue)]) -> String {
        let mut dst = BytesMut::new();
        encode_originated_request_head(&mut dst, method, target, headers).unwrap();
        String::from_utf8(dst.to_vec()).unwrap()
    }

    #[test]
    fn an_originated_request_states_its_fields_and_closes() {
        let text = originated(
            Method::Get,
            "/health?deep=1",
            &[
                ("Host", "10.0.0.1:8080".into()),
                ("User-Agent", "sentinel-health-check".into()),
            ],
        );
        assert_eq!(
            text,
            "GET /health?deep=1 HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n\
             User-Agent: sentinel-health-check\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn an_originated_request_cannot_be_split_or_reframed() {
        let text = originated(
            Method::Head,
            "/",
            &[
                ("X-Bad", "a\r\nX-Injected: 1".into()),
                ("Connection", "keep-alive".into()),
                ("Content-Length", "5".into()),
                ("Transfer-Encoding", "chunked".into()),
                ("Host", "h".into()),
            ],
        );
        assert_eq!(
            text,
            "HEAD / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        );
        for target in [
            "/a b",
            "/a\r\nGET /b HTTP/1.1",
            "relative",
            "",
            "/caf\u{e9}",
        ] {
            let mut dst = BytesMut::new();
            assert_eq!(
                encode_originated_request_head(&mut dst, Method::Get, target, &[]),
                Err(RequestHeadError::InvalidTarget),
                "{target:?}"
            );
            assert!(dst.is_empty(), "nothing written for {target:?}");
        }
        let mut dst = BytesMut::new();
        assert_eq!(
            encode_originated_request_head(&mut dst, Method::Other, "/", &[]),
            Err(RequestHeadError::UnnamedMethod)
        );
        assert!(dst.is_empty());
    }
}
