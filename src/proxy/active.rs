//! Active health checks: one task per backend probes `GET path` at an interval (with jitter)
//! and marks the backend down after `fall` failed probes in a row and up again after `rise`
//! good ones. The task holds only a weak reference to the backend's check state, so it ends
//! by itself once no snapshot refers to the backend any more (removed by a reload). A TLS
//! backend is probed over TLS, its certificate verified as for requests: a backend whose
//! certificate is refused cannot serve, so it is down.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stream::{self, ConnectError};
use super::tls::TlsTarget;
use crate::balance::rng::with_thread_rng;
use crate::balance::stats::BackendStats;
pub use crate::config::CheckSettings;
use crate::http::error::{ParseError, RequestHeadError};
use crate::http::request::Method;
use crate::http::response_parser::{parse_response, ResponseLimits, ResponseStatus};
use crate::http::writer::encode_originated_request_head;

/// Largest probe response head we read.
const PROBE_HEAD_LIMITS: ResponseLimits = ResponseLimits {
    max_head_bytes: 16 * 1024,
    max_headers: 100,
};

/// Why one probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect: {0}")]
    Connect(ConnectError),
    #[error("cannot write the probe request: {0}")]
    Request(RequestHeadError),
    #[error("send: {0}")]
    Send(io::Error),
    #[error("read: {0}")]
    Read(io::Error),
    #[error("closed before a response")]
    ClosedBeforeResponse,
    #[error("bad response: {0}")]
    BadResponse(ParseError),
    #[error("status {got}, expected {want}")]
    UnexpectedStatus { got: u16, want: u16 },
    #[error("timed out")]
    TimedOut,
}

/// The verdict of the checks for one backend; up until the checks say otherwise. One task
/// writes it (see `running`); the balancer and the admin report read it.
#[derive(Debug)]
pub struct ActiveHealth {
    settings: CheckSettings,
    healthy: AtomicBool,
    /// Probes in a row that passed, and that failed; one of the two is always 0.
    successes_in_a_row: AtomicU32,
    failures_in_a_row: AtomicU32,
    /// Why the last failed probe failed (kept after later successes), for operators.
    last_error: Mutex<Option<String>>,
    /// Whether a task is probing for this state already (it survives reloads).
    running: AtomicBool,
}

/// What the admin report shows of a backend's active checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSnapshot {
    pub healthy: bool,
    pub successes_in_a_row: u32,
    pub failures_in_a_row: u32,
    pub last_error: Option<String>,
    pub rise: u32,
    pub fall: u32,
}

impl ActiveHealth {
    pub fn new(settings: CheckSettings) -> ActiveHealth {
        ActiveHealth {
            settings,
            healthy: AtomicBool::new(true),
            successes_in_a_row: AtomicU32::new(0),
            failures_in_a_row: AtomicU32::new(0),
            last_error: Mutex::new(None),
            running: AtomicBool::new(false),
        }
    }

