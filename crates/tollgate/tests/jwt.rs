//! JWT authentication against the real binary: sessions per identity made from the token's
//! policy or the API's defaults (limits and quotas counted per identity), the refusal corpus
//! (no token, `alg: none`, algorithm confusion, bad and truncated signatures, time claims at
//! their skews, missing identities, unknown policies), RSA keys from a JWKS URL (unknown and
//! duplicate `kid`s, rotation without a fetch per request) and ECDSA keys from PEM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tollgate_testkit::jwt::{self, RSA_JWKS, RSA_PRIVATE, RSA2_PRIVATE, now_plus};
use tollgate_testkit::keys::admin;
use tollgate_testkit::raw::{RawResponse, assert_tyk_error, get};
use tollgate_testkit::{Gateway, GatewayBuilder, MockUpstream, Reply, api_with, gateway};

const SECRET: &str = "tollgate-jwt-test-secret";

/// A JWT API `jwt` on `/jwt/` with `settings` (the `jwt_*` fields).
fn jwt_api(builder: GatewayBuilder, up: &MockUpstream, settings: Value) -> GatewayBuilder {
    let mut extra = json!({"use_keyless": false, "enable_jwt": true});
    tollgate_testkit::merge_json(&mut extra, settings);
    builder.api("jwt.json", api_with("jwt", "/jwt/", &up.url(), extra))
}

/// A policies file: `gold` (quota 2) and `silver` for `jwt`, `foreign` of another org.
fn with_policies(builder: GatewayBuilder, dir: &tempfile::TempDir) -> GatewayBuilder {
    let rights = json!({"jwt": {"api_id": "jwt", "api_name": "jwt", "versions": ["Default"]}});
    let policy = |org: &str, quota: i64| {
        json!({"org_id": org, "rate": 1000, "per": 1, "quota_max": quota,
               "quota_renewal_rate": 3600, "access_rights": rights})
    };
    let path = dir.path().join("policies.json");
    let policies = json!({"gold": policy("default", 2), "silver": policy("default", -1),
                          "foreign": policy("elsewhere", -1)});
    std::fs::write(&path, policies.to_string()).unwrap();
    builder.conf(json!({"policies": {"policy_record_name": path}}))
}

async fn call(gw: &Gateway, token: &str) -> RawResponse {
    get(gw.addr(), "/jwt/x", &[("Authorization", token)]).await
}

