//! The invariants the fuzz targets check, shared with the stable corpus replay
//! (`tests/fuzz_corpus.rs` includes this file with `#[path]`), so a corpus file is judged the
//! same way by `cargo test` as by `cargo fuzz`. Each check panics on a broken invariant.
//!
//! Inputs are raw bytes as a client (or a backend) would send them, so corpus files stay
//! readable. Read boundaries are not encoded in the input: each check replays the input under
//! several boundary plans itself (every prefix of a short head, byte-at-a-time bodies, and
//! plans drawn from a generator seeded by the input), which covers far more splits per run
//! than a single fuzzer-chosen cut.
//!
//! Only `sentinel`, `bytes` and `std` are used, so this compiles in both crates.

use std::path::{Component, Path};

use bytes::Bytes;
use sentinel::config::Config;
use sentinel::http::body::{BodyLimits, ChunkedDecoder, Step};
use sentinel::http::error::{BodyError, ParseError};
use sentinel::http::parser::{parse_request, ParseLimits, Status};
use sentinel::http::proxy_protocol::{self, Parsed, ProxyHeader};
use sentinel::http::request::{ConnectionOptions, RequestFraming, RequestHead, Version};
use sentinel::http::response_parser::{
    parse_response, DeclaredFraming, ParsedResponse, ResponseLimits, ResponseStatus,
};
use sentinel::static_files::{sanitize_path, PathError};

/// How much work a check may spend on one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// Fuzzing: bounded per input so the fuzzer keeps its pace.
    Sampled,
    /// Corpus replay: every prefix and every two-read split.
    Exhaustive,
}

// ---------------------------------------------------------------------------------------------
// Request heads
// ---------------------------------------------------------------------------------------------

/// Requests followed in one input (pipelining); more only costs time.
const MAX_PIPELINED: usize = 8;

/// Under `Effort::Sampled`, every prefix up to this length is re-parsed; beyond it, a sample.
const SAMPLED_ALL_PREFIXES_UP_TO: usize = 256;

/// The limit sets every head is parsed under: the defaults, and small ones so that fuzz-sized
/// inputs reach the request-line, head and header-count windows. All are sets the config
/// validator accepts (`max_request_line_bytes + 64 <= max_head_bytes`); the last is its edge.
fn parse_limit_sets() -> [ParseLimits; 3] {
    [
        ParseLimits::default(),
        ParseLimits {
            max_request_line_bytes: 40,
            max_head_bytes: 160,
            max_headers: 4,
        },
        ParseLimits {
            max_request_line_bytes: 16,
            max_head_bytes: 80,
            max_headers: 1,
        },
    ]
}

/// Parse a stream of pipelined requests (heads and their bodies) under every limit set.
///
/// For each head: every prefix parses as `Partial` or exactly as the whole input does (which is
/// what makes the verdict independent of read boundaries: the connection re-parses the grown
/// buffer after each read); a `Complete` head re-parses identically from its own bytes and
/// reads back consistently through `RequestHead`. Bodies are skipped by their framing
/// (chunked ones through [`check_chunked_body`]) to reach the next head.
pub fn check_request_stream(input: &[u8], effort: Effort) {
    check_limit_monotonicity(input);
    for limits in parse_limit_sets() {
        walk_stream(input, |rest| check_request(rest, &limits, effort));
    }
}

/// Check one message after another from the start of `input` (at most `MAX_PIPELINED`):
/// `check_one` checks the message at the start of what is left and says how many bytes it
/// took, or `None` when the stream cannot go on.
fn walk_stream(input: &[u8], mut check_one: impl FnMut(&[u8]) -> Option<usize>) {
    let mut rest = input;
    for _ in 0..MAX_PIPELINED {
        let Some(used) = check_one(rest) else {
            break;
        };
        rest = &rest[used..];
        if rest.is_empty() {
            break;
        }
    }
}

