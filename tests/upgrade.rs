//! Binary upgrade on SIGUSR2 through the real binary, run from a copy in a temporary
//! directory so the test can put a second build at the same path: under a bounded request
//! loop (a new connection per request, and keep-alive clients) nothing is refused and no
//! request fails across the swap, the new process runs the new file, the service manager
//! is told the new main PID, and the old process exits after its drain. A new binary that
//! exits (a config it refuses) or never reports ready is reaped and the old one serves on.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{addr_in, Daemon};

const WAIT: Duration = Duration::from_secs(15);

/// One test at a time: a binary written while another test forks could be inherited open
/// by that child, and executing it would then fail with "text file busy".
static SERIAL: Mutex<()> = Mutex::new(());

fn config(extra_server: &str) -> String {
    format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\n  drain_timeout_ms: 3000\n{extra_server}\
         static_files:\n  root: \"site\"\n\
         admin:\n  listen_addr: \"127.0.0.1:0\"\n\
         logging:\n  level: info\n  access_log: false\n"
    )
}

/// `bytes` at `path`, executable, written beside it and renamed over it (as a package
/// manager installs a binary: the running one keeps its old, now unlinked, file).
fn install(path: &Path, bytes: &[u8]) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, bytes).unwrap();
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// Sentinel started from `dir/bin/sentinel`, a copy of the built binary, through a shell
/// that sets `WATCHDOG_PID` to its own PID (which `exec` hands to Sentinel), as systemd
/// does for its main process.
fn start_from_copy(yaml: &str, env: &[(&str, String)]) -> (Daemon, PathBuf) {
    let mut program = PathBuf::new();
    let daemon = Daemon::start_command(yaml, |bin, config| {
        let dir = config.parent().unwrap();
        std::fs::create_dir_all(dir.join("site")).unwrap();
        std::fs::write(dir.join("site/index.html"), "home").unwrap();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        program = dir.join("bin/sentinel");
        install(&program, &std::fs::read(bin).unwrap());
        let mut command = Command::new("sh");
        command
            .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
            .arg(&program)
            .arg("--config")
            .arg(config);
        for (key, value) in env {
            command.env(key, value);
        }
        command
    });
    (daemon, program)
}

/// The processes the old one started (the new binary): killed by PID when the test ends,
/// whether it passed or not.
struct Descendants(u32);

impl Drop for Descendants {
    fn drop(&mut self) {
        for pid in children_of(self.0) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// A process the test did not start directly (the new binary once its parent is gone),
/// stopped by PID at the end.
struct Adopted(u32);

impl Drop for Adopted {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

/// The test's `NOTIFY_SOCKET`, read all the time by a thread of its own (as systemd reads
/// it: a receiver that stops reading would fill its queue and lose messages).
struct Notifications {
    path: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Notifications {
    fn start() -> Notifications {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, done) = (seen.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let deadline = Instant::now() + WAIT * 4;
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(n) = socket.recv(&mut buf) {
                    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                    sink.lock().unwrap().push(message);
                }
            }
        });
        Notifications {
            path,
            seen,
            stop,
            reader: Some(reader),
            _dir: dir,
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn pid_in(line: &str) -> u32 {
    line.split("pid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line}"))
}

fn is_running(pid: u32) -> bool {
    // A zombie has exited: only its entry is left for the parent to reap.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// The processes whose parent is `pid` (zombies included).
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, then the parent's PID.
        let parent = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if parent == Some(pid) {
            children.push(child);
        }
    }
    children
}

/// One `GET /` on a new connection; `Err` says what went wrong.
fn fetch_once(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    if text.starts_with("HTTP/1.1 200") && text.ends_with("home") {
        Ok(())
    } else {
        Err(format!("answer: {text:?}"))
    }
}

/// Keep-alive requests on one connection. A connection the server closed while it was idle
/// (the drain closes idle connections) is reopened and the request sent again, as HTTP
/// clients do for a request that received no byte of answer (RFC 9112 §9.3.1); any other
/// failure counts.
fn keep_alive_client(addr: SocketAddr, stop: &AtomicBool, ok: &AtomicU64, failures: &Failures) {
    let mut connection: Option<(TcpStream, Vec<u8>)> = None;
    let deadline = Instant::now() + WAIT * 2;
    for _ in 0..100_000 {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return;
        }
        let reused = connection.is_some();
        let (stream, _) = match connection.as_mut() {
            Some(open) => open,
            None => match TcpStream::connect(addr) {
                Ok(stream) => {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    connection.insert((stream, Vec::new()))
                }
                Err(error) => {
                    failures.push(format!("keep-alive connect: {error}"));
                    continue;
                }
            },
        };
        let written = stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        let read = written.and_then(|()| read_answer(stream));
        match read {
            Ok(answer) if !answer.is_empty() => {
                let text = String::from_utf8_lossy(&answer);
                if text.starts_with("HTTP/1.1 200") && text.ends_with("home") {
                    ok.fetch_add(1, Ordering::Relaxed);
                    if text.to_ascii_lowercase().contains("connection: close") {
                        connection = None;
                    }
                } else {
                    failures.push(format!("keep-alive answer: {text:?}"));
                    connection = None;
                }
            }
            // Closed before any byte of the answer: retry on a new connection.
            Ok(_) | Err(_) if reused => connection = None,
            other => {
                failures.push(format!("keep-alive on a new connection: {other:?}"));
                connection = None;
            }
        }
    }
}

/// One answer whose body is "home": its bytes up to the end of that body, or fewer when
/// the connection closes first (empty: closed before any byte).
fn read_answer(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"home") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.len() > 64 * 1024 {
            break;
        }
    }
    Ok(answer)
}

