//! Configuration: the original design's keys keep working, the bundled config is valid, and
//! every kind of mistake is an error that names the key (and the line where it can).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sentinel::config::{Config, ConfigError, LogFormat, RuntimeLayout};
use sentinel::snapshot::Snapshot;

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("public/errors")).unwrap();
        std::fs::write(dir.path().join("public/errors/404.html"), "404").unwrap();
        std::fs::write(dir.path().join("public/errors/400.html"), "400").unwrap();
        Site { dir }
    }

    fn load(&self, yaml: &str) -> Result<Config, ConfigError> {
        let path = self.dir.path().join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        Config::load(&path, None)
    }

    fn error(&self, yaml: &str) -> String {
        match self.load(yaml) {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err(error) => error.to_string(),
        }
    }
}

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[test]
fn bundled_config_is_valid_and_serves_public() {
    let config = Config::load(&repo_file("config.yaml"), None).expect("bundled config.yaml");
    assert_eq!(config.server.listen_addr.to_string(), "127.0.0.1:8080");
    let static_files = config.static_files.expect("static_files");
    assert_eq!(
        static_files.root,
        repo_file("public").canonicalize().unwrap()
    );
    assert!(static_files.root.join("index.html").is_file());
}

#[test]
fn the_proxy_walkthrough_config_is_valid_and_routes_api_to_the_three_backends() {
    let config = Config::load(&repo_file("docs/examples/proxy-demo.yaml"), None)
        .expect("docs/examples/proxy-demo.yaml");
    let proxy = config.proxy.expect("proxy");
    let default_group = &proxy.upstreams[0].backends;
    let addresses: Vec<&str> = default_group.iter().map(|b| b.address.as_str()).collect();
    assert_eq!(
        addresses,
        ["127.0.0.1:3000", "127.0.0.1:3001", "127.0.0.1:3002"]
    );
    assert_eq!(config.routes.len(), 2);
    assert_eq!(config.routes[0].path_prefix, "/api");
    assert!(config.routes[0].strip_prefix);
    assert!(matches!(
        config.routes[1].target,
        sentinel::config::RouteTarget::Static
    ));
    let root = config.static_files.expect("static_files").root;
    assert_eq!(root, repo_file("public").canonicalize().unwrap());
}

#[test]
fn routes_are_validated_with_key_and_line() {
    let site = Site::new();
    let proxy = "proxy:\n  backends:\n    - name: a\n      address: \"127.0.0.1:9\"\n";
    let cases = [
        (
            "routes:\n  - path_prefix: /x\n    upstream: nope\n",
            "routes[0]",
            "not defined",
        ),
        (
            "routes:\n  - path_prefix: x\n    upstream: default\n",
            "routes[0]",
            "must start with /",
        ),
        ("routes:\n  - path_prefix: /x\n", "routes[0]", "exactly one"),
        (
            "routes:\n  - upstream: default\n    static: true\n",
            "routes[0]",
            "exactly one",
        ),
        (
            "routes:\n  - upstream: default\n    request_timeout_ms: 0\n",
            "routes[0].request_timeout_ms",
            "greater than 0",
        ),
        (
            "routes:\n  - upstream: default\n    hots: a\n",
            "hots",
            "line 9",
        ),
    ];
    for (routes, key, reason) in cases {
        let yaml = format!("server:\n  listen_addr: \"127.0.0.1:0\"\n{proxy}{routes}");
        let message = site.error(&yaml);
        assert!(message.contains(key), "{key} missing from: {message}");
        assert!(message.contains(reason), "{reason} missing from: {message}");
    }
    let upstreams = "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  upstreams:\n    default:\n      backends: []\n";
    assert!(site.error(upstreams).contains("proxy.upstreams.default"));
    let empty_group = "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  upstreams:\n    api:\n      backends: []\n";
    assert!(site.error(empty_group).contains("at least one backend"));
    let static_without_site =
        format!("server:\n  listen_addr: \"127.0.0.1:0\"\n{proxy}routes:\n  - static: true\n");
    assert!(site.error(&static_without_site).contains("static_files"));
}

