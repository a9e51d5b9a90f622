//! The response store: stored responses by primary key, each key holding the variants its
//! `Vary` set tells apart. Byte-bounded through `moka`'s weigher (bodies, heads and keys
//! count), evicting by TinyLFU admission and LRU order, so a spray of distinct URLs cannot
//! push out the hot keys nor grow past `cache.max_bytes`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::directives::CacheControl;
use super::freshness::ResponseTimes;
use super::key::PrimaryKey;

/// Variants kept per primary key. Breach: the oldest stored variant is dropped, so a `Vary`
/// on a field with many values (`User-Agent`) cannot make one key hold the whole budget's
/// worth of near-duplicates.
pub const MAX_VARIANTS_PER_KEY: usize = 8;

/// Bookkeeping per stored response beyond its bytes: the struct, the `Arc`, the store's own
/// entry. Counted so that a million tiny responses are bounded too.
const ENTRY_OVERHEAD_BYTES: usize = 256;

/// One stored response: what is sent back (status, end-to-end fields, body) and what the
/// freshness rules read, parsed once at store time.
#[derive(Debug)]
pub struct StoredResponse {
    pub status: u16,
    /// End-to-end fields as the origin sent them, minus hop-by-hop fields, `Age` and
    /// `Set-Cookie` (never handed from one client to another).
    pub fields: Vec<(Box<str>, Box<[u8]>)>,
    pub body: Bytes,
    pub times: ResponseTimes,
    pub lifetime: Duration,
    pub cache_control: CacheControl,
    /// The lowercased names of the response's `Vary`.
    pub vary: Vec<Box<str>>,
    /// The request's values for those names when this response was stored.
    pub secondary: Vec<Option<Box<[u8]>>>,
}

impl StoredResponse {
    /// Bytes this response holds, for the budget.
    pub fn weight(&self) -> usize {
        let fields: usize = self
            .fields
            .iter()
            .map(|(name, value)| name.len() + value.len() + 32)
            .sum();
        let vary: usize = self.vary.iter().map(|n| n.len() + 16).sum();
        let secondary: usize = self
            .secondary
            .iter()
            .map(|v| v.as_ref().map_or(0, |v| v.len()) + 24)
            .sum();
        ENTRY_OVERHEAD_BYTES + fields + vary + secondary + self.body.len()
    }

    /// The first value of a field (names compared case-insensitively).
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    }

    /// Its age at `now` (RFC 9111 §4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        self.times.current_age(now)
    }
}

/// The variants stored under one primary key, newest first.
#[derive(Debug, Default)]
struct Variants {
    responses: Vec<Arc<StoredResponse>>,
}

impl Variants {
    fn weight(&self, key: &PrimaryKey) -> u32 {
        let bytes: usize = self.responses.iter().map(|r| r.weight()).sum();
        u32::try_from(bytes + key.weight()).unwrap_or(u32::MAX)
    }
}

/// The store. Cheap to clone (one shared cache).
#[derive(Clone)]
pub struct Store {
    entries: moka::sync::Cache<PrimaryKey, Arc<Variants>>,
    max_bytes: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

/// What `Store::usage` reports (the admin dump).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub keys: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

impl Store {
    pub fn new(max_bytes: u64) -> Store {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &PrimaryKey, variants: &Arc<Variants>| variants.weight(key))
            .build();
        Store { entries, max_bytes }
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The stored variant that matches the request's values for its `Vary` names, if any.
    /// `request_values` gives a request's values for a `Vary` name list.
    pub fn lookup(
        &self,
        key: &PrimaryKey,
        request_values: impl Fn(&[Box<str>]) -> Vec<Option<Box<[u8]>>>,
    ) -> Option<Arc<StoredResponse>> {
        let variants = self.entries.get(key)?;
        variants
            .responses
            .iter()
            .find(|stored| request_values(&stored.vary) == stored.secondary)
            .cloned()
    }

