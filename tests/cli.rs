//! The `sentinel` binary: `--check`, `--version`, `--help`, `LISTEN`, startup failures, what
//! its log lines say, and a clean stop on SIGTERM. Runs the real executable.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{signal, Daemon};

const BIN: &str = env!("CARGO_BIN_EXE_sentinel");

/// How long a test waits for a log line before failing.
const WAIT: Duration = Duration::from_secs(10);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_accepts_the_bundled_config_and_rejects_a_bad_one() {
    let ok = Command::new(BIN)
        .current_dir(repo())
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("valid"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "server:\n  listen_addr: \"127.0.0.1:0\"\n  typo: 1\n").unwrap();
    let failed = Command::new(BIN)
        .args(["--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("typo") && stderr.contains("bad.yaml:3:"),
        "{stderr}"
    );
}

#[test]
fn version_prints_the_crate_version() {
    let output = Command::new(BIN).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// The commit `build.rs` embeds, as `git` sees it now: the full hash of HEAD when this crate
/// is the top of a git checkout, `None` when the binary must say `unknown` (no `git`, no
/// checkout, or a crate inside some other repository).
fn head_commit() -> Option<String> {
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .arg("-C")
            .arg(repo())
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
        (output.status.success() && !text.is_empty()).then_some(text)
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let is_top = Path::new(&top).canonicalize().ok()? == repo().canonicalize().ok()?;
    is_top.then(|| git(&["rev-parse", "HEAD"])).flatten()
}

/// Asserts that `commit`, as the binary printed it, is the commit it was built from.
fn assert_is_head_commit(commit: &str, context: &str) {
    match head_commit() {
        Some(full) => assert!(
            commit.len() >= 7
                && commit.bytes().all(|b| b.is_ascii_hexdigit())
                && full.starts_with(commit),
            "commit {commit:?} is not HEAD ({full}): {context}"
        ),
        None => assert_eq!(commit, "unknown", "{context}"),
    }
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let output = Command::new(BIN).arg("--version").output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let commit = stdout
        .trim()
        .strip_prefix(concat!("sentinel ", env!("CARGO_PKG_VERSION"), " (commit "))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `sentinel VERSION (commit HASH)`: {stdout:?}"));
    assert_is_head_commit(commit, &stdout);
}

#[test]
fn help_names_the_environment_variables_and_signals() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "LISTEN",
        "server.listen_addr",
        "RUST_LOG",
        "logging.level",
        "SIGHUP",
        "SIGINT",
        "SIGTERM",
    ] {
        assert!(
            help.contains(needle),
            "--help does not mention {needle}:\n{help}"
        );
    }
}

#[test]
fn missing_config_fails_fast_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN).current_dir(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("config.yaml"), "{stderr}");
}

#[test]
fn address_in_use_fails_fast() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let output = Command::new(BIN)
        .current_dir(repo())
        .env("LISTEN", addr.to_string())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}

/// Runs the bundled config (serving `public/`) on the address given by `LISTEN`, fetches
/// the home page and a missing page, then stops it with SIGTERM.
#[cfg(unix)]
#[test]
fn serves_public_on_listen_and_stops_cleanly_on_sigterm() {
    let mut child = Command::new(BIN)
        .current_dir(repo())
        .env("LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let started = Instant::now();
    let addr = loop {
        let line = lines
            .next()
            .expect("sentinel exited before listening")
            .unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no listening line"
        );
    };
    // Keep draining the log so the child never blocks on a full pipe.
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let fetch = |path: &str| get_and_close(&addr, path);
    let home = fetch("/");
    assert!(home.starts_with("HTTP/1.1 200 OK\r\n"), "{home}");
    assert!(home.contains("Sentinel"));
    let missing = fetch("/missing-page");
    assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n"));
    let custom_404 = std::fs::read_to_string(repo().join("public/errors/404.html")).unwrap();
    assert!(missing.ends_with(&custom_404), "custom 404 page expected");

    signal(&child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let log = drain.join().unwrap().join("\n");
    assert!(
        log.contains("sentinel::access"),
        "one access event per request: {log}"
    );
    assert!(log.contains("status=404"), "{log}");
}

/// A backend that answers every request on every connection with 200 "up".
fn serve_up(listener: std::net::TcpListener) {
    serve_body(listener, "up");
}

/// A backend that answers every request on every connection with 200 and `body`.
fn serve_body(listener: std::net::TcpListener, body: &'static str) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    if line == "\r\n" {
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if writer.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                    line.clear();
                }
            });
        }
    });
}

