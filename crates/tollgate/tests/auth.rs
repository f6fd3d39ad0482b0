//! Request-time standard (auth token) authentication: where the key is
//! read from, stripping it, and the checks a key must pass, in order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_testkit::encoding::{cookie_pairs, pct_encode, query_pairs};
use tollgate_testkit::keys::*;
use tollgate_testkit::raw::{RawResponse, assert_tyk_error};
use tollgate_testkit::{Gateway, MockUpstream, api_def, gateway};

const API: &str = "keyed";

/// A gateway with the keyed API `keyed` on /api/ (deep-merged with
/// `api_extra`) and an unrelated keyed API `other` on /other/.
async fn start(up: &MockUpstream, api_extra: Value, conf: Value) -> Gateway {
    let keyed = with_keyed_api(gateway!().conf(conf), &up.url(), api_extra);
    with_other_api(keyed, &up.url()).start().await
}

/// Sends a request and asserts the gateway rejected it with `status` /
/// `message` without contacting the upstream.
async fn assert_rejected(
    gw: &Gateway,
    up: &MockUpstream,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    status: u16,
    message: &str,
) {
    let before = up.request_count();
    let r = call(gw, method, target, headers).await;
    assert_eq!(
        r.status,
        status,
        "{method} {target} {headers:?}:\n{}{}",
        r.head,
        r.text()
    );
    assert_tyk_error(&r, status, message);
    assert_eq!(
        up.request_count(),
        before,
        "{method} {target} {headers:?}: a rejected request reached the upstream"
    );
}

/// Sends a request, asserts 200 from the upstream echo for
/// `upstream_path`, and returns what the upstream received.
async fn assert_proxied(
    gw: &Gateway,
    up: &MockUpstream,
    target: &str,
    headers: &[(&str, &str)],
    upstream_path: &str,
) -> tollgate_testkit::Recorded {
    let before = up.request_count();
    let r: RawResponse = call(gw, "GET", target, headers).await;
    assert_eq!(
        r.status,
        200,
        "GET {target} {headers:?}:\n{}{}",
        r.head,
        r.text()
    );
    assert_echo_ok(&r, upstream_path);
    assert_eq!(up.request_count(), before + 1, "GET {target} {headers:?}");
    let rec = up.last();
    assert_eq!(rec.path, upstream_path);
    rec
}

#[tokio::test]
async fn missing_key_is_401() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    create_key(&gw, &session_for(&[API])).await;
    assert_rejected(&gw, &up, "GET", "/api/x", &[], 401, MSG_MISSING).await;
    assert_rejected(&gw, &up, "POST", "/api/x", &[], 401, MSG_MISSING).await;
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/x",
        &[("Authorization", "")],
        401,
        MSG_MISSING,
    )
    .await;
    // A key in a query parameter or cookie does not count unless enabled.
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    let q = format!("/api/x?Authorization={}", pct_encode(&key));
    assert_rejected(&gw, &up, "GET", &q, &[], 401, MSG_MISSING).await;
    let c = format!("Authorization={key}");
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/x",
        &[("Cookie", &c)],
        401,
        MSG_MISSING,
    )
    .await;
}

#[tokio::test]
async fn unknown_keys_are_403() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    create_custom_key(&gw, "custom-key-xyz", &session_for(&[API]), Some(64)).await;
    let mut bad = key_variants(&key);
    bad.extend(key_variants("custom-key-xyz"));
    bad.push(("definitely-not-a-key".to_owned(), "random"));
    for (k, what) in &bad {
        let before = up.request_count();
        let r = get_with_key(&gw, "/api/x", k).await;
        assert_eq!(r.status, 403, "{what} ({k}):\n{}{}", r.head, r.text());
        assert_tyk_error(&r, 403, MSG_DISALLOWED);
        assert_eq!(up.request_count(), before, "{what}: reached the upstream");
    }
    // The real ones still work.
    let rec = assert_proxied(&gw, &up, "/api/x", &[("Authorization", &key)], "/x").await;
    assert_eq!(rec.header("authorization"), Some(key.as_str()));
    let rec = assert_proxied(
        &gw,
        &up,
        "/api/x",
        &[("Authorization", "custom-key-xyz")],
        "/x",
    )
    .await;
    assert_eq!(rec.header("authorization"), Some("custom-key-xyz"));
}

