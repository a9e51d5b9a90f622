//! A cache of small files' content and prepared headers, revalidated on every hit.
//!
//! A hit costs one `stat` of the file's path instead of the lookup walk, `open`, `fstat`,
//! `read` and `close` (8 system calls per request down to 3 with the socket's own two). It
//! is never stale: an entry is used only while the file's identity (device, inode, size,
//! modification time to the nanosecond) is unchanged, which is exactly what the ETag is made
//! of. A path that now resolves elsewhere (a directory swapped for a symlink leaving the
//! root, say) reaches a different inode, misses, and goes through the full, checked lookup.
//!
//! Bounded by total bytes (`static_files.cache_max_bytes`); when full, arbitrary entries are
//! evicted. Each config snapshot has its own cache, so a reload starts cold.
//!
//! Beside it, what was found next to each file served compressed (`SidecarSet`: which
//! precompressed sidecars exist and were fresh) is remembered for
//! `static_files.sidecar_valid_ms`, as nginx's `open_file_cache_valid` does: within that
//! time a precompressed answer costs no `stat` at all, of the original or of the sidecar.
//! That one is allowed to be stale: an edit shows after the interval, not at once.

use std::collections::HashMap;
use std::fmt;
use std::fs::Metadata;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::path::SafePath;
use super::FileHeaders;

/// Bookkeeping charged per entry on top of its content, so many tiny files are bounded too.
const ENTRY_OVERHEAD_BYTES: u64 = 256;

/// What identifies one version of one file. The change time is included so that a
/// `chmod 000` (which leaves size and mtime alone) stops the cached copy being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
    changed: (i64, i64),
}

impl FileIdentity {
    pub fn of(metadata: &Metadata) -> FileIdentity {
        #[cfg(unix)]
        let (device, inode, changed) = {
            use std::os::unix::fs::MetadataExt;
            (
                metadata.dev(),
                metadata.ino(),
                (metadata.ctime(), metadata.ctime_nsec()),
            )
        };
        #[cfg(not(unix))]
        let (device, inode, changed) = (0, 0, (0, 0));
        FileIdentity {
            device,
            inode,
            len: metadata.len(),
            modified: metadata.modified().ok(),
            changed,
        }
    }
}

/// One cached file: where it was found, which version, and what to send.
#[derive(Debug)]
pub struct CachedFile {
    pub path: PathBuf,
    pub identity: FileIdentity,
    pub headers: FileHeaders,
    pub content: Bytes,
}

pub struct FileCache {
    max_bytes: u64,
    max_file_bytes: u64,
    state: Mutex<CacheState>,
    sidecar_limits: SidecarLimits,
    sidecars: Mutex<SidecarState>,
}

#[derive(Default)]
struct SidecarState {
    sets: HashMap<SafePath, Arc<SidecarSet>>,
    /// When expired sets were last dropped: at most once per interval, so a full table
    /// under many distinct files is not swept on every insert.
    swept: Option<Instant>,
}

/// How long sidecar lookups are trusted and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidecarLimits {
    /// Zero: never remembered, looked for on every request.
    pub valid_for: Duration,
    pub max_entries: usize,
}

/// One precompressed sidecar found fresh beside its original: where it is, the version that
/// was checked, and the headers it is sent with (its own length and validators, its ETag
/// tagged with the coding, the original's type), made once per check rather than per request.
#[derive(Debug)]
pub struct Sidecar {
    pub path: PathBuf,
    /// Its key in this cache when its content may be held here.
    pub key: Option<SafePath>,
    /// Its entry in this cache as it was when checked: reached without the cache's lock or a
    /// hash while the cache keeps it, and pinning no content once evicted.
    pub held: Weak<CachedFile>,
    pub identity: FileIdentity,
    pub headers: FileHeaders,
}

/// The sidecars of one original, indexed by `Algorithm::index`, as found at `checked`.
#[derive(Debug)]
pub struct SidecarSet {
    checked: Instant,
    pub by_coding: [Option<Sidecar>; 3],
}

impl SidecarSet {
    pub fn new(by_coding: [Option<Sidecar>; 3]) -> SidecarSet {
        SidecarSet {
            checked: Instant::now(),
            by_coding,
        }
    }

    fn is_valid(&self, valid_for: Duration) -> bool {
        self.checked.elapsed() < valid_for
    }
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<SafePath, Arc<CachedFile>>,
    bytes: u64,
}