#[test]
fn original_design_keys_work_exactly() {
    let site = Site::new();
    let config = site
        .load(
            "server:\n  listen_addr: \"127.0.0.1:9090\"\n\
             static_files:\n  root: \"./public\"\n  index: \"index.html\"\n  error_pages:\n    \
             not_found: \"errors/404.html\"\n    bad_request: \"errors/400.html\"\n\
             proxy:\n  backends:\n    - name: \"backend1\"\n      address: \"127.0.0.1:3000\"\n    \
             - name: \"backend2\"\n      address: \"localhost:3001\"\n  \
             connection_timeout_ms: 1500\n  request_timeout_ms: 20000\n",
        )
        .unwrap();
    assert_eq!(config.server.listen_addr.port(), 9090);
    let proxy = config.proxy.unwrap();
    let backends = &proxy.upstreams[0].backends;
    assert_eq!(backends.len(), 2);
    assert_eq!(backends[1].address, "localhost:3001");
    // The proxy-wide timeouts reach every route, the implicit one included.
    let route = &config.routes[0];
    assert_eq!(route.connection_timeout, Duration::from_millis(1500));
    assert_eq!(route.request_timeout, Duration::from_millis(20000));
    let not_found = sentinel::http::response::StatusCode::NOT_FOUND;
    assert_eq!(config.error_pages.get(not_found).unwrap().as_ref(), b"404");
}

#[test]
fn proxy_timeouts_default_as_designed() {
    let site = Site::new();
    let config = site
        .load("server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends: []\n")
        .unwrap();
    // No static site: the implicit route sends everything to the (empty) default group.
    let route = &config.routes[0];
    assert_eq!(route.connection_timeout, Duration::from_millis(5000));
    assert_eq!(route.request_timeout, Duration::from_millis(30000));
    // Added later, with nginx's and HAProxy's defaults.
    assert_eq!(route.send_timeout, Duration::from_secs(60));
    assert_eq!(route.read_timeout, Duration::from_secs(60));
    assert_eq!(route.tunnel_idle_timeout, Duration::from_secs(3600));
}

#[test]
fn send_read_and_tunnel_timeouts_resolve_route_then_group_then_proxy() {
    let site = Site::new();
    let config = site
        .load(
            "server:\n  listen_addr: \"127.0.0.1:0\"\n\
             proxy:\n  send_timeout_ms: 1000\n  read_timeout_ms: 2000\n  \
             tunnel_idle_timeout_ms: 3000\n  upstreams:\n    api:\n      backends:\n        \
             - name: a\n          address: \"127.0.0.1:9\"\n      send_timeout_ms: 10\n      \
             read_timeout_ms: 20\n      tunnel_idle_timeout_ms: 30\n    \
             other:\n      backends:\n        - name: o\n          address: \"127.0.0.1:9\"\n\
             routes:\n  - path_prefix: /ws\n    upstream: api\n    tunnel_idle_timeout_ms: 300\n  \
             - path_prefix: /api\n    upstream: api\n  - path_prefix: /\n    upstream: other\n",
        )
        .unwrap();
    let timeouts = |i: usize| {
        let route = &config.routes[i];
        (
            route.send_timeout.as_millis(),
            route.read_timeout.as_millis(),
            route.tunnel_idle_timeout.as_millis(),
        )
    };
    assert_eq!(timeouts(0), (10, 20, 300), "route over group");
    assert_eq!(timeouts(1), (10, 20, 30), "group over proxy");
    assert_eq!(timeouts(2), (1000, 2000, 3000), "proxy-wide");
    for key in [
        "send_timeout_ms",
        "read_timeout_ms",
        "tunnel_idle_timeout_ms",
    ] {
        let yaml = format!(
            "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends: []\n  {key}: 0\n"
        );
        assert!(site.error(&yaml).contains(&format!("proxy.{key}")), "{key}");
    }
}

#[test]
fn error_pages_resolve_against_root_or_config_dir() {
    let site = Site::new();
    let base = "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n  error_pages:\n    not_found: ";
    assert!(site.load(&format!("{base}errors/404.html\n")).is_ok());
    assert!(site
        .load(&format!("{base}public/errors/404.html\n"))
        .is_ok());
    let message = site.error(&format!("{base}errors/nope.html\n"));
    assert!(
        message.contains("static_files.error_pages.not_found"),
        "{message}"
    );
    assert!(message.contains(":6:"), "names the line: {message}");
}

