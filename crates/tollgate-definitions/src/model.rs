//! The API definition JSON as operators write it (Tyk's field names).

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
}

/// `version_data`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VersionData {
    /// Version is not read from the request.
    pub not_versioned: bool,
    /// Version used when a request names none.
    pub default_version: String,
    /// Version name → settings (kept raw until versioning is implemented).
    pub versions: serde_json::Map<String, serde_json::Value>,
}
