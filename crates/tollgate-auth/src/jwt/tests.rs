use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use super::*;
use crate::jwks::usable_keys;

const SECRET: &[u8] = b"a-shared-secret-of-some-length";

fn hs(alg: Algorithm, claims: &Value) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

fn hmac() -> JwtSettings {
    JwtSettings::with_key(SigningMethod::Hmac, SECRET).unwrap()
}

fn ec_pair() -> (String, String) {
    let pair = rcgen::KeyPair::generate().unwrap();
    (pair.serialize_pem(), pair.public_key_pem())
}

#[tokio::test]
async fn hmac_tokens_verify_and_others_do_not() {
    let s = hmac();
    let claims = json!({"sub": "u1", "exp": 2_000_000_000u64});
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let c = s.verify(&hs(alg, &claims), 1_000).await.unwrap();
        assert_eq!(c["sub"], "u1");
    }
    let other = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"another secret"),
    )
    .unwrap();
    assert_eq!(s.verify(&other, 1_000).await, Err(JwtError::BadSignature));
    // A changed payload under the old signature.
    let good = hs(Algorithm::HS256, &claims);
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = STANDARD_NO_PAD.encode(br#"{"sub":"admin"}"#);
    parts[1] = &forged;
    assert_eq!(
        s.verify(&parts.join("."), 1_000).await,
        Err(JwtError::BadSignature)
    );
    for junk in ["", "a.b", "a.b.c", "..", "x.y.z.w", &good[..good.len() / 2]] {
        assert!(s.verify(junk, 1_000).await.is_err(), "{junk:?} verified");
    }
}

use base64::engine::general_purpose::URL_SAFE_NO_PAD as STANDARD_NO_PAD;

#[tokio::test]
async fn alg_none_and_algorithm_confusion_are_refused() {
    let header = STANDARD_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = STANDARD_NO_PAD.encode(br#"{"sub":"u1"}"#);
    let none = format!("{header}.{body}.");
    assert!(hmac().verify(&none, 1).await.is_err());

    // An HS256 token made with the RSA public key as its secret, sent to an RSA API.
    let public = include_bytes!("../../../tollgate-testkit/fixtures/jwt-rsa-public.pem");
    let rsa = JwtSettings::with_key(SigningMethod::Rsa, public).unwrap();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "u1"}),
        &EncodingKey::from_secret(public),
    )
    .unwrap();
    assert_eq!(
        rsa.verify(&confused, 1).await,
        Err(JwtError::UnexpectedSigningMethod)
    );
    // And an RS256 token to an HMAC API.
    let private = include_bytes!("../../../tollgate-testkit/fixtures/jwt-rsa-private.pem");
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "u1"}),
        &EncodingKey::from_rsa_pem(private).unwrap(),
    )
    .unwrap();
    assert_eq!(
        hmac().verify(&rs, 1).await,
        Err(JwtError::UnexpectedSigningMethod)
    );
    assert_eq!(rsa.verify(&rs, 1).await.unwrap()["sub"], "u1");
}

