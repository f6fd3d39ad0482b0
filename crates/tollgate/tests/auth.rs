//! Request-time standard (auth token) authentication: where the key is
//! read from, stripping it, and the checks a key must pass, in order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_testkit::encoding::{cookie_pairs, pct_encode, query_pairs};
use tollgate_testkit::keys::*;
use tollgate_testkit::raw::{RawResponse, assert_tyk_error};
use tollgate_testkit::{Gateway, MockUpstream, gateway};

const API: &str = "keyed";

/// 401 `Authorization field missing`.
const MISSING: (u16, &str) = (401, MSG_MISSING);
/// 403 `Access to this API has been disallowed`.
const DISALLOWED: (u16, &str) = (403, MSG_DISALLOWED);
/// 403 `Key is inactive, please renew`.
const INACTIVE: (u16, &str) = (403, MSG_INACTIVE);
/// 401 `Key has expired, please renew`.
const EXPIRED: (u16, &str) = (401, MSG_EXPIRED);
/// 403 `Access to this resource has been disallowed`.
const RESOURCE: (u16, &str) = (403, MSG_RESOURCE);

/// A gateway and the upstream its APIs proxy to.
struct Env {
    gw: Gateway,
    up: MockUpstream,
}

/// A gateway with the keyed API `keyed` on /api/ (deep-merged with
/// `api_extra`) and an unrelated keyed API `other` on /other/.
async fn start(api_extra: Value, conf: Value) -> Env {
    let up = MockUpstream::start().await;
    let keyed = with_keyed_api(gateway!().conf(conf), &up.url(), api_extra);
    let gw = with_other_api(keyed, &up.url()).start().await;
    Env { gw, up }
}

/// [`start`], and a key for `keyed` ([`session_for`]).
async fn start_with_key(api_extra: Value, conf: Value) -> (Env, String) {
    let t = start(api_extra, conf).await;
    let key = t.key(&session_for(&[API])).await;
    (t, key)
}

/// `(name, value)` pairs as owned strings, to compare with
/// [`query_pairs`] and [`cookie_pairs`].
fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Env {
    /// Creates a key with `body`; returns the key.
    async fn key(&self, body: &Value) -> String {
        create_key(&self.gw, body).await.0
    }

    /// Sends a request and asserts the gateway rejected it with `status` /
    /// `message` without contacting the upstream.
    async fn refused(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        (status, message): (u16, &str),
    ) {
        let before = self.up.request_count();
        let r = call(&self.gw, method, target, headers).await;
        let what = format!("{method} {target} {headers:?}");
        assert_eq!(r.status, status, "{what}:\n{}", r.dump());
        assert_tyk_error(&r, status, message);
        assert_eq!(
            self.up.request_count(),
            before,
            "{what}: a rejected request reached the upstream"
        );
    }

    /// `GET target` with `Authorization: key` is refused as in
    /// [`Env::refused`].
    async fn refused_key(&self, target: &str, key: &str, want: (u16, &str)) {
        self.refused("GET", target, &[("Authorization", key)], want)
            .await;
    }

    /// Sends a request, asserts 200 from the upstream echo for
    /// `upstream_path`, and returns what the upstream received.
    async fn proxied(
        &self,
        target: &str,
        headers: &[(&str, &str)],
        upstream_path: &str,
    ) -> tollgate_testkit::Recorded {
        let before = self.up.request_count();
        let r: RawResponse = call(&self.gw, "GET", target, headers).await;
        let what = format!("GET {target} {headers:?}");
        assert_eq!(r.status, 200, "{what}:\n{}", r.dump());
        assert_echo_ok(&r, upstream_path);
        assert_eq!(self.up.request_count(), before + 1, "{what}");
        let rec = self.up.last();
        assert_eq!(rec.path, upstream_path);
        rec
    }
}

