//! The response cache (RFC 9111, issue 19) end to end, against scripted in-process origins:
//! origin request counts prove hits and coalescing; the answers carry `Age`, the origin's
//! `Date` and `Cache-Status`; Vary, revalidation, stale-if-error and stale-while-revalidate,
//! invalidation after unsafe methods, ranges, the object limit and the memory budget.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backend::{Backend, Reply};
use common::{Options, RawClient, Response, TestServer};

/// Sentinel in front of `backend` with `cache_yaml` as its `cache:` section (empty: no
/// cache) and `routes_yaml` as its routes (empty: the implicit one).
fn cached_proxy(backend: &Backend, cache_yaml: &str, routes_yaml: &str) -> TestServer {
    let mut yaml = String::from("proxy:\n  backends:\n");
    yaml += &backend.yaml_entry("origin", "    ");
    yaml += cache_yaml;
    yaml += routes_yaml;
    TestServer::start_with(Options {
        extra_yaml: yaml,
        ..Options::default()
    })
}

const CACHE: &str = "cache:\n  max_bytes: 1048576\n  max_object_bytes: 65536\n";

fn respond(status: &str, fields: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{fields}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(client: &mut RawClient, path: &str, extra: &str) -> Response {
    client.send(format!("GET {path} HTTP/1.1\r\nHost: site.test\r\n{extra}\r\n").as_bytes());
    client.read_response()
}

/// Wait (bounded) until `backend` has seen `count` requests.
fn wait_for_requests(backend: &Backend, count: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if backend.request_count() >= count {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_fresh_response_is_served_from_storage_with_age_the_origin_date_and_cache_status() {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let origin_date = date.clone();
    let backend = Backend::start(move |_| {
        Reply::Send(respond(
            "200 OK",
            &format!("Cache-Control: max-age=60\r\nDate: {origin_date}\r\n"),
            "hello",
        ))
    });
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    let first = get(&mut client, "/a?x=1", "");
    assert_eq!(first.status, 200);
    assert_eq!(first.body_text(), "hello");
    assert_eq!(
        first.header("cache-status"),
        Some("sentinel; fwd=uri-miss; stored")
    );
    let second = get(&mut client, "/a?x=1", "");
    assert_eq!(second.status, 200);
    assert_eq!(second.body_text(), "hello");
    assert_eq!(second.header("cache-status"), Some("sentinel; hit"));
    assert!(second.header("age").is_some(), "{second:?}");
    assert_eq!(second.header("date"), Some(date.as_str()));
    assert_eq!(second.header("content-length"), Some("5"));
    // Another query is another key.
    assert_eq!(get(&mut client, "/a?x=2", "").body_text(), "hello");
    assert_eq!(backend.request_count(), 2);
    // HEAD is answered from the stored GET: its head, no body.
    client.send(b"HEAD /a?x=1 HTTP/1.1\r\nHost: site.test\r\n\r\n");
    let head = client.read_response_to(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("cache-status"), Some("sentinel; hit"));
    assert_eq!(head.header("content-length"), Some("5"));
    assert!(head.body.is_empty());
    assert_eq!(backend.request_count(), 2);
    let usage = server.config.load().cache.as_ref().unwrap().store.usage();
    assert_eq!(usage.keys, 2);
}

#[test]
fn what_may_not_be_stored_goes_upstream_every_time() {
    let backend = Backend::start(|seen| {
        let fields = match seen.target.as_str() {
            "/no-store" => "Cache-Control: no-store\r\n",
            "/private" => "Cache-Control: private, max-age=60\r\n",
            "/cookie" => "Cache-Control: max-age=60\r\nSet-Cookie: s=1\r\n",
            // Neither freshness nor a validator: not stored (no heuristic).
            _ => "",
        };
        Reply::Send(respond("200 OK", fields, "x"))
    });
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    for path in ["/no-store", "/private", "/cookie", "/plain"] {
        let first = get(&mut client, path, "");
        assert_eq!(
            first.header("cache-status"),
            Some("sentinel; fwd=uri-miss"),
            "{path}"
        );
        get(&mut client, path, "");
    }
    assert_eq!(backend.request_count(), 8);
    // A request with Authorization is not stored from a plain max-age answer.
    get(&mut client, "/auth", "Authorization: Bearer t\r\nX: 1\r\n");
    let none = get(&mut client, "/auth", "Authorization: Bearer t\r\n");
    assert_ne!(none.header("cache-status"), Some("sentinel; hit"));
}

#[test]
fn a_public_set_cookie_response_is_stored_without_its_cookie() {
    let backend = Backend::start(|_| {
        Reply::Send(respond(
            "200 OK",
            "Cache-Control: public, max-age=60\r\nSet-Cookie: s=1\r\n",
            "x",
        ))
    });
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    assert_eq!(get(&mut client, "/c", "").header("set-cookie"), Some("s=1"));
    let hit = get(&mut client, "/c", "");
    assert_eq!(hit.header("cache-status"), Some("sentinel; hit"));
    assert_eq!(hit.header("set-cookie"), None);
    assert_eq!(backend.request_count(), 1);
}

#[test]
fn a_route_that_opts_out_and_a_config_without_cache_neither_store_nor_mark() {
    let backend =
        Backend::start(|_| Reply::Send(respond("200 OK", "Cache-Control: max-age=60\r\n", "x")));
    let routes = "routes:\n  - path_prefix: /nocache\n    upstream: default\n    cache: false\n  \
                  - path_prefix: /\n    upstream: default\n";
    let server = cached_proxy(&backend, CACHE, routes);
    let mut client = server.connect();
    for _ in 0..2 {
        let response = get(&mut client, "/nocache/a", "");
        assert_eq!(response.header("cache-status"), None);
    }
    assert_eq!(backend.request_count(), 2);
    get(&mut client, "/other", "");
    assert_eq!(
        get(&mut client, "/other", "").header("cache-status"),
        Some("sentinel; hit")
    );
    assert_eq!(backend.request_count(), 3);

    let plain = cached_proxy(&backend, "", "");
    let mut client = plain.connect();
    for _ in 0..2 {
        assert_eq!(get(&mut client, "/other", "").header("cache-status"), None);
    }
    assert_eq!(backend.request_count(), 5);
    assert!(plain.config.load().cache.is_none());
}

#[test]
fn vary_keeps_one_variant_per_normalised_request_value() {
    let backend = Backend::start(|seen| {
        let encoding = seen.header("accept-encoding").unwrap_or("none").to_owned();
        Reply::Send(respond(
            "200 OK",
            "Cache-Control: max-age=60\r\nVary: Accept-Encoding\r\n",
            &encoding,
        ))
    });
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    assert_eq!(
        get(&mut client, "/v", "Accept-Encoding: gzip, br\r\n").body_text(),
        "gzip, br"
    );
    // The URI is stored, but not for this request's Accept-Encoding (RFC 9211 §2.2).
    let other = get(&mut client, "/v", "Accept-Encoding: identity\r\n");
    assert_eq!(other.body_text(), "identity");
    assert_eq!(
        other.header("cache-status"),
        Some("sentinel; fwd=vary-miss; stored")
    );
    assert_eq!(get(&mut client, "/v", "").body_text(), "none");
    assert_eq!(backend.request_count(), 3);
    let hit = get(&mut client, "/v", "Accept-Encoding: gzip,br\r\n");
    assert_eq!(hit.body_text(), "gzip, br");
    assert_eq!(hit.header("cache-status"), Some("sentinel; hit"));
    assert_eq!(
        get(&mut client, "/v", "Accept-Encoding: identity\r\n").body_text(),
        "identity"
    );
    assert_eq!(get(&mut client, "/v", "").body_text(), "none");
    assert_eq!(backend.request_count(), 3);
}

#[test]
fn concurrent_misses_for_one_key_make_one_origin_request() {
    let backend = Backend::start(|_| {
        std::thread::sleep(Duration::from_millis(300));
        Reply::Send(respond("200 OK", "Cache-Control: max-age=60\r\n", "hot"))
    });
    let server = cached_proxy(&backend, CACHE, "");
    let addr = server.addr;
    let clients: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = RawClient::connect(addr);
                get(&mut client, "/hot", "")
            })
        })
        .collect();
    for client in clients {
        let response = client.join().unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body_text(), "hot");
    }
    assert_eq!(backend.request_count(), 1);
}

