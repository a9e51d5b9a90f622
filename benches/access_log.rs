//! What one access-log line costs on the worker: formatting a `combined` or `json` line into
//! the buffer (the writer thread's `write(2)` is off the request path), and making a request
//! ID. Run with `cargo bench --bench access_log`.

use std::time::{Duration, SystemTime};

use divan::black_box;
use sentinel::access_log::format::{combined, json, Record, RequestLine, RouteLabel};

fn main() {
    divan::main();
}

fn record() -> Record<'static> {
    Record {
        time: SystemTime::now(),
        client: "192.0.2.7:51000".parse().unwrap(),
        request: Some(RequestLine {
            method: "GET",
            target: "/api/v1/items?page=2&sort=name",
            version: "HTTP/1.1",
        }),
        status: 200,
        bytes: 1234,
        request_bytes: 180,
        duration: Duration::from_micros(830),
        backend: Some("b1"),
        upstream_address: Some("10.0.0.5:8080"),
        upstream_time: Some(Duration::from_micros(900)),
        route: RouteLabel::Named("api"),
        rate_limit: "-",
        rate_limit_key: &"-",
        request_id: b"3f2a9c1e5b7d4a60000000000000002a",
        user_agent: Some(b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0"),
        referer: Some(b"https://www.example.com/start"),
    }
}

#[divan::bench(sample_count = 500, sample_size = 1000)]
fn combined_line(bencher: divan::Bencher) {
    let record = record();
    let mut out = Vec::with_capacity(64 * 1024);
    bencher.bench_local(|| {
        out.clear();
        combined(&mut out, black_box(&record));
        black_box(out.len())
    });
}

#[divan::bench(sample_count = 500, sample_size = 1000)]
fn json_line(bencher: divan::Bencher) {
    let record = record();
    let mut out = Vec::with_capacity(64 * 1024);
    bencher.bench_local(|| {
        out.clear();
        json(&mut out, black_box(&record));
        black_box(out.len())
    });
}

#[divan::bench(sample_count = 500, sample_size = 1000)]
fn request_id() -> sentinel::request_id::RequestId {
    sentinel::request_id::generate()
}