#[tokio::test]
async fn missing_key_is_401() {
    let t = start(json!({}), json!({})).await;
    create_key(&t.gw, &session_for(&[API])).await;
    t.refused("GET", "/api/x", &[], MISSING).await;
    t.refused("POST", "/api/x", &[], MISSING).await;
    t.refused_key("/api/x", "", MISSING).await;
    // A key in a query parameter or cookie does not count unless enabled.
    let key = t.key(&session_for(&[API])).await;
    let q = format!("/api/x?Authorization={}", pct_encode(&key));
    t.refused("GET", &q, &[], MISSING).await;
    let c = format!("Authorization={key}");
    t.refused("GET", "/api/x", &[("Cookie", &c)], MISSING).await;
}

#[tokio::test]
async fn unknown_keys_are_403() {
    let (t, key) = start_with_key(json!({}), json!({})).await;
    create_custom_key(&t.gw, "custom-key-xyz", &session_for(&[API]), Some(64)).await;
    let mut bad = key_variants(&key);
    bad.extend(key_variants("custom-key-xyz"));
    bad.push(("definitely-not-a-key".to_owned(), "random"));
    for (k, _what) in &bad {
        t.refused_key("/api/x", k, DISALLOWED).await;
    }
    // The real ones still work.
    let rec = t.proxied("/api/x", &[("Authorization", &key)], "/x").await;
    assert_eq!(rec.header("authorization"), Some(key.as_str()));
    let rec = t
        .proxied("/api/x", &[("Authorization", "custom-key-xyz")], "/x")
        .await;
    assert_eq!(rec.header("authorization"), Some("custom-key-xyz"));
}

#[tokio::test]
async fn valid_key_is_proxied_with_auth_header_forwarded() {
    let (t, key) = start_with_key(json!({}), json!({})).await;
    let hs: [(&str, &str); 2] = [("Authorization", &key), ("X-Other", "kept")];
    let rec = t.proxied("/api/users/7?q=1", &hs, "/users/7").await;
    assert_eq!(rec.method, "GET");
    assert_eq!(rec.query.as_deref(), Some("q=1"));
    assert_eq!(rec.header("authorization"), Some(key.as_str()));
    assert_eq!(rec.header("x-other"), Some("kept"));
}

#[tokio::test]
async fn bearer_prefix_is_stripped_in_any_case() {
    let (t, key) = start_with_key(json!({}), json!({})).await;
    for prefix in ["Bearer ", "bearer ", "BEARER ", "bEaReR "] {
        let value = format!("{prefix}{key}");
        let rec = t
            .proxied("/api/b", &[("Authorization", &value)], "/b")
            .await;
        // Not stripped from what is forwarded (strip_auth_data is off).
        assert_eq!(
            rec.header("authorization"),
            Some(value.as_str()),
            "{prefix:?}"
        );
    }
    // The prefix of an unknown key is stripped too: still unknown.
    let value = format!("Bearer {key}abc");
    t.refused_key("/api/b", &value, DISALLOWED).await;
}

#[tokio::test]
async fn custom_auth_header_name() {
    let (t, key) = start_with_key(
        json!({"auth": {"auth_header_name": "X-Api-Key"}}),
        json!({}),
    )
    .await;
    let rec = t.proxied("/api/h", &[("X-Api-Key", &key)], "/h").await;
    assert_eq!(rec.header("x-api-key"), Some(key.as_str()));
    // Header names are case-insensitive.
    t.proxied("/api/h", &[("x-api-key", &key)], "/h").await;
    let bearer = format!("Bearer {key}");
    t.proxied("/api/h", &[("X-Api-Key", &bearer)], "/h").await;
    // The default header is not looked at any more.
    t.refused_key("/api/h", &key, MISSING).await;
}

#[tokio::test]
async fn strip_auth_data_removes_the_header() {
    let (t, key) = start_with_key(json!({"strip_auth_data": true}), json!({})).await;
    let hs: [(&str, &str); 2] = [("Authorization", &key), ("X-Other", "kept")];
    let rec = t.proxied("/api/s?x=1", &hs, "/s").await;
    assert_eq!(rec.header("authorization"), None, "{:?}", rec.headers);
    assert_eq!(rec.header("x-other"), Some("kept"));
    assert_eq!(rec.query.as_deref(), Some("x=1"));
}

