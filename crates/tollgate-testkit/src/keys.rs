//! Keys, sessions and the keys REST API, for the auth, key, policy, limit and
//! multi-node tests: API definitions that need a key, session bodies, admin
//! requests over raw TCP with their replies checked, and proxied requests
//! that carry a key.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::raw::{RawResponse, request};
use crate::{Gateway, GatewayBuilder, Recorded, merge_json};

/// The org every test API and key belongs to.
pub const ORG: &str = "default";

/// The API id of the API [`with_keyed_api`] adds.
pub const KEYED: &str = "keyed";

/// The listen path of the API [`with_keyed_api`] adds.
pub const KEYED_LISTEN: &str = "/api/";

/// 401: no key in the request.
pub const MSG_MISSING: &str = "Authorization field missing";
/// 403: unknown key, or the key has no access to the API.
pub const MSG_DISALLOWED: &str = "Access to this API has been disallowed";
/// 403: the key (or its policy) is inactive.
pub const MSG_INACTIVE: &str = "Key is inactive, please renew";
/// 401: the key has expired.
pub const MSG_EXPIRED: &str = "Key has expired, please renew";
/// 403: the key's `allowed_urls` do not allow the path or method.
pub const MSG_RESOURCE: &str = "Access to this resource has been disallowed";

// ---------------------------------------------------------------------------
// Definitions and sessions
// ---------------------------------------------------------------------------

/// A keyed (standard auth) API: [`crate::api_def`] with `use_keyless: false`,
/// deep-merged with `extra`.
pub fn keyed_api(api_id: &str, listen_path: &str, target: &str, extra: Value) -> Value {
    let mut def = crate::api_with(api_id, listen_path, target, json!({"use_keyless": false}));
    merge_json(&mut def, extra);
    def
}

/// Adds `keyed.json` to `builder`: the keyed API [`KEYED`] on
/// [`KEYED_LISTEN`] proxying to `target`, deep-merged with `extra`.
pub fn with_keyed_api(builder: GatewayBuilder, target: &str, extra: Value) -> GatewayBuilder {
    builder.api("keyed.json", keyed_api(KEYED, KEYED_LISTEN, target, extra))
}

/// Adds `other.json` to `builder`: a second keyed API, `other` on
/// `/other/`, proxying to `target`.
pub fn with_other_api(builder: GatewayBuilder, target: &str) -> GatewayBuilder {
    builder.api(
        "other.json",
        keyed_api("other", "/other/", target, json!({})),
    )
}

/// One `access_rights` entry for `api_id` (Default version).
pub fn right(api_id: &str) -> Value {
    json!({"api_id": api_id, "api_name": format!("API {api_id}"), "versions": ["Default"]})
}

/// One `access_rights` entry per API id (Default version).
pub fn rights(api_ids: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for id in api_ids {
        m.insert((*id).to_owned(), right(id));
    }
    Value::Object(m)
}

/// A session body granting access to `api_ids`, never expiring, with
/// generous limits.
pub fn session_for(api_ids: &[&str]) -> Value {
    json!({
        "org_id": ORG,
        "allowance": 1000,
        "rate": 1000,
        "per": 1,
        "expires": 0,
        "quota_max": -1,
        "access_rights": rights(api_ids),
    })
}

/// [`session_for`] deep-merged with `extra`.
pub fn session_with(api_ids: &[&str], extra: Value) -> Value {
    let mut s = session_for(api_ids);
    merge_json(&mut s, extra);
    s
}

/// Variants of `key` that must not authenticate: one character changed,
/// `abc` appended, a prefix added, the last character removed.
pub fn key_variants(key: &str) -> Vec<(String, &'static str)> {
    let mid = key.len() / 2;
    let mut changed: Vec<u8> = key.as_bytes().to_vec();
    changed[mid] = if changed[mid] == b'A' { b'B' } else { b'A' };
    vec![
        (String::from_utf8(changed).unwrap(), "one character changed"),
        (format!("{key}abc"), "suffix abc"),
        (format!("x{key}"), "prefix x"),
        (key[..key.len() - 1].to_owned(), "last character removed"),
    ]
}

