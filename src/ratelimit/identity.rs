//! PURE: who a request counts against. The peer address, unless the peer is a trusted
//! proxy; then `X-Forwarded-For` walked from the right, past every trusted proxy, to the
//! first address none of them vouches for. The left-most entry is whatever the client
//! wrote, so it is never believed for being left-most: only a trusted proxy's appended
//! entry is.

use std::net::{IpAddr, SocketAddr};

use crate::config::{Cidr, KeySource};
use crate::limits::MAX_FORWARDED_FOR_LINES;

/// What a client's requests are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKey<'a> {
    Address(IpAddr),
    /// The configured header's value, as received.
    Header(&'a [u8]),
}

/// The client's address: `peer`, or the right-most `X-Forwarded-For` entry that no trusted
/// proxy covers when `peer` is trusted. `forwarded_for` are the field's lines in the order
/// received (RFC 9110 §5.3: several lines are one comma-separated list). A malformed entry
/// met on the walk, or too many lines, gives `peer`: a header we cannot read cannot be
/// believed. A chain made only of trusted proxies gives its left-most entry.
pub fn client_address(peer: IpAddr, forwarded_for: &[&[u8]], trusted: &[Cidr]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |address: IpAddr| trusted.iter().any(|cidr| cidr.contains(address));
    if !is_trusted(peer) || forwarded_for.len() > MAX_FORWARDED_FOR_LINES {
        return peer;
    }
    let mut client = peer;
    for line in forwarded_for.iter().rev() {
        for entry in line.rsplit(|&b| b == b',') {
            let entry = entry.trim_ascii();
            if entry.is_empty() {
                // `a, , b` or a trailing comma: nothing to believe or refuse.
                continue;
            }
            let Some(address) = parse_entry(entry) else {
                return peer;
            };
            if !is_trusted(address) {
                return address;
            }
            client = address;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or an address with a port as some proxies
/// write it (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    let address = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()?;
    Some(address.to_canonical())
}

/// The key `source` picks: the header's value when it has one, otherwise the address (a
/// client that leaves the header out is still counted, as itself).
pub fn client_key<'a>(
    source: &KeySource,
    header: Option<&'a [u8]>,
    client: IpAddr,
) -> ClientKey<'a> {
    match (source, header) {
        (KeySource::Header(_), Some(value)) if !value.is_empty() => ClientKey::Header(value),
        _ => ClientKey::Address(client),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| panic!("{text}"))
    }

    fn trusted() -> Vec<Cidr> {
        ["10.0.0.0/8", "127.0.0.9/32", "2001:db8:ffff::/48"]
            .iter()
            .filter_map(|c| Cidr::parse(c))
            .collect()
    }

    fn walk(peer: &str, lines: &[&str]) -> IpAddr {
        let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        client_address(ip(peer), &lines, &trusted())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(walk("203.0.113.7", &["1.2.3.4"]), ip("203.0.113.7"));
        assert_eq!(walk("203.0.113.7", &[]), ip("203.0.113.7"));
        assert_eq!(walk("203.0.113.7", &["garbage"]), ip("203.0.113.7"));
    }

    #[test]
    fn a_spoofed_left_most_entry_is_not_believed() {
        // The client wrote 6.6.6.6 itself; the trusted proxy appended the real address.
        assert_eq!(
            walk("10.0.0.1", &["6.6.6.6, 198.51.100.2"]),
            ip("198.51.100.2")
        );
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_to_the_first_untrusted_address() {
        assert_eq!(
            walk("127.0.0.9", &["6.6.6.6, 198.51.100.2, 10.1.1.1, 10.2.2.2"]),
            ip("198.51.100.2")
        );
        // All trusted: the left-most, which a trusted proxy wrote.
        assert_eq!(walk("10.0.0.1", &["10.3.3.3, 10.4.4.4"]), ip("10.3.3.3"));
        // A trusted peer without the header is the client.
        assert_eq!(walk("10.0.0.1", &[]), ip("10.0.0.1"));
    }

    #[test]
    fn several_header_lines_are_one_list_in_order() {
        assert_eq!(
            walk("10.0.0.1", &["6.6.6.6", "198.51.100.2, 10.9.9.9"]),
            ip("198.51.100.2")
        );
        assert_eq!(
            walk("10.0.0.1", &["198.51.100.2, 10.9.9.9", "10.8.8.8"]),
            ip("198.51.100.2")
        );
        assert_eq!(walk("10.0.0.1", &["192.0.2.5", ""]), ip("192.0.2.5"));
    }

    #[test]
    fn ipv6_and_ports_are_read() {
        assert_eq!(
            walk("2001:db8:ffff::1", &["2001:db8::7, 2001:db8:ffff::2"]),
            ip("2001:db8::7")
        );
        assert_eq!(walk("10.0.0.1", &["[2001:db8::7]:4711"]), ip("2001:db8::7"));
        assert_eq!(walk("10.0.0.1", &["192.0.2.1:4711"]), ip("192.0.2.1"));
        // An IPv4-mapped peer is the IPv4 address it maps.
        assert_eq!(walk("::ffff:10.0.0.1", &["192.0.2.1"]), ip("192.0.2.1"));
        assert_eq!(walk("10.0.0.1", &["::ffff:192.0.2.1"]), ip("192.0.2.1"));
    }

    #[test]
    fn garbage_on_the_walk_gives_the_peer() {
        for bad in [
            "garbage",
            "198.51.100.2, not-an-ip",
            "unknown",
            "1.2.3.4.5",
            "198.51.100.2;for=x",
            "\u{ff}",
        ] {
            assert_eq!(walk("10.0.0.1", &[bad]), ip("10.0.0.1"), "{bad:?}");
        }
        // Garbage left of the first untrusted entry is never read.
        assert_eq!(
            walk("10.0.0.1", &["garbage, 198.51.100.2"]),
            ip("198.51.100.2")
        );
        let many = vec!["10.1.1.1"; MAX_FORWARDED_FOR_LINES + 1];
        assert_eq!(walk("10.0.0.1", &many), ip("10.0.0.1"));
    }

    #[test]
    fn a_header_key_falls_back_to_the_address() {
        let source = KeySource::Header("x-api-key".into());
        let client = ip("192.0.2.1");
        assert_eq!(
            client_key(&source, Some(b"k1"), client),
            ClientKey::Header(b"k1")
        );
        assert_eq!(
            client_key(&source, None, client),
            ClientKey::Address(client)
        );
        assert_eq!(
            client_key(&source, Some(b""), client),
            ClientKey::Address(client)
        );
        assert_eq!(
            client_key(&KeySource::ClientIp, Some(b"k1"), client),
            ClientKey::Address(client)
        );
    }
}
