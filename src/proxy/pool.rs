//! Idle keep-alive connections to one backend, reused most-recently-used first (the one
//! least likely to have been closed by the backend). Each is checked before reuse: a
//! connection the backend has closed, or that has unread bytes, is dropped.
//!
//! With `server.runtime: per_core` every worker thread runs its own runtime, and a socket
//! belongs to the reactor of the runtime that opened it: handing it to another thread would
//! route each of its readiness events through the first thread (a cross-thread wake-up per
//! read). So the pool keeps one stack per worker thread, found through a thread-local worker
//! index, and a shared stack for threads without one (the shared runtime, the main thread).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::stream::UpstreamStream;

thread_local! {
    /// This thread's per-core worker index; `None` on every other thread.
    static WORKER_INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// How many per-core worker threads the process runs (0: none, one shared runtime). Set once
/// at startup, before any request; pools built by a later reload read it too.
static WORKER_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Declare that the process runs `count` per-core worker threads. Called before they start.
pub fn set_worker_threads(count: usize) {
    WORKER_THREADS.store(count, Ordering::Relaxed);
}

/// Mark the calling thread as per-core worker `index` (`None`: not a worker), so connections
/// it opens and returns stay in its own stack.
pub fn set_thread_worker(index: Option<usize>) {
    WORKER_INDEX.with(|slot| slot.set(index));
}

#[derive(Debug)]
pub struct Pool {
    /// For threads without a worker index.
    shared: Stack,
    /// One per per-core worker thread, created on first use: the pool is built while the
    /// config loads, before the process knows how many worker threads it will run.
    workers: OnceLock<Box<[Stack]>>,
    max_idle: usize,
    idle_timeout: Duration,
}

/// Idle connections, oldest first, and how many it may hold.
#[derive(Debug)]
struct Stack {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
}

#[derive(Debug)]
struct Idle {
    stream: UpstreamStream,
    since: Instant,
}

impl Stack {
    fn new(max_idle: usize) -> Stack {
        Stack {
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `max_idle` split over `workers` stacks as evenly as it goes, so the backend never holds
/// more than `max_idle` idle connections from this pool's workers together.
fn worker_stacks(max_idle: usize, workers: usize) -> Box<[Stack]> {
    let (share, extra) = match workers {
        0 => (0, 0),
        n => (max_idle / n, max_idle % n),
    };
    (0..workers)
        .map(|index| Stack::new(share + usize::from(index < extra)))
        .collect()
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            shared: Stack::new(max_idle),
            workers: OnceLock::new(),
            max_idle,
            idle_timeout,
        }
    }

    /// A pool for `workers` per-core threads, whatever the process declared (tests run many
    /// pools in one process).
    #[cfg(test)]
    fn with_worker_threads(max_idle: usize, idle_timeout: Duration, workers: usize) -> Pool {
        let pool = Pool::new(max_idle, idle_timeout);
        let _ = pool.workers.set(worker_stacks(max_idle, workers));
        pool
    }

    /// The stack of the calling thread: its worker's, or the shared one.
    fn stack(&self) -> &Stack {
        let Some(index) = WORKER_INDEX.with(Cell::get) else {
            return &self.shared;
        };
        let workers = self
            .workers
            .get_or_init(|| worker_stacks(self.max_idle, WORKER_THREADS.load(Ordering::Relaxed)));
        // An index beyond the count (a reload built this pool under another worker count)
        // still works, through the shared stack.
        workers.get(index).unwrap_or(&self.shared)
    }

    /// A live idle connection opened by this thread's runtime, if there is one.
    #[cfg(test)]
    pub fn take(&self) -> Option<UpstreamStream> {
        self.take_at(Instant::now())
    }

    /// [`Pool::take`] at `now`: the request's own clock reading will do (one fewer per
    /// request), as its few microseconds of age only make a connection look younger by as much.
    pub fn take_at(&self, now: Instant) -> Option<UpstreamStream> {
        let stack = self.stack();
        loop {
            let mut idle = stack.idle().pop()?;
            if now.duration_since(idle.since) >= self.idle_timeout {
                // Everything below is older still.
                stack.idle().clear();
                return None;
            }
            if idle.stream.is_reusable() {
                return Some(idle.stream);
            }
        }
    }

    /// Keep `stream` for reuse by this thread, unless its stack is full.
    pub fn put(&self, stream: UpstreamStream) {
        let stack = self.stack();
        let now = Instant::now();
        let mut idle = stack.idle();
        // Oldest first: drop what expired so the pool never holds dead sockets for long.
        let expired = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) >= self.idle_timeout)
            .count();
        idle.drain(..expired);
        if idle.len() < stack.max_idle {
            idle.push(Idle { stream, since: now });
        }
    }
}

