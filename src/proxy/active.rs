//! Active health checks: one task per backend probes `GET path` at an interval (with jitter)
//! and marks the backend down after `fall` failed probes in a row and up again after `rise`
//! good ones. The task holds only a weak reference to the backend's check state, so it ends
//! by itself once no snapshot refers to the backend any more (removed by a reload).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::balance::rng::with_thread_rng;
use crate::balance::stats::BackendStats;
pub use crate::config::CheckSettings;
use crate::http::response_parser::{parse_response, ResponseLimits, ResponseStatus};

/// Largest probe response head we read.
const PROBE_HEAD_LIMITS: ResponseLimits = ResponseLimits {
    max_head_bytes: 16 * 1024,
    max_headers: 100,
};

/// The verdict of the checks for one backend; up until the checks say otherwise.
#[derive(Debug)]
pub struct ActiveHealth {
    settings: CheckSettings,
    healthy: AtomicBool,
    streak: AtomicU32,
    /// Whether a task is probing for this state already (it survives reloads).
    running: AtomicBool,
}

impl ActiveHealth {
    pub fn new(settings: CheckSettings) -> ActiveHealth {
        ActiveHealth {
            settings,
            healthy: AtomicBool::new(true),
            streak: AtomicU32::new(0),
            running: AtomicBool::new(false),
        }
    }

    pub fn settings(&self) -> &CheckSettings {
        &self.settings
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Count one probe result; `Some(new state)` when it flips the verdict.
    pub fn record(&self, ok: bool) -> Option<bool> {
        let healthy = self.is_healthy();
        if ok == healthy {
            self.streak.store(0, Ordering::Release);
            return None;
        }
        let streak = self.streak.fetch_add(1, Ordering::AcqRel) + 1;
        let needed = if healthy {
            self.settings.fall
        } else {
            self.settings.rise
        };
        if streak >= needed.max(1) {
            self.healthy.store(ok, Ordering::Release);
            self.streak.store(0, Ordering::Release);
            return Some(ok);
        }
        None
    }
}

/// Start probing `address` for `active` unless a task already does (the state survives
/// reloads, and so does its task). Call it on the runtime.
pub fn start(
    active: &Arc<ActiveHealth>,
    stats: &Arc<BackendStats>,
    name: &Arc<str>,
    address: &str,
) {
    if active.running.swap(true, Ordering::AcqRel) {
        return;
    }
    let state = Arc::downgrade(active);
    let stats = Arc::downgrade(stats);
    tokio::spawn(probe_loop(
        state,
        stats,
        Arc::clone(name),
        address.to_string(),
    ));
}

async fn probe_loop(
    state: Weak<ActiveHealth>,
    stats: Weak<BackendStats>,
    name: Arc<str>,
    address: String,
) {
    loop {
        let Some(settings) = state.upgrade().map(|s| s.settings.clone()) else {
            tracing::debug!(backend = %name, "health checks stopped: backend left the config");
            return;
        };
        let jitter = with_thread_rng(|rng| settings.jitter.mul_f64(rng.unit()));
        tokio::time::sleep(settings.interval + jitter).await;
        let result = probe(&address, &settings).await;
        let Some(active) = state.upgrade() else {
            return;
        };
        match active.record(result.is_ok()) {
            Some(false) => tracing::warn!(
                backend = %name,
                %address,
                reason = %result.err().unwrap_or_default(),
                fall = settings.fall,
                "health check failed: backend down"
            ),
            Some(true) => {
                if let Some(stats) = stats.upgrade() {
                    stats.rejoin(Instant::now());
                }
                tracing::info!(backend = %name, %address, rise = settings.rise, "health check passed: backend up");
            }
            None => {}
        }
    }
}

/// One probe: `Ok` when the expected status came back within the timeout.
async fn probe(address: &str, settings: &CheckSettings) -> Result<(), String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: sentinel-health-check\r\n\
             Connection: close\r\n\r\n",
            settings.path
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            match parse_response(&buf, &PROBE_HEAD_LIMITS) {
                Ok(ResponseStatus::Complete(response, _)) => {
                    let status = response.status.as_u16();
                    return if status == settings.expected_status {
                        Ok(())
                    } else {
                        Err(format!("status {status}"))
                    };
                }
                Ok(ResponseStatus::Partial) => {}
                Err(error) => return Err(format!("bad response: {error}")),
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) => return Err("closed before a response".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    };
    match tokio::time::timeout(settings.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err("timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> CheckSettings {
        CheckSettings {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            jitter: Duration::ZERO,
            timeout: Duration::from_secs(1),
            expected_status: 200,
            rise: 2,
            fall: 3,
        }
    }

    #[test]
    fn fall_and_rise_thresholds_flip_the_verdict() {
        let active = ActiveHealth::new(settings());
        assert!(active.is_healthy());
        assert_eq!(active.record(false), None);
        assert_eq!(active.record(false), None);
        assert_eq!(active.record(true), None, "a good probe resets the streak");
        assert_eq!(active.record(false), None);
        assert_eq!(active.record(false), None);
        assert_eq!(active.record(false), Some(false));
        assert!(!active.is_healthy());
        assert_eq!(active.record(true), None);
        assert_eq!(
            active.record(false),
            None,
            "a bad probe resets the rise streak"
        );
        assert_eq!(active.record(true), None);
        assert_eq!(active.record(true), Some(true));
        assert!(active.is_healthy());
    }
}
