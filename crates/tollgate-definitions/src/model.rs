//! The API definition JSON as operators write it (Tyk's field names).

use std::collections::BTreeMap;

use serde::Deserialize;

/// A Tyk classic API definition. Fields Tollgate does not use yet are ignored here and kept
/// in the raw JSON the admin API returns.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ApiDefinition {
    /// Unique id, used in access rights and admin URLs.
    pub api_id: String,
    /// Human name.
    pub name: String,
    /// Owning organisation.
    pub org_id: String,
    /// `false` = loaded but not served. Absent = true.
    pub active: Option<bool>,
    /// No authentication for this API.
    pub use_keyless: bool,
    /// Routing and upstream.
    pub proxy: ProxyConf,
    /// When set, the API answers only requests for this Host.
    pub domain: String,
    /// Versions (not versioned APIs use the single/default entry).
    pub version_data: VersionData,
    /// Tollgate extension: request body cap for this API in bytes (0 = the gateway's).
    pub max_request_body_size: Option<u64>,
    /// Auth-token mode (also the default when no other method is on).
    pub use_standard_auth: bool,
    /// Basic auth.
    pub use_basic_auth: bool,
    /// Where the credential is read from (deprecated in Tyk but still the common form).
    pub auth: AuthConf,
    /// Per-method credential settings (`authToken`, `basic`, ...); falls back to `auth`.
    pub auth_configs: BTreeMap<String, AuthConf>,
    /// Remove the credential before proxying.
    pub strip_auth_data: bool,
    /// No analytics records for this API.
    pub do_not_track: bool,
    /// `$tyk_context.*` variables have values (else they render as nothing).
    pub enable_context_vars: bool,
    /// One limit for all traffic to this API (keyless too).
    pub global_rate_limit: GlobalRateLimit,
    /// Skip key and API rate limits.
    pub disable_rate_limit: bool,
    /// Skip quotas (nothing counted).
    pub disable_quota: bool,
    /// JWT authentication.
    pub enable_jwt: bool,
    /// The JWT settings (`jwt_*`).
    #[serde(flatten)]
    pub jwt: crate::jwt::JwtConf,
    /// OAuth 2 (not supported yet).
    pub use_oauth2: bool,
    /// HMAC request signatures.
    pub enable_signature_checking: bool,
    /// Milliseconds a signed request's date may be off (≤ 0: any date).
    pub hmac_allowed_clock_skew: f64,
    /// The signature algorithms accepted (empty: all HMAC ones).
    pub hmac_allowed_algorithms: serde_json::Value,
    /// OpenID Connect (not supported yet).
    pub use_openid: bool,
    /// Mutual TLS: only clients presenting one of `client_certificates` get in.
    pub use_mutual_tls_auth: bool,
    /// The allowed client certificates (SHA-256 ids or absolute PEM file paths).
    pub client_certificates: serde_json::Value,
    /// Custom auth plugins (not supported).
    pub custom_plugin_auth_enabled: bool,
    /// Go plugin auth (not supported).
    pub use_go_plugin_auth: bool,
    /// Coprocess auth (not supported).
    pub enable_coprocess_auth: bool,
    /// Health checks of the upstream hosts.
    #[serde(deserialize_with = "null_as_default")]
    pub uptime_tests: UptimeTests,
    // The fields below switch on rules Tollgate does not implement yet. They are raw JSON
    // (any type; `null` = absent) so an odd value never makes an otherwise good definition
    // fail to parse; they exist only so a definition turning one on is refused rather than
    // served without the rule (see `unsupported.rs`).
    /// `"YYYY-MM-DD HH:MM"` after which the API answers 403.
    pub expiration: serde_json::Value,
    // The IP lists and CORS are raw too: `spec.rs` parses them (an odd value there is refused
    // with the entry's index or key).
    /// IP allow-list.
    pub allowed_ips: serde_json::Value,
    /// IP block-list.
    pub blacklisted_ips: serde_json::Value,
    /// Turns both IP lists off.
    pub ip_access_control_disabled: serde_json::Value,
    /// CORS settings (`tollgate_rules::cors` compiles them).
    #[serde(rename = "CORS")]
    pub cors: serde_json::Value,
    /// Version detection and the child-API versioning model.
    pub definition: serde_json::Value,
    /// Per-API port.
    pub listen_port: serde_json::Value,
    /// Per-API protocol (`http`, `https`, `h2c`, `tcp`, `tls`).
    pub protocol: serde_json::Value,
    /// Only reachable by looping from another API.
    pub internal: serde_json::Value,
    /// Seconds a key written for this API lives in storage.
    pub session_lifetime: serde_json::Value,
    /// Plugin hooks.
    pub custom_middleware: serde_json::Value,
    /// Plugin bundle name.
    pub custom_middleware_bundle: serde_json::Value,
    /// The bundle is not loaded.
    pub custom_middleware_bundle_disabled: serde_json::Value,
    /// Response processors (`header_injector`, `response_body_transform`).
    pub response_processors: serde_json::Value,
    /// `{listen_path}/tyk/batch/`.
    pub enable_batch_request_support: serde_json::Value,
    /// Client certificates presented to upstreams.
    pub upstream_certificates: serde_json::Value,
    /// Upstream certificate pinning.
    pub pinned_public_keys: serde_json::Value,
    /// Server certificates for this API's domain.
    pub certificates: serde_json::Value,
    /// Credentials sent to the upstream.
    pub upstream_auth: serde_json::Value,
    /// Signatures on upstream requests.
    pub request_signing: serde_json::Value,
    /// GraphQL proxy / execution engine.
    pub graphql: serde_json::Value,
    /// JWT / introspection against an external identity provider.
    pub external_oauth: serde_json::Value,
}

