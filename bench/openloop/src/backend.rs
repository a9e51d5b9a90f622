//! A single-slot HTTP/1.1 backend: one request is served at a time across all connections
//! (a FIFO semaphore of one permit), each holding the slot for `service_ms × slow_factor`,
//! so overload shows up as queueing latency. Control endpoint on the same port:
//!
//!   POST /_control?slow_factor=20      service time multiplied by 20
//!   POST /_control?fail_ratio=0.5      that share of requests answered 500 at once,
//!                                      without taking the slot
//!   POST /_control?reset_ratio=0.5     that share of requests get the connection reset
//!                                      (RST, no response byte), without taking the slot
//!   POST /_control?reset=1             slow_factor=1, fail_ratio=0, reset_ratio=0,
//!                                      counters zeroed
//!   GET  /_stats                       counters as JSON (`received` counts every request
//!                                      other than these two, whatever became of it)
//!
//! Which requests fail (or are reset) is `--failures spread` (exactly the ratio, evenly
//! spaced) or `random` (each independently, seeded): at 0.5, `spread` never fails two in a
//! row, which keeps a consecutive-failure counter such as a passive health check's
//! `max_fails` from ever reaching 2.
//!
//! A request still waiting for the slot when its client closes the connection is dropped
//! (counted as `abandoned`), as a server that notices disconnects would do; a request being
//! served always runs its full service time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::http::{json_str, query_pairs, Conn, Head};
use crate::rng::Rng;
use crate::Pattern;

pub struct Args {
    pub port: u16,
    pub host: String,
    pub service_ms: f64,
    pub name: Option<String>,
    pub failures: Pattern,
    pub seed: u64,
}

struct State {
    name: String,
    service: Duration,
    slot: Semaphore,
    /// f64 bits.
    slow_factor: AtomicU64,
    /// f64 bits.
    fail_ratio: AtomicU64,
    /// Deterministic failure spreading (`Pattern::Spread`): every request adds
    /// `fail_ratio`; one whose addition crosses 1 fails. Exactly that share fails, evenly
    /// spaced.
    fail_credit: Mutex<f64>,
    pattern: Pattern,
    /// Draws of `Pattern::Random`.
    rng: Mutex<Rng>,
    received: AtomicU64,
    /// f64 bits.
    reset_ratio: AtomicU64,
    reset_credit: Mutex<f64>,
    resets: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    abandoned: AtomicU64,
    busy_us: AtomicU64,
    waiting: AtomicU64,
    max_waiting: AtomicU64,
}

impl State {
    fn slow_factor(&self) -> f64 {
        f64::from_bits(self.slow_factor.load(Ordering::Relaxed))
    }

    fn fail_ratio(&self) -> f64 {
        f64::from_bits(self.fail_ratio.load(Ordering::Relaxed))
    }

    fn reset_ratio(&self) -> f64 {
        f64::from_bits(self.reset_ratio.load(Ordering::Relaxed))
    }

    fn should_fail(&self) -> bool {
        self.choose(self.fail_ratio(), &self.fail_credit)
    }

    fn should_reset(&self) -> bool {
        self.choose(self.reset_ratio(), &self.reset_credit)
    }

    fn choose(&self, ratio: f64, credit: &Mutex<f64>) -> bool {
        match self.pattern {
            Pattern::Spread => spread(ratio, credit),
            Pattern::Random => {
                ratio > 0.0 && self.rng.lock().unwrap_or_else(|p| p.into_inner()).unit() < ratio
            }
        }
    }