/// Larger limits only let more through: a verdict under smaller limits that is not one of
/// them tripping (including `Partial`) is the verdict under larger limits too.
fn check_limit_monotonicity(input: &[u8]) {
    let sets = parse_limit_sets();
    let verdicts = sets.map(|limits| parse_request(input, &limits));
    assert_monotonic(
        input,
        &sets,
        &verdicts,
        |verdict| {
            matches!(
                verdict,
                Err(ParseError::RequestLineTooLong
                    | ParseError::HeadTooLarge
                    | ParseError::TooManyHeaders)
            )
        },
        |smaller, larger| {
            smaller.max_request_line_bytes <= larger.max_request_line_bytes
                && smaller.max_head_bytes <= larger.max_head_bytes
                && smaller.max_headers <= larger.max_headers
        },
    );
}

/// For every pair of limit sets where `smaller` fits inside `larger`: the verdict under
/// `smaller` is the one under `larger`, unless it is a limit tripping (`tripped`).
fn assert_monotonic<L: std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    input: &[u8],
    sets: &[L],
    verdicts: &[V],
    tripped: impl Fn(&V) -> bool,
    contained: impl Fn(&L, &L) -> bool,
) {
    for (larger, larger_verdict) in sets.iter().zip(verdicts) {
        for (smaller, smaller_verdict) in sets.iter().zip(verdicts) {
            assert!(
                tripped(smaller_verdict)
                    || !contained(smaller, larger)
                    || smaller_verdict == larger_verdict,
                "{smaller:?} gave {smaller_verdict:?} but {larger:?} gave {larger_verdict:?}; \
                 input b\"{}\"",
                escape(input)
            );
        }
    }
}

/// Check the head at the start of `input`; the bytes its head and body used, if both are
/// complete.
fn check_request(input: &[u8], limits: &ParseLimits, effort: Effort) -> Option<usize> {
    let whole = parse_request(input, limits);
    for cut in prefixes(input, effort) {
        let prefix = parse_request(&input[..cut], limits);
        assert!(
            prefix == Ok(Status::Partial) || prefix == whole,
            "split dependence under {limits:?}: the first {cut} bytes gave {prefix:?}, \
             all {} gave {whole:?}; input b\"{}\"",
            input.len(),
            escape(input)
        );
    }
    let Ok(Status::Complete(parsed, consumed)) = whole.clone() else {
        return None;
    };
    assert!(
        consumed <= input.len(),
        "consumed {consumed} of {}",
        input.len()
    );
    let head_bytes = &input[..consumed];
    assert!(
        head_bytes.ends_with(b"\r\n\r\n"),
        "head does not end in an empty line"
    );
    assert_eq!(
        parse_request(head_bytes, limits),
        whole,
        "the head alone parses differently"
    );
    assert_eq!(
        parse_request(&head_bytes[..consumed - 1], limits),
        Ok(Status::Partial),
        "the head less its last byte is not Partial"
    );
    let framing = parsed.framing;
    check_head(RequestHead::new(Bytes::copy_from_slice(head_bytes), parsed));

    let body = &input[consumed..];
    let body_used = match framing {
        RequestFraming::Empty => 0,
        RequestFraming::Length(length) => usize::try_from(length)
            .ok()
            .filter(|&length| length <= body.len())?,
        RequestFraming::Chunked => match check_chunked_body(body, default_body_limits(), effort) {
            BodyEnd::Done { used } => used,
            BodyEnd::NeedMore | BodyEnd::Failed(_) => return None,
        },
    };
    Some(consumed + body_used)
}

/// Prefix lengths to re-parse: all of them when exhaustive or short; otherwise all up to
/// [`SAMPLED_ALL_PREFIXES_UP_TO`], those around each line end (where verdicts change) and a
/// seeded random sample.
fn prefixes(input: &[u8], effort: Effort) -> Vec<usize> {
    let len = input.len();
    if effort == Effort::Exhaustive || len <= SAMPLED_ALL_PREFIXES_UP_TO {
        return (0..len).collect();
    }
    let mut cuts: Vec<usize> = (0..=SAMPLED_ALL_PREFIXES_UP_TO).collect();
    cuts.extend(
        positions(b'\n', input)
            .take(128)
            .flat_map(|lf| [lf, lf + 1, lf + 2]),
    );
    let mut rng = Rng::seeded(input);
    cuts.extend((0..32).map(|_| rng.below(len)));
    cuts.retain(|&cut| cut < len);
    cuts
}

