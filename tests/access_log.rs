//! Issue 18, access logs and request IDs, through the real binary: `combined` lines byte for
//! byte and read by GoAccess (every request counted, odd bytes included), JSON lines with
//! their fields, a logrotate `mv` + SIGUSR1 that loses nothing, the last lines written at a
//! clean exit, drops counted on `/metrics` when the file takes nothing, and `X-Request-Id`
//! kept, made, forwarded and returned.
#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::backend::{Backend, Reply};
use common::daemon::{addr_in, Daemon};

const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// A static site (`site/index.html` = `home`) and `/api` proxied to `backend`, the access log
/// in `format` at `access.log` beside the config, plus `extra` under `logging:`. One worker:
/// each worker writes its own batches, so lines keep request order only within a worker.
fn config(backend: SocketAddr, format: &str, extra: &str) -> String {
    format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\n  workers: 1\n\
         static_files:\n  root: site\n\
         proxy:\n  backends:\n    - name: \"b1\"\n      address: \"{backend}\"\n\
         routes:\n  - name: api\n    path_prefix: /api\n    upstream: default\n  \
         - name: site\n    path_prefix: /\n    static: true\n\
         admin:\n  listen_addr: \"127.0.0.1:0\"\n\
         logging:\n  level: info\n  access_log_format: {format}\n  access_log_path: access.log\n{extra}"
    )
}

fn start(yaml: &str) -> (Daemon, SocketAddr) {
    let daemon = Daemon::start(yaml, &[("site/index.html", "home")]);
    let admin = addr_in(&daemon.wait_for_log("admin listening", WAIT));
    (daemon, admin)
}

/// Send raw request bytes on a new connection and read the whole response (the request
/// must close the connection).
fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get(addr: SocketAddr, path: &str, extra: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
    )
}

