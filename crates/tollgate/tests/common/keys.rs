//! Shared helpers for the key, auth, policy and basic-auth tests.
//!
//! Each test file uses a subset of these.
#![allow(dead_code, unreachable_pub)]

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tollgate_testkit::raw::{RawResponse, request};
use tollgate_testkit::{Gateway, api_def, merge_json};

/// The org every test API and key belongs to.
pub const ORG: &str = "default";

pub const MSG_MISSING: &str = "Authorization field missing";
pub const MSG_DISALLOWED: &str = "Access to this API has been disallowed";
pub const MSG_INACTIVE: &str = "Key is inactive, please renew";
pub const MSG_EXPIRED: &str = "Key has expired, please renew";
pub const MSG_RESOURCE: &str = "Access to this resource has been disallowed";

/// A keyed (standard auth) API: `api_def` with `use_keyless: false`,
/// deep-merged with `extra`.
pub fn keyed_api(api_id: &str, listen_path: &str, target: &str, extra: Value) -> Value {
    let mut def = api_def(api_id, listen_path, target);
    merge_json(&mut def, json!({"use_keyless": false}));
    merge_json(&mut def, extra);
    def
}

/// One `access_rights` entry per API id (Default version).
pub fn rights(api_ids: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for id in api_ids {
        m.insert(
            (*id).to_owned(),
            json!({"api_id": id, "api_name": format!("API {id}"), "versions": ["Default"]}),
        );
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

/// `session_for` deep-merged with `extra`.
pub fn session_with(api_ids: &[&str], extra: Value) -> Value {
    let mut s = session_for(api_ids);
    merge_json(&mut s, extra);
    s
}

/// An admin reply: status, parsed JSON body and the raw response.
#[derive(Debug)]
pub struct Admin {
    pub status: u16,
    pub json: Value,
    pub raw: RawResponse,
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
    let ctx = || format!("{method} {path}: reply was:\n{}{}", r.head, r.text());
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

/// Sends an admin request with an optional JSON body.
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
        "reply was:\n{}{}",
        a.raw.head,
        a.raw.text()
    );
}

/// Whether `s` is exactly `len` lower-case hex digits.
pub fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Asserts a successful create reply for a gateway with `hash_keys` on
/// (`hash_len` = expected key_hash length) or off (`None`): exactly
/// `{"key","status":"ok","action":"added"[,"key_hash"]}`. Returns
/// `(key, key_hash)` (`key_hash` empty when off).
pub fn assert_added(a: &Admin, hash_len: Option<usize>) -> (String, String) {
    let ctx = || format!("reply was:\n{}{}", a.raw.head, a.raw.text());
    assert_eq!(a.status, 200, "{}", ctx());
    let key = a.json["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key; {}", ctx()))
        .to_owned();
    assert!(!key.is_empty(), "empty key; {}", ctx());
    match hash_len {
        Some(n) => {
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
        None => {
            assert_eq!(
                a.json,
                json!({"key": key, "status": "ok", "action": "added"}),
                "{}",
                ctx()
            );
            (key, String::new())
        }
    }
}

/// `POST /tyk/keys/create` with `body` on a gateway with default hashing
/// (sha256); asserts the reply and returns `(key, key_hash)`.
pub async fn create_key(gw: &Gateway, body: &Value) -> (String, String) {
    let a = admin(gw, "POST", "/tyk/keys/create", Some(body)).await;
    assert_added(&a, Some(64))
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
    assert_eq!(
        a.status,
        200,
        "GET /tyk/keys/{key}: {}{}",
        a.raw.head,
        a.raw.text()
    );
    a.json
}

/// Asserts `GET /tyk/keys/{key}` answers 404 Key not found.
pub async fn assert_key_absent(gw: &Gateway, key: &str) {
    let a = admin(gw, "GET", &format!("/tyk/keys/{key}"), None).await;
    assert_admin_error(&a, 404, "Key not found");
}

/// A proxied request with extra headers.
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
    let ctx = || format!("response was:\n{}{}", resp.head, resp.text());
    assert_eq!(resp.status, 200, "{}", ctx());
    let v: Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("echo body is not JSON ({e}); {}", ctx()));
    assert_eq!(v["path"], upstream_path, "{}", ctx());
}

/// Starts the gateway (boxed, see [`admin_bytes`]).
pub async fn start_gw(builder: tollgate_testkit::GatewayBuilder) -> Gateway {
    Box::pin(builder.start()).await
}

/// Restarts the gateway with SIGKILL (boxed, see [`admin_bytes`]).
pub async fn restart_gw(gw: &mut Gateway) {
    Box::pin(gw.restart()).await;
}

/// Seconds since the epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn b64encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64, padded or not.
pub fn b64decode(s: &str) -> Option<Vec<u8>> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    Some(out)
}

/// Percent-encodes everything but unreserved characters.
pub fn pct_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a query component (`+` is a space).
pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A query string as sorted, decoded `(name, value)` pairs.
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = q
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (pct_decode(k), pct_decode(v)),
            None => (pct_decode(p), String::new()),
        })
        .collect();
    v.sort();
    v
}

/// The cookies of a Cookie header as `(name, value)` pairs, in order.
pub fn cookie_pairs(header: Option<&str>) -> Vec<(String, String)> {
    header
        .unwrap_or("")
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect()
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

#[test]
fn helpers_roundtrip() {
    for s in [
        "",
        "a",
        "ab",
        "abc",
        "abcd",
        "user:password",
        "{\"org\":\"default\"}",
    ] {
        assert_eq!(b64decode(&b64encode(s.as_bytes())).unwrap(), s.as_bytes());
    }
    assert_eq!(b64encode(b"user:password"), "dXNlcjpwYXNzd29yZA==");
    assert_eq!(pct_decode(&pct_encode("a+b/c=d ")), "a+b/c=d ");
    assert_eq!(
        query_pairs(Some("b=2&a=%2B1")),
        vec![("a".into(), "+1".into()), ("b".into(), "2".into())]
    );
}
