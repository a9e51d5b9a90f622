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
    /// Each YAML of `cases` is refused with a message ending in its expected text.
    fn assert_each_error_ends_with(&self, cases: &[(&str, &str)]) {
        for (yaml, wanted) in cases {
            let message = self.error(yaml);
            assert!(
                message.ends_with(wanted),
                "{wanted} missing from: {message}"
            );
        }
    }

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
            ":9:",
        ),
        (
            "routes:\n  - name: \"api v1\"\n    upstream: default\n",
            "routes[0].name",
            "letters, digits",
        ),
        (
            "routes:\n  - name: none\n    upstream: default\n",
            "routes[0].name",
            "no route took",
        ),
        (
            "routes:\n  - name: \"1\"\n    upstream: default\n",
            "routes[0].name",
            "unnamed route",
        ),
        (
            "routes:\n  - name: api\n    path_prefix: /a\n    upstream: default\n  \
             - name: api\n    upstream: default\n",
            "routes[1].name",
            "already used",
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

/// `proxy.error_statuses` of each group of `yaml`'s proxy section, in group order
/// (`default` first, then by name).
fn error_statuses(site: &Site, proxy_keys: &str) -> Vec<Vec<u16>> {
    let yaml = format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n    - name: a\n      \
         address: \"127.0.0.1:9\"\n  upstreams:\n    rr:\n      backends:\n        - name: b\n          \
         address: \"127.0.0.1:10\"\n      strategy: round_robin\n{proxy_keys}"
    );
    let config = site.load(&yaml).unwrap();
    let proxy = config.proxy.unwrap();
    proxy
        .upstreams
        .iter()
        .map(|u| u.policy.error_statuses.clone())
        .collect()
}

#[test]
fn error_statuses_default_by_strategy_and_an_explicit_list_applies_to_every_group() {
    // Issue 16: with only `strategy: adaptive`, a backend answering 500 at once looked the
    // fastest and got half the traffic. An adaptive group counts 500, 502, 503 and 504 against
    // the backend by default; other strategies keep nginx's behaviour and count none.
    let site = Site::new();
    let none: Vec<u16> = Vec::new();
    assert_eq!(
        error_statuses(&site, "  strategy: adaptive\n"),
        [vec![500, 502, 503, 504], none.clone()]
    );
    assert_eq!(error_statuses(&site, ""), [none.clone(), none.clone()]);
    // Set, the list is every group's, whatever its strategy; `[]` turns the counting off.
    assert_eq!(
        error_statuses(&site, "  strategy: adaptive\n  error_statuses: []\n"),
        [none.clone(), none]
    );
    assert_eq!(
        error_statuses(&site, "  error_statuses: [503]\n"),
        [vec![503], vec![503]]
    );
    let message = site.error(
        "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends: []\n  error_statuses: [200]\n",
    );
    assert!(
        message.contains("proxy.error_statuses") && message.contains(":5:"),
        "{message}"
    );
    assert!(
        message.contains("200 is not a 4xx or 5xx status"),
        "{message}"
    );
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
    assert!(message.contains("unknown key \"listen_adr\""), "{message}");
    assert!(message.contains(":3:"), "{message}");
    let message = site.error("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n  error_pages:\n    not_fund: x\n");
    assert!(
        message.contains("not_fund") && message.contains(":6:"),
        "{message}"
    );
    let message = site.error("server:\n  listen_addr: \"127.0.0.1:0\"\nstatics: {}\n");
    assert!(
        message.contains("statics") && message.contains(":3:"),
        "{message}"
    );
}

