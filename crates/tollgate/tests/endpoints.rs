//! Endpoint lists of a not-versioned API (`white_list`, `black_list`, `ignored`,
//! `method_actions` replies) and API `expiration`, against the real binary: exact statuses and
//! bodies, what the upstream received, and a path-bypass corpus against a black-listed
//! endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_testkit::keys::{KEYED_LISTEN, MSG_MISSING, with_keyed_api};
use tollgate_testkit::raw::{RawResponse, assert_tyk_error, request};
use tollgate_testkit::{Gateway, MockUpstream, extended_version, gateway};

const FORBIDDEN: &str = "Requested endpoint is forbidden";

fn lists(extended: Value) -> Value {
    extended_version(json!({"extended_paths": extended}))
}

fn simple(paths: Value) -> Value {
    json!({"version_data": {"not_versioned": true, "versions": {"Default": {
        "name": "Default", "paths": paths}}}})
}

async fn call(gw: &Gateway, method: &str, target: &str) -> RawResponse {
    Box::pin(request(gw.addr(), method, target, &[], b"")).await
}

async fn assert_forbidden(gw: &Gateway, up: &MockUpstream, method: &str, target: &str) {
    gw.assert_refused(up, (method, target), &[], b"", (403, FORBIDDEN))
        .await;
}

/// Asserts the request reached the upstream with 200, as `path` (the listen path stripped).
async fn assert_upstream(gw: &Gateway, up: &MockUpstream, method: &str, target: &str, path: &str) {
    let before = up.request_count();
    let r = call(gw, method, target).await;
    assert_eq!(r.status, 200, "{method} {target}: {}", r.dump());
    assert_eq!(up.request_count(), before + 1, "{method} {target}");
    let last = up.last();
    assert_eq!((last.method.as_str(), last.path.as_str()), (method, path));
}

#[tokio::test]
async fn white_list_with_replies_as_tyk() {
    let up = MockUpstream::start().await;
    let white = lists(json!({"white_list": [
        {"path": "/reply/{id}", "method_actions": {"GET": {"action": "reply", "code": 200,
            "data": "flump", "headers": {"x-mock": "yes"}}}},
        {"path": "/get", "method_actions": {"GET": {"action": "no_action"}}},
        {"path": "/off", "method": "GET", "disabled": true}
    ]}));
    let case = simple(json!({"white_list": ["/Foo", "/bar/{id}$"]}));
    let gw = gateway!()
        .keyless_api("w", &up, white)
        .keyless_api("c", &up, case)
        .start()
        .await;
    // Tyk's TestWhitelist.
    assert_forbidden(&gw, &up, "GET", "/w/reply/").await;
    let r = call(&gw, "GET", "/w/reply/123").await;
    assert_eq!((r.status, r.text().as_str()), (200, "flump"));
    assert_eq!(r.header("x-mock"), Some("yes"));
    assert_eq!(up.request_count(), 0, "a reply never calls the upstream");
    assert_upstream(&gw, &up, "GET", "/w/get", "/get").await;
    assert_forbidden(&gw, &up, "POST", "/w/get").await;
    assert_forbidden(&gw, &up, "POST", "/w/post").await;
    assert_forbidden(&gw, &up, "GET", "/w/off").await;
    // Case-sensitive; `$` anchors.
    assert_upstream(&gw, &up, "GET", "/c/Foo", "/Foo").await;
    assert_forbidden(&gw, &up, "GET", "/c/foo").await;
    assert_upstream(&gw, &up, "DELETE", "/c/bar/1", "/bar/1").await;
    assert_forbidden(&gw, &up, "GET", "/c/bar/1/x").await;
    // A white-listed path reached through an escaped slash would read as another one
    // upstream: not allowed.
    assert_forbidden(&gw, &up, "GET", "/c/bar/1%2F..%2F..%2Fadmin").await;
}

#[tokio::test]
async fn ignored_skips_auth_and_black_list_methods() {
    let up = MockUpstream::start().await;
    let extra = lists(json!({
        "ignored": [{"path": "/health", "method": "GET"}],
        "black_list": [{"path": "/blacklist/{id}/test", "method": "GET"}]
    }));
    let gw = with_keyed_api(gateway!(), &up.url(), extra).start().await;
    let at = |p: &str| format!("{KEYED_LISTEN}{p}");
    // Ignored: no key needed, and the upstream gets the request.
    assert_upstream(&gw, &up, "GET", &at("health"), "/health").await;
    // Other paths and methods still need a key.
    assert_tyk_error(&call(&gw, "POST", &at("health")).await, 401, MSG_MISSING);
    assert_tyk_error(&call(&gw, "GET", &at("other")).await, 401, MSG_MISSING);
    // The black-list comes before auth and only for its method.
    assert_forbidden(&gw, &up, "GET", &at("blacklist/123/test")).await;
    assert_tyk_error(
        &call(&gw, "POST", &at("blacklist/123/test")).await,
        401,
        MSG_MISSING,
    );
    assert_tyk_error(
        &call(&gw, "GET", &at("blacklist/123/different")).await,
        401,
        MSG_MISSING,
    );
}