#[tokio::test]
async fn valid_key_is_proxied_with_auth_header_forwarded() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    let rec = assert_proxied(
        &gw,
        &up,
        "/api/users/7?q=1",
        &[("Authorization", &key), ("X-Other", "kept")],
        "/users/7",
    )
    .await;
    assert_eq!(rec.method, "GET");
    assert_eq!(rec.query.as_deref(), Some("q=1"));
    assert_eq!(rec.header("authorization"), Some(key.as_str()));
    assert_eq!(rec.header("x-other"), Some("kept"));
}

#[tokio::test]
async fn bearer_prefix_is_stripped_in_any_case() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    for prefix in ["Bearer ", "bearer ", "BEARER ", "bEaReR "] {
        let value = format!("{prefix}{key}");
        let rec = assert_proxied(&gw, &up, "/api/b", &[("Authorization", &value)], "/b").await;
        // Not stripped from what is forwarded (strip_auth_data is off).
        assert_eq!(
            rec.header("authorization"),
            Some(value.as_str()),
            "{prefix:?}"
        );
    }
    // The prefix of an unknown key is stripped too: still unknown.
    let value = format!("Bearer {key}abc");
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/b",
        &[("Authorization", &value)],
        403,
        MSG_DISALLOWED,
    )
    .await;
}

#[tokio::test]
async fn custom_auth_header_name() {
    let up = MockUpstream::start().await;
    let gw = start(
        &up,
        json!({"auth": {"auth_header_name": "X-Api-Key"}}),
        json!({}),
    )
    .await;
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    let rec = assert_proxied(&gw, &up, "/api/h", &[("X-Api-Key", &key)], "/h").await;
    assert_eq!(rec.header("x-api-key"), Some(key.as_str()));
    // Header names are case-insensitive.
    assert_proxied(&gw, &up, "/api/h", &[("x-api-key", &key)], "/h").await;
    let bearer = format!("Bearer {key}");
    assert_proxied(&gw, &up, "/api/h", &[("X-Api-Key", &bearer)], "/h").await;
    // The default header is not looked at any more.
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/h",
        &[("Authorization", &key)],
        401,
        MSG_MISSING,
    )
    .await;
}

#[tokio::test]
async fn strip_auth_data_removes_the_header() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({"strip_auth_data": true}), json!({})).await;
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    let rec = assert_proxied(
        &gw,
        &up,
        "/api/s?x=1",
        &[("Authorization", &key), ("X-Other", "kept")],
        "/s",
    )
    .await;
    assert_eq!(rec.header("authorization"), None, "{:?}", rec.headers);
    assert_eq!(rec.header("x-other"), Some("kept"));
    assert_eq!(rec.query.as_deref(), Some("x=1"));
}

#[tokio::test]
async fn strip_auth_data_removes_a_custom_header() {
    let up = MockUpstream::start().await;
    let api = json!({"strip_auth_data": true, "auth": {"auth_header_name": "X-Api-Key"}});
    let gw = start(&up, api, json!({})).await;
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    let rec = assert_proxied(
        &gw,
        &up,
        "/api/s",
        &[("X-Api-Key", &key), ("Authorization", "unrelated")],
        "/s",
    )
    .await;
    assert_eq!(rec.header("x-api-key"), None, "{:?}", rec.headers);
    assert_eq!(rec.header("authorization"), Some("unrelated"));
}

