//! Balancing strategies and the health model through the proxy, against scripted backends:
//! weights, least connections, consistent hashing, adaptive steering, failure statuses and
//! retries, circuit breakers, concurrency caps and the retry budget.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::backend::{closed_port, ok, Backend, Reply};
use common::{Options, TestServer};

fn proxy_with(backends: &[(&str, &Backend, u32)], proxy_keys: &str) -> TestServer {
    let mut yaml = String::from("proxy:\n  backends:\n");
    for (name, backend, weight) in backends {
        yaml += &format!(
            "    - name: \"{name}\"\n      address: \"{}\"\n      weight: {weight}\n",
            backend.addr
        );
    }
    yaml += proxy_keys;
    TestServer::start_with(Options {
        extra_yaml: yaml,
        ..Options::default()
    })
}

fn get_body(server: &TestServer, client: &mut common::RawClient, extra: &str) -> (u16, String) {
    let _ = server;
    client.send(format!("GET / HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes());
    let response = client.read_response();
    (response.status, response.body_text())
}

fn tally(server: &TestServer, requests: usize, extra: &str) -> HashMap<String, usize> {
    let mut client = server.connect();
    let mut counts = HashMap::new();
    for _ in 0..requests {
        let (status, body) = get_body(server, &mut client, extra);
        assert_eq!(status, 200, "{body}");
        *counts.entry(body).or_insert(0) += 1;
    }
    counts
}

#[test]
fn weighted_round_robin_follows_the_weights_exactly() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let server = proxy_with(
        &[("a", &a, 3), ("b", &b, 1)],
        "  strategy: weighted_round_robin\n",
    );
    let counts = tally(&server, 40, "");
    assert_eq!((counts["a"], counts["b"]), (30, 10), "{counts:?}");
}

#[test]
fn consistent_hash_keeps_a_key_on_one_backend_and_spreads_keys() {
    let backends = [
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    ];
    let server = proxy_with(
        &[
            ("a", &backends[0], 1),
            ("b", &backends[1], 1),
            ("c", &backends[2], 1),
        ],
        "  strategy: consistent_hash\n  hash_key: \"header:X-User\"\n",
    );
    let mut homes = HashMap::new();
    for user in 0..30 {
        let counts = tally(&server, 5, &format!("X-User: user-{user}\r\n"));
        assert_eq!(
            counts.len(),
            1,
            "user-{user} moved between backends: {counts:?}"
        );
        *homes.entry(counts.into_keys().next().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        homes.len(),
        3,
        "30 keys all on the same backends: {homes:?}"
    );
}

#[test]
fn least_connections_sends_work_away_from_a_busy_backend() {
    let slow = Backend::start(|_| {
        std::thread::sleep(Duration::from_millis(300));
        Reply::Send(ok("slow"))
    });
    let fast = Backend::named("fast");
    let server = proxy_with(
        &[("slow", &slow, 1), ("fast", &fast, 1)],
        "  strategy: least_connections\n",
    );
    // Four concurrent clients for a while: whenever the slow backend holds a request, new
    // ones go to the idle fast one.
    let addr = server.addr;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = common::RawClient::connect(addr);
                let mut bodies = Vec::new();
                for _ in 0..10 {
                    client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
                    bodies.push(client.read_response().body_text());
                }
                bodies
            })
        })
        .collect();
    let bodies: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let slow_count = bodies.iter().filter(|b| *b == "slow").count();
    assert!(slow_count <= 8, "the busy backend got {slow_count} of 40");
}

