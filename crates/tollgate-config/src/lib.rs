//! The gateway process configuration.
//!
//! Operators hand us the `tyk.conf` they already run Tyk with, so the file model
//! ([`TykConf`]) mirrors Tyk's field names and tolerates every field it does not know.
//! [`GatewayConfig::load`] turns it into the typed settings the rest of the gateway uses:
//! durations instead of seconds, paths resolved against the config file's folder, defaults
//! applied in one place. Everything here runs once at start-up; nothing is on the request path.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod file;
mod unsupported;

pub use unsupported::is_set;

pub use file::{
    CertificateConf, HttpServerOptions, MessageOverride, PoliciesConf, PrometheusConf, StorageConf,
    TykConf, UptimeCheckerConf, UptimeTestsConf,
};

/// Why a configuration could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("config file {path}: cannot read: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON, or a field has the wrong type.
    #[error("config file {path}: field `{field}`: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The dotted path of the offending field (`.` when the document itself is broken).
        field: String,
        /// serde's description, with line and column.
        message: String,
    },
    /// A TLS setting holds no TLS value.
    #[error("config file {path}: field {source}")]
    Tls {
        /// The config file.
        path: PathBuf,
        /// Which field and why (its message starts with the field).
        #[source]
        source: tollgate_tls::TlsError,
    },
    /// The values parse but cannot work together.
    #[error("config file {path}: field `{field}`: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// The admin API secret. Its `Debug` never prints the value.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for constant-time comparison only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret was configured (the admin API then stays closed).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "<empty>" } else { "***" })
    }
}

/// Limits and timeouts the HTTP edge enforces before any API is looked at.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// Longest request line accepted (414 beyond).
    pub max_request_line_bytes: usize,
    /// Longest request head accepted (431 beyond).
    pub max_request_head_bytes: usize,
    /// Most request headers accepted (431 beyond).
    pub max_request_headers: usize,
    /// Gateway-wide cap on request bodies (413 beyond); `None` = unlimited.
    pub max_request_body_bytes: Option<u64>,
    /// Deadline for reading a whole request head, and for each idle gap while reading a body.
    pub read_timeout: Duration,
    /// Deadline for a client to accept response bytes.
    pub write_timeout: Duration,
}

/// Where sessions and counters live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSettings {
    /// The embedded store in this folder (default `data` next to the config file).
    Embedded {
        /// The folder.
        path: PathBuf,
    },
    /// Redis (Tyk's `storage` fields).
    Redis(Box<StorageConf>),
}

/// How the uptime checker runs (`uptime_tests`), with Tyk's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UptimeSettings {
    /// Failed checks after which a host counts as down, and successes after which it is up
    /// again (`failure_trigger_sample_size`).
    pub failure_trigger_sample_size: u32,
    /// Time between two rounds of checks (`time_wait`).
    pub time_wait: Duration,
    /// Checks sent at once (`checker_pool_size`).
    pub checker_pool_size: usize,
    /// Record every check's result (`enable_uptime_analytics`).
    pub analytics: bool,
}

/// Key handling settings (Tyk's names).
/// Gateway-wide endpoint pattern matching (Tyk's `http_server_options` switches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathMatching {
    /// `enable_path_prefix_matching`: patterns starting with `/` match only at the start.
    pub prefix: bool,
    /// `enable_path_suffix_matching`: patterns match only at the end.
    pub suffix: bool,
    /// `ignore_endpoint_case`: every pattern ignores case.
    pub ignore_case: bool,
}

#[derive(Debug, Clone)]
pub struct KeySettings {
    /// Store and list keys by hash only.
    pub hash_keys: bool,
    /// `hash_key_function` ("" = Tollgate's default, sha256).
    pub hash_key_function: String,
    /// `GET /tyk/keys` allowed with `hash_keys`.
    pub enable_hashed_keys_listing: bool,
    /// Keys without access rights allowed.
    pub allow_master_keys: bool,
    /// Shorter keys are never found; shorter custom ids are refused.
    pub min_token_length: usize,
    /// Basic-auth password hashing.
    pub basic_auth_hash_key_function: String,
}

