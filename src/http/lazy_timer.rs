//! A connection's deadlines (keep-alive, header, response) on one timer that is re-armed
//! lazily, as nginx re-arms its own: a later deadline leaves the timer where it is, and a timer
//! that fires before the deadline it now stands for is re-armed for the rest. Only a sooner
//! deadline re-arms it at once. Arming a tokio timer afresh for every request (register, then
//! deregister when the request arrives first) cost ~550 instructions per keep-alive request
//! (callgrind); so did moving it between the keep-alive and the response deadline, which
//! alternate on a proxied connection (~500 per request). Now a busy connection's timer is
//! touched about twice per its shortest timeout instead.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::time::{Instant, Sleep};

/// One timer, created on first use and kept for the connection's life.
#[derive(Debug, Default)]
pub(crate) struct LazyTimer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl LazyTimer {
    /// Resolves at `deadline`, never before. Dropping the future (the awaited event came
    /// first) leaves the timer armed for the next wait. The future is a closure over
    /// `poll_until`, ~24 bytes: an idle connection's future holds one.
    pub(crate) fn until(&mut self, deadline: Instant) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_until(cx, deadline))
    }

    fn poll_until(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // Later: fire early and re-arm below, once, rather than on every request.
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            ready!(sleep.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            // Fired for an earlier deadline: wait out the rest.
            sleep.as_mut().reset(deadline);
        }
    }

    /// When the timer will fire, if it is armed (for tests).
    #[cfg(test)]
    fn armed(&self) -> Option<Instant> {
        self.sleep.as_ref().map(|sleep| sleep.deadline())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll};

    use std::time::Duration;

    use super::*;

    /// Poll `future` once, as a select would before its other branch wins.
    fn poll_once(future: impl Future<Output = ()>) -> Poll<()> {
        let mut future = std::pin::pin!(future);
        let waker = std::task::Waker::noop();
        future.as_mut().poll(&mut Context::from_waker(waker))
    }

    #[tokio::test(start_paused = true)]
    async fn it_never_fires_before_the_deadline_even_when_armed_earlier() {
        let mut timer = LazyTimer::default();
        let start = Instant::now();
        let first = start + Duration::from_secs(5);
        assert!(poll_once(timer.until(first)).is_pending());
        // A later deadline keeps the timer where it is...
        let later = first + Duration::from_secs(60);
        assert!(poll_once(timer.until(later)).is_pending());
        assert_eq!(timer.armed(), Some(first));
        // ...and waiting on it still ends at the later deadline, not at the armed one.
        timer.until(later).await;
        assert_eq!(Instant::now(), later);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sooner_deadline_re_arms_at_once() {
        let mut timer = LazyTimer::default();
        let start = Instant::now();
        assert!(poll_once(timer.until(start + Duration::from_secs(120))).is_pending());
        let sooner = start + Duration::from_secs(1);
        assert!(poll_once(timer.until(sooner)).is_pending());
        assert_eq!(timer.armed(), Some(sooner));
        timer.until(sooner).await;
        assert_eq!(Instant::now(), sooner);
    }

    #[tokio::test(start_paused = true)]
    async fn alternating_deadlines_leave_the_timer_alone_until_it_fires() {
        // A proxied keep-alive connection: the response deadline, then the keep-alive one,
        // request after request. Neither moves the timer until it fires.
        let mut timer = LazyTimer::default();
        let response = Duration::from_secs(30);
        let keep_alive = Duration::from_secs(120);
        let start = Instant::now();
        assert!(poll_once(timer.until(start + response)).is_pending());
        for step in 1..10 {
            let now = start + Duration::from_millis(step * 10);
            assert!(poll_once(timer.until(now + keep_alive)).is_pending());
            assert!(poll_once(timer.until(now + response)).is_pending());
            assert_eq!(timer.armed(), Some(start + response), "step {step}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn it_can_wait_again_after_firing() {
        let mut timer = LazyTimer::default();
        let start = Instant::now();
        timer.until(start + Duration::from_secs(1)).await;
        // An elapsed timer before the next deadline: still waits it out.
        let next = Instant::now() + Duration::from_millis(125);
        timer.until(next).await;
        assert_eq!(Instant::now(), next);
        let again = Instant::now() + Duration::from_secs(30);
        timer.until(again).await;
        assert_eq!(Instant::now(), again);
    }
}
