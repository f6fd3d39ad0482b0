//! Header transforms of a not-versioned API (`global_headers`, `global_headers_remove`,
//! `transform_headers`, `transform_response_headers`, `global_response_headers(_remove)`) with
//! `$tyk_meta` / `$tyk_context` values, against the real binary: what the upstream received
//! and what the client got back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_testkit::keys::{
    KEYED, KEYED_LISTEN, MSG_MISSING, call, create_key, session_with, with_keyed_api,
};
use tollgate_testkit::raw::assert_tyk_error;
use tollgate_testkit::{Gateway, MockUpstream, Reply, api_with, gateway};

fn version(v: Value) -> Value {
    let mut version = json!({"name": "Default", "use_extended_paths": true});
    tollgate_testkit::merge_json(&mut version, v);
    json!({"version_data": {"not_versioned": true, "versions": {"Default": version}}})
}

/// Waits until the gateway's stderr contains `needle` (5 s).
async fn wait_log(gw: &Gateway, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = gw.stderr();
        if log.contains(needle) {
            return log;
        }
        assert!(Instant::now() < deadline, "stderr lacks {needle:?}:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn request_and_response_headers_are_edited_as_tyk() {
    let up = MockUpstream::start().await;
    up.on(
        "/fixed",
        Reply::fixed(200, "ok")
            .header("x-upstream-secret", "s")
            .header("x-kept", "k")
            .header("x-internal-trace", "t"),
    );
    let extra = json!({"enable_context_vars": true});
    let mut extra_v = version(json!({
        "global_headers": {"X-Global": "g", "X-Tier": "$tyk_meta.tier",
                           "X-Client": "$tyk_context.remote_addr"},
        "global_headers_remove": ["X-Drop"],
        "global_response_headers": {"X-Served-By": "tollgate"},
        "global_response_headers_remove": ["X-Internal-Trace"],
        "extended_paths": {
            "transform_headers": [
                {"path": "/get", "method": "GET", "delete_headers": ["Authorization"],
                 "add_headers": {"X-Endpoint": "e-$tyk_context.headers_X_Device",
                                 "X-Meta-Missing": "[$tyk_meta.nope]"}},
                {"path": "/off", "method": "GET", "disabled": true,
                 "add_headers": {"X-Off": "1"}}
            ],
            "transform_response_headers": [
                {"path": "/fixed", "method": "GET", "delete_headers": ["X-Upstream-Secret"],
                 "add_headers": {"X-Resp": "r-$tyk_meta.tier"}}
            ]
        }
    }));
    tollgate_testkit::merge_json(&mut extra_v, extra);
    let gw = with_keyed_api(gateway!(), &up.url(), extra_v).start().await;
    let (key, _) = create_key(
        &gw,
        &session_with(&[KEYED], json!({"meta_data": {"tier": "gold"}})),
    )
    .await;
    let at = |p: &str| format!("{KEYED_LISTEN}{p}");

    // Global then endpoint edits; variables from the key and the request as it arrived.
    let r = call(
        &gw,
        "GET",
        &at("get"),
        &[
            ("Authorization", &key),
            ("X-Drop", "secret"),
            ("X-Device", "phone"),
            ("X-Real-IP", "10.9.8.7"),
            ("X-Global", "from-client"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.dump());
    let got = up.last();
    assert_eq!(got.header("x-global"), Some("g"), "a set header overwrites");
    assert_eq!(got.header("x-tier"), Some("gold"));
    assert_eq!(got.header("x-client"), Some("10.9.8.7"));
    assert_eq!(got.header("x-drop"), None);
    assert_eq!(got.header("x-endpoint"), Some("e-phone"));
    assert_eq!(got.header("x-meta-missing"), Some("[]"));
    assert_eq!(got.header("authorization"), None, "the endpoint deleted it");
    // The global response edits apply to every upstream response.
    assert_eq!(r.header("x-served-by"), Some("tollgate"));

    // Another method on the same path: only the global edits.
    let r = call(&gw, "POST", &at("get"), &[("Authorization", &key)]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    let got = up.last();
    assert_eq!(got.header("x-global"), Some("g"));
    assert_eq!(got.header("x-endpoint"), None);
    assert!(got.header("authorization").is_some());

    // A disabled entry does nothing.
    call(&gw, "GET", &at("off"), &[("Authorization", &key)]).await;
    assert_eq!(up.last().header("x-off"), None);

    // Response edits: the endpoint's, then the global ones.
    let r = call(&gw, "GET", &at("fixed"), &[("Authorization", &key)]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(r.header("x-upstream-secret"), None);
    assert_eq!(r.header("x-internal-trace"), None);
    assert_eq!(r.header("x-kept"), Some("k"));
    assert_eq!(r.header("x-resp"), Some("r-gold"));
    assert_eq!(r.header("x-served-by"), Some("tollgate"));

    // A refusal is the gateway's own answer: no transforms, and nothing forwarded.
    let before = up.request_count();
    let r = call(&gw, "GET", &at("fixed"), &[]).await;
    assert_tyk_error(&r, 401, MSG_MISSING);
    assert_eq!(r.header("x-served-by"), None);
    assert_eq!(up.request_count(), before);
}

#[tokio::test]
async fn keyless_values_and_forwarded_for_removal() {
    let up = MockUpstream::start().await;
    let plain = version(json!({
        "global_headers": {"X-Who": "[$tyk_meta.user][$tyk_context.remote_addr]"}
    }));
    let hidden = version(json!({"global_headers_remove": ["X-Forwarded-For"]}));
    let gw = gateway!()
        .api("plain.json", api_with("plain", "/plain/", &up.url(), plain))
        .api(
            "hidden.json",
            api_with("hidden", "/hidden/", &up.url(), hidden),
        )
        .start()
        .await;
    // Keyless: no metadata; context variables are off without `enable_context_vars`.
    let r = call(&gw, "GET", "/plain/x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    let got = up.last();
    assert_eq!(got.header("x-who"), Some("[][]"));
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
    // Removing X-Forwarded-For globally hides the client from the upstream entirely.
    let r = call(&gw, "GET", "/hidden/x", &[("X-Forwarded-For", "1.2.3.4")]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(up.last().header("x-forwarded-for"), None);
}

#[tokio::test]
async fn a_bad_transform_refuses_only_its_definition() {
    let up = MockUpstream::start().await;
    let bad_name = version(json!({"global_headers": {"Bad Name": "x"}}));
    let secret = version(json!({"extended_paths": {"transform_headers": [
        {"path": "/x", "method": "GET", "add_headers": {"X-Token": "$secret_env.TOKEN"}}]}}));
    let no_method = version(json!({"extended_paths": {"transform_response_headers": [
        {"path": "/x", "add_headers": {"X-A": "1"}}]}}));
    let gw = gateway!()
        .api(
            "badname.json",
            api_with("badname", "/badname/", &up.url(), bad_name),
        )
        .api(
            "secret.json",
            api_with("secret", "/secret/", &up.url(), secret),
        )
        .api(
            "nomethod.json",
            api_with("nomethod", "/nomethod/", &up.url(), no_method),
        )
        .with_api("good", "/good/", &up.url())
        .start()
        .await;
    for lp in ["/badname/x", "/secret/x", "/nomethod/x"] {
        assert_tyk_error(&call(&gw, "GET", lp, &[]).await, 404, "Not Found");
    }
    assert_eq!(call(&gw, "GET", "/good/x", &[]).await.status, 200);
    let log = wait_log(&gw, "nomethod.json").await;
    for needle in [
        "badname.json: field `version_data.versions.Default.global_headers.Bad Name`",
        "secret.json: field `version_data.versions.Default.extended_paths.transform_headers[0].add_headers.X-Token`",
        "nomethod.json: field `version_data.versions.Default.extended_paths.transform_response_headers[0].method`",
    ] {
        assert!(log.contains(needle), "{needle} not in:\n{log}");
    }
}