#[test]
fn adaptive_steers_around_a_slow_backend() {
    let slow = Backend::start(|_| {
        std::thread::sleep(Duration::from_millis(80));
        Reply::Send(ok("slow"))
    });
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let server = proxy_with(
        &[("slow", &slow, 1), ("a", &a, 1), ("b", &b, 1)],
        "  strategy: adaptive\n  default_latency_ms: 1\n",
    );
    let counts = tally(&server, 60, "");
    let slow_count = counts.get("slow").copied().unwrap_or(0);
    // Once measured it loses every comparison; only its first request or so reaches it.
    assert!(slow_count <= 3, "{counts:?}");
    // The fast ones take the rest. How it splits between them depends on their measured
    // latencies: one client at a time loads neither, so the one measured faster may win
    // most picks (three candidates are all compared).
    let fast = counts.get("a").copied().unwrap_or(0) + counts.get("b").copied().unwrap_or(0);
    assert_eq!(fast + slow_count, 60, "{counts:?}");
}

/// A backend that serves one request at a time (a queue in front of one slot, like issue
/// 16's), taking `service` for each, answering `name`.
fn single_slot(name: &'static str, service: Duration) -> Backend {
    let slot = Arc::new(std::sync::Mutex::new(()));
    Backend::start(move |_| {
        let _serving = slot.lock().unwrap();
        std::thread::sleep(service);
        Reply::Send(ok(name))
    })
}

#[test]
fn adaptive_gives_a_much_slower_backend_probes_not_traffic() {
    // Issue 16, phase B, in small: three single-slot backends, one 20 times slower, and
    // nothing configured but `strategy: adaptive`. In the cost race, the slow backend won
    // every pick in which the others were busy enough, and each of those requests waited
    // 100 ms; now, once its typical latency is known, it leaves the race and gets probes.
    let fast = [
        single_slot("a", Duration::from_millis(5)),
        single_slot("b", Duration::from_millis(5)),
    ];
    let slow = single_slot("slow", Duration::from_millis(100));
    let server = proxy_with(
        &[("a", &fast[0], 1), ("b", &fast[1], 1), ("slow", &slow, 1)],
        "  strategy: adaptive\n",
    );
    let addr = server.addr;
    let run = Duration::from_secs(4);
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = common::RawClient::connect(addr);
                let mut served = 0;
                while started.elapsed() < run {
                    client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
                    assert_eq!(client.read_response().status, 200);
                    served += 1;
                }
                served
            })
        })
        .collect();
    let total: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let elapsed = started.elapsed().as_secs_f64();
    let slow_count = slow.request_count();
    // Until its first answers are in it looks like the others: a handful of requests.
    // After that, probes: one a second, or 0.1 % of the requests if that is more.
    let probes = (elapsed.ceil() as usize).max(total / 1000);
    let detection = 12;
    assert!(
        slow_count <= detection + probes,
        "the slow backend got {slow_count} of {total} in {elapsed:.1} s"
    );
    let backends = reported_backends(&server);
    assert_eq!(backends[2]["state"], "probing", "{:#?}", backends[2]);
    assert_eq!(backends[2]["in_rotation"], false);
    assert!(backends[2]["probe_rate_per_sec"].as_f64() >= Some(1.0));
    let reason = backends[2]["reason"].as_str().unwrap();
    assert!(reason.starts_with("latency estimate "), "{reason}");
}

