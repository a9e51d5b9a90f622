//! The YAML schema as serde sees it. Every struct refuses unknown keys so a typo is an error
//! with a line number, not a silently ignored setting. Defaults live in `crate::limits`.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::{AccessLogFormat, LogFormat, RuntimeLayout, TlsVersion};
use crate::http::response::StatusCode;
use crate::limits;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub server: RawServer,
    #[serde(default)]
    pub static_files: Option<RawStaticFiles>,
    #[serde(default)]
    pub proxy: Option<RawProxy>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub logging: RawLogging,
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub cache: Option<RawCache>,
    pub compression: Option<RawCompression>,
    /// proxy-wasm plugins applied to every request (config/plugins.rs).
    #[serde(default)]
    pub plugins: Vec<RawPlugin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub listen_addr: SocketAddr,
    pub max_connections: usize,
    pub max_request_line_bytes: usize,
    pub max_head_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub max_chunk_ext_bytes: usize,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub keepalive_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub max_requests_per_connection: u64,
    pub max_discard_bytes: u64,
    pub linger_timeout_ms: u64,
    pub listen_backlog: u32,
    pub drain_timeout_ms: u64,
    pub upgrade_timeout_ms: u64,
    pub workers: usize,
    pub runtime: RuntimeLayout,
    pub user: Option<String>,
    pub group: Option<String>,
    pub allow_root: bool,
    // Listener settings (config/listener.rs).
    pub proxy_protocol: bool,
    pub proxy_protocol_trusted: Vec<String>,
    pub proxy_protocol_timeout_ms: u64,
    pub proxy_protocol_max_header_bytes: usize,
    pub max_connections_per_ip: usize,
}

