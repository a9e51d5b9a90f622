//! Request-head parsing: Sentinel's strict parser against `httparse`, on the same inputs.
//!
//! Run with `cargo bench --bench parser`. Each input is a module with two benchmarks,
//! `httparse` and `sentinel`, run back to back so that both see the same machine.
//!
//! The two do not do quite the same work, and the numbers include that difference:
//! - `httparse` tokenizes into a caller-provided stack array (64 `EMPTY_HEADER`s, set up
//!   inside the timed loop, as a real caller would) and validates nothing beyond syntax.
//! - Sentinel also checks framing (Content-Length / Transfer-Encoding rules), Host
//!   (presence, uniqueness, authority syntax), the request-target form and the
//!   `Connection`/`Expect` tokens, and returns its header spans in a heap `Vec`; that
//!   `Vec` is allocated *and freed* inside the timed loop, since a server pays both.
//!
//! Samples are a fixed 1000 iterations (500 samples) rather than divan's auto-tuning: the
//! tuner starts from one iteration and, when that first, cold call happens to be slow, it
//! keeps one-iteration samples whose median is then just the 20 ns timer granularity.
//! `--sample-size` / `--sample-count` on the command line still override this.
//!
//! Before any timing, `main` checks that both parsers accept every input in full and agree
//! on method, path, header count and head length.

use divan::{black_box, black_box_drop};
use sentinel::http::parser::{parse_request, ParseLimits, Status};

fn main() {
    for input in INPUTS {
        check_agreement(input);
    }
    divan::main();
}

/// One benchmark input: a complete request head (ending in the empty line).
struct Input {
    name: &'static str,
    bytes: &'static [u8],
}

/// Smallest valid HTTP/1.1 request: one header.
const MINIMAL: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// A typical browser navigation: about 500 bytes, 10 headers.
const BROWSER: &[u8] = concat!(
    "GET /articles/2024/http-parsing?ref=home HTTP/1.1\r\n",
    "Host: www.example.com\r\n",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) ",
    "Chrome/124.0.0.0 Safari/537.36\r\n",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,",
    "image/webp,*/*;q=0.8\r\n",
    "Accept-Language: en-US,en;q=0.9\r\n",
    "Accept-Encoding: gzip, deflate, br, zstd\r\n",
    "Connection: keep-alive\r\n",
    "Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n",
    "Referer: https://www.example.com/\r\n",
    "Upgrade-Insecure-Requests: 1\r\n",
    "Cache-Control: max-age=0\r\n",
    "\r\n",
)
.as_bytes();

/// A request as seen behind a CDN and a couple of proxies: about 2 KiB, 40 headers.
const MANY_HEADERS: &[u8] = concat!(
    "GET /api/v2/accounts/48213/transactions?since=2024-01-01&limit=100&cursor=eyJpZCI6MTIzfQ HTTP/1.1\r\n",
    "Host: api.example.com\r\n",
    "User-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15\r\n",
    "Accept: application/json, text/plain, */*\r\n",
    "Accept-Language: en-GB,en;q=0.9\r\n",
    "Accept-Encoding: gzip, deflate, br\r\n",
    "Connection: keep-alive\r\n",
    "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0ODIxMyIsImV4cCI6MTcwMDAwMDAwMH0.c2lnbmF0dXJl\r\n",
    "Cookie: session=8f14e45fceea167a5a36dedd4bea2543; csrftoken=Zm9vYmFyYmF6cXV4; locale=en_GB\r\n",
    "Referer: https://app.example.com/accounts/48213\r\n",
    "Origin: https://app.example.com\r\n",
    "Cache-Control: no-cache\r\n",
    "Pragma: no-cache\r\n",
    "DNT: 1\r\n",
    "Sec-Fetch-Dest: empty\r\n",
    "Sec-Fetch-Mode: cors\r\n",
    "Sec-Fetch-Site: same-site\r\n",
    "Sec-CH-UA: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n",
    "Sec-CH-UA-Mobile: ?0\r\n",
    "Sec-CH-UA-Platform: \"macOS\"\r\n",
    "X-Requested-With: XMLHttpRequest\r\n",
    "X-Request-ID: 6f1c2b7e-3a94-4d1e-9b0f-2c8e5a7d4f31\r\n",
    "X-Correlation-ID: 0a8d3e52-77c1-4b6a-a1f9-93e0c4d2b8e7\r\n",
    "X-Forwarded-For: 203.0.113.195, 198.51.100.17, 192.0.2.44\r\n",
    "X-Forwarded-Proto: https\r\n",
    "X-Forwarded-Host: api.example.com\r\n",
    "X-Forwarded-Port: 443\r\n",
    "X-Real-IP: 203.0.113.195\r\n",
    "Forwarded: for=203.0.113.195;proto=https;host=api.example.com\r\n",
    "Via: 1.1 edge-fra-3.cdn.example.net, 1.1 lb-2.internal.example.com\r\n",
    "CDN-Loop: example-cdn; count=1\r\n",
    "X-Amzn-Trace-Id: Root=1-65a1b2c3-4d5e6f708192a3b4c5d6e7f8\r\n",
    "Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
    "Tracestate: congo=t61rcWkgMzE,rojo=00f067aa0ba902b7\r\n",
    "If-None-Match: W/\"5e15153d-120f\"\r\n",
    "If-Modified-Since: Wed, 21 Oct 2015 07:28:00 GMT\r\n",
    "X-Client-Version: web-4.18.2+build.7731\r\n",
    "X-Feature-Flags: new-ledger,fast-export,beta-search\r\n",
    "X-Api-Key: pk_live_51HxYzAbCdEfGhIjKlMnOpQrStUvWxYz0123456789\r\n",
    "X-Timezone: Europe/London\r\n",
    "Priority: u=1, i\r\n",
    "\r\n",
)
.as_bytes();