#[test]
fn unknown_keys_are_errors_with_a_line() {
    let site = Site::new();
    let message = site.error(
        "server:\n  listen_addr: \"127.0.0.1:0\"\n  listen_adr: x\nstatic_files:\n  root: public\n",
    );
    assert!(message.contains("unknown field `listen_adr`"), "{message}");
    assert!(message.contains("line 3"), "{message}");
    let message = site.error("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n  error_pages:\n    not_fund: x\n");
    assert!(
        message.contains("not_fund") && message.contains("line 6"),
        "{message}"
    );
    let message = site.error("server:\n  listen_addr: \"127.0.0.1:0\"\nstatics: {}\n");
    assert!(
        message.contains("statics") && message.contains("line 3"),
        "{message}"
    );
}

#[test]
fn bad_values_are_errors_naming_key_and_line() {
    let site = Site::new();
    let cases = [
        ("server:\n  listen_addr: \"nope\"\nstatic_files:\n  root: public\n", "server.listen_addr", "line 2"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  max_headers: -1\nstatic_files:\n  root: public\n", "server.max_headers", "line 3"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  header_read_timeout_ms: 0\nstatic_files:\n  root: public\n", "server.header_read_timeout_ms", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: missing\n", "static_files.root", ":4:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n  index: \"../x\"\n", "static_files.index", ":5:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  max_request_line_bytes: 9000\n  max_head_bytes: 9000\nstatic_files:\n  root: public\n", "server.max_request_line_bytes", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n    - name: a\n      address: \"no-port\"\n", "proxy.backends", ":4:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n    - name: a\n      address: \"h:1\"\n    - name: a\n      address: \"h:2\"\n", "proxy.backends", "unique"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\nlogging:\n  format: xml\n", "logging.format", "line 6"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\nlogging:\n  level: \"[[\"\n", "logging.level", ":6:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  max_connections: 100000000\nstatic_files:\n  root: public\n", "server.max_connections", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  workers: 1025\nstatic_files:\n  root: public\n", "server.workers", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  workers: -1\nstatic_files:\n  root: public\n", "server.workers", "line 3"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  runtime: per_thread\nstatic_files:\n  root: public\n", "server.runtime", "line 3"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  runtime: 2\nstatic_files:\n  root: public\n", "server.runtime", "line 3"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n  cache_max_file_bytes: 16777217\n", "static_files.cache_max_file_bytes", ":5:"),
        // Field filters compile exponential regexes (found by fuzzing): refused outright.
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\nlogging:\n  level: \"a[{f=.+7.......}]\"\n", "logging.level", ":6:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n", "nothing to serve", "static_files"),
        ("server: [\n", "server", "line"),
    ];
    for (yaml, key, location) in cases {
        let message = site.error(yaml);
        assert!(message.contains(key), "{key} missing from: {message}");
        assert!(
            message.contains(location),
            "{location} missing from: {message}"
        );
        assert!(
            message.contains("config.yaml"),
            "file missing from: {message}"
        );
    }
}

#[test]
fn listen_env_overrides_listen_addr() {
    let site = Site::new();
    let path = site.dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "server:\n  listen_addr: \"127.0.0.1:8080\"\nstatic_files:\n  root: public\n",
    )
    .unwrap();
    let config = Config::load(&path, Some("0.0.0.0:9999")).unwrap();
    assert_eq!(config.server.listen_addr.to_string(), "0.0.0.0:9999");
    let error = Config::load(&path, Some("nonsense"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("LISTEN"), "{error}");
}

#[test]
fn defaults_fill_every_optional_key() {
    let site = Site::new();
    let config = site
        .load("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n")
        .unwrap();
    let limits = config.server.limits;
    assert_eq!(
        limits.parse.max_request_line_bytes,
        sentinel::limits::DEFAULT_MAX_REQUEST_LINE_BYTES
    );
    assert_eq!(
        limits.parse.max_head_bytes,
        sentinel::limits::DEFAULT_MAX_HEAD_BYTES
    );
    assert_eq!(
        limits.max_body_bytes,
        sentinel::limits::DEFAULT_MAX_BODY_BYTES
    );
    assert_eq!(
        limits.header_read_timeout,
        sentinel::limits::DEFAULT_HEADER_READ_TIMEOUT
    );
    assert_eq!(config.static_files.unwrap().index, "index.html");
    assert_eq!(config.logging.format, LogFormat::Text);
    assert!(config.logging.access_log);
    assert_eq!(config.server.workers, 0, "one worker per CPU by default");
    // On Linux, whose kernel spreads connections over SO_REUSEPORT sockets, a runtime and a
    // listening socket per worker by default.
    let expected = if cfg!(any(target_os = "linux", target_os = "android")) {
        RuntimeLayout::PerCore
    } else {
        RuntimeLayout::Shared
    };
    assert_eq!(config.server.runtime, expected);
}

