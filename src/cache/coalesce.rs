//! Request coalescing: of concurrent misses for one key, the first goes upstream (the
//! leader) and the others wait for it, bounded, then look again. The leader's turn ends when
//! its guard drops, whatever happened (stored, not cacheable, failed, cancelled), so a
//! follower never waits on a leader that is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::key::PrimaryKey;

/// The misses in flight, one per key.
#[derive(Debug, Default)]
pub struct Coalescer {
    in_flight: Mutex<HashMap<PrimaryKey, watch::Receiver<()>>>,
}

/// A miss's turn.
#[derive(Debug)]
pub enum Turn {
    /// Go upstream; the followers wait until this guard drops.
    Leader(LeaderGuard),
    /// Another request is fetching this key: `wait`, then look in the store again.
    Follower(Follower),
}

#[derive(Debug)]
pub struct LeaderGuard {
    coalescer: Arc<Coalescer>,
    key: PrimaryKey,
    /// Dropped with the guard: that is the followers' signal.
    _done: watch::Sender<()>,
}

#[derive(Debug)]
pub struct Follower {
    done: watch::Receiver<()>,
}

impl Coalescer {
    /// Lead the fetch of `key`, or follow the one in flight.
    pub fn join(self: &Arc<Self>, key: &PrimaryKey) -> Turn {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(done) = in_flight.get(key) {
            return Turn::Follower(Follower { done: done.clone() });
        }
        let (sender, receiver) = watch::channel(());
        in_flight.insert(key.clone(), receiver);
        Turn::Leader(LeaderGuard {
            coalescer: Arc::clone(self),
            key: key.clone(),
            _done: sender,
        })
    }

    /// Keys being fetched now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        self.coalescer
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl Follower {
    /// Wait for the leader's turn to end, at most `limit`. Returns whether it ended; after
    /// the limit the follower goes upstream itself, so a slow origin delays it only that long.
    pub async fn wait(mut self, limit: Duration) -> bool {
        // `changed` fails once the sender is gone, which is the only signal the leader gives.
        tokio::time::timeout(limit, self.done.changed())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_leader_per_key_and_followers_wake_when_it_is_done() {
        let coalescer = Arc::new(Coalescer::default());
        let key = PrimaryKey::new("h", "/hot");
        let Turn::Leader(leader) = coalescer.join(&key) else {
            panic!("the first miss leads");
        };
        let followers: Vec<_> = (0..3)
            .map(|_| match coalescer.join(&key) {
                Turn::Follower(f) => tokio::spawn(f.wait(Duration::from_secs(5))),
                Turn::Leader(_) => panic!("a second leader for one key"),
            })
            .collect();
        assert!(matches!(
            coalescer.join(&PrimaryKey::new("h", "/other")),
            Turn::Leader(_)
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(leader);
        for follower in followers {
            assert!(
                follower.await.unwrap(),
                "woken by the leader, not the limit"
            );
        }
        assert_eq!(coalescer.in_flight(), 0);
        assert!(matches!(coalescer.join(&key), Turn::Leader(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_stops_waiting_at_its_limit() {
        let coalescer = Arc::new(Coalescer::default());
        let key = PrimaryKey::new("h", "/slow");
        let _leader = coalescer.join(&key);
        let Turn::Follower(follower) = coalescer.join(&key) else {
            panic!("expected a follower");
        };
        assert!(!follower.wait(Duration::from_millis(100)).await);
    }
}