#[tokio::test]
async fn key_in_query_param() {
    let up = MockUpstream::start().await;
    let api = json!({"auth": {"use_param": true, "param_name": "api_key"}});
    let gw = start(&up, api, json!({})).await;
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    let target = format!("/api/p?a=1&api_key={}&b=2", pct_encode(&key));
    let rec = assert_proxied(&gw, &up, &target, &[], "/p").await;
    // Not stripped: forwarded as is.
    assert_eq!(
        query_pairs(rec.query.as_deref()),
        vec![
            ("a".to_owned(), "1".to_owned()),
            ("api_key".to_owned(), key.clone()),
            ("b".to_owned(), "2".to_owned()),
        ]
    );
    // The header still works.
    assert_proxied(&gw, &up, "/api/p", &[("Authorization", &key)], "/p").await;
    // An unknown key in the parameter.
    let target = format!("/api/p?api_key={}abc", pct_encode(&key));
    assert_rejected(&gw, &up, "GET", &target, &[], 403, MSG_DISALLOWED).await;
    // Another parameter name does not count.
    let target = format!("/api/p?apikey={}", pct_encode(&key));
    assert_rejected(&gw, &up, "GET", &target, &[], 401, MSG_MISSING).await;
}

#[tokio::test]
async fn query_param_name_defaults_to_header_name() {
    let up = MockUpstream::start().await;
    let api = json!({"auth": {"auth_header_name": "X-Api-Key", "use_param": true}});
    let gw = start(&up, api, json!({})).await;
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    let target = format!("/api/p?X-Api-Key={}", pct_encode(&key));
    let rec = assert_proxied(&gw, &up, &target, &[], "/p").await;
    assert_eq!(
        query_pairs(rec.query.as_deref()),
        vec![("X-Api-Key".to_owned(), key.clone())]
    );
}

#[tokio::test]
async fn strip_auth_data_removes_the_query_param() {
    let up = MockUpstream::start().await;
    let api =
        json!({"strip_auth_data": true, "auth": {"use_param": true, "param_name": "api_key"}});
    let gw = start(&up, api, json!({})).await;
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    let target = format!("/api/p?a=1&api_key={}&b=2", pct_encode(&key));
    let rec = assert_proxied(&gw, &up, &target, &[], "/p").await;
    assert_eq!(
        query_pairs(rec.query.as_deref()),
        vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned()),
        ],
        "upstream uri {}",
        rec.uri
    );
    let target = format!("/api/p?api_key={}", pct_encode(&key));
    let rec = assert_proxied(&gw, &up, &target, &[], "/p").await;
    assert_eq!(
        query_pairs(rec.query.as_deref()),
        vec![],
        "upstream uri {}",
        rec.uri
    );
}

#[tokio::test]
async fn key_in_cookie() {
    let up = MockUpstream::start().await;
    let api = json!({"auth": {"use_cookie": true, "cookie_name": "session_key"}});
    let gw = start(&up, api, json!({})).await;
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    let cookie = format!("other=1; session_key={key}");
    let rec = assert_proxied(&gw, &up, "/api/c", &[("Cookie", &cookie)], "/c").await;
    assert_eq!(
        cookie_pairs(rec.header("cookie")),
        vec![
            ("other".to_owned(), "1".to_owned()),
            ("session_key".to_owned(), key.clone()),
        ]
    );
    let cookie = format!("session_key={key}abc");
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/c",
        &[("Cookie", &cookie)],
        403,
        MSG_DISALLOWED,
    )
    .await;
    let cookie = format!("sessionkey={key}");
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/c",
        &[("Cookie", &cookie)],
        401,
        MSG_MISSING,
    )
    .await;
}

#[tokio::test]
async fn cookie_name_defaults_to_header_name() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({"auth": {"use_cookie": true}}), json!({})).await;
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    let cookie = format!("Authorization={key}");
    let rec = assert_proxied(&gw, &up, "/api/c", &[("Cookie", &cookie)], "/c").await;
    assert_eq!(rec.header("cookie"), Some(cookie.as_str()));
}