#[test]
fn an_uncacheable_answer_releases_the_waiting_misses_to_go_upstream() {
    let backend = Backend::start(|_| {
        std::thread::sleep(Duration::from_millis(200));
        Reply::Send(respond("200 OK", "Cache-Control: no-store\r\n", "cold"))
    });
    let server = cached_proxy(&backend, CACHE, "");
    let addr = server.addr;
    let started = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get(&mut RawClient::connect(addr), "/cold", "")))
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap().body_text(), "cold");
    }
    assert_eq!(backend.request_count(), 4);
    // Released when the leader was done, not at the 5 s lock timeout.
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn unsafe_methods_invalidate_the_target_and_same_host_locations() {
    let backend = Backend::start(|seen| match seen.method.as_str() {
        "POST" => Reply::Send(respond(
            "201 Created",
            "Location: /items/2\r\nContent-Location: http://other.test/items/3\r\n",
            "",
        )),
        "DELETE" => Reply::Send(respond("500 Internal Server Error", "", "")),
        _ => Reply::Send(respond(
            "200 OK",
            "Cache-Control: max-age=60\r\n",
            &seen.target,
        )),
    });
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    for path in ["/items", "/items/2", "/items/3"] {
        get(&mut client, path, "");
        assert_eq!(
            get(&mut client, path, "").header("cache-status"),
            Some("sentinel; hit")
        );
    }
    assert_eq!(backend.request_count(), 3);
    client.send(b"POST /items HTTP/1.1\r\nHost: site.test\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(client.read_response().status, 201);
    assert_ne!(
        get(&mut client, "/items", "").header("cache-status"),
        Some("sentinel; hit")
    );
    assert_ne!(
        get(&mut client, "/items/2", "").header("cache-status"),
        Some("sentinel; hit")
    );
    // Another host's URI is left alone.
    assert_eq!(
        get(&mut client, "/items/3", "").header("cache-status"),
        Some("sentinel; hit")
    );
    // An error answer invalidates nothing.
    client.send(b"DELETE /items HTTP/1.1\r\nHost: site.test\r\n\r\n");
    assert_eq!(client.read_response().status, 500);
    assert_eq!(
        get(&mut client, "/items", "").header("cache-status"),
        Some("sentinel; hit")
    );
}

#[test]
fn responses_over_the_object_limit_pass_through_intact_and_are_not_stored() {
    let big = "b".repeat(100_000);
    let chunked_big = big.clone();
    let backend = Backend::start(move |seen| match seen.target.as_str() {
        "/declared" => Reply::Send(respond("200 OK", "Cache-Control: max-age=60\r\n", &big)),
        "/chunked" => {
            let mut out = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
            for piece in chunked_big.as_bytes().chunks(10_000) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            Reply::Send(out)
        }
        _ => {
            // A small chunked body is stored once complete.
            Reply::Send(
                b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n\
                  3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                    .to_vec(),
            )
        }
    });
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    for path in ["/declared", "/chunked"] {
        for _ in 0..2 {
            let response = get(&mut client, path, "");
            assert_eq!(response.body.len(), 100_000, "{path}");
            assert!(response.body.iter().all(|&b| b == b'b'));
            assert_ne!(response.header("cache-status"), Some("sentinel; hit"));
        }
    }
    assert_eq!(backend.request_count(), 4);
    assert_eq!(get(&mut client, "/small", "").body_text(), "abcde");
    let hit = get(&mut client, "/small", "");
    assert_eq!(hit.body_text(), "abcde");
    assert_eq!(hit.header("cache-status"), Some("sentinel; hit"));
    assert_eq!(backend.request_count(), 5);
}

#[test]
fn a_stale_entry_is_revalidated_and_a_304_refreshes_it() {
    let backend = Backend::start(|seen| {
        if seen.header("if-none-match") == Some("\"v1\"") {
            return Reply::Send(
                b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=60\r\n\r\n"
                    .to_vec(),
            );
        }
        Reply::Send(respond(
            "200 OK",
            "Cache-Control: max-age=0\r\nETag: \"v1\"\r\n",
            "body-v1",
        ))
    });
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    assert_eq!(get(&mut client, "/r", "").body_text(), "body-v1");
    let revalidated = get(&mut client, "/r", "");
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.body_text(), "body-v1");
    assert_eq!(
        revalidated.header("cache-status"),
        Some("sentinel; fwd=stale; fwd-status=304")
    );
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("if-none-match"), Some("\"v1\""));
    // The 304 made it fresh for 60 s.
    let hit = get(&mut client, "/r", "");
    assert_eq!(hit.header("cache-status"), Some("sentinel; hit"));
    assert_eq!(hit.body_text(), "body-v1");
    // The client's own matching conditional gets its 304 from storage.
    let not_modified = get(&mut client, "/r", "If-None-Match: \"v1\"\r\n");
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(backend.request_count(), 2);
}