fn header<'a>(response: &'a str, name: &str) -> Vec<&'a str> {
    let head = response.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .filter_map(|line| line.split_once(": "))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read(path)
        .map(|bytes| {
            String::from_utf8(bytes)
                .expect("log lines are ASCII")
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn wait_for_lines(path: &Path, count: usize) -> Vec<String> {
    wait_until(&format!("{count} lines in {}", path.display()), || {
        lines_of(path).len() >= count
    });
    lines_of(path)
}

/// `[07/Dec/2026:16:30:00 +0000]` replaced by `[TIME]`, after checking its shape.
fn without_time(line: &str) -> String {
    let start = line.find('[').expect("a time");
    let end = line.find(']').expect("a time");
    let time = &line[start + 1..end];
    let bytes = time.as_bytes();
    assert_eq!(time.len(), 26, "{time}");
    assert!(time.ends_with(" +0000"), "{time}");
    assert!(
        [2, 6, 11].iter().all(|&i| matches!(bytes[i], b'/' | b':'))
            && [14, 17].iter().all(|&i| bytes[i] == b':'),
        "{time}"
    );
    format!("{}[TIME]{}", &line[..start], &line[end + 1..])
}

fn access_log(daemon: &Daemon) -> PathBuf {
    daemon.dir().join("access.log")
}

#[test]
fn combined_lines_are_nginx_combined_byte_for_byte() {
    let backend = Backend::named("api!");
    let (daemon, _) = start(&config(backend.addr, "combined", ""));
    let addr = daemon.addr;
    get(addr, "/index.html", "User-Agent: curl/8.5.0\r\n");
    // The parser refuses `"` and control bytes in a target or field; obs-text in a field
    // value passes and must be escaped.
    exchange(
        addr,
        b"GET /api/x?q=%22quoted%22&a=[1] HTTP/1.1\r\nHost: t\r\n\
          User-Agent: Mozilla/5.0 \"odd\" \\ \xff\xc3\xa9\r\nReferer: http://r.example/p\r\n\
          Connection: close\r\n\r\n",
    );
    get(addr, "/missing", "");
    exchange(addr, b"BAD\r\n\r\n");
    let lines = wait_for_lines(&access_log(&daemon), 4);
    let lines: Vec<String> = lines.iter().map(|l| without_time(l)).collect();
    assert_eq!(
        lines,
        [
            "127.0.0.1 - - [TIME] \"GET /index.html HTTP/1.1\" 200 4 \"-\" \"curl/8.5.0\"",
            "127.0.0.1 - - [TIME] \"GET /api/x?q=%22quoted%22&a=[1] HTTP/1.1\" 200 4 \"http://r.example/p\" \"Mozilla/5.0 \\x22odd\\x22 \\x5C \\xFF\\xC3\\xA9\"",
            "127.0.0.1 - - [TIME] \"GET /missing HTTP/1.1\" 404 148 \"-\" \"-\"",
            "127.0.0.1 - - [TIME] \"-\" 400 152 \"-\" \"-\"",
        ]
        .map(|l| l.to_string())
    );
}

#[test]
fn goaccess_reads_the_combined_log_and_counts_every_request() {
    let backend = Backend::named("api!");
    let (daemon, _) = start(&config(backend.addr, "combined", ""));
    let addr = daemon.addr;
    let mut sent = 0;
    for i in 0..20 {
        get(
            addr,
            &format!("/index.html?n={i}"),
            "User-Agent: curl/8.5.0\r\n",
        );
        exchange(
            addr,
            format!(
                "GET /api/%22{i}%22?a=[x]&b='y' HTTP/1.1\r\nHost: t\r\n\
                 User-Agent: Mozilla/5.0 \"quoted\" \\ tail\r\nReferer: http://r.example/\"x\"\r\n\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        let mut odd = b"GET /odd HTTP/1.1\r\nHost: t\r\nUser-Agent: \xff\xfe \"\r\n".to_vec();
        odd.extend_from_slice(b"Connection: close\r\n\r\n");
        exchange(addr, &odd);
        get(addr, "/missing", "");
        sent += 4;
    }
    let path = access_log(&daemon);
    wait_for_lines(&path, sent);
    let report = daemon.dir().join("report.json");
    let output = Command::new("goaccess")
        .arg(&path)
        .args(["--log-format=COMBINED", "--no-global-config", "-o"])
        .arg(&report)
        .output()
        .expect("run goaccess (Debian package goaccess)");
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let general = &report["general"];
    assert_eq!(general["total_requests"], sent, "{general}");
    assert_eq!(general["valid_requests"], sent, "{general}");
    assert_eq!(general["failed_requests"], 0, "{general}");
}

#[test]
fn json_lines_carry_the_fields() {
    let backend = Backend::named("api!");
    let (daemon, _) = start(&config(backend.addr, "json", ""));
    let addr = daemon.addr;
    get(
        addr,
        "/api/j",
        "User-Agent: agent \"x\"\r\nX-Request-Id: req-42\r\n",
    );
    get(addr, "/index.html", "");
    let lines = wait_for_lines(&access_log(&daemon), 2);
    let proxied: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(proxied["client"], "127.0.0.1");
    assert_eq!(proxied["method"], "GET");
    assert_eq!(proxied["target"], "/api/j");
    assert_eq!(proxied["protocol"], "HTTP/1.1");
    assert_eq!(proxied["status"], 200);
    assert_eq!(proxied["bytes"], 4);
    assert_eq!(proxied["backend"], "b1");
    assert_eq!(proxied["upstream_address"], backend.addr.to_string());
    assert!(proxied["upstream_time_us"].is_u64(), "{proxied}");
    assert_eq!(proxied["route"], "api");
    assert_eq!(proxied["request_id"], "req-42");
    assert_eq!(proxied["user_agent"], "agent \"x\"");
    assert!(proxied["referer"].is_null());
    assert!(proxied["duration_us"].is_u64() && proxied["request_bytes"].is_u64());
    assert!(proxied["time"].as_str().unwrap().ends_with('Z'));
    let local: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(local["route"], "site");
    assert!(local["backend"].is_null());
    assert!(local["upstream_address"].is_null() && local["upstream_time_us"].is_null());
    assert_eq!(local["request_id"].as_str().unwrap().len(), 32);
}

#[test]
fn sigusr1_reopens_the_file_after_a_move_and_loses_nothing() {
    let backend = Backend::named("api!");
    let (daemon, _) = start(&config(backend.addr, "combined", ""));
    let addr = daemon.addr;
    let path = access_log(&daemon);
    let rotated = daemon.dir().join("access.log.1");
    // Requests keep flowing on another thread while the file is moved and reopened.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looping = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sent = 0usize;
            let deadline = Instant::now() + WAIT;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                assert!(get(addr, "/index.html", "").starts_with("HTTP/1.1 200"));
                sent += 1;
            }
            sent
        })
    };
    wait_until("lines in the first file", || lines_of(&path).len() >= 50);
    // logrotate: move the file, then signal.
    std::fs::rename(&path, &rotated).unwrap();
    daemon.signal("USR1");
    wait_until("lines in the new file", || lines_of(&path).len() >= 50);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let total = looping.join().unwrap();
    wait_until("every line in one file or the other", || {
        lines_of(&rotated).len() + lines_of(&path).len() >= total
    });
    let (old, new) = (lines_of(&rotated).len(), lines_of(&path).len());
    assert_eq!(old + new, total, "old {old} + new {new}");
    daemon.wait_for_log("reopening the access log", WAIT);
}