#[cfg(unix)]
#[test]
fn backend_ejection_and_recovery_are_logged() {
    let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let live_addr = live.local_addr().unwrap();
    serve_up(live);
    // Reserve a port, then free it: the backend there is down until we listen again.
    let dead_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n    \
             - name: \"flaky\"\n      address: \"{dead_addr}\"\n    \
             - name: \"steady\"\n      address: \"{live_addr}\"\n  \
             max_fails: 1\n  fail_timeout_ms: 200\n  max_fail_timeout_ms: 200\n\
             logging:\n  level: \"info\"\n  access_log: false\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("exited before listening").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let fetch = || get_and_close(&addr, "/");
    for _ in 0..4 {
        assert!(
            fetch().ends_with("\r\n\r\nup"),
            "a live backend was available"
        );
    }
    // The flaky backend comes up; once its ejection ends it is used and recovers.
    let revived = std::net::TcpListener::bind(dead_addr).expect("rebind the freed port");
    serve_up(revived);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..4 {
        assert!(fetch().ends_with("\r\n\r\nup"));
    }
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let log = drain.join().unwrap().join("\n");
    let ejected = log
        .lines()
        .find(|l| l.contains("backend ejected"))
        .unwrap_or_else(|| panic!("no ejection logged: {log}"));
    assert!(
        ejected.contains("backend=flaky") && ejected.contains("ejected_for_ms=200"),
        "{ejected}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("backend recovered") && l.contains("backend=flaky")),
        "no recovery logged: {log}"
    );
}

#[cfg(unix)]
#[test]
fn a_dead_group_logs_each_failure_once_per_window_not_once_per_request() {
    // Two reserved, freed ports: both backends refuse every connection.
    let dead = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (first, second) = (dead(), dead());
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(
        dir.path(),
        &format!(
            "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n    \
             - name: \"one\"\n      address: \"{first}\"\n    \
             - name: \"two\"\n      address: \"{second}\"\n\
             logging:\n  level: \"info\"\n  access_log: false\n"
        ),
    );
    let addr = listening_addr(&daemon.listening);
    for _ in 0..10 {
        assert!(get_and_close(&addr, "/").starts_with("HTTP/1.1 502 "));
    }
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    let log = lines_after_line(&daemon, &daemon.listening);
    let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("connect to backend failed"),
        2,
        "one per backend: {log:#?}"
    );
    assert_eq!(count("no backend could take the request"), 1, "{log:#?}");
    assert!(
        count("backend not ejected") <= 2,
        "at most one per backend: {log:#?}"
    );
}

/// `GET path` on a fresh connection with `Connection: close`; the whole answer as text.
fn get_and_close(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// The log lines after `line` (the first line equal to it): what a reader of the log from
/// there on saw.
fn lines_after_line(daemon: &Daemon, line: &str) -> Vec<String> {
    let log = daemon.lines_after(0);
    let at = log
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("{line} is not in the log"));
    log[at + 1..].to_vec()
}

/// The address in a "listening" log line.
fn listening_addr(line: &str) -> String {
    line.split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("no addr= in the listening line")
        .to_string()
}

#[test]
fn server_workers_sets_the_runtime_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(
        dir.path(),
        &format!(
            "server:\n  listen_addr: \"127.0.0.1:0\"\n  workers: 3\nstatic_files:\n  root: \"{}\"\n\
             logging:\n  level: \"info\"\n",
            repo().join("public").display()
        ),
    );
    let listening = daemon.listening.clone();
    drop(daemon);
    assert!(listening.contains("workers=3"), "{listening}");
}

/// With one worker the runtime is a current-thread one, on the main thread: the proxy,
/// SIGHUP reloads (run on a blocking thread) and the drain on SIGTERM must all still work.
#[test]
fn one_worker_serves_reloads_and_drains() {
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    serve_up(backend);
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(
        dir.path(),
        &format!(
            "server:\n  listen_addr: \"127.0.0.1:0\"\n  workers: 1\nproxy:\n  backends:\n    \
             - name: \"b\"\n      address: \"{backend_addr}\"\nlogging:\n  level: \"info\"\n"
        ),
    );
    let listening = daemon.listening.clone();
    assert!(listening.contains("workers=1"), "{listening}");
    let addr = listening_addr(&listening);
    let fetch = || get_and_close(&addr, "/");
    assert!(fetch().ends_with("\r\n\r\nup"));
    daemon.signal("HUP");
    let reloaded = daemon.wait_for_log("config reloaded", WAIT);
    assert!(reloaded.contains("SIGHUP"), "{reloaded}");
    assert!(fetch().ends_with("\r\n\r\nup"));
    daemon.signal("TERM");
    let status = daemon.wait();
    assert!(status.success(), "{status:?}");
}

