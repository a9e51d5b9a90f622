//! The shared store: one GCRA decision per request made inside Redis by one Lua script
//! (`EVALSHA`, `EVAL` when Redis does not have it yet), on Redis's clock, so every instance
//! enforces one limit per key whatever its own clock says. Keys expire when their TAT
//! passes, so Redis holds only clients that are ahead of their rate.
//!
//! Redis must never stall a request: each decision has a deadline (`redis_timeout_ms`),
//! after which the caller decides locally. Three failures in a row and the store stops
//! asking (fail open to the local limiter, one warning); a supervisor thread reconnects and
//! probes with backoff and turns it back on when Redis answers (one info line).

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisResult, ServerErrorKind};

use crate::config::RedisSettings;
use crate::limits::{
    REDIS_FAILURES_TO_FALL_BACK, REDIS_MAX_BACKOFF, REDIS_MIN_BACKOFF, REDIS_PROBE_TIMEOUT,
};

/// GCRA in microseconds (Lua numbers are doubles: exact below 2^53 µs, about 285 years
/// after 1970). The same arithmetic as `gcra.rs`. `%.0f` writes the TAT as a whole
/// number: Lua's own number-to-string conversion keeps 14 digits and would round it.
const SCRIPT: &str = r"
local period = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local backlog = tat - now
if backlog > tolerance then
  return {0, 0, backlog, backlog - tolerance}
end
local after = backlog + period
redis.call('SET', KEYS[1], string.format('%.0f', now + after), 'PX', math.ceil(after / 1000))
return {1, math.floor((tolerance - backlog) / period), after, 0}
";

/// Where the store stands with Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RedisState {
    /// Not connected yet: decisions are local.
    Connecting = 0,
    /// Decisions are Redis's.
    Shared = 1,
    /// Redis failed: decisions are local until a probe answers.
    FailedOpen = 2,
}

impl RedisState {
    fn from_u8(value: u8) -> RedisState {
        match value {
            1 => RedisState::Shared,
            2 => RedisState::FailedOpen,
            _ => RedisState::Connecting,
        }
    }
}

/// Redis's answer, in nanoseconds like the local one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedOutcome {
    pub allowed: bool,
    pub remaining: u64,
    pub reset_after: u64,
    pub retry_after: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    #[error("rate_limit.redis_url is not usable")]
    Url(#[source] redis::RedisError),
    #[error("cannot start the thread that talks to Redis")]
    Thread(#[source] std::io::Error),
}

/// A handle on the shared store; clones share one connection.
#[derive(Debug, Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: RedisSettings,
    /// Set once by the supervisor when the first connection is up; it reconnects itself.
    manager: OnceLock<ConnectionManager>,
    state: AtomicU8,
    /// Decisions that failed in a row.
    failures: AtomicU32,
    hash: String,
    /// Where the logs say Redis is: the URL without its credentials.
    location: String,
}

impl RedisStore {
    /// Start talking to Redis at `settings.url` on a thread of its own. Returns at once;
    /// until the connection is up, decisions are local.
    pub fn start(settings: &RedisSettings) -> Result<RedisStore, RedisStoreError> {
        let client = redis::Client::open(settings.url.as_str()).map_err(RedisStoreError::Url)?;
        let shared = Arc::new(Shared {
            settings: settings.clone(),
            manager: OnceLock::new(),
            state: AtomicU8::new(RedisState::Connecting as u8),
            failures: AtomicU32::new(0),
            hash: redis::Script::new(SCRIPT).get_hash().to_string(),
            location: without_credentials(&settings.url),
        });
        let weak = Arc::downgrade(&shared);
        let span = tracing::info_span!("ratelimit_redis", redis = %shared.location);
        // A thread with a runtime of its own: the connection's tasks and reconnects then
        // live as long as the store, whichever worker runtime asks, and the store can be
        // built before any runtime exists (at startup).
        std::thread::Builder::new()
            .name("sentinel-ratelimit-redis".into())
            .spawn(move || {
                let _entered = span.enter();
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(supervise(weak, client)),
                    Err(error) => {
                        tracing::error!(%error, "cannot start the Redis runtime; rate limits stay local");
                    }
                }
            })
            .map_err(RedisStoreError::Thread)?;
        Ok(RedisStore { shared })
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.shared.settings
    }

    pub fn state(&self) -> RedisState {
        RedisState::from_u8(self.shared.state.load(Ordering::Relaxed))
    }

    /// Redis's decision for `key`, or `None` when the caller must decide locally (Redis
    /// off, failed, or late past the deadline).
    pub async fn decide(
        &self,
        key: &[u8],
        period_us: u64,
        tolerance_us: u64,
    ) -> Option<SharedOutcome> {
        if self.state() != RedisState::Shared {
            return None;
        }
        let mut connection = self.shared.manager.get()?.clone();
        let decision = tokio::time::timeout(
            self.shared.settings.timeout,
            run_script(
                &mut connection,
                &self.shared.hash,
                key,
                period_us,
                tolerance_us,
            ),
        )
        .await;
        match decision {
            Ok(Ok((allowed, remaining, reset_after, retry_after))) => {
                self.shared.failures.store(0, Ordering::Relaxed);
                let nanos = |micros: i64| u64::try_from(micros).unwrap_or(0).saturating_mul(1000);
                Some(SharedOutcome {
                    allowed: allowed == 1,
                    remaining: u64::try_from(remaining).unwrap_or(0),
                    reset_after: nanos(reset_after),
                    retry_after: nanos(retry_after),
                })
            }
            Ok(Err(error)) => {
                self.shared.failed(&error.to_string());
                None
            }
            Err(_) => {
                self.shared
                    .failed("no answer within rate_limit.redis_timeout_ms");
                None
            }
        }
    }
}

