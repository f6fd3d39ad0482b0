//! Tyk's JWT authentication (`enable_jwt`) with a central key (`jwt_source`).
//!
//! The API pins the signing family (`jwt_signing_method`): a token's `alg` must belong to it
//! and only selects among that family's algorithms, so `none`, an unknown algorithm and an
//! HMAC token checked against an RSA public key ("algorithm confusion") never verify. The key
//! comes from the definition alone; a token's `kid` only picks among the keys of the
//! configured JWKS. Time claims are checked after the signature, each with its own skew, as
//! Tyk does (`exp`, `iat`, `nbf`, all optional).
//!
//! Verified tokens are remembered for [`VERIFIED_TTL`] (by a SHA-256 of the whole token, so
//! only the identical token matches), which keeps RSA and ECDSA verification off the path of
//! a client that sends the same token again; the time claims are checked on every request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use md5::Digest as _;
use serde_json::{Map, Value};
use sha2::Digest as _;

use crate::jwks::{Jwks, SetKey};

/// How long a verified token is trusted without checking its signature again.
pub const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// Verified tokens remembered at most (the memory is emptied when full).
const VERIFIED_MAX: usize = 65_536;

/// `jwt_signing_method`: the family of algorithms the API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningMethod {
    /// `hmac`: HS256, HS384, HS512 with a shared secret.
    Hmac,
    /// `rsa`: RS256/384/512 and PS256/384/512 with an RSA public key.
    Rsa,
    /// `ecdsa`: ES256, ES384 with an EC public key.
    Ecdsa,
}

impl SigningMethod {
    /// Tyk's name (`hmac`, `rsa`, `ecdsa`); empty is `hmac`, as in Tyk.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" | "hmac" => Some(Self::Hmac),
            "rsa" => Some(Self::Rsa),
            "ecdsa" => Some(Self::Ecdsa),
            _ => None,
        }
    }

    /// Whether a token signed with `alg` may be verified under this method.
    pub fn allows(self, alg: Algorithm) -> bool {
        use Algorithm::{
            ES256, ES384, HS256, HS384, HS512, PS256, PS384, PS512, RS256, RS384, RS512,
        };
        match self {
            Self::Hmac => matches!(alg, HS256 | HS384 | HS512),
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::Ecdsa => matches!(alg, ES256 | ES384),
        }
    }
}

/// The `jwt_*_validation_skew` settings, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skews {
    /// `jwt_expires_at_validation_skew`: how long after `exp` a token still passes.
    pub expires_at: u64,
    /// `jwt_issued_at_validation_skew`: how far in the future `iat` may be.
    pub issued_at: u64,
    /// `jwt_not_before_validation_skew`: how long before `nbf` a token already passes.
    pub not_before: u64,
}

/// Where the verification key comes from.
enum KeySource {
    /// A secret, or a PEM public key or certificate.
    Static(DecodingKey),
    /// A JWKS URL.
    Jwks(Arc<Jwks>),
    /// Each key's own `jwt_data.secret` (no `jwt_source`): the caller finds the key first.
    PerKey,
}

