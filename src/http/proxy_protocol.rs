//! PURE: the PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) that an
//! L4 balancer sends before a connection's own bytes, carrying the client's address. No I/O:
//! the listener peeks at the socket and hands the bytes here; `Complete` says how many to
//! consume, so whatever follows (a request, a TLS ClientHello) stays where it was.
//!
//! Contract as the request parser's: `Complete(header, consumed)`, `Partial` (need more
//! bytes), or a typed error, decided on any prefix of the input and on the whole of it alike.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest version 1 header, `\r\n` included (spec §2.1: "PROXY UNKNOWN" with the longest
/// TCP6 addresses is 107 bytes).
pub const V1_MAX_BYTES: usize = 107;

/// The 12 bytes every version 2 header starts with (spec §2.2); they cannot begin an HTTP
/// request or a TLS record, so the two versions and a missing header are told apart early.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

const V1_PREFIX: &[u8] = b"PROXY ";
/// Signature, version/command, family/transport, and the 16-bit length that follows.
const V2_FIXED_BYTES: usize = 16;
/// Address block sizes for AF_INET and AF_INET6 (addresses, then ports).
const V2_INET_BYTES: usize = 12;
const V2_INET6_BYTES: usize = 36;
/// Smallest `max_bytes` a caller may pass: a v1 header and a v2 header with `AF_UNIX`
/// addresses (16 + 216) fit.
pub const MIN_MAX_BYTES: usize = V2_FIXED_BYTES + 216;

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A relayed connection: `source` is the client, `destination` the address it dialled.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The balancer's own connection (v2 `LOCAL`, health checks), or one whose addresses are
    /// not TCP over IP (v1 `UNKNOWN`, v2 `AF_UNSPEC`/`AF_UNIX`): the TCP peer stays the
    /// client.
    Local,
}

/// How far the bytes got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header, `consumed` bytes long.
    Complete(ProxyHeader, usize),
    /// A valid prefix of a header: read more.
    Partial,
}

/// Why the bytes are not a PROXY header; each is a `reason` label of
/// `sentinel_proxy_protocol_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// Neither signature: the peer spoke without a header.
    #[error("no PROXY protocol header")]
    Missing,
    /// It starts like a header but breaks the grammar.
    #[error("malformed PROXY protocol header")]
    Malformed,
    /// Longer than `V1_MAX_BYTES` (v1) or than the caller's limit (v2).
    #[error("PROXY protocol header too long")]
    Oversized,
}

impl ProxyHeaderError {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyHeaderError::Missing => "missing",
            ProxyHeaderError::Malformed => "malformed",
            ProxyHeaderError::Oversized => "oversized",
        }
    }
}

/// Parse the header at the start of `input`; a v2 header longer than `max_bytes` (clamped
/// to at least [`MIN_MAX_BYTES`]) is `Oversized`.
pub fn parse(input: &[u8], max_bytes: usize) -> Result<Parsed, ProxyHeaderError> {
    let max_bytes = max_bytes.max(MIN_MAX_BYTES);
    if is_prefix_of_either(input, V1_PREFIX) {
        parse_v1(input)
    } else if is_prefix_of_either(input, &V2_SIGNATURE) {
        parse_v2(input, max_bytes)
    } else {
        Err(ProxyHeaderError::Missing)
    }
}

/// Whether `input` and `signature` agree on their common length (an empty input agrees).
fn is_prefix_of_either(input: &[u8], signature: &[u8]) -> bool {
    let common = input.len().min(signature.len());
    input.get(..common) == signature.get(..common)
}

