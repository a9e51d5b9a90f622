//! PURE cache keys (RFC 9111 §2, §4.1). The primary key is the host and the full target
//! (path and query, as sent); `GET` and `HEAD` share it, since a `HEAD` may be answered from a
//! stored `GET`. `Vary` adds a secondary key: the named request fields' values, normalised so
//! that equivalent requests share an entry and different ones never do.

use crate::http::parser::trim_ows;

/// The primary key of a stored response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrimaryKey {
    /// Lowercased host (the port kept): hosts are case-insensitive (RFC 9110 §4.2.3).
    host: Box<str>,
    /// The request target exactly as sent: path and query are case-sensitive.
    target: Box<str>,
}

impl PrimaryKey {
    pub fn new(host: &str, target: &str) -> PrimaryKey {
        PrimaryKey {
            host: host.to_ascii_lowercase().into(),
            target: target.into(),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// Bytes a key holds, for the memory budget.
    pub fn weight(&self) -> usize {
        self.host.len() + self.target.len() + std::mem::size_of::<Self>()
    }
}

/// The field names a response's `Vary` lists, lowercased, sorted and deduplicated; `None`
/// for `Vary: *` (RFC 9111 §4.1: never matches).
pub fn vary_names<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<Box<str>>> {
    let mut names: Vec<Box<str>> = Vec::new();
    for line in lines {
        for name in line.split(|&b| b == b',') {
            let name = trim_ows(name);
            if name == b"*" {
                return None;
            }
            if name.is_empty() {
                continue;
            }
            names.push(String::from_utf8_lossy(name).to_ascii_lowercase().into());
        }
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// The secondary key: for each name of `names` (as `vary_names` returned them), the request's
/// values for that field, its lines joined by `,` and whitespace around each element removed
/// (so `gzip, br` and `gzip,br` match, and an absent field differs from an empty one).
pub fn secondary_key<'a>(
    names: &[Box<str>],
    field: impl Fn(&str) -> Vec<&'a [u8]>,
) -> Vec<Option<Box<[u8]>>> {
    names
        .iter()
        .map(|name| {
            let lines = field(name);
            if lines.is_empty() {
                return None;
            }
            let mut value = Vec::new();
            for element in lines.iter().flat_map(|line| line.split(|&b| b == b',')) {
                let element = trim_ows(element);
                if element.is_empty() {
                    continue;
                }
                if !value.is_empty() {
                    value.push(b',');
                }
                value.extend_from_slice(element);
            }
            Some(value.into_boxed_slice())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_compare_case_insensitively_targets_exactly() {
        assert_eq!(
            PrimaryKey::new("Example.COM:8080", "/a?b=1"),
            PrimaryKey::new("example.com:8080", "/a?b=1")
        );
        assert_ne!(PrimaryKey::new("a", "/A"), PrimaryKey::new("a", "/a"));
        assert_ne!(
            PrimaryKey::new("a", "/a?x=1"),
            PrimaryKey::new("a", "/a?x=2")
        );
        assert_ne!(PrimaryKey::new("a", "/p"), PrimaryKey::new("b", "/p"));
    }

    #[test]
    fn vary_names_are_normalised_and_star_never_matches() {
        let names = vary_names([
            b"Accept-Encoding, accept-language".as_slice(),
            b" ACCEPT-ENCODING ,",
        ])
        .unwrap();
        assert_eq!(
            names,
            vec!["accept-encoding".into(), "accept-language".into()] as Vec<Box<str>>
        );
        assert_eq!(vary_names([b"Accept, *".as_slice()]), None);
        assert_eq!(vary_names(std::iter::empty()), Some(vec![]));
    }

    #[test]
    fn secondary_keys_normalise_whitespace_and_lines_but_not_order() {
        let names: Vec<Box<str>> = vec!["accept-encoding".into()];
        let key = |lines: Vec<&'static [u8]>| secondary_key(&names, |_| lines.clone());
        assert_eq!(key(vec![b"gzip, br"]), key(vec![b"gzip,br"]));
        assert_eq!(key(vec![b"gzip", b" br "]), key(vec![b"gzip,br"]));
        assert_ne!(key(vec![b"br,gzip"]), key(vec![b"gzip,br"]));
        assert_ne!(key(vec![]), key(vec![b""]), "absent differs from empty");
    }
}