    /// Whether anything is stored under `key`, whatever its variants.
    pub fn has_key(&self, key: &PrimaryKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Store `response` under `key`, replacing the variant with the same secondary key.
    pub fn insert(&self, key: PrimaryKey, response: StoredResponse) {
        let response = Arc::new(response);
        let existing = self.entries.get(&key);
        let mut responses = vec![Arc::clone(&response)];
        if let Some(existing) = existing {
            responses.extend(
                existing
                    .responses
                    .iter()
                    .filter(|old| old.vary != response.vary || old.secondary != response.secondary)
                    .take(MAX_VARIANTS_PER_KEY - 1)
                    .cloned(),
            );
        }
        self.entries.insert(key, Arc::new(Variants { responses }));
    }

    /// Drop every variant of `key` (invalidation after an unsafe method, a purge).
    pub fn invalidate(&self, key: &PrimaryKey) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Drop every key of `host` whose target starts with `prefix`; how many went.
    pub fn purge_prefix(&self, host: &str, prefix: &str) -> usize {
        let host = host.to_ascii_lowercase();
        let doomed: Vec<Arc<PrimaryKey>> = self
            .entries
            .iter()
            .filter(|(key, _)| key.host() == host && key.target().starts_with(prefix))
            .map(|(key, _)| key)
            .collect();
        for key in &doomed {
            self.entries.invalidate(&**key);
        }
        doomed.len()
    }

    /// Keys and bytes held now (pending evictions applied first, so the numbers are exact).
    pub fn usage(&self) -> Usage {
        self.entries.run_pending_tasks();
        Usage {
            keys: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
            max_bytes: self.max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::secondary_key;

    fn response(body: &[u8], vary: &[&str], secondary: &[Option<&[u8]>]) -> StoredResponse {
        let now = SystemTime::now();
        StoredResponse {
            status: 200,
            fields: vec![("Content-Type".into(), b"text/plain".as_slice().into())],
            body: Bytes::copy_from_slice(body),
            times: ResponseTimes::new(now, now, None, None),
            lifetime: Duration::from_secs(60),
            cache_control: CacheControl::default(),
            vary: vary.iter().map(|v| (*v).into()).collect(),
            secondary: secondary.iter().map(|v| v.map(Into::into)).collect(),
        }
    }

    #[test]
    fn variants_are_told_apart_by_their_secondary_keys() {
        let store = Store::new(1 << 20);
        let key = PrimaryKey::new("h", "/a");
        store.insert(
            key.clone(),
            response(b"gz", &["accept-encoding"], &[Some(b"gzip")]),
        );
        store.insert(
            key.clone(),
            response(b"br", &["accept-encoding"], &[Some(b"br")]),
        );
        let asking = |value: Option<&'static [u8]>| {
            move |names: &[Box<str>]| {
                secondary_key(names, |_| value.into_iter().collect::<Vec<&[u8]>>())
            }
        };
        assert_eq!(
            &store.lookup(&key, asking(Some(b"gzip"))).unwrap().body[..],
            b"gz"
        );
        assert_eq!(
            &store.lookup(&key, asking(Some(b"br"))).unwrap().body[..],
            b"br"
        );
        assert!(store.lookup(&key, asking(Some(b"zstd"))).is_none());
        assert!(store.lookup(&key, asking(None)).is_none());
        // The same secondary key replaces, it does not pile up.
        store.insert(
            key.clone(),
            response(b"gz2", &["accept-encoding"], &[Some(b"gzip")]),
        );
        assert_eq!(
            &store.lookup(&key, asking(Some(b"gzip"))).unwrap().body[..],
            b"gz2"
        );
        assert!(store.invalidate(&key));
        assert!(store.lookup(&key, asking(Some(b"br"))).is_none());
    }

    #[test]
    fn variants_per_key_are_capped() {
        let store = Store::new(1 << 20);
        let key = PrimaryKey::new("h", "/ua");
        for i in 0..(MAX_VARIANTS_PER_KEY + 5) {
            let ua = format!("agent-{i}");
            store.insert(
                key.clone(),
                response(b"x", &["user-agent"], &[Some(ua.as_bytes())]),
            );
        }
        let held = store.entries.get(&key).unwrap().responses.len();
        assert_eq!(held, MAX_VARIANTS_PER_KEY);
    }

    #[test]
    fn a_spray_of_distinct_urls_stays_within_the_byte_budget() {
        let budget = 256 * 1024;
        let store = Store::new(budget);
        let body = vec![b'x'; 1000];
        for i in 0..5_000 {
            store.insert(
                PrimaryKey::new("h", &format!("/u/{i}")),
                response(&body, &[], &[]),
            );
        }
        let usage = store.usage();
        assert!(usage.bytes <= budget, "{usage:?}");
        assert!(usage.keys > 0 && usage.keys < 5_000, "{usage:?}");
    }

    #[test]
    fn purge_by_prefix_takes_only_that_host_and_prefix() {
        let store = Store::new(1 << 20);
        for target in ["/img/a", "/img/b", "/css/c"] {
            store.insert(PrimaryKey::new("h", target), response(b"1", &[], &[]));
        }
        store.insert(PrimaryKey::new("other", "/img/a"), response(b"1", &[], &[]));
        assert_eq!(store.purge_prefix("H", "/img/"), 2);
        let none = |_: &[Box<str>]| Vec::new();
        assert!(store
            .lookup(&PrimaryKey::new("h", "/img/a"), none)
            .is_none());
        assert!(store
            .lookup(&PrimaryKey::new("h", "/css/c"), none)
            .is_some());
        assert!(store
            .lookup(&PrimaryKey::new("other", "/img/a"), none)
            .is_some());
    }
}
