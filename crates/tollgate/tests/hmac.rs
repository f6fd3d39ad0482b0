//! HMAC request signatures against the real binary: a key made with `hmac_enabled` gets a
//! secret; requests signed with it over `(request-target)`, `Date` and a header pass; tampered
//! headers, paths and signatures, other secrets, refused algorithms, replays outside the clock
//! skew and missing dates get Tyk's one 400.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use serde_json::json;
use tollgate_auth::hmac::{self, Algorithm, SignatureParams};
use tollgate_testkit::keys::{create_key, get_session, session_with};
use tollgate_testkit::raw::{RawResponse, assert_tyk_error, get};
use tollgate_testkit::{Gateway, MockUpstream, api_with, gateway};

const REFUSED: &str = "Authorization field missing, malformed or invalid";

struct Signer {
    key: String,
    secret: String,
}

impl Signer {
    /// `Authorization` for a GET of `path` with `date`, signing `headers` with `alg`.
    fn authorization(
        &self,
        alg: &str,
        headers: &str,
        path: &str,
        date: &str,
        custom: &str,
    ) -> String {
        // The signing string does not depend on the algorithm (which may be one the gateway
        // refuses).
        let params = SignatureParams::parse(&format!(
            r#"keyId="{}",algorithm="hmac-sha256",headers="{headers}",signature="x""#,
            self.key
        ))
        .unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("date", date.parse().unwrap());
        h.insert("x-custom", custom.parse().unwrap());
        let signed = hmac::signing_string(&params, "GET", path, &h);
        let algorithm = Algorithm::from_name(alg).unwrap_or(Algorithm::Sha256);
        let sig = hmac::sign(algorithm, self.secret.as_bytes(), &signed);
        // Query-escaped, as Tyk's clients send it.
        let escaped = sig
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        format!(
            r#"Signature keyId="{}",algorithm="{alg}",headers="{headers}",signature="{escaped}""#,
            self.key
        )
    }
}

fn http_date(offset: Duration, past: bool) -> String {
    let now = SystemTime::now();
    httpdate::fmt_http_date(if past { now - offset } else { now + offset })
}

async fn call(
    gw: &Gateway,
    path: &str,
    auth: Option<&str>,
    date: Option<&str>,
    custom: &str,
) -> RawResponse {
    let mut headers = vec![("X-Custom", custom)];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    if let Some(d) = date {
        headers.push(("Date", d));
    }
    get(gw.addr(), path, &headers).await
}