impl Default for RawServer {
    fn default() -> RawServer {
        RawServer {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: limits::DEFAULT_MAX_CONNECTIONS,
            max_request_line_bytes: limits::DEFAULT_MAX_REQUEST_LINE_BYTES,
            max_head_bytes: limits::DEFAULT_MAX_HEAD_BYTES,
            max_headers: limits::DEFAULT_MAX_HEADERS,
            max_body_bytes: limits::DEFAULT_MAX_BODY_BYTES,
            max_chunk_ext_bytes: limits::DEFAULT_MAX_CHUNK_EXT_BYTES,
            header_read_timeout_ms: millis(limits::DEFAULT_HEADER_READ_TIMEOUT),
            body_read_timeout_ms: millis(limits::DEFAULT_BODY_READ_TIMEOUT),
            keepalive_timeout_ms: millis(limits::DEFAULT_KEEPALIVE_TIMEOUT),
            write_timeout_ms: millis(limits::DEFAULT_WRITE_TIMEOUT),
            max_requests_per_connection: limits::DEFAULT_MAX_REQUESTS_PER_CONNECTION,
            max_discard_bytes: limits::DEFAULT_MAX_DISCARD_BYTES,
            linger_timeout_ms: millis(limits::DEFAULT_LINGER_TIMEOUT),
            listen_backlog: limits::DEFAULT_LISTEN_BACKLOG,
            drain_timeout_ms: millis(limits::DEFAULT_DRAIN_TIMEOUT),
            upgrade_timeout_ms: millis(limits::DEFAULT_UPGRADE_TIMEOUT),
            workers: 0,
            runtime: RuntimeLayout::default(),
            user: None,
            group: None,
            allow_root: false,
            proxy_protocol: false,
            proxy_protocol_trusted: Vec::new(),
            proxy_protocol_timeout_ms: millis(limits::DEFAULT_PROXY_PROTOCOL_TIMEOUT),
            proxy_protocol_max_header_bytes: limits::DEFAULT_PROXY_PROTOCOL_MAX_HEADER_BYTES,
            max_connections_per_ip: 0,
        }
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    duration.as_millis() as u64
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStaticFiles {
    pub root: String,
    #[serde(default = "default_index")]
    pub index: String,
    #[serde(default)]
    pub error_pages: RawErrorPages,
    #[serde(default)]
    pub serve_hidden: bool,
    #[serde(default = "default_read_chunk_bytes")]
    pub read_chunk_bytes: usize,
    #[serde(default = "default_cache_max_bytes")]
    pub cache_max_bytes: u64,
    #[serde(default = "default_cache_max_file_bytes")]
    pub cache_max_file_bytes: u64,
    #[serde(default = "default_sidecar_valid_ms")]
    pub sidecar_valid_ms: u64,
    #[serde(default = "default_sidecar_max_entries")]
    pub sidecar_max_entries: usize,
}

fn default_sidecar_valid_ms() -> u64 {
    millis(limits::DEFAULT_SIDECAR_VALID)
}

fn default_sidecar_max_entries() -> usize {
    limits::DEFAULT_SIDECAR_MAX_ENTRIES
}

fn default_cache_max_bytes() -> u64 {
    limits::DEFAULT_FILE_CACHE_MAX_BYTES
}

fn default_cache_max_file_bytes() -> u64 {
    limits::DEFAULT_FILE_CACHE_MAX_FILE_BYTES
}

fn default_index() -> String {
    "index.html".into()
}

fn default_read_chunk_bytes() -> usize {
    limits::DEFAULT_READ_CHUNK_BYTES
}

/// One optional page per status Sentinel emits. The first two are the original design's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawErrorPages {
    pub not_found: Option<String>,
    pub bad_request: Option<String>,
    pub forbidden: Option<String>,
    pub method_not_allowed: Option<String>,
    pub request_timeout: Option<String>,
    pub payload_too_large: Option<String>,
    pub uri_too_long: Option<String>,
    pub range_not_satisfiable: Option<String>,
    pub expectation_failed: Option<String>,
    pub header_fields_too_large: Option<String>,
    pub internal_error: Option<String>,
    pub not_implemented: Option<String>,
    pub bad_gateway: Option<String>,
    pub service_unavailable: Option<String>,
    pub gateway_timeout: Option<String>,
    pub version_not_supported: Option<String>,
    pub too_many_requests: Option<String>,
}

impl RawErrorPages {
    /// (key, status, configured file) for every page.
    pub fn entries(&self) -> [(&'static str, StatusCode, Option<&str>); 17] {
        [
            (
                "not_found",
                StatusCode::NOT_FOUND,
                self.not_found.as_deref(),
            ),
            (
                "bad_request",
                StatusCode::BAD_REQUEST,
                self.bad_request.as_deref(),
            ),
            (
                "forbidden",
                StatusCode::FORBIDDEN,
                self.forbidden.as_deref(),
            ),
            (
                "method_not_allowed",
                StatusCode::METHOD_NOT_ALLOWED,
                self.method_not_allowed.as_deref(),
            ),
            (
                "request_timeout",
                StatusCode::REQUEST_TIMEOUT,
                self.request_timeout.as_deref(),
            ),
            (
                "payload_too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                self.payload_too_large.as_deref(),
            ),
            (
                "uri_too_long",
                StatusCode::URI_TOO_LONG,
                self.uri_too_long.as_deref(),
            ),
            (
                "range_not_satisfiable",
                StatusCode::RANGE_NOT_SATISFIABLE,
                self.range_not_satisfiable.as_deref(),
            ),
            (
                "expectation_failed",
                StatusCode::EXPECTATION_FAILED,
                self.expectation_failed.as_deref(),
            ),
            (
                "header_fields_too_large",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                self.header_fields_too_large.as_deref(),
            ),
            (
                "internal_error",
                StatusCode::INTERNAL_SERVER_ERROR,
                self.internal_error.as_deref(),
            ),
            (
                "not_implemented",
                StatusCode::NOT_IMPLEMENTED,
                self.not_implemented.as_deref(),
            ),
            (
                "bad_gateway",
                StatusCode::BAD_GATEWAY,
                self.bad_gateway.as_deref(),
            ),
            (
                "service_unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                self.service_unavailable.as_deref(),
            ),
            (
                "gateway_timeout",
                StatusCode::GATEWAY_TIMEOUT,
                self.gateway_timeout.as_deref(),
            ),
            (
                "version_not_supported",
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                self.version_not_supported.as_deref(),
            ),
            (
                "too_many_requests",
                StatusCode::TOO_MANY_REQUESTS,
                self.too_many_requests.as_deref(),
            ),
        ]
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    /// The original design's pool; it becomes the upstream group named `default`.
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    #[serde(default = "default_connection_timeout_ms")]
    pub connection_timeout_ms: u64,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default = "default_send_timeout_ms")]
    pub send_timeout_ms: u64,
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    #[serde(default = "default_tunnel_idle_timeout_ms")]
    pub tunnel_idle_timeout_ms: u64,
    #[serde(default, deserialize_with = "unique_names")]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default = "default_true")]
    pub pass_host: bool,
    #[serde(default = "default_max_idle_per_backend")]
    pub max_idle_per_backend: usize,
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    #[serde(default = "default_fail_timeout_ms")]
    pub fail_timeout_ms: u64,
    #[serde(default = "default_max_fail_timeout_ms")]
    pub max_fail_timeout_ms: u64,
    #[serde(default = "default_max_response_head_bytes")]
    pub max_response_head_bytes: usize,
    /// Balancing of the `default` group (and of groups without a strategy of their own).
    #[serde(default)]
    pub strategy: RawStrategy,
    pub hash_key: Option<String>,
    #[serde(default = "default_latency_ms")]
    pub default_latency_ms: u64,
    #[serde(default = "default_ewma_decay_ms")]
    pub ewma_decay_ms: u64,
    #[serde(default = "default_failure_penalty_ms")]
    pub failure_penalty_ms: u64,
    #[serde(default)]
    pub slow_start_ms: u64,
    #[serde(default)]
    pub max_concurrent_requests: u32,
    #[serde(default)]
    pub failure_statuses: Vec<u16>,
    /// Statuses that count against a backend without being retried; `None` (unset) takes
    /// each group's default by its strategy.
    #[serde(default)]
    pub error_statuses: Option<Vec<u16>>,
    #[serde(default)]
    pub slow_response_ms: u64,
    #[serde(default = "default_max_ejected_percent")]
    pub max_ejected_percent: u32,
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    #[serde(default = "default_retry_budget_percent")]
    pub retry_budget_percent: u32,
    #[serde(default = "default_retry_budget_min_per_sec")]
    pub retry_budget_min_per_sec: u32,
    #[serde(default)]
    pub breaker: RawBreaker,
    /// A response header naming the backend that served the request; none by default.
    pub backend_header: Option<String>,
    /// Active health checks for every group without its own; off by default.
    pub health_check: Option<RawHealthCheck>,
    /// CA certificates (PEM) that TLS backends of every group without its own are verified
    /// against, instead of the system's trust store.
    pub tls_ca_file: Option<String>,
}

/// A mapping of names in which a name given twice is an error, as YAML says it is: serde's
/// map would silently keep the last one and the YAML library does not check. The message is
/// serde's own for a struct, so it is reported the same way (at the second occurrence).
fn unique_names<'de, D, T>(deserializer: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct UniqueNames<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for UniqueNames<T> {
        type Value = BTreeMap<String, T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut names = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                if names.contains_key(&name) {
                    return Err(de::Error::custom(format_args!("duplicate field `{name}`")));
                }
                let value = map.next_value()?;
                names.insert(name, value);
            }
            Ok(names)
        }
    }

    deserializer.deserialize_map(UniqueNames(PhantomData))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    pub path: String,
    #[serde(default = "default_check_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_check_jitter_ms")]
    pub jitter_ms: u64,
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_expected_status")]
    pub expected_status: u16,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_check_interval_ms() -> u64 {
    5000
}

