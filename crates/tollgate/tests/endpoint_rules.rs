//! Per-endpoint rules of a not-versioned API beyond the lists (`global_size_limit`,
//! `size_limits`, `hard_timeouts`, `mock_response`), against the real binary and a real
//! upstream: exact statuses and bodies, and whether (and what) the upstream received.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_testkit::keys::keyed_api;
use tollgate_testkit::keys::{KEYED, KEYED_LISTEN, MSG_DISALLOWED, MSG_MISSING, create_key};
use tollgate_testkit::limits::limited_session;
use tollgate_testkit::raw::{RawResponse, assert_tyk_error, request};
use tollgate_testkit::{Gateway, MockUpstream, Reply, extended_version, gateway};

const TOO_LARGE: &str = "Request is too large";
const LENGTH_REQUIRED: &str = "Content length is required for this request";
const HARD_TIMEOUT: &str = "Upstream service reached hard timeout.";

async fn send(
    gw: &Gateway,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    Box::pin(request(gw.addr(), method, target, headers, body)).await
}

/// Asserts the request reached the upstream (200) as `path` with exactly `body`.
async fn assert_forwarded(
    gw: &Gateway,
    up: &MockUpstream,
    (method, target, path): (&str, &str, &str),
    headers: &[(&str, &str)],
    body: &[u8],
    received: &[u8],
) {
    let before = up.request_count();
    let r = send(gw, method, target, headers, body).await;
    assert_eq!(r.status, 200, "{method} {target}: {}", r.dump());
    assert_eq!(up.request_count(), before + 1, "{method} {target}");
    let last = up.last();
    assert_eq!((last.method.as_str(), last.path.as_str()), (method, path));
    assert_eq!(last.body.len(), received.len(), "{method} {target}");
    assert!(last.body == received, "{method} {target}: body differs");
}

const CHUNKED: &[(&str, &str)] = &[("Transfer-Encoding", "chunked")];
const HELLO_CHUNKED: &[u8] = b"5\r\nhello\r\n0\r\n\r\n";

#[tokio::test]
async fn size_limits_as_tyk() {
    let up = MockUpstream::start().await;
    let limited = extended_version(
        json!({"global_size_limit": 1024, "extended_paths": {"size_limits": [
        {"path": "/post", "method": "POST", "size_limit": 512}]}}),
    );
    let endpoint_only = extended_version(json!({"extended_paths": {"size_limits": [
        {"path": "/post", "method": "POST", "size_limit": 512},
        {"path": "/off", "method": "POST", "size_limit": 1, "disabled": true}]}}));
    let gw = gateway!()
        .keyless_api("s", &up, limited)
        .keyless_api("e", &up, endpoint_only)
        .start()
        .await;
    let kb = vec![b'a'; 1024];
    let over = vec![b'b'; 1025];
    // Tyk's TestRequestSizeLimit: the global limit is inclusive.
    assert_forwarded(&gw, &up, ("POST", "/s/x", "/x"), &[], &kb, &kb).await;
    for method in ["POST", "PUT", "PATCH"] {
        gw.assert_refused(&up, (method, "/s/x"), &[], &over, (400, TOO_LARGE))
            .await;
    }
    // The endpoint's own limit, under the global one.
    assert_forwarded(
        &gw,
        &up,
        ("POST", "/s/post", "/post"),
        &[],
        &kb[..512],
        &kb[..512],
    )
    .await;
    gw.assert_refused(&up, ("POST", "/s/post"), &[], &kb[..513], (400, TOO_LARGE))
        .await;
    // Methods without a body are never checked, whatever they carry.
    let big = vec![b'c'; 5000];
    for method in ["GET", "DELETE"] {
        assert_forwarded(&gw, &up, (method, "/s/post", "/post"), &[], &big, &big).await;
    }
    for method in ["OPTIONS", "TRACE"] {
        assert_forwarded(&gw, &up, (method, "/s/x", "/x"), &[], b"", b"").await;
    }
    let r = send(&gw, "HEAD", "/s/x", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.dump());
    // No declared length where a limit applies: 411, nothing forwarded.
    let required = (411, LENGTH_REQUIRED);
    gw.assert_refused(&up, ("POST", "/s/x"), CHUNKED, HELLO_CHUNKED, required)
        .await;
    gw.assert_refused(&up, ("PUT", "/s/x"), &[], b"", required)
        .await;
    gw.assert_refused(&up, ("POST", "/e/post"), CHUNKED, HELLO_CHUNKED, required)
        .await;
    gw.assert_refused(&up, ("POST", "/e/post"), &[], &kb[..513], (400, TOO_LARGE))
        .await;
    // Where no limit applies, a chunked body streams on (Tyk asks for a length only there).
    assert_forwarded(
        &gw,
        &up,
        ("POST", "/e/x", "/x"),
        CHUNKED,
        HELLO_CHUNKED,
        b"hello",
    )
    .await;
    assert_forwarded(&gw, &up, ("POST", "/e/off", "/off"), &[], &kb, &kb).await;
    assert_forwarded(&gw, &up, ("PUT", "/e/post", "/post"), &[], &kb, &kb).await;
}

