//! PURE access-log line formatting: nginx's `combined` format byte for byte, and one JSON
//! object per line. No I/O, no clock: the caller passes the time.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which route took the request, as the `route` label of the metrics names it.
#[derive(Debug, Clone, Copy)]
pub enum RouteLabel<'a> {
    Named(&'a str),
    Index(usize),
    /// No route took it (a redirect to HTTPS, a request that was never read whole).
    None,
}

/// Everything one access-log line says about one request.
pub struct Record<'a> {
    pub time: SystemTime,
    pub client: SocketAddr,
    /// `None` when no request head could be read (a malformed or late head).
    pub request: Option<RequestLine<'a>>,
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// The request head's bytes and the body's declared length.
    pub request_bytes: u64,
    pub duration: Duration,
    /// The backend that answered a proxied request, or the last one tried.
    pub backend: Option<&'a str>,
    /// The address of the backend whose response head arrived (nginx's `$upstream_addr`).
    pub upstream_address: Option<&'a str>,
    /// From the request sent to that response head (nginx's `$upstream_header_time`).
    pub upstream_time: Option<Duration>,
    pub route: RouteLabel<'a>,
    /// `-`, `allowed` or `limited`.
    pub rate_limit: &'static str,
    /// The rate limiter's key as logs may show it (`-` when no limit applied).
    pub rate_limit_key: &'a dyn fmt::Display,
    /// Empty when request IDs are off.
    pub request_id: &'a [u8],
    pub user_agent: Option<&'a [u8]>,
    pub referer: Option<&'a [u8]>,
}

/// The request line's three parts, as received.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub version: &'a str,
}