impl FileCache {
    /// A cache of at most `max_bytes` holding files of at most `max_file_bytes`; a zero
    /// `max_bytes` disables it.
    pub fn new(max_bytes: u64, max_file_bytes: u64) -> FileCache {
        FileCache {
            max_bytes,
            max_file_bytes,
            state: Mutex::new(CacheState::default()),
            sidecar_limits: SidecarLimits {
                valid_for: Duration::ZERO,
                max_entries: 0,
            },
            sidecars: Mutex::new(SidecarState::default()),
        }
    }

    /// The same cache remembering sidecar lookups within `limits`.
    pub fn with_sidecars(mut self, limits: SidecarLimits) -> FileCache {
        self.sidecar_limits = limits;
        self
    }

    pub fn sidecar_limits(&self) -> SidecarLimits {
        self.sidecar_limits
    }

    /// Are sidecar lookups remembered at all?
    pub fn remembers_sidecars(&self) -> bool {
        !self.sidecar_limits.valid_for.is_zero() && self.sidecar_limits.max_entries > 0
    }

    /// What was found beside the file `key` names, if it was looked for within
    /// `sidecar_valid_ms`. No `stat`: that is the point.
    pub fn sidecars(&self, key: &SafePath) -> Option<Arc<SidecarSet>> {
        let limits = self.sidecar_limits;
        if !self.remembers_sidecars() {
            return None;
        }
        let sidecars = lock_ignoring_poison(&self.sidecars);
        sidecars
            .sets
            .get(key)
            .filter(|set| set.is_valid(limits.valid_for))
            .cloned()
    }

    /// Remember `set` for `key` (a no-op when sidecar lookups are not remembered). When
    /// full, expired entries are dropped first, then an arbitrary one.
    pub fn remember_sidecars(&self, key: &SafePath, set: Arc<SidecarSet>) {
        let limits = self.sidecar_limits;
        if !self.remembers_sidecars() {
            return;
        }
        let mut state = lock_ignoring_poison(&self.sidecars);
        if state.sets.len() >= limits.max_entries && !state.sets.contains_key(key) {
            let due = state
                .swept
                .is_none_or(|at| at.elapsed() >= limits.valid_for);
            if due {
                state.sets.retain(|_, set| set.is_valid(limits.valid_for));
                state.swept = Some(Instant::now());
            }
            if state.sets.len() >= limits.max_entries {
                if let Some(victim) = state.sets.keys().next().cloned() {
                    state.sets.remove(&victim);
                }
            }
        }
        state.sets.insert(key.clone(), set);
    }

    /// Drop every remembered sidecar lookup (a reload may have changed what is compressed).
    pub fn forget_sidecars(&self) {
        lock_ignoring_poison(&self.sidecars).sets.clear();
    }

    /// The entry for `key` without revalidating it: for a sidecar whose version a recent
    /// check recorded (the caller compares identities).
    pub fn peek(&self, key: &SafePath) -> Option<Arc<CachedFile>> {
        if self.max_bytes == 0 {
            return None;
        }
        self.lock().entries.get(key).cloned()
    }

    /// `(max_bytes, max_file_bytes)`, to tell whether a new config can keep this cache.
    pub fn limits(&self) -> (u64, u64) {
        (self.max_bytes, self.max_file_bytes)
    }

    /// Would a file of `len` bytes be kept?
    pub fn admits(&self, len: u64) -> bool {
        len <= self.max_file_bytes && len.saturating_add(ENTRY_OVERHEAD_BYTES) <= self.max_bytes
    }

    /// The entry for `key`, if the file it was read from is still the same version.
    pub fn lookup(&self, key: &SafePath) -> Option<Arc<CachedFile>> {
        if self.max_bytes == 0 {
            return None;
        }
        let entry = self.lock().entries.get(key).cloned()?;
        let current = std::fs::metadata(&entry.path).ok();
        if current.is_some_and(|m| m.is_file() && FileIdentity::of(&m) == entry.identity) {
            return Some(entry);
        }
        let mut state = self.lock();
        if state
            .entries
            .get(key)
            .is_some_and(|held| Arc::ptr_eq(held, &entry))
        {
            state.entries.remove(key);
            state.bytes -= charge(&entry);
        }
        None
    }

    /// Keep `entry` under `key`; returns it as kept (`None` when not admitted).
    pub fn insert(&self, key: SafePath, entry: CachedFile) -> Option<Arc<CachedFile>> {
        if !self.admits(entry.content.len() as u64) {
            return None;
        }
        let entry = Arc::new(entry);
        let needed = charge(&entry);
        let mut state = self.lock();
        if let Some(old) = state.entries.remove(&key) {
            state.bytes -= charge(&old);
        }
        while state.bytes + needed > self.max_bytes {
            let Some(victim) = state.entries.keys().next().cloned() else {
                break;
            };
            if let Some(old) = state.entries.remove(&victim) {
                state.bytes -= charge(&old);
            }
        }
        state.bytes += needed;
        state.entries.insert(key, Arc::clone(&entry));
        Some(entry)
    }