/// The typed gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The file this was loaded from.
    pub source: PathBuf,
    /// Where the proxy (and the admin API) listens.
    pub listen: SocketAddr,
    /// `control_api_port`: where the admin API (`/tyk/`, `/hello`) is served instead of
    /// `listen`, when it is another port.
    pub control_listen: Option<SocketAddr>,
    /// `control_api_hostname`: the admin API answers only requests for this Host (lower
    /// case, no port).
    pub control_hostname: Option<String>,
    /// The admin API secret; empty = admin API closed.
    pub secret: Secret,
    /// Folder of API definition files.
    pub app_path: PathBuf,
    /// Response-header timeout towards upstreams (504 beyond).
    pub proxy_default_timeout: Duration,
    /// Edge limits and client timeouts.
    pub edge: EdgeLimits,
    /// Tyk's `enable_strict_routes`: `/app` no longer matches `/apple`.
    pub strict_routes: bool,
    /// How every API's endpoint patterns match (`enable_path_prefix_matching`,
    /// `enable_path_suffix_matching`, `ignore_endpoint_case`).
    pub path_matching: PathMatching,
    /// Tyk's `xff_depth`: which `X-Forwarded-For` entry the IP lists read as the client's
    /// address (0 = the first, n = the n-th from the right).
    pub xff_depth: usize,
    /// Honour per-API `domain` (Tyk's `enable_custom_domains`; we default to true).
    pub custom_domains: bool,
    /// Tunnel `Upgrade` requests (Tyk's `enable_websockets`; we default to true).
    pub websockets: bool,
    /// Send `Connection: close` to clients after every response.
    pub close_connections: bool,
    /// Do not keep upstream connections alive.
    pub proxy_close_connections: bool,
    /// Idle upstream connections kept per upstream and per worker thread.
    pub max_idle_upstream_per_host: usize,
    /// How long SIGTERM waits for in-flight requests.
    pub graceful_shutdown_timeout: Duration,
    /// How many worker threads serve traffic (each with its own listener and upstream pool).
    pub worker_threads: usize,
    /// Key handling.
    pub keys: KeySettings,
    /// Session storage.
    pub storage: StorageSettings,
    /// `X-RateLimit-*` report the rate limit (`rate_limit_response_headers: rate_limits`)
    /// instead of the quota.
    pub rate_limit_headers: bool,
    /// Where Prometheus metrics are served; `None` = off.
    pub prometheus: Option<(SocketAddr, String)>,
    /// Log one line per request.
    pub access_log: bool,
    /// PostgreSQL URL of the API definitions table (`use_db_app_configs`); `None` = files.
    pub api_db_url: Option<Secret>,
    /// `policies.policy_record_name`, resolved; `None` = none (or a folder is used).
    pub policy_file: Option<PathBuf>,
    /// `policies.policy_path`, resolved: a folder of one-policy files, read instead of
    /// `policy_file` and written by `/tyk/policies`.
    pub policy_dir: Option<PathBuf>,
    /// Tyk's `enable_analytics`.
    pub enable_analytics: bool,
    /// TLS on the listeners (`http_server_options.use_ssl`); the certificate files are read
    /// when the gateway starts.
    pub tls: Option<tollgate_tls::ServerSettings>,
    /// `http_server_options.enable_http2` without `use_ssl`: the plain listeners also take
    /// HTTP/2 from clients that open with its preface (h2c with prior knowledge).
    pub h2c: bool,
    /// TLS towards `https://` upstreams (`proxy_ssl_*`).
    pub upstream_tls: tollgate_tls::ClientSettings,
    /// The uptime checker; `None` with `uptime_tests.disable` (no host is ever down).
    pub uptime: Option<UptimeSettings>,
    /// The raw file model, for settings later features read.
    pub file: TykConf,
}

