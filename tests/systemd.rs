//! The service manager's protocols through the real binary: `sd_notify` messages read from
//! a test `NOTIFY_SOCKET` (READY once bound, RELOADING then READY around a SIGHUP reload,
//! STOPPING on SIGTERM, watchdog pings), and socket activation: listening sockets bound by
//! the test and passed as descriptors 3, 4 with `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{addr_in, Daemon};

const WAIT: Duration = Duration::from_secs(10);

fn config(extra: &str) -> String {
    format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\n{extra}\
         static_files:\n  root: \"site\"\n\
         logging:\n  level: info\n  access_log: false\n"
    )
}

fn write_site(config: &Path) {
    let site = config.parent().unwrap().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "home").unwrap();
}

/// A datagram socket in a temporary directory, as systemd's `NOTIFY_SOCKET`.
struct NotifyReceiver {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifyReceiver {
    fn new() -> NotifyReceiver {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifyReceiver {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next message that contains `needle`, skipping others; fails after `WAIT`.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 1024];
        let mut seen = Vec::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "no notification with {needle:?}; saw {seen:?}"
            );
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.contains(needle) {
                    return message;
                }
                seen.push(message);
            }
        }
    }
}

fn start_notified(receiver: &NotifyReceiver, extra_env: &[(&str, &str)]) -> Daemon {
    Daemon::start_command(&config(""), |bin, config| {
        write_site(config);
        let mut command = Command::new(bin);
        command
            .arg("--config")
            .arg(config)
            .env("NOTIFY_SOCKET", &receiver.path);
        for (key, value) in extra_env {
            command.env(key, value);
        }
        command
    })
}

fn get(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn ready_after_bind_reloading_then_ready_on_sighup_stopping_on_sigterm() {
    let receiver = NotifyReceiver::new();
    let mut daemon = start_notified(&receiver, &[]);
    let ready = receiver.wait_for("READY=1");
    assert!(
        ready.contains(&format!("MAINPID={}", daemon.pid())),
        "{ready}"
    );
    // Ready means bound: a request is served.
    assert!(get(daemon.addr).ends_with("home"));

    daemon.signal("HUP");
    let reloading = receiver.wait_for("RELOADING=1");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);
    receiver.wait_for("READY=1");

    daemon.signal("TERM");
    receiver.wait_for("STOPPING=1");
    assert!(daemon.wait().success());
}

#[test]
fn the_watchdog_is_pinged_at_half_its_timeout() {
    let receiver = NotifyReceiver::new();
    let daemon = start_notified(&receiver, &[("WATCHDOG_USEC", "200000")]);
    receiver.wait_for("READY=1");
    let started = Instant::now();
    receiver.wait_for("WATCHDOG=1");
    receiver.wait_for("WATCHDOG=1");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(daemon);
}

#[test]
fn an_abstract_notify_socket_gets_ready() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("sentinel-notify-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let _daemon = Daemon::start_command(&config(""), |bin, config| {
        write_site(config);
        let mut command = Command::new(bin);
        command
            .arg("--config")
            .arg(config)
            .env("NOTIFY_SOCKET", format!("@{name}"));
        command
    });
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
}

/// Clear close-on-exec on `fd` so a child can inherit it.
fn inheritable(listener: &TcpListener) {
    rustix::io::fcntl_setfd(listener, rustix::io::FdFlags::empty()).unwrap();
}

/// Start sentinel with `listeners` as descriptors 3, 4, ... through `sh`, which sets
/// `LISTEN_PID` to its own pid and then becomes sentinel (same pid).
fn start_activated(yaml: &str, listeners: &[&TcpListener], names: Option<&str>) -> Daemon {
    let mut redirections = String::new();
    for (i, listener) in listeners.iter().enumerate() {
        inheritable(listener);
        redirections += &format!(" {}<&{}", 3 + i, listener.as_raw_fd());
    }
    let script = format!(
        "LISTEN_PID=$$; LISTEN_FDS={}; export LISTEN_PID LISTEN_FDS; \
         exec \"$0\" --config \"$1\"{redirections}",
        listeners.len()
    );
    Daemon::start_command(yaml, |bin, config| {
        write_site(config);
        let mut command = Command::new("sh");
        command.arg("-c").arg(script).arg(bin).arg(config);
        if let Some(names) = names {
            command.env("LISTEN_FDNAMES", names);
        }
        command
    })
}

#[test]
fn passed_sockets_are_served_instead_of_binding_by_order_on_every_worker() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let passed = listener.local_addr().unwrap();
    let daemon = start_activated(
        &config("  workers: 2\n  runtime: per_core\n"),
        &[&listener],
        None,
    );
    // The configured port 0 was not bound: the listening line names the passed socket.
    assert_eq!(daemon.addr, passed);
    daemon.wait_for_log("using the listening sockets passed in LISTEN_FDS", WAIT);
    drop(listener);
    for _ in 0..20 {
        assert!(get(passed).ends_with("home"));
    }
}

#[test]
fn passed_sockets_are_matched_by_name() {
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let (admin_addr, http_addr) = (admin.local_addr().unwrap(), http.local_addr().unwrap());
    let yaml = config("").replace(
        "logging:",
        "admin:\n  listen_addr: \"127.0.0.1:0\"\nlogging:",
    );
    let daemon = start_activated(&yaml, &[&admin, &http], Some("admin:http"));
    assert_eq!(daemon.addr, http_addr);
    let line = daemon.wait_for_log("admin listening", WAIT);
    assert_eq!(addr_in(&line), admin_addr);
    drop((admin, http));
    assert!(get(http_addr).ends_with("home"));
    let mut stream = TcpStream::connect(admin_addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn a_passed_descriptor_that_is_not_a_listener_stops_the_start() {
    // LISTEN_FDS=1 with descriptor 3 a regular file: the unit is wrong; say so and exit 1.
    let dir = tempfile::tempdir().unwrap();
    let yaml_path = dir.path().join("config.yaml");
    std::fs::write(&yaml_path, config("")).unwrap();
    write_site(&yaml_path);
    let output = Command::new("sh")
        .arg("-c")
        .arg("LISTEN_PID=$$; LISTEN_FDS=1; export LISTEN_PID LISTEN_FDS; exec \"$0\" --config \"$1\" 3<\"$1\"")
        .arg(env!("CARGO_BIN_EXE_sentinel"))
        .arg(&yaml_path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LISTEN_FDS"), "{stderr}");
}