/// `global_rate_limit`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GlobalRateLimit {
    /// Requests per `per` seconds; 0 = off.
    pub rate: f64,
    /// Window in seconds.
    pub per: f64,
    /// Off.
    pub disabled: bool,
}

/// `auth` / `auth_configs.<method>`: where a credential is found.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthConf {
    /// Header name (default `Authorization`).
    pub auth_header_name: String,
    /// Also read the query parameter.
    pub use_param: bool,
    /// Query parameter name (default: the header name).
    pub param_name: String,
    /// Also read a cookie.
    pub use_cookie: bool,
    /// Cookie name (default: the header name).
    pub cookie_name: String,
    /// Do not read the header.
    pub disable_header: bool,
    /// Keys bound to a client certificate (not supported yet: refused).
    pub use_certificate: serde_json::Value,
    /// Signature on the auth token (not supported yet: refused).
    pub validate_signature: serde_json::Value,
}

/// `proxy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProxyConf {
    /// Path prefix the API is served under.
    pub listen_path: String,
    /// Upstream base URL.
    pub target_url: String,
    /// Remove the listen path before forwarding.
    pub strip_listen_path: bool,
    /// Forward the client's Host instead of the target's.
    pub preserve_host_header: bool,
    /// Keep the target's trailing slash when the remaining path is empty.
    pub disable_strip_slash: bool,
    /// Round-robin over `target_list` instead of sending everything to `target_url`.
    #[serde(deserialize_with = "null_as_default")]
    pub enable_load_balancing: bool,
    /// Load-balancing targets; an entry listed n times gets n shares.
    #[serde(deserialize_with = "null_as_default")]
    pub target_list: Vec<String>,
    /// The load balancer skips targets whose host the uptime checks found down.
    #[serde(deserialize_with = "null_as_default")]
    pub check_host_against_uptime_tests: bool,
    /// Targets from a discovery service (not supported yet: refused when used).
    pub service_discovery: serde_json::Value,
    /// Per-API upstream TLS and HTTP proxy settings (not supported yet: refused when set).
    pub transport: serde_json::Value,
}

/// `uptime_tests`: requests the gateway sends to the upstream hosts to find which are down.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UptimeTests {
    /// The checks.
    #[serde(deserialize_with = "null_as_default")]
    pub check_list: Vec<HostCheck>,
    /// Settings of this API's checks.
    #[serde(deserialize_with = "null_as_default")]
    pub config: UptimeTestsConfig,
}