fn positions(needle: u8, haystack: &[u8]) -> impl Iterator<Item = usize> + '_ {
    haystack
        .iter()
        .enumerate()
        .filter(move |&(_, &b)| b == needle)
        .map(|(i, _)| i)
}

/// Everything `RequestHead` exposes agrees with the bytes and with the rules the head passed.
fn check_head(head: RequestHead) {
    let method = head.method_str();
    assert!(
        !method.is_empty() && method.bytes().all(is_tchar),
        "method {method:?}"
    );
    let target = head.target();
    assert!(
        !target.is_empty()
            && target
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'#'),
        "target {target:?}"
    );
    let version = head.version();
    let _ = (head.method().is_idempotent(), version.as_str());
    let _ = (head.connection_options(), head.wants_keep_alive());

    let mut hosts = 0;
    let mut transfer_encoding = false;
    let mut content_length = None;
    let mut expect = false;
    for (name, value) in head.headers() {
        assert!(
            !name.is_empty() && name.bytes().all(is_tchar),
            "field name {name:?}"
        );
        assert!(
            !value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0),
            "field value b\"{}\"",
            escape(value)
        );
        assert!(
            !value.starts_with(b" ")
                && !value.starts_with(b"\t")
                && !value.ends_with(b" ")
                && !value.ends_with(b"\t"),
            "untrimmed field value b\"{}\"",
            escape(value)
        );
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = value
                .split(|&b| b == b',')
                .next()
                .and_then(|first| std::str::from_utf8(first).ok())
                .and_then(|first| first.trim_matches([' ', '\t']).parse::<u64>().ok());
        } else if name.eq_ignore_ascii_case("expect") {
            assert!(value.eq_ignore_ascii_case(b"100-continue"));
            expect = true;
        }
    }
    assert_eq!(head.headers().count(), head.header_count());

    // Host: exactly one in 1.1, at most one in 1.0, and `host()` is the first one.
    assert!(hosts <= 1, "{hosts} Host fields accepted");
    assert!(hosts == 1 || version == Version::Http10, "1.1 without Host");
    assert_eq!(head.host().is_some(), hosts == 1);
    if let Some(host) = head.host() {
        assert_eq!(Some(host.as_bytes()), head.header("host"));
    }
    assert_eq!(
        head.expects_continue(),
        expect && version == Version::Http11
    );

    // Framing: one reading only (RFC 9112 §6.3), as the fields say.
    let expected = match (transfer_encoding, content_length) {
        (true, None) => {
            assert_eq!(
                version,
                Version::Http11,
                "Transfer-Encoding accepted in 1.0"
            );
            RequestFraming::Chunked
        }
        (true, Some(_)) => panic!("Transfer-Encoding and Content-Length both accepted"),
        (false, Some(length)) => RequestFraming::Length(length),
        (false, None) => RequestFraming::Empty,
    };
    assert_eq!(head.framing(), expected);
}

/// RFC 9110 §5.6.2 `tchar`, written out again rather than borrowed from the parser.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// ---------------------------------------------------------------------------------------------
// Response heads (what backends send)
// ---------------------------------------------------------------------------------------------

/// The limit sets every response head is parsed under: the defaults, the smallest head the
/// config accepts (`proxy.max_response_head_bytes: 1024`) with the active checks' header cap,
/// and two small sets the config cannot express but the parser must honour like any other,
/// so that fuzz-sized inputs reach the head-size and header-count limits.
fn response_limit_sets() -> [ResponseLimits; 4] {
    [
        ResponseLimits {
            max_head_bytes: sentinel::limits::DEFAULT_MAX_RESPONSE_HEAD_BYTES,
            max_headers: sentinel::limits::MAX_RESPONSE_HEADERS,
        },
        ResponseLimits {
            max_head_bytes: 1024,
            max_headers: 100,
        },
        ResponseLimits {
            max_head_bytes: 160,
            max_headers: 4,
        },
        ResponseLimits {
            max_head_bytes: 64,
            max_headers: 1,
        },
    ]
}

