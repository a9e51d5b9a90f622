//! Configuration: the YAML schema (`Raw*`, serde, unknown keys refused) and the validated,
//! typed [`Config`] the server runs on. Loading is two stages, parse then validate, and
//! every error names the file, the key and, where it can be found, the line.

mod backend_tls;
mod cache;
mod compression;
mod listener;
mod locate;
mod plugins;
mod proxy;
mod ratelimit;
mod raw;
mod run_as;
mod tls;
mod upstream;
mod yaml;

pub use backend_tls::{BackendTls, TlsRoots};
pub use cache::CacheConfig;
pub use compression::CompressionConfig;
pub use listener::ProxyProtocolConfig;
pub use plugins::{OnError, PluginConfig, PluginsConfig};
pub use proxy::{
    BackendConfig, ProxyConfig, RouteConfig, RouteTarget, DEFAULT_UPSTREAM, UNROUTED_NAME,
};
pub use ratelimit::{Cidr, KeySource, LimitSettings, RateLimitConfig, RedisSettings, RouteLimit};
pub use run_as::{Account, RunAs};
pub use tls::{CertificateConfig, TlsConfig, TlsVersion};
pub use upstream::{
    BackendSettings, BreakerSettings, CheckSettings, GroupPolicy, HealthSettings,
    RetryBudgetSettings, UpstreamConfig,
};

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::http::body::BodyLimits;
use crate::http::parser::ParseLimits;
use crate::http::response::StatusCode;
use raw::{RawConfig, RawErrorPages};

/// Highest accepted `server.workers`: far above any core count, low enough that a typo
/// cannot start thousands of threads.
const MAX_WORKERS: usize = 1024;

/// Highest accepted `server.max_connections`.
const MAX_CONNECTIONS_CEILING: usize = 1 << 24;

/// Highest accepted `static_files.cache_max_file_bytes`.
const MAX_CACHED_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Largest custom error page we keep in memory.
const MAX_ERROR_PAGE_BYTES: u64 = 1024 * 1024;

/// A configuration problem, with enough context for an operator to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// YAML that cannot be read as YAML (the library's message). Unknown keys and values of
    /// the wrong type are `Invalid`, reworded.
    #[error("{}", SyntaxDisplay(self))]
    Syntax {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("{}", InvalidDisplay(self))]
    Invalid {
        path: PathBuf,
        key: String,
        line: Option<usize>,
        reason: String,
    },
    /// Several problems, in file order: validation goes on after an error wherever the
    /// next checks still mean something, so one `--check` lists everything to fix.
    /// Displayed one per line, then a count.
    #[error("{}", ManyDisplay(self))]
    Many {
        path: PathBuf,
        errors: Vec<ConfigError>,
    },
}

impl ConfigError {
    /// The single problems this error stands for: itself, or each of `Many`.
    pub fn errors(&self) -> &[ConfigError] {
        match self {
            ConfigError::Many { errors, .. } => errors,
            single => std::slice::from_ref(single),
        }
    }

    /// The line the problem is on, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } | ConfigError::Syntax { line, .. } => *line,
            _ => None,
        }
    }

    /// `errors` as one error: none, the only one, or `Many` in file order.
    fn from_all(path: &Path, mut errors: Vec<ConfigError>) -> Option<ConfigError> {
        match errors.len() {
            0 | 1 => errors.pop(),
            _ => {
                sort_by_line(&mut errors);
                Some(ConfigError::Many {
                    path: path.to_path_buf(),
                    errors,
                })
            }
        }
    }

    /// This error and `other` as one `Many`, in file order.
    fn and(self, other: ConfigError) -> ConfigError {
        let path = match &self {
            ConfigError::Read { path, .. }
            | ConfigError::Syntax { path, .. }
            | ConfigError::Invalid { path, .. }
            | ConfigError::Many { path, .. } => path.clone(),
        };
        let mut errors = self.into_errors();
        errors.extend(other.into_errors());
        sort_by_line(&mut errors);
        ConfigError::Many { path, errors }
    }

    fn into_errors(self) -> Vec<ConfigError> {
        match self {
            ConfigError::Many { errors, .. } => errors,
            single => vec![single],
        }
    }
}

