//! Versioned APIs against the real binary: the version read from a header, a query parameter
//! or the first path segment; default and fallback versions; stripping; per-version rules and
//! upstreams (`override_target`); version expiry; the key's allowed versions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_testkit::keys::{KEYED, KEYED_LISTEN, call, create_key, session_with, with_keyed_api};
use tollgate_testkit::raw::{RawResponse, assert_tyk_error};
use tollgate_testkit::{Gateway, MockUpstream, gateway};

const UNKNOWN: &str = "This API version does not seem to exist";
const NO_VERSION: &str = "Version information not found";
const EXPIRED: &str =
    "Api Version has expired, please check documentation or contact administrator";
const FORBIDDEN: &str = "Requested endpoint is forbidden";

/// A versioned definition: `definition` as given, versions `v1` (black-lists `/old-only`) and
/// `v2` (its own upstream `v2_target`, a global header), `extra` merged in.
fn versioned(definition: Value, v2_target: &str, extra: Value) -> Value {
    let mut def = json!({
        "definition": definition,
        "version_data": {"not_versioned": false, "default_version": "v1", "versions": {
            "v1": {"name": "v1", "use_extended_paths": true, "extended_paths": {
                "black_list": [{"path": "/old-only", "method": "GET"}]}},
            "v2": {"name": "v2", "override_target": v2_target,
                   "global_headers": {"X-Version": "2"}}
        }}
    });
    tollgate_testkit::merge_json(&mut def, extra);
    def
}

async fn get(gw: &Gateway, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    call(gw, "GET", target, headers).await
}