#[tokio::test]
async fn no_spelling_of_a_black_listed_path_reaches_the_upstream() {
    let up = MockUpstream::start().await;
    let extra = simple(json!({"black_list": ["/admin/secret"]}));
    let gw = gateway!().keyless_api("b", &up, extra).start().await;
    let corpus = [
        "/b/admin/secret",
        "/b/admin/secret/",
        "/b/admin/secret/x",
        "/b/admin//secret",
        "/b//admin/secret",
        "/b/./admin/secret",
        "/b/admin/./secret",
        "/b/x/../admin/secret",
        "/b/admin/x/../secret",
        "/b/admin/secret/.",
        "/b/%61dmin/secret",
        "/b/admin/%73ecret",
        "/b/%61%64%6d%69%6e/%73%65%63%72%65%74",
        "/b/admin%2Fsecret",
        "/b/admin%2fsecret",
        "/b/admin%252Fsecret",
        "/b/%2e/admin/secret",
        "/b/%2E%2E/b/admin/secret",
        "/b/x/%2e%2e/admin/secret",
        "/b/x/..%2Fadmin/secret",
        "/b/x%2F..%2Fadmin/secret",
        "/b/admin%5Csecret",
        "/b/admin\\secret",
        "/b/ADMIN/SECRET",
        "/b/Admin/Secret",
        "/b/admin/SeCrEt",
        "/b/admin/secret;jsessionid=1",
        "/b/admin;x=1/secret",
        "/b/admin/secret;",
        "/b/admin./secret",
        "/b/admin/secret.",
        "/b/admin/secret..",
        "/b/admin%20/secret",
        "/b/admin/secret%20",
        "/b/admin/secret?x=1",
        "/b/admin/secret#frag",
        "/b/admin/%C0%AFsecret",
        "/b/admin%C0%AFsecret",
        "/b/admin%E0%80%AFsecret",
        "/b/%2561dmin/secret",
        "/b/admin/sec%72et",
        "/b/admin/..;/admin/secret",
        "/b/./x/./../admin///secret",
    ];
    assert!(corpus.len() >= 40);
    for target in corpus {
        let before = up.request_count();
        let r = call(&gw, "GET", target).await;
        assert_eq!(up.request_count(), before, "{target} reached the upstream");
        assert!(
            matches!(r.status, 400 | 403 | 404),
            "{target}: {}",
            r.dump()
        );
    }
    // Neighbours are still served.
    assert_upstream(&gw, &up, "GET", "/b/admin/public", "/admin/public").await;
    assert_upstream(&gw, &up, "GET", "/b/admins/secre", "/admins/secre").await;
}

#[tokio::test]
async fn expiration_header_then_refusal() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .keyless_api("later", &up, json!({"expiration": "2999-01-02 03:04"}))
        .keyless_api("gone", &up, json!({"expiration": "2001-01-01 00:00"}))
        .keyless_api("bad", &up, json!({"expiration": "next week"}))
        .start()
        .await;
    let r = call(&gw, "GET", "/later/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-tyk-api-expires"),
        Some("Wed, 02 Jan 2999 03:04:00 UTC")
    );
    let r = call(&gw, "GET", "/gone/x").await;
    assert_tyk_error(
        &r,
        403,
        "API has expired, please check documentation or contact administrator",
    );
    assert_eq!(r.header("x-tyk-api-expires"), None);
    assert_eq!(up.request_count(), 1);
    gw.assert_unserved(&up, &["/bad/x"]).await;
    gw.wait_stderr(&["bad.json"]).await;
}

#[tokio::test]
async fn gateway_wide_matching_options_anchor_and_fold_case() {
    let up = MockUpstream::start().await;
    let white = lists(json!({"white_list": [{"path": "/Get", "method": "GET"}]}));
    let gw = gateway!()
        .conf(
            json!({"http_server_options": {"enable_path_prefix_matching": true,
            "enable_path_suffix_matching": true}, "ignore_endpoint_case": true}),
        )
        .keyless_api("w", &up, white)
        .start()
        .await;
    assert_upstream(&gw, &up, "GET", "/w/get", "/get").await;
    assert_upstream(&gw, &up, "GET", "/w/GET", "/GET").await;
    // Anchored at both ends: neighbours are no longer allowed by the unanchored pattern.
    assert_forbidden(&gw, &up, "GET", "/w/get-all").await;
    assert_forbidden(&gw, &up, "GET", "/w/x/get").await;
}