#[test]
fn stale_if_error_serves_the_stale_entry_when_the_origin_fails() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let backend = Backend::start(move |_| {
        match counted.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::Send(respond(
                "200 OK",
                "Cache-Control: max-age=0, stale-if-error=60\r\n",
                "stale-but-fine",
            )),
            1 => Reply::Send(respond("503 Service Unavailable", "", "down")),
            // Then the origin fails outright: no response at all.
            _ => Reply::Close,
        }
    });
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    assert_eq!(get(&mut client, "/e", "").body_text(), "stale-but-fine");
    let rescued = get(&mut client, "/e", "");
    assert_eq!(rescued.status, 200);
    assert_eq!(rescued.body_text(), "stale-but-fine");
    let status = rescued.header("cache-status").unwrap_or_default();
    assert!(status.starts_with("sentinel; fwd=stale"), "{status}");
    assert_eq!(backend.request_count(), 2);
    let mut client = server.connect();
    let rescued = get(&mut client, "/e", "");
    assert_eq!(
        (rescued.status, rescued.body_text().as_str()),
        (200, "stale-but-fine")
    );
    assert_eq!(
        rescued.header("cache-status"),
        Some("sentinel; fwd=stale; detail=stale-if-error")
    );
    // Without the directive's window the client gets the failure.
    let strict = get(&mut client, "/e", "Cache-Control: stale-if-error=0\r\n");
    assert_ne!(strict.body_text(), "stale-but-fine");
}