impl std::fmt::Debug for KeySource {
    // A secret must not reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(_) => f.write_str("Static(..)"),
            Self::Jwks(j) => f.debug_tuple("Jwks").field(j).finish(),
            Self::PerKey => f.write_str("PerKey"),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a JWT, an algorithm the library does not know (`none`), or claims that are not a
    /// JSON object.
    #[error("malformed token")]
    Malformed,
    /// The token's `alg` is outside the API's `jwt_signing_method`.
    #[error("unexpected signing method")]
    UnexpectedSigningMethod,
    /// No configured key has the token's `kid` (or fits its `alg`).
    #[error("no matching key")]
    NoKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` (plus its skew) is past.
    #[error("token has expired")]
    Expired,
    /// `iat` is in the future (beyond its skew).
    #[error("token used before issued")]
    UsedBeforeIssued,
    /// `nbf` is in the future (beyond its skew).
    #[error("token is not valid yet")]
    NotValidYet,
    /// Neither the identity field nor `sub` holds a user id.
    #[error("no suitable claims for user ID were found")]
    NoIdentity,
    /// `sub` is an empty string.
    #[error("found an empty user ID in sub claim")]
    EmptySub,
    /// `jwt_identity_base_field` names an empty string.
    #[error("found an empty user ID in predefined base claim")]
    EmptyBaseField,
}

/// A definition's JWT settings, compiled.
#[derive(Debug)]
pub struct JwtSettings {
    method: SigningMethod,
    keys: KeySource,
    /// `jwt_identity_base_field` (empty: `sub` only).
    pub identity_field: String,
    /// `jwt_policy_field_name` (empty: none).
    pub policy_field: String,
    /// `jwt_default_policies`.
    pub default_policies: Vec<String>,
    /// `jwt_client_base_field`: a claim naming a key whose first policy the session gets.
    pub client_field: String,
    /// `jwt_skip_kid` (per-key mode): the key is named by the identity claim, not `kid`.
    pub skip_kid: bool,
    /// `jwt_scope_claim_name` (default `scope`): the claim `scope_policies` reads.
    pub scope_claim: String,
    /// `jwt_scope_to_policy_mapping`: scope → policy id (empty: scopes are not read).
    pub scope_policies: std::collections::BTreeMap<String, String>,
    skews: Skews,
    verified: papaya::HashMap<[u8; 32], Verified>,
}

/// A token whose signature verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its claims.
    pub claims: Arc<Map<String, Value>>,
    at: Instant,
}

/// Why `jwt_source` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(String);

/// What `jwt_source` holds, decoded as Tyk reads it: a URL as it is, or base64 of a URL, a
/// secret, or a PEM key.
pub enum Source {
    /// Fetch keys from this JWKS URL.
    Url(String),
    /// The decoded secret or PEM.
    Key(Vec<u8>),
}

impl Source {
    /// Reads `jwt_source`.
    ///
    /// # Errors
    /// Empty, or neither a URL nor base64.
    pub fn read(raw: &str) -> Result<Self, SourceError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(SourceError("must not be empty".into()));
        }
        if is_url(raw) {
            return Ok(Self::Url(raw.to_owned()));
        }
        let decoded = STANDARD
            .decode(raw)
            .map_err(|_| SourceError("is neither an http(s) URL nor base64".into()))?;
        match std::str::from_utf8(&decoded) {
            Ok(text) if is_url(text.trim()) => Ok(Self::Url(text.trim().to_owned())),
            _ if decoded.is_empty() => Err(SourceError("decodes to nothing".into())),
            _ => Ok(Self::Key(decoded)),
        }
    }
}

fn is_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

impl JwtSettings {
    /// Settings verifying with a key: the secret for `hmac`, a PEM public key or certificate
    /// for `rsa` and `ecdsa`.
    ///
    /// # Errors
    /// The PEM is not a public key or certificate of the method's kind.
    pub fn with_key(method: SigningMethod, key: &[u8]) -> Result<Self, SourceError> {
        let key = match method {
            SigningMethod::Hmac => DecodingKey::from_secret(key),
            SigningMethod::Rsa => DecodingKey::from_rsa_pem(key)
                .map_err(|e| SourceError(format!("not an RSA public key or certificate: {e}")))?,
            SigningMethod::Ecdsa => DecodingKey::from_ec_pem(key)
                .map_err(|e| SourceError(format!("not an EC public key or certificate: {e}")))?,
        };
        Ok(Self::new(method, KeySource::Static(key)))
    }

    /// Settings verifying each token with the secret of the key it names (Tyk's mode without
    /// `jwt_source`): see [`JwtSettings::key_id`] and [`JwtSettings::verify_with_secret`].
    pub fn per_key(method: SigningMethod) -> Self {
        Self::new(method, KeySource::PerKey)
    }

    /// Whether tokens are verified with their key's own secret.
    pub fn is_per_key(&self) -> bool {
        matches!(self.keys, KeySource::PerKey)
    }

    /// The key a token names, to look its secret up (per-key mode): its `kid` header unless
    /// `skip_kid`, else its identity claim or `sub`. Read before verification, and only used
    /// to find the secret the token must then verify with.
    ///
    /// # Errors
    /// Not a token, or no key named.
    pub fn key_id(&self, token: &str, skip_kid: bool) -> Result<String, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if !skip_kid && let Some(kid) = header.kid.filter(|k| !k.is_empty()) {
            return Ok(kid);
        }
        let payload = token.split('.').nth(1).ok_or(JwtError::Malformed)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| JwtError::Malformed)?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
        identity(&claims, &self.identity_field).map(str::to_owned)
    }

    /// Settings verifying with the keys of a JWKS.
    pub fn with_jwks(method: SigningMethod, jwks: Arc<Jwks>) -> Self {
        Self::new(method, KeySource::Jwks(jwks))
    }

    fn new(method: SigningMethod, keys: KeySource) -> Self {
        Self {
            method,
            keys,
            identity_field: String::new(),
            policy_field: String::new(),
            default_policies: Vec::new(),
            client_field: String::new(),
            skip_kid: false,
            scope_claim: "scope".to_owned(),
            scope_policies: std::collections::BTreeMap::new(),
            skews: Skews::default(),
            verified: papaya::HashMap::new(),
        }
    }

    /// These settings with `skews`.
    #[must_use]
    pub fn with_skews(mut self, skews: Skews) -> Self {
        self.skews = skews;
        self
    }

    /// The time skews tokens are checked with.
    pub fn skews(&self) -> Skews {
        self.skews
    }

    /// The JWKS the keys come from, if any (fetched once at load by the caller).
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        match &self.keys {
            KeySource::Jwks(j) => Some(j),
            KeySource::Static(_) | KeySource::PerKey => None,
        }
    }

    /// `DELETE /tyk/cache/jwks`: the JWKS keys are fetched again by the next token, and no
    /// token verified before is trusted without checking it again.
    pub fn invalidate_keys(&self) {
        if let KeySource::Jwks(jwks) = &self.keys {
            jwks.invalidate();
        }
        self.verified.pin().clear();
    }

    /// Verifies `token` (without a `Bearer ` prefix) and checks its time claims at `now`
    /// (Unix seconds).
    ///
    /// # Errors
    /// What is wrong with it, in Tyk's order: form and algorithm, key, signature, then time.
    pub async fn verify(&self, token: &str, now: u64) -> Result<Arc<Map<String, Value>>, JwtError> {
        self.verify_remembered(token, None, now).await
    }

    /// [`JwtSettings::verify`] with a key's own secret (per-key mode): the HMAC secret, or
    /// the PEM public key for `rsa` and `ecdsa`.
    ///
    /// # Errors
    /// As [`JwtSettings::verify`]; a secret that is no key of the method's kind is `NoKey`.
    pub async fn verify_with_secret(
        &self,
        token: &str,
        secret: &[u8],
        now: u64,
    ) -> Result<Arc<Map<String, Value>>, JwtError> {
        self.verify_remembered(token, Some(secret), now).await
    }

    async fn verify_remembered(
        &self,
        token: &str,
        secret: Option<&[u8]>,
        now: u64,
    ) -> Result<Arc<Map<String, Value>>, JwtError> {
        // The secret is part of what is remembered: a rotated one verifies afresh.
        let mut hasher = sha2::Sha256::new();
        hasher.update(token.as_bytes());
        if let Some(secret) = secret {
            hasher.update([0]);
            hasher.update(secret);
        }
        let fingerprint: [u8; 32] = hasher.finalize().into();
        let remembered = self
            .verified
            .pin()
            .get(&fingerprint)
            .filter(|v| v.at.elapsed() < VERIFIED_TTL)
            .map(|v| Arc::clone(&v.claims));
        let claims = match remembered {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verify_signature(token, secret).await?);
                let verified = self.verified.pin();
                if verified.len() >= VERIFIED_MAX {
                    verified.clear();
                }
                verified.insert(
                    fingerprint,
                    Verified {
                        claims: Arc::clone(&claims),
                        at: Instant::now(),
                    },
                );
                claims
            }
        };
        check_times(&claims, now, self.skews)?;
        Ok(claims)
    }

    async fn verify_signature(
        &self,
        token: &str,
        secret: Option<&[u8]>,
    ) -> Result<Map<String, Value>, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if !self.method.allows(header.alg) {
            return Err(JwtError::UnexpectedSigningMethod);
        }
        let mut validation = Validation::new(header.alg);
        // Time claims are Tyk's, with their own skews (below); audience and issuer are not
        // checked by classic definitions.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let decode = |key: &DecodingKey| {
            jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation).map(|d| d.claims)
        };
        if let Some(secret) = secret {
            let key = match self.method {
                SigningMethod::Hmac => DecodingKey::from_secret(secret),
                SigningMethod::Rsa => {
                    DecodingKey::from_rsa_pem(secret).map_err(|_| JwtError::NoKey)?
                }
                SigningMethod::Ecdsa => {
                    DecodingKey::from_ec_pem(secret).map_err(|_| JwtError::NoKey)?
                }
            };
            return decode(&key).map_err(classify);
        }
        match &self.keys {
            KeySource::Static(key) => decode(key).map_err(classify),
            KeySource::PerKey => Err(JwtError::NoKey),
            KeySource::Jwks(jwks) => {
                let set = jwks.keys(header.kid.as_deref()).await;
                let candidates: Vec<&SetKey> = set
                    .iter()
                    .filter(|k| header.kid.is_none() || k.kid == header.kid)
                    .filter(|k| k.alg.is_none_or(|a| a == header.alg))
                    .collect();
                if candidates.is_empty() {
                    return Err(JwtError::NoKey);
                }
                // Two keys under one `kid` (a set being rotated): either may have signed.
                let mut last = JwtError::BadSignature;
                for k in candidates {
                    match decode(&k.key) {
                        Ok(claims) => return Ok(claims),
                        Err(e) => last = classify(e),
                    }
                }
                Err(last)
            }
        }
    }
}

fn classify(e: jsonwebtoken::errors::Error) -> JwtError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
            JwtError::BadSignature
        }
        ErrorKind::InvalidAlgorithm => JwtError::UnexpectedSigningMethod,
        _ => JwtError::Malformed,
    }
}

/// Tyk's time checks: each claim optional; a claim that is not a number fails its check.
fn check_times(claims: &Map<String, Value>, now: u64, skews: Skews) -> Result<(), JwtError> {
    let now = i128::from(now);
    let at = |name: &str| claims.get(name).map(|v| v.as_f64().map(|f| f as i128));
    let mut failed = None;
    if let Some(exp) = at("exp")
        && exp.is_none_or(|exp| now - i128::from(skews.expires_at) >= exp)
    {
        failed = Some(JwtError::Expired);
    }
    if let Some(iat) = at("iat")
        && iat.is_none_or(|iat| now + i128::from(skews.issued_at) < iat)
    {
        failed = Some(JwtError::UsedBeforeIssued);
    }
    if let Some(nbf) = at("nbf")
        && nbf.is_none_or(|nbf| now + i128::from(skews.not_before) < nbf)
    {
        failed = Some(JwtError::NotValidYet);
    }
    failed.map_or(Ok(()), Err)
}

/// The user id of a token: `field` (a claim name, or a dotted path into nested objects) when
/// it holds a string, else `sub`, as Tyk reads it.
///
/// # Errors
/// No suitable claim, or an empty one.
pub fn identity<'a>(claims: &'a Map<String, Value>, field: &str) -> Result<&'a str, JwtError> {
    if !field.is_empty() {
        match claim(claims, field) {
            Some(Value::String(s)) if !s.is_empty() => return Ok(s),
            Some(Value::String(_)) => return Err(JwtError::EmptyBaseField),
            _ => {}
        }
    }
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(JwtError::EmptySub),
        _ => Err(JwtError::NoIdentity),
    }
}

/// The policy id a token names in `field` (`jwt_policy_field_name`), if it holds a string.
pub fn policy<'a>(claims: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    if field.is_empty() {
        return None;
    }
    match claim(claims, field) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// The scopes a token grants in `field`: a space-separated string or a list of strings, as
/// identity providers write them.
pub fn scopes<'a>(claims: &'a Map<String, Value>, field: &str) -> Vec<&'a str> {
    match claim(claims, field) {
        Some(Value::String(s)) => s.split_whitespace().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The key id Tyk gives the session of an identity: the MD5 of the identity, in hex.
pub fn session_key_id(identity: &str) -> String {
    tollgate_session::hex(&md5::Md5::digest(identity.as_bytes()))
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
