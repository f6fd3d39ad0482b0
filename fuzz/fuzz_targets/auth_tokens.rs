//! The token parsers of the auth methods beyond keys: HMAC `Signature` headers and JWTs.
//!
//! Input: the bytes as text, tried as an `Authorization: Signature ...` value, as a JWT for an
//! HMAC-verified API, and as JWT claims.
//! Invariants:
//! - nothing panics;
//! - a parsed signature header says the same when written out again and parsed back (for
//!   values without quotes);
//! - no input verifies as a JWT: it would have to carry an HS256 signature under a secret the
//!   fuzzer never sees (with the API's key or, in per-key mode, a key's own);
//! - a key id read from a token (per-key mode) is never empty;
//! - the identity read from claims is never empty.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tollgate_auth::hmac::{self, SignatureParams};
use tollgate_auth::jwt::{self, JwtSettings};
use tollgate_auth::SigningMethod;

fn settings() -> &'static JwtSettings {
    static S: OnceLock<JwtSettings> = OnceLock::new();
    S.get_or_init(|| {
        JwtSettings::with_key(SigningMethod::Hmac, b"a secret the fuzzer never sees")
            .expect("an HMAC key")
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static R: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    R.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn check_signature(text: &str) {
    let Ok(p) = SignatureParams::parse(text) else {
        return;
    };
    let signed = hmac::signing_string(&p, "GET", "/x", &http::HeaderMap::new());
    assert!(
        !hmac::verify(p.algorithm, b"k", &signed, &p.signature),
        "a signature verified without the secret"
    );
    let plain = |s: &str| !s.contains('"');
    if plain(&p.key_id) && plain(&p.signature) && p.headers.iter().all(|h| plain(h)) {
        let name = match p.algorithm {
            hmac::Algorithm::Sha1 => "hmac-sha1",
            hmac::Algorithm::Sha256 => "hmac-sha256",
            hmac::Algorithm::Sha384 => "hmac-sha384",
            hmac::Algorithm::Sha512 => "hmac-sha512",
        };
        let again = format!(
            r#"Signature keyId="{}",algorithm="{name}",headers="{}",signature="{}""#,
            p.key_id,
            p.headers.join(" "),
            p.signature
        );
        let back = SignatureParams::parse(&again).expect("a written-out header parses");
        assert_eq!(back.key_id, p.key_id);
        assert_eq!(back.algorithm, p.algorithm);
        assert_eq!(back.signature, p.signature);
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_signature(&text);
    let verified = runtime().block_on(settings().verify(&text, 1_700_000_000));
    assert!(verified.is_err(), "an input verified without the secret");
    // Per-key mode reads the key a token names before verifying it.
    if let Ok(id) = settings().key_id(&text, false) {
        assert!(!id.is_empty(), "an empty key id");
        let with_secret = runtime().block_on(settings().verify_with_secret(&text, b"k", 1));
        assert!(with_secret.is_err(), "an input verified without the secret");
    }
    if let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice(data) {
        if let Ok(id) = jwt::identity(&claims, "user.id") {
            assert!(!id.is_empty(), "an empty identity");
        }
        let _ = jwt::policy(&claims, "pol");
    }
});
