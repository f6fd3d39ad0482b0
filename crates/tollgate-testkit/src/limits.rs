//! Rate limits and quotas: limited session bodies and the checks on the
//! gateway's 429 / 403 refusals and its `X-RateLimit-*` / `Retry-After`
//! headers.

use serde_json::{Value, json};

use crate::keys::{ORG, rights};
use crate::raw::{RawResponse, assert_tyk_error};

/// 429: the key's own rate limit.
pub const MSG_RATE: &str = "Rate Limit Exceeded";
/// 429: the API's global rate limit.
pub const MSG_API_RATE: &str = "API Rate Limit Exceeded";
/// 403: the quota is used up.
pub const MSG_QUOTA: &str = "Quota exceeded";

/// A never-expiring Tyk session for `api_ids` with the given limits.
pub fn limited_session(
    api_ids: &[&str],
    rate: i64,
    per: i64,
    quota_max: i64,
    renewal: i64,
) -> Value {
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

/// [`session_with`](crate::keys::session_with) `api_ids`, with no rate
/// limit and a fresh quota of `quota_max` renewing every `renewal` s.
pub fn quota_session(api_ids: &[&str], quota_max: i64, renewal: i64) -> Value {
    crate::keys::session_with(
        api_ids,
        json!({"rate": 0, "allowance": 0, "quota_max": quota_max, "quota_remaining": quota_max,
               "quota_renewal_rate": renewal}),
    )
}

/// `response was:` and the whole response, for failure messages.
pub fn ctx(r: &RawResponse) -> String {
    format!("response was:\n{}", r.dump())
}

/// Asserts a proxied 200.
pub fn assert_ok(r: &RawResponse, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", ctx(r));
}

/// The single value of header `name`; asserts it is there exactly once and
/// parses as an integer.
fn single_int<T: std::str::FromStr>(r: &RawResponse, name: &str) -> T
where
    T::Err: std::fmt::Display,
{
    let all = r.headers_all(name);
    assert_eq!(all.len(), 1, "exactly one {name}: {all:?}; {}", ctx(r));
    all[0]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name} {:?} is not an integer ({e}); {}", all[0], ctx(r)))
}

/// The `Retry-After` header as integer seconds; asserts it is present
/// exactly once, an integer, and within `1..=max`.
pub fn assert_retry_after(r: &RawResponse, max: u64) -> u64 {
    let v: u64 = single_int(r, "Retry-After");
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

/// The single value of header `name` parsed as an integer.
pub fn int_header(r: &RawResponse, name: &str) -> i64 {
    single_int(r, name)
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
