//! SF-009: a 1 GiB file costs no more memory than a 1 MiB one. Runs the real binary and
//! reads its peak resident set (VmHWM) from /proc, so this is Linux-only.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sentinel");

struct Daemon {
    child: Child,
    addr: String,
}

impl Daemon {
    fn start(root: &std::path::Path, dir: &std::path::Path) -> Daemon {
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: \"{}\"\n\
                 logging:\n  level: \"info\"\n  access_log: false\n",
                root.display()
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
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().expect("exited before listening").unwrap();
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Daemon { child, addr }
    }

    /// Peak resident set size in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    /// GET `path` and count the body bytes without keeping them.
    fn download(&self, path: &str) -> u64 {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        let started = Instant::now();
        loop {
            match stream.read(&mut buf).unwrap() {
                0 => break,
                n => total += n as u64,
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "download too slow"
            );
        }
        total
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sf_009_one_gib_file_costs_no_more_memory_than_one_mib() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    // Sparse files: the test measures the server, not the disk.
    std::fs::File::create(root.join("1m.bin"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    std::fs::File::create(root.join("1g.bin"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();

    let daemon = Daemon::start(&root, dir.path());
    assert!(daemon.download("/1m.bin") > 1 << 20);
    assert!(daemon.download("/1m.bin") > 1 << 20);
    let after_small = daemon.peak_rss_kib();
    assert!(daemon.download("/1g.bin") > 1 << 30);
    let after_large = daemon.peak_rss_kib();
    let growth = after_large.saturating_sub(after_small);
    eprintln!("peak RSS: {after_small} KiB after 1 MiB, {after_large} KiB after 1 GiB");
    // One read piece is 64 KiB; allow allocator and socket-buffer noise, far below the file.
    assert!(
        growth < 4 * 1024,
        "peak RSS grew by {growth} KiB serving 1 GiB"
    );
}