/// Append `record` in nginx's `combined` format and a newline:
/// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
/// "$http_referer" "$http_user_agent"`. Times are UTC (`+0000`); quoted values are escaped
/// as nginx escapes them, so a `"` in a user agent cannot end the field early.
pub fn combined(out: &mut Vec<u8>, record: &Record<'_>) {
    put_ip(out, record.client);
    out.extend_from_slice(b" - - [");
    let civil = Civil::of(record.time);
    civil.put_local(out);
    out.extend_from_slice(b"] \"");
    match &record.request {
        Some(line) => {
            put_nginx_escaped(out, line.method.as_bytes());
            out.push(b' ');
            put_nginx_escaped(out, line.target.as_bytes());
            out.push(b' ');
            put_nginx_escaped(out, line.version.as_bytes());
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b"\" ");
    put_decimal(out, u64::from(record.status));
    out.push(b' ');
    put_decimal(out, record.bytes);
    out.extend_from_slice(b" \"");
    put_nginx_escaped_or_dash(out, record.referer);
    out.extend_from_slice(b"\" \"");
    put_nginx_escaped_or_dash(out, record.user_agent);
    out.extend_from_slice(b"\"\n");
}

/// Append `record` as one JSON object and a newline. Field names are part of the interface
/// (docs/configuration.md lists them): add fields, never rename one.
pub fn json(out: &mut Vec<u8>, record: &Record<'_>) {
    let civil = Civil::of(record.time);
    out.extend_from_slice(b"{\"time\":\"");
    civil.put_rfc3339(out);
    out.extend_from_slice(b"\",\"client\":\"");
    put_ip(out, record.client);
    out.extend_from_slice(b"\",\"client_port\":");
    put_decimal(out, u64::from(record.client.port()));
    let line = record.request.as_ref();
    put_json_field(out, "method", line.map(|l| l.method.as_bytes()));
    put_json_field(out, "target", line.map(|l| l.target.as_bytes()));
    put_json_field(out, "protocol", line.map(|l| l.version.as_bytes()));
    out.extend_from_slice(b",\"status\":");
    put_decimal(out, u64::from(record.status));
    out.extend_from_slice(b",\"bytes\":");
    put_decimal(out, record.bytes);
    out.extend_from_slice(b",\"request_bytes\":");
    put_decimal(out, record.request_bytes);
    out.extend_from_slice(b",\"duration_us\":");
    put_decimal(out, record.duration.as_micros() as u64);
    put_json_field(out, "backend", record.backend.map(str::as_bytes));
    put_json_field(
        out,
        "upstream_address",
        record.upstream_address.map(str::as_bytes),
    );
    out.extend_from_slice(b",\"upstream_time_us\":");
    match record.upstream_time {
        Some(time) => put_decimal(out, time.as_micros() as u64),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"route\":");
    match record.route {
        RouteLabel::Named(name) => put_json_string(out, name.as_bytes()),
        RouteLabel::Index(index) => {
            out.push(b'"');
            put_decimal(out, index as u64);
            out.push(b'"');
        }
        RouteLabel::None => out.extend_from_slice(b"null"),
    }
    put_json_field(out, "rate_limit", Some(record.rate_limit.as_bytes()));
    out.extend_from_slice(b",\"rate_limit_key\":\"");
    // The key is an address or a hex fingerprint: nothing in it needs escaping.
    let _ = write!(out, "{}", record.rate_limit_key);
    out.push(b'"');
    put_json_field(
        out,
        "request_id",
        (!record.request_id.is_empty()).then_some(record.request_id),
    );
    put_json_field(out, "user_agent", record.user_agent);
    put_json_field(out, "referer", record.referer);
    out.extend_from_slice(b"}\n");
}

/// Append `record` as the `text` access line: byte for byte what `tracing-subscriber`'s
/// text formatter (no colours) wrote for the `sentinel::access` event at `info` when no span
/// was enabled, so the tools and tests that read it see no change (issue 24 moved it off the
/// request path). `&str` fields are quoted as `Debug` quotes them, `client` and
/// `rate_limit_key` are `Display`ed bare, and `upstream_time_us` is left out when no backend
/// answered, as `tracing` leaves out a `None`.
pub fn event_text(out: &mut Vec<u8>, record: &Record<'_>) {
    Civil::of(record.time).put_rfc3339_micros(out);
    out.extend_from_slice(b"  INFO sentinel::access: client=");
    put_socket_addr(out, record.client);
    let line = record.request.as_ref();
    out.extend_from_slice(b" method=");
    put_debug_str(out, line.map_or("-", |l| l.method));
    out.extend_from_slice(b" target=");
    put_debug_str(out, line.map_or("-", |l| l.target));
    out.extend_from_slice(b" version=");
    put_debug_str(out, line.map_or("-", |l| l.version));
    out.extend_from_slice(b" status=");
    put_decimal(out, u64::from(record.status));
    out.extend_from_slice(b" bytes=");
    put_decimal(out, record.bytes);
    out.extend_from_slice(b" duration_us=");
    put_decimal(out, record.duration.as_micros() as u64);
    out.extend_from_slice(b" backend=");
    put_debug_str(out, record.backend.unwrap_or("-"));
    out.extend_from_slice(b" upstream_address=");
    put_debug_str(out, record.upstream_address.unwrap_or("-"));
    if let Some(time) = record.upstream_time {
        out.extend_from_slice(b" upstream_time_us=");
        put_decimal(out, time.as_micros() as u64);
    }
    out.extend_from_slice(b" rate_limit=");
    put_debug_str(out, record.rate_limit);
    out.extend_from_slice(b" rate_limit_key=");
    let _ = write!(out, "{}", record.rate_limit_key);
    out.extend_from_slice(b" request_id=");
    put_debug_str(out, request_id_str(record));
    out.push(b'\n');
}

/// Append `record` as the `text` access line when `logging.format` is `json`: the object
/// `tracing-subscriber`'s JSON formatter wrote for the `sentinel::access` event (fields
/// nested under `fields`, the event's `target` beside them), the same keys and values.
pub fn event_json(out: &mut Vec<u8>, record: &Record<'_>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    Civil::of(record.time).put_rfc3339_micros(out);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"client\":\"");
    put_socket_addr(out, record.client);
    out.push(b'"');
    let line = record.request.as_ref();
    put_json_field(
        out,
        "method",
        Some(line.map_or("-", |l| l.method).as_bytes()),
    );
    put_json_field(
        out,
        "target",
        Some(line.map_or("-", |l| l.target).as_bytes()),
    );
    put_json_field(
        out,
        "version",
        Some(line.map_or("-", |l| l.version).as_bytes()),
    );
    out.extend_from_slice(b",\"status\":");
    put_decimal(out, u64::from(record.status));
    out.extend_from_slice(b",\"bytes\":");
    put_decimal(out, record.bytes);
    out.extend_from_slice(b",\"duration_us\":");
    put_decimal(out, record.duration.as_micros() as u64);
    put_json_field(
        out,
        "backend",
        Some(record.backend.unwrap_or("-").as_bytes()),
    );
    put_json_field(
        out,
        "upstream_address",
        Some(record.upstream_address.unwrap_or("-").as_bytes()),
    );
    if let Some(time) = record.upstream_time {
        out.extend_from_slice(b",\"upstream_time_us\":");
        put_decimal(out, time.as_micros() as u64);
    }
    put_json_field(out, "rate_limit", Some(record.rate_limit.as_bytes()));
    out.extend_from_slice(b",\"rate_limit_key\":\"");
    // An address or a hex fingerprint, as in `json`: nothing in it needs escaping.
    let _ = write!(out, "{}", record.rate_limit_key);
    out.push(b'"');
    put_json_field(out, "request_id", Some(request_id_str(record).as_bytes()));
    out.extend_from_slice(b"},\"target\":\"sentinel::access\"}\n");
}

/// The request ID as the tracing event carried it: `-` if it is not UTF-8 (it always is when
/// Sentinel made it; a client's is checked to be visible ASCII).
fn request_id_str<'a>(record: &Record<'a>) -> &'a str {
    std::str::from_utf8(record.request_id).unwrap_or("-")
}