#[test]
fn stale_while_revalidate_answers_at_once_and_refreshes_behind() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let backend = Backend::start(move |_| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        Reply::Send(respond(
            "200 OK",
            "Cache-Control: max-age=0, stale-while-revalidate=60\r\n",
            &format!("v{n}"),
        ))
    });
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    assert_eq!(get(&mut client, "/s", "").body_text(), "v0");
    let stale = get(&mut client, "/s", "");
    assert_eq!(stale.body_text(), "v0");
    assert_eq!(
        stale.header("cache-status"),
        Some("sentinel; hit; detail=stale-while-revalidate")
    );
    assert!(wait_for_requests(&backend, 2), "no background refresh");
    // The refresh is stored (bounded wait for it to land).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = get(&mut client, "/s", "").body_text();
        if body != "v0" {
            assert!(body.starts_with('v'));
            break;
        }
        assert!(Instant::now() < deadline, "the refresh was never stored");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ranges_are_answered_from_a_stored_whole_response_and_cold_ones_are_not_stored() {
    let backend = Backend::start(|seen| {
        if let Some(range) = seen.header("range") {
            assert_eq!(range, "bytes=0-1");
            return Reply::Send(
                b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/10\r\nContent-Length: 2\r\nCache-Control: max-age=60\r\n\r\n01"
                    .to_vec(),
            );
        }
        Reply::Send(respond(
            "200 OK",
            "Cache-Control: max-age=60\r\n",
            "0123456789",
        ))
    });
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    // Cold: forwarded, and the partial body is not stored as if whole.
    let cold = get(&mut client, "/cold", "Range: bytes=0-1\r\n");
    assert_eq!(cold.status, 206);
    assert_eq!(cold.body_text(), "01");
    let whole = get(&mut client, "/cold", "");
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body_text(), "0123456789");
    assert_eq!(backend.request_count(), 2);
    // Warm: from storage.
    let part = get(&mut client, "/cold", "Range: bytes=2-4\r\n");
    assert_eq!(part.status, 206);
    assert_eq!(part.body_text(), "234");
    assert_eq!(part.header("content-range"), Some("bytes 2-4/10"));
    assert_eq!(part.header("cache-status"), Some("sentinel; hit"));
    let beyond = get(&mut client, "/cold", "Range: bytes=50-60\r\n");
    assert_eq!(beyond.status, 416);
    assert_eq!(backend.request_count(), 2);
}

