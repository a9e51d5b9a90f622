//! The files that ship Sentinel (`Dockerfile`, `deploy/docker/`, `deploy/kubernetes/`) agree
//! with each other and with the binary: each shipped config passes `--check` and serves,
//! every probe they name is one `sentinel --probe` answers, the mounts hold the paths the
//! config reads, and the grace periods cover the drain. A change to one file that the others
//! do not follow fails here, not in a cluster. The systemd units pass `systemd-analyze
//! verify` (with `ExecStart` pointed at the binary just built, since verify checks that the
//! executable exists) and keep the settings the notify protocol and the sandbox depend on;
//! `.ci/run` installs systemd where `systemd-analyze` is missing.
#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::daemon::{addr_in, Daemon};
use serde_yaml::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sentinel");
const WAIT: Duration = Duration::from_secs(10);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).expect("valid YAML")
}

fn get<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, key| &v[*key])
}

fn string(value: &Value, path: &[&str]) -> String {
    get(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string in {value:?}"))
        .to_string()
}

fn sentinel(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("LISTEN")
        .output()
        .expect("run sentinel")
}

/// The Dockerfile's instructions, continuation lines joined.
fn dockerfile() -> Vec<String> {
    read("Dockerfile")
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn instruction(lines: &[String], name: &str) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(name).map(|rest| rest.trim().to_string()))
        .collect()
}

