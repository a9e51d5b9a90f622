//! Open-loop load: every request has a due time fixed before the run, whatever happens to
//! earlier requests, and its latency is measured from that due time (not from when it was
//! actually written), so a stalled system is charged for its whole backlog (no coordinated
//! omission). Due times are a seeded Poisson process by default (exponential gaps: the bursts
//! independent clients make, which fill a single-slot backend's queue now and then), or
//! `t0 + i / rate` exactly with `--arrivals fixed` (no two requests ever closer than 1/rate,
//! which hides queueing).
//!
//! With `--backend-stats URL`, each backend's counters are read at every phase start (just
//! after its control URLs are POSTed) and at the end, so per-phase counts of what each backend *received* (including requests it reset
//! or failed, and those a proxy retried elsewhere) can be reported beside the client's view.
//!
//! Requests go over a pool of keep-alive connections; when none is idle a new one is opened,
//! up to `--connections`; a request that finds the cap reached is counted as a `cap` error.
//! Each request has `--timeout` from its due time; one that runs out is a `timeout` error
//! and its connection is closed.
//!
//! Output: JSON lines, one per time window (by due time), one per phase, one total.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::http::{invalid, json_str, split_url, Conn};
use crate::rng::Rng;
use crate::Arrivals;

/// An idle connection older than this is closed instead of reused: well under the
/// keep-alive timeouts of the proxies measured (60 s), so a reused connection is rarely one
/// the server has just closed.
const MAX_IDLE: Duration = Duration::from_secs(20);
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Args {
    pub url: String,
    pub rate: f64,
    pub arrivals: Arrivals,
    pub seed: u64,
    pub backend_stats: Vec<String>,
    pub duration: Option<f64>,
    pub connections: usize,
    pub phase_file: Option<PathBuf>,
    pub timeout: f64,
    pub window_ms: u64,
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct Phase {
    name: String,
    start: Duration,
    length: Duration,
    /// URLs POSTed when the phase starts.
    controls: Vec<String>,
}

/// Phases from a file: one per line, `name seconds [control-url ...]`; `#` starts a comment.
fn read_phases(path: &PathBuf) -> Result<Vec<Phase>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut phases = Vec::new();
    let mut start = Duration::ZERO;
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or("").to_string();
        let seconds: f64 = words
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|s: &f64| s.is_finite() && *s > 0.0)
            .ok_or_else(|| {
                format!(
                    "{}:{}: expected `name seconds [control-url ...]`",
                    path.display(),
                    number + 1
                )
            })?;
        let controls: Vec<String> = words.map(str::to_string).collect();
        for url in &controls {
            split_url(url).map_err(|e| format!("{}:{}: {e}", path.display(), number + 1))?;
        }
        let length = Duration::from_secs_f64(seconds);
        phases.push(Phase {
            name,
            start,
            length,
            controls,
        });
        start += length;
    }
    if phases.is_empty() {
        return Err(format!("{}: no phases", path.display()));
    }
    Ok(phases)
}

#[derive(Debug)]
enum Outcome {
    /// Any complete HTTP response.
    Response {
        status: u16,
        backend: Option<String>,
    },
    Io(String),
    Timeout,
    /// The connection cap was reached: the request was never sent.
    Cap,
}

struct Bucket {
    /// Every request except `cap` ones: responses at their latency, I/O errors at their
    /// time to failure, timeouts at the timeout.
    all: Histogram<u64>,
    /// 2xx responses only.
    ok_hist: Histogram<u64>,
    count: u64,
    ok: u64,
    non2xx: u64,
    io: u64,
    timeout: u64,
    cap: u64,
    statuses: BTreeMap<u16, u64>,
    backends: BTreeMap<String, u64>,
    io_kinds: BTreeMap<String, u64>,
}

impl Bucket {
    fn new() -> Bucket {
        let hist = || {
            Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
        };
        Bucket {
            all: hist(),
            ok_hist: hist(),
            count: 0,
            ok: 0,
            non2xx: 0,
            io: 0,
            timeout: 0,
            cap: 0,
            statuses: BTreeMap::new(),
            backends: BTreeMap::new(),
            io_kinds: BTreeMap::new(),
        }
    }