/// `GET target`, with how long the answer took.
async fn timed_get(gw: &Gateway, target: &str) -> (RawResponse, Duration) {
    let start = Instant::now();
    let r = send(gw, "GET", target, &[], b"").await;
    (r, start.elapsed())
}

/// An upstream answering `late` 2 s after a request to any of `paths`, and a gateway with
/// `proxy_default_timeout` `default_secs` and the API `t` on `/t/` with `hard_timeouts`.
async fn late_upstream(
    paths: &[&str],
    default_secs: u64,
    hard_timeouts: Value,
) -> (MockUpstream, Gateway) {
    let up = MockUpstream::start().await;
    for path in paths {
        up.on(
            path,
            Reply::fixed(200, "late").delay(Duration::from_secs(2)),
        );
    }
    let timeouts = extended_version(json!({"extended_paths": {"hard_timeouts": hard_timeouts}}));
    let gw = gateway!()
        .proxy_default_timeout(default_secs)
        .keyless_api("t", &up, timeouts)
        .start()
        .await;
    (up, gw)
}

#[tokio::test]
async fn hard_timeout_shorter_than_the_default() {
    let entries = json!([
        {"path": "/slow", "method": "GET", "timeout": 1},
        {"path": "/off", "method": "GET", "timeout": 1, "disabled": true}]);
    let (up, gw) = late_upstream(&["/slow", "/plain", "/off"], 10, entries).await;
    let (r, took) = timed_get(&gw, "/t/slow").await;
    assert_tyk_error(&r, 504, HARD_TIMEOUT);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1900),
        "504 after {took:?} with a 1 s hard timeout"
    );
    assert_eq!(up.last().path, "/slow", "the request was sent upstream");
    for path in ["/t/plain", "/t/off"] {
        let (r, took) = timed_get(&gw, path).await;
        assert_eq!((r.status, r.text().as_str()), (200, "late"), "{path}");
        assert!(
            took >= Duration::from_secs(2),
            "{path} answered after {took:?}"
        );
    }
    // The entry is for GET only.
    let r = send(&gw, "POST", "/t/slow", &[], b"x").await;
    assert_eq!((r.status, r.text().as_str()), (200, "late"));
}

#[tokio::test]
async fn hard_timeout_longer_than_the_default_wins() {
    let entries = json!([
        {"path": "/long", "method": "GET", "timeout": 4},
        {"path": "/zero", "method": "GET", "timeout": 0}]);
    let (_up, gw) = late_upstream(&["/long", "/plain", "/zero"], 1, entries).await;
    let (r, _) = timed_get(&gw, "/t/long").await;
    assert_eq!((r.status, r.text().as_str()), (200, "late"), "{}", r.dump());
    // No entry, or a zero one: the 1 s default.
    for path in ["/t/plain", "/t/zero"] {
        let (r, took) = timed_get(&gw, path).await;
        assert_tyk_error(&r, 504, HARD_TIMEOUT);
        assert!(took < Duration::from_millis(1900), "{path}: {took:?}");
    }
}

