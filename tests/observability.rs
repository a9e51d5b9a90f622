//! Issue 18, part 1, through the real binary: `/metrics` counts what traffic did (by route
//! and code, by backend and outcome), a stopped backend shows unhealthy, reloads are
//! counted both ways, OpenMetrics is served when asked for, the admin token guards all but
//! the probes, `/readyz` says 503 while a SIGTERM drain lasts, and `--check` refuses an
//! admin listener off loopback without a token. Every scrape is read by a strict parser.
#![cfg(unix)]

mod common;
#[path = "observability/exposition.rs"]
mod exposition;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::backend::{ok, Backend, Reply};
use common::daemon::addr_in;
use exposition::Format;

const BIN: &str = env!("CARGO_BIN_EXE_sentinel");

/// How long a test waits for an effect before failing; waits poll, so a passing test
/// waits only as long as the effect takes.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// The binary on a config in a directory of its own (with `site/index.html`), its log
/// collected, its main and admin addresses read from that log.
struct Daemon {
    inner: common::daemon::Daemon,
    admin: SocketAddr,
}

impl Daemon {
    fn start(config: &str) -> Daemon {
        let inner = common::daemon::Daemon::start(config, &[("site/index.html", "home")]);
        let admin = addr_in(&inner.wait_for_log("admin listening", WAIT));
        inner.wait_for_log("watching the config", WAIT);
        Daemon { inner, admin }
    }

    /// `/metrics` as Prometheus text, parsed strictly.
    fn metrics(&self) -> BTreeMap<String, f64> {
        let (status, head, body) = request(self.admin, "/metrics", "");
        assert_eq!(status, 200, "{head}");
        exposition::parse(&body, Format::Prometheus)
    }
}

impl std::ops::Deref for Daemon {
    type Target = common::daemon::Daemon;

    fn deref(&self) -> &common::daemon::Daemon {
        &self.inner
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut common::daemon::Daemon {
        &mut self.inner
    }
}

/// One GET with `extra` header lines on a new connection: (status, head, body).
fn request(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

fn status_of(addr: SocketAddr, path: &str) -> u16 {
    request(addr, path, "").0
}

/// A site and a proxy: `/api` goes to the default group (`backends`), `/` is static;
/// the routes are named `api` and `site`.
fn config(backends: &[(&str, SocketAddr)], proxy_extra: &str, admin_extra: &str) -> String {
    let mut yaml = String::from(
        "server:\n  listen_addr: \"127.0.0.1:0\"\n  drain_timeout_ms: 10000\n\
         static_files:\n  root: site\nproxy:\n  backends:\n",
    );
    for (name, addr) in backends {
        yaml += &format!("    - name: \"{name}\"\n      address: \"{addr}\"\n");
    }
    yaml += proxy_extra;
    yaml += "routes:\n  - name: api\n    path_prefix: /api\n    upstream: default\n  \
             - name: site\n    path_prefix: /\n    static: true\n";
    yaml += &format!("admin:\n  listen_addr: \"127.0.0.1:0\"\n{admin_extra}");
    yaml += "logging:\n  level: info\n  access_log: false\n";
    yaml
}

fn value(metrics: &BTreeMap<String, f64>, sample: &str) -> f64 {
    *metrics
        .get(sample)
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{metrics:#?}"))
}

#[test]
fn requests_are_counted_by_route_code_backend_and_outcome() {
    let backend = Backend::named("b1");
    let daemon = Daemon::start(&config(&[("b1", backend.addr)], "", ""));
    for _ in 0..3 {
        assert_eq!(status_of(daemon.addr, "/"), 200);
    }
    for _ in 0..2 {
        assert_eq!(status_of(daemon.addr, "/missing"), 404);
    }
    for _ in 0..4 {
        assert_eq!(status_of(daemon.addr, "/api/x"), 200);
    }
    // A request is recorded after its response is written, a connection counted closed
    // after its socket is: wait for both.
    let mut metrics = BTreeMap::new();
    wait_until("the last request to be recorded", || {
        metrics = daemon.metrics();
        metrics.get("sentinel_http_requests_total{route=\"api\",code=\"200\"}") == Some(&4.0)
            && metrics.get("sentinel_connections_open{listener=\"http\"}") == Some(&0.0)
    });
    assert_eq!(
        value(
            &metrics,
            "sentinel_http_requests_total{route=\"site\",code=\"200\"}"
        ),
        3.0
    );
    assert_eq!(
        value(
            &metrics,
            "sentinel_http_requests_total{route=\"site\",code=\"404\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            "sentinel_http_request_duration_seconds_count{route=\"api\"}"
        ),
        4.0
    );
    assert_eq!(
        value(
            &metrics,
            "sentinel_http_request_duration_seconds_bucket{route=\"site\",le=\"+Inf\"}"
        ),
        5.0
    );
    assert!(
        value(
            &metrics,
            "sentinel_http_request_size_bytes_total{route=\"api\"}"
        ) > 4.0 * 30.0
    );
    // "home" three times, the two 404 pages, "b1" four times.
    assert!(
        value(
            &metrics,
            "sentinel_http_response_size_bytes_total{route=\"site\"}"
        ) >= 12.0
    );
    assert_eq!(
        value(
            &metrics,
            "sentinel_http_response_size_bytes_total{route=\"api\"}"
        ),
        8.0
    );
    let labels = "upstream=\"default\",backend=\"b1\"";
    assert_eq!(
        value(
            &metrics,
            &format!("sentinel_upstream_requests_total{{{labels},outcome=\"response\"}}")
        ),
        4.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("sentinel_upstream_response_duration_seconds_count{{{labels}}}")
        ),
        4.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("sentinel_upstream_in_flight{{{labels}}}")
        ),
        0.0
    );
    assert_eq!(
        value(&metrics, &format!("sentinel_backend_healthy{{{labels}}}")),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("sentinel_backend_breaker_state{{{labels}}}")
        ),
        0.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("sentinel_backend_ejections_total{{{labels}}}")
        ),
        0.0
    );
    assert!(
        value(
            &metrics,
            &format!("sentinel_backend_latency_ewma_seconds{{{labels}}}")
        ) > 0.0
    );
    assert_eq!(
        value(
            &metrics,
            "sentinel_retry_budget_exhausted_total{upstream=\"default\"}"
        ),
        0.0
    );
    assert_eq!(
        value(
            &metrics,
            "sentinel_connections_accepted_total{listener=\"http\"}"
        ),
        9.0
    );
    assert_eq!(
        value(&metrics, "sentinel_connections_open{listener=\"http\"}"),
        0.0
    );
    // This scrape's own connection is open while it is answered.
    assert!(value(&metrics, "sentinel_connections_open{listener=\"admin\"}") >= 1.0);
    assert!(value(&metrics, "process_resident_memory_bytes") > 0.0);
    assert!(value(&metrics, "process_cpu_seconds_total") >= 0.0);
    assert!(value(&metrics, "process_open_fds") > 3.0);
    assert!(value(&metrics, "process_start_time_seconds") > 1.0e9);
    assert!(
        value(
            &metrics,
            "sentinel_config_last_reload_success_timestamp_seconds"
        ) > 1.0e9
    );
}