    fn record(&mut self, outcome: &Outcome, latency_us: u64) {
        self.count += 1;
        match outcome {
            Outcome::Response { status, backend } => {
                self.all.saturating_record(latency_us.max(1));
                *self.statuses.entry(*status).or_default() += 1;
                *self
                    .backends
                    .entry(backend.clone().unwrap_or_else(|| "-".into()))
                    .or_default() += 1;
                if (200..300).contains(status) {
                    self.ok += 1;
                    self.ok_hist.saturating_record(latency_us.max(1));
                } else {
                    self.non2xx += 1;
                }
            }
            Outcome::Io(kind) => {
                self.all.saturating_record(latency_us.max(1));
                self.io += 1;
                *self.io_kinds.entry(kind.clone()).or_default() += 1;
            }
            Outcome::Timeout => {
                self.all.saturating_record(latency_us.max(1));
                self.timeout += 1;
            }
            Outcome::Cap => self.cap += 1,
        }
    }

    fn json_fields(&self) -> String {
        let ms = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                "null".to_string()
            } else {
                format!("{:.3}", h.value_at_quantile(q) as f64 / 1000.0)
            }
        };
        let max = |h: &Histogram<u64>| {
            if h.is_empty() {
                "null".to_string()
            } else {
                format!("{:.3}", h.max() as f64 / 1000.0)
            }
        };
        let map = |m: &BTreeMap<String, u64>| {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{v}", json_str(k)))
                .collect();
            format!("{{{}}}", items.join(","))
        };
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!(
            "\"count\":{},\"ok\":{},\"non2xx\":{},\"io\":{},\"timeout\":{},\"cap\":{},\"errors\":{},\"p50_ms\":{},\"p90_ms\":{},\"p99_ms\":{},\"p999_ms\":{},\"max_ms\":{},\"ok_p50_ms\":{},\"ok_p99_ms\":{},\"ok_max_ms\":{},\"statuses\":{{{}}},\"backends\":{},\"io_kinds\":{}",
            self.count,
            self.ok,
            self.non2xx,
            self.io,
            self.timeout,
            self.cap,
            self.non2xx + self.io + self.timeout + self.cap,
            ms(&self.all, 0.5),
            ms(&self.all, 0.9),
            ms(&self.all, 0.99),
            ms(&self.all, 0.999),
            max(&self.all),
            ms(&self.ok_hist, 0.5),
            ms(&self.ok_hist, 0.99),
            max(&self.ok_hist),
            statuses.join(","),
            map(&self.backends),
            map(&self.io_kinds),
        )
    }
}

struct Recorder {
    window: Duration,
    windows: Vec<Bucket>,
    phases: Vec<Bucket>,
    total: Bucket,
}

struct Pool {
    addr: String,
    idle: Mutex<Vec<(Conn, Instant)>>,
    /// Connections open or being opened.
    open: AtomicUsize,
    cap: usize,
    opened: AtomicU64,
    max_open: AtomicUsize,
    /// Reused idle connections found closed by the server before any response byte; the
    /// request was then sent once more on a new connection.
    stale: AtomicU64,
}