#[tokio::test]
async fn strip_auth_data_removes_the_cookie_only() {
    let up = MockUpstream::start().await;
    let api = json!({"strip_auth_data": true, "auth": {"use_cookie": true, "cookie_name": "session_key"}});
    let gw = start(&up, api, json!({})).await;
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    let cookie = format!("a=1; session_key={key}; b=2");
    let rec = assert_proxied(&gw, &up, "/api/c", &[("Cookie", &cookie)], "/c").await;
    let all: Vec<(String, String)> = rec
        .header_all("cookie")
        .iter()
        .flat_map(|h| cookie_pairs(Some(h)))
        .collect();
    assert_eq!(
        all,
        vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned())
        ],
        "{:?}",
        rec.headers
    );
}

#[tokio::test]
async fn lookup_order_header_then_param_then_cookie() {
    let up = MockUpstream::start().await;
    let api = json!({"auth": {
        "use_param": true, "param_name": "api_key",
        "use_cookie": true, "cookie_name": "ck",
    }});
    let gw = start(&up, api, json!({})).await;
    let (good, _) = create_key(&gw, &session_for(&[API])).await;
    let bad = format!("{good}abc");
    let good_q = pct_encode(&good);
    let bad_q = pct_encode(&bad);
    let good_c = format!("ck={good}");
    let bad_c = format!("ck={bad}");

    // The parameter overrides the header when non-empty.
    let t = format!("/api/o?api_key={good_q}");
    assert_proxied(&gw, &up, &t, &[("Authorization", &bad)], "/o").await;
    let t = format!("/api/o?api_key={bad_q}");
    assert_rejected(
        &gw,
        &up,
        "GET",
        &t,
        &[("Authorization", &good)],
        403,
        MSG_DISALLOWED,
    )
    .await;
    assert_proxied(
        &gw,
        &up,
        "/api/o?api_key=",
        &[("Authorization", &good)],
        "/o",
    )
    .await;

    // The cookie overrides both when non-empty.
    let t = format!("/api/o?api_key={bad_q}");
    assert_proxied(
        &gw,
        &up,
        &t,
        &[("Authorization", &bad), ("Cookie", &good_c)],
        "/o",
    )
    .await;
    let t = format!("/api/o?api_key={good_q}");
    assert_rejected(
        &gw,
        &up,
        "GET",
        &t,
        &[("Authorization", &good), ("Cookie", &bad_c)],
        403,
        MSG_DISALLOWED,
    )
    .await;
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/o",
        &[("Authorization", &good), ("Cookie", &bad_c)],
        403,
        MSG_DISALLOWED,
    )
    .await;
    assert_proxied(
        &gw,
        &up,
        "/api/o",
        &[("Authorization", &good), ("Cookie", "ck=")],
        "/o",
    )
    .await;
    let t = format!("/api/o?api_key={good_q}");
    assert_proxied(&gw, &up, &t, &[("Cookie", "ck=")], "/o").await;
    assert_proxied(&gw, &up, "/api/o", &[("Cookie", &good_c)], "/o").await;
}

#[tokio::test]
async fn inactive_key_is_403() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    let (key, _) = create_key(&gw, &session_with(&[API], json!({"is_inactive": true}))).await;
    assert_eq!(get_session(&gw, &key).await["is_inactive"], true);
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/x",
        &[("Authorization", &key)],
        403,
        MSG_INACTIVE,
    )
    .await;
}

#[tokio::test]
async fn expired_key_is_401() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    let past = now_unix() - 3600;
    let (expired, _) = create_key(&gw, &session_with(&[API], json!({"expires": past}))).await;
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/x",
        &[("Authorization", &expired)],
        401,
        MSG_EXPIRED,
    )
    .await;
    let (recent, _) = create_key(
        &gw,
        &session_with(&[API], json!({"expires": now_unix() - 2})),
    )
    .await;
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/x",
        &[("Authorization", &recent)],
        401,
        MSG_EXPIRED,
    )
    .await;
    for expires in [json!(0), json!(-1), json!(now_unix() + 3600)] {
        let (key, _) = create_key(&gw, &session_with(&[API], json!({"expires": expires}))).await;
        let rec = assert_proxied(&gw, &up, "/api/x", &[("Authorization", &key)], "/x").await;
        assert_eq!(
            rec.header("authorization"),
            Some(key.as_str()),
            "expires {expires}"
        );
    }
}