#[test]
fn request_directives_are_honoured() {
    let backend =
        Backend::start(|_| Reply::Send(respond("200 OK", "Cache-Control: max-age=60\r\n", "x")));
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    let miss = get(&mut client, "/o", "Cache-Control: only-if-cached\r\n");
    assert_eq!(miss.status, 504);
    assert_eq!(backend.request_count(), 0);
    get(&mut client, "/o", "");
    let hit = get(&mut client, "/o", "Cache-Control: only-if-cached\r\n");
    assert_eq!(hit.status, 200);
    assert_eq!(backend.request_count(), 1);
    // no-cache on the request: validated with the origin (no validator: fetched again).
    get(&mut client, "/o", "Cache-Control: no-cache\r\n");
    assert_eq!(backend.request_count(), 2);
    // max-age=0 on the request: the same.
    get(&mut client, "/o", "Cache-Control: max-age=0\r\n");
    assert_eq!(backend.request_count(), 3);
    // no-store on the request: forwarded, and the answer is not stored... but the entry
    // from before still serves the next plain request.
    assert_eq!(
        get(&mut client, "/o", "").header("cache-status"),
        Some("sentinel; hit")
    );
    assert_eq!(backend.request_count(), 3);
}

#[test]
fn a_spray_of_distinct_urls_stays_within_max_bytes() {
    let body = "z".repeat(4000);
    let backend = Backend::start(move |_| {
        Reply::Send(respond("200 OK", "Cache-Control: max-age=60\r\n", &body))
    });
    let budget = 200_000u64;
    let server = cached_proxy(
        &backend,
        &format!("cache:\n  max_bytes: {budget}\n  max_object_bytes: 65536\n"),
        "",
    );
    let mut client = server.connect();
    for i in 0..300 {
        assert_eq!(get(&mut client, &format!("/spray/{i}"), "").status, 200);
    }
    let usage = server.config.load().cache.as_ref().unwrap().store.usage();
    assert!(usage.bytes <= budget, "{usage:?}");
    assert!(usage.keys > 0 && usage.keys < 300, "{usage:?}");
}