#[tokio::test]
async fn ecdsa_keys_from_pem() {
    let (private, public) = ec_pair();
    let s = JwtSettings::with_key(SigningMethod::Ecdsa, public.as_bytes()).unwrap();
    let token = encode(
        &Header::new(Algorithm::ES256),
        &json!({"sub": "e"}),
        &EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(s.verify(&token, 1).await.unwrap()["sub"], "e");
    assert!(JwtSettings::with_key(SigningMethod::Rsa, public.as_bytes()).is_err());
    assert!(JwtSettings::with_key(SigningMethod::Ecdsa, b"not a key").is_err());
}

#[test]
fn time_claims_at_their_skew_boundaries() {
    let skews = Skews {
        expires_at: 10,
        issued_at: 5,
        not_before: 3,
    };
    let check = |claims: Value, now| check_times(claims.as_object().unwrap(), now, skews);
    // exp: valid while now - skew < exp.
    assert_eq!(check(json!({"exp": 100}), 109), Ok(()));
    assert_eq!(check(json!({"exp": 100}), 110), Err(JwtError::Expired));
    // iat: valid while now + skew >= iat.
    assert_eq!(check(json!({"iat": 100}), 95), Ok(()));
    assert_eq!(
        check(json!({"iat": 100}), 94),
        Err(JwtError::UsedBeforeIssued)
    );
    // nbf: valid while now + skew >= nbf.
    assert_eq!(check(json!({"nbf": 100}), 97), Ok(()));
    assert_eq!(check(json!({"nbf": 100}), 96), Err(JwtError::NotValidYet));
    // Optional; a claim that is no number fails; the last failing check is the one told.
    assert_eq!(check(json!({}), 1), Ok(()));
    assert_eq!(check(json!({"exp": "soon"}), 1), Err(JwtError::Expired));
    assert_eq!(
        check(json!({"exp": 1, "nbf": 1000}), 500),
        Err(JwtError::NotValidYet)
    );
    assert_eq!(check(json!({"exp": 100.5}), 105), Ok(()));
}

#[test]
fn identity_and_policy_claims_as_tyk_reads_them() {
    let c = json!({"sub": "s", "email": "a@b", "user": {"id": "nested"}, "empty": "", "pol": "p1", "n": 5});
    let c = c.as_object().unwrap();
    assert_eq!(identity(c, ""), Ok("s"));
    assert_eq!(identity(c, "email"), Ok("a@b"));
    assert_eq!(identity(c, "user.id"), Ok("nested"));
    assert_eq!(identity(c, "missing"), Ok("s"));
    assert_eq!(identity(c, "n"), Ok("s"));
    assert_eq!(identity(c, "empty"), Err(JwtError::EmptyBaseField));
    let no_sub = json!({"sub": ""});
    assert_eq!(
        identity(no_sub.as_object().unwrap(), ""),
        Err(JwtError::EmptySub)
    );
    assert_eq!(identity(&Map::new(), "x"), Err(JwtError::NoIdentity));
    assert_eq!(policy(c, "pol"), Some("p1"));
    assert_eq!(policy(c, ""), None);
    assert_eq!(policy(c, "n"), None);
    let scoped = json!({"scope": "read  write", "realm": {"roles": ["admin", 5, "ops"]}});
    let scoped = scoped.as_object().unwrap();
    assert_eq!(scopes(scoped, "scope"), ["read", "write"]);
    assert_eq!(scopes(scoped, "realm.roles"), ["admin", "ops"]);
    assert!(scopes(scoped, "missing").is_empty());
    // Tyk's session key id: MD5 of the identity.
    assert_eq!(session_key_id("user"), "ee11cbb19052e40b07aac0ca060c23ee");
}

#[test]
fn sources_as_tyk_decodes_them() {
    assert!(
        matches!(Source::read("https://idp/jwks"), Ok(Source::Url(u)) if u == "https://idp/jwks")
    );
    let b64url = STANDARD.encode("http://idp/keys");
    assert!(matches!(Source::read(&b64url), Ok(Source::Url(u)) if u == "http://idp/keys"));
    assert!(
        matches!(Source::read(&STANDARD.encode("s3cret")), Ok(Source::Key(k)) if k == b"s3cret")
    );
    assert!(Source::read("").is_err());
    assert!(Source::read("not base64 !").is_err());
}

#[test]
fn only_keys_of_the_method_come_from_a_set() {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(json!({"keys": [
        {"kty": "oct", "kid": "h", "k": STANDARD_NO_PAD.encode(SECRET)},
        {"kty": "oct", "kid": "h384", "alg": "HS384", "k": STANDARD_NO_PAD.encode(SECRET)},
        {"kty": "EC", "kid": "e", "crv": "P-256",
         "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"},
        {"kty": "oct", "kid": "bad-alg", "alg": "RS256", "k": STANDARD_NO_PAD.encode(SECRET)}
    ]}))
    .unwrap();
    let kids = |m| {
        usable_keys(&set, m)
            .into_iter()
            .map(|k| k.kid.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(kids(SigningMethod::Hmac), ["h", "h384"]);
    assert_eq!(kids(SigningMethod::Ecdsa), ["e"]);
    assert!(kids(SigningMethod::Rsa).is_empty());
}