impl Pool {
    /// An idle connection, or permission to open a new one (`Ok(None)`), or `Err` when the
    /// cap is reached.
    fn checkout(&self) -> Result<Option<Conn>, ()> {
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            while let Some((conn, since)) = idle.pop() {
                if since.elapsed() < MAX_IDLE {
                    return Ok(Some(conn));
                }
                drop(conn);
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.reserve().map(|()| None)
    }

    fn reserve(&self) -> Result<(), ()> {
        let mut current = self.open.load(Ordering::Relaxed);
        loop {
            if current >= self.cap {
                return Err(());
            }
            match self.open.compare_exchange(
                current,
                current + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.max_open.fetch_max(current + 1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(now) => current = now,
            }
        }
    }

    fn checkin(&self, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((conn, Instant::now()));
    }

    /// A reserved connection slot is given up (its connection failed or was closed).
    fn release(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    async fn connect(&self) -> io::Result<Conn> {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let stream = TcpStream::connect(self.addr.as_str()).await?;
        stream.set_nodelay(true)?;
        Ok(Conn::new(stream))
    }
}

enum Exchange {
    Done {
        status: u16,
        backend: Option<String>,
        reusable: bool,
    },
    /// The server closed a reused connection before answering.
    Stale,
}

/// One request/response on `conn`.
async fn exchange(conn: &mut Conn, request: &[u8], reused: bool) -> io::Result<Exchange> {
    if let Err(e) = conn.write_all(request).await {
        if reused
            && matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            )
        {
            return Ok(Exchange::Stale);
        }
        return Err(e);
    }
    let head = match conn.read_head().await {
        Ok(Some(head)) => head,
        Ok(None) if reused => return Ok(Exchange::Stale),
        Ok(None) => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ))
        }
        Err(e) if reused && e.kind() == io::ErrorKind::ConnectionReset => {
            return Ok(Exchange::Stale)
        }
        Err(e) => return Err(e),
    };
    let mut parts = head.start.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("bad status line"));
    }
    let mut reusable = version == "HTTP/1.1" && !head.connection_has("close")
        || version == "HTTP/1.0" && head.connection_has("keep-alive");
    let bodyless = status == 204 || status == 304 || (100..200).contains(&status);
    if !bodyless {
        if head.is_chunked() {
            conn.read_chunked_body().await?;
        } else if let Some(length) = head.content_length()? {
            conn.read_exact_body(length).await?;
        } else {
            // Delimited by close.
            while conn.fill().await? > 0 {}
            reusable = false;
        }
    }
    let backend = head.header("x-backend").map(str::to_string);
    Ok(Exchange::Done {
        status,
        backend,
        reusable,
    })
}

/// Sleep this thread until `due` (no-op when it has passed).
fn sleep_until(due: std::time::Instant) {
    let now = std::time::Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

fn io_kind(e: &io::Error, stage: &str) -> String {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused".to_string(),
        io::ErrorKind::ConnectionReset => "reset".to_string(),
        io::ErrorKind::BrokenPipe => "broken pipe".to_string(),
        io::ErrorKind::UnexpectedEof => "closed early".to_string(),
        io::ErrorKind::InvalidData => format!("bad response: {e}"),
        _ => e.to_string(),
    };
    format!("{stage}: {kind}")
}

async fn one_request(pool: Arc<Pool>, request: Arc<Vec<u8>>, deadline: Instant) -> Outcome {
    let mut checked = match pool.checkout() {
        Ok(conn) => conn,
        Err(()) => return Outcome::Cap,
    };
    // At most two tries: one on a reused connection found stale, then one on a new one.
    for _ in 0..2 {
        let reused = checked.is_some();
        let attempt = async {
            let mut conn = match checked.take() {
                Some(conn) => conn,
                None => match pool.connect().await {
                    Ok(conn) => conn,
                    Err(e) => return (None, Err((e, "connect"))),
                },
            };
            let result = exchange(&mut conn, &request, reused).await;
            (Some(conn), result.map_err(|e| (e, "exchange")))
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Err(_) => {
                pool.release();
                return Outcome::Timeout;
            }
            Ok((
                conn,
                Ok(Exchange::Done {
                    status,
                    backend,
                    reusable,
                }),
            )) => {
                match conn {
                    Some(conn) if reusable => pool.checkin(conn),
                    _ => pool.release(),
                }
                return Outcome::Response { status, backend };
            }
            Ok((_, Ok(Exchange::Stale))) => {
                pool.stale.fetch_add(1, Ordering::Relaxed);
                // Same slot, new connection.
                checked = None;
            }
            Ok((_, Err((e, stage)))) => {
                pool.release();
                return Outcome::Io(io_kind(&e, stage));
            }
        }
    }
    pool.release();
    Outcome::Io("exchange: closed early twice".into())
}