    /// Entries and bytes held (for tests and, later, metrics).
    pub fn usage(&self) -> (usize, u64) {
        let state = self.lock();
        (state.entries.len(), state.bytes)
    }

    /// The lock guards plain maps: a panic while holding it cannot leave them inconsistent in
    /// a way that matters more than serving, so poisoning is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        lock_ignoring_poison(&self.state)
    }
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn charge(entry: &CachedFile) -> u64 {
    entry.content.len() as u64 + ENTRY_OVERHEAD_BYTES
}

impl fmt::Debug for FileCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (entries, bytes) = self.usage();
        f.debug_struct("FileCache")
            .field("max_bytes", &self.max_bytes)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("entries", &entries)
            .field("bytes", &bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::response::HeaderValue;
    use crate::static_files::conditional::Validators;

    fn entry(dir: &std::path::Path, name: &str, len: usize) -> (SafePath, CachedFile) {
        let path = dir.join(name);
        std::fs::write(&path, vec![b'x'; len]).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        let key = SafePath {
            segments: vec![name.to_string()],
            trailing_slash: false,
        };
        let cached = CachedFile {
            path,
            identity: FileIdentity::of(&metadata),
            headers: FileHeaders {
                validators: Validators::of(&metadata),
                content_type: HeaderValue::from("text/plain"),
                size: len as u64,
                modified: metadata.modified().ok(),
            },
            content: Bytes::from(vec![b'x'; len]),
        };
        (key, cached)
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(4 * (1000 + ENTRY_OVERHEAD_BYTES), 1000);
        for i in 0..20 {
            let (key, cached) = entry(dir.path(), &format!("f{i}"), 1000);
            cache.insert(key, cached);
            let (entries, bytes) = cache.usage();
            assert!(entries <= 4 && bytes <= 4 * (1000 + ENTRY_OVERHEAD_BYTES));
        }
        assert_eq!(cache.usage().0, 4);
    }

    #[test]
    fn refuses_files_over_the_size_limit_and_everything_when_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(1 << 20, 100);
        let (key, cached) = entry(dir.path(), "big", 101);
        cache.insert(key.clone(), cached);
        assert!(cache.lookup(&key).is_none());

        let disabled = FileCache::new(0, 100);
        let (key, cached) = entry(dir.path(), "small", 10);
        disabled.insert(key.clone(), cached);
        assert!(disabled.lookup(&key).is_none());
    }

    #[test]
    fn a_hit_is_revalidated_and_a_stale_entry_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(1 << 20, 1 << 20);
        let (key, cached) = entry(dir.path(), "f", 10);
        let path = cached.path.clone();
        cache.insert(key.clone(), cached);
        assert!(cache.lookup(&key).is_some());
        std::fs::write(&path, b"different!!").unwrap();
        assert!(cache.lookup(&key).is_none());
        assert_eq!(cache.usage(), (0, 0));
    }

    fn key(name: &str) -> SafePath {
        SafePath {
            segments: vec![name.to_string()],
            trailing_slash: false,
        }
    }

    #[test]
    fn sidecar_lookups_expire_and_stay_within_their_entry_bound() {
        let cache = FileCache::new(1 << 20, 1 << 20).with_sidecars(SidecarLimits {
            valid_for: Duration::from_millis(50),
            max_entries: 3,
        });
        for i in 0..10 {
            cache.remember_sidecars(
                &key(&format!("f{i}")),
                Arc::new(SidecarSet::new([None, None, None])),
            );
            assert!(lock_ignoring_poison(&cache.sidecars).sets.len() <= 3);
        }
        assert!(cache.sidecars(&key("f9")).is_some(), "the latest is kept");
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.sidecars(&key("f9")).is_none(), "expired");
        cache.remember_sidecars(&key("f9"), Arc::new(SidecarSet::new([None, None, None])));
        cache.forget_sidecars();
        assert!(cache.sidecars(&key("f9")).is_none(), "forgotten on reload");

        let never = FileCache::new(1 << 20, 1 << 20).with_sidecars(SidecarLimits {
            valid_for: Duration::ZERO,
            max_entries: 3,
        });
        never.remember_sidecars(&key("f"), Arc::new(SidecarSet::new([None, None, None])));
        assert!(!never.remembers_sidecars() && never.sidecars(&key("f")).is_none());
    }
}