#[test]
fn failure_statuses_are_retried_elsewhere_for_idempotent_requests_only() {
    let failing = Backend::start(|_| {
        Reply::Send(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nfail".to_vec())
    });
    let good = Backend::named("good");
    let server = proxy_with(
        &[("failing", &failing, 1), ("good", &good, 1)],
        // A budget as large as the traffic: this test is about which requests are retried.
        "  failure_statuses: [500]\n  max_fails: 0\n  breaker:\n    failure_rate: 0\n  \
         retry_budget_percent: 100\n",
    );
    let counts = tally(&server, 20, "");
    assert_eq!(counts.get("good"), Some(&20), "{counts:?}");
    assert!(
        failing.request_count() >= 5,
        "the failing backend was never tried"
    );
    // A POST that lands on the failing backend gets its 500: it cannot be replayed.
    let statuses: Vec<u16> = (0..6)
        .map(|_| {
            server
                .request(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
                .status
        })
        .collect();
    assert!(statuses.contains(&500), "{statuses:?}");
}

#[test]
fn an_adaptive_group_counts_a_500_against_the_backend_and_still_delivers_it() {
    // Issue 16: by default a 500 was a success, and a backend answering 500 at once looked
    // the cheapest. Now an adaptive group counts it (error_statuses), and the client still
    // gets the backend's answer: without failure_statuses nothing is retried.
    let failing = Backend::start(|_| {
        Reply::Send(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nfail".to_vec())
    });
    for (strategy, counted) in [("adaptive", true), ("round_robin", false)] {
        let server = proxy_with(
            &[("failing", &failing, 1)],
            &format!("  strategy: {strategy}\n"),
        );
        let response = server.get("/");
        assert_eq!(response.status, 500, "{strategy}");
        assert_eq!(response.body_text(), "fail", "{strategy}");
        let backend = &reported_backends(&server)[0];
        if counted {
            assert_eq!(backend["errors"], 1, "{backend:#}");
            assert_eq!(backend["last_failure"], "error status", "{backend:#}");
        } else {
            assert_eq!(backend["errors"], 0, "{backend:#}");
            assert_eq!(
                backend["last_failure"],
                serde_json::Value::Null,
                "{backend:#}"
            );
        }
    }
}

#[test]
fn a_breaker_stops_traffic_to_a_backend_failing_half_its_requests() {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    // Fails every other request: never two in a row, so consecutive-failure ejection (here
    // off anyway) would never see it.
    let flaky = Backend::start(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            Reply::Send(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec())
        } else {
            Reply::Send(ok("flaky"))
        }
    });
    let good = Backend::named("good");
    let server = proxy_with(
        &[("flaky", &flaky, 1), ("good", &good, 1)],
        "  failure_statuses: [500]\n  max_fails: 0\n  breaker:\n    failure_rate: 0.5\n    \
         min_requests: 6\n    open_ms: 60000\n",
    );
    let counts = tally(&server, 60, "");
    let flaky_seen = flaky.request_count();
    assert!(
        flaky_seen <= 8,
        "the breaker did not open: flaky saw {flaky_seen}"
    );
    assert_eq!(counts.values().sum::<usize>(), 60);
    assert!(
        counts.keys().all(|b| b == "good" || b == "flaky"),
        "{counts:?}"
    );
}

#[test]
fn every_backend_at_its_cap_is_a_503_with_retry_after() {
    let slow = Backend::start(|_| {
        std::thread::sleep(Duration::from_millis(500));
        Reply::Send(ok("slow"))
    });
    let server = proxy_with(&[("slow", &slow, 1)], "  max_concurrent_requests: 1\n");
    let addr = server.addr;
    let first = std::thread::spawn(move || {
        let mut client = common::RawClient::connect(addr);
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        client.read_response().status
    });
    std::thread::sleep(Duration::from_millis(150));
    let second = server.get("/");
    assert_eq!(second.status, 503);
    assert_eq!(second.header("retry-after"), Some("1"));
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(
        server.get("/").status,
        200,
        "room again once the first finished"
    );
}

#[test]
fn an_empty_retry_budget_stops_retries() {
    let flaky = Backend::start(|_| Reply::Close);
    let good = Backend::named("good");
    let server = proxy_with(
        &[("flaky", &flaky, 1), ("good", &good, 1)],
        "  max_fails: 0\n  breaker:\n    failure_rate: 0\n  retry_budget_percent: 0\n  \
         retry_budget_min_per_sec: 0\n",
    );
    let statuses: Vec<u16> = (0..10).map(|_| server.get("/").status).collect();
    // Round-robin alternates: every request that lands on the reset one is a 502 now.
    assert_eq!(
        statuses.iter().filter(|&&s| s == 502).count(),
        5,
        "{statuses:?}"
    );
}

#[test]
fn the_backend_header_names_who_answered() {
    let a = Backend::named("a");
    let server = proxy_with(&[("alpha", &a, 1)], "  backend_header: \"X-Served-By\"\n");
    let response = server.get("/");
    assert_eq!(response.header("x-served-by"), Some("alpha"));
}

#[test]
fn the_admin_report_explains_the_balancer() {
    let a = Backend::named("a");
    let b = Backend::start(|_| Reply::Close);
    let server = proxy_with(
        &[("a", &a, 2), ("b", &b, 1)],
        "  strategy: least_connections\n  max_fails: 1\n",
    );
    for _ in 0..6 {
        assert_eq!(server.get("/").status, 200);
    }
    let report = sentinel::admin::backends_json(&server.config.load(), std::time::Instant::now());
    let json: serde_json::Value = serde_json::from_str(&report).unwrap();
    let backends = &json["upstreams"][0]["backends"];
    assert_eq!(json["upstreams"][0]["strategy"], "least_connections");
    assert_eq!(backends[0]["name"], "a");
    assert_eq!(backends[0]["weight"], 2);
    assert_eq!(backends[0]["state"], "healthy");
    assert!(backends[0]["requests"].as_u64().unwrap() >= 5, "{report}");
    assert_eq!(backends[1]["state"], "ejected", "{report}");
    assert_eq!(backends[1]["last_failure"], "no response", "{report}");
    assert!(backends[1]["errors"].as_u64().unwrap() >= 1);
    assert!(backends[1]["ejected_for_ms"].as_u64().unwrap() > 0);
    for key in [
        "state",
        "in_flight",
        "latency_ewma_ms",
        "failure_rate",
        "cost",
        "slow_start_factor",
        "ejections",
        "breaker",
        "requests",
        "errors",
        "last_failure",
    ] {
        assert!(backends[0].get(key).is_some(), "{key} missing: {report}");
    }
}

#[test]
fn active_health_checks_take_a_backend_out_and_bring_it_back() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probes = Arc::new(AtomicUsize::new(0));
    let (flag, probe_count) = (healthy.clone(), probes.clone());
    let checked = Backend::start(move |seen| {
        if seen.target == "/healthz" {
            probe_count.fetch_add(1, Ordering::SeqCst);
            assert_eq!(seen.header("user-agent"), Some("sentinel-health-check"));
            if flag.load(Ordering::SeqCst) {
                Reply::SendAndClose(ok("up"))
            } else {
                Reply::SendAndClose(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec(),
                )
            }
        } else {
            Reply::Send(ok("checked"))
        }
    });
    let other = Backend::named("other");
    let server = proxy_with(
        &[("checked", &checked, 1), ("other", &other, 1)],
        "  health_check:\n    path: /healthz\n    interval_ms: 30\n    jitter_ms: 10\n    \
         timeout_ms: 500\n    rise: 2\n    fall: 2\n",
    );
    let wait_until = |condition: &dyn Fn() -> bool, what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_until(&|| probes.load(Ordering::SeqCst) >= 2, "the first probes");
    assert!(tally(&server, 10, "").contains_key("checked"));

    healthy.store(false, Ordering::SeqCst);
    let failing_from = probes.load(Ordering::SeqCst);
    wait_until(
        &|| probes.load(Ordering::SeqCst) >= failing_from + 3,
        "two failed probes",
    );
    let counts = tally(&server, 10, "");
    assert_eq!(
        counts.get("other"),
        Some(&10),
        "a backend failing its checks got traffic"
    );

    healthy.store(true, Ordering::SeqCst);
    let passing_from = probes.load(Ordering::SeqCst);
    wait_until(
        &|| probes.load(Ordering::SeqCst) >= passing_from + 3,
        "two good probes",
    );
    assert!(
        tally(&server, 10, "").contains_key("checked"),
        "never came back"
    );
}