/// One `GET path` on an open keep-alive connection; the status line and the body.
fn get_keep_alive(stream: &mut TcpStream, path: &str) -> (String, String) {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
        assert!(head.len() < 64 * 1024, "endless head");
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Names of the process's threads (Linux truncates them to 15 bytes).
#[cfg(target_os = "linux")]
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// `server.runtime: per_core` with two workers: two threads with a runtime and an
/// `SO_REUSEPORT` listener each serve static files and the proxy over many connections, a
/// SIGHUP reload reaches both (the config is shared), and SIGTERM drains both.
#[cfg(unix)]
#[test]
fn per_core_workers_serve_reload_and_drain() {
    two_workers_serve_reload_and_drain("per_core");
}

/// The same with `server.runtime: shared`: one multi-thread runtime with two workers, one
/// listener and one accept loop.
#[cfg(unix)]
#[test]
fn shared_runtime_workers_serve_reload_and_drain() {
    two_workers_serve_reload_and_drain("shared");
}

#[cfg(unix)]
fn two_workers_serve_reload_and_drain(runtime: &str) {
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let first_addr = first.local_addr().unwrap();
    serve_body(first, "first");
    let second = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let second_addr = second.local_addr().unwrap();
    serve_body(second, "second");
    let config = |backend: std::net::SocketAddr| {
        format!(
            "server:\n  listen_addr: \"127.0.0.1:0\"\n  workers: 2\n  runtime: {runtime}\n\
             static_files:\n  root: \"{}\"\nproxy:\n  backends:\n    \
             - name: \"b\"\n      address: \"{backend}\"\n\
             routes:\n  - path_prefix: \"/api\"\n    upstream: default\n  \
             - path_prefix: \"/\"\n    static: true\n\
             logging:\n  level: \"info\"\n  access_log: false\n",
            repo().join("public").display()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(dir.path(), &config(first_addr));
    let listening = daemon.listening.clone();
    assert!(
        listening.contains("workers=2") && listening.contains(runtime),
        "{listening}"
    );
    let addr = listening_addr(&listening);
    // Per core, the kernel picks a listener per connection by a hash of its addresses: 32
    // fresh connections all answered means both accept loops work (all on one: odds 2^-31).
    for _ in 0..16 {
        let home = get_and_close(&addr, "/");
        assert!(home.starts_with("HTTP/1.1 200 OK\r\n"), "{home}");
        assert!(get_and_close(&addr, "/api/x").ends_with("\r\n\r\nfirst"));
    }
    // Checked once they have served: a thread names itself when it starts running.
    #[cfg(target_os = "linux")]
    if runtime == "per_core" {
        let names = thread_names(daemon.pid());
        let workers = names
            .iter()
            .filter(|n| n.starts_with("sentinel-worker"))
            .count();
        assert_eq!(workers, 2, "one thread per worker: {names:?}");
    }
    // Keep-alive connections, each reusing its own worker's pooled upstream connection.
    let mut kept: Vec<TcpStream> = (0..8)
        .map(|_| {
            let stream = TcpStream::connect(&addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream
        })
        .collect();
    for stream in &mut kept {
        for path in ["/api/a", "/", "/api/b"] {
            let (status, body) = get_keep_alive(stream, path);
            assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
            if path.starts_with("/api") {
                assert_eq!(body, "first");
            }
        }
    }

    std::fs::write(dir.path().join("config.yaml"), config(second_addr)).unwrap();
    daemon.signal("HUP");
    let reloaded = daemon.wait_for_log_where(0, WAIT, "of the SIGHUP reload", |line| {
        line.contains("config reloaded") && line.contains("SIGHUP")
    });
    assert!(reloaded.contains("backends_added"), "{reloaded}");
    // Every worker sees the new config: on new connections and on the kept ones.
    for _ in 0..16 {
        assert!(get_and_close(&addr, "/api/x").ends_with("\r\n\r\nsecond"));
    }
    for stream in &mut kept {
        assert_eq!(get_keep_alive(stream, "/api/c").1, "second");
    }

    // SIGTERM with idle keep-alive connections open on the workers: each worker stops
    // accepting, closes them, and the process exits well within drain_timeout_ms (10 s).
    daemon.signal("TERM");
    let status = daemon.wait();
    assert!(status.success(), "{status:?}");
    let log = lines_after_line(&daemon, &reloaded).join("\n");
    assert!(log.contains("all connections closed"), "{log}");
    for stream in &mut kept {
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        assert!(
            matches!(read, Ok(0)) || read.is_err(),
            "closed by the drain: {read:?}"
        );
    }
}

/// Regression: the watch line logged `file=Some("config.yaml")`, Rust's debug formatting of an
/// `Option`. Paths are logged as paths, and the `listening` line names the commit.
#[cfg(unix)]
#[test]
fn log_lines_show_paths_and_the_commit_not_debug_formatting() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(
        dir.path(),
        &format!(
            "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: \"{}\"\n\
             logging:\n  level: \"info\"\n",
            repo().join("public").display()
        ),
    );
    let listening = daemon.listening.clone();
    let commit = listening
        .split("commit=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no commit= in the listening line: {listening}"))
        .trim_matches('"');
    assert_is_head_commit(commit, &listening);

    let config = dir.path().join("config.yaml");
    let file_field = format!("file={}", config.display());
    let watching = daemon.wait_for_log("watching the config", WAIT);
    assert!(watching.contains(&file_field), "{watching}");
    daemon.signal("HUP");
    let reloaded = daemon.wait_for_log("config reloaded", WAIT);
    assert!(reloaded.contains(&file_field), "{reloaded}");
    daemon.signal("TERM");
    let status = daemon.wait();
    let rest = lines_after_line(&daemon, &reloaded);
    assert!(status.success());
    for line in [&listening, &watching, &reloaded].into_iter().chain(&rest) {
        assert!(!line.contains("Some("), "debug-formatted Option: {line}");
    }
}

#[test]
fn check_reports_every_error_with_its_line_then_a_count() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("public")).unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "server:\n  listen_addr: \"127.0.0.1:0\"\n  max_headers: 0\nstatic_files:\n  root: public\n\
         proxy:\n  backends:\n    - name: a\n      address: \"127.0.0.1:3000\"\n    - name: b\n      \
         address: \"127.0.0.1:70000\"\nroutes:\n  - upstream: nope\n",
    )
    .unwrap();
    let failed = Command::new(BIN)
        .args(["--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        ":3: server.max_headers: must be greater than 0",
        ":11: proxy.backends[1].address: port 70000 is out of range (1-65535)",
        ":13: routes[0].upstream: upstream \"nope\" is not defined",
    ];
    assert_eq!(lines.len(), expected.len() + 1, "{stderr}");
    for (line, wanted) in lines.iter().zip(expected) {
        assert!(
            line.starts_with("sentinel: ") && line.contains("bad.yaml") && line.contains(wanted),
            "{wanted} missing from: {stderr}"
        );
    }
    assert!(
        lines[3].starts_with("sentinel: configuration file ") && lines[3].ends_with("has 3 errors"),
        "{stderr}"
    );
    assert!(failed.stdout.is_empty());
}

/// Regression: a 504 after the backend timed out was logged with `backend="-"`, so the access
/// log could not say which backend let the request down.
#[cfg(unix)]
#[test]
fn the_access_event_of_a_504_names_the_backend_that_timed_out() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let held = silent.accept();
        let _ = released.recv();
        drop(held);
    });
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(
        dir.path(),
        &format!(
            "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  request_timeout_ms: 200\n  \
             backends:\n    - name: \"silent\"\n      address: \"{silent_addr}\"\n\
             logging:\n  level: \"info\"\n  access_log: true\n"
        ),
    );
    let addr = listening_addr(&daemon.listening);
    assert!(get_and_close(&addr, "/").starts_with("HTTP/1.1 504 "));
    release.send(()).unwrap();
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    let log = lines_after_line(&daemon, &daemon.listening);
    let access = log
        .iter()
        .find(|l| l.contains("sentinel::access"))
        .unwrap_or_else(|| panic!("no access event: {log:#?}"));
    assert!(
        access.contains("status=504") && access.contains("backend=\"silent\""),
        "{access}"
    );
    holder.join().unwrap();
}