#[test]
fn runtime_takes_shared_or_per_core() {
    let site = Site::new();
    for (value, layout) in [
        ("shared", RuntimeLayout::Shared),
        ("per_core", RuntimeLayout::PerCore),
    ] {
        let config = site
            .load(&format!(
                "server:\n  listen_addr: \"127.0.0.1:0\"\n  workers: 2\n  runtime: {value}\nstatic_files:\n  root: public\n"
            ))
            .unwrap();
        assert_eq!(config.server.runtime, layout, "{value}");
    }
    let message = site.error(
        "server:\n  listen_addr: \"127.0.0.1:0\"\n  runtime: PerCore\nstatic_files:\n  root: public\n",
    );
    assert!(
        message.contains("shared") && message.contains("per_core"),
        "the error lists the values: {message}"
    );
}

#[test]
fn workers_accepts_up_to_its_ceiling() {
    let site = Site::new();
    let config = site
        .load("server:\n  listen_addr: \"127.0.0.1:0\"\n  workers: 1024\nstatic_files:\n  root: public\n")
        .unwrap();
    assert_eq!(config.server.workers, 1024);
}

#[test]
fn a_reload_keeps_the_state_of_backends_whose_address_is_unchanged() {
    let site = Site::new();
    let path = site.dir.path().join("config.yaml");
    let write = |backends: &str, max_fails: u32| {
        std::fs::write(
            &path,
            format!(
                "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  max_fails: {max_fails}\n  backends:\n{backends}"
            ),
        )
        .unwrap();
    };
    write(
        "    - name: a\n      address: \"127.0.0.1:3000\"\n    - name: b\n      address: \"127.0.0.1:3001\"\n",
        3,
    );
    let first = Snapshot::new(Config::load(&path, None).unwrap(), None);
    // b renamed and moved into a new group keeps its state; a removed; c new.
    write(
        "    - name: c\n      address: \"127.0.0.1:3002\"\n    - name: b2\n      address: \"127.0.0.1:3001\"\n",
        3,
    );
    let second = Snapshot::new(Config::load(&path, None).unwrap(), Some(&first));
    let backends = |snapshot: &Snapshot| snapshot.upstreams[0].backends.clone();
    let (old, new) = (backends(&first), backends(&second));
    assert!(
        new[1].shares_state_with(&old[1]),
        "same address keeps its pool and health"
    );
    assert_eq!(&*new[1].name, "b2");
    assert!(!new[0].shares_state_with(&old[0]));
    assert!(!new[0].shares_state_with(&old[1]));
    // Different health settings: a fresh record, since the old one was kept under other rules.
    write("    - name: b\n      address: \"127.0.0.1:3001\"\n", 5);
    let third = Snapshot::new(Config::load(&path, None).unwrap(), Some(&second));
    assert!(!backends(&third)[0].shares_state_with(&new[1]));
    // Without a previous snapshot nothing is shared.
    let fresh = Snapshot::new(Config::load(&path, None).unwrap(), None);
    assert!(!backends(&fresh)[0].shares_state_with(&backends(&third)[0]));
}

#[test]
fn a_reload_keeps_the_file_cache_of_an_unchanged_root() {
    let site = Site::new();
    let path = site.dir.path().join("config.yaml");
    let yaml = "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n";
    std::fs::write(&path, yaml).unwrap();
    let first = Snapshot::new(Config::load(&path, None).unwrap(), None);
    let second = Snapshot::new(Config::load(&path, None).unwrap(), Some(&first));
    let cache = |s: &Snapshot| std::sync::Arc::clone(s.file_cache.as_ref().unwrap());
    assert!(std::sync::Arc::ptr_eq(&cache(&first), &cache(&second)));
    std::fs::write(&path, format!("{yaml}  cache_max_bytes: 1000\n")).unwrap();
    let third = Snapshot::new(Config::load(&path, None).unwrap(), Some(&second));
    assert!(!std::sync::Arc::ptr_eq(&cache(&second), &cache(&third)));
}
