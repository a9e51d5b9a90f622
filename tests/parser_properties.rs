//! Property tests of the request parser: generated valid requests parse to what was
//! generated whatever the read boundaries (H1-023), and nothing we accept is read
//! differently by `httparse`, used here only as a test oracle.

use bytes::Bytes;
use proptest::prelude::*;
use sentinel::http::parser::{parse_request, ParseLimits, Status};
use sentinel::http::request::{RequestHead, Version};

#[derive(Debug, Clone)]
struct Generated {
    method: String,
    target: String,
    version: Version,
    headers: Vec<(String, String)>,
}

impl Generated {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} {}\r\n",
            self.method,
            self.target,
            self.version.as_str()
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_string()),
        Just("HEAD".to_string()),
        Just("POST".to_string()),
        Just("PUT".to_string()),
        Just("DELETE".to_string()),
        Just("PATCH".to_string()),
        "[A-Z][A-Z0-9!#$%&'*+.^_`|~-]{0,11}",
    ]
}

fn target() -> impl Strategy<Value = String> {
    (
        prop::collection::vec("[A-Za-z0-9._~!$&'()*+,;=:@-]{0,8}", 0..5),
        prop::option::of("[A-Za-z0-9=&%/?._-]{0,16}"),
    )
        .prop_map(|(segments, query)| {
            let mut path = format!("/{}", segments.join("/"));
            if let Some(query) = query {
                path.push('?');
                path.push_str(&query);
            }
            path
        })
}

fn header() -> impl Strategy<Value = (String, String)> {
    (
        "X-[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}",
        // Visible ASCII with inner spaces and tabs; no leading or trailing whitespace.
        prop_oneof![Just(String::new()), "[!-~]([ -~\t]{0,30}[!-~])?"],
    )
}

fn request() -> impl Strategy<Value = Generated> {
    (
        method(),
        target(),
        prop::bool::ANY,
        "[a-z0-9.-]{1,20}(:[0-9]{1,5})?",
        prop::collection::vec(header(), 0..12),
        prop::option::of(0u64..100_000),
    )
        .prop_map(|(method, target, http11, host, extra, length)| {
            let mut headers = vec![("Host".to_string(), host)];
            headers.extend(extra);
            if let Some(length) = length {
                headers.push(("Content-Length".to_string(), length.to_string()));
            }
            Generated {
                method,
                target,
                version: if http11 {
                    Version::Http11
                } else {
                    Version::Http10
                },
                headers,
            }
        })
}

fn head_of(input: &[u8], limits: &ParseLimits) -> Option<(RequestHead, usize)> {
    match parse_request(input, limits) {
        Ok(Status::Complete(parsed, consumed)) => Some((
            RequestHead::new(Bytes::copy_from_slice(&input[..consumed]), parsed),
            consumed,
        )),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// H1-023: any split of a valid request parses the same, and gives back what was sent.
    #[test]
    fn any_split_of_a_valid_request_parses_the_same(
        generated in request(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..6),
        trailing in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let limits = ParseLimits::default();
        let mut input = generated.to_bytes();
        let head_len = input.len();
        input.extend_from_slice(&trailing);

        let (head, consumed) = head_of(&input, &limits).expect("valid request must parse");
        prop_assert_eq!(consumed, head_len);
        prop_assert_eq!(head.method_str(), generated.method.as_str());
        prop_assert_eq!(head.target(), generated.target.as_str());
        prop_assert_eq!(head.version(), generated.version);
        let parsed: Vec<(String, Vec<u8>)> =
            head.headers().map(|(n, v)| (n.to_string(), v.to_vec())).collect();
        let expected: Vec<(String, Vec<u8>)> = generated
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
            .collect();
        prop_assert_eq!(parsed, expected);

        // Feed it the way a connection does: growing buffer, parse after every read.
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        let whole = parse_request(&input, &limits);
        let mut verdict = None;
        for point in points {
            match parse_request(&input[..point], &limits) {
                Ok(Status::Partial) => {}
                other => {
                    verdict = Some(other);
                    break;
                }
            }
        }
        prop_assert_eq!(verdict, Some(whole));
    }

    /// Differential: on valid requests, httparse agrees on every field.
    #[test]
    fn httparse_agrees_on_valid_requests(generated in request()) {
        let input = generated.to_bytes();
        assert_same_as_httparse(&input)?;
    }

    /// Differential on damaged requests: whatever we still accept, httparse must accept and
    /// read identically. (We may reject more than httparse: that is the point of strictness.)
    #[test]
    fn whatever_we_accept_httparse_reads_the_same(
        generated in request(),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), prop::sample::select(vec![
                b'\r', b'\n', b' ', b'\t', b':', b'\0', b'a', b'/', b',', 0x7f, 0x80, 0xff, b'"',
            ]), 0u8..3),
            1..4,
        ),
    ) {
        let mut input = generated.to_bytes();
        for (index, byte, kind) in edits {
            let at = index.index(input.len());
            match kind {
                0 => input[at] = byte,
                1 => input.insert(at, byte),
                _ => { input.remove(at); }
            }
        }
        assert_same_as_httparse(&input)?;
    }
}

fn assert_same_as_httparse(input: &[u8]) -> Result<(), TestCaseError> {
    let limits = ParseLimits::default();
    let Some((ours, consumed)) = head_of(input, &limits) else {
        return Ok(());
    };
    let mut storage = [httparse::EMPTY_HEADER; 128];
    let mut theirs = httparse::Request::new(&mut storage);
    let status = theirs.parse(input);
    prop_assert!(
        matches!(status, Ok(httparse::Status::Complete(_))),
        "we accepted {:?} but httparse says {:?}",
        String::from_utf8_lossy(input),
        status
    );
    let Ok(httparse::Status::Complete(their_consumed)) = status else {
        unreachable!()
    };
    prop_assert_eq!(consumed, their_consumed);
    prop_assert_eq!(Some(ours.method_str()), theirs.method);
    prop_assert_eq!(Some(ours.target()), theirs.path);
    let their_version = match theirs.version {
        Some(0) => Version::Http10,
        _ => Version::Http11,
    };
    prop_assert_eq!(ours.version(), their_version);
    let our_headers: Vec<(String, Vec<u8>)> = ours
        .headers()
        .map(|(n, v)| (n.to_string(), v.to_vec()))
        .collect();
    let their_headers: Vec<(String, Vec<u8>)> = theirs
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    prop_assert_eq!(our_headers, their_headers);
    Ok(())
}
