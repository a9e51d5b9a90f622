//! Which certificate a handshake gets, by the name the client sent in SNI (RFC 6066 §3):
//! an exact name first, then a wildcard for the rest of the name after its first label
//! (`*.example.com` takes `a.example.com`, not `example.com` nor `a.b.example.com`, as
//! clients match wildcards, RFC 6125 §6.4.3); no name, or one nobody claims, gets the
//! default (the first entry). The table is swapped whole when certificates change; a
//! handshake reads the one current when it starts.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificates and the names that choose them.
#[derive(Debug)]
pub(super) struct SniTable {
    default: Arc<CertifiedKey>,
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
}

impl SniTable {
    /// `entries` in config order, each with its (lower-case, validated) names. The first
    /// claim of a name wins, as validation lets only one entry claim it. `None` without
    /// entries.
    pub(super) fn new<'a>(
        entries: impl IntoIterator<Item = (&'a [String], &'a Arc<CertifiedKey>)>,
    ) -> Option<SniTable> {
        let mut entries = entries.into_iter().peekable();
        let default = Arc::clone(entries.peek()?.1);
        let mut table = SniTable {
            default,
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for (names, key) in entries {
            for name in names {
                let (map, name) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut table.wildcard, parent),
                    None => (&mut table.exact, name.as_str()),
                };
                map.entry(name.into()).or_insert_with(|| Arc::clone(key));
            }
        }
        Some(table)
    }

    /// The certificate for `server_name` (as the client sent it).
    pub(super) fn pick(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return &self.default;
        };
        // rustls hands over names it has parsed as DNS names; case and a final dot do not
        // make a different name (RFC 4343, RFC 1034 §3.1).
        let name = name.strip_suffix('.').unwrap_or(name);
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(key) = self.exact.get(name) {
            return key;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }
}

/// Hands rustls the certificate the current table picks.
#[derive(Debug)]
pub(super) struct SniResolver {
    pub(super) table: Arc<ArcSwap<SniTable>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.table.load().pick(hello.server_name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in key per entry, told apart by its (fake) certificate bytes: the table
    /// never looks inside.
    fn key(tag: u8) -> Arc<CertifiedKey> {
        let signing = rcgen::KeyPair::generate().expect("key");
        let der = rustls_pki_types::PrivateKeyDer::try_from(signing.serialize_der()).expect("der");
        let signer = crate::certificates::crypto_provider()
            .key_provider
            .load_private_key(der)
            .expect("signer");
        Arc::new(CertifiedKey::new(
            vec![rustls_pki_types::CertificateDer::from(vec![tag])],
            signer,
        ))
    }

    fn tag(key: &Arc<CertifiedKey>) -> u8 {
        key.cert[0].as_ref()[0]
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn exact_names_then_one_label_wildcards_then_the_default() {
        let (default, wild, exact) = (key(0), key(1), key(2));
        let (none, wild_names, exact_names) = (
            names(&[]),
            names(&["*.example.com"]),
            names(&["www.example.com", "example.com"]),
        );
        let table = SniTable::new([
            (&none[..], &default),
            (&wild_names[..], &wild),
            (&exact_names[..], &exact),
        ])
        .expect("table");
        let cases = [
            (Some("www.example.com"), 2),
            (Some("example.com"), 2),
            (Some("api.example.com"), 1),
            (Some("API.Example.COM"), 1),
            (Some("api.example.com."), 1),
            // One label only, as clients match wildcards.
            (Some("a.b.example.com"), 0),
            (Some("example.org"), 0),
            (Some("com"), 0),
            (None, 0),
        ];
        for (name, want) in cases {
            assert_eq!(tag(table.pick(name)), want, "{name:?}");
        }
    }

    #[test]
    fn no_entries_no_table() {
        let empty: [(&[String], &Arc<CertifiedKey>); 0] = [];
        assert!(SniTable::new(empty).is_none());
    }
}
