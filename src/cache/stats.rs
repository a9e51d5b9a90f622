//! Process-wide cache counters (hits, misses, stale uses, stores), read by the admin dump
//! and `/metrics`. Striped per thread, as the request metrics are (ADR 0011): one shared
//! atomic per count would bounce its cache line between every core serving hits.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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

/// Stripes: more than the cores of most hosts; threads beyond share a stripe (still exact,
/// the adds are atomic).
const STRIPES: usize = 64;

/// One thread's counts, on a cache line of its own.
#[repr(align(64))]
struct Stripe([AtomicU64; 4]);

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: Stripe = Stripe([
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
]);

static STRIPE_COUNTS: [Stripe; STRIPES] = [ZERO; STRIPES];
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_STRIPE: Cell<Option<usize>> = const { Cell::new(None) };
}

fn my_stripe() -> usize {
    MY_STRIPE.with(|slot| match slot.get() {
        Some(stripe) => stripe,
        None => {
            let stripe = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
            slot.set(Some(stripe));
            stripe
        }
    })
}

pub fn record(event: Event) {
    STRIPE_COUNTS[my_stripe()].0[event as usize].fetch_add(1, Ordering::Relaxed);
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
    let sum = |event: Event| {
        STRIPE_COUNTS
            .iter()
            .map(|stripe| stripe.0[event as usize].load(Ordering::Relaxed))
            .sum()
    };
    Counts {
        hits: sum(Event::Hit),
        misses: sum(Event::Miss),
        stale: sum(Event::Stale),
        stored: sum(Event::Stored),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_every_thread_add_up() {
        let before = counts();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..100 {
                        record(Event::Hit);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        record(Event::Stored);
        let after = counts();
        assert!(after.hits >= before.hits + 400);
        assert!(after.stored > before.stored);
    }
}