/// File order. Stable, so problems on one line keep the order they were found in; those
/// without a line go last.
fn sort_by_line(errors: &mut [ConfigError]) {
    errors.sort_by_key(|error| error.line().unwrap_or(usize::MAX));
}

struct InvalidDisplay<'a>(&'a ConfigError);

impl fmt::Display for InvalidDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let ConfigError::Invalid {
            path,
            key,
            line,
            reason,
        } = self.0
        {
            write_location(f, path, *line)?;
            // A problem with the top level (an unknown section) has no key path.
            if !key.is_empty() {
                write!(f, "{key}: ")?;
            }
            f.write_str(reason)
        } else {
            Ok(())
        }
    }
}

struct SyntaxDisplay<'a>(&'a ConfigError);

impl fmt::Display for SyntaxDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let ConfigError::Syntax {
            path,
            line,
            message,
        } = self.0
        {
            write_location(f, path, *line)?;
            f.write_str(message)
        } else {
            Ok(())
        }
    }
}

/// `file:line: ` (or `file: `), the form editors and `grep -n` use.
fn write_location(f: &mut fmt::Formatter<'_>, path: &Path, line: Option<usize>) -> fmt::Result {
    match line {
        Some(line) => write!(f, "{}:{line}: ", path.display()),
        None => write!(f, "{}: ", path.display()),
    }
}

struct ManyDisplay<'a>(&'a ConfigError);

impl fmt::Display for ManyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let ConfigError::Many { path, errors } = self.0 {
            for error in errors {
                writeln!(f, "{error}")?;
            }
            write!(
                f,
                "configuration file {} has {} errors",
                path.display(),
                errors.len()
            )
        } else {
            Ok(())
        }
    }
}

/// The validated configuration. Immutable once built; a reload builds a new one.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub static_files: Option<StaticFilesConfig>,
    pub error_pages: ErrorPages,
    pub proxy: Option<ProxyConfig>,
    /// Tried in order; the first whose host and path prefix match takes the request.
    pub routes: Vec<RouteConfig>,
    /// The admin listener; off when `None`.
    pub admin: Option<AdminConfig>,
    /// The HTTPS listener; off when `None`.
    pub tls: Option<TlsConfig>,
    pub logging: LoggingConfig,
    /// Problems that do not keep the config from serving (a certificate close to its end,
    /// or past it when not checking with `--check`), in the same form as errors: logged
    /// when the config is loaded, printed by `--check`. Each is `file:line: key: reason`.
    pub warnings: Vec<String>,
    /// Request rates per client; see `RateLimitConfig::is_enabled`.
    pub rate_limit: RateLimitConfig,
    /// The response cache; off when `None`.
    pub cache: Option<CacheConfig>,
    /// Response compression; off when `None` (no `compression` section).
    pub compression: Option<CompressionConfig>,
    /// proxy-wasm plugins; `None` when none is defined (then requests pay nothing for them).
    pub plugins: Option<PluginsConfig>,
}

/// Where and how the admin endpoints are served (`admin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen_addr: SocketAddr,
    /// Admin connections open at once; more wait in the accept backlog.
    pub max_connections: usize,
    /// The bearer token every admin endpoint but `/healthz` and `/readyz` requires.
    pub token: Option<AdminToken>,
    /// Whether requests, attempts and reloads are recorded for `/metrics`.
    pub metrics: bool,
    /// How often the dashboard samples every backend.
    pub dashboard_sample_interval: Duration,
    /// Samples each backend's dashboard ring keeps (history / interval).
    pub dashboard_samples: usize,
}

impl Config {
    /// Whether request metrics are recorded: only with an admin listener to read them.
    pub fn records_metrics(&self) -> bool {
        self.admin.as_ref().is_some_and(|admin| admin.metrics)
    }
}