/// The backend entries of `/admin/backends` for the first group, as the endpoint renders them.
fn reported_backends(server: &TestServer) -> Vec<serde_json::Value> {
    let report = sentinel::admin::backends_json(&server.config.load(), std::time::Instant::now());
    let json: serde_json::Value = serde_json::from_str(&report).unwrap();
    json["upstreams"][0]["backends"].as_array().unwrap().clone()
}

/// Poll `report` until `condition` holds for it; fail with the last report after `wait`.
fn wait_for_report(
    server: &TestServer,
    wait: Duration,
    what: &str,
    condition: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let backends = reported_backends(server);
        if condition(&backends) {
            return backends;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {backends:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_admin_report_says_down_when_the_active_check_takes_a_backend_out() {
    let checked = Backend::named("checked");
    let other = Backend::named("other");
    let server = proxy_with(
        &[("checked", &checked, 1), ("other", &other, 1)],
        "  health_check:\n    path: /healthz\n    interval_ms: 100\n    jitter_ms: 50\n    \
         timeout_ms: 500\n    rise: 2\n    fall: 2\n",
    );
    let backends = wait_for_report(&server, Duration::from_secs(5), "a passed probe", |b| {
        b[0]["active_check"]["consecutive_successes"].as_u64() >= Some(1)
    });
    assert_eq!(backends[0]["state"], "healthy");
    assert_eq!(backends[0]["active_check"]["state"], "up");

    // The backend's process goes away: its port refuses connections.
    drop(checked);
    let backends = wait_for_report(
        &server,
        Duration::from_secs(5),
        "the check to say down",
        |b| b[0]["state"] == "down",
    );
    let down = &backends[0];
    assert_eq!(down["active_check"]["state"], "down");
    assert!(down["active_check"]["consecutive_failures"].as_u64() >= Some(2));
    let last_error = down["active_check"]["last_error"].as_str().unwrap();
    assert!(last_error.starts_with("connect:"), "{last_error}");
    let reason = down["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("active health check down") && reason.contains(last_error),
        "{reason}"
    );
    assert_eq!(down["in_rotation"], false);
    assert_eq!(backends[1]["state"], "healthy");
    assert_eq!(backends[1]["active_check"]["state"], "up");
}

#[test]
fn a_refusing_backend_kept_in_rotation_by_the_ejection_limit_is_not_reported_healthy() {
    let good = Backend::named("good");
    let (first, second) = (closed_port(), closed_port());
    let yaml = format!(
        "proxy:\n  backends:\n    - name: \"good\"\n      address: \"{}\"\n    \
         - name: \"refusing1\"\n      address: \"{first}\"\n    \
         - name: \"refusing2\"\n      address: \"{second}\"\n  \
         max_fails: 2\n  max_ejected_percent: 50\n",
        good.addr
    );
    let server = TestServer::start_with(Options {
        extra_yaml: yaml,
        ..Options::default()
    });
    // 50 % of three backends: one may be ejected, so the second refusing one stays in.
    let mut states = Vec::new();
    for _ in 0..60 {
        server.get("/");
        let backends = reported_backends(&server);
        states = backends[1..]
            .iter()
            .map(|b| b["state"].as_str().unwrap_or("").to_string())
            .collect();
        states.sort();
        if states == ["ejected", "kept_by_ejection_limit"] {
            break;
        }
    }
    assert_eq!(states, ["ejected", "kept_by_ejection_limit"]);
    let backends = reported_backends(&server);
    assert_eq!(backends[0]["state"], "healthy");
    for backend in &backends[1..] {
        // The count that ejected it (or that the limit held back), not 0.
        assert!(
            backend["consecutive_failures"].as_u64() >= Some(2),
            "{backend:#}"
        );
        assert_eq!(backend["last_failure"], "connect", "{backend:#}");
        if backend["state"] == "kept_by_ejection_limit" {
            assert_eq!(backend["in_rotation"], true);
            let reason = backend["reason"].as_str().unwrap();
            assert!(reason.contains("max_ejected_percent (50%)"), "{reason}");
        }
    }
}
