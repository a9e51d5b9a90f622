//! Parser rules, table-driven. Every case is also checked at every split point: each prefix
//! must parse as `Partial` or as exactly what the whole input gives (H1-023). Rule ids refer
//! to `specs/http1.md`.

use super::*;
use crate::http::error::ParseError as E;
use crate::http::request::RequestHead;
use bytes::Bytes;

/// Parse `input` whole and at every prefix; prefixes must agree with the whole verdict.
fn parse_split(input: &[u8], limits: &ParseLimits) -> Result<Status, ParseError> {
    let whole = parse_request(input, limits);
    for cut in 0..input.len() {
        let prefix = parse_request(&input[..cut], limits);
        assert!(
            prefix == Ok(Status::Partial) || prefix == whole,
            "prefix of {cut} bytes gave {prefix:?}, whole input gave {whole:?}: {:?}",
            String::from_utf8_lossy(input)
        );
    }
    whole
}

fn parse(input: &[u8]) -> Result<Status, ParseError> {
    parse_split(input, &ParseLimits::default())
}

fn head(input: &[u8]) -> RequestHead {
    match parse(input) {
        Ok(Status::Complete(parsed, consumed)) => {
            RequestHead::new(Bytes::copy_from_slice(&input[..consumed]), parsed)
        }
        other => panic!("expected a complete head, got {other:?}"),
    }
}