impl Pool {
    /// Idle connections held now, over every stack (for the admin endpoint).
    pub fn idle_count(&self) -> usize {
        let workers = self.workers.get().map_or(0, |stacks| {
            stacks.iter().map(|stack| stack.idle().len()).sum()
        });
        self.shared.idle().len() + workers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// `n` client ends of loopback connections (the server ends are kept open in `keep`).
    async fn streams(n: usize, keep: &mut Vec<TcpStream>) -> Vec<UpstreamStream> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(UpstreamStream::Plain(
                TcpStream::connect(addr).await.unwrap(),
            ));
            keep.push(listener.accept().await.unwrap().0);
        }
        out
    }

    #[tokio::test]
    async fn keeps_at_most_max_idle_connections() {
        let mut peers = Vec::new();
        let pool = Pool::new(2, Duration::from_secs(60));
        for stream in streams(3, &mut peers).await {
            pool.put(stream);
        }
        assert_eq!(
            pool.idle_count(),
            2,
            "the third connection is over the limit"
        );
        assert!(pool.take().is_some());
        assert!(pool.take().is_some());
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn zero_keeps_nothing() {
        let mut peers = Vec::new();
        let pool = Pool::new(0, Duration::from_secs(60));
        for stream in streams(1, &mut peers).await {
            pool.put(stream);
        }
        assert_eq!(pool.idle_count(), 0);
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn a_connection_closed_by_the_backend_is_not_reused() {
        let mut peers = Vec::new();
        let pool = Pool::new(4, Duration::from_secs(60));
        for stream in streams(1, &mut peers).await {
            pool.put(stream);
        }
        peers.clear(); // the backend closes its end
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take().is_none());
    }

    /// Makes the test's thread worker `index` until dropped (libtest may run several tests
    /// on one thread, and the index is thread-local).
    struct AsWorker;

    impl AsWorker {
        fn new(index: usize) -> AsWorker {
            set_thread_worker(Some(index));
            AsWorker
        }
    }

    impl Drop for AsWorker {
        fn drop(&mut self) {
            set_thread_worker(None);
        }
    }

    #[tokio::test]
    async fn a_worker_takes_only_the_connections_it_returned() {
        let mut peers = Vec::new();
        let pool = Pool::with_worker_threads(4, Duration::from_secs(60), 2);
        let mut streams = streams(1, &mut peers).await;
        {
            let _worker = AsWorker::new(0);
            pool.put(streams.pop().unwrap());
        }
        {
            let _worker = AsWorker::new(1);
            assert!(
                pool.take().is_none(),
                "worker 0's connection stays with worker 0"
            );
        }
        assert!(pool.take().is_none(), "nor does the shared stack see it");
        assert_eq!(pool.idle_count(), 1, "but the admin count includes it");
        let _worker = AsWorker::new(0);
        assert!(pool.take().is_some());
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn max_idle_is_split_between_workers_and_counted_whole() {
        let mut peers = Vec::new();
        let pool = Pool::with_worker_threads(3, Duration::from_secs(60), 2);
        let mut streams = streams(8, &mut peers).await;
        for index in [0, 1] {
            let _worker = AsWorker::new(index);
            for _ in 0..3 {
                pool.put(streams.pop().unwrap());
            }
        }
        assert_eq!(
            pool.idle_count(),
            3,
            "2 for worker 0 and 1 for worker 1, not 3 each"
        );
        // The shared stack (threads without a worker index) keeps its own, whole limit.
        for stream in streams.drain(..2) {
            pool.put(stream);
        }
        assert_eq!(pool.idle_count(), 5);
        for (index, held) in [(0, 2), (1, 1)] {
            let _worker = AsWorker::new(index);
            for _ in 0..held {
                assert!(pool.take().is_some());
            }
            assert!(pool.take().is_none(), "worker {index} held {held}");
        }
    }

    #[test]
    fn fewer_idle_connections_than_workers_go_to_the_first_workers() {
        let stacks = worker_stacks(1, 3);
        let shares: Vec<usize> = stacks.iter().map(|s| s.max_idle).collect();
        assert_eq!(shares, [1, 0, 0]);
        assert!(worker_stacks(5, 0).is_empty());
    }

    #[tokio::test]
    async fn a_worker_index_beyond_the_pool_uses_the_shared_stack() {
        let mut peers = Vec::new();
        let pool = Pool::with_worker_threads(2, Duration::from_secs(60), 1);
        let mut streams = streams(1, &mut peers).await;
        {
            let _worker = AsWorker::new(5);
            pool.put(streams.pop().unwrap());
        }
        assert!(pool.take().is_some(), "worker 5 used the shared stack");
    }

    /// The layout the pool exists for: two threads, each with its own current-thread
    /// runtime, each reusing only the connection its own runtime opened.
    #[test]
    fn worker_threads_with_their_own_runtimes_reuse_their_own_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = std::sync::Arc::new(Pool::with_worker_threads(4, Duration::from_secs(60), 2));
        let (put_tx, put_rx) = std::sync::mpsc::channel();
        let (check_tx, check_rx) = std::sync::mpsc::channel::<()>();
        let check_rx = std::sync::Arc::new(Mutex::new(check_rx));
        let threads: Vec<_> = (0..2)
            .map(|index| {
                let pool = std::sync::Arc::clone(&pool);
                let put_tx = put_tx.clone();
                let check_rx = std::sync::Arc::clone(&check_rx);
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let _worker = AsWorker::new(index);
                    runtime.block_on(async {
                        let stream = TcpStream::connect(addr).await.unwrap();
                        let local = stream.local_addr().unwrap();
                        pool.put(UpstreamStream::Plain(stream));
                        put_tx.send(()).unwrap();
                        // Both have put theirs before either takes.
                        check_rx.lock().unwrap().recv().unwrap();
                        let again = pool.take().expect("this worker's own connection");
                        let again = again.as_plain_tcp().expect("plain");
                        assert_eq!(again.local_addr().unwrap(), local);
                        assert!(pool.take().is_none(), "the other worker's stays put");
                    });
                })
            })
            .collect();
        let _accepted: Vec<_> = (0..2).map(|_| listener.accept().unwrap()).collect();
        for _ in 0..2 {
            put_rx.recv().unwrap();
        }
        assert_eq!(pool.idle_count(), 2);
        for _ in 0..2 {
            check_tx.send(()).unwrap();
        }
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(pool.idle_count(), 0);
    }
}