#[test]
fn a_stopped_backend_shows_unhealthy_and_its_failed_connects() {
    let live = Backend::named("live");
    let doomed = Backend::named("doomed");
    let doomed_addr = doomed.addr;
    let daemon = Daemon::start(&config(
        &[("live", live.addr), ("doomed", doomed_addr)],
        "  max_fails: 2\n",
        "",
    ));
    let healthy = |metrics: &BTreeMap<String, f64>, name: &str| {
        value(
            metrics,
            &format!("sentinel_backend_healthy{{upstream=\"default\",backend=\"{name}\"}}"),
        )
    };
    assert_eq!(healthy(&daemon.metrics(), "doomed"), 1.0);
    drop(doomed);
    wait_until("the stopped backend to refuse connections", || {
        TcpStream::connect(doomed_addr).is_err()
    });
    // Round robin reaches the stopped backend every other request; its connect failures
    // fail over to the live one, so the clients see no error.
    let mut metrics = BTreeMap::new();
    wait_until("the stopped backend to be ejected", || {
        assert_eq!(status_of(daemon.addr, "/api/x"), 200);
        metrics = daemon.metrics();
        healthy(&metrics, "doomed") == 0.0
    });
    assert_eq!(healthy(&metrics, "live"), 1.0);
    let doomed = "upstream=\"default\",backend=\"doomed\"";
    assert!(
        value(
            &metrics,
            &format!("sentinel_upstream_requests_total{{{doomed},outcome=\"connect_error\"}}")
        ) >= 2.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("sentinel_backend_ejections_total{{{doomed}}}")
        ),
        1.0
    );
}

