//! The tyk.conf file model: Tyk's field names, every field optional, unknown fields ignored.

use serde::Deserialize;

use crate::Secret;

/// tyk.conf as written by operators. Only the fields Tollgate reads are modelled; real
/// files carry many more, which serde skips.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TykConf {
    /// Bind address; empty = all interfaces.
    pub listen_address: String,
    /// Proxy and admin port (default 8080).
    pub listen_port: Option<u16>,
    /// Admin API secret.
    pub secret: Secret,
    /// Signs cluster notifications.
    pub node_secret: Secret,
    /// Accept unsigned cluster notifications.
    pub allow_insecure_configs: bool,
    /// Folder of API definitions, relative to the config file (default `apps`).
    pub app_path: Option<String>,
    /// Upstream response-header timeout in seconds (0 = 30).
    pub proxy_default_timeout: Option<u64>,
    /// Session storage.
    pub storage: StorageConf,
    /// Policy source.
    pub policies: PoliciesConf,
    /// Store keys hashed (default true in Tollgate).
    pub hash_keys: Option<bool>,
    /// Tyk's key hash algorithm name ("" = sha256 in Tollgate).
    pub hash_key_function: String,
    /// Allow `GET /tyk/keys` to list hashes when `hash_keys` is on.
    pub enable_hashed_keys_listing: bool,
    /// Allow keys with empty `access_rights` (access to every API).
    pub allow_master_keys: bool,
    /// Shortest key accepted (0 = 3).
    pub min_token_length: Option<usize>,
    /// How basic-auth passwords are stored (default bcrypt).
    pub basic_auth_hash_key_function: String,
    /// Write analytics records.
    pub enable_analytics: bool,
    /// Listener options.
    pub http_server_options: HttpServerOptions,
    /// Honour per-API `domain`; Tollgate defaults to true.
    pub enable_custom_domains: Option<bool>,
    /// `Connection: close` on every client response.
    pub close_connections: bool,
    /// No keep-alive towards upstreams.
    pub proxy_close_connections: bool,
    /// Accept any upstream certificate.
    pub proxy_ssl_insecure_skip_verify: bool,
    /// Lowest TLS version to upstreams, Go's number (0 = 1.2).
    pub proxy_ssl_min_version: u16,
    /// Highest TLS version to upstreams, Go's number (0 = 1.3).
    pub proxy_ssl_max_version: u16,
    /// TLS 1.2 cipher suites to upstreams by Go's names.
    pub proxy_ssl_ciphers: Option<Vec<String>>,
    /// Tollgate extension: a PEM file of CA certificates trusted for upstreams besides the
    /// system's.
    pub proxy_ssl_ca_cert: String,
    /// HTTP/2 to upstreams (not built: read so it can be reported, upstreams get HTTP/1.1).
    pub proxy_enable_http2: bool,
    /// Idle upstream connections kept per host (per worker thread in Tollgate).
    pub max_idle_connections_per_host: Option<usize>,
    /// Seconds SIGTERM waits for in-flight requests (0 = 30).
    pub graceful_shutdown_timeout_duration: Option<u64>,
    /// What `X-RateLimit-*` report: `quotas` (default) or `rate_limits`.
    pub rate_limit_response_headers: String,
    /// Read API definitions from a database instead of `app_path`.
    pub use_db_app_configs: bool,
    /// Database settings for API definitions.
    pub db_app_conf_options: DbAppConfOptions,
    /// Analytics settings.
    pub analytics_config: AnalyticsConf,
    /// Tollgate extension: Prometheus metrics on their own listener.
    pub prometheus: PrometheusConf,
    /// Tollgate extension: one structured log line per request (target `tollgate::access`).
    pub enable_access_log: bool,
    /// Tollgate extension: worker threads (0 or absent = one per CPU).
    pub worker_threads: Option<usize>,
    /// Error id → replacement status and message for the gateway's own error responses.
    pub override_messages: std::collections::BTreeMap<String, MessageOverride>,
    /// The uptime checker (the checks themselves are in the API definitions).
    pub uptime_tests: UptimeTestsConf,
    // Not implemented yet; read (as raw JSON, `null` = absent) only so that turning one on
    // stops the start instead of being ignored (see `unsupported.rs`).
    /// Only match requests for this Host.
    pub hostname: serde_json::Value,
    /// Serve the admin API on its own port (0 or `listen_port` = shared).
    pub control_api_port: Option<u16>,
    /// Match every endpoint pattern ignoring case.
    pub ignore_endpoint_case: bool,
    /// The admin endpoints answer only requests for this Host.
    pub control_api_hostname: String,
    /// Organisation quotas.
    pub enforce_org_quotas: serde_json::Value,
    /// Key lifetime in storage, for every API when forced.
    pub global_session_lifetime: serde_json::Value,
    /// Apply `global_session_lifetime` instead of each API's `session_lifetime`.
    pub force_global_session_lifetime: serde_json::Value,
    /// Mutual TLS for the admin API, pinning, upstream and admin certificates.
    pub security: serde_json::Value,
}

/// One `override_messages` entry: a zero `code` or empty `message` keeps Tyk's default part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MessageOverride {
    /// Replacement status (0 = keep).
    pub code: i64,
    /// Replacement message ("" = keep).
    pub message: String,
}

