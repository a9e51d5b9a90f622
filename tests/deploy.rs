//! The files in `deploy/`: the systemd units pass `systemd-analyze verify` (with `ExecStart`
//! pointed at the binary just built, since verify checks that the executable exists), and
//! the service unit keeps the settings the notify protocol and the sandbox depend on.
//! `.ci/run` installs systemd where `systemd-analyze` is missing.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;

const SERVICE: &str = include_str!("../deploy/systemd/sentinel.service");
const SOCKET: &str = include_str!("../deploy/systemd/sentinel.socket");

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_sentinel");
    let service = SERVICE.replace("/usr/local/bin/sentinel", binary);
    std::fs::write(dir.path().join("sentinel.service"), service).unwrap();
    std::fs::write(dir.path().join("sentinel.socket"), SOCKET).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg("./sentinel.service")
        .arg("./sentinel.socket")
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze (Debian package systemd): {e}"));
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_service_is_type_notify_reloads_with_sighup_and_is_sandboxed() {
    let settings: Vec<&str> = SERVICE
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for wanted in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ] {
        assert!(settings.contains(&wanted), "missing {wanted}");
    }
    // The socket unit names its descriptor for the listener that takes it.
    assert!(SOCKET.lines().any(|l| l == "FileDescriptorName=http"));
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/systemd/sentinel.socket")
        .exists());
}
