//! Issue 18, the live dashboard, through the real binary: the page and its assets are served
//! without the token under a strict Content-Security-Policy while its feed wants the token,
//! the feed fills its history from the sampler; and, in the distribution's headless
//! Chromium (driven by `tests/browser/dashboard.mjs`), a person sees each backend's name and
//! state, and sees a backend turn `down` when its process is killed, without reloading the
//! page. The browser run leaves a screenshot under `target/test-artifacts/`.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::daemon::{addr_in, Daemon};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "dash-test-token";

/// A backend: another `sentinel` serving a static site, so stopping it is killing a process.
fn backend(name: &str) -> Daemon {
    Daemon::start(
        "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: site\n\
         logging:\n  level: info\n  access_log: false\n",
        &[("site/index.html", name), ("site/health", "ok")],
    )
}

/// The proxy in front of `backends`, probing them every 200 ms, with a token-guarded admin
/// listener whose dashboard samples four times a second.
fn proxy(backends: &[(&str, SocketAddr)]) -> (Daemon, SocketAddr) {
    let mut yaml = String::from("server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n");
    for (name, addr) in backends {
        yaml += &format!("    - name: \"{name}\"\n      address: \"{addr}\"\n");
    }
    yaml += "  health_check:\n    path: /health\n    interval_ms: 200\n    jitter_ms: 20\n    \
             timeout_ms: 500\n    fall: 2\n    rise: 1\n\
             routes:\n  - name: site\n    path_prefix: /\n    upstream: default\n";
    yaml += &format!(
        "admin:\n  listen_addr: \"127.0.0.1:0\"\n  token: \"{TOKEN}\"\n  \
         dashboard_sample_ms: 250\n"
    );
    yaml += "logging:\n  level: info\n  access_log: false\n";
    let daemon = Daemon::start(&yaml, &[]);
    let admin = addr_in(&daemon.wait_for_log("admin listening", WAIT));
    (daemon, admin)
}

/// One GET with `extra` header lines on a new connection: (status, head, body).
fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

fn bearer() -> String {
    format!("Authorization: Bearer {TOKEN}\r\n")
}