#[tokio::test]
async fn api_not_in_access_rights_is_403() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    let (key, _) = create_key(&gw, &session_for(&["other"])).await;
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/x",
        &[("Authorization", &key)],
        403,
        MSG_DISALLOWED,
    )
    .await;
    assert_proxied(&gw, &up, "/other/x", &[("Authorization", &key)], "/x").await;
}

#[tokio::test]
async fn checks_run_in_order() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    let past = now_unix() - 3600;
    let cases = [
        // inactive before expired
        (
            json!({"is_inactive": true, "expires": past}),
            &[API][..],
            403,
            MSG_INACTIVE,
        ),
        // inactive before access rights
        (
            json!({"is_inactive": true}),
            &["other"][..],
            403,
            MSG_INACTIVE,
        ),
        // expired before access rights
        (json!({"expires": past}), &["other"][..], 401, MSG_EXPIRED),
        // expired before allowed_urls
        (
            json!({"expires": past, "access_rights": {API: {"allowed_urls": [{"url": "/nomatch", "methods": ["GET"]}]}}}),
            &[API][..],
            401,
            MSG_EXPIRED,
        ),
    ];
    for (extra, apis, status, msg) in cases {
        let (key, _) = create_key(&gw, &session_with(apis, extra.clone())).await;
        let hs = [("Authorization", key.as_str())];
        let before = up.request_count();
        let r = call(&gw, "GET", "/api/x", &hs).await;
        assert_eq!(r.status, status, "{extra} {apis:?}: {}", r.text());
        assert_tyk_error(&r, status, msg);
        assert_eq!(up.request_count(), before);
    }
}

#[tokio::test]
async fn allowed_urls_restrict_paths_and_methods() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    let body = session_with(
        &[API],
        json!({"access_rights": {API: {"allowed_urls": [{"url": "/users", "methods": ["GET"]}]}}}),
    );
    let (key, _) = create_key(&gw, &body).await;
    let auth = [("Authorization", key.as_str())];
    let rec = assert_proxied(&gw, &up, "/api/users", &auth, "/users").await;
    assert_eq!(rec.method, "GET");
    // Unanchored.
    assert_proxied(&gw, &up, "/api/users/42", &auth, "/users/42").await;
    assert_rejected(&gw, &up, "POST", "/api/users", &auth, 403, MSG_RESOURCE).await;
    assert_rejected(&gw, &up, "DELETE", "/api/users", &auth, 403, MSG_RESOURCE).await;
    assert_rejected(&gw, &up, "GET", "/api/other", &auth, 403, MSG_RESOURCE).await;
    assert_rejected(&gw, &up, "GET", "/api/", &auth, 403, MSG_RESOURCE).await;
}

#[tokio::test]
async fn allowed_urls_match_the_path_including_the_listen_path() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    let with_listen = session_with(
        &[API],
        json!({"access_rights": {API: {"allowed_urls": [{"url": "^/api/admin", "methods": ["GET", "POST"]}]}}}),
    );
    let (k1, _) = create_key(&gw, &with_listen).await;
    let auth = [("Authorization", k1.as_str())];
    assert_proxied(&gw, &up, "/api/admin", &auth, "/admin").await;
    let before = up.request_count();
    let r = call(&gw, "POST", "/api/admin/x", &auth).await;
    assert_echo_ok(&r, "/admin/x");
    assert_eq!(up.request_count(), before + 1);
    assert_eq!(up.last().method, "POST");
    assert_rejected(&gw, &up, "PUT", "/api/admin", &auth, 403, MSG_RESOURCE).await;

    let without_listen = session_with(
        &[API],
        json!({"access_rights": {API: {"allowed_urls": [{"url": "^/admin", "methods": ["GET"]}]}}}),
    );
    let (k2, _) = create_key(&gw, &without_listen).await;
    let auth = [("Authorization", k2.as_str())];
    assert_rejected(&gw, &up, "GET", "/api/admin", &auth, 403, MSG_RESOURCE).await;
}

