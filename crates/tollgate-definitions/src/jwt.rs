//! The JWT fields of a classic definition (`enable_jwt`), read and compiled when it loads: the
//! signing method, the key (`jwt_source`), the claims that name the identity and the policy,
//! the time skews. Settings Tollgate does not build yet are refused, naming the field, never
//! ignored: each of them changes who gets in or with which rights.

use std::sync::Arc;

use serde::Deserialize;
use tollgate_auth::jwks::Jwks;
use tollgate_auth::jwt::{Skews, Source};
use tollgate_auth::{JwtSettings, SigningMethod};
use tollgate_tls::client::{ClientSettings, UpstreamTls};

use crate::DefinitionError;
use crate::unsupported::is_set;

/// The JWT fields of a definition, as Tyk names them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct JwtConf {
    /// `hmac`, `rsa` or `ecdsa`.
    pub jwt_signing_method: String,
    /// The secret, PEM key or JWKS URL, base64-encoded (a URL may also be written plain).
    pub jwt_source: String,
    /// The claim holding the user id (default `sub`).
    pub jwt_identity_base_field: String,
    /// The claim holding the policy id.
    pub jwt_policy_field_name: String,
    /// Policies for tokens that name none.
    pub jwt_default_policies: serde_json::Value,
    /// Per-key mode: find the key by the identity claim even when the token has a `kid`.
    pub jwt_skip_kid: bool,
    /// Seconds `exp` may be past.
    pub jwt_expires_at_validation_skew: u64,
    /// Seconds `iat` may be ahead.
    pub jwt_issued_at_validation_skew: u64,
    /// Seconds `nbf` may be ahead.
    pub jwt_not_before_validation_skew: u64,
    /// A claim naming a key whose first policy the session gets.
    pub jwt_client_base_field: String,
    /// Scope → policy id.
    pub jwt_scope_to_policy_mapping: serde_json::Value,
    /// The claim holding the scopes (default `scope`).
    pub jwt_scope_claim_name: String,
    /// The same two, newer form (`scopes.jwt.scope_to_policy`, `scopes.jwt.scope_claim_name`),
    /// read first.
    pub scopes: serde_json::Value,
    /// Several JWKS URLs (Tyk reads them for OAS definitions only; refused).
    pub jwt_jwks_uris: serde_json::Value,
}

/// Compiles the JWT settings of a definition; `tls` is the API's upstream TLS settings, which
/// an `https` JWKS URL is fetched with.
///
/// # Errors
/// A refused or invalid field, named.
pub(crate) fn compile(
    conf: &JwtConf,
    tls: &ClientSettings,
) -> Result<JwtSettings, DefinitionError> {
    if is_set(&conf.jwt_jwks_uris) {
        return Err(DefinitionError::new(
            "jwt_jwks_uris",
            "is not supported yet",
        ));
    }
    let method = SigningMethod::from_name(&conf.jwt_signing_method).ok_or_else(|| {
        DefinitionError::new(
            "jwt_signing_method",
            format!(
                "`{}` is not hmac, rsa or ecdsa",
                conf.jwt_signing_method.trim()
            ),
        )
    })?;
    // Without `jwt_source`, Tyk's other mode: each key's own `jwt_data.secret`, the key named
    // by the token's `kid` (or identity).
    let source = if conf.jwt_source.trim().is_empty() {
        None
    } else {
        Some(
            Source::read(&conf.jwt_source)
                .map_err(|e| DefinitionError::new("jwt_source", e.to_string()))?,
        )
    };
    let settings = match source {
        None => JwtSettings::per_key(method),
        Some(Source::Key(key)) => JwtSettings::with_key(method, &key)
            .map_err(|e| DefinitionError::new("jwt_source", e.to_string()))?,
        Some(Source::Url(url)) => {
            let tls = if url.to_ascii_lowercase().starts_with("https://") {
                Some(
                    UpstreamTls::get(tls)
                        .map_err(|e| DefinitionError::new("proxy.transport", e.to_string()))?,
                )
            } else {
                None
            };
            let jwks = Arc::new(
                Jwks::new(&url, method, tls)
                    .map_err(|e| DefinitionError::new("jwt_source", e.to_string()))?,
            );
            // Fetched now, not by the first request; a failure is retried by requests.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let early = Arc::clone(&jwks);
                runtime.spawn(async move { early.refresh().await });
            }
            JwtSettings::with_jwks(method, jwks)
        }
    };
    let mut settings = settings.with_skews(Skews {
        expires_at: conf.jwt_expires_at_validation_skew,
        issued_at: conf.jwt_issued_at_validation_skew,
        not_before: conf.jwt_not_before_validation_skew,
    });
    settings.identity_field = conf.jwt_identity_base_field.trim().to_owned();
    settings.policy_field = conf.jwt_policy_field_name.trim().to_owned();
    settings.default_policies = default_policies(&conf.jwt_default_policies)?;
    settings.skip_kid = conf.jwt_skip_kid;
    settings.client_field = conf.jwt_client_base_field.trim().to_owned();
    let (field, mapping) = match conf.scopes.pointer("/jwt/scope_to_policy") {
        Some(newer) if is_set(newer) => ("scopes.jwt.scope_to_policy", newer),
        _ => (
            "jwt_scope_to_policy_mapping",
            &conf.jwt_scope_to_policy_mapping,
        ),
    };
    settings.scope_policies = match mapping {
        serde_json::Value::Null => Default::default(),
        raw => serde_json::from_value(raw.clone())
            .map_err(|_| DefinitionError::new(field, "must map scopes to policy ids"))?,
    };
    let claim = conf
        .scopes
        .pointer("/jwt/scope_claim_name")
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(&conf.jwt_scope_claim_name)
        .trim();
    if !claim.is_empty() {
        settings.scope_claim = claim.to_owned();
    }
    Ok(settings)
}

