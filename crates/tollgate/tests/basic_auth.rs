//! Basic authentication (`use_basic_auth: true`): users are keys named
//! `org_id + username` with `basic_auth_data`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_testkit::encoding::{b64encode, basic};
use tollgate_testkit::keys::*;
use tollgate_testkit::raw::{RawResponse, assert_tyk_error};
use tollgate_testkit::{Gateway, MockUpstream, gateway};

const API: &str = "basic";
const REALM: &str = "Basic realm=\"Basic API\"";
const NOT_AUTHORISED: &str = "User not authorised";

fn basic_api(target: &str, extra: Value) -> Value {
    let mut def = keyed_api(
        API,
        "/basic/",
        target,
        json!({"name": "Basic API", "use_basic_auth": true}),
    );
    tollgate_testkit::merge_json(&mut def, extra);
    def
}

async fn start_with(up: &MockUpstream, api_extra: Value, conf: Value) -> Gateway {
    let basic = gateway!()
        .conf(conf)
        .api("basic.json", basic_api(&up.url(), api_extra));
    with_keyed_api(basic, &up.url(), json!({})).start().await
}

fn user_body(password: &str) -> Value {
    json!({
        "org_id": ORG,
        "allowance": 1000,
        "rate": 1000,
        "per": 1,
        "expires": 0,
        "quota_max": -1,
        "access_rights": rights(&[API]),
        "basic_auth_data": {"password": password},
    })
}

/// Creates the user `id` (`defaultuser` = org `default` + `user`).
async fn create_user(gw: &Gateway, id: &str, password: &str) {
    let a = admin(
        gw,
        "POST",
        &format!("/tyk/keys/{id}"),
        Some(&user_body(password)),
    )
    .await;
    assert_eq!(a.status, 200, "create {id}: {}", a.json);
    assert_eq!(a.json["key"], id, "{}", a.json);
    assert_eq!(a.json["status"], "ok", "{}", a.json);
    assert_eq!(a.json["action"], "added", "{}", a.json);
}

/// Asserts a 401 with the realm challenge, without reaching the upstream.
async fn assert_401(gw: &Gateway, up: &MockUpstream, headers: &[(&str, &str)], msg: &str) {
    let before = up.request_count();
    let r: RawResponse = call(gw, "GET", "/basic/x", headers).await;
    assert_eq!(r.status, 401, "{headers:?}: {}{}", r.head, r.text());
    assert_tyk_error(&r, 401, msg);
    assert_eq!(
        r.header("www-authenticate"),
        Some(REALM),
        "{headers:?}: {}",
        r.head
    );
    assert_eq!(
        up.request_count(),
        before,
        "{headers:?}: reached the upstream"
    );
}

async fn assert_400(gw: &Gateway, up: &MockUpstream, auth: &str, msg: &str) {
    let before = up.request_count();
    let r = call(gw, "GET", "/basic/x", &[("Authorization", auth)]).await;
    assert_eq!(r.status, 400, "{auth:?}: {}{}", r.head, r.text());
    assert_tyk_error(&r, 400, msg);
    assert_eq!(up.request_count(), before, "{auth:?}: reached the upstream");
}

async fn assert_200(gw: &Gateway, up: &MockUpstream, auth: &str) -> tollgate_testkit::Recorded {
    let before = up.request_count();
    let r = call(gw, "GET", "/basic/x", &[("Authorization", auth)]).await;
    assert_echo_ok(&r, "/x");
    assert_eq!(up.request_count(), before + 1);
    let rec = up.last();
    assert_eq!(rec.path, "/x");
    rec
}

#[tokio::test]
async fn valid_credentials_are_proxied() {
    let up = MockUpstream::start().await;
    let gw = start_with(&up, json!({}), json!({})).await;
    create_user(&gw, "defaultuser", "password").await;
    let auth = basic("user:password");
    let rec = assert_200(&gw, &up, &auth).await;
    // strip_auth_data is off: forwarded unchanged.
    assert_eq!(rec.header("authorization"), Some(auth.as_str()));
    // The scheme is case-insensitive.
    let lower = format!("basic {}", b64encode(b"user:password"));
    assert_200(&gw, &up, &lower).await;
}