/// A form POST framed by Content-Length (head only).
const POST_LENGTH: &[u8] = concat!(
    "POST /login HTTP/1.1\r\n",
    "Host: www.example.com\r\n",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0\r\n",
    "Accept: text/html,application/xhtml+xml\r\n",
    "Content-Type: application/x-www-form-urlencoded\r\n",
    "Content-Length: 47\r\n",
    "Origin: https://www.example.com\r\n",
    "Connection: keep-alive\r\n",
    "\r\n",
)
.as_bytes();

/// An upload with a chunked body (head only).
const POST_CHUNKED: &[u8] = concat!(
    "POST /upload/videos HTTP/1.1\r\n",
    "Host: media.example.com\r\n",
    "User-Agent: curl/8.7.1\r\n",
    "Accept: */*\r\n",
    "Content-Type: video/mp4\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Expect: 100-continue\r\n",
    "\r\n",
)
.as_bytes();

/// Runs outside the timed loop: both parsers must accept `input` whole and agree on it.
fn check_agreement(input: &Input) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let oracle_len = match request.parse(input.bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!("{}: httparse: {other:?}", input.name),
    };
    let (head, consumed) = match parse_request(input.bytes, &ParseLimits::default()) {
        Ok(Status::Complete(head, consumed)) => (head, consumed),
        other => panic!("{}: sentinel: {other:?}", input.name),
    };
    let name = input.name;
    assert_eq!(oracle_len, input.bytes.len(), "{name}: httparse length");
    assert_eq!(consumed, input.bytes.len(), "{name}: sentinel length");
    assert_eq!(
        request.method.map(str::as_bytes),
        Some(head.method_span.slice(input.bytes)),
        "{name}: method"
    );
    assert_eq!(
        request.path.map(str::as_bytes),
        Some(head.target.slice(input.bytes)),
        "{name}: path"
    );
    assert_eq!(request.headers.len(), head.headers.len(), "{name}: headers");
}

/// The inputs, each as an entry of `INPUTS` (for the check) and a module of two benchmarks
/// that run back to back, so that both parsers see the same machine, and print together.
macro_rules! inputs {
    ($($module:ident => $bytes:ident,)*) => {
        const INPUTS: &[Input] = &[$(Input { name: stringify!($module), bytes: $bytes },)*];

        $(mod $module {
            #[divan::bench(sample_size = 1000, sample_count = 500)]
            fn httparse() {
                super::parse_with_httparse(super::$bytes);
            }

            #[divan::bench(sample_size = 1000, sample_count = 500)]
            fn sentinel() {
                super::parse_with_sentinel(super::$bytes);
            }
        })*
    };
}

inputs! {
    minimal => MINIMAL,
    browser => BROWSER,
    many_headers => MANY_HEADERS,
    post_length => POST_LENGTH,
    post_chunked => POST_CHUNKED,
}

#[inline(always)]
fn parse_with_httparse(bytes: &'static [u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let status = request.parse(black_box(bytes));
    black_box_drop(status);
    black_box_drop(&request);
}

#[inline(always)]
fn parse_with_sentinel(bytes: &'static [u8]) {
    // Dropped here, inside the timed loop: freeing the header `Vec` is part of the cost.
    black_box_drop(parse_request(
        black_box(bytes),
        black_box(&ParseLimits::default()),
    ));
}