fn default_check_jitter_ms() -> u64 {
    500
}

fn default_check_timeout_ms() -> u64 {
    2000
}

fn default_expected_status() -> u16 {
    200
}

fn default_rise() -> u32 {
    2
}

fn default_fall() -> u32 {
    3
}

/// The per-backend circuit breaker (failure rate over a rolling window).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBreaker {
    pub failure_rate: f64,
    pub min_requests: u32,
    pub window_ms: u64,
    pub open_ms: u64,
    pub trial_requests: u32,
}

impl Default for RawBreaker {
    fn default() -> RawBreaker {
        RawBreaker {
            failure_rate: limits::DEFAULT_BREAKER_FAILURE_RATE,
            min_requests: limits::DEFAULT_BREAKER_MIN_REQUESTS,
            window_ms: millis(limits::DEFAULT_BREAKER_WINDOW),
            open_ms: millis(limits::DEFAULT_BREAKER_OPEN),
            trial_requests: limits::DEFAULT_BREAKER_TRIAL_REQUESTS,
        }
    }
}

fn default_max_ejected_percent() -> u32 {
    limits::DEFAULT_MAX_EJECTED_PERCENT
}

fn default_max_retries() -> u32 {
    limits::DEFAULT_MAX_RETRIES
}

fn default_retry_budget_percent() -> u32 {
    limits::DEFAULT_RETRY_BUDGET_PERCENT
}

