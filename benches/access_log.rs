//! What one access-log line costs on the worker: formatting a `combined`, `json` or default
//! `text` line into the buffer (the writer thread's `write(2)` is off the request path), and
//! making a request ID. Run with `cargo bench --bench access_log`.

use std::time::{Duration, SystemTime};

use divan::black_box;
use sentinel::access_log::format::{
    combined, event_json, event_text, json, Record, RequestLine, RouteLabel,
};

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

/// The default format (issue 24): the line the `sentinel::access` tracing event used to be.
#[divan::bench(sample_count = 500, sample_size = 1000)]
fn text_line(bencher: divan::Bencher) {
    let record = record();
    let mut out = Vec::with_capacity(64 * 1024);
    bencher.bench_local(|| {
        out.clear();
        event_text(&mut out, black_box(&record));
        black_box(out.len())
    });
}

/// The same line as it was made before issue 24: the `sentinel::access` event through the
/// text subscriber, into a sink (the `write(2)` per line it also cost is not counted here).
#[divan::bench(sample_count = 500, sample_size = 1000)]
fn text_event_through_tracing(bencher: divan::Bencher) {
    let record = record();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        bencher.bench_local(|| {
            let record = black_box(&record);
            let line = record.request.as_ref();
            tracing::info!(
                target: "sentinel::access",
                client = %record.client,
                method = line.map_or("-", |l| l.method),
                target = line.map_or("-", |l| l.target),
                version = line.map_or("-", |l| l.version),
                status = record.status,
                bytes = record.bytes,
                duration_us = record.duration.as_micros() as u64,
                backend = record.backend.unwrap_or("-"),
                upstream_address = record.upstream_address.unwrap_or("-"),
                upstream_time_us = record.upstream_time.map(|t| t.as_micros() as u64),
                rate_limit = record.rate_limit,
                rate_limit_key = %record.rate_limit_key,
                request_id = std::str::from_utf8(record.request_id).unwrap_or("-"),
            );
        })
    });
}

/// The default format under `logging.format: json`.
#[divan::bench(sample_count = 500, sample_size = 1000)]
fn text_line_as_json(bencher: divan::Bencher) {
    let record = record();
    let mut out = Vec::with_capacity(64 * 1024);
    bencher.bench_local(|| {
        out.clear();
        event_json(&mut out, black_box(&record));
        black_box(out.len())
    });
}

#[divan::bench(sample_count = 500, sample_size = 1000)]
fn request_id() -> sentinel::request_id::RequestId {
    sentinel::request_id::generate()
}