fn feed(admin: SocketAddr, since: u64) -> serde_json::Value {
    let (status, head, body) = get(
        admin,
        &format!("/admin/dashboard.json?since={since}"),
        &bearer(),
    );
    assert_eq!(status, 200, "{head}");
    serde_json::from_str(&body).unwrap()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn the_page_is_public_its_data_wants_the_token_and_fills_with_samples() {
    let alpha = backend("alpha");
    let (daemon, admin) = proxy(&[("alpha", alpha.addr)]);

    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/dashboard.js", "text/javascript; charset=utf-8"),
        ("/dashboard.css", "text/css; charset=utf-8"),
    ] {
        let (status, head, body) = get(admin, path, "");
        assert_eq!(status, 200, "{path}: {head}");
        assert_eq!(header(&head, "content-type"), Some(content_type), "{head}");
        let csp = header(&head, "content-security-policy").unwrap_or("");
        assert!(
            csp.starts_with("default-src 'none'; script-src 'self';"),
            "{head}"
        );
        assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&head, "cache-control"), Some("no-cache"));
        assert!(!body.is_empty());
    }
    // The data is guarded like every other admin endpoint.
    let (status, head, _) = get(admin, "/admin/dashboard.json", "");
    assert_eq!(status, 401, "{head}");
    assert_eq!(header(&head, "www-authenticate"), Some("Bearer"));
    let wrong = "Authorization: Bearer dash-test-tokex\r\n";
    assert_eq!(get(admin, "/admin/dashboard.json", wrong).0, 401);

    // Traffic, then samples: the feed's history grows and `since` leaves out what was seen.
    let deadline = Instant::now() + WAIT;
    let first = loop {
        assert_eq!(get(daemon.addr, "/", "").0, 200);
        let json = feed(admin, 0);
        let points = json["upstreams"][0]["backends"][0]["history"]
            .as_array()
            .map_or(0, Vec::len);
        if points >= 4 {
            break json;
        }
        assert!(
            Instant::now() < deadline,
            "no history after {WAIT:?}: {json}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let alpha_row = &first["upstreams"][0]["backends"][0];
    assert_eq!(alpha_row["name"], "alpha");
    assert_eq!(alpha_row["state"], "healthy");
    assert!(alpha_row["requests"].as_u64().unwrap() >= 4, "{alpha_row}");
    let history = alpha_row["history"].as_array().unwrap();
    let busiest = history
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(
        busiest > 0.0,
        "requests per second never above 0: {history:?}"
    );
    assert!(
        history
            .iter()
            .any(|p| p[3].as_f64().is_some_and(|ms| ms > 0.0)),
        "no mean latency in {history:?}"
    );
    assert_eq!(first["sample_interval_ms"], 250);
    assert_eq!(first["history_samples"], 1200);
    assert_eq!(first["reloads"]["recent"][0]["result"], "loaded");
    assert_eq!(first["reloads"]["recent"][0]["trigger"], "startup");
    let seq = first["seq"].as_u64().unwrap();
    let later = feed(admin, seq);
    let new_points = later["upstreams"][0]["backends"][0]["history"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert!(
        new_points <= later["seq"].as_u64().unwrap() - seq,
        "since={seq} returned {new_points} points: {later}"
    );
}

/// The browser side of the line protocol: `node tests/browser/dashboard.mjs <url>`.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Browser {
    fn start(url: &str) -> Browser {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        install_node_packages(&dir);
        assert!(
            Path::new("/usr/bin/chromium").exists() || std::env::var_os("CHROMIUM").is_some(),
            "no /usr/bin/chromium: install the distribution's `chromium` package (.ci/run does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("dashboard.mjs"))
            .arg(url)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run node (install Node.js 20 or later)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Browser {
            child,
            stdin,
            lines,
        }
    }

    /// The next line the script prints, within `wait`.
    fn line(&self, wait: Duration) -> String {
        self.lines
            .recv_timeout(wait)
            .unwrap_or_else(|e| panic!("no answer from the browser within {wait:?}: {e}"))
    }

    fn ask(&mut self, command: &str, wait: Duration) -> String {
        writeln!(self.stdin, "{command}").expect("write to the browser script");
        self.stdin.flush().unwrap();
        self.line(wait)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `{"navigations":..,"problems":[..]}` every answer ends with, checked: one page load,
/// no script error, no policy violation, no failed poll.
fn assert_clean(answer: &str) {
    let at = answer
        .rfind(" {\"navigations\"")
        .unwrap_or_else(|| panic!("no status in {answer}"));
    let status: serde_json::Value = serde_json::from_str(&answer[at + 1..]).unwrap();
    assert_eq!(status["navigations"], 1, "the page was reloaded: {answer}");
    assert_eq!(
        status["problems"],
        serde_json::json!([]),
        "the page reported problems: {answer}"
    );
}

/// The rows a `READY`/`ROWS` answer lists: (backend, state as shown, row text).
fn rows(answer: &str) -> Vec<(String, String, String)> {
    let start = answer.find(' ').unwrap() + 1;
    let end = answer.rfind(" {\"navigations\"").unwrap();
    let rows: serde_json::Value = serde_json::from_str(&answer[start..end]).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["backend"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
                r["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Where test artefacts go: `target/test-artifacts/`.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_person_sees_every_backend_and_one_going_down_when_its_process_stops() {
    let alpha = backend("alpha");
    let beta = backend("beta");
    let (alpha_addr, beta_addr) = (alpha.addr, beta.addr);
    let (daemon, admin) = proxy(&[("alpha", alpha_addr), ("beta", beta_addr)]);

    // Steady traffic through the proxy, so rates and latencies move; bounded in time.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, addr) = (Arc::clone(&stop), daemon.addr);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok(mut stream) = TcpStream::connect(addr) {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ =
                        stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                    let _ = stream.read_to_end(&mut Vec::new());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // The token travels in the fragment: never sent to the server, taken by the page.
    let mut browser = Browser::start(&format!("http://{admin}/#token={TOKEN}"));
    let ready = browser.line(Duration::from_secs(40));
    assert!(ready.starts_with("READY "), "{ready}");
    assert_clean(&ready);
    let shown = rows(&ready);
    for (name, addr) in [("alpha", alpha_addr), ("beta", beta_addr)] {
        let (_, _, text) = shown
            .iter()
            .find(|(backend, _, _)| backend == name)
            .unwrap_or_else(|| panic!("no row for {name}: {shown:?}"));
        assert!(text.starts_with(name), "{text}");
        assert!(text.contains(&addr.to_string()), "{text}");
    }
    for name in ["alpha", "beta"] {
        let answer = browser.ask(&format!("wait {name} healthy 10000"), WAIT + WAIT);
        assert!(answer.starts_with("OK "), "{answer}");
        assert_clean(&answer);
    }

    // Stop beta's process; the page, polling, shows it down.
    drop(beta);
    let answer = browser.ask("wait beta down 15000", Duration::from_secs(25));
    assert!(answer.starts_with("OK beta down "), "{answer}");
    assert_clean(&answer);
    let answer = browser.ask("rows", WAIT);
    let shown = rows(&answer);
    let state = |name: &str| {
        shown
            .iter()
            .find(|(backend, _, _)| backend == name)
            .map(|(_, state, text)| (state.clone(), text.clone()))
            .unwrap_or_else(|| panic!("no row for {name}: {shown:?}"))
    };
    assert_eq!(state("alpha").0, "healthy", "{answer}");
    let (beta_state, beta_text) = state("beta");
    assert_eq!(beta_state, "down");
    // The reason is on the row, as the health check gave it; a click shows it whole.
    assert!(
        beta_text.contains("active health check down"),
        "{beta_text}"
    );
    let answer = browser.ask("click tr[data-backend=beta] td.why", WAIT);
    assert!(answer.starts_with("ROWS "), "{answer}");
    let answer = browser.ask("reason beta", WAIT);
    let reason = answer
        .strip_prefix("REASON ")
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(reason.contains("last: connect"), "{reason}");

    let answer = browser.ask("text", WAIT);
    let text: String = serde_json::from_str(answer.strip_prefix("TEXT ").unwrap()).unwrap();
    for needle in [
        "Backends healthy",
        "1 / 2",
        "Requests per second",
        "Recent reloads",
        "startup",
    ] {
        assert!(text.contains(needle), "{needle:?} not on the page:\n{text}");
    }

    let shot = artifacts().join("dashboard.png");
    let answer = browser.ask(&format!("screenshot {}", shot.display()), WAIT + WAIT);
    assert!(answer.starts_with("SAVED "), "{answer}");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    println!("dashboard screenshot: {}", shot.display());

    let answer = browser.ask("quit", WAIT + WAIT);
    assert_eq!(answer, "BYE");
    stop.store(true, Ordering::SeqCst);
    traffic.join().unwrap();
    drop(alpha);
}

#[test]
fn fifty_backends_stay_readable_and_sort_by_state() {
    let alpha = backend("alpha");
    let beta = backend("beta");
    // 48 more on ports nothing listens on: the health check takes them down.
    let mut backends = vec![
        ("alpha".to_string(), alpha.addr),
        ("beta".to_string(), beta.addr),
    ];
    for n in 0..48 {
        backends.push((format!("gone-{n:02}"), common::backend::closed_port()));
    }
    let named: Vec<(&str, SocketAddr)> = backends.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let (_daemon, admin) = proxy(&named);

    let mut browser = Browser::start(&format!("http://{admin}/#token={TOKEN}"));
    let ready = browser.line(Duration::from_secs(40));
    assert!(ready.starts_with("READY "), "{ready}");
    assert_clean(&ready);
    assert_eq!(rows(&ready).len(), 50, "{ready}");
    let answer = browser.ask("wait gone-47 down 15000", Duration::from_secs(25));
    assert!(answer.starts_with("OK "), "{answer}");
    let answer = browser.ask("wait alpha healthy 10000", WAIT + WAIT);
    assert!(answer.starts_with("OK "), "{answer}");

    // Worst first, then flipped: the two healthy ones lead.
    let answer = browser.ask("click th[data-sort=state]", WAIT);
    assert!(answer.starts_with("ROWS "), "{answer}");
    let sorted = rows(&answer);
    assert_eq!(sorted.len(), 50);
    assert_eq!(sorted[0].1, "down", "{answer}");
    let answer = browser.ask("click th[data-sort=state]", WAIT);
    let sorted = rows(&answer);
    let leaders: Vec<&str> = sorted[..2].iter().map(|r| r.1.as_str()).collect();
    assert_eq!(leaders, ["healthy", "healthy"], "{answer}");
    assert_clean(&answer);

    let shot = artifacts().join("dashboard-50-backends.png");
    let answer = browser.ask(&format!("screenshot {}", shot.display()), WAIT + WAIT);
    assert!(answer.starts_with("SAVED "), "{answer}");
    println!("dashboard screenshot: {}", shot.display());
    assert_eq!(browser.ask("quit", WAIT + WAIT), "BYE");
}

/// The browser driver's Node packages, from the committed lock file: installed once per test
/// run when missing, so `cargo test` stays the one test command. A failed install fails the
/// test with npm's reason; it never skips.
fn install_node_packages(dir: &Path) {
    static INSTALLED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *installed || dir.join("node_modules/playwright-core").is_dir() {
        *installed = true;
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        // The distribution's Chromium is driven; playwright must not fetch a browser.
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .unwrap_or_else(|e| panic!("the browser test needs npm (Node.js 20 or later): {e}"));
    assert!(
        out.status.success(),
        "`npm ci --prefix tests/browser` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    *installed = true;
}