fn default_retry_budget_min_per_sec() -> u32 {
    limits::DEFAULT_RETRY_BUDGET_MIN_PER_SEC
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawStrategy {
    #[default]
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    Random,
    P2c,
    ConsistentHash,
    Adaptive,
}

fn default_latency_ms() -> u64 {
    millis(limits::DEFAULT_BACKEND_LATENCY)
}

fn default_ewma_decay_ms() -> u64 {
    millis(limits::DEFAULT_EWMA_DECAY)
}

fn default_failure_penalty_ms() -> u64 {
    millis(limits::DEFAULT_FAILURE_PENALTY)
}

/// A named pool of backends with optional timeouts of its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub backends: Vec<RawBackend>,
    pub strategy: Option<RawStrategy>,
    pub hash_key: Option<String>,
    pub health_check: Option<RawHealthCheck>,
    pub connection_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub send_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    pub tunnel_idle_timeout_ms: Option<u64>,
    pub pass_host: Option<bool>,
    pub tls_ca_file: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_connection_timeout_ms() -> u64 {
    millis(limits::DEFAULT_UPSTREAM_CONNECT_TIMEOUT)
}

fn default_request_timeout_ms() -> u64 {
    millis(limits::DEFAULT_UPSTREAM_REQUEST_TIMEOUT)
}

fn default_send_timeout_ms() -> u64 {
    millis(limits::DEFAULT_UPSTREAM_SEND_TIMEOUT)
}

fn default_read_timeout_ms() -> u64 {
    millis(limits::DEFAULT_UPSTREAM_READ_TIMEOUT)
}

fn default_tunnel_idle_timeout_ms() -> u64 {
    millis(limits::DEFAULT_TUNNEL_IDLE_TIMEOUT)
}

fn default_max_idle_per_backend() -> usize {
    limits::DEFAULT_MAX_IDLE_PER_BACKEND
}

fn default_idle_timeout_ms() -> u64 {
    millis(limits::DEFAULT_UPSTREAM_IDLE_TIMEOUT)
}

fn default_max_fails() -> u32 {
    limits::DEFAULT_MAX_FAILS
}

fn default_fail_timeout_ms() -> u64 {
    millis(limits::DEFAULT_FAIL_TIMEOUT)
}

fn default_max_fail_timeout_ms() -> u64 {
    millis(limits::DEFAULT_MAX_FAIL_TIMEOUT)
}

fn default_max_response_head_bytes() -> usize {
    limits::DEFAULT_MAX_RESPONSE_HEAD_BYTES
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub name: String,
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Speak TLS to this backend.
    #[serde(default)]
    pub tls: bool,
    /// The name its certificate must carry; by default the host of `address`.
    pub tls_server_name: Option<String>,
}

fn default_weight() -> u32 {
    1
}

/// The admin listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub listen_addr: SocketAddr,
    /// Bearer token every endpoint but the probes requires; needed off loopback.
    pub token: Option<String>,
    /// Record request metrics (`GET /metrics`); off, the hot path records nothing.
    #[serde(default = "default_true")]
    pub metrics: bool,
    /// Non-zero by type, so a 0 is refused with its line like any type error.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: std::num::NonZeroUsize,
    /// How often the dashboard samples every backend, in milliseconds.
    #[serde(default = "default_dashboard_sample_ms")]
    pub dashboard_sample_ms: u64,
    /// How far back the dashboard's charts reach, in milliseconds.
    #[serde(default = "default_dashboard_history_ms")]
    pub dashboard_history_ms: u64,
}