#[test]
fn a_clean_exit_writes_the_last_lines() {
    let backend = Backend::named("api!");
    // A flush interval far longer than the test: only the exit can write the lines.
    let (mut daemon, _) = start(&config(
        backend.addr,
        "combined",
        "  access_log_flush_ms: 10000\n",
    ));
    for _ in 0..25 {
        get(daemon.addr, "/index.html", "");
    }
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    assert_eq!(lines_of(&access_log(&daemon)).len(), 25);
}

#[test]
fn lines_the_file_cannot_take_are_dropped_and_counted() {
    let backend = Backend::named("api!");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("site")).unwrap();
    std::fs::write(dir.path().join("site/index.html"), "home").unwrap();
    // A FIFO nobody reads: the writer's open blocks, so every worker's buffer fills.
    let fifo = dir.path().join("access.log");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let yaml = config(
        backend.addr,
        "combined",
        "  access_log_buffer_bytes: 1024\n",
    );
    let daemon = Daemon::start_in(dir.path(), &yaml);
    let admin = addr_in(&daemon.wait_for_log("admin listening", WAIT));
    for _ in 0..100 {
        assert!(get(daemon.addr, "/index.html", "").starts_with("HTTP/1.1 200"));
    }
    let metrics = get(admin, "/metrics", "");
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sentinel_access_log_dropped_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no drop counter in {metrics}"));
    // 1024 bytes hold about a dozen lines; the rest of the 100 are dropped.
    assert!(dropped >= 50.0, "dropped {dropped}");
    daemon.wait_for_log("lines dropped", WAIT);
}

#[test]
fn request_ids_are_kept_made_forwarded_and_returned() {
    let backend = Backend::start(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nX-Request-Id: from-backend\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    });
    let (daemon, _) = start(&config(backend.addr, "json", ""));
    let addr = daemon.addr;

    // Kept: the backend sees it once, the client gets it back, not the backend's.
    let proxied = get(addr, "/api/a", "X-Request-Id: abc-123\r\n");
    assert_eq!(header(&proxied, "x-request-id"), ["abc-123"], "{proxied}");
    let seen = backend.seen();
    assert_eq!(seen[0].header("x-request-id"), Some("abc-123"));
    assert_eq!(seen[0].header_count("x-request-id"), 1);

    // Made: 32 hex characters, different each time, forwarded.
    let made = get(addr, "/api/b", "");
    let id = header(&made, "x-request-id")[0].to_string();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(backend.seen()[1].header("x-request-id"), Some(id.as_str()));
    let again = get(addr, "/api/b", "");
    assert_ne!(header(&again, "x-request-id")[0], id);

    // Invalid (too long): replaced.
    let long = "a".repeat(201);
    let replaced = get(addr, "/api/c", &format!("X-Request-Id: {long}\r\n"));
    assert_eq!(header(&replaced, "x-request-id")[0].len(), 32);

    // Static files and error pages carry it too.
    let page = get(addr, "/index.html", "X-Request-Id: s-1\r\n");
    assert_eq!(header(&page, "x-request-id"), ["s-1"], "{page}");
    let missing = get(addr, "/missing", "X-Request-Id: e-1\r\n");
    assert!(missing.starts_with("HTTP/1.1 404"));
    assert_eq!(header(&missing, "x-request-id"), ["e-1"], "{missing}");

    // And the log has each one.
    let lines = wait_for_lines(&access_log(&daemon), 6);
    let ids: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].to_string())
        .collect();
    assert_eq!(ids[0], "\"abc-123\"");
    assert_eq!(ids[1], format!("\"{id}\""));
    assert_eq!(ids[4], "\"s-1\"");
    assert_eq!(ids[5], "\"e-1\"");
}