#[tokio::test]
async fn key_updates_take_effect_on_the_next_request() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    let (key, _) = create_key(&gw, &session_for(&[API])).await;
    let auth = [("Authorization", key.as_str())];
    assert_proxied(&gw, &up, "/api/u", &auth, "/u").await;

    let put = |s: Value| {
        let gw = &gw;
        let key = key.clone();
        async move {
            let a = admin(gw, "PUT", &format!("/tyk/keys/{key}"), Some(&s)).await;
            assert_eq!(a.status, 200, "{}", a.json);
            assert_eq!(a.json["action"], "modified", "{}", a.json);
        }
    };

    let mut s = get_session(&gw, &key).await;
    s["is_inactive"] = json!(true);
    put(s.clone()).await;
    assert_rejected(&gw, &up, "GET", "/api/u", &auth, 403, MSG_INACTIVE).await;

    s["is_inactive"] = json!(false);
    put(s.clone()).await;
    assert_proxied(&gw, &up, "/api/u", &auth, "/u").await;

    s["expires"] = json!(now_unix() - 60);
    put(s.clone()).await;
    assert_rejected(&gw, &up, "GET", "/api/u", &auth, 401, MSG_EXPIRED).await;

    s["expires"] = json!(0);
    s["access_rights"] = rights(&["other"]);
    put(s.clone()).await;
    assert_rejected(&gw, &up, "GET", "/api/u", &auth, 403, MSG_DISALLOWED).await;
    assert_proxied(&gw, &up, "/other/u", &auth, "/u").await;

    s["access_rights"] = rights(&[API]);
    put(s.clone()).await;
    assert_proxied(&gw, &up, "/api/u", &auth, "/u").await;

    let a = admin(&gw, "DELETE", &format!("/tyk/keys/{key}"), None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_rejected(&gw, &up, "GET", "/api/u", &auth, 403, MSG_DISALLOWED).await;
}

#[tokio::test]
async fn murmur32_key_with_suffix_is_rejected() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({"hash_key_function": "murmur32"})).await;
    let a = admin(&gw, "POST", "/tyk/keys/create", Some(&session_for(&[API]))).await;
    let (key, hash) = assert_added(&a, Some(8));
    let rec = assert_proxied(&gw, &up, "/api/m", &[("Authorization", &key)], "/m").await;
    assert_eq!(rec.header("authorization"), Some(key.as_str()));
    for suffix in ["abc", "a", "=", "==", "0"] {
        let k = format!("{key}{suffix}");
        assert_rejected(
            &gw,
            &up,
            "GET",
            "/api/m",
            &[("Authorization", &k)],
            403,
            MSG_DISALLOWED,
        )
        .await;
    }
    for (k, what) in key_variants(&key) {
        let before = up.request_count();
        let r = get_with_key(&gw, "/api/m", &k).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        assert_tyk_error(&r, 403, MSG_DISALLOWED);
        assert_eq!(up.request_count(), before, "{what}");
    }
    // The hash itself is not a key either.
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/m",
        &[("Authorization", &hash)],
        403,
        MSG_DISALLOWED,
    )
    .await;

    create_custom_key(&gw, "custom-murmur", &session_for(&[API]), Some(8)).await;
    assert_proxied(
        &gw,
        &up,
        "/api/m",
        &[("Authorization", "custom-murmur")],
        "/m",
    )
    .await;
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/m",
        &[("Authorization", "custom-murmurabc")],
        403,
        MSG_DISALLOWED,
    )
    .await;
}

#[tokio::test]
async fn keys_authenticate_with_hashing_off() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({"hash_keys": false})).await;
    let a = admin(&gw, "POST", "/tyk/keys/create", Some(&session_for(&[API]))).await;
    let (key, _) = assert_added(&a, None);
    assert_proxied(&gw, &up, "/api/z", &[("Authorization", &key)], "/z").await;
    let k = format!("{key}abc");
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/z",
        &[("Authorization", &k)],
        403,
        MSG_DISALLOWED,
    )
    .await;
}