fn default_dashboard_sample_ms() -> u64 {
    limits::DEFAULT_DASHBOARD_SAMPLE_INTERVAL.as_millis() as u64
}

fn default_dashboard_history_ms() -> u64 {
    limits::DEFAULT_DASHBOARD_HISTORY.as_millis() as u64
}

fn default_admin_max_connections() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(limits::DEFAULT_ADMIN_MAX_CONNECTIONS)
        .unwrap_or(std::num::NonZeroUsize::MIN)
}

/// The HTTPS listener (`tls`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub listen_addr: SocketAddr,
    pub certificates: Vec<RawCertificate>,
    #[serde(default)]
    pub redirect_http: bool,
    pub redirect_port: Option<u16>,
    #[serde(default)]
    pub min_version: TlsVersion,
    #[serde(default = "default_tls_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    pub client_ca: Option<String>,
    #[serde(default = "default_tls_session_cache_entries")]
    pub session_cache_entries: usize,
    #[serde(default = "default_true")]
    pub session_tickets: bool,
    /// Each connection begins with a PROXY protocol header (config/listener.rs).
    #[serde(default)]
    pub proxy_protocol: bool,
}

fn default_tls_handshake_timeout_ms() -> u64 {
    millis(limits::DEFAULT_TLS_HANDSHAKE_TIMEOUT)
}

fn default_tls_session_cache_entries() -> usize {
    limits::DEFAULT_TLS_SESSION_CACHE_ENTRIES
}

/// One entry of `tls.certificates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// One entry of `routes`: which requests (host, path prefix) go where.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    /// The `route` label of its metrics.
    pub name: Option<String>,
    pub host: Option<String>,
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    pub upstream: Option<String>,
    #[serde(default, rename = "static")]
    pub static_files: bool,
    #[serde(default)]
    pub strip_prefix: bool,
    pub connection_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub send_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    pub tunnel_idle_timeout_ms: Option<u64>,
    /// Absent: the default limit; `false` or empty: none; a mapping: a limit of its own.
    #[serde(default)]
    pub rate_limit: RawRouteLimit,
    /// `false`: this route's responses are never stored nor served from the cache.
    pub cache: Option<bool>,
    /// `false`: never compress this route's responses (proxied ones included).
    #[serde(default = "default_true")]
    pub compression: bool,
    /// The plugins this route runs, by name, instead of the global list (`[]`: none).
    pub plugins: Option<Vec<String>>,
}

/// One entry of `plugins`: a proxy-wasm module and what it is given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlugin {
    pub name: String,
    pub path: String,
    pub root_id: Option<String>,
    #[serde(default)]
    pub configuration: String,
    #[serde(default)]
    pub vm_configuration: String,
    #[serde(default = "default_plugin_on_error")]
    pub on_error: String,
    #[serde(default = "default_plugin_failure_status")]
    pub failure_status: u16,
    #[serde(default = "default_plugin_max_memory_bytes")]
    pub max_memory_bytes: u64,
    #[serde(default = "default_plugin_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_plugin_on_error() -> String {
    "fail_closed".into()
}

fn default_plugin_failure_status() -> u16 {
    limits::DEFAULT_PLUGIN_FAILURE_STATUS
}

fn default_plugin_max_memory_bytes() -> u64 {
    limits::DEFAULT_PLUGIN_MAX_MEMORY_BYTES
}

fn default_plugin_timeout_ms() -> u64 {
    millis(limits::DEFAULT_PLUGIN_TIMEOUT)
}

