//! Helpers for the rate-limit and quota tests (`tests/limits.rs`).
#![allow(dead_code, unreachable_pub)]

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tollgate_testkit::raw::{RawResponse, assert_tyk_error, request};
use tollgate_testkit::{Gateway, GatewayBuilder, api_def, merge_json};

/// The org every test API and key belongs to.
pub const ORG: &str = "default";

pub const MSG_RATE: &str = "Rate Limit Exceeded";
pub const MSG_API_RATE: &str = "API Rate Limit Exceeded";
pub const MSG_QUOTA: &str = "Quota exceeded";

/// A keyed (standard auth) API: `api_def` with `use_keyless: false`,
/// deep-merged with `extra`.
pub fn keyed_api(api_id: &str, listen_path: &str, target: &str, extra: Value) -> Value {
    let mut def = api_def(api_id, listen_path, target);
    merge_json(&mut def, json!({"use_keyless": false}));
    merge_json(&mut def, extra);
    def
}

/// A keyless API deep-merged with `extra`.
pub fn keyless_api(api_id: &str, listen_path: &str, target: &str, extra: Value) -> Value {
    let mut def = api_def(api_id, listen_path, target);
    merge_json(&mut def, extra);
    def
}

/// One `access_rights` entry for `api_id` (Default version).
pub fn right(api_id: &str) -> Value {
    json!({"api_id": api_id, "api_name": format!("API {api_id}"), "versions": ["Default"]})
}

/// One `access_rights` entry per API id.
pub fn rights(api_ids: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for id in api_ids {
        m.insert((*id).to_owned(), right(id));
    }
    Value::Object(m)
}

/// A never-expiring Tyk session for `api_ids` with the given limits.
pub fn session(api_ids: &[&str], rate: i64, per: i64, quota_max: i64, renewal: i64) -> Value {
    json!({
        "org_id": ORG,
        "rate": rate,
        "per": per,
        "quota_max": quota_max,
        "quota_renewal_rate": renewal,
        "quota_remaining": quota_max,
        "expires": 0,
        "access_rights": rights(api_ids),
    })
}

/// Starts the gateway (boxed: keeps the callers' futures small).
pub async fn start_gw(builder: GatewayBuilder) -> Gateway {
    Box::pin(builder.start()).await
}

/// Restarts the gateway with SIGKILL and waits until it is ready.
pub async fn restart_gw(gw: &mut Gateway) {
    Box::pin(gw.restart()).await;
}

/// An admin request; returns status and JSON body.
pub async fn admin(gw: &Gateway, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let (status, json) = Box::pin(gw.admin(m, path, body)).await;
    (status.as_u16(), json)
}

/// `POST /tyk/keys/create`; asserts 200 and returns the key.
pub async fn create_key(gw: &Gateway, body: &Value) -> String {
    let (status, json) = admin(gw, "POST", "/tyk/keys/create", Some(body)).await;
    assert_eq!(status, 200, "create key: {json}");
    json["key"]
        .as_str()
        .unwrap_or_else(|| panic!("create key: no key in {json}"))
        .to_owned()
}

/// `GET /tyk/keys/{key}`; asserts 200 and returns the session.
pub async fn get_session(gw: &Gateway, key: &str) -> Value {
    let (status, json) = admin(gw, "GET", &format!("/tyk/keys/{key}"), None).await;
    assert_eq!(status, 200, "GET /tyk/keys/{key}: {json}");
    json
}

/// `GET target` with extra headers, on a new connection.
pub async fn get_h(gw: &Gateway, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    Box::pin(request(gw.addr(), "GET", target, headers, b"")).await
}

/// `GET target` with `Authorization: <key>`.
pub async fn get_key(gw: &Gateway, target: &str, key: &str) -> RawResponse {
    get_h(gw, target, &[("Authorization", key)]).await
}

pub fn ctx(r: &RawResponse) -> String {
    format!("response was:\n{}{}", r.head, r.text())
}

/// Asserts a proxied 200.
pub fn assert_ok(r: &RawResponse, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", ctx(r));
}

/// The `Retry-After` header as integer seconds; asserts it is present
/// exactly once, an integer, and within `1..=max`.
pub fn assert_retry_after(r: &RawResponse, max: u64) -> u64 {
    let all = r.headers_all("retry-after");
    assert_eq!(all.len(), 1, "exactly one Retry-After; {}", ctx(r));
    let v: u64 = all[0].trim().parse().unwrap_or_else(|e| {
        panic!(
            "Retry-After {:?} is not an integer ({e}); {}",
            all[0],
            ctx(r)
        )
    });
    assert!(
        (1..=max).contains(&v),
        "Retry-After {v} not within 1..={max}; {}",
        ctx(r)
    );
    v
}

/// Asserts a 429 gateway error with `message` and a Retry-After in
/// `1..=max_retry`.
pub fn assert_429(r: &RawResponse, message: &str, max_retry: u64) {
    assert_tyk_error(r, 429, message);
    assert_retry_after(r, max_retry);
}

/// Asserts a 403 `Quota exceeded` with a Retry-After in `1..=max_retry`.
pub fn assert_quota_exceeded(r: &RawResponse, max_retry: u64) {
    assert_tyk_error(r, 403, MSG_QUOTA);
    assert_retry_after(r, max_retry);
}

/// Seconds since the epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The single value of header `name` parsed as an integer.
pub fn int_header(r: &RawResponse, name: &str) -> i64 {
    let all = r.headers_all(name);
    assert_eq!(all.len(), 1, "exactly one {name}: {all:?}; {}", ctx(r));
    all[0]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name} {:?} is not an integer ({e}); {}", all[0], ctx(r)))
}

/// Asserts no `X-RateLimit-*` header is present.
pub fn assert_no_ratelimit_headers(r: &RawResponse) {
    let found: Vec<_> = r
        .headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ratelimit-"))
        .collect();
    assert!(found.is_empty(), "unexpected {found:?}; {}", ctx(r));
}