#[tokio::test]
async fn missing_authorization_is_401_with_challenge() {
    let up = MockUpstream::start().await;
    let gw = start_with(&up, json!({}), json!({})).await;
    create_user(&gw, "defaultuser", "password").await;
    assert_401(&gw, &up, &[], MSG_MISSING).await;
    assert_401(&gw, &up, &[("X-Other", "1")], MSG_MISSING).await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_401() {
    let up = MockUpstream::start().await;
    let gw = start_with(&up, json!({}), json!({})).await;
    create_user(&gw, "defaultuser", "password").await;
    for creds in [
        "user:wrong",
        "user:Password",
        "user:password ",
        "user:",
        "nobody:password",
        "User:password",
        ":password",
        // Split on the first colon: password "password:more".
        "user:password:more",
    ] {
        let auth = basic(creds);
        assert_401(&gw, &up, &[("Authorization", &auth)], NOT_AUTHORISED).await;
    }
    // Still fine afterwards.
    assert_200(&gw, &up, &basic("user:password")).await;
}

#[tokio::test]
async fn password_may_contain_colons() {
    let up = MockUpstream::start().await;
    let gw = start_with(&up, json!({}), json!({})).await;
    create_user(&gw, "defaultcolon", "pa:ss:word").await;
    assert_200(&gw, &up, &basic("colon:pa:ss:word")).await;
    for creds in ["colon:pa", "colon:pa:ss", "colon:ss:word"] {
        let auth = basic(creds);
        assert_401(&gw, &up, &[("Authorization", &auth)], NOT_AUTHORISED).await;
    }
}

#[tokio::test]
async fn malformed_headers_are_400() {
    let up = MockUpstream::start().await;
    let gw = start_with(&up, json!({}), json!({})).await;
    create_user(&gw, "defaultuser", "password").await;
    assert_400(
        &gw,
        &up,
        &basic("nocolon"),
        "Attempted access with malformed header, values not in basic auth format",
    )
    .await;
    assert_400(
        &gw,
        &up,
        "Basic !!notbase64",
        "Attempted access with malformed header, auth data not encoded correctly",
    )
    .await;
    assert_400(
        &gw,
        &up,
        "Bearer x",
        "Attempted access with malformed header, header not in basic auth format",
    )
    .await;
}

#[tokio::test]
async fn plain_username_key_is_accepted() {
    let up = MockUpstream::start().await;
    let gw = start_with(&up, json!({}), json!({})).await;
    create_user(&gw, "alice", "secret-pw").await;
    let rec = assert_200(&gw, &up, &basic("alice:secret-pw")).await;
    assert_eq!(
        rec.header("authorization"),
        Some(basic("alice:secret-pw").as_str())
    );
    let auth = basic("alice:wrong");
    assert_401(&gw, &up, &[("Authorization", &auth)], NOT_AUTHORISED).await;
}

#[tokio::test]
async fn stored_password_is_never_returned() {
    let up = MockUpstream::start().await;
    let gw = start_with(&up, json!({}), json!({})).await;
    create_user(&gw, "defaultuser", "password").await;
    let a = admin(&gw, "GET", "/tyk/keys/defaultuser", None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["basic_auth_data"]["password"], "", "{}", a.json);
    let text = a.raw.text();
    assert!(!text.contains("$2"), "bcrypt hash leaked: {text}");
    assert!(!text.contains("\"password\":\"password\""), "{text}");
    // Authentication still uses the stored hash.
    assert_200(&gw, &up, &basic("user:password")).await;
}

#[tokio::test]
async fn password_update_and_delete_take_effect() {
    let up = MockUpstream::start().await;
    let gw = start_with(&up, json!({}), json!({})).await;
    create_user(&gw, "defaultuser", "password").await;
    assert_200(&gw, &up, &basic("user:password")).await;

    let a = admin(
        &gw,
        "PUT",
        "/tyk/keys/defaultuser",
        Some(&user_body("newpass")),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["action"], "modified", "{}", a.json);
    let old = basic("user:password");
    assert_401(&gw, &up, &[("Authorization", &old)], NOT_AUTHORISED).await;
    assert_200(&gw, &up, &basic("user:newpass")).await;

    let a = admin(&gw, "DELETE", "/tyk/keys/defaultuser", None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let new = basic("user:newpass");
    assert_401(&gw, &up, &[("Authorization", &new)], NOT_AUTHORISED).await;
}

#[tokio::test]
async fn inactive_user_is_rejected() {
    let up = MockUpstream::start().await;
    let gw = start_with(&up, json!({}), json!({})).await;
    let mut body = user_body("password");
    body["is_inactive"] = json!(true);
    let a = admin(&gw, "POST", "/tyk/keys/defaultuser", Some(&body)).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let before = up.request_count();
    let r = call(
        &gw,
        "GET",
        "/basic/x",
        &[("Authorization", &basic("user:password"))],
    )
    .await;
    assert_tyk_error(&r, 403, MSG_INACTIVE);
    assert_eq!(up.request_count(), before);
}

#[tokio::test]
async fn strip_auth_data_removes_basic_credentials() {
    let up = MockUpstream::start().await;
    let gw = start_with(&up, json!({"strip_auth_data": true}), json!({})).await;
    create_user(&gw, "defaultuser", "password").await;
    let before = up.request_count();
    let r = call(
        &gw,
        "GET",
        "/basic/x",
        &[
            ("Authorization", &basic("user:password")),
            ("X-Other", "kept"),
        ],
    )
    .await;
    assert_echo_ok(&r, "/x");
    assert_eq!(up.request_count(), before + 1);
    let rec = up.last();
    assert_eq!(rec.header("authorization"), None, "{:?}", rec.headers);
    assert_eq!(rec.header("x-other"), Some("kept"));
}

#[tokio::test]
async fn basic_users_survive_restart() {
    let up = MockUpstream::start().await;
    let mut gw = start_with(&up, json!({}), json!({})).await;
    create_user(&gw, "defaultuser", "password").await;
    gw.restart().await;
    assert_200(&gw, &up, &basic("user:password")).await;
    let auth = basic("user:wrong");
    assert_401(&gw, &up, &[("Authorization", &auth)], NOT_AUTHORISED).await;
    let a = admin(&gw, "GET", "/tyk/keys/defaultuser", None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["basic_auth_data"]["password"], "", "{}", a.json);
}

#[tokio::test]
async fn basic_auth_with_hashing_off() {
    let up = MockUpstream::start().await;
    let gw = start_with(&up, json!({}), json!({"hash_keys": false})).await;
    create_user(&gw, "defaultuser", "password").await;
    assert_200(&gw, &up, &basic("user:password")).await;
    let auth = basic("user:nope");
    assert_401(&gw, &up, &[("Authorization", &auth)], NOT_AUTHORISED).await;
}