/// Parse a stream of responses from one backend connection under every limit set, the way the
/// proxy reads them: interim 1xx heads (other than 101) are followed by the next head, bodies
/// are skipped by their framing (1xx, 204 and 304 have none; chunked ones go through
/// [`check_chunked_body`]), and a body that runs until close or a 101 ends the stream.
///
/// For each head: every prefix parses as `Partial` or exactly as the whole input does. The
/// proxy re-parses its grown buffer after every read, so that is what makes the verdict the
/// same for any split into reads (two reads are a prefix, then the whole). A `Complete` head
/// fits its limits, re-parses identically from its own bytes, and its spans, status and
/// framing agree with an independent reading of those bytes.
pub fn check_response_stream(input: &[u8], effort: Effort) {
    check_response_limit_monotonicity(input);
    for limits in response_limit_sets() {
        walk_stream(input, |rest| check_response(rest, &limits, effort));
    }
}

/// Larger limits only let more through: a verdict under smaller limits that is not one of
/// them tripping (including `Partial`) is the verdict under larger limits too.
fn check_response_limit_monotonicity(input: &[u8]) {
    let sets = response_limit_sets();
    let verdicts = sets.map(|limits| parse_response(input, &limits));
    assert_monotonic(
        input,
        &sets,
        &verdicts,
        |verdict| {
            matches!(
                verdict,
                Err(ParseError::HeadTooLarge | ParseError::TooManyHeaders)
            )
        },
        |smaller, larger| {
            smaller.max_head_bytes <= larger.max_head_bytes
                && smaller.max_headers <= larger.max_headers
        },
    );
}

/// Check the response head at the start of `input`; the bytes its head and body used, if the
/// stream goes on after them.
fn check_response(input: &[u8], limits: &ResponseLimits, effort: Effort) -> Option<usize> {
    let whole = parse_response(input, limits);
    for cut in prefixes(input, effort) {
        let prefix = parse_response(&input[..cut], limits);
        assert!(
            prefix == Ok(ResponseStatus::Partial) || prefix == whole,
            "split dependence under {limits:?}: the first {cut} bytes gave {prefix:?}, \
             all {} gave {whole:?}; input b\"{}\"",
            input.len(),
            escape(input)
        );
    }
    if whole == Ok(ResponseStatus::Partial) {
        assert!(
            input.len() < limits.max_head_bytes,
            "Partial with {} bytes under {limits:?}",
            input.len()
        );
    }
    let Ok(ResponseStatus::Complete(parsed, consumed)) = whole.clone() else {
        return None;
    };
    assert!(
        consumed <= input.len() && consumed <= limits.max_head_bytes,
        "consumed {consumed} of {} under {limits:?}",
        input.len()
    );
    let head_bytes = &input[..consumed];
    assert!(
        head_bytes.ends_with(b"\r\n\r\n"),
        "head does not end in an empty line"
    );
    assert_eq!(
        parse_response(head_bytes, limits),
        whole,
        "the head alone parses differently"
    );
    assert_eq!(
        parse_response(&head_bytes[..consumed - 1], limits),
        Ok(ResponseStatus::Partial),
        "the head less its last byte is not Partial"
    );
    assert!(
        parsed.headers.len() <= limits.max_headers,
        "{} fields accepted under {limits:?}",
        parsed.headers.len()
    );
    check_response_head(head_bytes, &parsed);

    let status = parsed.status.as_u16();
    if status == 101 {
        // The connection now speaks another protocol: no next response to look for.
        return None;
    }
    let body = &input[consumed..];
    let body_used = if parsed.status.is_bodyless() {
        0
    } else {
        match parsed.framing {
            DeclaredFraming::Length(length) => usize::try_from(length)
                .ok()
                .filter(|&length| length <= body.len())?,
            DeclaredFraming::Chunked => {
                match check_chunked_body(body, default_body_limits(), effort) {
                    BodyEnd::Done { used } => used,
                    BodyEnd::NeedMore | BodyEnd::Failed(_) => return None,
                }
            }
            DeclaredFraming::UntilClose => return None,
        }
    };
    Some(consumed + body_used)
}

