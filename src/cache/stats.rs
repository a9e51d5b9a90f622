//! Process-wide cache counters (hits, misses, stale uses, stores), read by the admin dump.

use std::sync::atomic::{AtomicU64, Ordering};

/// What happened to one request on a caching route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Answered from storage.
    Hit,
    /// Nothing usable stored: forwarded.
    Miss,
    /// A stale entry was served while refreshing, revalidated, or stood in for a failure.
    Stale,
    /// A response was stored.
    Stored,
}

static COUNTS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

pub fn record(event: Event) {
    COUNTS[event as usize].fetch_add(1, Ordering::Relaxed);
}

/// Counts so far: hits, misses, stale, stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub stored: u64,
}

pub fn counts() -> Counts {
    let get = |event: Event| COUNTS[event as usize].load(Ordering::Relaxed);
    Counts {
        hits: get(Event::Hit),
        misses: get(Event::Miss),
        stale: get(Event::Stale),
        stored: get(Event::Stored),
    }
}