#[tokio::test]
async fn strip_auth_data_removes_a_custom_header() {
    let api = json!({"strip_auth_data": true, "auth": {"auth_header_name": "X-Api-Key"}});
    let (t, key) = start_with_key(api, json!({})).await;
    let hs: [(&str, &str); 2] = [("X-Api-Key", &key), ("Authorization", "unrelated")];
    let rec = t.proxied("/api/s", &hs, "/s").await;
    assert_eq!(rec.header("x-api-key"), None, "{:?}", rec.headers);
    assert_eq!(rec.header("authorization"), Some("unrelated"));
}

#[tokio::test]
async fn key_in_query_param() {
    let api = json!({"auth": {"use_param": true, "param_name": "api_key"}});
    let (t, key) = start_with_key(api, json!({})).await;
    let target = format!("/api/p?a=1&api_key={}&b=2", pct_encode(&key));
    let rec = t.proxied(&target, &[], "/p").await;
    // Not stripped: forwarded as is.
    assert_eq!(
        query_pairs(rec.query.as_deref()),
        owned(&[("a", "1"), ("api_key", &key), ("b", "2")])
    );
    // The header still works.
    t.proxied("/api/p", &[("Authorization", &key)], "/p").await;
    // An unknown key in the parameter.
    let target = format!("/api/p?api_key={}abc", pct_encode(&key));
    t.refused("GET", &target, &[], DISALLOWED).await;
    // Another parameter name does not count.
    let target = format!("/api/p?apikey={}", pct_encode(&key));
    t.refused("GET", &target, &[], MISSING).await;
}

#[tokio::test]
async fn query_param_name_defaults_to_header_name() {
    let api = json!({"auth": {"auth_header_name": "X-Api-Key", "use_param": true}});
    let (t, key) = start_with_key(api, json!({})).await;
    let target = format!("/api/p?X-Api-Key={}", pct_encode(&key));
    let rec = t.proxied(&target, &[], "/p").await;
    assert_eq!(
        query_pairs(rec.query.as_deref()),
        owned(&[("X-Api-Key", &key)])
    );
}

#[tokio::test]
async fn strip_auth_data_removes_the_query_param() {
    let api =
        json!({"strip_auth_data": true, "auth": {"use_param": true, "param_name": "api_key"}});
    let (t, key) = start_with_key(api, json!({})).await;
    let target = format!("/api/p?a=1&api_key={}&b=2", pct_encode(&key));
    let rec = t.proxied(&target, &[], "/p").await;
    assert_eq!(
        query_pairs(rec.query.as_deref()),
        owned(&[("a", "1"), ("b", "2")]),
        "upstream uri {}",
        rec.uri
    );
    let target = format!("/api/p?api_key={}", pct_encode(&key));
    let rec = t.proxied(&target, &[], "/p").await;
    assert_eq!(
        query_pairs(rec.query.as_deref()),
        vec![],
        "upstream uri {}",
        rec.uri
    );
}

#[tokio::test]
async fn key_in_cookie() {
    let api = json!({"auth": {"use_cookie": true, "cookie_name": "session_key"}});
    let (t, key) = start_with_key(api, json!({})).await;
    let cookie = format!("other=1; session_key={key}");
    let rec = t.proxied("/api/c", &[("Cookie", &cookie)], "/c").await;
    assert_eq!(
        cookie_pairs(rec.header("cookie")),
        owned(&[("other", "1"), ("session_key", &key)])
    );
    let cookie = format!("session_key={key}abc");
    t.refused("GET", "/api/c", &[("Cookie", &cookie)], DISALLOWED)
        .await;
    let cookie = format!("sessionkey={key}");
    t.refused("GET", "/api/c", &[("Cookie", &cookie)], MISSING)
        .await;
}

#[tokio::test]
async fn cookie_name_defaults_to_header_name() {
    let (t, key) = start_with_key(json!({"auth": {"use_cookie": true}}), json!({})).await;
    let cookie = format!("Authorization={key}");
    let rec = t.proxied("/api/c", &[("Cookie", &cookie)], "/c").await;
    assert_eq!(rec.header("cookie"), Some(cookie.as_str()));
}