#[tokio::test]
async fn hmac_tokens_become_sessions_of_their_policy() {
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = jwt_api(
        with_policies(gateway!(), &dir),
        &up,
        json!({"jwt_signing_method": "hmac", "jwt_source": jwt::source(SECRET),
               "jwt_identity_base_field": "user_id", "jwt_policy_field_name": "pol",
               "jwt_default_policies": ["silver"], "jwt_expires_at_validation_skew": 30}),
    )
    .start()
    .await;
    let token = |claims: Value| jwt::hmac(Algorithm::HS256, SECRET.as_bytes(), &claims);
    let alice = token(json!({"user_id": "alice", "pol": "gold", "exp": now_plus(600)}));

    // Gold's quota is 2, counted for alice's session.
    for _ in 0..2 {
        let r = call(&gw, &format!("Bearer {alice}")).await;
        assert_eq!(r.status, 200, "{}", r.dump());
    }
    assert_tyk_error(&call(&gw, &alice).await, 403, "Quota exceeded");
    // Another identity has its own session and quota; a token naming no policy gets the
    // default; `sub` stands in when the identity claim is missing.
    let bob = token(json!({"user_id": "bob", "pol": "gold"}));
    assert_eq!(call(&gw, &bob).await.status, 200);
    let carol = token(json!({"sub": "carol"}));
    for _ in 0..3 {
        assert_eq!(call(&gw, &carol).await.status, 200);
    }
    // A later token moving alice to silver (no quota) lets her in again.
    let alice_silver = token(json!({"user_id": "alice", "pol": "silver"}));
    assert_eq!(call(&gw, &alice_silver).await.status, 200);
    let served = up.request_count();
    assert_eq!(served, 7);

    // Within the expiry skew (30 s) a token still passes; beyond it, 401.
    let late = token(json!({"sub": "dave", "exp": now_plus(-10)}));
    assert_eq!(call(&gw, &late).await.status, 200);
    let refusals = [
        (String::new(), 400, "Authorization field missing"),
        (
            token(json!({"sub": "dave", "exp": now_plus(-60)})),
            401,
            "Key not authorized: token has expired",
        ),
        (
            token(json!({"sub": "dave", "nbf": now_plus(60)})),
            401,
            "Key not authorized: token is not valid yet",
        ),
        (
            token(json!({"sub": "dave", "iat": now_plus(60)})),
            401,
            "Key not authorized: token used before issued",
        ),
        (
            token(json!({"user_id": "erin", "pol": "platinum"})),
            403,
            "key not authorized: no matching policy",
        ),
        (
            token(json!({"user_id": "erin", "pol": "foreign"})),
            403,
            "key not authorized: no matching policy",
        ),
        (
            token(json!({"name": "nobody"})),
            403,
            "no suitable claims for user ID were found",
        ),
        (
            token(json!({"sub": ""})),
            403,
            "found an empty user ID in sub claim",
        ),
        (
            token(json!({"user_id": "", "sub": "x"})),
            403,
            "found an empty user ID in predefined base claim",
        ),
        (
            jwt::hmac(
                Algorithm::HS256,
                b"another secret",
                &json!({"sub": "mallory"}),
            ),
            403,
            "Key not authorized",
        ),
        (
            jwt::unsigned(&json!({"sub": "mallory"})),
            403,
            "Key not authorized",
        ),
        (
            alice[..alice.len() - 5].to_owned(),
            403,
            "Key not authorized",
        ),
        ("not.a.jwt".to_owned(), 403, "Key not authorized"),
        (
            jwt::rsa(RSA_PRIVATE, None, &json!({"sub": "mallory"})),
            403,
            "Key not authorized: Unexpected signing method",
        ),
    ];
    for (token, status, message) in &refusals {
        let r = call(&gw, token).await;
        assert_tyk_error(&r, *status, message);
    }
    assert_eq!(
        up.request_count(),
        served + 1,
        "a refused token reached the upstream"
    );
}