/// An entry of `uptime_tests.check_list` (Tyk's `HostCheckObject`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HostCheck {
    /// The URL requested.
    #[serde(deserialize_with = "null_as_default")]
    pub url: String,
    /// Method (default `GET`).
    #[serde(deserialize_with = "null_as_default")]
    pub method: String,
    /// Request headers.
    #[serde(deserialize_with = "null_as_default")]
    pub headers: BTreeMap<String, String>,
    /// Request body, base64 (Tyk decodes it before sending).
    #[serde(deserialize_with = "null_as_default")]
    pub body: String,
    /// `tcp` / `tls` checks instead of HTTP (not supported yet: refused).
    #[serde(deserialize_with = "null_as_default")]
    pub protocol: String,
    /// How long the check may take, in nanoseconds (Go's `time.Duration`); 0 = 500 ms.
    #[serde(deserialize_with = "null_as_default")]
    pub timeout: u64,
    /// PROXY protocol header on TCP checks (not supported yet: refused).
    pub enable_proxy_protocol: serde_json::Value,
    /// TCP check script (not supported yet: refused).
    pub commands: serde_json::Value,
}

/// `uptime_tests.config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UptimeTestsConfig {
    /// Seconds an uptime analytics record is kept (0 = Tyk's 100 years).
    #[serde(deserialize_with = "null_as_default")]
    pub expire_utime_after: i64,
    /// Check targets from a discovery service (not supported yet: refused when used).
    pub service_discovery: serde_json::Value,
    /// Seconds before re-reading the discovery service after a failure (only used with
    /// service discovery).
    #[serde(deserialize_with = "null_as_default")]
    pub recheck_wait: i64,
}

/// `definition`: where a versioned API reads the version from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VersionDefinition {
    /// `header` (default), `url-param` or `url`.
    #[serde(deserialize_with = "null_as_default")]
    pub location: String,
    /// Header or query parameter name (default `x-api-version` for headers).
    #[serde(deserialize_with = "null_as_default")]
    pub key: String,
    /// Remove the version from the request before proxying.
    pub strip_versioning_data: bool,
    /// The older name of `strip_versioning_data`.
    pub strip_path: bool,
    /// An unknown version is served by the default one.
    pub fallback_to_default: bool,
    /// Which path segments count as versions (not supported yet: refused when set).
    #[serde(deserialize_with = "null_as_default")]
    pub url_versioning_pattern: String,
}

/// `version_data`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VersionData {
    /// Version is not read from the request. Absent means versioned in Tyk.
    pub not_versioned: Option<bool>,
    /// Version used when a request names none.
    pub default_version: String,
    /// An unknown version is served by the default one.
    pub fallback_to_default: bool,
    /// Version name → settings (kept raw until versioning is implemented).
    pub versions: serde_json::Map<String, serde_json::Value>,
}

/// One entry of `version_data.versions` (the fields Tollgate reads; the rest stay raw and are
/// checked by `unsupported.rs`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VersionInfo {
    /// Version name.
    pub name: String,
    /// Use `extended_paths` (else the simple `paths` lists).
    pub use_extended_paths: bool,
    /// Simple lists: patterns for every method.
    pub paths: SimplePaths,
    /// Extended lists.
    pub extended_paths: ExtendedPaths,
    /// Match every pattern of this version ignoring case.
    pub ignore_endpoint_case: bool,
    /// `YYYY-MM-DD HH:MM` (UTC) after which the version answers 403; empty or `-1` = never.
    #[serde(deserialize_with = "null_as_default")]
    pub expires: String,
    /// Another upstream for this version.
    #[serde(deserialize_with = "null_as_default")]
    pub override_target: String,
    /// Request headers set on every request of this version.
    #[serde(deserialize_with = "null_as_default")]
    pub global_headers: BTreeMap<String, String>,
    /// Request headers removed from every request of this version.
    #[serde(deserialize_with = "null_as_default")]
    pub global_headers_remove: Vec<String>,
    /// Response headers set on every upstream response.
    #[serde(deserialize_with = "null_as_default")]
    pub global_response_headers: BTreeMap<String, String>,
    /// Response headers removed from every upstream response.
    #[serde(deserialize_with = "null_as_default")]
    pub global_response_headers_remove: Vec<String>,
    /// Largest declared request body of a POST, PUT or PATCH, in bytes (0 = off).
    #[serde(deserialize_with = "null_as_default")]
    pub global_size_limit: u64,
}

/// `paths`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SimplePaths {
    /// No authentication or limits.
    #[serde(deserialize_with = "null_as_default")]
    pub ignored: Vec<String>,
    /// Only these.
    #[serde(deserialize_with = "null_as_default")]
    pub white_list: Vec<String>,
    /// Never these.
    #[serde(deserialize_with = "null_as_default")]
    pub black_list: Vec<String>,
}