    fn reset(&self) {
        self.slow_factor.store(1f64.to_bits(), Ordering::Relaxed);
        self.fail_ratio.store(0f64.to_bits(), Ordering::Relaxed);
        self.reset_ratio.store(0f64.to_bits(), Ordering::Relaxed);
        *self.fail_credit.lock().unwrap_or_else(|p| p.into_inner()) = 0.0;
        *self.reset_credit.lock().unwrap_or_else(|p| p.into_inner()) = 0.0;
        for counter in [
            &self.received,
            &self.resets,
            &self.ok,
            &self.failed,
            &self.abandoned,
            &self.busy_us,
            &self.max_waiting,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    fn stats_json(&self) -> String {
        format!(
            "{{\"name\":{},\"kind\":\"openloop\",\"service_ms\":{},\"slow_factor\":{},\"fail_ratio\":{},\"reset_ratio\":{},\"failures\":\"{}\",\"received\":{},\"resets\":{},\"ok\":{},\"failed\":{},\"abandoned\":{},\"busy_ms\":{:.1},\"waiting\":{},\"max_waiting\":{}}}\n",
            json_str(&self.name),
            self.service.as_secs_f64() * 1000.0,
            self.slow_factor(),
            self.fail_ratio(),
            self.reset_ratio(),
            match self.pattern {
                Pattern::Spread => "spread",
                Pattern::Random => "random",
            },
            self.received.load(Ordering::Relaxed),
            self.resets.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.abandoned.load(Ordering::Relaxed),
            self.busy_us.load(Ordering::Relaxed) as f64 / 1000.0,
            self.waiting.load(Ordering::Relaxed),
            self.max_waiting.load(Ordering::Relaxed),
        )
    }
}

pub async fn run(args: Args) -> std::io::Result<()> {
    let Args {
        port,
        host,
        service_ms,
        name,
        failures,
        seed,
    } = args;
    let listener = TcpListener::bind((host.as_str(), port)).await?;
    let local = listener.local_addr()?;
    let state = Arc::new(State {
        name: name.unwrap_or_else(|| format!(":{}", local.port())),
        service: Duration::from_secs_f64(service_ms.max(0.0) / 1000.0),
        slot: Semaphore::new(1),
        slow_factor: AtomicU64::new(1f64.to_bits()),
        fail_ratio: AtomicU64::new(0f64.to_bits()),
        fail_credit: Mutex::new(0.0),
        pattern: failures,
        rng: Mutex::new(Rng::new(seed)),
        received: AtomicU64::new(0),
        reset_ratio: AtomicU64::new(0f64.to_bits()),
        reset_credit: Mutex::new(0.0),
        resets: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        abandoned: AtomicU64::new(0),
        busy_us: AtomicU64::new(0),
        waiting: AtomicU64::new(0),
        max_waiting: AtomicU64::new(0),
    });
    eprintln!(
        "openloop backend {} listening on {local}, service {service_ms} ms, one request at a time, failures {failures:?} (seed {seed})",
        state.name
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _ = serve(Conn::new(stream), state).await;
        });
    }
}

