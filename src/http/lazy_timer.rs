//! A connection's keep-alive and header deadline on one timer that is re-armed lazily, as
//! nginx re-arms its timers: a deadline that moved later by less than `SLACK` leaves the timer
//! where it is, and a timer that fires before the deadline it now stands for is re-armed for
//! the rest. Arming a tokio timer afresh for every request (register, then deregister when the
//! request arrives first) cost ~550 instructions per keep-alive request (callgrind); on a busy
//! connection this timer is touched about once per `SLACK` instead.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How far the armed timer may sit before the deadline it stands for.
const SLACK: Duration = Duration::from_millis(500);

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
        let armed = sleep.deadline();
        if armed > deadline || deadline.duration_since(armed) > SLACK {
            sleep.as_mut().reset(deadline);
        }
        loop {
            ready!(sleep.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            // Fired for an earlier deadline, within the slack: wait out the rest.
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
        // A later deadline within the slack keeps the timer where it is...
        let later = first + SLACK / 2;
        assert!(poll_once(timer.until(later)).is_pending());
        assert_eq!(timer.armed(), Some(first));
        // ...and waiting on it still ends at the later deadline, not at the armed one.
        timer.until(later).await;
        assert_eq!(Instant::now(), later);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_beyond_the_slack_or_sooner_re_arms() {
        let mut timer = LazyTimer::default();
        let start = Instant::now();
        assert!(poll_once(timer.until(start + Duration::from_secs(5))).is_pending());
        let far = start + Duration::from_secs(5) + 2 * SLACK;
        assert!(poll_once(timer.until(far)).is_pending());
        assert_eq!(timer.armed(), Some(far));
        let sooner = start + Duration::from_secs(1);
        timer.until(sooner).await;
        assert_eq!(Instant::now(), sooner);
    }

    #[tokio::test(start_paused = true)]
    async fn it_can_wait_again_after_firing() {
        let mut timer = LazyTimer::default();
        let start = Instant::now();
        timer.until(start + Duration::from_secs(1)).await;
        // An elapsed timer within the slack of the next deadline: still waits it out.
        let next = Instant::now() + SLACK / 4;
        timer.until(next).await;
        assert_eq!(Instant::now(), next);
        let again = Instant::now() + Duration::from_secs(30);
        timer.until(again).await;
        assert_eq!(Instant::now(), again);
    }
}