    pub fn settings(&self) -> &CheckSettings {
        &self.settings
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> ActiveSnapshot {
        ActiveSnapshot {
            healthy: self.is_healthy(),
            successes_in_a_row: self.successes_in_a_row.load(Ordering::Acquire),
            failures_in_a_row: self.failures_in_a_row.load(Ordering::Acquire),
            last_error: self.last_error().clone(),
            rise: self.settings.rise,
            fall: self.settings.fall,
        }
    }

    fn last_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A plain value, valid after any panic elsewhere: keep using it.
        self.last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Count one probe's outcome; `Some(new state)` when it flips the verdict.
    pub fn record_probe(&self, outcome: &Result<(), ProbeError>) -> Option<bool> {
        if let Err(error) = outcome {
            *self.last_error() = Some(error.to_string());
        }
        self.record(outcome.is_ok())
    }

    /// Count one probe result; `Some(new state)` when it flips the verdict.
    pub fn record(&self, ok: bool) -> Option<bool> {
        let (same, other) = if ok {
            (&self.successes_in_a_row, &self.failures_in_a_row)
        } else {
            (&self.failures_in_a_row, &self.successes_in_a_row)
        };
        other.store(0, Ordering::Release);
        let streak = same.load(Ordering::Acquire).saturating_add(1);
        same.store(streak, Ordering::Release);
        let healthy = self.is_healthy();
        if ok == healthy {
            return None;
        }
        let needed = if healthy {
            self.settings.fall
        } else {
            self.settings.rise
        };
        if streak >= needed.max(1) {
            self.healthy.store(ok, Ordering::Release);
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
    tls: Option<&TlsTarget>,
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
        tls.cloned(),
    ));
}

async fn probe_loop(
    state: Weak<ActiveHealth>,
    stats: Weak<BackendStats>,
    name: Arc<str>,
    address: String,
    tls: Option<TlsTarget>,
) {
    loop {
        let Some(settings) = state.upgrade().map(|s| s.settings.clone()) else {
            tracing::debug!(backend = %name, "health checks stopped: backend left the config");
            return;
        };
        let jitter = with_thread_rng(|rng| settings.jitter.mul_f64(rng.unit()));
        tokio::time::sleep(settings.interval + jitter).await;
        let outcome = probe(&address, tls.as_ref(), &settings).await;
        let Some(active) = state.upgrade() else {
            return;
        };
        match (active.record_probe(&outcome), outcome) {
            (Some(false), Err(error)) => tracing::warn!(
                backend = %name,
                %address,
                reason = %error,
                fall = settings.fall,
                "health check failed: backend down"
            ),
            (Some(true), _) => {
                if let Some(stats) = stats.upgrade() {
                    stats.rejoin(Instant::now());
                }
                tracing::info!(backend = %name, %address, rise = settings.rise, "health check passed: backend up");
            }
            // A probe that flips the verdict to down has failed: nothing else to log.
            (Some(false), Ok(())) | (None, _) => {}
        }
    }
}

/// One probe: `Ok` when the expected status came back within the timeout (which covers the
/// TLS handshake too).
async fn probe(
    address: &str,
    tls: Option<&TlsTarget>,
    settings: &CheckSettings,
) -> Result<(), ProbeError> {
    let mut request = BytesMut::with_capacity(256);
    encode_originated_request_head(
        &mut request,
        Method::Get,
        &settings.path,
        &[
            ("Host", address.to_string().into()),
            ("User-Agent", "sentinel-health-check".into()),
        ],
    )
    .map_err(ProbeError::Request)?;
    let attempt = async {
        let mut stream = stream::connect(address, address.parse().ok(), tls)
            .await
            .map_err(ProbeError::Connect)?;
        stream.write_all(&request).await.map_err(ProbeError::Send)?;
        // Over TLS the request may still sit in rustls after the write.
        stream.flush().await.map_err(ProbeError::Send)?;
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            match parse_response(&buf, &PROBE_HEAD_LIMITS) {
                Ok(ResponseStatus::Complete(response, _)) => {
                    let got = response.status.as_u16();
                    let want = settings.expected_status;
                    return if got == want {
                        Ok(())
                    } else {
                        Err(ProbeError::UnexpectedStatus { got, want })
                    };
                }
                Ok(ResponseStatus::Partial) => {}
                Err(error) => return Err(ProbeError::BadResponse(error)),
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) => return Err(ProbeError::ClosedBeforeResponse),
                Ok(_) => {}
                Err(error) => return Err(ProbeError::Read(error)),
            }
        }
    };
    match tokio::time::timeout(settings.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::TimedOut),
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

    #[test]
    fn the_snapshot_counts_the_current_run_and_keeps_the_last_error() {
        let active = ActiveHealth::new(settings());
        let refused = || {
            Err(ProbeError::Connect(ConnectError::Tcp(
                io::ErrorKind::ConnectionRefused.into(),
            )))
        };
        assert_eq!(active.record_probe(&refused()), None);
        assert_eq!(active.record_probe(&refused()), None);
        assert_eq!(active.record_probe(&refused()), Some(false));
        let down = active.snapshot();
        assert!(!down.healthy);
        assert_eq!((down.failures_in_a_row, down.successes_in_a_row), (3, 0));
        assert!(
            down.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("connect:")),
            "{down:?}"
        );
        assert_eq!(active.record_probe(&Ok(())), None);
        let recovering = active.snapshot();
        assert_eq!(
            (recovering.failures_in_a_row, recovering.successes_in_a_row),
            (0, 1)
        );
        assert_eq!(recovering.last_error, down.last_error, "kept for operators");
    }

    /// A one-connection server on loopback that answers the probe with `reply` (or closes
    /// without a word when it is empty, or says nothing when `None`).
    async fn probe_against(reply: Option<&'static [u8]>) -> Result<(), ProbeError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the probe closed early");
                request.extend_from_slice(&buf[..n]);
            }
            match reply {
                Some(bytes) => stream.write_all(bytes).await.unwrap(),
                None => tokio::time::sleep(Duration::from_secs(5)).await,
            }
            String::from_utf8(request).unwrap()
        });
        let settings = CheckSettings {
            timeout: Duration::from_millis(300),
            ..settings()
        };
        let outcome = probe(&address, None, &settings).await;
        if reply.is_some() {
            let request = server.await.unwrap();
            assert_eq!(
                request,
                format!(
                    "GET /health HTTP/1.1\r\nHost: {address}\r\n\
                     User-Agent: sentinel-health-check\r\nConnection: close\r\n\r\n"
                )
            );
        }
        outcome
    }

    #[tokio::test]
    async fn each_way_a_probe_fails_has_its_own_error() {
        assert!(
            probe_against(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
                .await
                .is_ok()
        );
        assert!(matches!(
            probe_against(Some(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")).await,
            Err(ProbeError::UnexpectedStatus {
                got: 503,
                want: 200
            })
        ));
        assert!(matches!(
            probe_against(Some(b"")).await,
            Err(ProbeError::ClosedBeforeResponse)
        ));
        assert!(matches!(
            probe_against(Some(b"HTTP/1.1 200 OK\nbare line feed\r\n\r\n")).await,
            Err(ProbeError::BadResponse(_))
        ));
        assert!(matches!(
            probe_against(None).await,
            Err(ProbeError::TimedOut)
        ));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = closed.local_addr().unwrap().to_string();
        drop(closed);
        assert!(matches!(
            probe(&address, None, &settings()).await,
            Err(ProbeError::Connect(_))
        ));
    }
}
