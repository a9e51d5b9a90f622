//! The `sentinel` binary: `--check`, `--version`, `LISTEN`, startup failures and a clean
//! stop on SIGTERM. Runs the real executable.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sentinel");

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
        stderr.contains("typo") && stderr.contains("line 3"),
        "{stderr}"
    );
}

#[test]
fn version_prints_the_crate_version() {
    let output = Command::new(BIN).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
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

    let fetch = |path: &str| {
        let mut stream = TcpStream::connect(&addr).unwrap();
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
    };
    let home = fetch("/");
    assert!(home.starts_with("HTTP/1.1 200 OK\r\n"), "{home}");
    assert!(home.contains("Sentinel"));
    let missing = fetch("/missing-page");
    assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n"));
    let custom_404 = std::fs::read_to_string(repo().join("public/errors/404.html")).unwrap();
    assert!(missing.ends_with(&custom_404), "custom 404 page expected");

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
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