#[test]
fn reloads_are_counted_applied_and_rejected() {
    let backend = Backend::named("b1");
    let first = config(&[("b1", backend.addr)], "", "");
    let daemon = Daemon::start(&first);
    let before = daemon.metrics();
    assert_eq!(
        value(&before, "sentinel_config_reloads_total{result=\"success\"}"),
        0.0
    );
    assert_eq!(
        value(&before, "sentinel_config_reloads_total{result=\"failure\"}"),
        0.0
    );
    let started = value(
        &before,
        "sentinel_config_last_reload_success_timestamp_seconds",
    );

    // Another valid config (a different backend name), then a broken one.
    daemon.write_config(&config(&[("b2", backend.addr)], "", ""));
    wait_until("the reload", || daemon.count_log("config reloaded") == 1);
    daemon.write_config("server: [not a mapping\n");
    wait_until("the rejection", || {
        daemon.count_log("config reload rejected") == 1
    });
    let after = daemon.metrics();
    assert_eq!(
        value(&after, "sentinel_config_reloads_total{result=\"success\"}"),
        1.0
    );
    assert_eq!(
        value(&after, "sentinel_config_reloads_total{result=\"failure\"}"),
        1.0
    );
    assert!(
        value(
            &after,
            "sentinel_config_last_reload_success_timestamp_seconds"
        ) >= started
    );
    // The renamed backend is a series of its own.
    assert_eq!(
        value(
            &after,
            "sentinel_backend_healthy{upstream=\"default\",backend=\"b2\"}"
        ),
        1.0
    );
}

#[test]
fn openmetrics_is_served_when_the_scraper_asks_for_it() {
    let backend = Backend::named("b1");
    let daemon = Daemon::start(&config(&[("b1", backend.addr)], "", ""));
    assert_eq!(status_of(daemon.addr, "/api/x"), 200);
    let accept = "Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3\r\n";
    let attempt = "sentinel_upstream_requests_total{upstream=\"default\",backend=\"b1\",outcome=\"response\"}";
    // The attempt is recorded once its response has been relayed: wait for it.
    wait_until("the attempt to be recorded", || {
        daemon.metrics().contains_key(attempt)
    });
    let (status, head, body) = request(daemon.admin, "/metrics", accept);
    assert_eq!(status, 200);
    assert!(
        head.contains(
            "\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"
        ),
        "{head}"
    );
    let metrics = exposition::parse(&body, Format::OpenMetrics);
    assert!(body.contains("# UNIT sentinel_http_request_duration_seconds seconds\n"));
    assert_eq!(value(&metrics, attempt), 1.0);
    let (_, head, body) = request(daemon.admin, "/metrics", "");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(!body.contains("# EOF"));
    exposition::parse(&body, Format::Prometheus);
}

#[test]
fn the_admin_token_guards_all_but_the_probes() {
    let backend = Backend::named("b1");
    let daemon = Daemon::start(&config(
        &[("b1", backend.addr)],
        "",
        "  token: \"t0k3n-for-tests\"\n",
    ));
    for path in ["/metrics", "/admin/backends"] {
        let (status, head, _) = request(daemon.admin, path, "");
        assert_eq!(status, 401, "{path}");
        assert!(head.contains("\r\nWWW-Authenticate: Bearer"), "{head}");
        let (status, _, _) = request(
            daemon.admin,
            path,
            "Authorization: Bearer wrong-token-xx\r\n",
        );
        assert_eq!(status, 401, "{path}");
        let (status, _, _) = request(
            daemon.admin,
            path,
            "Authorization: Bearer t0k3n-for-tests\r\n",
        );
        assert_eq!(status, 200, "{path}");
    }
    assert_eq!(status_of(daemon.admin, "/healthz"), 200);
    assert_eq!(status_of(daemon.admin, "/readyz"), 200);
}

#[test]
fn readyz_says_503_while_a_sigterm_drain_lasts() {
    // The backend holds the request until the test lets it answer.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let (arrived_tx, arrived_rx) = std::sync::mpsc::channel::<()>();
    let arrived_tx = Mutex::new(arrived_tx);
    let backend = Backend::start(move |_| {
        let _ = arrived_tx.lock().unwrap().send(());
        let _ = release_rx.lock().unwrap().recv_timeout(WAIT);
        Reply::Send(ok("slow"))
    });
    let mut daemon = Daemon::start(&config(&[("slow", backend.addr)], "", ""));
    assert_eq!(status_of(daemon.admin, "/readyz"), 200);
    let addr = daemon.addr;
    let held = std::thread::spawn(move || request(addr, "/api/slow", ""));
    arrived_rx
        .recv_timeout(WAIT)
        .expect("the request reaches the backend");

    let kill = Command::new("kill")
        .args(["-TERM", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    wait_until("/readyz to say 503", || {
        status_of(daemon.admin, "/readyz") == 503
    });
    assert_eq!(status_of(daemon.admin, "/healthz"), 200, "still serving");

    release_tx.send(()).unwrap();
    let (status, _, body) = held.join().unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "slow"),
        "the drain let it finish"
    );
    let mut exited = None;
    wait_until("the exit", || {
        exited = daemon.try_wait();
        exited.is_some()
    });
    assert!(exited.is_some_and(|status| status.success()));
}