impl Shared {
    fn failed(&self, reason: &str) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= REDIS_FAILURES_TO_FALL_BACK {
            self.enter(RedisState::FailedOpen, reason);
        }
    }

    /// Move to `state`, logging once per change, never per request.
    fn enter(&self, state: RedisState, reason: &str) {
        let previous = RedisState::from_u8(self.state.swap(state as u8, Ordering::Relaxed));
        if previous == state {
            return;
        }
        match state {
            RedisState::Shared => {
                self.failures.store(0, Ordering::Relaxed);
                tracing::info!(
                    redis = %self.location,
                    "rate limits shared on Redis"
                );
            }
            RedisState::FailedOpen => tracing::warn!(
                redis = %self.location,
                reason,
                "Redis unreachable: each instance applies the rate limits on its own \
                 (N instances may admit up to N times the limit) until it answers"
            ),
            RedisState::Connecting => {}
        }
    }
}

async fn run_script(
    connection: &mut ConnectionManager,
    hash: &str,
    key: &[u8],
    period_us: u64,
    tolerance_us: u64,
) -> RedisResult<(i64, i64, i64, i64)> {
    let answer = redis::cmd("EVALSHA")
        .arg(hash)
        .arg(1)
        .arg(key)
        .arg(period_us)
        .arg(tolerance_us)
        .query_async(connection)
        .await;
    match answer {
        // A restarted or flushed Redis has lost the script: EVAL runs it and caches it
        // again, in the same round trip.
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            redis::cmd("EVAL")
                .arg(SCRIPT)
                .arg(1)
                .arg(key)
                .arg(period_us)
                .arg(tolerance_us)
                .query_async(connection)
                .await
        }
        other => other,
    }
}

/// Connect, then keep probing while decisions are failing, with doubling waits; ends when
/// the store is dropped (a reload that changed the Redis settings, or shutdown).
async fn supervise(store: Weak<Shared>, client: redis::Client) {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_PROBE_TIMEOUT))
        .set_response_timeout(Some(REDIS_PROBE_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(REDIS_MIN_BACKOFF)
        .set_max_delay(REDIS_MAX_BACKOFF);
    let mut backoff = REDIS_MIN_BACKOFF;
    loop {
        let Some(shared) = store.upgrade() else {
            return;
        };
        let healthy = match shared.manager.get() {
            None => {
                let connecting = tokio::time::timeout(
                    REDIS_PROBE_TIMEOUT,
                    ConnectionManager::new_with_config(client.clone(), config.clone()),
                )
                .await;
                match connecting {
                    Ok(Ok(manager)) => {
                        let _ = shared.manager.set(manager);
                        shared.enter(RedisState::Shared, "connected");
                        true
                    }
                    Ok(Err(error)) => {
                        shared.enter(RedisState::FailedOpen, &error.to_string());
                        false
                    }
                    Err(_) => {
                        shared.enter(RedisState::FailedOpen, "connect timed out");
                        false
                    }
                }
            }
            Some(manager) if shared.state.load(Ordering::Relaxed) != RedisState::Shared as u8 => {
                let mut connection = manager.clone();
                let ping = tokio::time::timeout(
                    REDIS_PROBE_TIMEOUT,
                    redis::cmd("PING").query_async::<String>(&mut connection),
                )
                .await;
                if let Ok(Ok(_)) = ping {
                    shared.enter(RedisState::Shared, "answered a probe");
                    true
                } else {
                    false
                }
            }
            Some(_) => true,
        };
        drop(shared);
        backoff = if healthy {
            REDIS_MIN_BACKOFF
        } else {
            (backoff * 2).min(REDIS_MAX_BACKOFF)
        };
        tokio::time::sleep(backoff).await;
    }
}

/// `redis://user:secret@host:6379/0` → `redis://host:6379/0`: passwords stay out of logs.
fn without_credentials(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) if at > scheme.len() => {
            format!("{scheme}://{}", &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::without_credentials;

    #[test]
    fn credentials_stay_out_of_the_logged_location() {
        assert_eq!(
            without_credentials("redis://u:secret@10.0.0.5:6379/1"),
            "redis://10.0.0.5:6379/1"
        );
        assert_eq!(
            without_credentials("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
