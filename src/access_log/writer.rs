//! The access log's I/O shell: each worker thread formats its lines into a buffer of its own;
//! one writer thread takes the buffers' contents in batches and writes them to the file (or
//! standard error), so a request never waits for the disk. A buffer that is full (the disk
//! is slow or stuck) drops the line and counts it. The file is reopened on request
//! (SIGUSR1, a reload that moves it), which is how logrotate's `mv` + signal works.
//!
//! The buffer's lock is taken by its own worker for each line and by the writer for one
//! swap per flush: uncontended in practice, and no shared counter is touched per request.

use std::cell::OnceCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::limits::{ACCESS_LOG_SHUTDOWN_FLUSH_TIMEOUT, ACCESS_LOG_WARN_INTERVAL};

/// What the writer is told to do, besides flushing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `None`: standard error.
    pub path: Option<PathBuf>,
    pub buffer_bytes: usize,
    pub flush_interval: Duration,
}

type Buffer = Arc<Mutex<Vec<u8>>>;

struct Shared {
    /// Every worker's buffer, registered on its first line.
    buffers: Mutex<Vec<Buffer>>,
    settings: Mutex<Settings>,
    /// A worker's buffer holds at most this many bytes.
    capacity: AtomicUsize,
    dropped: AtomicU64,
    /// Set by SIGUSR1 or a reload that changed the path; the writer reopens before its next
    /// write.
    reopen: AtomicBool,
    stop: AtomicBool,
    /// Set by the writer once it has flushed everything after `stop`.
    finished: (Mutex<bool>, Condvar),
    writer: OnceLock<Thread>,
    /// When a warning about drops was last logged (by any thread), to rate-limit it.
    warned: Mutex<Option<Instant>>,
}

static SINK: OnceLock<Arc<Shared>> = OnceLock::new();

thread_local! {
    static LOCAL: OnceCell<Buffer> = const { OnceCell::new() };
}

/// Start the writer thread with `settings`, or apply new settings to the running one
/// (a changed path is reopened). Returns an error only when the thread cannot start.
pub fn configure(settings: Settings) -> std::io::Result<()> {
    if let Some(shared) = SINK.get() {
        shared
            .capacity
            .store(settings.buffer_bytes, Ordering::Relaxed);
        let mut current = lock(&shared.settings);
        if current.path != settings.path {
            shared.reopen.store(true, Ordering::Release);
        }
        *current = settings;
        drop(current);
        wake(shared);
        return Ok(());
    }
    let shared = Arc::new(Shared {
        buffers: Mutex::new(Vec::new()),
        capacity: AtomicUsize::new(settings.buffer_bytes),
        settings: Mutex::new(settings),
        dropped: AtomicU64::new(0),
        reopen: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        finished: (Mutex::new(false), Condvar::new()),
        writer: OnceLock::new(),
        warned: Mutex::new(None),
    });
    let thread = std::thread::Builder::new()
        .name("access-log".into())
        .spawn({
            let shared = Arc::clone(&shared);
            move || run(&shared)
        })?;
    let _ = shared.writer.set(thread.thread().clone());
    // Only `main` configures, once at startup and then from reloads, one at a time.
    let _ = SINK.set(shared);
    Ok(())
}

/// Reopen the log file before the next write (SIGUSR1, after logrotate moved it).
pub fn reopen() {
    if let Some(shared) = SINK.get() {
        shared.reopen.store(true, Ordering::Release);
        wake(shared);
    }
}

/// Lines dropped because a worker's buffer was full.
pub fn dropped() -> u64 {
    SINK.get()
        .map_or(0, |shared| shared.dropped.load(Ordering::Relaxed))
}

/// Write every buffered line and stop the writer, waiting at most
/// `ACCESS_LOG_SHUTDOWN_FLUSH_TIMEOUT` (a file that blocks must not hold the exit forever).
pub fn finish() {
    let Some(shared) = SINK.get() else {
        return;
    };
    shared.stop.store(true, Ordering::Release);
    wake(shared);
    let (done, signal) = &shared.finished;
    let guard = lock(done);
    let (guard, timeout) = signal
        .wait_timeout_while(guard, ACCESS_LOG_SHUTDOWN_FLUSH_TIMEOUT, |done| !*done)
        .unwrap_or_else(PoisonError::into_inner);
    if !*guard && timeout.timed_out() {
        tracing::warn!(
            "access log: exiting with lines unwritten (the log file is not taking writes)"
        );
    }
}