#[tokio::test]
async fn header_versions_pick_rules_and_upstream() {
    let v1 = MockUpstream::start().await;
    let v2 = MockUpstream::start().await;
    let def = versioned(
        json!({"location": "header", "key": "x-api-version"}),
        &v2.url(),
        json!({}),
    );
    let gw = gateway!().keyless_api("h", &v1, def).start().await;
    // No version: the default one, with its black-list.
    gw.assert_routed(&v1, "/h/a", &[], "/a").await;
    assert_tyk_error(&get(&gw, "/h/old-only", &[]).await, 403, FORBIDDEN);
    // v2: its own upstream and rules; the header is kept (no strip).
    let r = get(&gw, "/h/old-only", &[("x-api-version", "v2")]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    let got = v2.last();
    assert_eq!(got.path, "/old-only");
    assert_eq!(got.header("x-version"), Some("2"));
    assert_eq!(got.header("x-api-version"), Some("v2"));
    assert_eq!(v1.request_count(), 1);
    // Unknown version, no fallback.
    let before = (v1.request_count(), v2.request_count());
    assert_tyk_error(
        &get(&gw, "/h/a", &[("x-api-version", "v9")]).await,
        403,
        UNKNOWN,
    );
    assert_eq!((v1.request_count(), v2.request_count()), before);
}

#[tokio::test]
async fn query_versions_strip_and_fall_back() {
    let v1 = MockUpstream::start().await;
    let v2 = MockUpstream::start().await;
    let def = versioned(
        json!({"location": "url-param", "key": "version", "strip_versioning_data": true}),
        &v2.url(),
        json!({"version_data": {"fallback_to_default": true}}),
    );
    let gw = gateway!().keyless_api("q", &v1, def).start().await;
    let r = get(&gw, "/q/items?version=v2&x=1", &[]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(
        v2.last().uri,
        "/items?x=1",
        "the version parameter is stripped"
    );
    // Unknown: the default serves it, and the unknown value is not taken for a version.
    gw.assert_routed(&v1, "/q/items?version=nope", &[], "/items?version=nope")
        .await;
    assert_eq!(v2.request_count(), 1);
}

#[tokio::test]
async fn url_versions_with_and_without_strip() {
    let v1 = MockUpstream::start().await;
    let v2 = MockUpstream::start().await;
    let stripped = versioned(
        json!({"location": "url", "strip_versioning_data": true}),
        &v2.url(),
        json!({}),
    );
    let kept = versioned(json!({"location": "url"}), &v2.url(), json!({}));
    let gw = gateway!()
        .keyless_api("us", &v1, stripped)
        .keyless_api("uk", &v1, kept)
        .start()
        .await;
    gw.assert_routed(&v2, "/us/v2/users?x=1", &[], "/users?x=1")
        .await;
    // The first segment names the version; an unknown one is refused.
    assert_tyk_error(&get(&gw, "/us/users", &[]).await, 403, UNKNOWN);
    // No segment at all: the default.
    gw.assert_routed(&v1, "/us/", &[], "/").await;
    // Stripped: the lists see the path without the version.
    assert_tyk_error(&get(&gw, "/us/v1/old-only", &[]).await, 403, FORBIDDEN);
    // Kept: the upstream gets the segment, and patterns also read the path without it.
    assert_tyk_error(&get(&gw, "/uk/v1/old-only", &[]).await, 403, FORBIDDEN);
    gw.assert_routed(&v1, "/uk/v1/other", &[], "/v1/other")
        .await;
}

#[tokio::test]
async fn no_default_expiry_and_bad_definitions() {
    let up = MockUpstream::start().await;
    let no_default = versioned(
        json!({"location": "header"}),
        &up.url(),
        json!({"version_data": {"default_version": ""}}),
    );
    let dated = json!({
        "definition": {"location": "header"},
        "version_data": {"not_versioned": false, "default_version": "current", "versions": {
            "old": {"name": "old", "expires": "2020-01-01 00:00"},
            "current": {"name": "current", "expires": "2099-06-30 12:00"}}}
    });
    let bad_location = versioned(json!({"location": "cookie"}), &up.url(), json!({}));
    let no_key = versioned(json!({"location": "url-param"}), &up.url(), json!({}));
    let gw = gateway!()
        .keyless_api("nd", &up, no_default)
        .keyless_api("dated", &up, dated)
        .keyless_api("badloc", &up, bad_location)
        .keyless_api("nokey", &up, no_key)
        .start()
        .await;
    // The default header name is x-api-version.
    assert_tyk_error(&get(&gw, "/nd/a", &[]).await, 403, NO_VERSION);
    assert_eq!(
        get(&gw, "/nd/a", &[("X-Api-Version", "v1")]).await.status,
        200
    );
    let before = up.request_count();
    assert_tyk_error(
        &get(&gw, "/dated/a", &[("x-api-version", "old")]).await,
        403,
        EXPIRED,
    );
    assert_eq!(up.request_count(), before);
    let r = get(&gw, "/dated/a", &[]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(
        r.header("x-tyk-api-expires"),
        Some("Tue, 30 Jun 2099 12:00:00 UTC")
    );
    gw.assert_unserved(&up, &["/badloc/a", "/nokey/a"]).await;
    gw.wait_stderr(&[
        "badloc.json: field `definition.location`",
        "nokey.json: field `definition.key`",
    ])
    .await;
}

#[tokio::test]
async fn a_key_reaches_only_its_versions() {
    let up = MockUpstream::start().await;
    let extra = versioned(json!({"location": "header"}), &up.url(), json!({}));
    let gw = with_keyed_api(gateway!(), &up.url(), extra).start().await;
    let rights = json!({"access_rights": {KEYED: {"api_id": KEYED, "api_name": KEYED,
        "versions": ["v1"]}}});
    let (key, _) = create_key(&gw, &session_with(&[KEYED], rights)).await;
    let at = format!("{KEYED_LISTEN}a");
    let r = get(&gw, &at, &[("Authorization", &key)]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    let r = get(
        &gw,
        &at,
        &[("Authorization", &key), ("x-api-version", "v2")],
    )
    .await;
    assert_tyk_error(&r, 403, "Access to this API has been disallowed");
}

#[tokio::test]
async fn a_not_versioned_api_honours_its_versions_target_and_expiry() {
    let up = MockUpstream::start().await;
    let other = MockUpstream::start().await;
    let retarget = json!({"version_data": {"not_versioned": true, "versions": {"Default": {
        "name": "Default", "override_target": other.url()}}}});
    let gone = json!({"version_data": {"not_versioned": true, "versions": {"Default": {
        "name": "Default", "expires": "2001-02-03 04:05"}}}});
    let gw = gateway!()
        .keyless_api("rt", &up, retarget)
        .keyless_api("gone", &up, gone)
        .start()
        .await;
    gw.assert_routed(&other, "/rt/x", &[], "/x").await;
    assert_tyk_error(&get(&gw, "/gone/x", &[]).await, 403, EXPIRED);
    assert_eq!(up.request_count(), 0);
}