#[tokio::test]
async fn strip_auth_data_removes_the_cookie_only() {
    let api = json!({"strip_auth_data": true, "auth": {"use_cookie": true, "cookie_name": "session_key"}});
    let (t, key) = start_with_key(api, json!({})).await;
    let cookie = format!("a=1; session_key={key}; b=2");
    let rec = t.proxied("/api/c", &[("Cookie", &cookie)], "/c").await;
    let all: Vec<(String, String)> = rec
        .header_all("cookie")
        .iter()
        .flat_map(|h| cookie_pairs(Some(h)))
        .collect();
    assert_eq!(all, owned(&[("a", "1"), ("b", "2")]), "{:?}", rec.headers);
}

#[tokio::test]
async fn lookup_order_header_then_param_then_cookie() {
    let api = json!({"auth": {
        "use_param": true, "param_name": "api_key",
        "use_cookie": true, "cookie_name": "ck",
    }});
    let (t, good) = start_with_key(api, json!({})).await;
    let bad = format!("{good}abc");
    let good_q = pct_encode(&good);
    let bad_q = pct_encode(&bad);
    let good_c = format!("ck={good}");
    let bad_c = format!("ck={bad}");

    // The parameter overrides the header when non-empty.
    let q = format!("/api/o?api_key={good_q}");
    t.proxied(&q, &[("Authorization", &bad)], "/o").await;
    let q = format!("/api/o?api_key={bad_q}");
    t.refused_key(&q, &good, DISALLOWED).await;
    t.proxied("/api/o?api_key=", &[("Authorization", &good)], "/o")
        .await;

    // The cookie overrides both when non-empty.
    let q = format!("/api/o?api_key={bad_q}");
    t.proxied(&q, &[("Authorization", &bad), ("Cookie", &good_c)], "/o")
        .await;
    let q = format!("/api/o?api_key={good_q}");
    t.refused(
        "GET",
        &q,
        &[("Authorization", &good), ("Cookie", &bad_c)],
        DISALLOWED,
    )
    .await;
    t.refused(
        "GET",
        "/api/o",
        &[("Authorization", &good), ("Cookie", &bad_c)],
        DISALLOWED,
    )
    .await;
    t.proxied(
        "/api/o",
        &[("Authorization", &good), ("Cookie", "ck=")],
        "/o",
    )
    .await;
    let q = format!("/api/o?api_key={good_q}");
    t.proxied(&q, &[("Cookie", "ck=")], "/o").await;
    t.proxied("/api/o", &[("Cookie", &good_c)], "/o").await;
}

#[tokio::test]
async fn inactive_key_is_403() {
    let t = start(json!({}), json!({})).await;
    let key = t
        .key(&session_with(&[API], json!({"is_inactive": true})))
        .await;
    assert_eq!(get_session(&t.gw, &key).await["is_inactive"], true);
    t.refused_key("/api/x", &key, INACTIVE).await;
}

#[tokio::test]
async fn expired_key_is_401() {
    let t = start(json!({}), json!({})).await;
    let past = now_unix() - 3600;
    let expired = t.key(&session_with(&[API], json!({"expires": past}))).await;
    t.refused_key("/api/x", &expired, EXPIRED).await;
    let recent = t
        .key(&session_with(&[API], json!({"expires": now_unix() - 2})))
        .await;
    t.refused_key("/api/x", &recent, EXPIRED).await;
    for expires in [json!(0), json!(-1), json!(now_unix() + 3600)] {
        let key = t
            .key(&session_with(&[API], json!({"expires": expires})))
            .await;
        let rec = t.proxied("/api/x", &[("Authorization", &key)], "/x").await;
        assert_eq!(
            rec.header("authorization"),
            Some(key.as_str()),
            "expires {expires}"
        );
    }
}

#[tokio::test]
async fn api_not_in_access_rights_is_403() {
    let t = start(json!({}), json!({})).await;
    let key = t.key(&session_for(&["other"])).await;
    t.refused_key("/api/x", &key, DISALLOWED).await;
    t.proxied("/other/x", &[("Authorization", &key)], "/x")
        .await;
}

#[tokio::test]
async fn checks_run_in_order() {
    let t = start(json!({}), json!({})).await;
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
        let key = t.key(&session_with(apis, extra)).await;
        t.refused_key("/api/x", &key, (status, msg)).await;
    }
}