#[test]
fn check_refuses_an_admin_listener_off_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("site")).unwrap();
    let path = dir.path().join("config.yaml");
    let check = |admin: &str| {
        let yaml = format!("server: {{}}\nstatic_files:\n  root: site\nadmin:\n{admin}");
        std::fs::write(&path, yaml).unwrap();
        Command::new(BIN)
            .arg("--check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap()
    };
    let refused = check("  listen_addr: \"0.0.0.0:9901\"\n");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(":5: admin.listen_addr: 0.0.0.0:9901 is not a loopback address"),
        "{stderr}"
    );
    let with_token = check("  listen_addr: \"0.0.0.0:9901\"\n  token: \"long-random-token\"\n");
    assert!(
        with_token.status.success(),
        "{}",
        String::from_utf8_lossy(&with_token.stderr)
    );
    let loopback = check("  listen_addr: \"[::1]:9901\"\n");
    assert!(
        loopback.status.success(),
        "{}",
        String::from_utf8_lossy(&loopback.stderr)
    );
    let bad_token = check("  listen_addr: \"127.0.0.1:9901\"\n  token: \"has space\"\n");
    assert!(!bad_token.status.success());
    assert!(String::from_utf8_lossy(&bad_token.stderr).contains("admin.token"));
}

/// `admin.metrics: false`, the benchmark's "off": requests and attempts are not recorded,
/// while what is read from state at scrape time is still served.
#[test]
fn with_metrics_off_requests_are_not_recorded() {
    let backend = Backend::named("b1");
    let daemon = Daemon::start(&config(&[("b1", backend.addr)], "", "  metrics: false\n"));
    assert_eq!(status_of(daemon.addr, "/api/x"), 200);
    assert_eq!(status_of(daemon.addr, "/"), 200);
    let metrics = daemon.metrics();
    assert!(
        !metrics
            .keys()
            .any(|k| k.starts_with("sentinel_http_requests_total")
                || k.starts_with("sentinel_upstream_requests_total")),
        "{metrics:#?}"
    );
    assert_eq!(
        value(
            &metrics,
            "sentinel_backend_healthy{upstream=\"default\",backend=\"b1\"}"
        ),
        1.0
    );
    assert!(value(&metrics, "process_resident_memory_bytes") > 0.0);
}

/// A failure status retried elsewhere counts as `retried` on the backend that sent it; with
/// no retry budget the retry is refused, counted, and the status goes to the client.
#[test]
fn retries_and_an_exhausted_retry_budget_are_counted() {
    let unavailable = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
    let bad = Backend::start(move |_| Reply::Send(unavailable.to_vec()));
    let good = Backend::named("good");
    let backends = [("bad", bad.addr), ("good", good.addr)];
    let bad_labels = "upstream=\"default\",backend=\"bad\"";

    let retrying = Daemon::start(&config(&backends, "  failure_statuses: [503]\n", ""));
    for _ in 0..4 {
        assert_eq!(status_of(retrying.addr, "/api/x"), 200);
    }
    let metrics = retrying.metrics();
    let retried = format!("sentinel_upstream_requests_total{{{bad_labels},outcome=\"retried\"}}");
    assert!(value(&metrics, &retried) >= 1.0, "{metrics:#?}");
    assert_eq!(
        value(
            &metrics,
            "sentinel_retry_budget_exhausted_total{upstream=\"default\"}"
        ),
        0.0
    );

    let no_budget = "  failure_statuses: [503]\n  retry_budget_percent: 0\n  \
                     retry_budget_min_per_sec: 0\n";
    let refusing = Daemon::start(&config(&backends, no_budget, ""));
    let statuses: Vec<u16> = (0..4).map(|_| status_of(refusing.addr, "/api/x")).collect();
    assert!(statuses.contains(&503), "{statuses:?}");
    let metrics = refusing.metrics();
    assert!(
        value(
            &metrics,
            "sentinel_retry_budget_exhausted_total{upstream=\"default\"}"
        ) >= 1.0
    );
    let answered = format!("sentinel_upstream_requests_total{{{bad_labels},outcome=\"response\"}}");
    assert!(value(&metrics, &answered) >= 1.0);
    assert!(
        value(
            &metrics,
            "sentinel_http_requests_total{route=\"api\",code=\"503\"}"
        ) >= 1.0
    );
}
