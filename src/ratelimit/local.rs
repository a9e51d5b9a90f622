//! The in-memory store: one TAT per client key, in shards behind short locks (never held
//! across an await), bounded by a hard cap. Keys are 64-bit hashes under a per-process
//! random key, so an entry is 16 bytes plus the table's overhead, and a client cannot pick
//! names that collide with another client's.
//!
//! Eviction: an entry whose TAT has passed carries no information (the client would get
//! the same answer without it), so such entries are dropped whenever a shard has taken
//! as many new keys as it holds. When a shard is at its cap after that, the new key
//! replaces the entry closest to expiring among `EVICTION_SAMPLE` of its entries: the
//! client least ahead of its rate, who loses the least by starting afresh.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Mutex;

use super::gcra::{Gcra, Outcome};

/// Most shards of one store: enough that two worker threads rarely meet on one lock.
const MAX_SHARDS: usize = 64;

/// Entries looked at to pick the one a new key replaces in a full shard.
const EVICTION_SAMPLE: usize = 8;

/// The keys are already random hashes: hashing them again would only cost time.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Table = HashMap<u64, u64, BuildHasherDefault<PassThrough>>;

#[derive(Default)]
struct Shard {
    tats: Table,
    /// New keys since idle entries were last dropped.
    inserted_since_sweep: usize,
}

pub struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    /// Entries one shard may hold: `max_keys / shards`, so all of them hold at most
    /// `max_keys`.
    shard_cap: usize,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("shards", &self.shards.len())
            .field("shard_cap", &self.shard_cap)
            .finish()
    }
}

impl LocalStore {
    /// A store that never holds more than `max_keys` (at least 1) entries.
    pub fn new(max_keys: usize) -> LocalStore {
        let max_keys = max_keys.max(1);
        let shards = MAX_SHARDS.min(max_keys);
        LocalStore {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            shard_cap: max_keys / shards,
        }
    }

    /// Decide a request for the client whose key hashes to `key` at `now` (nanoseconds on
    /// the limiter's clock), and record it.
    pub fn decide(&self, key: u64, gcra: &Gcra, now: u64) -> Outcome {
        // The high bits pick the shard, the table uses the rest: independent enough.
        let index = (key >> 32) as usize % self.shards.len().max(1);
        let Some(shard) = self.shards.get(index) else {
            return gcra.decide(None, now);
        };
        // A panic elsewhere while holding the lock left plain numbers, still usable.
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = gcra.decide(shard.tats.get(&key).copied(), now);
        if !outcome.allowed {
            // A refusal changes nothing: nothing to write (and nothing to evict for).
            return outcome;
        }
        if let Some(tat) = shard.tats.get_mut(&key) {
            *tat = outcome.tat;
            return outcome;
        }
        shard.make_room(self.shard_cap, now);
        shard.tats.insert(key, outcome.tat);
        outcome
    }

    /// Entries held now, over all shards.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).tats.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop every idle entry now (tests, and whoever wants memory back at once).
    pub fn sweep(&self, now: u64) {
        for shard in self.shards.iter() {
            shard.lock().unwrap_or_else(|p| p.into_inner()).sweep(now);
        }
    }
}

impl Shard {
    /// Before a new key goes in: drop idle entries when due, and one entry if still full.
    fn make_room(&mut self, cap: usize, now: u64) {
        self.inserted_since_sweep += 1;
        // Sweeping once per as many inserts as there are entries (or per quarter of the
        // cap once full) keeps the cost per insert constant however large the shard is.
        let full = self.tats.len() >= cap;
        if self.inserted_since_sweep > self.tats.len()
            || (full && self.inserted_since_sweep > cap / 4)
        {
            self.sweep(now);
        }
        if self.tats.len() >= cap {
            let victim = self
                .tats
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, tat)| **tat)
                .map(|(key, _)| *key);
            if let Some(victim) = victim {
                self.tats.remove(&victim);
            }
        }
    }

    fn sweep(&mut self, now: u64) {
        self.inserted_since_sweep = 0;
        self.tats.retain(|_, tat| !Gcra::is_idle(*tat, now));
        // Give memory back after a spray has passed, not on every small dip.
        if self.tats.capacity() > 64 && self.tats.len() < self.tats.capacity() / 4 {
            self.tats.shrink_to_fit();
        }
    }
}

/// Hashes client keys for one store: random per process, so nobody outside can aim two
/// keys at one entry.
#[derive(Debug, Default, Clone)]
pub struct KeyHasher(std::collections::hash_map::RandomState);

impl KeyHasher {
    pub fn hash(&self, key: &super::identity::ClientKey<'_>) -> u64 {
        let mut hasher = self.0.build_hasher();
        match key {
            super::identity::ClientKey::Address(address) => {
                hasher.write_u8(0);
                std::hash::Hash::hash(address, &mut hasher);
            }
            super::identity::ClientKey::Header(value) => {
                hasher.write_u8(1);
                hasher.write(value);
            }
        }
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_million_distinct_keys_never_grow_the_store_past_its_cap() {
        let store = LocalStore::new(10_000);
        let gcra = Gcra::new(1, 5);
        let hasher = KeyHasher::default();
        let mut most = 0;
        for i in 0..1_000_000u32 {
            let address = std::net::IpAddr::from(i.to_be_bytes());
            let key = hasher.hash(&super::super::identity::ClientKey::Address(address));
            // All at once: nothing expires, so only the cap bounds the store.
            assert!(store.decide(key, &gcra, 0).allowed);
            if i % 1000 == 0 {
                most = most.max(store.len());
            }
        }
        most = most.max(store.len());
        assert!(most <= 10_000, "held {most}");
        assert!(most >= 9_000, "the cap is used, not wasted: {most}");
    }

    #[test]
    fn idle_keys_are_dropped_once_their_time_has_passed() {
        let store = LocalStore::new(1000);
        let gcra = Gcra::new(10, 0);
        for key in 0..500u64 {
            store.decide(key << 32 | key, &gcra, 0);
        }
        assert_eq!(store.len(), 500);
        // One period later every entry is idle; new arrivals sweep them away.
        for key in 500..1100u64 {
            store.decide(key << 32 | key, &gcra, SECOND);
        }
        assert!(store.len() <= 1000);
        store.sweep(2 * SECOND);
        assert!(store.is_empty());
    }

    #[test]
    fn a_full_store_still_limits_the_clients_it_tracks() {
        let store = LocalStore::new(64);
        let gcra = Gcra::new(1, 0);
        let key = 7u64 << 32;
        assert!(store.decide(key, &gcra, 0).allowed);
        assert!(!store.decide(key, &gcra, 1).allowed);
        // A refused request does not insert, so the store stays as it was.
        assert_eq!(store.len(), 1);
    }
}