fn parse_v1(input: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let window = &input[..input.len().min(V1_MAX_BYTES)];
    let Some(end) = window.windows(2).position(|pair| pair == b"\r\n") else {
        // A bare LF or any control byte can never become a valid line: fail now rather than
        // wait for the deadline.
        if window
            .iter()
            .any(|&b| b == b'\n' || (b < b' ' && b != b'\r'))
        {
            return Err(ProxyHeaderError::Malformed);
        }
        if window.len() >= V1_MAX_BYTES {
            return Err(ProxyHeaderError::Oversized);
        }
        if window.len() > 1 && window[..window.len() - 1].contains(&b'\r') {
            return Err(ProxyHeaderError::Malformed);
        }
        return Ok(Parsed::Partial);
    };
    // The same rule as for a prefix above, so that no prefix is refused that the whole
    // line would pass (`UNKNOWN` takes any text, but not control bytes). Found by fuzzing.
    if window[..end].iter().any(|&b| b < b' ') {
        return Err(ProxyHeaderError::Malformed);
    }
    let line = std::str::from_utf8(&window[..end]).map_err(|_| ProxyHeaderError::Malformed)?;
    let header = parse_v1_line(line).ok_or(ProxyHeaderError::Malformed)?;
    Ok(Parsed::Complete(header, end + 2))
}

/// `PROXY <TCP4|TCP6> <src> <dst> <sport> <dport>` or `PROXY UNKNOWN[ anything]`: single
/// spaces, as the spec writes them.
fn parse_v1_line(line: &str) -> Option<ProxyHeader> {
    let rest = line.strip_prefix("PROXY ")?;
    if rest == "UNKNOWN" || rest.starts_with("UNKNOWN ") {
        return Some(ProxyHeader::Local);
    }
    let mut fields = rest.split(' ');
    let family = fields.next()?;
    let source = fields.next()?;
    let destination = fields.next()?;
    let source_port = port(fields.next()?)?;
    let destination_port = port(fields.next()?)?;
    if fields.next().is_some() {
        return None;
    }
    let (source, destination): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            source.parse::<Ipv4Addr>().ok()?.into(),
            destination.parse::<Ipv4Addr>().ok()?.into(),
        ),
        "TCP6" => (
            source.parse::<Ipv6Addr>().ok()?.into(),
            destination.parse::<Ipv6Addr>().ok()?.into(),
        ),
        _ => return None,
    };
    Some(ProxyHeader::Proxied {
        source: SocketAddr::new(source, source_port),
        destination: SocketAddr::new(destination, destination_port),
    })
}

/// A decimal port without sign or leading zero (spec §2.1).
fn port(text: &str) -> Option<u16> {
    let canonical = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

fn parse_v2(input: &[u8], max_bytes: usize) -> Result<Parsed, ProxyHeaderError> {
    let Some(fixed) = input.get(..V2_FIXED_BYTES) else {
        // The signature may still be incomplete, but a wrong version shows early.
        return match input.get(12) {
            Some(&version_command) if version_command >> 4 != 2 => Err(ProxyHeaderError::Malformed),
            _ => Ok(Parsed::Partial),
        };
    };
    let version_command = fixed[12];
    let family_transport = fixed[13];
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError::Malformed);
    }
    let total = V2_FIXED_BYTES + length;
    if total > max_bytes {
        return Err(ProxyHeaderError::Oversized);
    }
    let is_local = match version_command & 0x0f {
        0x0 => true,
        0x1 => false,
        _ => return Err(ProxyHeaderError::Malformed),
    };
    // Spec §2.2: the receiver must check that the length covers the address block of the
    // announced family, even for LOCAL (whose addresses it then ignores).
    let family = family_transport >> 4;
    let needed = match family {
        0x1 => V2_INET_BYTES,
        0x2 => V2_INET6_BYTES,
        0x0 | 0x3 => 0,
        _ => return Err(ProxyHeaderError::Malformed),
    };
    if length < needed {
        return Err(ProxyHeaderError::Malformed);
    }
    let Some(block) = input.get(V2_FIXED_BYTES..total) else {
        return Ok(Parsed::Partial);
    };
    // TLVs after the addresses (ALPN, authority, the balancer's own) are skipped: nothing
    // here uses them.
    let header = if is_local || needed == 0 {
        ProxyHeader::Local
    } else {
        v2_addresses(family, block).ok_or(ProxyHeaderError::Malformed)?
    };
    Ok(Parsed::Complete(header, total))
}