/// `compression`; absent means off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompression {
    pub algorithms: Option<Vec<String>>,
    #[serde(default = "default_compression_min_bytes")]
    pub min_bytes: u64,
    pub types: Option<Vec<String>>,
    #[serde(default)]
    pub precompressed: bool,
    #[serde(default = "default_compression_level")]
    pub level: String,
}

fn default_compression_min_bytes() -> u64 {
    limits::DEFAULT_COMPRESSION_MIN_BYTES
}

fn default_compression_level() -> String {
    "fast".into()
}

fn default_path_prefix() -> String {
    "/".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLogging {
    pub level: String,
    pub format: LogFormat,
    pub access_log: bool,
    pub access_log_format: AccessLogFormat,
    pub access_log_path: Option<PathBuf>,
    pub access_log_buffer_bytes: usize,
    pub access_log_flush_ms: u64,
    pub request_id: bool,
}

impl Default for RawLogging {
    fn default() -> RawLogging {
        RawLogging {
            level: "info".into(),
            format: LogFormat::Text,
            access_log: true,
            access_log_format: AccessLogFormat::Text,
            access_log_path: None,
            access_log_buffer_bytes: crate::limits::DEFAULT_ACCESS_LOG_BUFFER_BYTES,
            access_log_flush_ms: crate::limits::DEFAULT_ACCESS_LOG_FLUSH_INTERVAL.as_millis()
                as u64,
            request_id: true,
        }
    }
}

/// `rate_limit`: the default limit and how clients are told apart.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub requests_per_second: Option<u64>,
    pub burst: Option<u64>,
    #[serde(default = "default_rate_limit_key")]
    pub key: String,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default = "default_rate_limit_max_keys")]
    pub max_keys: usize,
    pub redis_url: Option<String>,
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    pub redis_key_prefix: Option<String>,
}

fn default_rate_limit_key() -> String {
    "client_ip".into()
}

fn default_rate_limit_max_keys() -> usize {
    limits::DEFAULT_RATE_LIMIT_MAX_KEYS
}

fn default_redis_timeout_ms() -> u64 {
    millis(limits::DEFAULT_REDIS_TIMEOUT)
}

/// A rate of a route's own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimit {
    pub requests_per_second: u64,
    pub burst: Option<u64>,
}

/// A route's `rate_limit`: absent, `false`/`null` (off), `true` (the default, said
/// explicitly) or a mapping (a limit of its own).
#[derive(Debug, Default)]
pub(super) enum RawRouteLimit {
    #[default]
    Inherit,
    Off,
    Own(RawLimit),
}

impl<'de> Deserialize<'de> for RawRouteLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RouteLimitVisitor;

        impl<'de> Visitor<'de> for RouteLimitVisitor {
            type Value = RawRouteLimit;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_bool<E: de::Error>(self, on: bool) -> Result<RawRouteLimit, E> {
                Ok(if on {
                    RawRouteLimit::Inherit
                } else {
                    RawRouteLimit::Off
                })
            }

            fn visit_unit<E: de::Error>(self) -> Result<RawRouteLimit, E> {
                Ok(RawRouteLimit::Off)
            }

            fn visit_none<E: de::Error>(self) -> Result<RawRouteLimit, E> {
                Ok(RawRouteLimit::Off)
            }

            // A mapping is read as the struct it is, so a misspelt key is reported as
            // every other unknown key is.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRouteLimit, A::Error> {
                RawLimit::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawRouteLimit::Own)
            }
        }

        deserializer.deserialize_any(RouteLimitVisitor)
    }
}

/// `cache`: the response cache (off when absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    #[serde(default = "default_response_cache_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_response_cache_max_object_bytes")]
    pub max_object_bytes: u64,
    #[serde(default = "default_response_cache_lock_timeout_ms")]
    pub lock_timeout_ms: u64,
}

fn default_response_cache_max_bytes() -> u64 {
    limits::DEFAULT_CACHE_MAX_BYTES
}

fn default_response_cache_max_object_bytes() -> u64 {
    limits::DEFAULT_CACHE_MAX_OBJECT_BYTES
}

fn default_response_cache_lock_timeout_ms() -> u64 {
    millis(limits::DEFAULT_CACHE_LOCK_TIMEOUT)
}