#[tokio::test]
async fn signed_requests_pass_and_every_tampering_is_refused() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .api(
            "hmac.json",
            api_with(
                "hmac",
                "/hmac/",
                &up.url(),
                json!({"use_keyless": false, "enable_signature_checking": true,
                       "hmac_allowed_clock_skew": 5000,
                       "hmac_allowed_algorithms": ["hmac-sha256", "hmac-sha512"]}),
            ),
        )
        .start()
        .await;
    let (key, _) = create_key(&gw, &session_with(&["hmac"], json!({"hmac_enabled": true}))).await;
    let secret = get_session(&gw, &key).await["hmac_string"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!secret.is_empty(), "no secret was made for the key");
    let signer = Signer { key, secret };
    let now = http_date(Duration::ZERO, true);
    let all = "(request-target) date x-custom";

    for alg in ["hmac-sha256", "hmac-sha512"] {
        let auth = signer.authorization(alg, all, "/hmac/x", &now, "v1");
        let r = call(&gw, "/hmac/x", Some(&auth), Some(&now), "v1").await;
        assert_eq!(r.status, 200, "{alg}: {}", r.dump());
    }
    // Lower-case escapes (.NET clients) verify too.
    let auth = signer.authorization("hmac-sha256", all, "/hmac/x", &now, "v1");
    let lower = auth
        .replace("%2B", "%2b")
        .replace("%2F", "%2f")
        .replace("%3D", "%3d");
    assert_eq!(
        call(&gw, "/hmac/x", Some(&lower), Some(&now), "v1")
            .await
            .status,
        200
    );
    let served = up.request_count();
    assert_eq!(served, 3);

    let stale = http_date(Duration::from_secs(30), true);
    let ahead = http_date(Duration::from_secs(30), false);
    let wrong = Signer {
        key: signer.key.clone(),
        secret: "not-the-secret".into(),
    };
    let unknown = Signer {
        key: "no-such-key".into(),
        secret: signer.secret.clone(),
    };
    let signed =
        |alg: &str, path: &str, date: &str| signer.authorization(alg, all, path, date, "v1");
    let cases: Vec<(String, Option<String>, String)> = vec![
        // (authorization, date sent, x-custom sent)
        (
            signed("hmac-sha256", "/hmac/x", &now),
            Some(now.clone()),
            "v2".into(),
        ),
        (
            signed("hmac-sha256", "/hmac/other", &now),
            Some(now.clone()),
            "v1".into(),
        ),
        (
            wrong.authorization("hmac-sha256", all, "/hmac/x", &now, "v1"),
            Some(now.clone()),
            "v1".into(),
        ),
        (
            unknown.authorization("hmac-sha256", all, "/hmac/x", &now, "v1"),
            Some(now.clone()),
            "v1".into(),
        ),
        (
            signed("hmac-sha1", "/hmac/x", &now),
            Some(now.clone()),
            "v1".into(),
        ),
        (
            signed("hmac-md5", "/hmac/x", &now),
            Some(now.clone()),
            "v1".into(),
        ),
        (
            signed("hmac-sha256", "/hmac/x", &stale),
            Some(stale.clone()),
            "v1".into(),
        ),
        (
            signed("hmac-sha256", "/hmac/x", &ahead),
            Some(ahead.clone()),
            "v1".into(),
        ),
        (signed("hmac-sha256", "/hmac/x", &now), None, "v1".into()),
        ("Signature garbage".into(), Some(now.clone()), "v1".into()),
        (
            signed("hmac-sha256", "/hmac/x", &now).replace("keyId", "kid"),
            Some(now.clone()),
            "v1".into(),
        ),
    ];
    for (i, (auth, date, custom)) in cases.iter().enumerate() {
        let r = call(&gw, "/hmac/x", Some(auth), date.as_deref(), custom).await;
        assert!(
            r.status == 400 && r.text().contains(REFUSED),
            "case {i}: {}",
            r.dump()
        );
    }
    assert_tyk_error(
        &call(&gw, "/hmac/x", None, Some(&now), "v1").await,
        400,
        REFUSED,
    );
    assert_eq!(
        up.request_count(),
        served,
        "a refused request reached the upstream"
    );

    // A key without `hmac_enabled` cannot sign, whatever it sends.
    let (plain, _) = create_key(&gw, &session_with(&["hmac"], json!({}))).await;
    let forged = Signer {
        key: plain,
        secret: String::new(),
    };
    let auth = forged.authorization("hmac-sha256", all, "/hmac/x", &now, "v1");
    assert_tyk_error(
        &call(&gw, "/hmac/x", Some(&auth), Some(&now), "v1").await,
        400,
        REFUSED,
    );
    // The secret never reaches the log.
    assert!(!gw.log().contains(&signer.secret));
}

#[tokio::test]
async fn an_unknown_allowed_algorithm_refuses_the_definition() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .with_api("ok", "/ok/", &up.url())
        .api(
            "rsa.json",
            api_with(
                "rsa",
                "/rsa/",
                &up.url(),
                json!({"use_keyless": false, "enable_signature_checking": true,
                       "hmac_allowed_algorithms": ["rsa-sha256"]}),
            ),
        )
        .start()
        .await;
    gw.assert_unserved(&up, &["/rsa/x"]).await;
    let log = gw.wait_stderr(&["hmac_allowed_algorithms[0]"]).await;
    assert!(
        log.contains("RSA signatures are not supported yet"),
        "{log}"
    );
}

#[tokio::test]
async fn a_policy_with_hmac_enabled_makes_its_keys_sign() {
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.json");
    let rights = json!({"hmac": {"api_id": "hmac", "api_name": "hmac", "versions": ["Default"]}});
    std::fs::write(
        &policies,
        json!({"signers": {"org_id": "default", "rate": 100, "per": 1, "quota_max": -1,
                           "hmac_enabled": true, "access_rights": rights}})
        .to_string(),
    )
    .unwrap();
    let gw = gateway!()
        .conf(json!({"policies": {"policy_record_name": policies}}))
        .api(
            "hmac.json",
            api_with(
                "hmac",
                "/hmac/",
                &up.url(),
                json!({"use_keyless": false, "enable_signature_checking": true}),
            ),
        )
        .start()
        .await;
    let body = json!({"org_id": "default", "apply_policies": ["signers"]});
    let (key, _) = create_key(&gw, &body).await;
    let session = get_session(&gw, &key).await;
    let secret = session["hmac_string"].as_str().unwrap().to_owned();
    assert!(!secret.is_empty(), "{session}");
    let signer = Signer { key, secret };
    let now = http_date(Duration::ZERO, true);
    let auth = signer.authorization("hmac-sha1", "date", "/hmac/x", &now, "v");
    let r = call(&gw, "/hmac/x", Some(&auth), Some(&now), "v").await;
    assert_eq!(r.status, 200, "{}", r.dump());
}