#[tokio::test]
async fn allowed_urls_restrict_paths_and_methods() {
    let t = start(json!({}), json!({})).await;
    let body = session_with(
        &[API],
        json!({"access_rights": {API: {"allowed_urls": [{"url": "/users", "methods": ["GET"]}]}}}),
    );
    let key = t.key(&body).await;
    let auth = [("Authorization", key.as_str())];
    let rec = t.proxied("/api/users", &auth, "/users").await;
    assert_eq!(rec.method, "GET");
    // Unanchored.
    t.proxied("/api/users/42", &auth, "/users/42").await;
    for (method, target) in [
        ("POST", "/api/users"),
        ("DELETE", "/api/users"),
        ("GET", "/api/other"),
        ("GET", "/api/"),
    ] {
        t.refused(method, target, &auth, RESOURCE).await;
    }
}

#[tokio::test]
async fn allowed_urls_match_the_path_including_the_listen_path() {
    let t = start(json!({}), json!({})).await;
    let with_listen = session_with(
        &[API],
        json!({"access_rights": {API: {"allowed_urls": [{"url": "^/api/admin", "methods": ["GET", "POST"]}]}}}),
    );
    let k1 = t.key(&with_listen).await;
    let auth = [("Authorization", k1.as_str())];
    t.proxied("/api/admin", &auth, "/admin").await;
    let before = t.up.request_count();
    let r = call(&t.gw, "POST", "/api/admin/x", &auth).await;
    assert_echo_ok(&r, "/admin/x");
    assert_eq!(t.up.request_count(), before + 1);
    assert_eq!(t.up.last().method, "POST");
    t.refused("PUT", "/api/admin", &auth, RESOURCE).await;

    let without_listen = session_with(
        &[API],
        json!({"access_rights": {API: {"allowed_urls": [{"url": "^/admin", "methods": ["GET"]}]}}}),
    );
    let k2 = t.key(&without_listen).await;
    let auth = [("Authorization", k2.as_str())];
    t.refused("GET", "/api/admin", &auth, RESOURCE).await;
}