fn default_policies(raw: &serde_json::Value) -> Result<Vec<String>, DefinitionError> {
    let bad = || DefinitionError::new("jwt_default_policies", "must be a list of policy ids");
    match raw {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(bad)
            })
            .collect(),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    use super::*;

    fn conf(v: serde_json::Value) -> JwtConf {
        serde_json::from_value(v).unwrap()
    }

    fn err(v: serde_json::Value) -> String {
        compile(&conf(v), &ClientSettings::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn secrets_keys_and_refusals() {
        let secret = STANDARD.encode("s3cret");
        let s = compile(
            &conf(
                json!({"jwt_source": secret, "jwt_default_policies": ["p1", "p2"],
                "jwt_identity_base_field": "email", "jwt_policy_field_name": "pol"}),
            ),
            &ClientSettings::default(),
        )
        .unwrap();
        assert_eq!(s.default_policies, ["p1", "p2"]);
        assert_eq!(s.identity_field, "email");
        assert!(s.jwks().is_none());
        let per_key =
            compile(&conf(json!({"jwt_source": ""})), &ClientSettings::default()).unwrap();
        assert!(per_key.is_per_key());
        assert!(
            err(json!({"jwt_source": secret, "jwt_signing_method": "none"}))
                .contains("jwt_signing_method")
        );
        assert!(err(json!({"jwt_source": "%%%"})).contains("jwt_source"));
        let rsa_not_pem = STANDARD.encode("not a pem");
        assert!(
            err(json!({"jwt_source": rsa_not_pem, "jwt_signing_method": "rsa"}))
                .contains("not an RSA public key")
        );
        assert!(
            err(json!({"jwt_source": secret, "jwt_scope_to_policy_mapping": {"a": 5}}))
                .contains("jwt_scope_to_policy_mapping")
        );
        assert!(
            err(json!({"jwt_source": secret, "scopes": {"jwt": {"scope_to_policy": ["p"]}}}))
                .contains("scopes.jwt.scope_to_policy")
        );
        let scoped = compile(
            &conf(json!({"jwt_source": secret, "jwt_scope_to_policy_mapping": {"old": "x"},
                "scopes": {"jwt": {"scope_to_policy": {"read": "silver"}, "scope_claim_name": "scp"}}})),
            &ClientSettings::default(),
        )
        .unwrap();
        assert_eq!(scoped.scope_claim, "scp");
        assert_eq!(
            scoped.scope_policies.get("read").map(String::as_str),
            Some("silver")
        );
        assert!(!scoped.scope_policies.contains_key("old"));
        assert!(
            err(json!({"jwt_source": secret, "jwt_default_policies": "p1"}))
                .contains("jwt_default_policies")
        );
        assert!(err(json!({"jwt_source": "ftp://idp/keys"})).contains("jwt_source"));
    }

    #[test]
    fn jwks_urls_plain_or_base64() {
        for source in [
            "http://127.0.0.1:9/jwks".to_owned(),
            STANDARD.encode("http://127.0.0.1:9/jwks"),
        ] {
            let s = compile(
                &conf(json!({"jwt_source": source, "jwt_signing_method": "rsa"})),
                &ClientSettings::default(),
            )
            .unwrap();
            assert!(s.jwks().is_some());
        }
    }
}
