//! Tokens for the JWT tests: signed with a shared secret, with the fixture RSA keys
//! (`fixtures/`, `kid` `k1` and `k2`), or with a fresh EC key.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::Value;

/// The first fixture RSA key (`kid` `k1`), PKCS#8 PEM.
pub const RSA_PRIVATE: &str = include_str!("../fixtures/jwt-rsa-private.pem");
/// The second fixture RSA key (`kid` `k2`).
pub const RSA2_PRIVATE: &str = include_str!("../fixtures/jwt-rsa2-private.pem");
/// The first key's public half, PEM.
pub const RSA_PUBLIC: &str = include_str!("../fixtures/jwt-rsa-public.pem");
/// Both public keys as a JWK set.
pub const RSA_JWKS: &str = include_str!("../fixtures/jwt-rsa-jwks.json");

/// A token signed with `secret` by `alg` (an HS algorithm).
pub fn hmac(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("sign")
}

/// An RS256 token signed with the PEM `private` key, naming `kid`.
pub fn rsa(private: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_rsa_pem(private.as_bytes()).expect("RSA key");
    encode(&header, claims, &key).expect("sign")
}

/// An ES256 token and the PEM public key that verifies it (a new key each call).
pub fn ecdsa(claims: &Value) -> (String, String) {
    let pair = rcgen::KeyPair::generate().expect("EC key");
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC key");
    let token = encode(&Header::new(Algorithm::ES256), claims, &key).expect("sign");
    (token, pair.public_key_pem())
}

/// A token with `{"alg": "none"}` and no signature.
pub fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

/// `jwt_source` as Tyk expects it: base64 of the secret, PEM or URL.
pub fn source(raw: &str) -> String {
    STANDARD.encode(raw)
}

/// Unix seconds now, offset by `delta`.
pub fn now_plus(delta: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    i64::try_from(now).expect("time") + delta
}