/// Seconds since the epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Whether `s` is exactly `len` lower-case hex digits.
pub fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------------------
// Admin requests
// ---------------------------------------------------------------------------

/// An admin reply: status, parsed JSON body and the raw response.
#[derive(Debug)]
pub struct Admin {
    /// The status code.
    pub status: u16,
    /// The body, parsed.
    pub json: Value,
    /// The whole response.
    pub raw: RawResponse,
}

impl Admin {
    /// Asserts the status is 200 and `action` is `action` (`added`,
    /// `modified`, `deleted`).
    pub fn assert_action(&self, action: &str) {
        assert_eq!(self.status, 200, "{}", self.json);
        assert_eq!(self.json["action"], action, "{}", self.json);
    }
}

/// Sends an admin request with the secret and `body` bytes verbatim;
/// asserts the reply is JSON (content type and body) ending in a newline.
pub async fn admin_bytes(gw: &Gateway, method: &str, path: &str, body: &[u8]) -> Admin {
    let mut headers = vec![("x-tyk-authorization", gw.secret())];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    // Boxed: keeps the callers' futures small (debug builds overflow the
    // test thread's stack otherwise).
    let r = Box::pin(request(gw.addr(), method, path, &headers, body)).await;
    admin_reply(method, path, r)
}

fn admin_reply(method: &str, path: &str, r: RawResponse) -> Admin {
    let ctx = || format!("{method} {path}: reply was:\n{}", r.dump());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "content-type {ct:?}; {}",
        ctx()
    );
    let json: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}); {}", ctx()));
    assert!(r.body.ends_with(b"\n"), "no trailing newline; {}", ctx());
    Admin {
        status: r.status,
        json,
        raw: r,
    }
}

/// Sends an admin request with an optional JSON body (see [`admin_bytes`]).
pub async fn admin(gw: &Gateway, method: &str, path: &str, body: Option<&Value>) -> Admin {
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    admin_bytes(gw, method, path, &bytes).await
}

/// Asserts an admin error reply `{"status":"error","message":<msg>}`.
pub fn assert_admin_error(a: &Admin, status: u16, message: &str) {
    assert_eq!(
        (a.status, &a.json),
        (status, &json!({"status": "error", "message": message})),
        "reply was:\n{}",
        a.raw.dump()
    );
}

/// Asserts a successful create reply for a gateway with `hash_keys` on
/// (`hash_len` = expected key_hash length) or off (`None`): exactly
/// `{"key","status":"ok","action":"added"[,"key_hash"]}`. Returns
/// `(key, key_hash)` (`key_hash` empty when off).
pub fn assert_added(a: &Admin, hash_len: Option<usize>) -> (String, String) {
    let ctx = || format!("reply was:\n{}", a.raw.dump());
    assert_eq!(a.status, 200, "{}", ctx());
    let key = a.json["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key; {}", ctx()))
        .to_owned();
    assert!(!key.is_empty(), "empty key; {}", ctx());
    let Some(n) = hash_len else {
        assert_eq!(
            a.json,
            json!({"key": key, "status": "ok", "action": "added"}),
            "{}",
            ctx()
        );
        return (key, String::new());
    };
    let hash = a.json["key_hash"]
        .as_str()
        .unwrap_or_else(|| panic!("no key_hash; {}", ctx()))
        .to_owned();
    assert!(
        is_lower_hex(&hash, n),
        "key_hash {hash:?} is not {n} lower-case hex digits; {}",
        ctx()
    );
    assert_eq!(
        a.json,
        json!({"key": key, "status": "ok", "action": "added", "key_hash": hash}),
        "{}",
        ctx()
    );
    (key, hash)
}

/// The one way tests create a generated key: `POST /tyk/keys/create` with
/// `body`; asserts the reply (see [`assert_added`]: `hash_len` is the
/// key_hash length, `None` with hashing off) and returns `(key, key_hash)`.
pub async fn create_key_hashed(
    gw: &Gateway,
    body: &Value,
    hash_len: Option<usize>,
) -> (String, String) {
    let a = admin(gw, "POST", "/tyk/keys/create", Some(body)).await;
    assert_added(&a, hash_len)
}