/// Everything `ParsedResponse` says agrees with the head bytes, read again independently:
/// the status line, spans that lie inside the head in order and cover a token name and a
/// trimmed value, the framing and the connection options the fields declare.
fn check_response_head(head: &[u8], parsed: &ParsedResponse) {
    // Status line: `HTTP/1.x SP 3DIGIT`, the digits being the status.
    let version = parsed.version;
    assert!(head.starts_with(version.as_str().as_bytes()), "version");
    let status = parsed.status.as_u16();
    assert!((100..=999).contains(&status), "status {status}");
    assert_eq!(
        head.get(8..12),
        Some(format!(" {status:03}").as_bytes()),
        "status line of b\"{}\"",
        escape(head)
    );
    let status_line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a complete head has a line end");

    let mut previous_end = status_line_end;
    let mut transfer_encoding = false;
    let mut content_length = None;
    let mut connection = ConnectionOptions::default();
    for field in &parsed.headers {
        let (name, value) = (field.name, field.value);
        assert!(
            previous_end + 2 <= name.start
                && name.start < name.end
                && name.end < value.start
                && value.start <= value.end
                && value.end + 4 <= head.len(),
            "span {field:?} out of order or outside a head of {} bytes (previous field \
             ended at {previous_end})",
            head.len()
        );
        previous_end = value.end;
        let name = &head[name.start..name.end];
        let value = &head[value.start..value.end];
        assert!(
            name.iter().all(|&b| is_tchar(b)),
            "field name b\"{}\"",
            escape(name)
        );
        assert_eq!(head[field.name.end], b':', "no colon after the name");
        assert!(
            !value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0),
            "field value b\"{}\"",
            escape(value)
        );
        assert!(
            !value.starts_with(b" ")
                && !value.starts_with(b"\t")
                && !value.ends_with(b" ")
                && !value.ends_with(b"\t"),
            "untrimmed field value b\"{}\"",
            escape(value)
        );
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"content-length") && content_length.is_none() {
            content_length = value
                .split(|&b| b == b',')
                .next()
                .and_then(|first| std::str::from_utf8(first).ok())
                .and_then(|first| first.trim_matches([' ', '\t']).parse::<u64>().ok());
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = std::str::from_utf8(token).unwrap_or("");
                let token = token.trim_matches([' ', '\t']);
                connection.close |= token.eq_ignore_ascii_case("close");
                connection.keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                connection.upgrade |= token.eq_ignore_ascii_case("upgrade");
            }
        }
    }

    // Framing: one reading only (RFC 9112 §6.3), as the fields say.
    let expected = match (transfer_encoding, content_length) {
        (true, None) => {
            assert_eq!(
                version,
                Version::Http11,
                "Transfer-Encoding accepted in 1.0"
            );
            DeclaredFraming::Chunked
        }
        (true, Some(_)) => panic!("Transfer-Encoding and Content-Length both accepted"),
        (false, Some(length)) => DeclaredFraming::Length(length),
        (false, None) => DeclaredFraming::UntilClose,
    };
    assert_eq!(parsed.framing, expected);
    assert_eq!(parsed.connection, connection, "Connection options");
    let keeps_alive = match version {
        Version::Http11 => !connection.close,
        Version::Http10 => connection.keep_alive && !connection.close,
    };
    assert_eq!(parsed.keeps_alive(), keeps_alive);
}

// ---------------------------------------------------------------------------------------------
// Chunked bodies
// ---------------------------------------------------------------------------------------------

/// How a body ended when the input ran out or the decoder stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// The body ended after `used` bytes of the input.
    Done {
        used: usize,
    },
    /// All the input was used and the body is not complete.
    NeedMore,
    Failed(BodyError),
}

fn default_body_limits() -> BodyLimits {
    BodyLimits {
        max_body_bytes: sentinel::limits::DEFAULT_MAX_BODY_BYTES,
        max_chunk_ext_bytes: sentinel::limits::DEFAULT_MAX_CHUNK_EXT_BYTES,
        max_trailer_bytes: sentinel::limits::DEFAULT_MAX_HEAD_BYTES,
    }
}

/// The defaults, and small limits that fuzz-sized inputs can reach.
fn body_limit_sets() -> [BodyLimits; 2] {
    [
        default_body_limits(),
        BodyLimits {
            max_body_bytes: 64,
            max_chunk_ext_bytes: 8,
            max_trailer_bytes: 32,
        },
    ]
}