fn mocks() -> Value {
    json!({"mock_response": [
        {"path": "/mock", "method": "GET", "code": 201, "body": "{\"mocked\": true}",
            "headers": {"Content-Type": "application/json", "X-Mock": "yes"}},
        {"path": "/zero", "method": "GET", "code": 0, "body": "plain"},
        {"path": "/off", "method": "GET", "code": 500, "disabled": true},
        {"path": "/open", "method": "GET", "code": 202, "body": "open"}
    ]})
}

#[tokio::test]
async fn keyless_mock_is_answered_without_the_upstream() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .keyless_api(
            "m",
            &up,
            extended_version(json!({"extended_paths": mocks()})),
        )
        .start()
        .await;
    let r = send(&gw, "GET", "/m/mock", &[], b"").await;
    assert_eq!((r.status, r.text().as_str()), (201, "{\"mocked\": true}"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-mock"), Some("yes"));
    assert_eq!(
        r.header("x-generator"),
        None,
        "a mock is not a gateway error"
    );
    let r = send(&gw, "GET", "/m/zero", &[], b"").await;
    assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    assert_eq!(up.request_count(), 0, "a mock never calls the upstream");
    // Another method, or a disabled entry: the upstream answers.
    assert_forwarded(&gw, &up, ("POST", "/m/mock", "/mock"), &[], b"x", b"x").await;
    assert_forwarded(&gw, &up, ("GET", "/m/off", "/off"), &[], b"", b"").await;
}

#[tokio::test]
async fn keyed_mock_needs_a_key_and_counts_against_the_quota() {
    let up = MockUpstream::start().await;
    let extra = extended_version(json!({"extended_paths": {
        "ignored": [{"path": "/open", "method": "GET"}]}}));
    let mut def = keyed_api(KEYED, KEYED_LISTEN, &up.url(), extra);
    def["version_data"]["versions"]["Default"]["extended_paths"]["mock_response"] =
        mocks()["mock_response"].clone();
    let gw = gateway!().api("keyed.json", def).start().await;
    let at = |p: &str| format!("{KEYED_LISTEN}{p}");
    let no_key = send(&gw, "GET", &at("mock"), &[], b"").await;
    assert_tyk_error(&no_key, 401, MSG_MISSING);
    let bad = send(&gw, "GET", &at("mock"), &[("Authorization", "nope")], b"").await;
    assert_tyk_error(&bad, 403, MSG_DISALLOWED);
    let (key, _) = create_key(&gw, &limited_session(&[KEYED], 1000, 1, 1, 3600)).await;
    let auth = [("Authorization", key.as_str())];
    let r = send(&gw, "GET", &at("mock"), &auth, b"").await;
    assert_eq!((r.status, r.text().as_str()), (201, "{\"mocked\": true}"));
    // The quota was counted, and its headers go on the mock as on an upstream response.
    assert_eq!(r.header("x-ratelimit-limit"), Some("1"), "{}", r.dump());
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"), "{}", r.dump());
    let r = send(&gw, "GET", &at("mock"), &auth, b"").await;
    assert_tyk_error(&r, 403, "Quota exceeded");
    // An ignored endpoint skips auth and quota, not the mock.
    let r = send(&gw, "GET", &at("open"), &[], b"").await;
    assert_eq!((r.status, r.text().as_str()), (202, "open"));
    assert_eq!(up.request_count(), 0, "a mock never calls the upstream");
    // The key's used-up quota still applies to the rest of the API.
    let r = send(&gw, "GET", &at("other"), &auth, b"").await;
    assert_tyk_error(&r, 403, "Quota exceeded");
}