/// One request on a connection of its own: the status line and the body, or why not.
async fn request_once(method: &str, url: &str) -> Result<(String, String), String> {
    let (authority, path) = split_url(url)?;
    let attempt = async {
        let stream = TcpStream::connect(authority.as_str()).await?;
        let mut conn = Conn::new(stream);
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes()).await?;
        let head = conn
            .read_head()
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no response"))?;
        let body = match head.content_length()? {
            Some(length) => conn.read_exact_body(length).await?,
            None => Vec::new(),
        };
        io::Result::Ok((
            head.start,
            String::from_utf8_lossy(&body).trim().to_string(),
        ))
    };
    match tokio::time::timeout(CONTROL_TIMEOUT, attempt).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(format!("error: {e}")),
        Err(_) => Err("error: timed out".into()),
    }
}

/// POST a control URL; returns a one-line description of the answer.
async fn control(url: &str) -> String {
    match request_once("POST", url).await {
        Ok((start, body)) => format!("{start} {body}"),
        Err(e) => e,
    }
}

/// GET a backend's stats: its JSON object, or a JSON string saying why not.
async fn backend_stats(url: &str) -> String {
    match request_once("GET", url).await {
        Ok((start, body)) if start.split(' ').nth(1) == Some("200") && body.starts_with('{') => {
            body
        }
        Ok((start, body)) => json_str(&format!("{start} {body}")),
        Err(e) => json_str(&e),
    }
}

/// Everything done at a phase boundary, in order: the phase's control URLs are POSTed first
/// (the switch is what must be on time: a request sent a millisecond later must see the new
/// behaviour), then the backends' counters are read (they close the previous phase; the
/// requests that arrive in between, a millisecond's worth, are counted in it).
async fn phase_boundary(
    stats_urls: Vec<String>,
    controls: Vec<String>,
) -> (Vec<String>, Vec<String>) {
    let mut answers = Vec::with_capacity(controls.len());
    for url in &controls {
        answers.push(control(url).await);
    }
    let mut stats = Vec::with_capacity(stats_urls.len());
    for url in &stats_urls {
        stats.push(backend_stats(url).await);
    }
    (stats, answers)
}

/// Due times (offsets from t0) of every request in `total`.
fn schedule(arrivals: Arrivals, rate: f64, total: Duration, seed: u64) -> Vec<Duration> {
    match arrivals {
        Arrivals::Fixed => {
            let count = (total.as_secs_f64() * rate).floor() as u64;
            (0..count)
                .map(|i| Duration::from_secs_f64(i as f64 / rate))
                .collect()
        }
        Arrivals::Poisson => {
            let mut rng = Rng::new(seed);
            let mut offsets = Vec::with_capacity((total.as_secs_f64() * rate * 1.1) as usize);
            let mut t = rng.exponential(rate);
            while t < total.as_secs_f64() {
                offsets.push(Duration::from_secs_f64(t));
                t += rng.exponential(rate);
            }
            offsets
        }
    }
}

