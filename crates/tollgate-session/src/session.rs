//! The session object: the JSON a key maps to, with Tyk's field names.
//!
//! Only the fields Tollgate acts on are typed; every other field (including ones a future Tyk
//! adds) is kept in `extra` and written back unchanged, so tools that set fields we do not use
//! lose nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

type Extra = serde_json::Map<String, serde_json::Value>;

/// What a key maps to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionState {
    /// Legacy allowance bookkeeping (round-tripped).
    #[serde(serialize_with = "number")]
    pub allowance: f64,
    /// Requests allowed per `per` seconds; ≤ 0 = unlimited.
    #[serde(serialize_with = "number")]
    pub rate: f64,
    /// Rate window in seconds.
    #[serde(serialize_with = "number")]
    pub per: f64,
    /// Seconds to wait before retrying a throttled request.
    #[serde(serialize_with = "number")]
    pub throttle_interval: f64,
    /// How many throttled retries before 429.
    pub throttle_retry_limit: i64,
    /// GraphQL depth limit (-1 unlimited).
    pub max_query_depth: i64,
    /// RFC 3339 creation time, kept on update.
    pub date_created: String,
    /// Unix seconds after which the key is expired; ≤ 0 = never.
    pub expires: i64,
    /// Requests per quota period; ≤ 0 = unlimited.
    pub quota_max: i64,
    /// Unix seconds of the next quota reset.
    pub quota_renews: i64,
    /// Requests left in this period (informational).
    pub quota_remaining: i64,
    /// Quota period in seconds; ≤ 0 = never renews.
    pub quota_renewal_rate: i64,
    /// API id → access; empty = all APIs (master key).
    pub access_rights: BTreeMap<String, AccessDefinition>,
    /// Owning organisation.
    pub org_id: String,
    /// Basic-auth credentials.
    pub basic_auth_data: BasicAuthData,
    /// Deactivated key.
    pub is_inactive: bool,
    /// Legacy single policy id (used when `apply_policies` is empty).
    pub apply_policy_id: String,
    /// Policies that set this key's limits and rights.
    pub apply_policies: Vec<String>,
    /// Free-form metadata.
    pub meta_data: serde_json::Map<String, serde_json::Value>,
    /// Tags (analytics).
    pub tags: Vec<String>,
    /// Human label.
    pub alias: String,
    /// Unix seconds of the last admin write, as a string.
    pub last_updated: String,
    /// The key signs requests (HMAC signatures) with `hmac_string`.
    pub hmac_enabled: bool,
    /// The shared secret of HMAC signatures (generated when a key is created with
    /// `hmac_enabled`).
    pub hmac_string: String,
    /// Every other field, round-tripped.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Access to one API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessDefinition {
    /// API name (informational).
    pub api_name: String,
    /// API id.
    pub api_id: String,
    /// Allowed versions.
    pub versions: Vec<String>,
    /// Path/method restrictions; empty = all.
    pub allowed_urls: Vec<AccessSpec>,
    /// Per-API limits that replace the session's for this API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<ApiLimit>,
    /// Shares counters between APIs with the same scope.
    pub allowance_scope: String,
    /// Every other field, round-tripped.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One `allowed_urls` entry: a path regex and the methods allowed on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessSpec {
    /// Path pattern (regex, `{name}` and `/*` allowed, unanchored).
    pub url: String,
    /// Allowed methods.
    pub methods: Vec<String>,
}

/// Per-API limits (Tyk's `APILimit`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiLimit {
    /// Requests per `per` seconds.
    #[serde(serialize_with = "number")]
    pub rate: f64,
    /// Rate window in seconds.
    #[serde(serialize_with = "number")]
    pub per: f64,
    /// Throttle wait.
    #[serde(serialize_with = "number")]
    pub throttle_interval: f64,
    /// Throttle retries.
    pub throttle_retry_limit: i64,
    /// GraphQL depth.
    pub max_query_depth: i64,
    /// Quota per period.
    pub quota_max: i64,
    /// Next quota reset.
    pub quota_renews: i64,
    /// Quota left.
    pub quota_remaining: i64,
    /// Quota period.
    pub quota_renewal_rate: i64,
    /// Every other field, round-tripped.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ApiLimit {
    /// True when no limit value is set (Tyk treats such a `limit` as absent).
    pub fn is_empty(&self) -> bool {
        self.rate == 0.0 && self.per == 0.0 && self.quota_max == 0 && self.quota_renewal_rate == 0
    }
}

/// `basic_auth_data`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BasicAuthData {
    /// The password, hashed per `hash_type` once stored.
    pub password: String,
    /// `""` (plain), `bcrypt`, `sha256`, `murmur64`, `murmur128`.
    pub hash_type: String,
}

