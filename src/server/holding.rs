//! A connection's future together with what the connection holds until it ends: its
//! metrics gauge, its connection-limit permit, its drain token and its per-address slot.
//!
//! A hand-written future rather than an `async` block: a block that awaits a future it
//! captured moves it into a second slot of its own state, so the captured future and the
//! guards would be stored twice over in every connection's task. Here they are stored
//! once, and the task's one allocation is the connection (`tests/memory.rs`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    pub(super) struct Holding<F, G> {
        #[pin]
        future: F,
        // Dropped with the task, after the future completed (or was cancelled at shutdown).
        _guards: G,
    }
}

impl<F, G> Holding<F, G> {
    pub(super) fn new(future: F, guards: G) -> Self {
        Holding {
            future,
            _guards: guards,
        }
    }
}

impl<F: Future, G> Future for Holding<F, G> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().future.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    struct Flag(Arc<AtomicBool>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_guards_live_as_long_as_the_future_and_cost_no_second_copy() {
        let dropped = Arc::new(AtomicBool::new(false));
        let (release, wait) = tokio::sync::oneshot::channel::<u32>();
        let task = tokio::spawn(Holding::new(
            async move { wait.await.unwrap_or(0) },
            Flag(Arc::clone(&dropped)),
        ));
        tokio::task::yield_now().await;
        assert!(
            !dropped.load(Ordering::SeqCst),
            "guards dropped while the future ran"
        );
        let _ = release.send(7);
        assert_eq!(task.await.ok(), Some(7));
        assert!(dropped.load(Ordering::SeqCst), "guards outlived the task");

        let future = async { 0u8 };
        let alone = std::mem::size_of_val(&future);
        let held = Holding::new(future, [0u8; 64]);
        assert!(std::mem::size_of_val(&held) <= alone + 64 + 8);
    }
}