/// Append one line, formatted by `format` into this thread's buffer. Without a writer
/// (the format is `text`) nothing happens.
pub fn write_line(format: impl FnOnce(&mut Vec<u8>)) {
    let Some(shared) = SINK.get() else {
        return;
    };
    let capacity = shared.capacity.load(Ordering::Relaxed);
    let half_full = LOCAL.with(|local| {
        let buffer = local.get_or_init(|| register(shared));
        let mut buffer = lock(buffer);
        let before = buffer.len();
        if before >= capacity {
            return None;
        }
        format(&mut buffer);
        if buffer.len() > capacity {
            buffer.truncate(before);
            return None;
        }
        Some(before < capacity / 2 && buffer.len() >= capacity / 2)
    });
    match half_full {
        None => record_drop(shared),
        // Woken once as the buffer crosses half full, not for every line after.
        Some(true) => wake(shared),
        Some(false) => {}
    }
}

fn register(shared: &Shared) -> Buffer {
    let buffer: Buffer = Arc::new(Mutex::new(Vec::with_capacity(
        shared.capacity.load(Ordering::Relaxed).min(64 * 1024),
    )));
    lock(&shared.buffers).push(Arc::clone(&buffer));
    buffer
}

fn record_drop(shared: &Shared) {
    let dropped = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
    if should_warn(&shared.warned) {
        tracing::warn!(
            dropped_total = dropped,
            "access log: lines dropped, the log file is not keeping up"
        );
    }
}

fn should_warn(last: &Mutex<Option<Instant>>) -> bool {
    let Ok(mut last) = last.try_lock() else {
        return false;
    };
    let now = Instant::now();
    if last.is_some_and(|at| now.duration_since(at) < ACCESS_LOG_WARN_INTERVAL) {
        return false;
    }
    *last = Some(now);
    true
}

fn wake(shared: &Shared) {
    if let Some(thread) = shared.writer.get() {
        thread.unpark();
    }
}

/// A poisoned lock only means a thread panicked while holding it; the bytes are still ours.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where the lines go now.
enum Output {
    Stderr,
    File(File),
    /// The file could not be opened: lines are dropped until a reopen succeeds.
    Failed,
}

fn open(path: Option<&Path>) -> Output {
    let Some(path) = path else {
        return Output::Stderr;
    };
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => Output::File(file),
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "access log: cannot open the file");
            Output::Failed
        }
    }
}

/// The writer thread: wait for a wake or the flush interval, then write every buffer.
fn run(shared: &Shared) {
    let initial_path = lock(&shared.settings).path.clone();
    let mut output = open(initial_path.as_deref());
    let mut batch = Vec::new();
    let mut write_warned: Option<Instant> = None;
    loop {
        let interval = lock(&shared.settings).flush_interval;
        let stopping = shared.stop.load(Ordering::Acquire);
        if !stopping {
            std::thread::park_timeout(interval);
        }
        if shared.reopen.swap(false, Ordering::AcqRel) {
            // Lines taken before the signal belong to the old file: the batch below is
            // written after the reopen, but it was formatted after the rotation began
            // anyway, and nothing is lost either way.
            let path = lock(&shared.settings).path.clone();
            output = open(path.as_deref());
        }
        let buffers: Vec<Buffer> = lock(&shared.buffers).clone();
        for buffer in &buffers {
            {
                let mut taken = lock(buffer);
                if taken.is_empty() {
                    continue;
                }
                std::mem::swap(&mut *taken, &mut batch);
            }
            let written = match &mut output {
                Output::Stderr => std::io::stderr().lock().write_all(&batch),
                Output::File(file) => file.write_all(&batch),
                Output::Failed => Err(std::io::Error::other("the log file is not open")),
            };
            if let Err(error) = written {
                let lines = memchr::memchr_iter(b'\n', &batch).count() as u64;
                shared.dropped.fetch_add(lines, Ordering::Relaxed);
                let now = Instant::now();
                if write_warned.is_none_or(|at| now.duration_since(at) >= ACCESS_LOG_WARN_INTERVAL)
                {
                    write_warned = Some(now);
                    tracing::warn!(%error, lines, "access log: write failed; lines dropped");
                }
            }
            batch.clear();
        }
        if stopping {
            let (done, signal) = &shared.finished;
            *lock(done) = true;
            signal.notify_all();
            return;
        }
    }
}
