//! Upstream groups and their backends: the runtime state the proxy keeps per backend (idle
//! connections, passive health) and round-robin selection over the available ones.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::health::{HealthSettings, PassiveHealth, Transition};
use super::pool::Pool;

/// Settings shared by every backend of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendSettings {
    pub max_idle: usize,
    pub idle_timeout: Duration,
    pub health: HealthSettings,
}

#[derive(Debug)]
pub struct Backend {
    /// Shared so each request's access-log entry can hold it without a copy.
    pub name: Arc<str>,
    /// `host:port` as configured.
    pub address: String,
    /// The address when it is an IP literal, so the common case skips the resolver.
    literal: Option<SocketAddr>,
    pub settings: BackendSettings,
    /// Runtime state, shared with the same backend in the next config after a reload.
    pub pool: Arc<Pool>,
    pub health: Arc<PassiveHealth>,
}

impl Backend {
    pub fn new(name: String, address: String, settings: BackendSettings) -> Backend {
        Backend {
            literal: address.parse().ok(),
            name: name.into(),
            address,
            settings,
            pool: Arc::new(Pool::new(settings.max_idle, settings.idle_timeout)),
            health: Arc::new(PassiveHealth::new(settings.health)),
        }
    }

    /// This backend as the next config defines it, keeping `previous`'s idle connections
    /// and health record when they describe the same place under the same settings.
    pub fn carried_over(
        name: String,
        address: String,
        settings: BackendSettings,
        previous: &Backend,
    ) -> Backend {
        let mut backend = Backend::new(name, address, settings);
        if previous.address == backend.address && previous.settings == settings {
            backend.pool = Arc::clone(&previous.pool);
            backend.health = Arc::clone(&previous.health);
        }
        backend
    }

    /// Whether this backend shares its runtime state with `other`.
    pub fn shares_state_with(&self, other: &Backend) -> bool {
        Arc::ptr_eq(&self.health, &other.health)
    }

    /// A new connection, within `wait` (resolution included).
    pub async fn connect(&self, wait: Duration) -> io::Result<TcpStream> {
        let attempt = async {
            let stream = match self.literal {
                Some(addr) => TcpStream::connect(addr).await?,
                None => TcpStream::connect(self.address.as_str()).await?,
            };
            stream.set_nodelay(true)?;
            Ok(stream)
        };
        match tokio::time::timeout(wait, attempt).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }

    pub fn record_success(&self) {
        if let Some(Transition::Recovered) = self.health.record_success() {
            tracing::info!(backend = %self.name, address = %self.address, "backend recovered");
        }
    }

    pub fn record_failure(&self, reason: &str) {
        if let Some(Transition::Ejected {
            duration,
            ejections,
        }) = self.health.record_failure(Instant::now())
        {
            tracing::warn!(
                backend = %self.name,
                address = %self.address,
                reason,
                ejected_for_ms = duration.as_millis() as u64,
                ejections,
                "backend ejected"
            );
        }
    }
}

/// A named pool of backends.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub backends: Vec<Arc<Backend>>,
    cursor: AtomicUsize,
}

impl Upstream {
    pub fn new(name: String, backends: Vec<Arc<Backend>>) -> Upstream {
        Upstream {
            name,
            backends,
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next backend in round-robin order that is available and not in `tried`. When
    /// every untried backend is ejected, the pool fails open and picks one of those anyway:
    /// a guess beats a certain 502, and it finds a recovered backend at once.
    pub fn pick(&self, now: Instant, tried: &[usize]) -> Option<usize> {
        let count = self.backends.len();
        if count == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % count;
        let candidates = (0..count)
            .map(|step| (start + step) % count)
            .filter(|index| !tried.contains(index));
        let mut fallback = None;
        for index in candidates {
            if self.backends[index].health.is_available(now) {
                return Some(index);
            }
            fallback.get_or_insert(index);
        }
        fallback
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(count: usize) -> Upstream {
        let settings = BackendSettings {
            max_idle: 1,
            idle_timeout: Duration::from_secs(1),
            health: HealthSettings {
                max_fails: 1,
                fail_timeout: Duration::from_secs(10),
                max_fail_timeout: Duration::from_secs(10),
            },
        };
        let backends = (0..count)
            .map(|i| {
                Arc::new(Backend::new(
                    format!("b{i}"),
                    format!("127.0.0.1:{}", 1000 + i),
                    settings,
                ))
            })
            .collect();
        Upstream::new("test".into(), backends)
    }

    #[test]
    fn round_robin_gives_each_backend_an_equal_share() {
        let upstream = upstream(3);
        let now = Instant::now();
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[upstream.pick(now, &[]).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn ejected_and_tried_backends_are_skipped_until_none_is_left() {
        let upstream = upstream(3);
        let now = Instant::now();
        upstream.backends[1].health.record_failure(now);
        for _ in 0..30 {
            let pick = upstream.pick(now, &[]).unwrap();
            assert_ne!(pick, 1);
            assert_ne!(upstream.pick(now, &[pick]).unwrap(), pick);
        }
        // Only the ejected one is untried: fail open to it rather than give up.
        assert_eq!(upstream.pick(now, &[0, 2]), Some(1));
        assert_eq!(upstream.pick(now, &[0, 1, 2]), None);
    }
}