pub async fn run(args: Args) -> Result<(), String> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err("--rate must be > 0".into());
    }
    if args.window_ms == 0 {
        return Err("--window-ms must be > 0".into());
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err("--timeout must be > 0".into());
    }
    let phases = match (&args.phase_file, args.duration) {
        (Some(path), _) => read_phases(path)?,
        (None, Some(d)) if d.is_finite() && d > 0.0 => vec![Phase {
            name: "all".into(),
            start: Duration::ZERO,
            length: Duration::from_secs_f64(d),
            controls: Vec::new(),
        }],
        _ => return Err("give --duration (> 0) or --phase-file".into()),
    };
    let phase_total = phases.iter().map(|p| p.length).sum::<Duration>();
    // --duration with a phase file cuts the run short (or leaves the last phase running).
    let total = match (&args.phase_file, args.duration) {
        (Some(_), Some(d)) if d.is_finite() && d > 0.0 => Duration::from_secs_f64(d),
        _ => phase_total,
    };
    let (authority, path) = split_url(&args.url)?;
    let request = Arc::new(
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: openloop\r\nAccept: */*\r\n\r\n").into_bytes(),
    );
    let window = Duration::from_millis(args.window_ms);
    let windows = (total.as_nanos() / window.as_nanos()) as usize + 1;
    let recorder = Arc::new(Mutex::new(Recorder {
        window,
        windows: (0..windows).map(|_| Bucket::new()).collect(),
        phases: phases.iter().map(|_| Bucket::new()).collect(),
        total: Bucket::new(),
    }));
    let pool = Arc::new(Pool {
        addr: authority.clone(),
        idle: Mutex::new(Vec::new()),
        open: AtomicUsize::new(0),
        cap: args.connections.max(1),
        opened: AtomicU64::new(0),
        max_open: AtomicUsize::new(0),
        stale: AtomicU64::new(0),
    });
    let timeout = Duration::from_secs_f64(args.timeout);
    for url in &args.backend_stats {
        split_url(url)?;
    }
    let offsets = schedule(args.arrivals, args.rate, total, args.seed);
    let count = offsets.len() as u64;
    let arrivals = match args.arrivals {
        Arrivals::Poisson => format!("poisson (seed {})", args.seed),
        Arrivals::Fixed => "fixed".to_string(),
    };
    eprintln!(
        "openloop load: {} req/s ({arrivals}) to {} for {:.1} s ({count} requests), timeout {:.1} s, at most {} connections, phases: {}",
        args.rate,
        args.url,
        total.as_secs_f64(),
        args.timeout,
        pool.cap,
        phases
            .iter()
            .map(|p| format!("{} {:.1}s", p.name, p.length.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The schedule is kept by a thread of its own that sleeps with the OS's precision
    // (~0.1 ms) and hands each request to the runtime when it is due: tokio's timer rounds
    // up to whole milliseconds, which would add up to 1 ms to every latency.
    let runtime = tokio::runtime::Handle::current();
    let (sent, dispatched) = tokio::sync::oneshot::channel();
    let dispatcher = {
        let phases = phases.clone();
        let pool = Arc::clone(&pool);
        let recorder = Arc::clone(&recorder);
        let stats_urls = args.backend_stats.clone();
        std::thread::Builder::new()
            .name("openloop-dispatch".into())
            .spawn(move || {
                let mut tasks = Vec::with_capacity(offsets.len());
                let mut boundaries = Vec::new();
                let t0 = std::time::Instant::now() + Duration::from_millis(100);
                let mut next_phase = 0;
                let mut max_lag = Duration::ZERO;
                let mut phase_of = 0usize;
                // Start every phase that begins at or before the next request (all of them
                // after the last one): its boundary work runs at the phase's own start time,
                // not at the request's.
                let mut start_phases_until = |offset: Duration, phase_of: &mut usize| {
                    while next_phase < phases.len() && phases[next_phase].start <= offset {
                        let phase = &phases[next_phase];
                        sleep_until(t0 + phase.start);
                        eprintln!(
                            "openloop load: t={:.1}s phase {}",
                            phase.start.as_secs_f64(),
                            phase.name
                        );
                        boundaries.push((
                            phase.start.as_secs_f64(),
                            phase.name.clone(),
                            phase.controls.clone(),
                            runtime
                                .spawn(phase_boundary(stats_urls.clone(), phase.controls.clone())),
                        ));
                        *phase_of = next_phase;
                        next_phase += 1;
                    }
                };
                for &offset in &offsets {
                    start_phases_until(offset, &mut phase_of);
                    let due = t0 + offset;
                    sleep_until(due);
                    max_lag = max_lag.max(std::time::Instant::now().saturating_duration_since(due));
                    let pool = Arc::clone(&pool);
                    let request = Arc::clone(&request);
                    let recorder = Arc::clone(&recorder);
                    let phase_index = phase_of;
                    tasks.push(runtime.spawn(async move {
                        let deadline = Instant::from_std(due + timeout);
                        let outcome = one_request(pool, request, deadline).await;
                        let latency = match outcome {
                            Outcome::Timeout => timeout,
                            _ => std::time::Instant::now().saturating_duration_since(due),
                        };
                        let latency_us = latency.as_micros() as u64;
                        let mut rec = recorder.lock().unwrap_or_else(|p| p.into_inner());
                        let w = ((offset.as_nanos() / rec.window.as_nanos()) as usize)
                            .min(rec.windows.len() - 1);
                        rec.windows[w].record(&outcome, latency_us);
                        rec.phases[phase_index].record(&outcome, latency_us);
                        rec.total.record(&outcome, latency_us);
                    }));
                }
                // Phases after the last request (a short run), then the closing read of the
                // backends' counters at the end of the last phase.
                start_phases_until(total, &mut phase_of);
                sleep_until(t0 + total);
                boundaries.push((
                    total.as_secs_f64(),
                    "end".to_string(),
                    Vec::new(),
                    runtime.spawn(phase_boundary(stats_urls.clone(), Vec::new())),
                ));
                let _ = sent.send((tasks, boundaries, max_lag));
            })
            .map_err(|e| format!("cannot start the dispatch thread: {e}"))?
    };
    let (tasks, boundaries, max_lag) = dispatched
        .await
        .map_err(|_| "the dispatch thread failed".to_string())?;
    let _ = dispatcher.join();
    let last_due = Instant::now();
    // Every request has its own deadline; this bound is only a safety net.
    let give_up = last_due + timeout + Duration::from_secs(2);
    let mut unfinished = 0;
    for mut task in tasks {
        if tokio::time::timeout_at(give_up, &mut task).await.is_err() {
            task.abort();
            unfinished += 1;
        }
    }
    eprintln!(
        "openloop load: done ({:.1} s after the last request was due)",
        last_due.elapsed().as_secs_f64()
    );

    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        None => Box::new(io::BufWriter::new(io::stdout())),
    };
    let write_err = |e: io::Error| format!("writing results: {e}");
    for (at, phase, controls, handle) in boundaries {
        let (stats, answers) = handle
            .await
            .unwrap_or_else(|e| (Vec::new(), vec![format!("error: {e}"); controls.len()]));
        for (url, answer) in controls.iter().zip(&answers) {
            writeln!(
                out,
                "{{\"type\":\"control\",\"t\":{at:.3},\"phase\":{},\"url\":{},\"answer\":{}}}",
                json_str(&phase),
                json_str(url),
                json_str(answer)
            )
            .map_err(write_err)?;
        }
        for (url, stats) in args.backend_stats.iter().zip(&stats) {
            writeln!(
                out,
                "{{\"type\":\"backend_stats\",\"t\":{at:.3},\"phase\":{},\"url\":{},\"stats\":{stats}}}",
                json_str(&phase),
                json_str(url),
            )
            .map_err(write_err)?;
        }
    }
    let rec = recorder.lock().unwrap_or_else(|p| p.into_inner());
    for (i, bucket) in rec.windows.iter().enumerate() {
        let start = window * i as u32;
        if start >= total {
            break;
        }
        let phase = phases
            .iter()
            .rposition(|p| p.start <= start)
            .map(|p| phases[p].name.as_str())
            .unwrap_or("");
        writeln!(
            out,
            "{{\"type\":\"window\",\"t\":{:.3},\"phase\":{},{}}}",
            start.as_secs_f64(),
            json_str(phase),
            bucket.json_fields()
        )
        .map_err(write_err)?;
    }
    for (phase, bucket) in phases.iter().zip(&rec.phases) {
        writeln!(
            out,
            "{{\"type\":\"phase\",\"name\":{},\"start\":{:.3},\"length\":{:.3},{}}}",
            json_str(&phase.name),
            phase.start.as_secs_f64(),
            phase.length.as_secs_f64(),
            bucket.json_fields()
        )
        .map_err(write_err)?;
    }
    writeln!(
        out,
        "{{\"type\":\"total\",\"rate\":{},\"arrivals\":{},\"duration\":{:.3},\"timeout_s\":{},\"window_ms\":{},\"requests_scheduled\":{count},\"unfinished\":{unfinished},\"connections_opened\":{},\"max_open_connections\":{},\"connection_cap\":{},\"stale_retries\":{},\"max_dispatch_lag_ms\":{:.3},{}}}",
        args.rate,
        json_str(&arrivals),
        total.as_secs_f64(),
        args.timeout,
        args.window_ms,
        pool.opened.load(Ordering::Relaxed),
        pool.max_open.load(Ordering::Relaxed),
        pool.cap,
        pool.stale.load(Ordering::Relaxed),
        max_lag.as_secs_f64() * 1000.0,
        rec.total.json_fields()
    )
    .map_err(write_err)?;
    out.flush().map_err(write_err)?;
    Ok(())
}