#[tokio::test]
async fn a_token_without_any_policy_is_refused() {
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = jwt_api(
        with_policies(gateway!(), &dir),
        &up,
        json!({"jwt_source": jwt::source(SECRET), "jwt_policy_field_name": "pol"}),
    )
    .start()
    .await;
    let t = jwt::hmac(Algorithm::HS512, SECRET.as_bytes(), &json!({"sub": "u"}));
    assert_tyk_error(
        &call(&gw, &t).await,
        403,
        "key not authorized: no matching policy found",
    );
    let t = jwt::hmac(
        Algorithm::HS384,
        SECRET.as_bytes(),
        &json!({"sub": "u", "pol": "silver"}),
    );
    assert_eq!(call(&gw, &t).await.status, 200);
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn rsa_keys_from_a_jwks_url_by_kid() {
    let up = MockUpstream::start().await;
    let idp = MockUpstream::start().await;
    // At first the set holds only k1 (and k1 twice, under another key, as during a rotation
    // gone wrong: either may verify).
    let mut set: Value = serde_json::from_str(RSA_JWKS).unwrap();
    let k2 = set["keys"][1].clone();
    let mut decoy = k2.clone();
    decoy["kid"] = json!("k1");
    set["keys"] = json!([decoy, set["keys"][0]]);
    idp.on("/jwks", Reply::fixed(200, set.to_string()));
    let dir = tempfile::tempdir().unwrap();
    let jwks_url = format!("{}/jwks", idp.url());
    let gw = jwt_api(
        with_policies(gateway!(), &dir),
        &up,
        json!({"jwt_signing_method": "rsa", "jwt_source": jwt::source(&jwks_url),
               "jwt_default_policies": ["silver"]}),
    )
    .start()
    .await;
    let claims = json!({"sub": "rsa-user"});
    let r = call(&gw, &jwt::rsa(RSA_PRIVATE, Some("k1"), &claims)).await;
    assert_eq!(r.status, 200, "{}", r.dump());

    // k2 is not in the set yet: refused, and a burst of unknown kids is no burst of fetches.
    let with_k2 = jwt::rsa(RSA2_PRIVATE, Some("k2"), &claims);
    for i in 0..20 {
        let unknown = jwt::rsa(RSA2_PRIVATE, Some(&format!("made-up-{i}")), &claims);
        assert_tyk_error(&call(&gw, &unknown).await, 403, "Key not authorized");
    }
    assert_tyk_error(&call(&gw, &with_k2).await, 403, "Key not authorized");
    let fetches = idp.requests().iter().filter(|r| r.path == "/jwks").count();
    assert!(fetches <= 2, "{fetches} JWKS fetches");

    // The set rotates to k2; once the refetch pause has passed, an unknown kid fetches it.
    idp.on(
        "/jwks",
        Reply::fixed(200, json!({"keys": [k2]}).to_string()),
    );
    tokio::time::sleep(tollgate_auth_refetch_pause()).await;
    let r = call(&gw, &with_k2).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    // The set goes back to k1 only; an invalidated cache is fetched by the next token, with
    // no pause.
    let k1_only: Value = serde_json::from_str(RSA_JWKS).unwrap();
    idp.on(
        "/jwks",
        Reply::fixed(200, json!({"keys": [k1_only["keys"][0]]}).to_string()),
    );
    let flushed = admin(&gw, "DELETE", "/tyk/cache/jwks/jwt", None).await;
    assert_eq!(
        (flushed.status, &flushed.json),
        (
            200,
            &json!({"status": "ok", "message": "cache invalidated"})
        )
    );
    let r = call(&gw, &jwt::rsa(RSA_PRIVATE, Some("k1"), &claims)).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_tyk_error(&call(&gw, &with_k2).await, 403, "Key not authorized");
    let all = admin(&gw, "DELETE", "/tyk/cache/jwks", None).await;
    assert_eq!(all.status, 200);
    // A kid never selects a key of another family, and a token's own URL is never fetched.
    let hs_with_kid = jwt::hmac(Algorithm::HS256, b"k2", &claims);
    assert_tyk_error(
        &call(&gw, &hs_with_kid).await,
        403,
        "Key not authorized: Unexpected signing method",
    );
    assert_eq!(up.request_count(), 3);
}

/// The gateway's pause between fetches caused by unknown `kid`s, plus a margin.
fn tollgate_auth_refetch_pause() -> Duration {
    Duration::from_secs(11)
}

#[tokio::test]
async fn ecdsa_keys_from_pem_and_a_bad_source_refuses_only_its_api() {
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (token, public) = jwt::ecdsa(&json!({"sub": "ec-user"}));
    let gw = jwt_api(
        with_policies(gateway!(), &dir),
        &up,
        json!({"jwt_signing_method": "ecdsa", "jwt_source": jwt::source(&public),
               "jwt_default_policies": ["silver"]}),
    )
    .api(
        "broken.json",
        api_with(
            "broken",
            "/broken/",
            &up.url(),
            json!({"use_keyless": false, "enable_jwt": true, "jwt_signing_method": "rsa",
                   "jwt_source": jwt::source("not a key")}),
        ),
    )
    .start()
    .await;
    let r = call(&gw, &token).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    let (other, _) = jwt::ecdsa(&json!({"sub": "ec-user"}));
    assert_tyk_error(&call(&gw, &other).await, 403, "Key not authorized");
    gw.assert_unserved(&up, &["/broken/x"]).await;
    let log = gw.wait_stderr(&["jwt_source"]).await;
    assert!(log.contains("broken"), "{log}");
    // The secret never reaches the log.
    assert!(!gw.log().contains(SECRET));
}

#[tokio::test]
async fn scopes_map_to_policies() {
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = jwt_api(
        with_policies(gateway!(), &dir),
        &up,
        json!({"jwt_source": jwt::source(SECRET), "jwt_scope_claim_name": "scp",
               "jwt_scope_to_policy_mapping": {"read": "silver", "write": "gold",
                                               "elsewhere": "foreign"}}),
    )
    .start()
    .await;
    let token = |claims: Value| jwt::hmac(Algorithm::HS256, SECRET.as_bytes(), &claims);
    assert_eq!(
        call(&gw, &token(json!({"sub": "s1", "scp": "read"})))
            .await
            .status,
        200
    );
    // `write` maps to gold, whose quota is 2, counted for s2.
    let writer = token(json!({"sub": "s2", "scp": ["write"]}));
    for _ in 0..2 {
        assert_eq!(call(&gw, &writer).await.status, 200);
    }
    assert_tyk_error(&call(&gw, &writer).await, 403, "Quota exceeded");
    let refusals = [
        (
            json!({"sub": "s3", "scp": "nothing mapped"}),
            "key not authorized: no matching policy found in scope claim",
        ),
        // s1 has a session: a token without scopes must not keep its rights.
        (
            json!({"sub": "s1"}),
            "key not authorized: no scope or policy in token",
        ),
        (
            json!({"sub": "s4"}),
            "key not authorized: no matching policy found",
        ),
        (
            json!({"sub": "s5", "scp": "elsewhere"}),
            "key not authorized: no matching policy",
        ),
    ];
    for (claims, message) in refusals {
        assert_tyk_error(&call(&gw, &token(claims)).await, 403, message);
    }
    assert_eq!(up.request_count(), 3);
}

#[tokio::test]
async fn without_jwt_source_each_key_verifies_with_its_own_secret() {
    use tollgate_testkit::keys::{create_custom_key, session_with};
    let up = MockUpstream::start().await;
    let gw = jwt_api(gateway!(), &up, json!({"jwt_signing_method": "hmac"}))
        .start()
        .await;
    let session = session_with(&["jwt"], json!({"jwt_data": {"secret": "key-one-secret"}}));
    create_custom_key(&gw, "jwt-key-one", &session, Some(64)).await;
    let sign = |secret: &str, kid: Option<&str>, claims: Value| {
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    // Named by `kid`, or by `sub` when there is none.
    let by_kid = sign(
        "key-one-secret",
        Some("jwt-key-one"),
        json!({"sub": "anyone"}),
    );
    assert_eq!(call(&gw, &by_kid).await.status, 200);
    let by_sub = sign("key-one-secret", None, json!({"sub": "jwt-key-one"}));
    assert_eq!(call(&gw, &by_sub).await.status, 200);
    for refused in [
        sign("another secret", Some("jwt-key-one"), json!({"sub": "x"})),
        sign("key-one-secret", Some("no-such-key"), json!({"sub": "x"})),
        sign("key-one-secret", None, json!({"sub": "no-such-key"})),
    ] {
        assert_tyk_error(&call(&gw, &refused).await, 403, "Key not authorized");
    }
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn a_client_key_names_the_policy_through_jwt_client_base_field() {
    use tollgate_testkit::keys::create_custom_key;
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = jwt_api(
        with_policies(gateway!(), &dir),
        &up,
        json!({"jwt_source": jwt::source(SECRET), "jwt_client_base_field": "azp"}),
    )
    .start()
    .await;
    let client = json!({"org_id": "default", "apply_policies": ["gold"]});
    create_custom_key(&gw, "client-app", &client, Some(64)).await;
    let token = |claims: Value| jwt::hmac(Algorithm::HS256, SECRET.as_bytes(), &claims);
    // The client key's policy (gold, quota 2) is the session's.
    let t = token(json!({"sub": "u1", "azp": "client-app"}));
    for _ in 0..2 {
        assert_eq!(call(&gw, &t).await.status, 200);
    }
    assert_tyk_error(&call(&gw, &t).await, 403, "Quota exceeded");
    assert_tyk_error(
        &call(&gw, &token(json!({"sub": "u2", "azp": "unknown-app"}))).await,
        403,
        "key not authorized: no matching policy found",
    );
}