/// A `&str` as `{:?}` writes it, without going through `fmt` when nothing needs escaping
/// (visible ASCII but `"` and `\`: every method, version and almost every target).
fn put_debug_str(out: &mut Vec<u8>, value: &str) {
    let plain = value
        .bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// `,"name":"value"`, or `,"name":null` when absent.
fn put_json_field(out: &mut Vec<u8>, name: &str, value: Option<&[u8]>) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    match value {
        Some(value) => put_json_string(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string (RFC 8259 §7) holding `value`. Valid UTF-8 passes through; `"`, `\` and
/// control characters are escaped; a byte that is not UTF-8 (header values may hold any
/// `obs-text`) becomes `\u00HH`, its Latin-1 reading, so the line stays valid JSON whatever
/// the client sent.
fn put_json_string(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    for chunk in value.utf8_chunks() {
        for &byte in chunk.valid().as_bytes() {
            match byte {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0x00..=0x1f | 0x7f => put_unicode_escape(out, byte),
                _ => out.push(byte),
            }
        }
        for &byte in chunk.invalid() {
            put_unicode_escape(out, byte);
        }
    }
    out.push(b'"');
}

fn put_unicode_escape(out: &mut Vec<u8>, byte: u8) {
    out.extend_from_slice(b"\\u00");
    out.push(HEX_UPPER[usize::from(byte >> 4)]);
    out.push(HEX_UPPER[usize::from(byte & 0xf)]);
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// nginx's default log escaping (`ngx_http_log_escape`): `"`, `\`, control bytes and every
/// byte above 0x7E are written as `\xHH`, uppercase hex.
fn put_nginx_escaped(out: &mut Vec<u8>, value: &[u8]) {
    for &byte in value {
        if byte == b'"' || byte == b'\\' || !(0x20..=0x7e).contains(&byte) {
            out.extend_from_slice(b"\\x");
            out.push(HEX_UPPER[usize::from(byte >> 4)]);
            out.push(HEX_UPPER[usize::from(byte & 0xf)]);
        } else {
            out.push(byte);
        }
    }
}

/// nginx writes `-` for a header that is absent (an empty one stays empty).
fn put_nginx_escaped_or_dash(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(value) => put_nginx_escaped(out, value),
        None => out.push(b'-'),
    }
}

/// The address without its port: `$remote_addr`, IPv6 without brackets.
fn put_ip(out: &mut Vec<u8>, client: SocketAddr) {
    match client {
        SocketAddr::V4(v4) => put_ipv4(out, *v4.ip()),
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{}", v6.ip());
        }
    }
}

fn put_ipv4(out: &mut Vec<u8>, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        put_decimal(out, u64::from(octet));
    }
}

