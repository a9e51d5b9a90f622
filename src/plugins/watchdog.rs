//! What enforces `timeout_ms`: each worker publishes the deadline of the callback it runs,
//! and one thread advances the engine's epoch only when a published deadline has passed
//! (ADR 0021). A callback runs with an epoch deadline one tick ahead; when the epoch moves,
//! its store's deadline callback compares the clock with the callback's own deadline and
//! interrupts it, or lets it run to the next tick (the epoch also moves for callbacks on
//! other workers).
//!
//! The thread used to advance the epoch every millisecond whatever ran, 1.5 % of the
//! process's CPU under load and two context switches per millisecond on a worker's CPU
//! (docs/BENCHMARKS.md, "Plugins"). Now it wakes when the earliest published deadline is
//! due, or after `poll_period` to look for new ones: the shortest `timeout_ms` of the
//! plugins started, so a callback that began just after a look is seen before its deadline
//! and interrupted at it. A thread rather than a Tokio timer: it must run while every
//! worker is stuck in a runaway plugin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use crate::limits::PLUGIN_EPOCH_TICK;

/// No callback running (a deadline is never the base instant itself: see `now`).
const IDLE: u64 = 0;

/// Nanoseconds since the process's first look at the clock, plus one (so never `IDLE`).
pub fn now() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// The deadline `budget` from `start` (both as `now`).
pub fn deadline(start: u64, budget: Duration) -> u64 {
    start.saturating_add(u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX))
}

/// The deadlines the workers publish, one slot per thread that ever ran a callback.
fn slots() -> &'static Mutex<Vec<Weak<AtomicU64>>> {
    static SLOTS: OnceLock<Mutex<Vec<Weak<AtomicU64>>>> = OnceLock::new();
    SLOTS.get_or_init(Default::default)
}

thread_local! {
    /// This thread's slot: written by its own callbacks only (no contention), read by the
    /// watchdog thread.
    static SLOT: Arc<AtomicU64> = {
        let slot = Arc::new(AtomicU64::new(IDLE));
        slots()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&slot));
        slot
    };
}

/// The shortest callback budget of any plugin started in this process, in nanoseconds:
/// the watchdog looks for new deadlines at least this often.
static SHORTEST_BUDGET: AtomicU64 = AtomicU64::new(u64::MAX);

/// The watchdog thread, to wake when it must look sooner than it planned.
static WATCHDOG: OnceLock<std::thread::Thread> = OnceLock::new();

/// A plugin with this budget started: the watchdog looks at least this often from now on,
/// and is woken to plan by it when it is shorter than any before (it may be asleep for a
/// longer period, or for good before the first plugin starts).
pub fn note_budget(budget: Duration) {
    let nanos = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX);
    if SHORTEST_BUDGET.fetch_min(nanos, Ordering::Relaxed) > nanos {
        if let Some(watchdog) = WATCHDOG.get() {
            watchdog.unpark();
        }
    }
}

/// How long the watchdog may sleep without missing a deadline: the shortest budget, and
/// never less than one tick.
pub fn poll_period() -> Duration {
    let shortest = Duration::from_nanos(SHORTEST_BUDGET.load(Ordering::Relaxed));
    shortest.max(PLUGIN_EPOCH_TICK)
}

/// Publish this thread's callback deadline for the length of `run`; the deadline published
/// before (a callback's, when a host call re-enters the guest) is restored after.
pub fn watched<R>(deadline: u64, run: impl FnOnce() -> R) -> R {
    SLOT.with(|slot| {
        let outer = slot.swap(deadline, Ordering::Relaxed);
        // The earlier of the two holds: a nested call never extends its callback's budget.
        if outer != IDLE && outer < deadline {
            slot.store(outer, Ordering::Relaxed);
        }
        let result = run();
        slot.store(outer, Ordering::Relaxed);
        result
    })
}

/// Start the watchdog thread of `engine` (once per process, with the engine).
pub fn start(engine: Engine) {
    let spawned = std::thread::Builder::new()
        .name("sentinel-plugin-epoch".into())
        .spawn(move || loop {
            let at = now();
            let (overdue, next) = look(at);
            if overdue {
                engine.increment_epoch();
            }
            // Parked rather than asleep, so `note_budget` can wake it early.
            std::thread::park_timeout(Duration::from_nanos(next.saturating_sub(at)));
        });
    match spawned {
        Ok(handle) => {
            let _ = WATCHDOG.set(handle.thread().clone());
            // A budget noted while the thread started has not woken it: look again.
            handle.thread().unpark();
        }
        Err(error) => {
            tracing::error!(%error, "cannot start the plugin epoch thread; plugin timeouts will not fire");
        }
    }
}

/// One look at the slots at `at`: whether a deadline has passed, and when to look next
/// (the earliest deadline ahead, or one poll period; while one is overdue, one tick, since
/// a callback sees the epoch only when it is back in guest code).
fn look(at: u64) -> (bool, u64) {
    let mut overdue = false;
    let mut next = deadline(at, poll_period());
    let mut slots = slots().lock().unwrap_or_else(|p| p.into_inner());
    slots.retain(|slot| {
        let Some(slot) = slot.upgrade() else {
            return false;
        };
        match slot.load(Ordering::Relaxed) {
            IDLE => {}
            due if due <= at => overdue = true,
            due => next = next.min(due),
        }
        true
    });
    if overdue {
        next = next.min(deadline(at, PLUGIN_EPOCH_TICK));
    }
    (overdue, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_deadline_is_seen_and_restored() {
        let at = now();
        let due = deadline(at, Duration::from_secs(3600));
        let (overdue, next) = watched(due, || {
            let inner = watched(due + 1, || SLOT.with(|s| s.load(Ordering::Relaxed)));
            // The nested call keeps the outer, earlier deadline.
            assert_eq!(inner, due);
            look(at)
        });
        assert!(!overdue);
        assert!(next <= deadline(at, poll_period()));
        assert_eq!(SLOT.with(|s| s.load(Ordering::Relaxed)), IDLE);
        let (overdue, next) = watched(at, || look(at + 1));
        assert!(overdue, "a deadline in the past is overdue");
        assert!(next <= deadline(at + 1, PLUGIN_EPOCH_TICK));
    }

    #[test]
    fn the_poll_period_is_the_shortest_budget_and_at_least_a_tick() {
        note_budget(Duration::from_micros(10));
        assert_eq!(poll_period(), PLUGIN_EPOCH_TICK);
        assert!(poll_period() <= Duration::from_millis(10));
    }
}