/// The endpoint lists of `extended_paths` Tollgate implements.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExtendedPaths {
    /// No authentication or limits.
    #[serde(deserialize_with = "null_as_default")]
    pub ignored: Vec<EndpointMeta>,
    /// Only these.
    #[serde(deserialize_with = "null_as_default")]
    pub white_list: Vec<EndpointMeta>,
    /// Never these.
    #[serde(deserialize_with = "null_as_default")]
    pub black_list: Vec<EndpointMeta>,
    /// Per-endpoint request body limits.
    #[serde(deserialize_with = "null_as_default")]
    pub size_limits: Vec<SizeLimitMeta>,
    /// Per-endpoint upstream timeouts.
    #[serde(deserialize_with = "null_as_default")]
    pub hard_timeouts: Vec<HardTimeoutMeta>,
    /// Per-endpoint canned answers.
    #[serde(deserialize_with = "null_as_default")]
    pub mock_response: Vec<MockResponseMeta>,
    /// Request header edits per endpoint.
    #[serde(deserialize_with = "null_as_default")]
    pub transform_headers: Vec<HeaderInjectionMeta>,
    /// Response header edits per endpoint.
    #[serde(deserialize_with = "null_as_default")]
    pub transform_response_headers: Vec<HeaderInjectionMeta>,
    /// Path (and host) rewrites per endpoint.
    #[serde(deserialize_with = "null_as_default")]
    pub url_rewrites: Vec<UrlRewriteMeta>,
    /// Method changes per endpoint.
    #[serde(deserialize_with = "null_as_default")]
    pub method_transforms: Vec<MethodTransformMeta>,
}

/// An entry of `url_rewrites`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UrlRewriteMeta {
    /// Tyk pattern selecting the endpoint.
    pub path: String,
    /// The method it applies to.
    pub method: String,
    /// Entry switched off.
    pub disabled: bool,
    /// Match the endpoint ignoring case.
    pub ignore_case: bool,
    /// Regex tested against the path and query.
    pub match_pattern: String,
    /// The new path and query (or `http://` URL).
    pub rewrite_to: String,
    /// Conditions choosing another target.
    #[serde(deserialize_with = "null_as_default")]
    pub triggers: Vec<RoutingTrigger>,
}

/// An entry of `url_rewrites[].triggers`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoutingTrigger {
    /// `any` or `all`.
    pub on: String,
    /// What is tested.
    pub options: RoutingTriggerOptions,
    /// The target when it fires.
    pub rewrite_to: String,
}

/// `triggers[].options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoutingTriggerOptions {
    /// Header name → test.
    #[serde(deserialize_with = "null_as_default")]
    pub header_matches: BTreeMap<String, StringRegexMap>,
    /// Query parameter → test.
    #[serde(deserialize_with = "null_as_default")]
    pub query_val_matches: BTreeMap<String, StringRegexMap>,
    /// Name → test of every path segment.
    #[serde(deserialize_with = "null_as_default")]
    pub path_part_matches: BTreeMap<String, StringRegexMap>,
    /// Key metadata field → test.
    #[serde(deserialize_with = "null_as_default")]
    pub session_meta_matches: BTreeMap<String, StringRegexMap>,
    /// Context variable → test.
    #[serde(deserialize_with = "null_as_default")]
    pub request_context_matches: BTreeMap<String, StringRegexMap>,
    /// Body test (not supported: refused when set).
    pub payload_matches: StringRegexMap,
}

/// A regex test (`match_rx`, `reverse`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StringRegexMap {
    /// The regex.
    pub match_rx: String,
    /// Fire when it does not match.
    pub reverse: bool,
}

/// An entry of `method_transforms`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MethodTransformMeta {
    /// Tyk pattern.
    pub path: String,
    /// The method it applies to.
    pub method: String,
    /// Entry switched off.
    pub disabled: bool,
    /// Match ignoring case.
    pub ignore_case: bool,
    /// The method the upstream receives.
    pub to_method: String,
}

/// An entry of `transform_headers` / `transform_response_headers`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HeaderInjectionMeta {
    /// Tyk pattern.
    pub path: String,
    /// The method it applies to.
    pub method: String,
    /// Entry switched off.
    pub disabled: bool,
    /// Match ignoring case.
    pub ignore_case: bool,
    /// Names removed.
    #[serde(deserialize_with = "null_as_default")]
    pub delete_headers: Vec<String>,
    /// Names set (templates).
    #[serde(deserialize_with = "null_as_default")]
    pub add_headers: BTreeMap<String, String>,
}