#[test]
fn bad_values_are_errors_naming_key_and_line() {
    let site = Site::new();
    let cases = [
        ("server:\n  listen_addr: \"nope\"\nstatic_files:\n  root: public\n", "server.listen_addr", ":2:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  max_headers: -1\nstatic_files:\n  root: public\n", "server.max_headers", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  header_read_timeout_ms: 0\nstatic_files:\n  root: public\n", "server.header_read_timeout_ms", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: missing\n", "static_files.root", ":4:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n  index: \"../x\"\n", "static_files.index", ":5:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  max_request_line_bytes: 9000\n  max_head_bytes: 9000\nstatic_files:\n  root: public\n", "server.max_request_line_bytes", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n    - name: a\n      address: \"no-port\"\n", "proxy.backends[0].address", ":6:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n    - name: a\n      address: \"h:1\"\n    - name: a\n      address: \"h:2\"\n", "proxy.backends[1].name", "unique"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\nlogging:\n  format: xml\n", "logging.format", ":6:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\nlogging:\n  level: \"[[\"\n", "logging.level", ":6:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  max_connections: 100000000\nstatic_files:\n  root: public\n", "server.max_connections", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  workers: 1025\nstatic_files:\n  root: public\n", "server.workers", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  workers: -1\nstatic_files:\n  root: public\n", "server.workers", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  runtime: per_thread\nstatic_files:\n  root: public\n", "server.runtime", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  runtime: 2\nstatic_files:\n  root: public\n", "server.runtime", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n  cache_max_file_bytes: 16777217\n", "static_files.cache_max_file_bytes", ":5:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n  sidecar_valid_ms: 60001\n", "static_files.sidecar_valid_ms", ":5:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n  sidecar_max_entries: 1000001\n", "static_files.sidecar_max_entries", ":5:"),
        // Field filters compile exponential regexes (found by fuzzing): refused outright.
        ("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\nlogging:\n  level: \"a[{f=.+7.......}]\"\n", "logging.level", ":6:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n", "nothing to serve", "static_files"),
        ("server: [\n", "server", ":1:"),
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

/// Two backends; the second's address (line 8) is the one set by each case.
fn two_backends(second_address: &str) -> String {
    format!(
        "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n    - name: a\n      \
         address: \"127.0.0.1:3000\"\n    - name: b\n      address: \"{second_address}\"\n"
    )
}

#[test]
fn a_bad_backend_address_points_at_its_own_entry_and_says_why() {
    let site = Site::new();
    for (address, reason) in [
        ("127.0.0.1:70000", "port 70000 is out of range (1-65535)"),
        ("127.0.0.1:0", "port 0 is out of range (1-65535)"),
        (
            "localhost:99999999999999999999",
            "is out of range (1-65535)",
        ),
        ("[::1]:65536", "port 65536 is out of range (1-65535)"),
        ("no-port", "\"no-port\" is not host:port"),
        ("bad host:80", "is not host:port"),
    ] {
        let message = site.error(&two_backends(address));
        assert!(
            message.contains("config.yaml:8: proxy.backends[1].address: "),
            "{message}"
        );
        assert!(message.contains(reason), "{reason} missing from: {message}");
    }
    for address in ["127.0.0.1:65535", "[::1]:1", "backend-1.internal:8080"] {
        assert!(site.load(&two_backends(address)).is_ok(), "{address}");
    }
    // The same inside a named group, entries starting in their key's column.
    let message = site.error(
        "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  upstreams:\n    api:\n      backends:\n      \
         - name: a\n        address: \"h:1\"\n      - name: b\n        weight: 0\n        address: \"h:2\"\n",
    );
    assert!(
        message.contains(":10: proxy.upstreams.api.backends[1].weight: "),
        "{message}"
    );
}

#[test]
fn a_route_to_an_undefined_upstream_points_at_its_upstream_key() {
    let site = Site::new();
    let message = site.error(&format!(
        "{}routes:\n  - path_prefix: /a\n    upstream: default\n  - path_prefix: /b\n    upstream: nope\n",
        two_backends("127.0.0.1:3001")
    ));
    assert!(
        message.contains("config.yaml:13: routes[1].upstream: upstream \"nope\" is not defined"),
        "{message}"
    );
}

#[test]
fn every_validation_error_is_reported_each_on_its_own_line_in_file_order() {
    let site = Site::new();
    let yaml = "\
server:
  listen_addr: \"127.0.0.1:0\"
  max_headers: 0
  workers: 5000
static_files:
  root: public
  index: \"../x\"
proxy:
  backends:
    - name: a
      address: \"127.0.0.1:70000\"
routes:
  - upstream: nope
logging:
  level: \"[[\"
";
    let error = site.load(yaml).unwrap_err();
    let ConfigError::Many { errors, .. } = &error else {
        panic!("expected several errors, got: {error}");
    };
    let lines: Vec<(Option<usize>, String)> = errors
        .iter()
        .map(|e| match e {
            ConfigError::Invalid { line, key, .. } => (*line, key.clone()),
            other => panic!("not a validation error: {other}"),
        })
        .collect();
    assert_eq!(
        lines,
        [
            (Some(3), "server.max_headers".to_string()),
            (Some(4), "server.workers".to_string()),
            (Some(7), "static_files.index".to_string()),
            (Some(11), "proxy.backends[0].address".to_string()),
            (Some(13), "routes[0].upstream".to_string()),
            (Some(15), "logging.level".to_string()),
        ]
    );
    let message = error.to_string();
    let printed: Vec<&str> = message.lines().collect();
    assert_eq!(printed.len(), 7, "{message}");
    assert!(printed[0].ends_with("config.yaml:3: server.max_headers: must be greater than 0"));
    assert!(printed[3].ends_with(
        "config.yaml:11: proxy.backends[0].address: port 70000 is out of range (1-65535)"
    ));
    assert!(
        printed[6].starts_with("configuration file ") && printed[6].ends_with(" has 6 errors"),
        "{message}"
    );
    assert_eq!(error.errors().len(), 6);
}

#[test]
fn a_single_error_is_still_one_invalid_error() {
    let site = Site::new();
    let error = site
        .load("server:\n  listen_addr: \"127.0.0.1:0\"\n  max_headers: 0\nstatic_files:\n  root: public\n")
        .unwrap_err();
    assert!(
        matches!(&error, ConfigError::Invalid { line: Some(3), key, .. } if key == "server.max_headers"),
        "{error:?}"
    );
    assert_eq!(error.errors().len(), 1);
    assert_eq!(error.to_string().lines().count(), 1);
}

#[test]
fn one_mistake_is_one_error_not_a_cascade() {
    let site = Site::new();
    let cases = [
        // The error pages are looked for under the root: not also "page not found".
        "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: nope\n  error_pages:\n    not_found: errors/404.html\n    bad_request: errors/400.html\n",
        // A zero head size: not also "the request line must fit in the head".
        "server:\n  listen_addr: \"127.0.0.1:0\"\n  max_head_bytes: 0\nstatic_files:\n  root: public\n",
        // A zero fail timeout: not also "max_fail_timeout_ms must be at least it".
        "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  fail_timeout_ms: 0\n  backends:\n    - name: a\n      address: \"h:1\"\n",
        // An empty group: routes to it are not also "not defined".
        "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  upstreams:\n    api:\n      backends: []\nroutes:\n  - upstream: api\n",
        // A bad backend: its group still exists for the routes.
        "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n    - name: a\n      address: \"nope\"\nroutes:\n  - upstream: default\n",
    ];
    for yaml in cases {
        let error = site.load(yaml).unwrap_err();
        assert_eq!(error.errors().len(), 1, "{error}");
    }
}

#[test]
fn a_bad_listen_variable_joins_the_file_errors() {
    let site = Site::new();
    let path = site.dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "server:\n  listen_addr: \"127.0.0.1:0\"\n  workers: 5000\nstatic_files:\n  root: public\n",
    )
    .unwrap();
    let error = Config::load(&path, Some("nonsense")).unwrap_err();
    let message = error.to_string();
    assert_eq!(error.errors().len(), 2, "{message}");
    assert!(
        message.contains("config.yaml:3: server.workers"),
        "{message}"
    );
    assert!(message.contains("LISTEN (environment)"), "{message}");
}

#[test]
fn a_duplicate_key_points_at_its_second_occurrence() {
    let site = Site::new();
    let cases = [
        (
            "server:\n  listen_addr: \"127.0.0.1:0\"\n  workers: 1\n  listen_addr: \"127.0.0.1:1\"\nstatic_files:\n  root: public\n",
            "config.yaml:4: server: duplicate key \"listen_addr\" (first on line 2)",
        ),
        (
            "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n    - name: a\n      address: \"h:1\"\n      name: b\n",
            "config.yaml:7: proxy.backends[0]: duplicate key \"name\" (first on line 5)",
        ),
        (
            "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\nserver: {}\n",
            "config.yaml:5: duplicate key \"server\" (first on line 1)",
        ),
        // A group name given twice was silently the last one.
        (
            "server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  upstreams:\n    api:\n      backends: [{name: a, address: \"h:1\"}]\n    api:\n      backends: [{name: b, address: \"h:2\"}]\n",
            "config.yaml:7: proxy.upstreams: duplicate key \"api\" (first on line 5)",
        ),
    ];
    site.assert_each_error_ends_with(&cases);
}

#[test]
fn wrong_types_are_named_in_the_users_words() {
    let site = Site::new();
    let server = "server:\n  listen_addr: \"127.0.0.1:0\"\n";
    let cases = [
        ("  max_headers: abc\n", ":3: server.max_headers: expected a whole number, found \"abc\""),
        ("  max_headers: 1.5\n", ":3: server.max_headers: expected a whole number, found 1.5"),
        ("  workers: -1\n", ":3: server.workers: expected a whole number (0 or more), found -1"),
        ("  listen_backlog: 99999999999\n", ":3: server.listen_backlog: 99999999999 is too large (at most 4294967295)"),
        ("  max_headers:\n", ":3: server.max_headers: expected a whole number, found an empty value"),
        ("static_files:\n  root: public\n  serve_hidden: yes\n", ":5: static_files.serve_hidden: expected true or false, found \"yes\""),
        ("static_files: [public]\n", ":3: static_files: expected a mapping, found a list"),
        ("static_files:\n  root: [public]\n", ":4: static_files.root: expected text, found a list"),
        ("proxy:\n  backends: 3\n", ":4: proxy.backends: expected a list, found 3"),
        ("proxy:\n  breaker:\n    failure_rate: high\n", ":5: proxy.breaker.failure_rate: expected a number, found \"high\""),
        ("proxy:\n  upstreams: [a]\n", ":4: proxy.upstreams: expected a mapping, found a list"),
        ("logging:\n  format: [json]\n", ":4: logging.format: expected a single name, found a list"),
        ("admin:\n  listen_addr: \"localhost\"\n", ":4: admin.listen_addr: \"localhost\" is not an IP:port address (such as 127.0.0.1:8080)"),
    ];
    for (rest, wanted) in cases {
        let yaml = format!("{server}{rest}");
        let message = site.error(&yaml);
        assert!(
            message.ends_with(wanted),
            "{wanted} missing from: {message}"
        );
        for rust in [
            "usize", "u32", "u64", "f64", "struct", "boolean", "sequence", "Raw",
        ] {
            assert!(!message.contains(rust), "{rust} in: {message}");
        }
    }
    let message = site.error("server: 3\n");
    assert!(
        message.ends_with("config.yaml:1: server: expected a mapping, found 3"),
        "{message}"
    );
    let message = site.error("- server\n");
    assert!(
        message.ends_with("config.yaml:1: expected a mapping, found a list"),
        "{message}"
    );
    let message = site.error("static_files:\n  root: public\n");
    assert!(
        message.ends_with("config.yaml:1: server: missing (this key is required)"),
        "{message}"
    );
    let message =
        site.error("server:\n  listen_addr: \"127.0.0.1:0\"\nproxy:\n  backends:\n    - name: a\n");
    assert!(
        message
            .ends_with("config.yaml:5: proxy.backends[0].address: missing (this key is required)"),
        "{message}"
    );
}

#[test]
fn a_misspelt_key_or_value_gets_a_suggestion() {
    let site = Site::new();
    let cases = [
        ("server:\n  lisen_addr: \"127.0.0.1:0\"\n", ":2: server: unknown key \"lisen_addr\" (did you mean \"listen_addr\"?)"),
        ("sever:\n  listen_addr: \"127.0.0.1:0\"\n", ":1: unknown key \"sever\" (did you mean \"server\"?)"),
        ("server: {}\nproxy:\n  backends:\n    - name: a\n      adress: \"h:1\"\n", ":5: proxy.backends[0]: unknown key \"adress\" (did you mean \"address\"?)"),
        ("server: {}\nstatic_files:\n  root: public\n  error_pages:\n    not_fund: x\n", ":5: static_files.error_pages: unknown key \"not_fund\" (did you mean \"not_found\"?)"),
        ("server:\n  runtime: per-core\n", ":2: server.runtime: unknown value \"per-core\" (did you mean \"per_core\"? expected shared or per_core)"),
        // Nothing near: the accepted names instead of a wild guess.
        ("server: {}\nstatics: {}\n", ":2: unknown key \"statics\" (expected one of server, static_files, proxy, routes, admin, tls, logging, rate_limit, cache, compression, plugins)"),
        ("server: {}\nlogging:\n  colour: true\n", ":3: logging: unknown key \"colour\" (expected one of level, format, access_log, access_log_format, access_log_path, access_log_buffer_bytes, access_log_flush_ms, request_id)"),
        ("server:\n  runtime: threads\n", ":2: server.runtime: unknown value \"threads\" (expected shared or per_core)"),
    ];
    site.assert_each_error_ends_with(&cases);
}

#[test]
fn yaml_syntax_errors_have_a_line_and_explain_tabs() {
    let site = Site::new();
    let message = site.error("server:\n\tlisten_addr: \"127.0.0.1:0\"\n");
    assert!(
        message.contains("config.yaml:2: invalid YAML: "),
        "{message}"
    );
    assert!(message.contains("indented with spaces"), "{message}");
    let message = site.error("server:\n  listen_addr: \"127.0.0.1:0\nstatic_files: {}\n");
    assert!(message.contains("config.yaml:"), "{message}");
    assert!(message.contains("invalid YAML: "), "{message}");
}

#[test]
fn paths_in_errors_are_as_written_without_dot_repetition() {
    // `sentinel -c config.yaml`: the config's directory is `.`, and `./nope` was reported
    // as `././nope`.
    let yaml = "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: ./nope\n";
    let error = Config::from_yaml(yaml, Path::new("config.yaml"), Path::new(".")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "config.yaml:4: static_files.root: ./nope does not exist"
    );
    let site = Site::new();
    let message = site.error(yaml);
    assert!(message.ends_with("/nope does not exist"), "{message}");
    assert!(!message.contains("/./"), "{message}");
    // An error page too big to keep, named with ./ under a root named with ./.
    std::fs::write(
        site.dir.path().join("public/big.html"),
        vec![b'x'; 1024 * 1024 + 1],
    )
    .unwrap();
    let message = site.error(
        "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: ./public\n  error_pages:\n    not_found: ./big.html\n",
    );
    assert!(
        message.contains("/public/big.html is 1048577 bytes"),
        "{message}"
    );
    assert!(!message.contains("/./"), "{message}");
}

#[test]
fn the_dashboard_history_is_bounded_by_its_two_keys() {
    let site = Site::new();
    let admin = "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n\
                 admin:\n  listen_addr: \"127.0.0.1:0\"\n";
    let config = site.load(admin).unwrap();
    let defaults = config.admin.unwrap();
    assert_eq!(defaults.dashboard_sample_interval, Duration::from_secs(1));
    assert_eq!(defaults.dashboard_samples, 300);
    let config = site
        .load(&format!(
            "{admin}  dashboard_sample_ms: 250\n  dashboard_history_ms: 60000\n"
        ))
        .unwrap();
    let chosen = config.admin.unwrap();
    assert_eq!(chosen.dashboard_sample_interval, Duration::from_millis(250));
    assert_eq!(chosen.dashboard_samples, 240);
    site.assert_each_error_ends_with(&[
        (
            &format!("{admin}  dashboard_sample_ms: 50\n"),
            "admin.dashboard_sample_ms: must be at least 100",
        ),
        (
            &format!("{admin}  dashboard_history_ms: 3600001000\n"),
            "admin.dashboard_history_ms: must be between one and 3600 samples of admin.dashboard_sample_ms",
        ),
        (
            &format!("{admin}  dashboard_history_ms: 10\n"),
            "admin.dashboard_history_ms: must be between one and 3600 samples of admin.dashboard_sample_ms",
        ),
    ]);
}

#[test]
fn compression_settings_are_validated_and_off_when_absent() {
    use sentinel::compression::{Algorithm, Level, MediaRange};
    let site = Site::new();
    let base = "server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n";
    assert!(site.load(base).expect("no section").compression.is_none());

    let config = site
        .load(&format!("{base}compression: {{}}\n"))
        .expect("defaults");
    let compression = config.compression.expect("on with the section");
    let settings = compression
        .for_route(Some(0))
        .expect("the implicit route compresses");
    assert_eq!(settings.algorithms, Algorithm::ALL.to_vec());
    assert_eq!(settings.min_bytes, 1024);
    assert_eq!(settings.level, Level::Fast);
    assert!(!settings.precompressed);
    assert!(settings
        .types
        .contains(&MediaRange::AnySubtype("text/".into())));
    assert!(settings
        .types
        .contains(&MediaRange::Exact("application/json".into())));

    let config = site
        .load(&format!(
            "{base}compression:\n  algorithms: [\"gzip\", \"zstd\"]\n  min_bytes: 10\n  \
             types: [\"text/html\"]\n  precompressed: true\n  level: \"best\"\n\
             routes:\n  - path_prefix: \"/raw\"\n    static: true\n    compression: false\n  \
             - path_prefix: \"/\"\n    static: true\n"
        ))
        .expect("every key");
    let compression = config.compression.expect("on");
    assert!(
        compression.for_route(Some(0)).is_none(),
        "the route opted out"
    );
    let settings = compression.for_route(Some(1)).expect("the other route");
    assert_eq!(settings.algorithms, vec![Algorithm::Gzip, Algorithm::Zstd]);
    assert_eq!(settings.types, vec![MediaRange::Exact("text/html".into())]);
    assert_eq!(
        (settings.min_bytes, settings.level, settings.precompressed),
        (10, Level::Best, true)
    );

    site.assert_each_error_ends_with(&[
        (
            &format!("{base}compression:\n  algorithms: [\"deflate\"]\n"),
            "compression.algorithms: \"deflate\" is not one of \"zstd\", \"br\", \"gzip\"",
        ),
        (
            &format!("{base}compression:\n  algorithms: [\"gzip\", \"gzip\"]\n"),
            "compression.algorithms: \"gzip\" is listed twice",
        ),
        (
            &format!("{base}compression:\n  level: \"max\"\n"),
            "compression.level: \"max\" is not one of \"fast\", \"balanced\", \"best\"",
        ),
        (
            &format!("{base}compression:\n  types: [\"*/*\"]\n"),
            "compression.types: \"*/*\" is not a media type (type/subtype or type/*)",
        ),
        (
            &format!("{base}compression:\n  algorithm: [\"gzip\"]\n"),
            "unknown key \"algorithm\" (did you mean \"algorithms\"?)",
        ),
    ]);
}

#[test]
fn proxy_protocol_and_per_ip_keys_default_off_and_are_validated_with_their_line() {
    let site = Site::new();
    let config = site
        .load("server:\n  listen_addr: \"127.0.0.1:0\"\nstatic_files:\n  root: public\n")
        .unwrap();
    assert!(!config.server.proxy_protocol);
    assert!(config.server.proxy_protocol_settings.trusted.is_empty());
    assert_eq!(
        config.server.proxy_protocol_settings.timeout,
        sentinel::limits::DEFAULT_PROXY_PROTOCOL_TIMEOUT
    );
    assert_eq!(config.server.max_connections_per_ip, 0);

    let config = site
        .load(
            "server:\n  listen_addr: \"127.0.0.1:0\"\n  proxy_protocol: true\n  \
             proxy_protocol_trusted: [\"10.0.0.0/8\", \"2001:db8::1\"]\n  \
             max_connections_per_ip: 20\nstatic_files:\n  root: public\n",
        )
        .unwrap();
    let settings = &config.server.proxy_protocol_settings;
    assert!(config.server.proxy_protocol);
    assert!(settings.is_trusted("10.1.2.3".parse().unwrap()));
    assert!(settings.is_trusted("2001:db8::1".parse().unwrap()));
    assert!(!settings.is_trusted("192.0.2.1".parse().unwrap()));
    assert_eq!(config.server.max_connections_per_ip, 20);

    for (yaml, key, location) in [
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  proxy_protocol_trusted: [\"10.0.0.1/8\"]\nstatic_files:\n  root: public\n", "server.proxy_protocol_trusted[0]", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  proxy_protocol_timeout_ms: 0\nstatic_files:\n  root: public\n", "server.proxy_protocol_timeout_ms", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  proxy_protocol_max_header_bytes: 100\nstatic_files:\n  root: public\n", "server.proxy_protocol_max_header_bytes", ":3:"),
        ("server:\n  listen_addr: \"127.0.0.1:0\"\n  max_connections_per_ip: -1\nstatic_files:\n  root: public\n", "server.max_connections_per_ip", ":3:"),
    ] {
        let message = site.error(yaml);
        assert!(message.contains(key), "{key} missing from: {message}");
        assert!(message.contains(location), "{location} missing from: {message}");
    }
}