#[tokio::test]
async fn custom_key_works_on_another_api_of_the_same_org() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    create_custom_key(
        &gw,
        "shared-custom",
        &session_for(&[API, "other"]),
        Some(64),
    )
    .await;
    let auth = [("Authorization", "shared-custom")];
    assert_proxied(&gw, &up, "/api/1", &auth, "/1").await;
    assert_proxied(&gw, &up, "/other/2", &auth, "/2").await;
}

#[tokio::test]
async fn keyless_api_ignores_keys() {
    let up = MockUpstream::start().await;
    let gw = with_keyed_api(gateway!(), &up.url(), json!({}))
        .api("open.json", api_def("open", "/open/", &up.url()))
        .start()
        .await;
    let rec = assert_proxied(&gw, &up, "/open/x", &[], "/x").await;
    assert_eq!(rec.header("authorization"), None);
    let rec = assert_proxied(&gw, &up, "/open/x", &[("Authorization", "whatever")], "/x").await;
    assert_eq!(rec.header("authorization"), Some("whatever"));
    assert_rejected(&gw, &up, "GET", "/api/x", &[], 401, MSG_MISSING).await;
}

#[tokio::test]
async fn a_rejected_key_works_once_created() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    let auth = [("Authorization", "created-later")];
    // Rejected twice (a negative result must not be cached).
    assert_rejected(&gw, &up, "GET", "/api/l", &auth, 403, MSG_DISALLOWED).await;
    assert_rejected(&gw, &up, "GET", "/api/l", &auth, 403, MSG_DISALLOWED).await;
    create_custom_key(&gw, "created-later", &session_for(&[API]), Some(64)).await;
    let rec = assert_proxied(&gw, &up, "/api/l", &auth, "/l").await;
    assert_eq!(rec.header("authorization"), Some("created-later"));
}

#[tokio::test]
async fn expiry_is_checked_at_request_time() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    let expires = now_unix() + 2;
    let (key, _) = create_key(&gw, &session_with(&[API], json!({"expires": expires}))).await;
    let auth = [("Authorization", key.as_str())];
    assert_proxied(&gw, &up, "/api/e", &auth, "/e").await;
    // Poll until it expires (at most ~3 s after creation).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    loop {
        let before = up.request_count();
        let r = call(&gw, "GET", "/api/e", &auth).await;
        if r.status == 401 {
            assert_tyk_error(&r, 401, MSG_EXPIRED);
            assert_eq!(up.request_count(), before);
            assert!(
                now_unix() > expires,
                "expired too early (expires {expires})"
            );
            break;
        }
        assert_echo_ok(&r, "/e");
        assert!(
            now_unix() <= expires + 1,
            "key still accepted at {} (expires {expires})",
            now_unix()
        );
        assert!(std::time::Instant::now() < deadline, "key never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn only_a_leading_bearer_word_is_stripped() {
    let up = MockUpstream::start().await;
    let gw = start(&up, json!({}), json!({})).await;
    create_custom_key(&gw, "Bearerkey1", &session_for(&[API]), Some(64)).await;
    // No space: part of the key.
    assert_proxied(&gw, &up, "/api/b", &[("Authorization", "Bearerkey1")], "/b").await;
    // Stripped once.
    assert_proxied(
        &gw,
        &up,
        "/api/b",
        &[("Authorization", "Bearer Bearerkey1")],
        "/b",
    )
    .await;
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/b",
        &[("Authorization", "Bearer Bearer Bearerkey1")],
        403,
        MSG_DISALLOWED,
    )
    .await;
    assert_rejected(
        &gw,
        &up,
        "GET",
        "/api/b",
        &[("Authorization", "Token Bearerkey1")],
        403,
        MSG_DISALLOWED,
    )
    .await;
}
