//! Mutual TLS against the real binary: an API with `use_mutual_tls_auth` lets in only clients
//! that present one of its `client_certificates` (by SHA-256 id or PEM file) in the TLS
//! handshake; no certificate, another one or an expired one is refused with Tyk's answers,
//! while the other APIs on the same port need none. With `use_standard_auth` too, the key is
//! still required. Certificate-bound keys (`auth.use_certificate`) are found by the
//! certificate alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_testkit::raw::{assert_tyk_error, get};
use tollgate_testkit::tls::{Leaf, TestCa};
use tollgate_testkit::{MockUpstream, api_with, gateway};

fn sha256_id(leaf: &Leaf) -> String {
    tollgate_tls::client_auth::fingerprint(&leaf.der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn client(ca: &TestCa, gw: &tollgate_testkit::Gateway, identity: Option<&Leaf>) -> reqwest::Client {
    let mut b = ca.client_builder().resolve("a.test", gw.addr());
    if let Some(leaf) = identity {
        let pem = format!("{}{}", leaf.cert_pem, leaf.key_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// Status and body of a GET through `client`.
async fn fetch(
    client: &reqwest::Client,
    gw: &tollgate_testkit::Gateway,
    path: &str,
) -> (u16, Value) {
    let r = client
        .get(format!("https://a.test:{}{path}", gw.port()))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn only_allowed_client_certificates_get_in() {
    let ca = TestCa::default();
    let dir = tempfile::tempdir().unwrap();
    let server = ca.issue(&["a.test"]);
    let (crt, key) = server.write(dir.path(), "server");
    let by_id = ca.issue(&["client-by-id"]);
    let by_file = ca.issue(&["client-by-file"]);
    let by_file_path = dir.path().join("allowed.pem");
    std::fs::write(&by_file_path, &by_file.cert_pem).unwrap();
    let stranger = ca.issue(&["client-stranger"]);
    let expired = ca.issue_expired(&["client-expired"]);
    let up = MockUpstream::start().await;
    let mtls = |extra: Value| {
        let mut def = json!({"use_keyless": false, "use_mutual_tls_auth": true,
            "client_certificates": [format!("5e9d9544a1dcd60001d0ed20{}", sha256_id(&by_id)),
                                    by_file_path, sha256_id(&expired)]});
        tollgate_testkit::merge_json(&mut def, extra);
        def
    };
    let gw = gateway!()
        .conf(json!({"http_server_options": {"use_ssl": true,
            "certificates": [{"domain_name": "a.test", "cert_file": crt, "key_file": key}]}}))
        .serves_tls()
        .api("mtls.json", api_with("mtls", "/mtls/", &up.url(), mtls(json!({}))))
        .api(
            "both.json",
            api_with("both", "/both/", &up.url(), mtls(json!({"use_standard_auth": true}))),
        )
        .api(
            "nobody.json",
            api_with("nobody", "/nobody/", &up.url(),
                json!({"use_keyless": false, "use_mutual_tls_auth": true, "client_certificates": []})),
        )
        .api(
            "bound.json",
            api_with("bound", "/bound/", &up.url(),
                json!({"use_keyless": false, "auth": {"use_certificate": true}})),
        )
        .with_api("open", "/open/", &up.url())
        .start()
        .await;

    for allowed in [&by_id, &by_file] {
        let (status, body) = fetch(&client(&ca, &gw, Some(allowed)), &gw, "/mtls/x").await;
        assert_eq!(status, 200, "{body}");
    }
    let served = up.request_count();
    assert_eq!(served, 2);
    let refusals = [
        (None, 401, "Client certificate required"),
        (
            Some(&stranger),
            403,
            "Access to this API has been disallowed",
        ),
        (Some(&expired), 403, "Certificate has expired"),
    ];
    for (identity, status, message) in refusals {
        let got = fetch(&client(&ca, &gw, identity), &gw, "/mtls/x").await;
        assert_eq!(got, (status, json!({"error": message})));
    }
    assert_eq!(
        up.request_count(),
        served,
        "a refused client reached the upstream"
    );

    // Another API on the same port needs no certificate, and ignores one.
    assert_eq!(fetch(&client(&ca, &gw, None), &gw, "/open/x").await.0, 200);
    assert_eq!(
        fetch(&client(&ca, &gw, Some(&stranger)), &gw, "/open/x")
            .await
            .0,
        200
    );
    // The certificate and the key: an allowed certificate without a key is still refused.
    let got = fetch(&client(&ca, &gw, Some(&by_id)), &gw, "/both/x").await;
    assert_eq!(got, (401, json!({"error": "Authorization field missing"})));
    // Certificate-bound keys: a key made for a certificate is found by it, without a token.
    let admin = client(&ca, &gw, None);
    let rights =
        json!({"bound": {"api_id": "bound", "api_name": "bound", "versions": ["Default"]}});
    for leaf in [&by_id, &expired] {
        let made: Value = admin
            .post(format!("https://a.test:{}/tyk/keys", gw.port()))
            .header("x-tyk-authorization", gw.secret())
            .json(&json!({"org_id": "default", "certificate": sha256_id(leaf),
                          "access_rights": rights}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(made["action"], "added", "{made}");
    }
    let (status, body) = fetch(&client(&ca, &gw, Some(&by_id)), &gw, "/bound/x").await;
    assert_eq!(status, 200, "{body}");
    let bound_refusals = [
        (None, 401, "Client certificate required"),
        (
            Some(&stranger),
            403,
            "Access to this API has been disallowed",
        ),
        (Some(&expired), 403, "Certificate has expired"),
    ];
    for (identity, status, message) in bound_refusals {
        let got = fetch(&client(&ca, &gw, identity), &gw, "/bound/x").await;
        assert_eq!(got, (status, json!({"error": message})));
    }
    // A definition that allows no certificate is refused, the others load.
    let (status, _) = fetch(&client(&ca, &gw, Some(&by_id)), &gw, "/nobody/x").await;
    assert_eq!(status, 404);
    let log = gw.wait_stderr(&["client_certificates"]).await;
    assert!(log.contains("at least one allowed certificate"), "{log}");
}

#[tokio::test]
async fn without_tls_a_mutual_tls_api_refuses_everyone() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .api(
            "mtls.json",
            api_with(
                "mtls",
                "/mtls/",
                &up.url(),
                json!({"use_keyless": false,
                "use_mutual_tls_auth": true, "client_certificates": ["ab".repeat(32)]}),
            ),
        )
        .start()
        .await;
    let r = get(gw.addr(), "/mtls/x", &[]).await;
    assert_tyk_error(&r, 401, "Client certificate required");
    assert_eq!(up.request_count(), 0);
}