/// An entry of `white_list` / `black_list` / `ignored`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EndpointMeta {
    /// Tyk pattern.
    pub path: String,
    /// The method it applies to (newer form).
    pub method: String,
    /// Entry switched off.
    pub disabled: bool,
    /// Match ignoring case.
    pub ignore_case: bool,
    /// Method → action (older form).
    #[serde(deserialize_with = "null_as_default")]
    pub method_actions: BTreeMap<String, MethodAction>,
}

/// What every per-endpoint entry (`hard_timeouts`, `size_limits`, `transform_headers`, ...)
/// shares: where it applies.
pub trait EndpointEntry {
    /// Tyk pattern.
    fn path(&self) -> &str;
    /// The one method it applies to.
    fn method(&self) -> &str;
    /// Entry switched off.
    fn disabled(&self) -> bool;
    /// Match ignoring case.
    fn ignore_case(&self) -> bool;
}

/// Implements [`EndpointEntry`] for entry types with `path`, `method`, `disabled` and
/// `ignore_case` fields.
macro_rules! endpoint_entry {
    ($($t:ty),* $(,)?) => {$(
        impl EndpointEntry for $t {
            fn path(&self) -> &str {
                &self.path
            }
            fn method(&self) -> &str {
                &self.method
            }
            fn disabled(&self) -> bool {
                self.disabled
            }
            fn ignore_case(&self) -> bool {
                self.ignore_case
            }
        }
    )*};
}

endpoint_entry!(
    EndpointMeta,
    HeaderInjectionMeta,
    UrlRewriteMeta,
    MethodTransformMeta,
    MockResponseMeta
);

/// An entry of `size_limits` (Tyk's `RequestSizeMeta`: no `ignore_case`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SizeLimitMeta {
    /// Tyk pattern.
    pub path: String,
    /// The method it applies to.
    pub method: String,
    /// Entry switched off.
    pub disabled: bool,
    /// Largest declared body, in bytes.
    #[serde(deserialize_with = "null_as_default")]
    pub size_limit: u64,
}

impl EndpointEntry for SizeLimitMeta {
    fn path(&self) -> &str {
        &self.path
    }
    fn method(&self) -> &str {
        &self.method
    }
    fn disabled(&self) -> bool {
        self.disabled
    }
    fn ignore_case(&self) -> bool {
        false
    }
}

/// An entry of `hard_timeouts` (Tyk's `HardTimeoutMeta`: no `ignore_case`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HardTimeoutMeta {
    /// Tyk pattern.
    pub path: String,
    /// The method it applies to.
    pub method: String,
    /// Entry switched off.
    pub disabled: bool,
    /// Seconds the upstream has to answer (0 = the entry is off).
    #[serde(deserialize_with = "null_as_default")]
    pub timeout: u64,
}

impl EndpointEntry for HardTimeoutMeta {
    fn path(&self) -> &str {
        &self.path
    }
    fn method(&self) -> &str {
        &self.method
    }
    /// A zero timeout counts as absent, so a later entry or the gateway default applies
    /// rather than an upstream call that times out at once.
    fn disabled(&self) -> bool {
        self.disabled || self.timeout == 0
    }
    fn ignore_case(&self) -> bool {
        false
    }
}

/// An entry of `mock_response`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MockResponseMeta {
    /// Tyk pattern.
    pub path: String,
    /// The method it applies to.
    pub method: String,
    /// Entry switched off.
    pub disabled: bool,
    /// Match ignoring case.
    pub ignore_case: bool,
    /// Status (0 = 200).
    #[serde(deserialize_with = "null_as_default")]
    pub code: u16,
    /// Body.
    #[serde(deserialize_with = "null_as_default")]
    pub body: String,
    /// Header name → value.
    #[serde(deserialize_with = "null_as_default")]
    pub headers: BTreeMap<String, String>,
}

/// `method_actions.<METHOD>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MethodAction {
    /// `no_action` or `reply`.
    pub action: String,
    /// Reply status.
    pub code: u16,
    /// Reply body.
    pub data: String,
    /// Reply headers.
    #[serde(deserialize_with = "null_as_default")]
    pub headers: BTreeMap<String, String>,
}

/// Tyk writes `null` for empty lists and maps; read it as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
