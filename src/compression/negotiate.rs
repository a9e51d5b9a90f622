//! PURE `Accept-Encoding` negotiation (RFC 9110 §12.5.3): which of the server's algorithms a
//! client accepts, best first. q-values rank; among equal q-values the server's preference
//! decides. An algorithm the client does not name is acceptable only through `*`.

use crate::http::parser::trim_ows;

/// A content coding Sentinel can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Zstd,
    Brotli,
    Gzip,
}

impl Algorithm {
    /// Every algorithm, in the default preference order (see the compression ADR).
    pub const ALL: [Algorithm; 3] = [Algorithm::Zstd, Algorithm::Brotli, Algorithm::Gzip];

    /// The content-coding token (`Content-Encoding`, `Accept-Encoding`, the config).
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Zstd => "zstd",
            Algorithm::Brotli => "br",
            Algorithm::Gzip => "gzip",
        }
    }

    /// The algorithm a token names; `x-gzip` is gzip (RFC 9110 §8.4.1.3).
    /// Its position in `ALL`: a slot in a per-coding array.
    pub fn index(self) -> usize {
        match self {
            Algorithm::Zstd => 0,
            Algorithm::Brotli => 1,
            Algorithm::Gzip => 2,
        }
    }

    pub fn from_token(token: &[u8]) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| token.eq_ignore_ascii_case(a.token().as_bytes()))
            .or_else(|| {
                token
                    .eq_ignore_ascii_case(b"x-gzip")
                    .then_some(Algorithm::Gzip)
            })
    }

    /// The suffix of a precompressed sidecar file (`app.js.zst`), as the command-line tools
    /// write them.
    pub fn sidecar_suffix(self) -> &'static str {
        match self {
            Algorithm::Zstd => ".zst",
            Algorithm::Brotli => ".br",
            Algorithm::Gzip => ".gz",
        }
    }
}

/// The algorithms a client accepts, best first (at most one of each). Empty: identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepted {
    list: [Option<Algorithm>; 3],
}

impl Accepted {
    pub fn iter(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.list.iter().map_while(|a| *a)
    }

    /// The one to use when only one can be tried (on-the-fly compression).
    pub fn best(&self) -> Option<Algorithm> {
        self.list[0]
    }

    pub fn is_empty(&self) -> bool {
        self.list[0].is_none()
    }
}

/// Highest q-value, in thousandths (`q=1` is 1000; RFC 9110 §12.4.2 allows three decimals).
const Q_MAX: u16 = 1000;

/// The algorithms of `preference` that `accept_encoding` accepts, best first. No header at
/// all means the client did not ask: identity.
pub fn negotiate(accept_encoding: Option<&[u8]>, preference: &[Algorithm]) -> Accepted {
    let mut accepted = Accepted::default();
    let Some(header) = accept_encoding else {
        return accepted;
    };
    let q_of = q_values(header);
    // (q, position in preference) for each acceptable algorithm.
    let mut ranked: [(u16, usize, Option<Algorithm>); 3] = [(0, 0, None); 3];
    let mut count = 0;
    for (position, &algorithm) in preference.iter().enumerate() {
        let q = q_of(algorithm);
        if q == 0 || count == ranked.len() || ranked[..count].iter().any(|r| r.2 == Some(algorithm))
        {
            continue;
        }
        ranked[count] = (q, position, Some(algorithm));
        count += 1;
    }
    // Higher q first; the server's order breaks ties (a stable sort keeps it).
    ranked[..count].sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (slot, rank) in accepted.list.iter_mut().zip(&ranked[..count]) {
        *slot = rank.2;
    }
    accepted
}

/// The q-value the header gives each algorithm: its own entry if listed (the first one),
/// else the `*` entry's, else 0. The header is read once, not once per algorithm.
fn q_values(header: &[u8]) -> impl Fn(Algorithm) -> u16 {
    let mut own: [Option<u16>; 3] = [None; 3];
    let mut wildcard = None;
    for (token, q) in entries(header) {
        if let Some(algorithm) = Algorithm::from_token(token) {
            let slot = &mut own[algorithm.index()];
            if slot.is_none() {
                *slot = Some(q);
            }
        } else if token == b"*" && wildcard.is_none() {
            wildcard = Some(q);
        }
    }
    move |algorithm| own[algorithm.index()].or(wildcard).unwrap_or(0)
}

/// `(coding, q)` of each well-formed element; malformed ones are skipped (an element we
/// cannot read cannot make us choose an encoding).
fn entries(header: &[u8]) -> impl Iterator<Item = (&[u8], u16)> {
    header.split(|&b| b == b',').filter_map(|element| {
        let mut parts = element.split(|&b| b == b';');
        let token = trim_ows(parts.next()?);
        if token.is_empty() {
            return None;
        }
        let mut q = Q_MAX;
        for parameter in parts {
            let parameter = trim_ows(parameter);
            let Some(value) = parameter
                .strip_prefix(b"q=")
                .or_else(|| parameter.strip_prefix(b"Q="))
            else {
                continue;
            };
            q = parse_q(trim_ows(value))?;
        }
        Some((token, q))
    })
}