/// `admin.token`: never printed, not even by `{:?}` of the whole config.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen_addr: SocketAddr,
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// How long a binary upgrade waits for the new process to be ready.
    pub upgrade_timeout: Duration,
    pub listen_backlog: u32,
    /// Runtime worker threads; 0: one per CPU the process may run on.
    pub workers: usize,
    /// How the workers are laid out when there is more than one. Startup-only.
    pub runtime: RuntimeLayout,
    pub limits: ConnectionLimits,
    /// Whom to serve as once bound (`server.user`, `server.group`, `server.allow_root`).
    /// Startup-only.
    pub run_as: RunAs,
    /// Connections on `listen_addr` begin with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// How a PROXY protocol header is read, on whichever listener expects one.
    pub proxy_protocol_settings: ProxyProtocolConfig,
    /// Connections open at once from one client address; 0: no cap.
    pub max_connections_per_ip: usize,
}

/// Per-connection limits: sizes for the parser and body decoders, and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub parse: ParseLimits,
    pub max_body_bytes: u64,
    pub max_chunk_ext_bytes: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub write_timeout: Duration,
    pub max_requests_per_connection: u64,
    /// Largest unread request body read and discarded to keep the connection open.
    pub max_discard_bytes: u64,
    /// How long a closing connection keeps discarding input (lingering close).
    pub linger_timeout: Duration,
}

impl ConnectionLimits {
    pub fn body_limits(&self) -> BodyLimits {
        BodyLimits {
            max_body_bytes: self.max_body_bytes,
            max_chunk_ext_bytes: self.max_chunk_ext_bytes,
            max_trailer_bytes: self.parse.max_head_bytes,
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        use crate::limits::*;
        ConnectionLimits {
            parse: ParseLimits::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_chunk_ext_bytes: DEFAULT_MAX_CHUNK_EXT_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_requests_per_connection: DEFAULT_MAX_REQUESTS_PER_CONNECTION,
            max_discard_bytes: DEFAULT_MAX_DISCARD_BYTES,
            linger_timeout: DEFAULT_LINGER_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StaticFilesConfig {
    /// Canonical (symlink-free, absolute) root directory.
    pub root: PathBuf,
    pub index: String,
    /// Serve files and directories whose name starts with a dot (`.git`, `.env`)?
    pub serve_hidden: bool,
    /// Files up to this size are read whole and sent with the head in one write; larger ones
    /// are streamed in pieces of this size.
    pub read_chunk_bytes: usize,
    /// Memory for the small-file cache (`static_files.cache_max_bytes`); 0 turns it off.
    pub cache_max_bytes: u64,
    /// Largest file the cache keeps (`static_files.cache_max_file_bytes`).
    pub cache_max_file_bytes: u64,
    /// How long a lookup of a file's precompressed sidecars is trusted
    /// (`static_files.sidecar_valid_ms`); zero looks on every request.
    pub sidecar_valid: Duration,
    /// Files whose sidecar lookups are remembered (`static_files.sidecar_max_entries`).
    pub sidecar_max_entries: usize,
}

/// Custom error pages, loaded into memory at config time so an error never touches disk.
#[derive(Debug, Clone, Default)]
pub struct ErrorPages {
    pages: HashMap<StatusCode, Bytes>,
}

impl ErrorPages {
    pub fn get(&self, status: StatusCode) -> Option<&Bytes> {
        self.pages.get(&status)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    /// A `tracing` filter directive such as `info` or `sentinel=debug`. `RUST_LOG` wins.
    pub level: String,
    pub format: LogFormat,
    pub access_log: bool,
    /// The access log's line format (`logging.access_log_format`).
    pub access_log_format: AccessLogFormat,
    /// Where `combined` and `json` lines go: a file (resolved against the config file's
    /// directory), or `None` for standard error.
    pub access_log_path: Option<PathBuf>,
    /// Formatted lines each worker holds before the writer takes them; more are dropped.
    pub access_log_buffer_bytes: usize,
    /// Longest a line waits in a worker's buffer.
    pub access_log_flush_interval: Duration,
    /// Keep or make an `X-Request-Id` for each request, forward it, return it and log it.
    pub request_id: bool,
}

/// `logging.access_log_format`: how each access-log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// Lines shaped as the `sentinel::access` tracing event in `logging.format` (standard
    /// error unless `access_log_path` is set), written by the access-log writer thread.
    Text,
    /// nginx's and Apache's `combined` format, byte for byte, for GoAccess, AWStats and awk.
    Combined,
    /// One JSON object per line with stable field names.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// How `server.workers` threads share the work (`server.runtime`). With one worker both are
/// the same single-threaded runtime.
///
/// `per_core` is the default on Linux: measured side by side, it used more of the CPU it was
/// given, with the lower p99 (ADR 0006). Elsewhere `shared` is: macOS and the BSDs accept
/// `SO_REUSEPORT` but hand every connection to one of the sockets, which would leave all but
/// one worker idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeLayout {
    /// One multi-thread runtime: one listening socket, one accept loop, and the scheduler
    /// moves (steals) tasks between the worker threads.
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), default)]
    Shared,
    /// One single-threaded runtime per worker thread, each with its own `SO_REUSEPORT`
    /// listening socket: the kernel spreads connections over the threads and a connection
    /// stays on the thread that accepted it (no cross-thread wake-ups, no work stealing).
    #[cfg_attr(any(target_os = "linux", target_os = "android"), default)]
    PerCore,
}

impl Config {
    /// Read, parse and validate `path`. `listen_override` (the `LISTEN` environment variable)
    /// replaces `server.listen_addr`. An expired certificate is a warning: serving it beats
    /// not listening at all.
    pub fn load(path: &Path, listen_override: Option<&str>) -> Result<Config, ConfigError> {
        Config::load_as(path, listen_override, Strictness::Serve, &mut Vec::new())
    }