fn v2_addresses(family: u8, block: &[u8]) -> Option<ProxyHeader> {
    let (source, destination, ports): (IpAddr, IpAddr, &[u8]) = if family == 0x1 {
        let source: [u8; 4] = block.get(0..4)?.try_into().ok()?;
        let destination: [u8; 4] = block.get(4..8)?.try_into().ok()?;
        (source.into(), destination.into(), block.get(8..12)?)
    } else {
        let source: [u8; 16] = block.get(0..16)?.try_into().ok()?;
        let destination: [u8; 16] = block.get(16..32)?.try_into().ok()?;
        (source.into(), destination.into(), block.get(32..36)?)
    };
    let [s0, s1, d0, d1] = <[u8; 4]>::try_from(ports).ok()?;
    Some(ProxyHeader::Proxied {
        source: SocketAddr::new(source, u16::from_be_bytes([s0, s1])),
        destination: SocketAddr::new(destination, u16::from_be_bytes([d0, d1])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    fn v2_inet_body() -> Vec<u8> {
        let mut body = vec![192, 0, 2, 7, 10, 0, 0, 1];
        body.extend_from_slice(&51234u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body
    }

    fn v2_inet6_body() -> Vec<u8> {
        let source: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let destination: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut body = source.octets().to_vec();
        body.extend_from_slice(&destination.octets());
        body.extend_from_slice(&8u16.to_be_bytes());
        body.extend_from_slice(&80u16.to_be_bytes());
        body
    }

    /// Complete inputs, each followed by `GET` to show that only the header is consumed.
    fn complete_cases() -> Vec<(&'static str, Vec<u8>, ProxyHeader)> {
        let mut with_tlvs = v2_inet_body();
        // PP2_TYPE_AUTHORITY and a vendor TLV.
        with_tlvs.extend_from_slice(&[0x02, 0x00, 0x03, b'a', b'.', b'b']);
        with_tlvs.extend_from_slice(&[0xEA, 0x00, 0x01, 0x00]);
        vec![
            (
                "v1 tcp4",
                b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\n".to_vec(),
                proxied("192.0.2.7:51234", "10.0.0.1:443"),
            ),
            (
                "v1 tcp6",
                b"PROXY TCP6 2001:db8::7 2001:db8::1 8 80\r\n".to_vec(),
                proxied("[2001:db8::7]:8", "[2001:db8::1]:80"),
            ),
            (
                "v1 unknown",
                b"PROXY UNKNOWN\r\n".to_vec(),
                ProxyHeader::Local,
            ),
            (
                "v1 unknown with addresses",
                b"PROXY UNKNOWN ffff:f::1 ffff:f::2 65535 65535\r\n".to_vec(),
                ProxyHeader::Local,
            ),
            (
                "v2 inet",
                v2(1, 0x11, &v2_inet_body()),
                proxied("192.0.2.7:51234", "10.0.0.1:443"),
            ),
            (
                "v2 inet6",
                v2(1, 0x21, &v2_inet6_body()),
                proxied("[2001:db8::7]:8", "[2001:db8::1]:80"),
            ),
            (
                "v2 tlvs skipped",
                v2(1, 0x11, &with_tlvs),
                proxied("192.0.2.7:51234", "10.0.0.1:443"),
            ),
            ("v2 local", v2(0, 0x00, &[]), ProxyHeader::Local),
            (
                "v2 local with addresses",
                v2(0, 0x11, &v2_inet_body()),
                ProxyHeader::Local,
            ),
            ("v2 unspec", v2(1, 0x00, &[]), ProxyHeader::Local),
            ("v2 unix", v2(1, 0x31, &[0; 216]), ProxyHeader::Local),
        ]
    }

    #[test]
    fn complete_headers_parse_at_every_split() {
        for (name, header, expected) in complete_cases() {
            let mut input = header.clone();
            input.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(
                parse(&input, MAX),
                Ok(Parsed::Complete(expected, header.len())),
                "{name}"
            );
            for cut in 0..header.len() {
                assert_eq!(
                    parse(&header[..cut], MAX),
                    Ok(Parsed::Partial),
                    "{name} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn bad_headers_fail_with_their_reason_at_the_whole_input() {
        let mut long_v2 = v2(1, 0x11, &v2_inet_body());
        long_v2.truncate(14);
        long_v2.extend_from_slice(&2000u16.to_be_bytes());
        let cases: Vec<(&str, Vec<u8>, ProxyHeaderError)> = vec![
            (
                "http",
                b"GET / HTTP/1.1\r\n".to_vec(),
                ProxyHeaderError::Missing,
            ),
            (
                "tls",
                vec![0x16, 0x03, 0x01, 0x00],
                ProxyHeaderError::Missing,
            ),
            (
                "lower case",
                b"proxy TCP4".to_vec(),
                ProxyHeaderError::Missing,
            ),
            (
                "v1 bad family",
                b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                ProxyHeaderError::Malformed,
            ),
            (
                "v1 family mismatch",
                b"PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n".to_vec(),
                ProxyHeaderError::Malformed,
            ),
            (
                "v1 port too big",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n".to_vec(),
                ProxyHeaderError::Malformed,
            ),
            (
                "v1 leading zero",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n".to_vec(),
                ProxyHeaderError::Malformed,
            ),
            (
                "v1 double space",
                b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                ProxyHeaderError::Malformed,
            ),
            (
                "v1 extra field",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(),
                ProxyHeaderError::Malformed,
            ),
            (
                "v1 bare lf",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
                ProxyHeaderError::Malformed,
            ),
            // Found by fuzzing: a prefix said Malformed, the whole line Complete.
            (
                "v1 unknown with a control byte",
                b"PROXY UNKNOWN \x12 6.7.8 080 2\r\n".to_vec(),
                ProxyHeaderError::Malformed,
            ),
            (
                "v1 unknown with a bare cr",
                b"PROXY UNKNOWN a\rb\r\n".to_vec(),
                ProxyHeaderError::Malformed,
            ),
            (
                "v1 no end",
                [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 200]].concat(),
                ProxyHeaderError::Oversized,
            ),
            (
                "v2 version 1",
                {
                    let mut h = v2(1, 0x11, &v2_inet_body());
                    h[12] = 0x11;
                    h
                },
                ProxyHeaderError::Malformed,
            ),
            (
                "v2 command 2",
                v2(2, 0x11, &v2_inet_body()),
                ProxyHeaderError::Malformed,
            ),
            (
                "v2 family 4",
                v2(1, 0x41, &v2_inet_body()),
                ProxyHeaderError::Malformed,
            ),
            (
                "v2 inet too short",
                v2(1, 0x11, &[1, 2, 3, 4]),
                ProxyHeaderError::Malformed,
            ),
            ("v2 over the limit", long_v2, ProxyHeaderError::Oversized),
        ];
        for (name, input, expected) in cases {
            assert_eq!(parse(&input, MAX), Err(expected), "{name}");
            // No prefix says Complete; each is Partial or the same kind of failure.
            for cut in 0..input.len() {
                match parse(&input[..cut], MAX) {
                    Ok(Parsed::Partial) | Err(_) => {}
                    other => panic!("{name} cut at {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_missing_header_is_known_from_the_first_byte() {
        assert_eq!(parse(b"G", MAX), Err(ProxyHeaderError::Missing));
        assert_eq!(parse(b"\x16", MAX), Err(ProxyHeaderError::Missing));
        assert_eq!(parse(b"", MAX), Ok(Parsed::Partial));
    }

    #[test]
    fn the_limit_never_drops_below_a_unix_header() {
        assert_eq!(
            parse(&v2(1, 0x31, &[0; 216]), 0),
            Ok(Parsed::Complete(ProxyHeader::Local, 232))
        );
        assert_eq!(
            parse(&v2(1, 0x31, &[0; 217]), 0),
            Err(ProxyHeaderError::Oversized)
        );
    }

    #[test]
    fn the_longest_v1_header_fits() {
        let line = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(line.len(), V1_MAX_BYTES);
        assert_eq!(
            parse(line, MAX),
            Ok(Parsed::Complete(ProxyHeader::Local, V1_MAX_BYTES))
        );
    }
}
