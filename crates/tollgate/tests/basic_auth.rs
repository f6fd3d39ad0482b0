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

/// A user's session: [`session_for`] the basic API with the password.
fn user_body(password: &str) -> Value {
    session_with(&[API], json!({"basic_auth_data": {"password": password}}))
}

/// [`start_with`] a new upstream, and the user `defaultuser` (`user`,
/// password `password`).
async fn start_user(api_extra: Value, conf: Value) -> (MockUpstream, Gateway) {
    let up = MockUpstream::start().await;
    let gw = start_with(&up, api_extra, conf).await;
    create_user(&gw, "defaultuser", "password").await;
    (up, gw)
}

/// Asserts `creds` get 401 `User not authorised` (see [`assert_401`]).
async fn assert_not_authorised(gw: &Gateway, up: &MockUpstream, creds: &str) {
    let auth = basic(creds);
    assert_401(gw, up, &[("Authorization", &auth)], NOT_AUTHORISED).await;
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
    let (up, gw) = start_user(json!({}), json!({})).await;
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
    let (up, gw) = start_user(json!({}), json!({})).await;
    assert_401(&gw, &up, &[], MSG_MISSING).await;
    assert_401(&gw, &up, &[("X-Other", "1")], MSG_MISSING).await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_401() {
    let (up, gw) = start_user(json!({}), json!({})).await;
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
        assert_not_authorised(&gw, &up, creds).await;
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
        assert_not_authorised(&gw, &up, creds).await;
    }
}

#[tokio::test]
async fn malformed_headers_are_400() {
    let (up, gw) = start_user(json!({}), json!({})).await;
    for (auth, what) in [
        (basic("nocolon"), "values not in basic auth format"),
        (
            "Basic !!notbase64".to_owned(),
            "auth data not encoded correctly",
        ),
        ("Bearer x".to_owned(), "header not in basic auth format"),
    ] {
        let msg = format!("Attempted access with malformed header, {what}");
        assert_400(&gw, &up, &auth, &msg).await;
    }
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
    assert_not_authorised(&gw, &up, "alice:wrong").await;
}

#[tokio::test]
async fn stored_password_is_never_returned() {
    let (up, gw) = start_user(json!({}), json!({})).await;
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
    let (up, gw) = start_user(json!({}), json!({})).await;
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
    assert_not_authorised(&gw, &up, "user:password").await;
    assert_200(&gw, &up, &basic("user:newpass")).await;

    let a = admin(&gw, "DELETE", "/tyk/keys/defaultuser", None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_not_authorised(&gw, &up, "user:newpass").await;
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
    let (up, gw) = start_user(json!({"strip_auth_data": true}), json!({})).await;
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
    let (up, mut gw) = start_user(json!({}), json!({})).await;
    gw.restart().await;
    assert_200(&gw, &up, &basic("user:password")).await;
    assert_not_authorised(&gw, &up, "user:wrong").await;
    let a = admin(&gw, "GET", "/tyk/keys/defaultuser", None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["basic_auth_data"]["password"], "", "{}", a.json);
}

#[tokio::test]
async fn basic_auth_with_hashing_off() {
    let (up, gw) = start_user(json!({}), json!({"hash_keys": false})).await;
    assert_200(&gw, &up, &basic("user:password")).await;
    assert_not_authorised(&gw, &up, "user:nope").await;
}