/// RFC 9110 §12.4.2: `0[.ddd]` or `1[.000]`, in thousandths.
fn parse_q(value: &[u8]) -> Option<u16> {
    let (whole, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for i in 0..3 {
        thousandths = thousandths * 10 + fraction.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(Q_MAX),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Algorithm::{Brotli as Br, Gzip, Zstd};

    const SERVER: [Algorithm; 3] = [Zstd, Br, Gzip];

    fn chosen(header: Option<&str>, preference: &[Algorithm]) -> Vec<Algorithm> {
        negotiate(header.map(str::as_bytes), preference)
            .iter()
            .collect()
    }

    #[test]
    fn each_negotiation_rule() {
        // (what, Accept-Encoding, server preference, what the client gets, best first)
        type Case = (
            &'static str,
            Option<&'static str>,
            &'static [Algorithm],
            &'static [Algorithm],
        );
        let cases: &[Case] = &[
            ("no header: the client did not ask", None, &SERVER, &[]),
            ("empty header: identity only", Some(""), &SERVER, &[]),
            ("one coding", Some("gzip"), &SERVER, &[Gzip]),
            (
                "equal q: server preference",
                Some("gzip, br, zstd"),
                &SERVER,
                &[Zstd, Br, Gzip],
            ),
            (
                "browser header",
                Some("gzip, deflate, br, zstd"),
                &SERVER,
                &[Zstd, Br, Gzip],
            ),
            (
                "q ranks above preference",
                Some("zstd;q=0.5, gzip"),
                &SERVER,
                &[Gzip, Zstd],
            ),
            ("q=0 refuses", Some("gzip;q=0, br"), &SERVER, &[Br]),
            (
                "wildcard accepts the rest",
                Some("*"),
                &SERVER,
                &[Zstd, Br, Gzip],
            ),
            (
                "named entry beats wildcard",
                Some("*;q=0.1, gzip;q=0.9"),
                &SERVER,
                &[Gzip, Zstd, Br],
            ),
            (
                "wildcard q=0 refuses the unnamed",
                Some("gzip, *;q=0"),
                &SERVER,
                &[Gzip],
            ),
            (
                "identity;q=0 alone: nothing we make",
                Some("identity;q=0"),
                &SERVER,
                &[],
            ),
            (
                "identity;q=0 with gzip",
                Some("identity;q=0, gzip"),
                &SERVER,
                &[Gzip],
            ),
            ("x-gzip is gzip", Some("x-gzip"), &SERVER, &[Gzip]),
            (
                "case-insensitive",
                Some("GZIP;Q=0.5, Br"),
                &SERVER,
                &[Br, Gzip],
            ),
            (
                "whitespace",
                Some("  br ;  q=0.8 ,\tgzip"),
                &SERVER,
                &[Gzip, Br],
            ),
            (
                "unknown codings ignored",
                Some("deflate, compress"),
                &SERVER,
                &[],
            ),
            (
                "malformed q skipped",
                Some("zstd;q=2, gzip;q=abc, br;q=0.0001"),
                &SERVER,
                &[],
            ),
            (
                "q=1.000 is one",
                Some("gzip;q=1.000, zstd;q=0.999"),
                &SERVER,
                &[Gzip, Zstd],
            ),
            (
                "first entry of a repeated coding",
                Some("gzip;q=0, gzip"),
                &SERVER,
                &[],
            ),
            (
                "server offers gzip only",
                Some("zstd, br, gzip"),
                &[Gzip],
                &[Gzip],
            ),
            (
                "server preference reversed",
                Some("zstd, gzip"),
                &[Gzip, Zstd],
                &[Gzip, Zstd],
            ),
            (
                "other params ignored",
                Some("gzip;level=9"),
                &SERVER,
                &[Gzip],
            ),
            ("empty elements", Some(",,gzip,,"), &SERVER, &[Gzip]),
        ];
        for (name, header, preference, want) in cases {
            assert_eq!(chosen(*header, preference), *want, "{name}: {header:?}");
        }
    }

    #[test]
    fn best_is_the_first() {
        let accepted = negotiate(Some(b"gzip, br;q=0.5"), &SERVER);
        assert_eq!(accepted.best(), Some(Gzip));
        assert!(negotiate(None, &SERVER).best().is_none());
    }

    #[test]
    fn tokens_round_trip() {
        for algorithm in Algorithm::ALL {
            assert_eq!(
                Algorithm::from_token(algorithm.token().as_bytes()),
                Some(algorithm)
            );
        }
        assert_eq!(Algorithm::from_token(b"deflate"), None);
    }
}