impl GatewayConfig {
    /// Reads, parses and validates a tyk.conf.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and, where there is one, the field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(path, &text)
    }

    /// Parses and validates tyk.conf text; `path` names it in errors and anchors relative paths.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and field.
    pub fn from_json(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let file: TykConf = parse_json(path, text)?;
        Self::from_file(path, file)
    }

    fn from_file(path: &Path, file: TykConf) -> Result<Self, ConfigError> {
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let invalid = |field: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };

        let ip: IpAddr = if file.listen_address.trim().is_empty() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            file.listen_address.trim().parse().map_err(|_| {
                invalid(
                    "listen_address",
                    format!("`{}` is not an IP address", file.listen_address),
                )
            })?
        };
        let port = file.listen_port.unwrap_or(8080);

        let app_path = base.join(file.app_path.as_deref().unwrap_or("apps"));
        let opts = &file.http_server_options;
        let secs = |v: Option<u64>, default: u64| {
            Duration::from_secs(v.filter(|s| *s > 0).unwrap_or(default))
        };
        let read_timeout = secs(opts.read_timeout, 120);
        let write_timeout = secs(opts.write_timeout, 120);
        let proxy_default_timeout = secs(file.proxy_default_timeout, 30);

        let positive = |v: Option<usize>, default: usize, field: &'static str| match v {
            Some(0) => Err(invalid(field, "must be greater than 0".into())),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let edge = EdgeLimits {
            max_request_line_bytes: positive(
                opts.max_request_line_bytes,
                8 * 1024,
                "http_server_options.max_request_line_bytes",
            )?,
            max_request_head_bytes: positive(
                opts.max_request_header_bytes,
                64 * 1024,
                "http_server_options.max_request_header_bytes",
            )?,
            max_request_headers: positive(
                opts.max_request_headers,
                100,
                "http_server_options.max_request_headers",
            )?,
            max_request_body_bytes: opts.max_request_body_size.filter(|n| *n > 0),
            read_timeout,
            write_timeout,
        };

        let storage = match file.storage.kind.as_deref().unwrap_or("embedded") {
            "embedded" | "" => StorageSettings::Embedded {
                path: base.join(file.storage.path.as_deref().unwrap_or("data")),
            },
            "redis" => StorageSettings::Redis(Box::new(file.storage.clone())),
            other => {
                return Err(invalid(
                    "storage.type",
                    format!("`{other}` is not a storage type (use \"embedded\" or \"redis\")"),
                ));
            }
        };
        if let Some((field, message)) =
            unsupported::check(&file, matches!(storage, StorageSettings::Redis(_)))
        {
            return Err(invalid(field, message));
        }
        let policy_dir = Some(file.policies.policy_path.trim())
            .filter(|p| !p.is_empty())
            .map(|p| base.join(p));
        let policy_file = match file.policies.policy_source.as_str() {
            // As in Tyk, a policy folder is read instead of the record file.
            "" | "file" if policy_dir.is_some() => None,
            "" | "file" => Some(file.policies.policy_record_name.trim())
                .filter(|p| !p.is_empty())
                .map(|p| base.join(p)),
            other => {
                return Err(invalid(
                    "policies.policy_source",
                    format!("`{other}` is not supported (use \"file\")"),
                ));
            }
        };

        let prometheus = if file.prometheus.enabled {
            let p = &file.prometheus;
            let ip: IpAddr = match p.listen_address.trim() {
                "" => IpAddr::V4(Ipv4Addr::LOCALHOST),
                a => a.parse().map_err(|_| {
                    invalid(
                        "prometheus.listen_address",
                        format!("`{a}` is not an IP address"),
                    )
                })?,
            };
            let path = match p.path.trim() {
                "" => "/metrics".to_owned(),
                s if s.starts_with('/') => s.to_owned(),
                s => format!("/{s}"),
            };
            Some((SocketAddr::new(ip, p.listen_port.unwrap_or(9464)), path))
        } else {
            None
        };
        let api_db_url = if file.use_db_app_configs {
            let url = file.db_app_conf_options.connection_string.expose().trim();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "db_app_conf_options.connection_string",
                    "must be a postgres:// URL (Tyk Dashboard connections are not supported)"
                        .into(),
                ));
            }
            Some(Secret::new(url))
        } else {
            None
        };

        let tls_err = |source| ConfigError::Tls {
            path: path.to_path_buf(),
            source,
        };
        let tls = opts
            .use_ssl
            .then(|| server_tls(&base, opts))
            .transpose()
            .map_err(tls_err)?;
        let upstream_tls = tollgate_tls::ClientSettings {
            insecure_skip_verify: file.proxy_ssl_insecure_skip_verify,
            min_version: file.proxy_ssl_min_version,
            max_version: file.proxy_ssl_max_version,
            ciphers: file.proxy_ssl_ciphers.clone().unwrap_or_default(),
            ca_files: Some(file.proxy_ssl_ca_cert.trim())
                .filter(|p| !p.is_empty())
                .map(|p| base.join(p))
                .into_iter()
                .collect(),
            http2: file.proxy_enable_http2,
        };
        check_upstream_tls(&upstream_tls).map_err(tls_err)?;

        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let worker_threads = match file.worker_threads {
            Some(0) | None => cpus,
            Some(n) => n,
        };
        let uptime = (!file.uptime_tests.disable).then(|| {
            let c = &file.uptime_tests.config;
            UptimeSettings {
                failure_trigger_sample_size: c
                    .failure_trigger_sample_size
                    .filter(|n| *n > 0)
                    .unwrap_or(3),
                time_wait: secs(c.time_wait, 10),
                checker_pool_size: c.checker_pool_size.filter(|n| *n > 0).unwrap_or(cpus),
                analytics: c.enable_uptime_analytics,
            }
        });

        Ok(Self {
            source: path.to_path_buf(),
            listen: SocketAddr::new(ip, port),
            control_listen: file
                .control_api_port
                .filter(|p| *p != 0 && *p != port)
                .map(|p| SocketAddr::new(ip, p)),
            control_hostname: Some(file.control_api_hostname.trim())
                .filter(|h| !h.is_empty())
                .map(str::to_ascii_lowercase),
            secret: file.secret.clone(),
            app_path,
            proxy_default_timeout,
            edge,
            strict_routes: opts.enable_strict_routes,
            path_matching: PathMatching {
                prefix: opts.enable_path_prefix_matching,
                suffix: opts.enable_path_suffix_matching,
                ignore_case: file.ignore_endpoint_case,
            },
            xff_depth: opts.xff_depth.unwrap_or(0),
            custom_domains: file.enable_custom_domains.unwrap_or(true),
            websockets: opts.enable_websockets.unwrap_or(true),
            close_connections: file.close_connections,
            proxy_close_connections: file.proxy_close_connections,
            max_idle_upstream_per_host: file
                .max_idle_connections_per_host
                .filter(|n| *n > 0)
                .unwrap_or(256),
            graceful_shutdown_timeout: secs(file.graceful_shutdown_timeout_duration, 30),
            worker_threads,
            keys: KeySettings {
                hash_keys: file.hash_keys.unwrap_or(true),
                hash_key_function: file.hash_key_function.clone(),
                enable_hashed_keys_listing: file.enable_hashed_keys_listing,
                allow_master_keys: file.allow_master_keys,
                min_token_length: file.min_token_length.filter(|n| *n > 0).unwrap_or(3),
                basic_auth_hash_key_function: file.basic_auth_hash_key_function.clone(),
            },
            storage,
            prometheus,
            access_log: file.enable_access_log,
            api_db_url,
            rate_limit_headers: file.rate_limit_response_headers == "rate_limits",
            policy_file,
            policy_dir,
            enable_analytics: file.enable_analytics,
            h2c: opts.enable_http2 && tls.is_none(),
            tls,
            upstream_tls,
            uptime,
            file,
        })
    }
}