/// A raw admin request; the status and body.
fn admin(addr: std::net::SocketAddr, method: &str, target: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[test]
fn the_admin_listener_dumps_and_purges_and_a_reload_keeps_the_entries() {
    let backend = Backend::start(|seen| {
        Reply::Send(respond(
            "200 OK",
            "Cache-Control: max-age=60\r\n",
            &seen.target,
        ))
    });
    let yaml = |max_bytes: u64, lock: u64| {
        format!(
            "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n{}\
             cache:\n  max_bytes: {max_bytes}\n  lock_timeout_ms: {lock}\n\
             admin:\n  listen_addr: \"127.0.0.1:0\"\nlogging:\n  level: info\n  access_log: false\n",
            backend.yaml_entry("origin", "    ")
        )
    };
    let daemon = common::daemon::Daemon::start(&yaml(1 << 20, 5000), &[]);
    let admin_addr =
        common::daemon::addr_in(&daemon.wait_for_log("admin listening", Duration::from_secs(10)));
    daemon.wait_for_log("watching the config", Duration::from_secs(10));
    let mut client = RawClient::connect(daemon.addr);
    for path in ["/img/a", "/img/b", "/css/c"] {
        get(&mut client, path, "");
    }
    assert_eq!(backend.request_count(), 3);
    // The last response is stored once its body is out, which the client may see first.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, dump) = admin(admin_addr, "GET", "/admin/cache");
        assert_eq!(status, 200);
        assert!(dump.contains("\"enabled\":true"), "{dump}");
        if dump.contains("\"keys\":3") {
            break;
        }
        assert!(Instant::now() < deadline, "{dump}");
        std::thread::sleep(Duration::from_millis(10));
    }
    get(&mut client, "/img/a", "");
    let (status, metrics) = admin(admin_addr, "GET", "/metrics");
    assert_eq!(status, 200);
    for family in [
        "sentinel_cache_requests_total{result=\"hit\"}",
        "sentinel_cache_requests_total{result=\"miss\"}",
        "sentinel_cache_stored_responses_total",
        "sentinel_cache_bytes{kind=\"max\"} 1048576",
    ] {
        assert!(metrics.contains(family), "no {family} in\n{metrics}");
    }

    // A reload that changes only the lock wait keeps every stored response.
    let mark = daemon.log_len();
    daemon.rewrite_config(&yaml(1 << 20, 2000));
    daemon.wait_for_log_after(mark, "config reloaded", Duration::from_secs(10));
    let mut client = RawClient::connect(daemon.addr);
    assert_eq!(
        get(&mut client, "/img/a", "").header("cache-status"),
        Some("sentinel; hit")
    );
    assert_eq!(backend.request_count(), 3);

    let (status, purged) = admin(
        admin_addr,
        "POST",
        "/admin/cache/purge?host=site.test&prefix=/img/",
    );
    assert_eq!((status, purged.as_str()), (200, "{\"purged\":2}"));
    let (_, purged) = admin(
        admin_addr,
        "POST",
        "/admin/cache/purge?host=site.test&url=%2Fcss%2Fc",
    );
    assert_eq!(purged, "{\"purged\":1}");
    assert_ne!(
        get(&mut client, "/img/a", "").header("cache-status"),
        Some("sentinel; hit")
    );
    assert_eq!(backend.request_count(), 4);
    assert_eq!(admin(admin_addr, "POST", "/admin/cache/purge").0, 400);

    // A new budget starts an empty store.
    let mark = daemon.log_len();
    daemon.rewrite_config(&yaml(2 << 20, 2000));
    daemon.wait_for_log_after(mark, "config reloaded", Duration::from_secs(10));
    let (_, dump) = admin(admin_addr, "GET", "/admin/cache");
    assert!(dump.contains("\"keys\":0"), "{dump}");
}

#[test]
fn a_head_answer_never_fills_a_get_entry_and_a_204_is_stored_whole() {
    let backend = Backend::start(|seen| match seen.target.as_str() {
        "/empty" => {
            Reply::Send(b"HTTP/1.1 204 No Content\r\nCache-Control: max-age=60\r\n\r\n".to_vec())
        }
        _ => Reply::Send(respond(
            "200 OK",
            "Cache-Control: max-age=60\r\n",
            "full body",
        )),
    });
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    client.send(b"HEAD /h HTTP/1.1\r\nHost: site.test\r\n\r\n");
    let head = client.read_response_to(true);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let full = get(&mut client, "/h", "");
    assert_eq!(full.body_text(), "full body");
    assert_eq!(backend.request_count(), 2);
    assert_eq!(
        get(&mut client, "/h", "").header("cache-status"),
        Some("sentinel; hit")
    );

    assert_eq!(get(&mut client, "/empty", "").status, 204);
    let hit = get(&mut client, "/empty", "");
    assert_eq!(hit.status, 204);
    assert_eq!(hit.header("cache-status"), Some("sentinel; hit"));
    assert_eq!(backend.request_count(), 3);
}