async fn serve(mut conn: Conn, state: Arc<State>) -> std::io::Result<()> {
    loop {
        let Some(head) = conn.read_head().await? else {
            return Ok(());
        };
        let mut parts = head.start.split_whitespace();
        let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => {
                (m.to_string(), t.to_string(), v.to_string())
            }
            _ => {
                respond(&mut conn, &state, 400, "bad request\n", false).await?;
                return Ok(());
            }
        };
        if head.is_chunked() {
            // Never sent by the benchmark's clients.
            respond(
                &mut conn,
                &state,
                501,
                "chunked request bodies are not supported\n",
                false,
            )
            .await?;
            return Ok(());
        }
        let keep_alive = keep_alive(&head, &version);
        let length = match head.content_length() {
            Ok(length) => length.unwrap_or(0),
            Err(_) => {
                respond(&mut conn, &state, 400, "bad Content-Length\n", false).await?;
                return Ok(());
            }
        };
        conn.read_exact_body(length).await?;
        let path = target.split('?').next().unwrap_or("");
        match path {
            "/_control" => {
                if method != "POST" && method != "GET" {
                    respond(&mut conn, &state, 405, "use POST\n", keep_alive).await?;
                } else {
                    match control(&state, &target) {
                        Ok(()) => {
                            let body = state.stats_json();
                            eprintln!(
                                "openloop backend {}: control {target} -> {}",
                                state.name,
                                body.trim_end()
                            );
                            respond(&mut conn, &state, 200, &body, keep_alive).await?;
                        }
                        Err(e) => {
                            respond(&mut conn, &state, 400, &format!("{e}\n"), keep_alive).await?
                        }
                    }
                }
            }
            "/_stats" => {
                let body = state.stats_json();
                respond(&mut conn, &state, 200, &body, keep_alive).await?;
            }
            _ => {
                state.received.fetch_add(1, Ordering::Relaxed);
                if state.should_reset() {
                    state.resets.fetch_add(1, Ordering::Relaxed);
                    // Linger 0: closing sends RST, the harshest way to fail a request.
                    let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
                    return Ok(());
                }
                if state.should_fail() {
                    state.failed.fetch_add(1, Ordering::Relaxed);
                    respond(&mut conn, &state, 500, "injected failure\n", keep_alive).await?;
                } else {
                    if !take_slot_and_serve(&mut conn, &state).await? {
                        state.abandoned.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    state.ok.fetch_add(1, Ordering::Relaxed);
                    respond(&mut conn, &state, 200, "ok\n", keep_alive).await?;
                }
            }
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Wait for the slot (watching the connection meanwhile), then hold it for the service
/// time. `Ok(false)`: the client went away while the request waited.
async fn take_slot_and_serve(conn: &mut Conn, state: &State) -> std::io::Result<bool> {
    let waiting = state.waiting.fetch_add(1, Ordering::Relaxed) + 1;
    state.max_waiting.fetch_max(waiting, Ordering::Relaxed);
    let permit = loop {
        tokio::select! {
            biased;
            permit = state.slot.acquire() => break permit.expect("the slot semaphore is never closed"),
            read = conn.fill() => match read {
                // Bytes of a pipelined next request stay buffered; keep waiting.
                Ok(n) if n > 0 => continue,
                _ => {
                    state.waiting.fetch_sub(1, Ordering::Relaxed);
                    return Ok(false);
                }
            },
        }
    };
    state.waiting.fetch_sub(1, Ordering::Relaxed);
    let service = state.service.mul_f64(state.slow_factor().max(0.0));
    let started = Instant::now();
    // tokio's timer rounds up to whole milliseconds (a 5 ms sleep takes ~6 ms); a sleeping
    // thread of the blocking pool is precise to ~0.1 ms. The slot makes this one thread at
    // a time.
    if !service.is_zero() {
        tokio::task::spawn_blocking(move || std::thread::sleep(service))
            .await
            .expect("a sleep does not panic");
    }
    state
        .busy_us
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    drop(permit);
    Ok(true)
}

fn control(state: &State, target: &str) -> Result<(), String> {
    let pairs = query_pairs(target);
    if pairs.is_empty() {
        return Err("expected ?slow_factor=F, ?fail_ratio=R, ?reset_ratio=R or ?reset=1".into());
    }
    for (key, value) in pairs {
        match key.as_str() {
            "reset" => state.reset(),
            "slow_factor" => {
                let f: f64 = value
                    .parse()
                    .map_err(|_| format!("bad slow_factor {value}"))?;
                if !(f.is_finite() && f >= 0.0) {
                    return Err(format!("bad slow_factor {value}"));
                }
                state.slow_factor.store(f.to_bits(), Ordering::Relaxed);
            }
            "reset_ratio" => {
                let r: f64 = value
                    .parse()
                    .map_err(|_| format!("bad reset_ratio {value}"))?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(format!("reset_ratio must be within 0..1, got {value}"));
                }
                state.reset_ratio.store(r.to_bits(), Ordering::Relaxed);
            }
            "fail_ratio" => {
                let r: f64 = value
                    .parse()
                    .map_err(|_| format!("bad fail_ratio {value}"))?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(format!("fail_ratio must be within 0..1, got {value}"));
                }
                state.fail_ratio.store(r.to_bits(), Ordering::Relaxed);
            }
            other => return Err(format!("unknown control {other}")),
        }
    }
    Ok(())
}

/// Deterministic spreading: every request adds `ratio` to `credit`; one whose addition
/// crosses 1 is chosen. Exactly that share is chosen, evenly spaced.
fn spread(ratio: f64, credit: &Mutex<f64>) -> bool {
    if ratio <= 0.0 {
        return false;
    }
    let mut credit = credit.lock().unwrap_or_else(|p| p.into_inner());
    *credit += ratio.min(1.0);
    if *credit >= 1.0 {
        *credit -= 1.0;
        true
    } else {
        false
    }
}

fn keep_alive(head: &Head, version: &str) -> bool {
    if version == "HTTP/1.0" {
        head.connection_has("keep-alive")
    } else {
        !head.connection_has("close")
    }
}

async fn respond(
    conn: &mut Conn,
    state: &State,
    status: u16,
    body: &str,
    keep_alive: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "Unknown",
    };
    let content_type = if body.starts_with('{') {
        "application/json"
    } else {
        "text/plain"
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nX-Backend: {}\r\n{}\r\n{body}",
        body.len(),
        state.name,
        if keep_alive { "" } else { "Connection: close\r\n" },
    );
    conn.write_all(response.as_bytes()).await
}
