//! Whom the binary serves as (issue 22): started as root it binds (a port below 1024
//! included), then switches to `server.user`, which `/proc` confirms; it refuses to serve as
//! root beyond loopback unless `server.allow_root` says so. Started as anyone else, it
//! refuses a `server.user` it cannot become. The branch taken depends on who runs the tests,
//! and each branch asserts.
#![cfg(target_os = "linux")]

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::daemon::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_sentinel");
const WAIT: Duration = Duration::from_secs(10);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A site directory anyone may read, as an unprivileged user must after the switch.
fn readable_site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("site")).unwrap();
    std::fs::write(dir.path().join("site/index.html"), "as nobody").unwrap();
    for path in [dir.path(), &dir.path().join("site")] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn config(listen: &str, server_extra: &str) -> String {
    format!("server:\n  listen_addr: \"{listen}\"\n{server_extra}static_files:\n  root: \"site\"\n")
}

/// The `Uid:` or `Gid:` line of `/proc/PID/status`: real, effective, saved, file system.
fn ids(pid: u32, which: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(which))
        .unwrap_or_else(|| panic!("no {which} in {status}"));
    line.split_whitespace()
        .skip(1)
        .map(|id| id.parse().unwrap())
        .collect()
}

fn supplementary_groups(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A loopback port below 1024 that nobody is using now.
fn free_privileged_port() -> u16 {
    (700..1000)
        .find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port between 700 and 1000")
}

fn get(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn root_binds_a_low_port_then_serves_as_server_user() {
    if !is_root() {
        // Not root: a server.user other than ourselves cannot be reached, and saying so is
        // the whole answer.
        let dir = readable_site();
        std::fs::write(
            dir.path().join("config.yaml"),
            config("127.0.0.1:0", "  user: \"root\"\n"),
        )
        .unwrap();
        let out = Command::new(BIN)
            .arg("--config")
            .arg(dir.path().join("config.yaml"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("needs the process to start as root"),
            "{said}"
        );
        return;
    }
    let dir = readable_site();
    let port = free_privileged_port();
    let daemon = Daemon::start_in(
        dir.path(),
        &config(&format!("127.0.0.1:{port}"), "  user: \"nobody\"\n"),
    );
    daemon.wait_for_log("switched to server.user", WAIT);
    assert_eq!(daemon.addr.port(), port);
    let pid = daemon.pid();
    assert_eq!(ids(pid, "Uid:"), vec![65534; 4], "every uid is nobody's");
    assert_eq!(
        ids(pid, "Gid:"),
        vec![65534; 4],
        "every gid is nobody's primary"
    );
    assert_eq!(supplementary_groups(pid), "65534", "root's groups are gone");
    // Every worker thread switched, not only the one that called setuid.
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: u32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            !uid_line.split_whitespace().skip(1).any(|id| id == "0"),
            "thread {tid}: {uid_line}"
        );
    }
    let answer = get(daemon.addr);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("as nobody"),
        "{answer}"
    );
}

#[test]
fn root_is_refused_beyond_loopback_unless_the_config_allows_it() {
    if !is_root() {
        // Nothing to refuse: an unprivileged process serves on any address as itself.
        let dir = readable_site();
        let daemon = Daemon::start_in(dir.path(), &config("0.0.0.0:0", ""));
        assert_eq!(daemon.count_log("serving as root"), 0);
        return;
    }
    let dir = readable_site();
    std::fs::write(dir.path().join("config.yaml"), config("0.0.0.0:0", "")).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .env_remove("LISTEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("refusing to serve as root on 0.0.0.0:0") && said.contains("server.user"),
        "{said}"
    );
    assert!(!said.contains("listening"), "bound before refusing: {said}");

    // Said explicitly: served as root, with a warning.
    let allowed = Daemon::start_in(dir.path(), &config("0.0.0.0:0", "  allow_root: true\n"));
    allowed.wait_for_log("server.allow_root is true", WAIT);
    assert_eq!(ids(allowed.pid(), "Uid:")[1], 0);
    drop(allowed);

    // Loopback only: a developer's machine; served as root with a warning to set a user.
    let local = Daemon::start_in(dir.path(), &config("127.0.0.1:0", ""));
    local.wait_for_log("every listener is on loopback", WAIT);
    assert!(get(local.addr).starts_with("HTTP/1.1 200"));
}

#[test]
fn check_reports_an_unknown_user_and_group() {
    let dir = readable_site();
    std::fs::write(
        dir.path().join("config.yaml"),
        config(
            "127.0.0.1:0",
            "  user: \"no-such-user-here\"\n  group: \"nogroup\"\n",
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--check")
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("server.user: no user \"no-such-user-here\""),
        "{said}"
    );
    std::fs::write(
        dir.path().join("config.yaml"),
        config(
            "127.0.0.1:0",
            "  user: \"nobody\"\n  group: \"no-such-group-here\"\n",
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--check")
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("server.group: no group \"no-such-group-here\""),
        "{said}"
    );
}