#[tokio::test]
async fn key_updates_take_effect_on_the_next_request() {
    let (t, key) = start_with_key(json!({}), json!({})).await;
    let auth = [("Authorization", key.as_str())];
    t.proxied("/api/u", &auth, "/u").await;

    let put = |s: Value| {
        let gw = &t.gw;
        let key = key.clone();
        async move {
            let a = admin(gw, "PUT", &format!("/tyk/keys/{key}"), Some(&s)).await;
            assert_eq!(a.status, 200, "{}", a.json);
            assert_eq!(a.json["action"], "modified", "{}", a.json);
        }
    };

    let mut s = get_session(&t.gw, &key).await;
    s["is_inactive"] = json!(true);
    put(s.clone()).await;
    t.refused("GET", "/api/u", &auth, INACTIVE).await;

    s["is_inactive"] = json!(false);
    put(s.clone()).await;
    t.proxied("/api/u", &auth, "/u").await;

    s["expires"] = json!(now_unix() - 60);
    put(s.clone()).await;
    t.refused("GET", "/api/u", &auth, EXPIRED).await;

    s["expires"] = json!(0);
    s["access_rights"] = rights(&["other"]);
    put(s.clone()).await;
    t.refused("GET", "/api/u", &auth, DISALLOWED).await;
    t.proxied("/other/u", &auth, "/u").await;

    s["access_rights"] = rights(&[API]);
    put(s.clone()).await;
    t.proxied("/api/u", &auth, "/u").await;

    let a = admin(&t.gw, "DELETE", &format!("/tyk/keys/{key}"), None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    t.refused("GET", "/api/u", &auth, DISALLOWED).await;
}

#[tokio::test]
async fn murmur32_key_with_suffix_is_rejected() {
    let t = start(json!({}), json!({"hash_key_function": "murmur32"})).await;
    let (key, hash) = create_key_hashed(&t.gw, &session_for(&[API]), Some(8)).await;
    let rec = t.proxied("/api/m", &[("Authorization", &key)], "/m").await;
    assert_eq!(rec.header("authorization"), Some(key.as_str()));
    for suffix in ["abc", "a", "=", "==", "0"] {
        let k = format!("{key}{suffix}");
        t.refused_key("/api/m", &k, DISALLOWED).await;
    }
    for (k, _what) in key_variants(&key) {
        t.refused_key("/api/m", &k, DISALLOWED).await;
    }
    // The hash itself is not a key either.
    t.refused_key("/api/m", &hash, DISALLOWED).await;

    create_custom_key(&t.gw, "custom-murmur", &session_for(&[API]), Some(8)).await;
    t.proxied("/api/m", &[("Authorization", "custom-murmur")], "/m")
        .await;
    t.refused_key("/api/m", "custom-murmurabc", DISALLOWED)
        .await;
}

#[tokio::test]
async fn keys_authenticate_with_hashing_off() {
    let t = start(json!({}), json!({"hash_keys": false})).await;
    let (key, _) = create_key_hashed(&t.gw, &session_for(&[API]), None).await;
    t.proxied("/api/z", &[("Authorization", &key)], "/z").await;
    let k = format!("{key}abc");
    t.refused_key("/api/z", &k, DISALLOWED).await;
}

#[tokio::test]
async fn custom_key_works_on_another_api_of_the_same_org() {
    let t = start(json!({}), json!({})).await;
    create_custom_key(
        &t.gw,
        "shared-custom",
        &session_for(&[API, "other"]),
        Some(64),
    )
    .await;
    let auth = [("Authorization", "shared-custom")];
    t.proxied("/api/1", &auth, "/1").await;
    t.proxied("/other/2", &auth, "/2").await;
}

#[tokio::test]
async fn keyless_api_ignores_keys() {
    let up = MockUpstream::start().await;
    let gw = with_keyed_api(gateway!(), &up.url(), json!({}))
        .with_api("open", "/open/", &up.url())
        .start()
        .await;
    let t = Env { gw, up };
    let rec = t.proxied("/open/x", &[], "/x").await;
    assert_eq!(rec.header("authorization"), None);
    let rec = t
        .proxied("/open/x", &[("Authorization", "whatever")], "/x")
        .await;
    assert_eq!(rec.header("authorization"), Some("whatever"));
    t.refused("GET", "/api/x", &[], MISSING).await;
}

#[tokio::test]
async fn a_rejected_key_works_once_created() {
    let t = start(json!({}), json!({})).await;
    let auth = [("Authorization", "created-later")];
    // Rejected twice (a negative result must not be cached).
    t.refused("GET", "/api/l", &auth, DISALLOWED).await;
    t.refused("GET", "/api/l", &auth, DISALLOWED).await;
    create_custom_key(&t.gw, "created-later", &session_for(&[API]), Some(64)).await;
    let rec = t.proxied("/api/l", &auth, "/l").await;
    assert_eq!(rec.header("authorization"), Some("created-later"));
}

#[tokio::test]
async fn expiry_is_checked_at_request_time() {
    let t = start(json!({}), json!({})).await;
    let expires = now_unix() + 2;
    let key = t
        .key(&session_with(&[API], json!({"expires": expires})))
        .await;
    let auth = [("Authorization", key.as_str())];
    t.proxied("/api/e", &auth, "/e").await;
    // Poll until it expires (at most ~3 s after creation).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    loop {
        let before = t.up.request_count();
        let r = call(&t.gw, "GET", "/api/e", &auth).await;
        if r.status == 401 {
            assert_tyk_error(&r, 401, MSG_EXPIRED);
            assert_eq!(t.up.request_count(), before);
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
    let t = start(json!({}), json!({})).await;
    create_custom_key(&t.gw, "Bearerkey1", &session_for(&[API]), Some(64)).await;
    // No space: part of the key.
    t.proxied("/api/b", &[("Authorization", "Bearerkey1")], "/b")
        .await;
    // Stripped once.
    t.proxied("/api/b", &[("Authorization", "Bearer Bearerkey1")], "/b")
        .await;
    t.refused_key("/api/b", "Bearer Bearer Bearerkey1", DISALLOWED)
        .await;
    t.refused_key("/api/b", "Token Bearerkey1", DISALLOWED)
        .await;
}