/// The resident set of process `pid`, in KiB (Linux).
#[cfg(target_os = "linux")]
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn the_process_stays_within_max_bytes_under_a_spray_of_distinct_urls() {
    let body = "s".repeat(32 * 1024);
    let backend = Backend::start(move |_| {
        Reply::Send(respond("200 OK", "Cache-Control: max-age=600\r\n", &body))
    });
    let budget: u64 = 16 << 20;
    let yaml = format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n{}\
         cache:\n  max_bytes: {budget}\nlogging:\n  level: info\n  access_log: false\n",
        backend.yaml_entry("origin", "    ")
    );
    let daemon = common::daemon::Daemon::start(&yaml, &[]);
    for i in 0..100 {
        get(
            &mut RawClient::connect(daemon.addr),
            &format!("/warm/{i}"),
            "",
        );
    }
    let mut client = RawClient::connect(daemon.addr);
    let before = rss_kib(daemon.pid());
    // 4000 × 32 KiB = 125 MiB offered to a 16 MiB budget.
    for i in 0..4000 {
        // New connections now and then: a connection serves a bounded number of requests.
        if i % 50 == 0 {
            client = RawClient::connect(daemon.addr);
        }
        assert_eq!(get(&mut client, &format!("/spray/{i}"), "").status, 200);
    }
    let grown_kib = rss_kib(daemon.pid()).saturating_sub(before);
    assert!(
        grown_kib < (budget >> 10) + 32 * 1024,
        "grew {grown_kib} KiB for a {budget}-byte budget"
    );
    assert_eq!(backend.request_count(), 4100);
}

#[test]
fn a_storm_on_a_key_that_went_stale_sends_one_revalidation() {
    let backend = Backend::start(|seen| {
        if seen.header("if-none-match").is_some() {
            std::thread::sleep(Duration::from_millis(300));
            return Reply::Send(
                b"HTTP/1.1 304 Not Modified\r\nETag: \"s\"\r\nCache-Control: max-age=60\r\n\r\n"
                    .to_vec(),
            );
        }
        Reply::Send(respond(
            "200 OK",
            "Cache-Control: max-age=0\r\nETag: \"s\"\r\n",
            "storm",
        ))
    });
    let server = cached_proxy(&backend, CACHE, "");
    assert_eq!(
        get(&mut server.connect(), "/storm", "").body_text(),
        "storm"
    );
    let addr = server.addr;
    let clients: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || get(&mut RawClient::connect(addr), "/storm", "")))
        .collect();
    for client in clients {
        let response = client.join().unwrap();
        assert_eq!(
            (response.status, response.body_text().as_str()),
            (200, "storm")
        );
    }
    assert_eq!(backend.request_count(), 2);
}

#[test]
fn max_stale_accepts_a_stale_entry_and_min_fresh_refuses_an_aging_one() {
    let backend = Backend::start(|seen| {
        let fields = if seen.target == "/stale" {
            "Cache-Control: max-age=0\r\n"
        } else {
            "Cache-Control: max-age=60\r\n"
        };
        Reply::Send(respond("200 OK", fields, "x"))
    });
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    get(&mut client, "/stale", "");
    let accepted = get(&mut client, "/stale", "Cache-Control: max-stale=60\r\n");
    assert_eq!(accepted.header("cache-status"), Some("sentinel; hit"));
    assert_eq!(backend.request_count(), 1);
    // Without max-stale the stale entry (no validator) is fetched again.
    get(&mut client, "/stale", "");
    assert_eq!(backend.request_count(), 2);
    get(&mut client, "/fresh", "");
    let refused = get(&mut client, "/fresh", "Cache-Control: min-fresh=120\r\n");
    assert_ne!(refused.header("cache-status"), Some("sentinel; hit"));
    assert_eq!(backend.request_count(), 4);
}

#[test]
fn a_hit_carries_its_own_request_id_never_the_one_that_filled_the_entry() {
    // An origin that echoes the ID it was sent, as many do.
    let backend = Backend::start(|request| {
        let id = request
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("x-request-id"))
            .map_or("none", |(_, value)| value.as_str())
            .to_string();
        Reply::Send(respond(
            "200 OK",
            &format!("Cache-Control: max-age=60\r\nX-Request-Id: {id}\r\n"),
            "hello",
        ))
    });
    let server = cached_proxy(&backend, CACHE, "");
    let mut client = server.connect();
    let fill = get(&mut client, "/id", "X-Request-Id: filler-1\r\n");
    assert_eq!(fill.header("x-request-id"), Some("filler-1"));
    let hit = get(&mut client, "/id", "X-Request-Id: reader-2\r\n");
    assert_eq!(hit.header("cache-status"), Some("sentinel; hit"));
    let ids: Vec<&str> = hit
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("x-request-id"))
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(ids, ["reader-2"], "{hit:?}");
    assert_eq!(backend.request_count(), 1);
}