/// The exec form's words: `["a", "b"]` → a, b.
fn exec_form(text: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The URL a `sentinel --probe URL` command line asks.
fn probed_url(command: &[String]) -> String {
    assert_eq!(command[0], "sentinel", "{command:?}");
    assert_eq!(command[1], "--probe", "{command:?}");
    command[2].clone()
}

/// The shipped config with its absolute paths moved into `dir`, its listeners on port 0 and
/// its log in text (the test harness reads addresses from text lines), so the test can run it.
fn runnable(config: &str, dir: &Path, moves: &[(&str, PathBuf)]) -> String {
    let mut text = config
        .replace("format: \"json\"", "format: \"text\"")
        .replace("0.0.0.0:8080", "127.0.0.1:0")
        .replace("0.0.0.0:8443", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0");
    for (from, to) in moves {
        assert!(text.contains(from), "{from} is not in the config");
        text = text.replace(from, &to.display().to_string());
    }
    let path = dir.join("config.yaml");
    std::fs::write(&path, &text).unwrap();
    text
}

#[test]
fn the_container_image_runs_its_config_as_a_non_root_user_with_a_probe_that_answers() {
    let lines = dockerfile();
    assert!(
        instruction(&lines, "FROM ").len() >= 2,
        "multi-stage: a build stage and a runtime stage"
    );
    let user = instruction(&lines, "USER ");
    assert_eq!(user.len(), 1, "{user:?}");
    assert!(
        !user[0].starts_with("root") && !user[0].starts_with('0'),
        "runs as {}",
        user[0]
    );
    let config_text = read("deploy/docker/config.yaml");
    let config = yaml(&config_text);
    let listen = string(&config, &["server", "listen_addr"]);
    let port = listen.rsplit(':').next().unwrap();
    assert_eq!(instruction(&lines, "EXPOSE "), vec![port.to_string()]);
    assert!(
        instruction(&lines, "COPY ")
            .iter()
            .any(|c| c == "deploy/docker/config.yaml /etc/sentinel/config.yaml"),
        "the image carries the config it names"
    );
    assert_eq!(
        exec_form(&instruction(&lines, "CMD ")[0]),
        ["--config", "/etc/sentinel/config.yaml"]
    );
    let root = string(&config, &["static_files", "root"]);
    assert!(
        instruction(&lines, "COPY ")
            .iter()
            .any(|c| *c == format!("public {root}")),
        "the image puts public/ at static_files.root ({root})"
    );

    // The health check asks the admin listener the config opens.
    let healthcheck = instruction(&lines, "HEALTHCHECK ")
        .pop()
        .expect("HEALTHCHECK");
    let cmd = healthcheck.split_once("CMD ").expect("HEALTHCHECK CMD").1;
    let url = probed_url(&exec_form(cmd));
    let admin = string(&config, &["admin", "listen_addr"]);
    assert_eq!(url, format!("http://{admin}/healthz"));

    // The config itself, run: it serves public/ and the probe passes against it.
    let dir = tempfile::tempdir().unwrap();
    let config = runnable(&config_text, dir.path(), &[(&root, repo().join("public"))]);
    let daemon = Daemon::start_in(dir.path(), &config);
    let admin = addr_in(&daemon.wait_for_log("admin listening", WAIT));
    let probe = sentinel(&[
        "--probe",
        &url.replace("127.0.0.1:9901", &admin.to_string()),
    ]);
    assert!(probe.status.success(), "{probe:?}");
    let index = sentinel(&["--probe", &format!("http://{}/", daemon.addr)]);
    assert!(index.status.success(), "public/ is not served: {index:?}");
}

#[test]
fn probe_exits_0_only_on_a_2xx_answer() {
    let daemon = Daemon::start(
        "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: \"site\"\n\
         admin:\n  listen_addr: \"127.0.0.1:0\"\n",
        &[("site/index.html", "home")],
    );
    let admin = addr_in(&daemon.wait_for_log("admin listening", WAIT));
    for (path, passes) in [("/healthz", true), ("/readyz", true), ("/nope", false)] {
        let out = sentinel(&["--probe", &format!("http://{admin}{path}")]);
        assert_eq!(out.status.success(), passes, "{path}: {out:?}");
    }
    drop(daemon);
    let gone = sentinel(&["--probe", &format!("http://{admin}/healthz")]);
    assert!(!gone.status.success());
    let said = String::from_utf8_lossy(&gone.stderr);
    assert!(said.contains("cannot reach"), "{said}");
    let bad = sentinel(&["--probe", "http://localhost/healthz"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not an http://HOST:PORT/PATH URL"));
}

#[test]
fn the_kubernetes_manifests_mount_what_the_config_reads_and_probe_what_it_opens() {
    let configmap = yaml(&read("deploy/kubernetes/configmap.yaml"));
    let deployment = yaml(&read("deploy/kubernetes/deployment.yaml"));
    let service = yaml(&read("deploy/kubernetes/service.yaml"));
    let config_text = string(&configmap, &["data", "config.yaml"]);
    let config = yaml(&config_text);
    let pod = get(&deployment, &["spec", "template", "spec"]);
    let container = &pod["containers"][0];

    // The config file the container is told to read is in the ConfigMap's mount, mounted
    // whole (a subPath mount is never updated, so the reload would never see a change).
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "--config");
    let config_path = Path::new(args[1]);
    let mount_of = |volume: &str| -> String {
        let mounts = container["volumeMounts"].as_sequence().unwrap();
        let mount = mounts
            .iter()
            .find(|m| m["name"].as_str() == Some(volume))
            .unwrap_or_else(|| panic!("no mount of {volume}"));
        assert!(
            mount.get("subPath").is_none(),
            "{volume} is mounted with subPath"
        );
        string(mount, &["mountPath"])
    };
    let volume_source = |volume: &str, kind: &str, key: &str| -> String {
        let volumes = pod["volumes"].as_sequence().unwrap();
        let volume = volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(volume))
            .unwrap_or_else(|| panic!("no volume {volume}"));
        string(volume, &[kind, key])
    };
    assert_eq!(
        config_path.parent().unwrap(),
        Path::new(&mount_of("config"))
    );
    assert_eq!(config_path.file_name().unwrap(), "config.yaml");
    assert_eq!(
        volume_source("config", "configMap", "name"),
        string(&configmap, &["metadata", "name"])
    );
    // The certificate and key come from the Secret's mount, under the names a
    // kubernetes.io/tls Secret gives them.
    let tls_dir = mount_of("tls");
    assert_eq!(volume_source("tls", "secret", "secretName"), "sentinel-tls");
    let certificate = &config["tls"]["certificates"][0];
    assert_eq!(string(certificate, &["cert"]), format!("{tls_dir}/tls.crt"));
    assert_eq!(string(certificate, &["key"]), format!("{tls_dir}/tls.key"));

    // Readiness asks /readyz and liveness /healthz, of the admin listener the config opens.
    let admin = string(&config, &["admin", "listen_addr"]);
    let command = |probe: &str| -> Vec<String> {
        serde_yaml::from_value(get(container, &[probe, "exec", "command"]).clone()).unwrap()
    };
    assert_eq!(
        probed_url(&command("readinessProbe")),
        format!("http://{admin}/readyz")
    );
    assert_eq!(
        probed_url(&command("livenessProbe")),
        format!("http://{admin}/healthz")
    );

    // The pod is killed only after the preStop pause and the whole drain.
    let grace_s = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let pause_s = get(container, &["lifecycle", "preStop", "sleep", "seconds"])
        .as_u64()
        .unwrap();
    let drain_ms = config["server"]["drain_timeout_ms"].as_u64().unwrap();
    assert!(
        (grace_s - pause_s) * 1000 > drain_ms,
        "grace {grace_s} s - preStop {pause_s} s does not cover a {drain_ms} ms drain"
    );

    // The pod runs as the image's user; the Service targets ports the container names.
    let dockerfile = read("Dockerfile");
    let uid = pod["securityContext"]["runAsUser"].as_u64().unwrap();
    assert!(
        dockerfile.contains(&format!("--uid {uid} ")),
        "the image's user is not uid {uid}"
    );
    let port_names: Vec<&str> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for port in service["spec"]["ports"].as_sequence().unwrap() {
        let target = port["targetPort"].as_str().unwrap();
        assert!(port_names.contains(&target), "service targets {target}");
    }

    // The ConfigMap's config, with its mounts played by files in a temporary directory,
    // passes --check and serves both listeners.
    let pki = common::tls::Pki::default();
    let issued = pki.issue("tls", &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    std::fs::copy(&issued.cert, tls.join("tls.crt")).unwrap();
    std::fs::copy(&issued.key, tls.join("tls.key")).unwrap();
    let root = string(&config, &["static_files", "root"]);
    let runnable = runnable(
        &config_text,
        dir.path(),
        &[(&tls_dir, tls), (&root, repo().join("public"))],
    );
    let check = sentinel(&[
        "--check",
        "--config",
        dir.path().join("config.yaml").to_str().unwrap(),
    ]);
    assert!(check.status.success(), "{check:?}");
    let daemon = Daemon::start_in(dir.path(), &runnable);
    daemon.wait_for_log("listening for HTTPS", WAIT);
    let admin = addr_in(&daemon.wait_for_log("admin listening", WAIT));
    let ready = sentinel(&["--probe", &format!("http://{admin}/readyz")]);
    assert!(ready.status.success(), "{ready:?}");
}

const SERVICE: &str = include_str!("../deploy/systemd/sentinel.service");
const SOCKET: &str = include_str!("../deploy/systemd/sentinel.socket");

#[test]
#[cfg(target_os = "linux")]
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
#[cfg(target_os = "linux")]
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