/// Check a chunked body (and whatever follows it) under every limit set; see
/// [`check_chunked_body`]. Also encodes `input` itself as a body and checks it decodes back.
pub fn check_chunked(input: &[u8], effort: Effort) {
    for limits in body_limit_sets() {
        check_chunked_body(input, limits, effort);
        check_chunked_round_trip(input, limits);
    }
}

/// Decode `input` in one read, byte by byte and under seeded random read plans (and, when
/// exhaustive, every two-read split): the body bytes and the way it ended must not depend on
/// the reads. When the body is done, an independent plain reading of the bytes it used gives
/// the same data. Returns how the body ended.
fn check_chunked_body(input: &[u8], limits: BodyLimits, effort: Effort) -> BodyEnd {
    let (data, end) = decode_chunked_in_reads(input, limits, &[input.len()]);
    let same = |reads: &[usize], plan: &str| {
        let split = decode_chunked_in_reads(input, limits, reads);
        assert!(
            split.0 == data && split.1 == end,
            "split dependence under {limits:?}: {plan} {} gave {} body bytes and {:?}, \
             one read gave {} and {end:?}; input b\"{}\"",
            if reads.len() <= 16 {
                format!("{reads:?}")
            } else {
                format!("({} reads)", reads.len())
            },
            split.0.len(),
            split.1,
            data.len(),
            escape(input)
        );
    };
    same(&vec![1; input.len()], "reads of one byte");
    let mut rng = Rng::seeded(input);
    for max_read in [3, 17, input.len().max(1)] {
        let reads = rng.read_plan(input.len(), max_read);
        same(&reads, "reads");
    }
    if effort == Effort::Exhaustive {
        for cut in 1..input.len() {
            same(&[cut, input.len() - cut], "two reads");
        }
    }

    assert!(
        data.len() as u64 <= limits.max_body_bytes,
        "body over its limit"
    );
    if let BodyEnd::Done { used } = end {
        assert_eq!(
            plain_chunked_reading(&input[..used]),
            data,
            "decoded data differs from a plain reading of b\"{}\"",
            escape(&input[..used])
        );
    }
    end
}

/// Feed `input` to a fresh decoder the way the connection does: a buffer that each read of
/// `reads[i]` bytes appends to (the rest of the input after the plan runs out), and that is
/// advanced by `end` on `Data`, emptied on `NeedMore`, and left at `consumed` on `Done`.
fn decode_chunked_in_reads(
    input: &[u8],
    limits: BodyLimits,
    reads: &[usize],
) -> (Vec<u8>, BodyEnd) {
    let mut decoder = ChunkedDecoder::new(limits);
    let mut reads = reads.iter().copied();
    let mut data = Vec::new();
    let mut buffer: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut used = 0;
    loop {
        let step = match decoder.decode(&buffer) {
            Ok(step) => step,
            Err(error) => return (data, BodyEnd::Failed(error)),
        };
        match step {
            Step::Data { start, end } => {
                assert!(
                    start < end && end <= buffer.len(),
                    "Data {{ start: {start}, end: {end} }} in a buffer of {}",
                    buffer.len()
                );
                data.extend_from_slice(&buffer[start..end]);
                buffer.drain(..end);
                used += end;
            }
            Step::Done { consumed } => {
                assert!(
                    consumed <= buffer.len(),
                    "Done after {consumed} of {}",
                    buffer.len()
                );
                assert!(decoder.is_done(), "Done but not is_done()");
                return (
                    data,
                    BodyEnd::Done {
                        used: used + consumed,
                    },
                );
            }
            Step::NeedMore => {
                assert!(!decoder.is_done(), "NeedMore but is_done()");
                used += buffer.len();
                buffer.clear();
                if fed == input.len() {
                    return (data, BodyEnd::NeedMore);
                }
                let read = reads.next().unwrap_or(input.len()).max(1);
                let next = fed.saturating_add(read).min(input.len());
                buffer.extend_from_slice(&input[fed..next]);
                fed = next;
            }
        }
    }
}