/// `IP:port` as `SocketAddr`'s `Display` writes it (IPv6 in brackets). An IPv4 peer, the
/// common case, is written without `fmt`: it was a third of the text line's cost.
fn put_socket_addr(out: &mut Vec<u8>, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            put_ipv4(out, *v4.ip());
            out.push(b':');
            put_decimal(out, u64::from(v4.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{address}");
        }
    }
}

/// A year as `{:04}` writes it, without `fmt` for the years a clock can show.
fn put_year(out: &mut Vec<u8>, year: i64) {
    match u32::try_from(year) {
        Ok(year) if year <= 9999 => {
            put_two(out, year / 100);
            put_two(out, year % 100);
        }
        _ => {
            let _ = write!(out, "{year:04}");
        }
    }
}

fn put_decimal(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// A UTC time broken into calendar fields.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    micros: u32,
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

impl Civil {
    /// Times before 1970 (a clock set wrong) are written as the epoch.
    fn of(time: SystemTime) -> Civil {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let days = (secs / 86_400) as i64;
        let of_day = (secs % 86_400) as u32;
        // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
            micros: since.subsec_micros(),
        }
    }

    /// `07/Dec/2026:16:30:00 +0000`, nginx's `$time_local` in UTC.
    fn put_local(&self, out: &mut Vec<u8>) {
        put_two(out, self.day);
        out.push(b'/');
        let month = MONTHS
            .get(self.month.saturating_sub(1) as usize)
            .map_or(&b"Jan"[..], |m| &m[..]);
        out.extend_from_slice(month);
        out.push(b'/');
        put_year(out, self.year);
        out.push(b':');
        self.put_clock(out);
        out.extend_from_slice(b" +0000");
    }

    /// `2026-12-07T16:30:00.123Z`.
    fn put_rfc3339(&self, out: &mut Vec<u8>) {
        put_year(out, self.year);
        out.push(b'-');
        put_two(out, self.month);
        out.push(b'-');
        put_two(out, self.day);
        out.push(b'T');
        self.put_clock(out);
        let _ = write!(out, ".{:03}Z", self.micros / 1000);
    }

    /// `2026-12-07T16:30:00.123456Z`, as `tracing-subscriber`'s default timer writes it.
    fn put_rfc3339_micros(&self, out: &mut Vec<u8>) {
        put_year(out, self.year);
        out.push(b'-');
        put_two(out, self.month);
        out.push(b'-');
        put_two(out, self.day);
        out.push(b'T');
        self.put_clock(out);
        out.push(b'.');
        let mut place = 100_000;
        while place > 0 {
            out.push(b'0' + (self.micros / place % 10) as u8);
            place /= 10;
        }
        out.push(b'Z');
    }

    fn put_clock(&self, out: &mut Vec<u8>) {
        put_two(out, self.hour);
        out.push(b':');
        put_two(out, self.minute);
        out.push(b':');
        put_two(out, self.second);
    }
}