/// `storage`: where sessions and counters live.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StorageConf {
    /// `embedded` (default when absent) or `redis`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Embedded store folder, relative to the config file.
    pub path: Option<String>,
    /// Redis host.
    pub host: String,
    /// Redis port.
    pub port: Option<u16>,
    /// Redis `host:port` list.
    pub addrs: Vec<String>,
    /// Redis ACL user.
    pub username: String,
    /// Redis password.
    pub password: Secret,
    /// Redis database number.
    pub database: i64,
    /// Redis Cluster mode.
    pub enable_cluster: bool,
    /// TLS to Redis (`rediss://`).
    pub use_ssl: bool,
    /// Accept any Redis server certificate.
    pub ssl_insecure_skip_verify: bool,
    /// PEM CA certificates the Redis servers are verified against (instead of the system's).
    pub ca_file: String,
    /// Client certificate for Redis (not supported yet: refused).
    pub cert_file: String,
    /// Client key for Redis (not supported yet: refused).
    pub key_file: String,
    /// Lowest TLS version to Redis ("1.2" or "1.3"; "" = 1.2).
    pub tls_min_version: String,
    /// Highest TLS version to Redis.
    pub tls_max_version: String,
    /// Network timeout in seconds.
    pub timeout: Option<u64>,
}

/// `analytics_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AnalyticsConf {
    /// Queue size between requests and the writer (default 10000, at least 1000 as in Tyk).
    pub records_buffer_size: Option<usize>,
    /// Seconds the Redis analytics list lives without a reader (0 = 60).
    pub storage_expiration_time: Option<u64>,
    /// Tollgate extension: `postgres` writes records to PostgreSQL instead of Redis.
    #[serde(rename = "type")]
    pub kind: String,
    /// Tollgate extension: the `postgres://` URL for `type: postgres`.
    pub connection_string: Secret,
}

/// `uptime_tests`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UptimeTestsConf {
    /// No uptime checks on this node.
    pub disable: bool,
    /// Tyk elects one checking node per group through Redis; every Tollgate node checks, so
    /// this is not read.
    pub poller_group: String,
    /// How checks are run.
    pub config: UptimeCheckerConf,
}

/// `uptime_tests.config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UptimeCheckerConf {
    /// Failed checks that mark a host down (0 = 3).
    pub failure_trigger_sample_size: Option<u32>,
    /// Seconds between two rounds of checks (0 = 10). Whole seconds, as Tyk's `int`.
    pub time_wait: Option<u64>,
    /// Checks sent at once (0 = one per CPU, as Tyk).
    pub checker_pool_size: Option<usize>,
    /// Record each check's result for Tyk Pump (Redis storage only).
    pub enable_uptime_analytics: bool,
}

/// `prometheus` (Tollgate extension).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PrometheusConf {
    /// Serve metrics.
    pub enabled: bool,
    /// Bind address (default 127.0.0.1: metrics stay off the public interface).
    pub listen_address: String,
    /// Port (default 9464).
    pub listen_port: Option<u16>,
    /// Path (default `/metrics`).
    pub path: String,
}

/// `db_app_conf_options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DbAppConfOptions {
    /// For Tollgate: a `postgres://` URL (Tyk's Dashboard URLs are not supported).
    pub connection_string: Secret,
}

/// `policies`: where policies come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PoliciesConf {
    /// `file` (or empty).
    pub policy_source: String,
    /// One JSON file holding every policy, keyed by id.
    pub policy_record_name: String,
    /// A folder of one-policy files.
    pub policy_path: String,
}

/// `http_server_options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HttpServerOptions {
    /// Seconds to read a request head (and each idle gap in a body); 0 = 120.
    pub read_timeout: Option<u64>,
    /// Seconds a client may take to accept response bytes; 0 = 120.
    pub write_timeout: Option<u64>,
    /// Listen path `/app` does not match `/apple`.
    pub enable_strict_routes: bool,
    /// Gateway-wide request body cap in bytes (0 = off).
    pub max_request_body_size: Option<u64>,
    /// Which `X-Forwarded-For` entry is the client IP: 0 = the first (left-most), n = the
    /// n-th from the right.
    pub xff_depth: Option<usize>,
    /// Tunnel Upgrade requests; Tollgate defaults to true.
    pub enable_websockets: Option<bool>,
    /// Anchor endpoint patterns that start with `/` at the path's start.
    pub enable_path_prefix_matching: bool,
    /// Anchor endpoint patterns at the path's end.
    pub enable_path_suffix_matching: bool,
    /// Tollgate extension: longest request line (default 8192).
    pub max_request_line_bytes: Option<usize>,
    /// Tollgate extension: longest request head (default 65536).
    pub max_request_header_bytes: Option<usize>,
    /// Tollgate extension: most request headers (default 100).
    pub max_request_headers: Option<usize>,
    /// TLS on the listener (and on the control port).
    pub use_ssl: bool,
    /// Listener certificates by domain (Tyk's deprecated form).
    pub certificates: Option<Vec<CertificateConf>>,
    /// Listener certificates: PEM files holding the chain and the key.
    pub ssl_certificates: Option<Vec<String>>,
    /// Lowest TLS version, Go's number (771 = 1.2, 772 = 1.3; 0 = 1.2).
    pub min_version: u16,
    /// Highest TLS version, Go's number (0 = 1.3).
    pub max_version: u16,
    /// TLS 1.2 cipher suites by Go's names (empty = every suite offered).
    pub ssl_ciphers: Option<Vec<String>>,
    /// Offer HTTP/2 to TLS clients (ALPN `h2`).
    pub enable_http2: bool,
}

/// One `http_server_options.certificates` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CertificateConf {
    /// The name this certificate answers (`*.example.com` covers one label).
    pub domain_name: String,
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
}