#[test]
fn request_ids_can_be_turned_off() {
    let backend = Backend::named("api!");
    let (daemon, _) = start(&config(backend.addr, "combined", "  request_id: false\n"));
    let proxied = get(daemon.addr, "/api/a", "X-Request-Id: passes\r\n");
    assert!(header(&proxied, "x-request-id").is_empty(), "{proxied}");
    // Not ours to manage: the client's field passes to the backend as it was.
    assert_eq!(backend.seen()[0].header("x-request-id"), Some("passes"));
    let page = get(daemon.addr, "/index.html", "");
    assert!(header(&page, "x-request-id").is_empty(), "{page}");
}

/// `key=value` pairs of a `text` access line after `sentinel::access: `, quoted values
/// unquoted (none of the test's values hold a quote or a space).
fn text_fields(line: &str) -> std::collections::HashMap<String, String> {
    let (_, fields) = line
        .split_once(" INFO sentinel::access: ")
        .unwrap_or_else(|| panic!("not a text access line: {line}"));
    fields
        .split(' ')
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("{pair} in {line}"));
            (key.to_string(), value.trim_matches('"').to_string())
        })
        .collect()
}

/// Issue 24: the default (`text`) access line now comes from the writer thread, shaped as
/// the tracing event was: timestamp, level, target, then the fields tools grep for.
#[test]
fn the_default_access_line_still_appears_and_parses() {
    let backend = Backend::named("api!");
    let yaml = config(backend.addr, "text", "").replace(
        "  access_log_format: text\n  access_log_path: access.log\n",
        "",
    );
    let (daemon, _) = start(&yaml);
    assert!(get(daemon.addr, "/api/x", "X-Request-Id: rid-1\r\n").starts_with("HTTP/1.1 200"));
    assert!(get(daemon.addr, "/missing", "").starts_with("HTTP/1.1 404"));
    let proxied = daemon.wait_for_log("target=\"/api/x\"", WAIT);
    let (time, rest) = proxied.split_once(' ').unwrap();
    assert!(time.ends_with('Z') && time.len() == 27, "{proxied}");
    assert!(
        rest.starts_with(" INFO sentinel::access: client=127.0.0.1:"),
        "{proxied}"
    );
    let fields = text_fields(&proxied);
    assert_eq!(fields["method"], "GET");
    assert_eq!(fields["version"], "HTTP/1.1");
    assert_eq!(fields["status"], "200");
    assert_eq!(fields["backend"], "b1");
    assert_eq!(fields["upstream_address"], backend.addr.to_string());
    assert!(
        fields["upstream_time_us"].parse::<u64>().is_ok(),
        "{proxied}"
    );
    assert!(fields["duration_us"].parse::<u64>().is_ok(), "{proxied}");
    assert_eq!(fields["rate_limit"], "-");
    assert_eq!(fields["request_id"], "rid-1");
    let local = daemon.wait_for_log("target=\"/missing\"", WAIT);
    let fields = text_fields(&local);
    assert_eq!(fields["status"], "404");
    assert_eq!(fields["backend"], "-");
    assert!(!fields.contains_key("upstream_time_us"), "{local}");
}