fn put_two(out: &mut Vec<u8>, value: u32) {
    out.push(b'0' + (value / 10 % 10) as u8);
    out.push(b'0' + (value % 10) as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    fn record<'a>(request: Option<RequestLine<'a>>, ua: Option<&'a [u8]>) -> Record<'a> {
        Record {
            // 2026-12-07T16:30:00Z
            time: at(1_796_661_000, 42),
            client: "192.0.2.7:51000".parse().unwrap(),
            request,
            status: 200,
            bytes: 1234,
            request_bytes: 77,
            duration: Duration::from_micros(1500),
            backend: Some("b1"),
            upstream_address: Some("10.0.0.5:8080"),
            upstream_time: Some(Duration::from_micros(900)),
            route: RouteLabel::Named("api"),
            rate_limit: "-",
            rate_limit_key: &"-",
            request_id: b"abc",
            user_agent: ua,
            referer: None,
        }
    }

    const GET: RequestLine<'static> = RequestLine {
        method: "GET",
        target: "/index.html?q=1",
        version: "HTTP/1.1",
    };

    fn combined_text(record: &Record<'_>) -> String {
        let mut out = Vec::new();
        combined(&mut out, record);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn combined_matches_nginx_byte_for_byte() {
        assert_eq!(
            combined_text(&record(Some(GET), Some(b"curl/8.5.0"))),
            "192.0.2.7 - - [07/Dec/2026:16:30:00 +0000] \"GET /index.html?q=1 HTTP/1.1\" 200 1234 \"-\" \"curl/8.5.0\"\n"
        );
    }

    #[test]
    fn combined_escapes_as_nginx_does() {
        let target = RequestLine {
            target: "/a\"b\\c",
            ..GET
        };
        let line = combined_text(&record(Some(target), Some(b"x\"y\x01\xff ok")));
        assert!(line.contains("\"GET /a\\x22b\\x5Cc HTTP/1.1\""), "{line}");
        assert!(line.ends_with("\"x\\x22y\\x01\\xFF ok\"\n"), "{line}");
    }

    #[test]
    fn combined_without_a_request_line_or_headers() {
        let mut no_head = record(None, None);
        no_head.status = 400;
        no_head.bytes = 0;
        no_head.client = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(
            combined_text(&no_head),
            "2001:db8::1 - - [07/Dec/2026:16:30:00 +0000] \"-\" 400 0 \"-\" \"-\"\n"
        );
    }

    #[test]
    fn dates_across_the_calendar() {
        let local = |time| {
            let mut out = Vec::new();
            Civil::of(time).put_local(&mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(local(at(0, 0)), "01/Jan/1970:00:00:00 +0000");
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(local(at(1_709_251_199, 0)), "29/Feb/2024:23:59:59 +0000");
        assert_eq!(local(at(951_782_400, 0)), "29/Feb/2000:00:00:00 +0000");
        let mut out = Vec::new();
        Civil::of(at(1_796_661_000, 42)).put_rfc3339(&mut out);
        assert_eq!(out, b"2026-12-07T16:30:00.042Z");
    }

    #[test]
    fn json_lines_parse_with_every_field() {
        let mut rec = record(Some(GET), Some(b"bad \xff\xfe \"ua\" \x07 caf\xc3\xa9"));
        rec.referer = Some(b"http://e.example/\\");
        let mut out = Vec::new();
        json(&mut out, &rec);
        assert_eq!(out.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["time"], "2026-12-07T16:30:00.042Z");
        assert_eq!(value["client"], "192.0.2.7");
        assert_eq!(value["client_port"], 51000);
        assert_eq!(value["method"], "GET");
        assert_eq!(value["target"], "/index.html?q=1");
        assert_eq!(value["protocol"], "HTTP/1.1");
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 1234);
        assert_eq!(value["request_bytes"], 77);
        assert_eq!(value["duration_us"], 1500);
        assert_eq!(value["backend"], "b1");
        assert_eq!(value["upstream_address"], "10.0.0.5:8080");
        assert_eq!(value["upstream_time_us"], 900);
        assert_eq!(value["route"], "api");
        assert_eq!(value["rate_limit"], "-");
        assert_eq!(value["rate_limit_key"], "-");
        assert_eq!(value["request_id"], "abc");
        assert_eq!(value["user_agent"], "bad \u{ff}\u{fe} \"ua\" \u{7} café");
        assert_eq!(value["referer"], "http://e.example/\\");
    }

    #[test]
    fn json_string_escaping_holds_for_every_byte() {
        let every: Vec<u8> = (0..=255u8).collect();
        let mut out = Vec::new();
        put_json_string(&mut out, &every);
        let parsed: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed.chars().count(), 256);
        let mut none = Vec::new();
        json(&mut none, &record(None, None));
        let value: serde_json::Value = serde_json::from_slice(&none).unwrap();
        assert!(value["method"].is_null() && value["user_agent"].is_null());
    }

    /// Collects what a `tracing-subscriber` formatter writes.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The `sentinel::access` event exactly as `log_access` emitted it before issue 24.
    fn emit_as_tracing_did(record: &Record<'_>) {
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
    }

    fn records_to_compare() -> Vec<Record<'static>> {
        let mut plain = record(Some(GET), None);
        plain.time = SystemTime::now();
        let mut odd = record(
            Some(RequestLine {
                method: "GET",
                target: "/a\"b\\c\u{7}\u{e9}\t'x",
                version: "HTTP/1.0",
            }),
            None,
        );
        odd.backend = None;
        odd.upstream_address = None;
        odd.upstream_time = None;
        odd.request_id = b"";
        odd.client = "[2001:db8::1]:443".parse().unwrap();
        let mut no_head = record(None, None);
        no_head.request_id = b"\xff";
        no_head.rate_limit = "limited";
        no_head.rate_limit_key = &"198.51.100.2";
        vec![plain, odd, no_head]
    }

    /// Drops the timestamp, which the two sides take at different instants.
    fn after_time(line: &str) -> &str {
        line.split_once(' ').map_or(line, |(_, rest)| rest)
    }

    #[test]
    fn event_text_is_what_the_tracing_formatter_wrote() {
        for record in records_to_compare() {
            let captured = Captured::default();
            let subscriber = tracing_subscriber::fmt()
                .with_writer({
                    let captured = captured.clone();
                    move || captured.clone()
                })
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(subscriber, || emit_as_tracing_did(&record));
            let expected = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            let mut out = Vec::new();
            event_text(&mut out, &record);
            let ours = String::from_utf8(out).unwrap();
            assert_eq!(after_time(&ours), after_time(&expected));
            let (time, _) = ours.split_once(' ').unwrap();
            assert_eq!(time.len(), "2026-12-07T16:30:00.042000Z".len(), "{time}");
        }
        let mut out = Vec::new();
        Civil::of(at(1_796_661_000, 42)).put_rfc3339_micros(&mut out);
        assert_eq!(out, b"2026-12-07T16:30:00.042000Z");
    }

    #[test]
    fn event_json_is_what_the_tracing_json_formatter_wrote() {
        for record in records_to_compare() {
            let captured = Captured::default();
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_writer({
                    let captured = captured.clone();
                    move || captured.clone()
                })
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(subscriber, || emit_as_tracing_did(&record));
            let expected: serde_json::Value =
                serde_json::from_slice(&captured.0.lock().unwrap()).unwrap();
            let mut out = Vec::new();
            event_json(&mut out, &record);
            assert_eq!(out.last(), Some(&b'\n'));
            let mut ours: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert!(ours["timestamp"].as_str().unwrap().ends_with('Z'));
            ours["timestamp"] = expected["timestamp"].clone();
            assert_eq!(ours, expected);
        }
    }

    #[test]
    fn addresses_and_years_are_written_as_display_writes_them() {
        for address in [
            "192.0.2.7:51000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[2001:db8::1]:443",
            "[::ffff:1.2.3.4]:8",
        ] {
            let address: SocketAddr = address.parse().unwrap();
            let mut out = Vec::new();
            put_socket_addr(&mut out, address);
            assert_eq!(out, address.to_string().as_bytes());
            let mut out = Vec::new();
            put_ip(&mut out, address);
            assert_eq!(out, address.ip().to_string().as_bytes());
        }
        for year in [0i64, 7, 1970, 2026, 9999, 10_000, -1] {
            let mut out = Vec::new();
            put_year(&mut out, year);
            assert_eq!(out, format!("{year:04}").as_bytes());
        }
    }
}