#[derive(Default)]
struct Failures(Mutex<Vec<String>>);

impl Failures {
    fn push(&self, failure: String) {
        self.0.lock().unwrap().push(failure);
    }
}

/// The load: new-connection clients and keep-alive clients until `stop`, bounded in count
/// and time.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Failures>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Failures::default());
        let mut threads = Vec::new();
        for _ in 0..3 {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            threads.push(std::thread::spawn(move || {
                let deadline = Instant::now() + WAIT * 2;
                for _ in 0..100_000 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        return;
                    }
                    match fetch_once(addr) {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            failures.push(error);
                            0
                        }
                    };
                }
            }));
        }
        for _ in 0..2 {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            threads.push(std::thread::spawn(move || {
                keep_alive_client(addr, &stop, &ok, &failures)
            }));
        }
        Load {
            stop,
            ok,
            failures,
            threads,
        }
    }

    fn served(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stop and join; the failures seen.
    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let failures = self.failures.0.lock().unwrap();
        failures.clone()
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_upgrade_under_load_refuses_nothing_and_the_old_process_drains_and_exits() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let notify = Notifications::start();
    // Two per-core workers: two SO_REUSEPORT sockets, each with its own queue, to hand over.
    // A watchdog every 0.1 s that must go on from the new process.
    let (mut old, program) = start_from_copy(
        &config("  workers: 2\n  runtime: per_core\n"),
        &[
            ("NOTIFY_SOCKET", notify.path.display().to_string()),
            ("WATCHDOG_USEC", "200000".into()),
        ],
    );
    let _descendants = Descendants(old.pid());
    let admin = addr_in(&old.wait_for_log("admin listening", WAIT));
    let load = Load::start(old.addr);
    wait_until("requests before the upgrade", || load.served() > 50);

    // The "second build": the same program with bytes appended (an ELF file runs with
    // trailing data), so the new process's file is told apart from the old one's.
    let mut second = std::fs::read(&program).unwrap();
    second.extend_from_slice(b"sentinel second build");
    install(&program, &second);
    let before = old.log_len();
    old.signal("USR2");
    let line = old.wait_for_log_after(before, "the new process serves", WAIT);
    let new_pid = pid_in(&line);
    let _new = Adopted(new_pid);
    assert_ne!(new_pid, old.pid());

    // The old process drains and exits on its own, with success.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = old.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "the old process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the old process exited with {status}");
    let at_exit = load.served();
    wait_until("requests after the old process exited", || {
        load.served() > at_exit + 50
    });
    let failures = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );

    // The new process runs the new file from the same path, and owns the admin socket too.
    let exe = std::fs::read_link(format!("/proc/{new_pid}/exe")).unwrap();
    assert_eq!(exe, program, "the new process runs {exe:?}");
    let running = std::fs::metadata(format!("/proc/{new_pid}/exe")).unwrap();
    assert_eq!(running.len(), second.len() as u64);
    let mut probe = TcpStream::connect(admin).unwrap();
    probe
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    probe.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "readyz: {answer}");

    // The old process told the service manager to follow the new one (the new one says
    // nothing of its own start, which systemd would refuse from a PID not yet its main
    // one), and never said it was stopping.
    let seen = notify.seen();
    let handed_over = format!("MAINPID={new_pid}\nREADY=1\nSTATUS=serving (upgraded)");
    assert!(
        seen.contains(&handed_over),
        "no {handed_over:?} in {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|m| m.starts_with("READY=1")).count(),
        1,
        "one READY of the old process's own start: {seen:?}"
    );
    assert!(
        !seen.iter().any(|m| m.contains("STOPPING=1")),
        "the old process said STOPPING after handing over: {seen:?}"
    );
    // The watchdog goes on: the old process is gone, so these pings are the new one's
    // (it was not told the old PID in WATCHDOG_PID).
    wait_until("watchdog pings from the new process", || {
        let now = notify.seen();
        now[seen.len()..]
            .iter()
            .filter(|m| *m == "WATCHDOG=1")
            .count()
            >= 2
    });
}