    /// [`Config::load`] for `--check`: an expired certificate is an error, and the
    /// warnings come back whether or not the config is valid.
    pub fn check(path: &Path, listen_override: Option<&str>) -> Checked {
        let mut warnings = Vec::new();
        let result = Config::load_as(path, listen_override, Strictness::Check, &mut warnings);
        Checked { result, warnings }
    }

    fn load_as(
        path: &Path,
        listen_override: Option<&str>,
        strictness: Strictness,
        warnings: &mut Vec<String>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let config = Config::parse(&text, path, base_dir, strictness, warnings);
        let Some(listen) = listen_override else {
            return config;
        };
        let listen_addr = listen.trim().parse().map_err(|_| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "LISTEN (environment)".into(),
            line: None,
            reason: format!("{listen:?} is not an IP:port socket address"),
        });
        match (config, listen_addr) {
            (Ok(mut config), Ok(listen_addr)) => {
                config.server.listen_addr = listen_addr;
                Ok(config)
            }
            (Err(error), Ok(_)) | (Ok(_), Err(error)) => Err(error),
            (Err(config_error), Err(listen_error)) => Err(config_error.and(listen_error)),
        }
    }

    /// Parse and validate YAML `text`; relative paths in it are resolved against `base_dir`.
    pub fn from_yaml(text: &str, path: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        Config::parse(text, path, base_dir, Strictness::Serve, &mut Vec::new())
    }

    /// Parse and validate; `warnings` receives the warnings, valid or not.
    fn parse(
        text: &str,
        path: &Path,
        base_dir: &Path,
        strictness: Strictness,
        warnings: &mut Vec<String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            serde_yaml::from_str(text).map_err(|error| yaml::translate(&error, text, path))?;
        let validator = Validator {
            text,
            path,
            base_dir,
            errors: RefCell::new(Vec::new()),
            warnings: RefCell::new(Vec::new()),
            strict_expiry: strictness == Strictness::Check,
        };
        let config = validator.validate(raw);
        let mut found = validator.warnings.take();
        sort_by_line(&mut found);
        warnings.extend(found.iter().map(ToString::to_string));
        config.map(|mut config| {
            config.warnings.clone_from(warnings);
            config
        })
    }
}

