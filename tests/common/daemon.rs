//! The real `sentinel` binary as a child process: started on a config file (without
//! `RUST_LOG` and `LISTEN` from the environment), its stderr collected line by line on a
//! thread of its own so the child never blocks on a full pipe, waits for log lines with a
//! deadline, signals by name, and killed (and reaped) on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sentinel");

/// How long a start waits for the `listening` line.
const START_WAIT: Duration = Duration::from_secs(10);

/// How often a wait for a log line looks again.
const POLL: Duration = Duration::from_millis(10);

pub struct Daemon {
    /// The main listener's address, from the `listening` line.
    pub addr: SocketAddr,
    /// The `listening` line itself (it names the workers, the runtime and the commit).
    pub listening: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    config: PathBuf,
    /// The directory the daemon owns, if it made one; removed after the child is gone.
    _dir: Option<tempfile::TempDir>,
}

impl Daemon {
    /// The binary on `yaml`, written as `config.yaml` in a new temporary directory that
    /// also holds `files` (paths relative to it, parent directories made as needed).
    pub fn start(yaml: &str, files: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, content) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("a file in the directory"))
                .expect("create a directory for a file");
            std::fs::write(&path, content).expect("write a file");
        }
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).expect("write the config");
        Daemon::spawn(config, Some(dir))
    }

    /// The binary on `yaml`, written as `dir/config.yaml`; the caller keeps `dir`.
    pub fn start_in(dir: &Path, yaml: &str) -> Daemon {
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).expect("write the config");
        Daemon::spawn(config, None)
    }

    /// The binary on `yaml` as [`Daemon::start`], started by the command `make` builds from
    /// the binary's path and the config's (extra environment, a wrapper that passes
    /// descriptors); its stderr is collected as usual.
    pub fn start_command(yaml: &str, make: impl FnOnce(&Path, &Path) -> Command) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).expect("write the config");
        let command = make(Path::new(BIN), &config);
        Daemon::spawn_command(command, config, Some(dir))
    }

    fn spawn(config: PathBuf, dir: Option<tempfile::TempDir>) -> Daemon {
        let mut command = Command::new(BIN);
        command.arg("--config").arg(&config);
        Daemon::spawn_command(command, config, dir)
    }

    fn spawn_command(
        mut command: Command,
        config: PathBuf,
        dir: Option<tempfile::TempDir>,
    ) -> Daemon {
        let mut child = command
            .env_remove("RUST_LOG")
            .env_remove("LISTEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sentinel");
        let lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut daemon = Daemon {
            addr: "0.0.0.0:0".parse().unwrap(),
            listening: String::new(),
            child,
            log,
            reader: Some(reader),
            config,
            _dir: dir,
        };
        // The first line with an address is the main listener's `listening` line.
        daemon.listening = daemon.wait_for_log_where(0, START_WAIT, "the listening line", |l| {
            l.contains("addr=") || l.contains("\"addr\":\"")
        });
        daemon.addr = addr_in(&daemon.listening);
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory of the config file.
    pub fn dir(&self) -> &Path {
        self.config.parent().expect("the config is in a directory")
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Replace the config by writing the file in place.
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).expect("write the config");
    }

    /// Replace the config the way editors do: a new file renamed over the old one.
    pub fn rewrite_config(&self, yaml: &str) {
        let temp = self.dir().join(".config.yaml.tmp");
        std::fs::write(&temp, yaml).expect("write the new config");
        std::fs::rename(&temp, &self.config).expect("rename it over the config");
    }

    /// How many log lines have been collected so far: a mark for the `_after` methods.
    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The collected log lines after the first `skip`.
    pub fn lines_after(&self, skip: usize) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .skip(skip)
            .cloned()
            .collect()
    }

    /// How many collected log lines contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The first log line containing `needle`, waiting up to `wait`.
    pub fn wait_for_log(&self, needle: &str, wait: Duration) -> String {
        self.wait_for_log_after(0, needle, wait)
    }

    /// The first log line after `skip` containing `needle`, waiting up to `wait`.
    pub fn wait_for_log_after(&self, skip: usize, needle: &str, wait: Duration) -> String {
        self.wait_for_log_where(skip, wait, &format!("with {needle:?}"), |l| {
            l.contains(needle)
        })
    }

    /// The first log line after `skip` that `matches` accepts, waiting up to `wait`; on
    /// timeout the failure names `what` and shows the whole log.
    pub fn wait_for_log_where(
        &self,
        skip: usize,
        wait: Duration,
        what: &str,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(line) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .skip(skip)
                .find(|l| matches(l))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line {what}:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(POLL);
        }
    }

    /// Send signal `name` (`HUP`, `TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Wait for the process to exit, then for its log to be read to the end.
    pub fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().expect("wait");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader");
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send signal `name` (`HUP`, `TERM`) to `child`.
pub fn signal(child: &Child, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{name} failed");
}

/// The address after `addr=` in a log line, or in `"addr":"…"` in a JSON one
/// (`logging.format: json`).
pub fn addr_in(line: &str) -> SocketAddr {
    let json = || {
        line.split("\"addr\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
    };
    line.split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .or_else(json)
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line}"))
}