#[test]
fn a_new_binary_that_refuses_its_config_is_reaped_and_the_old_one_serves_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (old, _program) = start_from_copy(&config(""), &[]);
    let _descendants = Descendants(old.pid());
    assert_eq!(fetch_once(old.addr), Ok(()));
    // The new process reads the config at the same path and refuses it.
    old.write_config("server: [not, a, mapping]\n");
    let before = old.log_len();
    old.signal("USR2");
    let line = old.wait_for_log_after(before, "upgrade failed", WAIT);
    assert!(line.contains("exited before it was ready"), "{line}");
    wait_until("the failed process to be reaped", || {
        children_of(old.pid()).is_empty()
    });
    assert!(is_running(old.pid()));
    assert_eq!(fetch_once(old.addr), Ok(()));
}

#[test]
fn a_new_binary_that_never_reports_ready_is_killed_after_the_timeout() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (mut old, program) = start_from_copy(&config("  upgrade_timeout_ms: 500\n"), &[]);
    let _descendants = Descendants(old.pid());
    // Starts, holds the sockets, never says it is ready.
    install(&program, b"#!/bin/sh\nexec sleep 60\n");
    let before = old.log_len();
    let started = Instant::now();
    old.signal("USR2");
    let line = old.wait_for_log_after(before, "upgrade failed", WAIT);
    assert!(line.contains("not ready within"), "{line}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    wait_until("the stuck process to be killed and reaped", || {
        children_of(old.pid()).is_empty()
    });
    assert_eq!(fetch_once(old.addr), Ok(()));
    // A later upgrade is still possible once a working binary is back in place.
    let before = old.log_len();
    install(
        &program,
        &std::fs::read(env!("CARGO_BIN_EXE_sentinel")).unwrap(),
    );
    old.signal("USR2");
    let line = old.wait_for_log_after(before, "the new process serves", WAIT);
    let _new = Adopted(pid_in(&line));
    wait_until("the old process to drain and exit", || {
        old.try_wait().is_some()
    });
    assert_eq!(fetch_once(old.addr), Ok(()), "the new process serves");
}

/// One `GET /` over TLS to `addr`: the status and body.
fn fetch_over_tls(addr: SocketAddr, pki: &common::tls::Pki) -> (u16, Vec<u8>) {
    let config = pki.client(&[&rustls::version::TLS13]);
    let mut client = common::tls::connect(addr, "localhost", config).expect("TLS handshake");
    client.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let response = client.read_response();
    (response.status, response.body)
}

#[test]
fn the_https_listener_is_handed_over_under_the_shared_runtime_too() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let pki = common::tls::Pki::default();
    let issued = pki.issue("localhost", &["localhost"]);
    let yaml = config("  workers: 2\n  runtime: shared\n")
        + &common::tls::tls_yaml(&[(&issued, &["localhost"])], "");
    let (mut old, _program) = start_from_copy(&yaml, &[]);
    let _descendants = Descendants(old.pid());
    let https = addr_in(&old.wait_for_log("listening for HTTPS", WAIT));
    assert_eq!(fetch_over_tls(https, &pki), (200, b"home".to_vec()));
    let before = old.log_len();
    old.signal("USR2");
    let line = old.wait_for_log_after(before, "the new process serves", WAIT);
    let new_pid = pid_in(&line);
    let _new = Adopted(new_pid);
    wait_until("the old process to drain and exit", || {
        old.try_wait().is_some()
    });
    // Both listeners, same addresses, now the new process's.
    assert_eq!(fetch_over_tls(https, &pki), (200, b"home".to_vec()));
    assert_eq!(fetch_once(old.addr), Ok(()));
    assert!(is_running(new_pid));
}