/// The chunked grammar read the plain way, for bodies the decoder accepted: size lines up to
/// their CRLF, that many data bytes and a CRLF, then trailer lines up to an empty one, which
/// must end exactly where the decoder said the body ends.
fn plain_chunked_reading(framed: &[u8]) -> Vec<u8> {
    let line_end = |from: usize| {
        framed[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| from + i)
            .expect("accepted body has a line without CRLF")
    };
    let mut data = Vec::new();
    let mut pos = 0;
    loop {
        let end = line_end(pos);
        let line = &framed[pos..end];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let size = std::str::from_utf8(&line[..digits])
            .ok()
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .expect("accepted chunk size is not hex");
        pos = end + 2;
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).expect("chunk size fits in memory");
        data.extend_from_slice(&framed[pos..pos + size]);
        pos += size;
        assert_eq!(
            &framed[pos..pos + 2],
            b"\r\n",
            "accepted chunk without CRLF"
        );
        pos += 2;
    }
    loop {
        let end = line_end(pos);
        let empty = end == pos;
        pos = end + 2;
        if empty {
            break;
        }
    }
    assert_eq!(
        pos,
        framed.len(),
        "decoder stopped elsewhere than the plain reading"
    );
    data
}

/// Encode `payload` as a well-formed chunked body (seeded chunk sizes, hex case, extensions
/// and trailers within the limits) followed by a next request; it must decode back to
/// `payload` and stop right before the next request, or fail with `BodyTooLarge` when the
/// payload is over the limit.
fn check_chunked_round_trip(payload: &[u8], limits: BodyLimits) {
    let mut rng = Rng::seeded(payload);
    let mut framed = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let size = 1 + rng.below(rest.len().min(40));
        let hex = format!("{size:x}");
        let hex = if rng.below(2) == 0 {
            hex
        } else {
            hex.to_uppercase()
        };
        framed.extend_from_slice(hex.as_bytes());
        // Extensions (with bad whitespace before them) count towards their limit: 7 bytes.
        if limits.max_chunk_ext_bytes >= 7 && rng.below(3) == 0 {
            framed.extend_from_slice(b" ;n=\"v\"");
        }
        framed.extend_from_slice(b"\r\n");
        framed.extend_from_slice(&rest[..size]);
        framed.extend_from_slice(b"\r\n");
        rest = &rest[size..];
    }
    framed.extend_from_slice(b"0\r\n");
    if limits.max_trailer_bytes >= 16 && rng.below(2) == 0 {
        framed.extend_from_slice(b"X-Sum: 1\r\n");
    }
    framed.extend_from_slice(b"\r\n");
    let body_len = framed.len();
    framed.extend_from_slice(b"GET / HTTP/1.1\r\n");

    let reads = rng.read_plan(framed.len(), 23);
    let (data, end) = decode_chunked_in_reads(&framed, limits, &reads);
    if payload.len() as u64 <= limits.max_body_bytes {
        assert_eq!(
            end,
            BodyEnd::Done { used: body_len },
            "well-formed body not accepted"
        );
        assert_eq!(data, payload, "well-formed body decoded wrong");
    } else {
        assert_eq!(end, BodyEnd::Failed(BodyError::BodyTooLarge));
        assert!(
            payload.starts_with(&data),
            "body decoded wrong before its limit"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Request paths
// ---------------------------------------------------------------------------------------------

/// `sanitize_path`, with and without hidden files: an accepted path has only plain segments
/// (never empty, `.`, `..`, or holding `/`, `\` or NUL; never hidden unless allowed), joins
/// under any root without leaving it, and sanitises again to itself once its `%` are escaped.
pub fn check_sanitize_path(path: &str) {
    let strict = sanitize_path(path, false);
    let lenient = sanitize_path(path, true);
    if let Ok(safe) = &strict {
        assert_eq!(
            Ok(safe),
            lenient.as_ref(),
            "serve_hidden changed an accepted path"
        );
    }
    let Ok(safe) = lenient else {
        return;
    };
    let hidden_allowed = strict.is_err();
    if let Err(error) = strict {
        assert_eq!(
            error,
            PathError::Hidden,
            "only hidden files differ: {path:?}"
        );
    }
    for segment in &safe.segments {
        assert!(
            !matches!(segment.as_str(), "" | "." | "..") && !segment.contains(['/', '\\', '\0']),
            "segment {segment:?} of {path:?}"
        );
        assert!(
            hidden_allowed || !segment.starts_with('.'),
            "hidden segment {segment:?} of {path:?}"
        );
    }
    assert!(safe.trailing_slash || !safe.segments.is_empty());

    let relative = safe.to_relative();
    assert!(
        relative
            .components()
            .all(|component| matches!(component, Component::Normal(_))),
        "{path:?} gave {relative:?}"
    );
    assert_eq!(relative.components().count(), safe.segments.len());
    let root = Path::new("/srv/root");
    assert!(root.join(&relative).starts_with(root), "{path:?} escapes");

    let reencoded: String = safe
        .segments
        .iter()
        .map(|segment| format!("/{}", segment.replace('%', "%25")))
        .collect();
    let again = sanitize_path(&reencoded, true).expect("re-encoded path refused");
    assert_eq!(
        again.segments, safe.segments,
        "{reencoded:?} reads differently"
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// `Config::from_yaml` on any text returns (never panics); an accepted config honours the rules
/// the validator promises, and an error renders.
pub fn check_config(text: &str) {
    let base_dir = std::env::temp_dir();
    match Config::from_yaml(text, Path::new("fuzz.yaml"), &base_dir) {
        Ok(config) => {
            let limits = config.server.limits.parse;
            assert!(limits.max_headers > 0 && limits.max_head_bytes > 0);
            assert!(limits
                .max_request_line_bytes
                .checked_add(64)
                .is_some_and(|needed| needed <= limits.max_head_bytes));
            assert!(config.static_files.is_some() || config.proxy.is_some());
            if let Some(static_files) = &config.static_files {
                assert!(static_files.root.is_absolute() && static_files.root.is_dir());
                assert!(
                    !static_files.index.is_empty() && !static_files.index.contains(['/', '\0'])
                );
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Bytes as an escaped string, for messages that must reproduce the input.
pub fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// A small deterministic generator (splitmix64) seeded from the input (FNV-1a), so a failure
/// replays from the input alone.
struct Rng(u64);

impl Rng {
    fn seeded(input: &[u8]) -> Rng {
        let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Rng(hash)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n`; `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Read sizes of 1..=`max_read` bytes that add up to `len`.
    fn read_plan(&mut self, len: usize, max_read: usize) -> Vec<usize> {
        let mut reads = Vec::new();
        let mut left = len;
        while left > 0 {
            let read = 1 + self.below(max_read.min(left));
            reads.push(read);
            left -= read;
        }
        reads
    }
}

/// The PROXY protocol header parser: never panics; `Complete` consumes at most the input and
/// the limit, and is the same answer on the header alone; every shorter prefix of a complete
/// header is `Partial`; a failure is final (no longer input turns it into a header).
pub fn check_proxy_header(input: &[u8]) {
    const MAX: usize = 536;
    let whole = proxy_protocol::parse(input, MAX);
    match whole {
        Ok(Parsed::Complete(header, consumed)) => {
            assert!(
                consumed <= input.len() && consumed <= MAX,
                "consumed {consumed}"
            );
            let alone = &input[..consumed];
            assert_eq!(
                proxy_protocol::parse(alone, MAX),
                Ok(Parsed::Complete(header, consumed)),
                "the header alone parses the same"
            );
            for cut in 0..consumed {
                assert_eq!(
                    proxy_protocol::parse(&input[..cut], MAX),
                    Ok(Parsed::Partial),
                    "prefix of {cut} bytes"
                );
            }
            if let ProxyHeader::Proxied {
                source,
                destination,
            } = header
            {
                assert_eq!(source.is_ipv4(), destination.is_ipv4(), "one family");
            }
        }
        Ok(Parsed::Partial) => {}
        Err(error) => {
            let mut longer = input.to_vec();
            longer.extend_from_slice(b"\r\n\r\n");
            assert!(
                proxy_protocol::parse(&longer, MAX).is_err(),
                "{error:?} became a header with more bytes"
            );
        }
    }
}