/// The listener's TLS settings; versions and ciphers are checked here, the files when the
/// gateway starts. Relative file names are resolved against the config file's folder.
fn server_tls(
    base: &Path,
    opts: &HttpServerOptions,
) -> Result<tollgate_tls::ServerSettings, tollgate_tls::TlsError> {
    let mut certificates = Vec::new();
    for (i, c) in opts.certificates.iter().flatten().enumerate() {
        certificates.push(tollgate_tls::CertSource {
            field: format!("http_server_options.certificates[{i}]"),
            domain: Some(c.domain_name.clone()).filter(|d| !d.trim().is_empty()),
            cert_file: base.join(c.cert_file.trim()),
            key_file: base.join(c.key_file.trim()),
        });
    }
    for (i, f) in opts.ssl_certificates.iter().flatten().enumerate() {
        // Tyk also takes ids of its certificate store here; Tollgate has none, so every entry
        // is a file holding the chain and its key.
        let file = base.join(f.trim());
        certificates.push(tollgate_tls::CertSource {
            field: format!("http_server_options.ssl_certificates[{i}]"),
            domain: None,
            cert_file: file.clone(),
            key_file: file,
        });
    }
    let ciphers = opts.ssl_ciphers.clone().unwrap_or_default();
    tollgate_tls::settings::protocol_versions(
        "http_server_options.min_version",
        opts.min_version,
        "http_server_options.max_version",
        opts.max_version,
    )?;
    tollgate_tls::settings::cipher_suites(
        "http_server_options.ssl_ciphers",
        &ciphers,
        &tollgate_tls::settings::default_provider(),
    )?;
    Ok(tollgate_tls::ServerSettings {
        certificates,
        min_version: opts.min_version,
        max_version: opts.max_version,
        ciphers,
        http2: opts.enable_http2,
    })
}

fn check_upstream_tls(s: &tollgate_tls::ClientSettings) -> Result<(), tollgate_tls::TlsError> {
    tollgate_tls::settings::protocol_versions(
        "proxy_ssl_min_version",
        s.min_version,
        "proxy_ssl_max_version",
        s.max_version,
    )?;
    tollgate_tls::settings::cipher_suites(
        "proxy_ssl_ciphers",
        &s.ciphers,
        &tollgate_tls::settings::default_provider(),
    )?;
    Ok(())
}

/// Deserialises JSON and reports the failing field's dotted path with the file name.
///
/// # Errors
/// [`ConfigError::Parse`].
pub fn parse_json<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let field = err.path().to_string();
        ConfigError::Parse {
            path: path.to_path_buf(),
            field,
            message: err.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests;