fn error(input: &[u8]) -> ParseError {
    match parse(input) {
        Err(e) => e,
        other => panic!(
            "expected an error for {:?}, got {other:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

#[test]
fn h1_000_simple_get_is_complete_with_exact_consumed() {
    let input = b"GET /index.html?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\nNEXT";
    let Ok(Status::Complete(parsed, consumed)) = parse(input) else {
        panic!("not complete")
    };
    assert_eq!(consumed, input.len() - 4);
    let get = RequestHead::new(Bytes::copy_from_slice(input), parsed);
    assert_eq!(get.method(), Method::Get);
    assert_eq!(get.method_str(), "GET");
    assert_eq!(get.target(), "/index.html?x=1");
    assert_eq!(get.version(), Version::Http11);
    assert_eq!(get.host(), Some("example.com"));
    assert_eq!(get.header("ACCEPT"), Some(&b"*/*"[..]));
    assert_eq!(get.framing(), RequestFraming::Empty);
    assert!(get.wants_keep_alive());
}

#[test]
fn h1_000_partial_until_the_empty_line() {
    assert_eq!(parse(b""), Ok(Status::Partial));
    assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(Status::Partial));
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r"),
        Ok(Status::Partial)
    );
}

#[test]
fn h1_000_values_are_trimmed_and_may_be_empty_or_carry_obs_text() {
    let parsed = head(b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Pad: \t v a l \t\r\nX-Utf8: caf\xc3\xa9\r\n\r\n");
    assert_eq!(parsed.header("x-empty"), Some(&b""[..]));
    assert_eq!(parsed.header("x-pad"), Some(&b"v a l"[..]));
    assert_eq!(parsed.header("x-utf8"), Some(&b"caf\xc3\xa9"[..]));
}

#[test]
fn h1_001_request_line_needs_single_spaces_and_three_parts() {
    for input in [
        &b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET /\r\nHost: a\r\n\r\n",
        b"GET\r\nHost: a\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert!(
            matches!(
                error(input),
                E::InvalidRequestLine | E::InvalidMethod | E::InvalidVersion
            ),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    assert_eq!(
        error(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
        E::InvalidVersion
    );
    assert_eq!(
        error(b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        E::InvalidMethod
    );
}

#[test]
fn h1_002_method_must_be_a_token() {
    assert_eq!(
        error(b"G(ET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        E::InvalidMethod
    );
    assert_eq!(
        error(b"GE\x00T / HTTP/1.1\r\nHost: a\r\n\r\n"),
        E::InvalidMethod
    );
    assert_eq!(
        error(b"\x16\x03\x01\x02\x00 / HTTP/1.1\r\n\r\n"),
        E::InvalidMethod
    );
    // Extension methods are tokens too, and methods are case-sensitive.
    let purge = head(b"PURGE / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(purge.method(), Method::Other);
    assert_eq!(purge.method_str(), "PURGE");
    assert_eq!(
        head(b"get / HTTP/1.1\r\nHost: a\r\n\r\n").method(),
        Method::Other
    );
}

#[test]
fn h1_003_target_forms_are_checked_per_method() {
    assert_eq!(head(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").target(), "*");
    assert_eq!(
        error(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
        E::InvalidTarget
    );
    assert_eq!(
        head(b"GET http://example.com/a?b HTTP/1.1\r\nHost: x\r\n\r\n").target(),
        "http://example.com/a?b"
    );
    assert_eq!(
        error(b"GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n"),
        E::InvalidTarget
    );
    assert_eq!(
        error(b"GET http://u@evil/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        E::InvalidTarget
    );
    assert_eq!(
        error(b"GET example.com HTTP/1.1\r\nHost: a\r\n\r\n"),
        E::InvalidTarget
    );
    assert_eq!(
        head(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").target(),
        "example.com:443"
    );
    assert_eq!(
        head(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n").target(),
        "[::1]:443"
    );
    // CONNECT takes host:port only (RFC 9112 3.2.3).
    for target in [
        "/",
        "example.com",
        "example.com:",
        ":443",
        "example.com:x",
        "http://e.com:1/",
        "*",
    ] {
        let input = format!("CONNECT {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(error(input.as_bytes()), E::InvalidTarget, "{target}");
    }
    assert_eq!(
        error(b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n"),
        E::InvalidTarget
    );
    assert_eq!(
        error(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
        E::InvalidTarget
    );
    assert_eq!(
        error(b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n"),
        E::InvalidTarget
    );
}

#[test]
fn h1_004_versions() {
    assert_eq!(head(b"GET / HTTP/1.0\r\n\r\n").version(), Version::Http10);
    // A later 1.x minor version is served as 1.1 (RFC 9110 §2.5), so it needs Host too.
    for v in ["HTTP/1.2", "HTTP/1.9"] {
        let input = format!("GET / {v}\r\nHost: a\r\n\r\n");
        assert_eq!(head(input.as_bytes()).version(), Version::Http11, "{v}");
        let input = format!("GET / {v}\r\n\r\n");
        assert_eq!(error(input.as_bytes()), E::MissingHost, "{v}");
    }
    for v in ["HTTP/2.0", "HTTP/0.9", "HTTP/3.0"] {
        let input = format!("GET / {v}\r\nHost: a\r\n\r\n");
        assert_eq!(error(input.as_bytes()), E::UnsupportedVersion, "{v}");
    }
    for v in [
        "http/1.1",
        "HTTP/1",
        "HTTP/1.1.1",
        "HTTP/11",
        "HTTP/a.b",
        "HTTP/1.1x",
    ] {
        let input = format!("GET / {v}\r\nHost: a\r\n\r\n");
        assert_eq!(error(input.as_bytes()), E::InvalidVersion, "{v}");
    }
    // HTTP/0.9 simple requests have no version at all.
    assert_eq!(error(b"GET /\r\n\r\n"), E::InvalidRequestLine);
}

#[test]
fn h1_005_bare_lf_is_rejected_everywhere() {
    assert_eq!(error(b"GET / HTTP/1.1\nHost: a\r\n\r\n"), E::BareLineFeed);
    assert_eq!(error(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), E::BareLineFeed);
    assert_eq!(error(b"GET / HTTP/1.1\r\nHost: a\r\n\n"), E::BareLineFeed);
    assert_eq!(
        error(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        E::BareLineFeed
    );
}

#[test]
fn h1_006_bare_cr_is_rejected() {
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"),
        E::BareCarriageReturn
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nX: ab\r\r\n\r\n"),
        E::BareCarriageReturn
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nX\r: ab\r\n\r\n"),
        E::BareCarriageReturn
    );
}

#[test]
fn h1_007_obs_fold_is_rejected() {
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
        E::ObsoleteLineFolding
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n"),
        E::ObsoleteLineFolding
    );
    // A first header line that starts with whitespace is the same trick.
    assert_eq!(
        error(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
        E::ObsoleteLineFolding
    );
}

#[test]
fn h1_008_whitespace_before_colon_is_rejected() {
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
        E::WhitespaceBeforeColon
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 0\r\n\r\n"),
        E::WhitespaceBeforeColon
    );
}

#[test]
fn h1_009_field_names_are_tokens() {
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n"),
        E::InvalidHeaderName
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n"),
        E::WhitespaceBeforeColon
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n"),
        E::InvalidHeaderName
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n"),
        E::InvalidHeaderName
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nX\x00: 1\r\n\r\n"),
        E::InvalidHeaderName
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nX\xff: 1\r\n\r\n"),
        E::InvalidHeaderName
    );
}

#[test]
fn h1_010_control_characters_in_values_are_rejected() {
    for ctl in [0x00u8, 0x01, 0x08, 0x0b, 0x0c, 0x1b, 0x1f, 0x7f] {
        let mut input = b"GET / HTTP/1.1\r\nHost: a\r\nX: a".to_vec();
        input.push(ctl);
        input.extend_from_slice(b"b\r\n\r\n");
        assert_eq!(error(&input), E::InvalidHeaderValue, "byte {ctl:#x}");
    }
}

#[test]
fn h1_011_content_length_must_be_digits_without_overflow() {
    assert_eq!(
        head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n").framing(),
        RequestFraming::Length(42)
    );
    assert_eq!(
        head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n")
            .framing(),
        RequestFraming::Length(u64::MAX)
    );
    for bad in [
        "",
        "-1",
        "+1",
        "1 2",
        "0x10",
        "1.0",
        "abc",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(error(input.as_bytes()), E::InvalidContentLength, "{bad:?}");
    }
}

#[test]
fn h1_012_repeated_content_length_must_agree() {
    let same =
        head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(same.framing(), RequestFraming::Length(5));
    let list = head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n");
    assert_eq!(list.framing(), RequestFraming::Length(5));
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        E::ConflictingContentLength
    );
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n"),
        E::ConflictingContentLength
    );
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n"),
        E::InvalidContentLength
    );
}

#[test]
fn h1_013_transfer_encoding_with_content_length_is_rejected() {
    assert_eq!(error(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), E::TransferEncodingWithContentLength);
    assert_eq!(error(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), E::TransferEncodingWithContentLength);
}

#[test]
fn h1_014_transfer_encoding_in_http10_is_rejected() {
    assert_eq!(
        error(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        E::TransferEncodingInHttp10
    );
}

#[test]
fn h1_015_transfer_codings() {
    assert_eq!(
        head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").framing(),
        RequestFraming::Chunked
    );
    assert_eq!(
        head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n").framing(),
        RequestFraming::Chunked
    );
    // Final coding other than chunked, or a coding we do not implement: 501.
    for te in [
        "gzip",
        "chunked, gzip",
        "gzip, chunked",
        "identity",
        "x-custom",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_eq!(
            error(input.as_bytes()),
            E::UnsupportedTransferCoding,
            "{te}"
        );
    }
    // Split over two fields: the codings concatenate (RFC 9110 §5.3).
    assert_eq!(error(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"), E::UnsupportedTransferCoding);
    // chunked twice, empty elements, junk: 400.
    for te in [
        "chunked, chunked",
        "chunked,",
        ",chunked",
        "",
        "chunked;q=1",
        "\"chunked\"",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_eq!(
            error(input.as_bytes()),
            E::InvalidTransferEncoding,
            "{te:?}"
        );
    }
    assert_eq!(error(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), E::InvalidTransferEncoding);
}

#[test]
fn h1_015_empty_transfer_coding_elements_are_refused_not_ignored() {
    // RFC 9110 §5.6.1 lets a recipient ignore empty list elements, so `chunked,` could be
    // read as `chunked`. In the one field that decides where a body ends we refuse instead:
    // a hop that counts the empty element (as a last coding that is not chunked, say) would
    // frame the message differently. See H1-015 in specs/http1.md.
    for te in [
        "chunked,",
        ",chunked",
        ", chunked",
        "chunked ,",
        "chunked, ,",
        "chunked,,",
        ", ,chunked",
        "chunked,\t",
        ",",
        " , ",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_eq!(
            error(input.as_bytes()),
            E::InvalidTransferEncoding,
            "{te:?}"
        );
    }
    // An empty element in either of two fields, whose values concatenate (RFC 9110 §5.3).
    for fields in [
        "Transfer-Encoding: ,\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: ,",
        "Transfer-Encoding: gzip,\r\nTransfer-Encoding: chunked",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n\r\n");
        assert_eq!(
            error(input.as_bytes()),
            E::InvalidTransferEncoding,
            "{fields:?}"
        );
    }
}

#[test]
fn h1_016_http11_needs_exactly_one_host() {
    assert_eq!(error(b"GET / HTTP/1.1\r\n\r\n"), E::MissingHost);
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        E::DuplicateHost
    );
    assert_eq!(
        error(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"),
        E::DuplicateHost
    );
    assert_eq!(head(b"GET / HTTP/1.0\r\n\r\n").host(), None);
    assert_eq!(head(b"GET / HTTP/1.1\r\nhOsT: a\r\n\r\n").host(), Some("a"));
}

#[test]
fn h1_017_host_value_syntax() {
    for good in [
        "example.com",
        "example.com:8080",
        "[::1]:80",
        "127.0.0.1",
        "",
    ] {
        let input = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
        assert!(
            matches!(parse(input.as_bytes()), Ok(Status::Complete(..))),
            "{good:?}"
        );
    }
    for bad in ["a b", "a/b", "user@a", "a\\b", "a\"b"] {
        let input = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        assert_eq!(error(input.as_bytes()), E::InvalidHost, "{bad:?}");
    }
}

#[test]
fn h1_018_only_100_continue_is_an_accepted_expectation() {
    assert!(head(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n"
    )
    .expects_continue());
    // RFC 9110 §10.1.1: ignored in HTTP/1.0.
    assert!(
        !head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .expects_continue()
    );
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n"),
        E::UnsupportedExpectation
    );
}

fn small_limits() -> ParseLimits {
    ParseLimits {
        max_request_line_bytes: 32,
        max_head_bytes: 128,
        max_headers: 3,
    }
}

#[test]
fn h1_019_request_line_limit_edge() {
    let limits = small_limits();
    // "GET /" + padding + " HTTP/1.1" exactly 32 bytes is accepted, 33 is not.
    let line = |len: usize| format!("GET /{} HTTP/1.1", "a".repeat(len - 14));
    assert_eq!(line(32).len(), 32);
    let at_limit = format!("{}\r\nHost: a\r\n\r\n", line(32));
    assert!(matches!(
        parse_split(at_limit.as_bytes(), &limits),
        Ok(Status::Complete(..))
    ));
    let over = format!("{}\r\nHost: a\r\n\r\n", line(33));
    assert_eq!(
        parse_split(over.as_bytes(), &limits),
        Err(E::RequestLineTooLong)
    );
    // Without any line end the limit trips as soon as it is certain.
    let endless = "GET /".to_string() + &"a".repeat(200);
    assert_eq!(
        parse_request(endless.as_bytes(), &limits),
        Err(E::RequestLineTooLong)
    );
}

#[test]
fn h1_020_head_size_limit_edge() {
    let limits = small_limits();
    let build = |total: usize| {
        let base = "GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n";
        let value = "v".repeat(total - base.len());
        format!("GET / HTTP/1.1\r\nHost: a\r\nX: {value}\r\n\r\n")
    };
    assert_eq!(build(128).len(), 128);
    assert!(matches!(
        parse_split(build(128).as_bytes(), &limits),
        Ok(Status::Complete(_, 128))
    ));
    assert_eq!(
        parse_split(build(129).as_bytes(), &limits),
        Err(E::HeadTooLarge)
    );
}

#[test]
fn h1_021_header_count_limit_edge() {
    let limits = small_limits();
    let three = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    assert!(matches!(
        parse_split(three, &limits),
        Ok(Status::Complete(..))
    ));
    let four = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(parse_split(four, &limits), Err(E::TooManyHeaders));
}

#[test]
fn h1_022_leading_empty_lines_are_skipped() {
    let input = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let Ok(Status::Complete(_, consumed)) = parse(input) else {
        panic!()
    };
    assert_eq!(consumed, input.len());
    // ...but they count toward the head limit, so they cannot be used to stall forever.
    let flood = b"\r\n".repeat(100);
    assert_eq!(parse_request(&flood, &small_limits()), Err(E::HeadTooLarge));
}

/// Regression (found by the fuzzer): leading empty lines pushed the request-line window past
/// the head limit, and the verdict flipped between 431 and 414 with the read boundary.
#[test]
fn h1_023_request_line_near_the_head_limit_has_one_verdict() {
    let mut input = b"\r\n".repeat(32);
    input.extend_from_slice(b"GET /aaaaaaaaaaaaaaaaaaaaaaaa");
    let limits = ParseLimits {
        max_request_line_bytes: 16,
        max_head_bytes: 80,
        max_headers: 1,
    };
    assert_eq!(parse_split(&input, &limits), Err(E::HeadTooLarge));
}

#[test]
fn h1_040_connection_options() {
    assert!(!head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").wants_keep_alive());
    assert!(
        !head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n")
            .wants_keep_alive()
    );
    assert!(!head(b"GET / HTTP/1.0\r\n\r\n").wants_keep_alive());
    assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").wants_keep_alive());
    let upgrade =
        head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert!(upgrade.connection_options().upgrade);
}

#[test]
fn h1_041_pipelined_heads_are_consumed_one_at_a_time() {
    let first = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut input = first.to_vec();
    input.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    let Ok(Status::Complete(parsed, consumed)) = parse(&input) else {
        panic!()
    };
    assert_eq!(consumed, first.len());
    assert_eq!(parsed.target.slice(&input), b"/a");
    let Ok(Status::Complete(parsed, _)) = parse(&input[consumed..]) else {
        panic!()
    };
    assert_eq!(parsed.target.slice(&input[consumed..]), b"/b");
}

#[test]
fn h1_010_every_control_byte_is_caught_at_every_position_of_a_value() {
    // The value check runs eight bytes at a time: a bad byte must be found wherever it falls
    // in the word, and in the tail after the last whole word.
    for position in 0..19 {
        for bad in (0u8..0x20).filter(|&b| b != b'\t').chain([0x7f]) {
            let mut value = vec![b'v'; 18];
            value.insert(position, bad);
            let mut input = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
            input.extend_from_slice(&value);
            input.extend_from_slice(b"\r\n\r\n");
            let result = parse_request(&input, &ParseLimits::default());
            assert!(
                result.is_err(),
                "byte {bad:#04x} at {position} was accepted"
            );
        }
        // Tabs and obs-text are fine anywhere.
        for good in [b'\t', 0x80, 0xff, b' ', b'~'] {
            let mut value = vec![b'v'; 18];
            value.insert(position, good);
            let mut input = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
            input.extend_from_slice(&value);
            input.extend_from_slice(b"\r\n\r\n");
            assert!(
                matches!(
                    parse_request(&input, &ParseLimits::default()),
                    Ok(Status::Complete(..))
                ),
                "byte {good:#04x} at {position} was refused"
            );
        }
    }
}

#[test]
fn field_value_run_matches_a_byte_by_byte_scan() {
    // The word-at-a-time scan (and its overlapping read of the last eight bytes) must stop
    // where a plain loop stops: HTAB is flagged by the word test but valid, and a borrow can
    // flag the byte after a control byte (here SP after HTAB) without it being invalid.
    let reference = |bytes: &[u8], from: usize| {
        (from..bytes.len())
            .find(|&i| !is_field_value_byte(bytes[i]))
            .unwrap_or(bytes.len())
    };
    let specials = [b'\t', b'\r', b'\n', 0x00, 0x1f, 0x7f, b' ', 0x80, 0xff];
    for len in 0..=24 {
        for &first in &specials {
            for &second in &specials {
                for at in 0..len {
                    let mut bytes = vec![b'v'; len];
                    bytes[at] = first;
                    if at + 1 < len {
                        bytes[at + 1] = second;
                    }
                    for from in 0..=len {
                        assert_eq!(
                            field_value_run(&bytes, from),
                            reference(&bytes, from),
                            "{bytes:?} from {from}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn fast_request_line_agrees_with_the_general_path() {
    // Whenever the one-pass request line takes a line, the general path must read it the
    // same way, errors included.
    let lines: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\n",
        b"GET /a?b=c HTTP/1.0\r\n",
        b"POST http://example.com/x HTTP/1.1\r\n",
        b"POST http:// HTTP/1.1\r\n",
        b"GET ftp://a/ HTTP/1.1\r\n",
        b"OPTIONS * HTTP/1.1\r\n",
        b"GET * HTTP/1.1\r\n",
        b"CONNECT a.b:443 HTTP/1.1\r\n",
        b"CONNECT a.b HTTP/1.1\r\n",
        b"CONNECT /a HTTP/1.1\r\n",
        b"BREW@ / HTTP/1.1\r\n",
        b"GET /# HTTP/1.1\r\n",
        b"GET / HTTP/1.2\r\n",
        b"GET / HTTP/2.0\r\n",
        b"GET  / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\n",
    ];
    for &line in lines {
        let Some(fast) = fast_request_line(line, 0, line.len()) else {
            continue;
        };
        let general = find_line_end(line, 0, line.len()).and_then(|end| {
            let end = end.ok_or(ParseError::InvalidRequestLine)?;
            Ok((parse_request_line(line, Span::new(0, end))?, end))
        });
        assert_eq!(fast, general, "{:?}", String::from_utf8_lossy(line));
    }
}

#[test]
fn notable_field_names_match_exactly_like_eq_ignore_ascii_case() {
    // `NotableField::named` compares words with bit 0x20 set; for token bytes that must be
    // the same as `eq_ignore_ascii_case`. Every one-byte change of every name, over every
    // tchar, in both cases, must get the same answer.
    let names: [&[u8]; 5] = [
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"connection",
        b"expect",
    ];
    let tchars: Vec<u8> = (0..=255u8).filter(|&b| is_tchar(b)).collect();
    for name in names {
        for upper in [false, true] {
            let base: Vec<u8> = if upper {
                name.to_ascii_uppercase()
            } else {
                name.to_vec()
            };
            for at in 0..base.len() {
                for &b in &tchars {
                    let mut candidate = base.clone();
                    candidate[at] = b;
                    let expected = names.iter().any(|n| candidate.eq_ignore_ascii_case(n));
                    assert_eq!(
                        NotableField::named(&candidate).is_some(),
                        expected,
                        "{:?}",
                        String::from_utf8_lossy(&candidate)
                    );
                }
            }
        }
    }
}

#[test]
fn value_tokens_match_exactly_like_eq_ignore_ascii_case() {
    // The word compare used for `Expect`, `Transfer-Encoding` and `Connection` tokens must
    // agree with `eq_ignore_ascii_case` for every field-value byte at every position.
    let tokens: [&[u8]; 5] = [
        b"100-continue",
        b"chunked",
        b"close",
        b"keep-alive",
        b"upgrade",
    ];
    let value_bytes: Vec<u8> = (0..=255u8).filter(|&b| is_field_value_byte(b)).collect();
    for token in tokens {
        for base in [token.to_vec(), token.to_ascii_uppercase()] {
            for at in 0..base.len() {
                for &b in &value_bytes {
                    let mut candidate = base.clone();
                    candidate[at] = b;
                    assert_eq!(
                        eq_ignore_case_to_lowercase(&candidate, token),
                        candidate.eq_ignore_ascii_case(token),
                        "{:?}",
                        String::from_utf8_lossy(&candidate)
                    );
                }
            }
        }
    }
}