/// With `logging.format: json` the default access line is a JSON object with the fields
/// nested as the tracing JSON formatter nested them.
#[test]
fn the_default_access_line_in_json_logging_is_json() {
    let backend = Backend::named("api!");
    let yaml = config(backend.addr, "text", "  format: json\n")
        .replace("  access_log_path: access.log\n", "");
    let (daemon, _) = start(&yaml);
    get(daemon.addr, "/api/j", "");
    let line = daemon.wait_for_log("\"target\":\"/api/j\"", WAIT);
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["target"], "sentinel::access");
    assert_eq!(value["level"], "INFO");
    let fields = &value["fields"];
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["backend"], "b1");
    assert!(fields["client"].as_str().unwrap().starts_with("127.0.0.1:"));
}

/// `logging.format` takes effect at a restart: a reload that changes it leaves the access
/// line in the shape of the other log lines.
#[test]
fn a_reloaded_log_format_does_not_change_the_access_line_alone() {
    let backend = Backend::named("api!");
    let yaml = config(backend.addr, "text", "").replace(
        "  access_log_format: text\n  access_log_path: access.log\n",
        "",
    );
    let (daemon, _) = start(&yaml);
    let mark = daemon.log_len();
    daemon.rewrite_config(&format!("{yaml}  format: json\n"));
    daemon.wait_for_log_after(mark, "config reloaded", WAIT);
    get(daemon.addr, "/after-reload", "");
    let line = daemon.wait_for_log("target=\"/after-reload\"", WAIT);
    assert!(line.contains(" INFO sentinel::access: client="), "{line}");
}

/// Issue 24: `text` lines go through the writer, so they can have a file of their own.
#[test]
fn a_text_access_log_can_have_a_path() {
    let backend = Backend::named("api!");
    let (daemon, _) = start(&config(backend.addr, "text", ""));
    get(daemon.addr, "/index.html", "");
    get(daemon.addr, "/api/y", "");
    let lines = wait_for_lines(&access_log(&daemon), 2);
    assert!(
        lines[0].contains(" INFO sentinel::access: client=127.0.0.1:"),
        "{lines:?}"
    );
    assert_eq!(text_fields(&lines[0])["target"], "/index.html");
    assert_eq!(text_fields(&lines[1])["backend"], "b1");
    assert_eq!(daemon.count_log("sentinel::access"), 0, "not on stderr too");
}

/// Filtered out by `logging.level`, the text line is not written (the filter is read once
/// per configuration, not asked per request).
#[test]
fn a_filtered_access_event_writes_no_line() {
    let backend = Backend::named("api!");
    let yaml = config(backend.addr, "text", "").replace(
        "  level: info\n",
        "  level: \"info,sentinel::access=off\"\n",
    );
    let (mut daemon, _) = start(&yaml);
    assert!(get(daemon.addr, "/index.html", "").starts_with("HTTP/1.1 200"));
    // A clean exit writes every buffered line, so an empty file after it means none.
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    assert!(lines_of(&access_log(&daemon)).is_empty());
}

#[test]
fn a_reload_that_moves_the_path_opens_the_new_file() {
    let backend = Backend::named("api!");
    let yaml = config(backend.addr, "combined", "");
    let (daemon, _) = start(&yaml);
    get(daemon.addr, "/index.html", "");
    wait_for_lines(&access_log(&daemon), 1);
    let mark = daemon.log_len();
    daemon
        .rewrite_config(&yaml.replace("access_log_path: access.log", "access_log_path: moved.log"));
    daemon.wait_for_log_after(mark, "config reloaded", WAIT);
    get(daemon.addr, "/index.html", "");
    get(daemon.addr, "/index.html", "");
    let moved = daemon.dir().join("moved.log");
    wait_for_lines(&moved, 2);
    assert_eq!(lines_of(&access_log(&daemon)).len(), 1);
}