/// Whole numbers print without a fraction (`1000`, not `1000.0`), as Tyk writes them.
pub(crate) fn number<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    #[allow(clippy::cast_possible_truncation, clippy::float_cmp)]
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

impl SessionState {
    /// `jwt_data.secret`: the key's own JWT secret (or PEM public key), for APIs verifying
    /// tokens per key (no `jwt_source`).
    pub fn jwt_secret(&self) -> Option<&str> {
        self.extra
            .get("jwt_data")
            .and_then(|d| d.get("secret"))
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// True when `expires` is set and in the past.
    pub fn is_expired(&self, now_unix: i64) -> bool {
        self.expires >= 1 && now_unix > self.expires
    }

    /// The policies applied to this key, in order (`apply_policy_id` when the list is empty).
    pub fn policy_ids(&self) -> Vec<&str> {
        if self.apply_policies.is_empty() {
            if self.apply_policy_id.is_empty() {
                Vec::new()
            } else {
                vec![self.apply_policy_id.as_str()]
            }
        } else {
            self.apply_policies.iter().map(String::as_str).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYK_SAMPLE: &str = r#"{"allowance": 1000, "rate": 1000, "per": 60, "throttle_interval": 10, "throttle_retry_limit": 10,
 "max_query_depth": -1, "date_created": "2024-08-09T14:40:34.87614+03:00", "expires": 0,
 "quota_max": 10000, "quota_renews": 1723207234, "quota_remaining": 10000, "quota_renewal_rate": 3600,
 "access_rights": {"8ddd91f3cda9453442c477b06c4e2da4": {
     "api_name": "Itachi api", "api_id": "8ddd91f3cda9453442c477b06c4e2da4", "versions": ["Default"],
     "allowed_urls": [{"url": "/users", "methods": ["GET"]}], "allowance_scope": "",
     "limit": {"rate": 1000, "per": 60, "quota_max": 10000, "quota_remaining": 10000,
               "quota_renewal_rate": 3600, "throttle_interval": 10, "throttle_retry_limit": 10}}},
 "org_id": "5e9d9544a1dcd60001d0ed20", "oauth_client_id": "", "oauth_keys": {},
 "basic_auth_data": {"password": "", "hash_type": ""}, "jwt_data": {"secret": ""},
 "hmac_enabled": false, "hmac_string": "", "is_inactive": false, "apply_policy_id": "",
 "apply_policies": ["5ead7120575961000181867e"], "data_expires": 0, "monitor": {"trigger_limits": []},
 "enable_detailed_recording": false, "meta_data": {"user_type": "mobile_user"}, "tags": ["security"],
 "alias": "portal-key", "last_updated": "1723203634", "id_extractor_deadline": 0, "session_lifetime": 0,
 "some_future_field": {"nested": [1, 2]}}"#;

    #[test]
    fn tyk_session_round_trips_every_field() {
        let original: serde_json::Value = serde_json::from_str(TYK_SAMPLE).unwrap();
        let session: SessionState = serde_json::from_str(TYK_SAMPLE).unwrap();
        assert!((session.rate - 1000.0).abs() < f64::EPSILON);
        assert_eq!(session.access_rights.len(), 1);
        let back = serde_json::to_value(&session).unwrap();
        assert_subset(&original, &back, "$");
    }

    /// Every value of `want` is in `got` (typed fields may add their defaults).
    fn assert_subset(want: &serde_json::Value, got: &serde_json::Value, at: &str) {
        match (want, got) {
            (serde_json::Value::Object(w), serde_json::Value::Object(g)) => {
                for (k, v) in w {
                    let g = g.get(k).unwrap_or_else(|| panic!("{at}.{k} missing"));
                    assert_subset(v, g, &format!("{at}.{k}"));
                }
            }
            (serde_json::Value::Array(w), serde_json::Value::Array(g)) => {
                assert_eq!(w.len(), g.len(), "{at}");
                for (i, (w, g)) in w.iter().zip(g).enumerate() {
                    assert_subset(w, g, &format!("{at}[{i}]"));
                }
            }
            (w, g) => assert_eq!(w, g, "{at}"),
        }
    }

    #[test]
    fn expiry() {
        let s = SessionState {
            expires: 100,
            ..Default::default()
        };
        assert!(s.is_expired(101));
        assert!(!s.is_expired(100));
        assert!(
            !SessionState {
                expires: 0,
                ..Default::default()
            }
            .is_expired(i64::MAX)
        );
        assert!(
            !SessionState {
                expires: -1,
                ..Default::default()
            }
            .is_expired(i64::MAX)
        );
    }
}
