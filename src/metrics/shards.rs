//! Per-thread shards of the hot counters. Each thread records into the shard its slot
//! names, so with one shard per worker thread a counter's cache line stays with the thread
//! that writes it; a scrape reads every shard and adds them up.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Series per chunk. A chunk of cells is allocated the first time a thread records into one
/// of its series, so a thread that serves one route pays for 64 routes' cells, not 4096.
pub const CHUNK: usize = 64;

/// Chunks per kind of series.
const MAX_CHUNKS: usize = 64;

/// Most series of one kind (routes, backends, upstream groups) a process can have. Series
/// are never freed (a reload that renames every route adds as many), so this bounds the
/// memory a long-lived process spends on them. Breach: the series past it are not recorded,
/// and interning says so once.
pub const MAX_SERIES: usize = CHUNK * MAX_CHUNKS;

/// The next thread's slot; slots are handed out in the order threads first record.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
}

/// A count that only grows. Written with an atomic add so that two threads which happen to
/// share a shard (more threads than shards) lose nothing; the add finds its cache line in
/// its own core's cache when they do not, which is what makes it cheap.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One shard per recording thread (or per group of threads when there are more threads
/// than shards). Aligned so that neighbouring shards never share a cache line.
#[derive(Debug)]
pub struct Shards<S> {
    shards: Box<[Aligned<S>]>,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Aligned<S>(S);

impl<S: Default> Shards<S> {
    /// `count` shards (at least one).
    pub fn new(count: usize) -> Shards<S> {
        Shards {
            shards: (0..count.max(1)).map(|_| Aligned(S::default())).collect(),
        }
    }
}

impl<S> Shards<S> {
    /// The calling thread's shard.
    #[inline]
    pub fn local(&self) -> &S {
        self.at(SLOT.with(|slot| *slot))
    }

    /// The shard of slot `slot` (slots wrap around the shard count).
    pub fn at(&self, slot: usize) -> &S {
        // `new` makes at least one shard, so the remainder is always an index.
        &self.shards[slot % self.shards.len()].0
    }

    pub fn iter(&self) -> impl Iterator<Item = &S> {
        self.shards.iter().map(|shard| &shard.0)
    }
}

/// The cells of one kind of series in one shard, by series id, allocated a chunk at a
/// time on first use.
#[derive(Debug)]
pub struct Chunked<T> {
    chunks: Box<[OnceLock<Box<[T]>>]>,
}

impl<T: Default> Default for Chunked<T> {
    fn default() -> Chunked<T> {
        Chunked {
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl<T: Default> Chunked<T> {
    /// The cell of series `id`, allocating its chunk if this is its shard's first record
    /// there; `None` past [`MAX_SERIES`].
    #[inline]
    pub fn cell(&self, id: usize) -> Option<&T> {
        let chunk = self
            .chunks
            .get(id / CHUNK)?
            .get_or_init(|| (0..CHUNK).map(|_| T::default()).collect());
        chunk.get(id % CHUNK)
    }

    /// The cell of series `id` if anything was ever recorded into its chunk.
    pub fn existing(&self, id: usize) -> Option<&T> {
        self.chunks.get(id / CHUNK)?.get()?.get(id % CHUNK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_wrap_around_the_shards() {
        let shards: Shards<Counter> = Shards::new(3);
        shards.at(1).add(1);
        shards.at(4).add(1);
        assert_eq!(shards.at(1).get(), 2);
        assert_eq!(shards.iter().map(Counter::get).sum::<u64>(), 2);
    }

    #[test]
    fn zero_shards_means_one() {
        let shards: Shards<Counter> = Shards::new(0);
        shards.local().add(5);
        assert_eq!(shards.iter().count(), 1);
        assert_eq!(shards.at(7).get(), 5);
    }

    #[test]
    fn chunks_appear_on_first_record_and_ids_past_the_last_are_refused() {
        let cells: Chunked<Counter> = Chunked::default();
        assert!(cells.existing(70).is_none());
        if let Some(cell) = cells.cell(70) {
            cell.add(2);
        }
        assert_eq!(cells.existing(70).map(Counter::get), Some(2));
        assert_eq!(cells.existing(64).map(Counter::get), Some(0));
        assert!(cells.existing(0).is_none(), "another chunk");
        assert!(cells.cell(MAX_SERIES).is_none());
    }
}