/// [`create_key_hashed`] on a gateway with default hashing (sha256, a
/// 64-digit key_hash).
pub async fn create_key(gw: &Gateway, body: &Value) -> (String, String) {
    create_key_hashed(gw, body, Some(64)).await
}

/// `POST /tyk/keys/{id}` with `body`; asserts a 200 `added` reply for
/// `id` (key_hash checked when `hash_len` is given).
pub async fn create_custom_key(gw: &Gateway, id: &str, body: &Value, hash_len: Option<usize>) {
    let a = admin(gw, "POST", &format!("/tyk/keys/{id}"), Some(body)).await;
    let (key, _) = assert_added(&a, hash_len);
    assert_eq!(key, id, "custom key reply: {}", a.json);
}

/// `GET /tyk/keys/{key}`; asserts 200 and returns the session.
pub async fn get_session(gw: &Gateway, key: &str) -> Value {
    let a = admin(gw, "GET", &format!("/tyk/keys/{key}"), None).await;
    assert_eq!(a.status, 200, "GET /tyk/keys/{key}: {}", a.raw.dump());
    a.json
}

/// Asserts `GET /tyk/keys/{key}` answers 404 Key not found.
pub async fn assert_key_absent(gw: &Gateway, key: &str) {
    let a = admin(gw, "GET", &format!("/tyk/keys/{key}"), None).await;
    assert_admin_error(&a, 404, "Key not found");
}

/// Asserts the exact 403 every admin endpoint gives without the secret.
pub fn assert_admin_denied(r: &RawResponse, what: &str) {
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", r.text()));
    assert_eq!(
        (r.status, v),
        (
            403,
            json!({"status": "error", "message": "Attempted administrative access with invalid or missing key!"})
        ),
        "{what}"
    );
}

// ---------------------------------------------------------------------------
// Proxied requests
// ---------------------------------------------------------------------------

/// A proxied request with extra headers, on a new connection.
pub async fn call(
    gw: &Gateway,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    Box::pin(request(gw.addr(), method, target, headers, b"")).await
}

/// `GET target` with `Authorization: <key>`.
pub async fn get_with_key(gw: &Gateway, target: &str, key: &str) -> RawResponse {
    call(gw, "GET", target, &[("Authorization", key)]).await
}

/// Asserts a 200 from the mock upstream's JSON echo for `upstream_path`.
pub fn assert_echo_ok(resp: &RawResponse, upstream_path: &str) {
    let ctx = || format!("response was:\n{}", resp.dump());
    assert_eq!(resp.status, 200, "{}", ctx());
    let v: Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("echo body is not JSON ({e}); {}", ctx()));
    assert_eq!(v["path"], upstream_path, "{}", ctx());
}

/// Sends `GET target` with `key` and asserts it reached the upstream `up`
/// as exactly one new request for `upstream_path` (echo 200), carrying the
/// key in its Authorization header. Returns what the upstream received.
pub async fn assert_key_proxied(
    gw: &Gateway,
    up: &crate::MockUpstream,
    target: &str,
    key: &str,
    upstream_path: &str,
) -> Recorded {
    let before = up.request_count();
    let r = get_with_key(gw, target, key).await;
    assert_echo_ok(&r, upstream_path);
    assert_eq!(up.request_count(), before + 1);
    let rec = up.last();
    assert_eq!(rec.path, upstream_path);
    assert_eq!(rec.header("authorization"), Some(key));
    rec
}

/// Sends `GET target` with `key` and asserts the gateway refused it with
/// `status` and exactly `message`, without contacting the upstream `up`.
pub async fn assert_key_refused(
    gw: &Gateway,
    up: &crate::MockUpstream,
    target: &str,
    key: &str,
    status: u16,
    message: &str,
) {
    let auth = [("Authorization", key)];
    gw.assert_refused(up, ("GET", target), &auth, b"", (status, message))
        .await;
}