/// What `--check` found: the config or its errors, and the warnings either way.
#[derive(Debug)]
pub struct Checked {
    pub result: Result<Config, ConfigError>,
    /// As [`Config::warnings`].
    pub warnings: Vec<String>,
}

/// Whether the config is loaded to serve or to be checked (`--check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strictness {
    Serve,
    Check,
}

/// Second stage: checks that need more than a type (files exist, limits agree).
///
/// A failed check is reported and validation goes on, with the value as it was (or a
/// stand-in) in its place: the config is thrown away if anything was reported, so a stand-in
/// is never served. A check whose input already failed is skipped, so one mistake is one
/// error, not a cascade.
struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
    base_dir: &'a Path,
    errors: RefCell<Vec<ConfigError>>,
    warnings: RefCell<Vec<ConfigError>>,
    /// `--check`: an expired certificate is an error, not a warning.
    strict_expiry: bool,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            line: locate::key_line(self.text, key),
            reason: reason.into(),
        }
    }

    /// The access log's own keys: limits in range, and a file only for the formats the
    /// writer thread writes (`text` is a tracing event and goes where the other logs go).
    fn access_log(&self, logging: &LoggingConfig) {
        use crate::limits::{
            MAX_ACCESS_LOG_BUFFER_BYTES, MAX_ACCESS_LOG_FLUSH_INTERVAL, MIN_ACCESS_LOG_BUFFER_BYTES,
        };
        if !(MIN_ACCESS_LOG_BUFFER_BYTES..=MAX_ACCESS_LOG_BUFFER_BYTES)
            .contains(&logging.access_log_buffer_bytes)
        {
            self.report(
                "logging.access_log_buffer_bytes",
                format!(
                    "must be between {MIN_ACCESS_LOG_BUFFER_BYTES} and {MAX_ACCESS_LOG_BUFFER_BYTES}"
                ),
            );
        }
        if logging.access_log_flush_interval.is_zero()
            || logging.access_log_flush_interval > MAX_ACCESS_LOG_FLUSH_INTERVAL
        {
            self.report(
                "logging.access_log_flush_ms",
                format!(
                    "must be between 1 and {}",
                    MAX_ACCESS_LOG_FLUSH_INTERVAL.as_millis()
                ),
            );
        }
    }

    fn report(&self, key: &str, reason: impl Into<String>) {
        let error = self.invalid(key, reason);
        self.errors.borrow_mut().push(error);
    }

    /// A problem that does not stop the config from serving.
    fn warn(&self, key: &str, reason: impl Into<String>) {
        let warning = self.invalid(key, reason);
        self.warnings.borrow_mut().push(warning);
    }

    /// `value`, reporting `key` if it is 0.
    fn positive(&self, key: &str, value: u64) -> u64 {
        if value == 0 {
            self.report(key, "must be greater than 0");
        }
        value
    }

    fn positive_millis(&self, key: &str, value: u64) -> Duration {
        Duration::from_millis(self.positive(key, value))
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let server = self.server(&raw);
        let (static_files, error_pages) = match &raw.static_files {
            Some(raw_static) => {
                let root = self.root(&raw_static.root);
                // Pages are looked for under the root first: with the root wrong, every
                // "page not found" would only repeat that error.
                let error_pages = match root {
                    Some(_) => self.error_pages(&raw_static.error_pages, &raw_static.root),
                    None => ErrorPages::default(),
                };
                let root = root.unwrap_or_else(|| self.resolve(&raw_static.root));
                (Some(self.static_files(raw_static, root)), error_pages)
            }
            None => (None, ErrorPages::default()),
        };
        let proxy = raw.proxy.as_ref().map(|proxy| self.proxy(proxy));
        let routes = self.routes(
            &raw.routes,
            proxy.as_ref().map(|(config, defaults)| (config, defaults)),
            static_files.is_some(),
        );
        let proxy = proxy.map(|(config, _)| config);
        let rate_limit = self.rate_limit(raw.rate_limit.as_ref(), &raw.routes, routes.len());
        let cache = self.cache(raw.cache.as_ref(), &raw.routes, routes.len());
        let compression = self.compression(raw.compression.as_ref(), &raw.routes, routes.len());
        let plugins = self.plugins(&raw.plugins, &raw.routes, routes.len());
        if static_files.is_none() && proxy.is_none() {
            self.report(
                "static_files",
                "nothing to serve: configure static_files, proxy, or both",
            );
        }
        let logging = LoggingConfig {
            level: raw.logging.level.clone(),
            format: raw.logging.format,
            access_log: raw.logging.access_log,
            access_log_format: raw.logging.access_log_format,
            access_log_path: raw
                .logging
                .access_log_path
                .as_ref()
                .map(|path| self.resolve(&path.to_string_lossy())),
            access_log_buffer_bytes: raw.logging.access_log_buffer_bytes,
            access_log_flush_interval: Duration::from_millis(raw.logging.access_log_flush_ms),
            request_id: raw.logging.request_id,
        };
        self.access_log(&logging);
        // Span and field filters (`target[span{field=value}]`) compile regexes whose cost grows
        // exponentially with the pattern: a config line must not be able to hang startup.
        if logging.level.contains(['[', '{'])
            || tracing_subscriber::EnvFilter::try_new(&logging.level).is_err()
        {
            self.report(
                "logging.level",
                format!(
                    "{:?} is not a log filter (try info or debug)",
                    logging.level
                ),
            );
        }
        let tls = raw.tls.as_ref().map(|tls| {
            self.tls(
                tls,
                server.listen_addr,
                raw.admin.as_ref().map(|a| a.listen_addr),
            )
        });
        let config = Config {
            source: self.path.to_path_buf(),
            server,
            static_files,
            error_pages,
            proxy,
            routes,
            admin: raw.admin.as_ref().map(|a| self.admin(a)),
            tls,
            logging,
            // Filled in by `Config::parse` once validation is over.
            warnings: Vec::new(),
            rate_limit,
            cache,
            compression,
            plugins,
        };
        match ConfigError::from_all(self.path, self.errors.take()) {
            None => Ok(config),
            Some(error) => Err(error),
        }
    }

    fn admin(&self, raw: &raw::RawAdmin) -> AdminConfig {
        let token = match raw.token.as_deref() {
            // A header value carries it: visible ASCII, no spaces (RFC 6750 §2.1).
            Some(token) if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) => {
                self.report(
                    "admin.token",
                    "must be non-empty printable ASCII without spaces (it is sent as \
                     `Authorization: Bearer <token>`)",
                );
                None
            }
            Some(token) => Some(AdminToken(token.to_string())),
            None => None,
        };
        // Anyone who can reach the admin port could read the backends and metrics:
        // off loopback, only with a token.
        if raw.token.is_none() && !raw.listen_addr.ip().is_loopback() {
            self.report(
                "admin.listen_addr",
                format!(
                    "{} is not a loopback address: set admin.token (a bearer token) or \
                     listen on 127.0.0.1",
                    raw.listen_addr
                ),
            );
        }
        let (dashboard_sample_interval, dashboard_samples) = self.dashboard_history(raw);
        AdminConfig {
            listen_addr: raw.listen_addr,
            max_connections: raw.max_connections.get(),
            token,
            metrics: raw.metrics,
            dashboard_sample_interval,
            dashboard_samples,
        }
    }

    /// `admin.dashboard_sample_ms` and the samples `admin.dashboard_history_ms` asks for.
    fn dashboard_history(&self, raw: &raw::RawAdmin) -> (Duration, usize) {
        let interval = Duration::from_millis(raw.dashboard_sample_ms);
        let min = crate::limits::MIN_DASHBOARD_SAMPLE_INTERVAL;
        if interval < min {
            self.report(
                "admin.dashboard_sample_ms",
                format!("must be at least {}", min.as_millis()),
            );
            return (min, 1);
        }
        let samples = raw.dashboard_history_ms / raw.dashboard_sample_ms;
        let max = crate::limits::MAX_DASHBOARD_SAMPLES;
        if samples == 0 || samples > max as u64 {
            self.report(
                "admin.dashboard_history_ms",
                format!(
                    "must be between one and {} samples of admin.dashboard_sample_ms",
                    max
                ),
            );
            return (interval, 1);
        }
        (interval, samples as usize)
    }

    fn server(&self, raw: &RawConfig) -> ServerConfig {
        let s = &raw.server;
        let positive = |key: &str, value: u64| self.positive(key, value);
        let millis = |key: &str, value: u64| self.positive_millis(key, value);
        let limits = ConnectionLimits {
            parse: ParseLimits {
                max_request_line_bytes: positive(
                    "server.max_request_line_bytes",
                    s.max_request_line_bytes as u64,
                ) as usize,
                max_head_bytes: positive("server.max_head_bytes", s.max_head_bytes as u64) as usize,
                max_headers: positive("server.max_headers", s.max_headers as u64) as usize,
            },
            max_body_bytes: s.max_body_bytes,
            max_chunk_ext_bytes: s.max_chunk_ext_bytes,
            header_read_timeout: millis("server.header_read_timeout_ms", s.header_read_timeout_ms),
            body_read_timeout: millis("server.body_read_timeout_ms", s.body_read_timeout_ms),
            keepalive_timeout: millis("server.keepalive_timeout_ms", s.keepalive_timeout_ms),
            write_timeout: millis("server.write_timeout_ms", s.write_timeout_ms),
            max_requests_per_connection: positive(
                "server.max_requests_per_connection",
                s.max_requests_per_connection,
            ),
            max_discard_bytes: s.max_discard_bytes,
            linger_timeout: Duration::from_millis(s.linger_timeout_ms),
        };
        // The request line must fit inside the head with room for a Host header, or every
        // long-but-legal request line would be reported as the wrong error. (A zero head is
        // reported above.)
        if s.max_head_bytes != 0 && s.max_request_line_bytes.saturating_add(64) > s.max_head_bytes {
            self.report(
                "server.max_request_line_bytes",
                format!(
                    "must be at least 64 bytes below server.max_head_bytes ({})",
                    s.max_head_bytes
                ),
            );
        }
        // The connection limit sizes a semaphore (and the drain waits for all its permits):
        // keep it where both are exact.
        if s.max_connections > MAX_CONNECTIONS_CEILING {
            self.report(
                "server.max_connections",
                format!("must be at most {MAX_CONNECTIONS_CEILING}"),
            );
        }
        if s.workers > MAX_WORKERS {
            self.report(
                "server.workers",
                format!("must be at most {MAX_WORKERS} (0: one per CPU)"),
            );
        }
        ServerConfig {
            listen_addr: s.listen_addr,
            workers: s.workers,
            runtime: s.runtime,
            max_connections: positive("server.max_connections", s.max_connections as u64) as usize,
            drain_timeout: Duration::from_millis(s.drain_timeout_ms),
            upgrade_timeout: Duration::from_millis(positive(
                "server.upgrade_timeout_ms",
                s.upgrade_timeout_ms,
            )),
            listen_backlog: positive("server.listen_backlog", u64::from(s.listen_backlog)) as u32,
            limits,
            run_as: self.run_as(s.user.as_deref(), s.group.as_deref(), s.allow_root),
            proxy_protocol: s.proxy_protocol,
            proxy_protocol_settings: self.proxy_protocol(s),
            max_connections_per_ip: s.max_connections_per_ip,
        }
    }

    /// `path` as written, against the config file's directory if relative. Without `.`
    /// components: the directory of `sentinel -c config.yaml` is `.`, and `./public` would
    /// otherwise be resolved, and reported, as `././public`.
    fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        };
        joined.components().collect()
    }

    /// The canonical root directory, or `None` (reported) if there is none.
    fn root(&self, raw_root: &str) -> Option<PathBuf> {
        let root = self.resolve(raw_root);
        let reason = match root.canonicalize() {
            Ok(canonical) if canonical.is_dir() => return Some(canonical),
            Ok(_) => format!("{} is not a directory", root.display()),
            Err(error) => io_reason(&root, &error),
        };
        self.report("static_files.root", reason);
        None
    }

    fn static_files(&self, raw: &raw::RawStaticFiles, root: PathBuf) -> StaticFilesConfig {
        if raw.index.is_empty() || raw.index.contains(['/', '\\', '\0']) || raw.index == ".." {
            self.report(
                "static_files.index",
                "must be a plain file name such as index.html",
            );
        }
        if raw.read_chunk_bytes < 4096 || raw.read_chunk_bytes > 16 * 1024 * 1024 {
            self.report(
                "static_files.read_chunk_bytes",
                "must be between 4096 and 16777216",
            );
        }
        // A cache miss reads the whole file into memory, so this bounds memory per response.
        if raw.cache_max_file_bytes > MAX_CACHED_FILE_BYTES {
            self.report(
                "static_files.cache_max_file_bytes",
                "must be at most 16777216 (16 MiB)",
            );
        }
        use crate::limits::{MAX_SIDECAR_MAX_ENTRIES, MAX_SIDECAR_VALID};
        let sidecar_valid = Duration::from_millis(raw.sidecar_valid_ms);
        if sidecar_valid > MAX_SIDECAR_VALID {
            self.report(
                "static_files.sidecar_valid_ms",
                format!("must be at most {}", MAX_SIDECAR_VALID.as_millis()),
            );
        }
        if raw.sidecar_max_entries > MAX_SIDECAR_MAX_ENTRIES {
            self.report(
                "static_files.sidecar_max_entries",
                format!("must be at most {MAX_SIDECAR_MAX_ENTRIES}"),
            );
        }
        StaticFilesConfig {
            root,
            index: raw.index.clone(),
            serve_hidden: raw.serve_hidden,
            read_chunk_bytes: raw.read_chunk_bytes,
            cache_max_bytes: raw.cache_max_bytes,
            cache_max_file_bytes: raw.cache_max_file_bytes,
            sidecar_valid,
            sidecar_max_entries: raw.sidecar_max_entries,
        }
    }

    /// Error pages are found relative to the static root first (like nginx's `error_page`
    /// URIs), then relative to the config file, so both `errors/404.html` and
    /// `public/errors/404.html` work; a page that is in neither place is a config error.
    fn error_pages(&self, raw: &RawErrorPages, root: &str) -> ErrorPages {
        let root_dir = self.resolve(root);
        let mut pages = HashMap::new();
        for (key, status, file) in raw.entries() {
            let Some(file) = file else { continue };
            let key = format!("static_files.error_pages.{key}");
            let under_root: PathBuf = root_dir.join(file).components().collect();
            let candidates = [under_root, self.resolve(file)];
            let Some(found) = candidates.iter().find(|p| p.is_file()) else {
                self.report(
                    &key,
                    format!(
                        "{file} not found (looked in {} and {})",
                        root_dir.display(),
                        self.base_dir.display()
                    ),
                );
                continue;
            };
            match read_small_file(found) {
                Ok(body) => {
                    pages.insert(status, body);
                }
                Err(reason) => self.report(&key, reason),
            }
        }
        ErrorPages { pages }
    }
}

fn read_small_file(path: &Path) -> Result<Bytes, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| io_reason(path, &e))?
        .len();
    if size > MAX_ERROR_PAGE_BYTES {
        return Err(format!(
            "{} is {size} bytes; error pages are limited to {MAX_ERROR_PAGE_BYTES}",
            path.display()
        ));
    }
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|e| io_reason(path, &e))
}

/// Why `path` could not be used, in words rather than an OS error number where the cause is
/// a common one.
fn io_reason(path: &Path, error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => format!("{} does not exist", path.display()),
        std::io::ErrorKind::PermissionDenied => {
            format!("{} cannot be read (permission denied)", path.display())
        }
        _ => format!("{}: {error}", path.display()),
    }
}
