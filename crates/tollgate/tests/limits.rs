//! Rate limits and quotas on one node with the default embedded store:
//! sliding-window rate limits, quotas and their renewal, exactness under
//! concurrency, X-RateLimit headers, the keys API's view of the counters,
//! per-API limits, API-level switches and global limits, and durability of
//! quota counters across restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_testkit::keys::{Admin, admin, create_key, get_session, keyed_api, now_unix, right};
use tollgate_testkit::limits::*;
use tollgate_testkit::raw::RawResponse;
use tollgate_testkit::raw::{RawClient, assert_tyk_error};
use tollgate_testkit::{Gateway, MockUpstream, Reply, gateway};

const API: &str = "limited";
const LISTEN: &str = "/lim/";
const TARGET: &str = "/lim/x";

/// A gateway with one keyed API (`limited` on /lim/) proxying to `up`,
/// `api_extra` merged into its definition and `conf` into tyk.conf.
async fn start_on(up: &MockUpstream, api_extra: Value, conf: Value) -> Gateway {
    gateway!()
        .conf(conf)
        .api("limited.json", keyed_api(API, LISTEN, &up.url(), api_extra))
        .start()
        .await
}

/// [`start_on`] a new upstream.
async fn start(api_extra: Value, conf: Value) -> (MockUpstream, Gateway) {
    let up = MockUpstream::start().await;
    let gw = start_on(&up, api_extra, conf).await;
    (up, gw)
}

/// [`start`] with no extra settings, and a [`key`] with the given limits.
async fn start_with_key(
    rate: i64,
    per: i64,
    quota_max: i64,
    renewal: i64,
) -> (MockUpstream, Gateway, String) {
    let (up, gw) = start(json!({}), json!({})).await;
    let k = key(&gw, rate, per, quota_max, renewal).await;
    (up, gw, k)
}

/// A key on `API` with the given limits.
async fn key(gw: &Gateway, rate: i64, per: i64, quota_max: i64, renewal: i64) -> String {
    new_key(gw, &limited_session(&[API], rate, per, quota_max, renewal)).await
}

/// Creates a key with `body`; returns the key.
async fn new_key(gw: &Gateway, body: &Value) -> String {
    create_key(gw, body).await.0
}

/// `GET target` with extra headers, on a new connection.
async fn get_h(gw: &Gateway, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    tollgate_testkit::keys::call(gw, "GET", target, headers).await
}

/// `GET target` with `Authorization: <key>`.
async fn get_key(gw: &Gateway, target: &str, key: &str) -> RawResponse {
    tollgate_testkit::keys::get_with_key(gw, target, key).await
}

/// `PUT path` with `body`; asserts 200.
async fn put_ok(gw: &Gateway, path: &str, body: &Value) -> Admin {
    let a = admin(gw, "PUT", path, Some(body)).await;
    assert_eq!(a.status, 200, "PUT {path}: {}", a.json);
    a
}

/// Asserts `n` requests to `target` with `k` in a row are proxied.
async fn assert_passes(gw: &Gateway, target: &str, k: &str, n: usize, what: &str) {
    for i in 0..n {
        assert_ok(&get_key(gw, target, k).await, &format!("{what} {i}"));
    }
}

/// Sends `GET TARGET` with `k` until one is proxied, checking each refusal
/// with `refused` and sleeping `every_ms` in between; fails with `what`
/// once `deadline` has passed. Returns when the request passed.
async fn poll_until_passed(
    gw: &Gateway,
    k: &str,
    (deadline, every_ms): (Instant, u64),
    refused: impl Fn(&RawResponse),
    what: &str,
) -> Instant {
    loop {
        let r = get_key(gw, TARGET, k).await;
        if r.status == 200 {
            return Instant::now();
        }
        refused(&r);
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(every_ms)).await;
    }
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await;
}

// ---------------------------------------------------------------- rate limit

#[tokio::test]
async fn rate_limit_admits_exactly_rate_then_429_until_window_slides() {
    let (up, gw, k) = start_with_key(5, 3, -1, 0).await;

    let first_sent = Instant::now();
    let mut statuses = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..10 {
        let r = get_key(&gw, TARGET, &k).await;
        statuses.push(r.status);
        if r.status != 200 {
            refused.push(r);
        }
    }
    assert_eq!(
        statuses,
        [vec![200; 5], vec![429; 5]].concat(),
        "10 quick requests at rate 5 per 3 s"
    );
    for r in &refused {
        assert_429(r, MSG_RATE, 3);
    }
    assert_eq!(
        up.request_count(),
        5,
        "refused requests reached the upstream"
    );

    // Still inside the window of the first admissions: refused.
    sleep_until(first_sent + Duration::from_millis(2500)).await;
    assert_429(&get_key(&gw, TARGET, &k).await, MSG_RATE, 3);

    // Once the window slid past the first admissions, requests pass again
    // (the refused polls in between do not hold the window).
    let deadline = first_sent + Duration::from_millis(4500);
    let what = "no request passed within 4.5 s of the first admission";
    let refused = |r: &RawResponse| assert_429(r, MSG_RATE, 3);
    let passed_at = poll_until_passed(&gw, &k, (deadline, 50), refused, what).await;
    let after = passed_at - first_sent;
    assert!(
        after >= Duration::from_millis(2990),
        "a request passed {after:?} after the first of 5 admissions in a 3 s window"
    );
    assert_eq!(up.request_count(), 6);
}

#[tokio::test]
async fn rate_limit_is_a_sliding_window() {
    // rate 5 per 3 s: 2 at t=0, 3 at t=1.5 (window full), then at t=3.3
    // only the 2 from t=0 have left the window (exactly 2 pass), and at
    // t=4.8 the 3 from t=1.5 have left too (exactly 3 pass). Fixed 3 s
    // windows would let 5 through at t=3.3.
    let (up, gw, k) = start_with_key(5, 3, -1, 0).await;

    let t0 = Instant::now();
    assert_passes(&gw, TARGET, &k, 2, "t=0 #").await;
    sleep_until(t0 + Duration::from_millis(1500)).await;
    assert_passes(&gw, TARGET, &k, 3, "t=1.5 #").await;
    assert_429(&get_key(&gw, TARGET, &k).await, MSG_RATE, 3);

    sleep_until(t0 + Duration::from_millis(2700)).await;
    assert_429(&get_key(&gw, TARGET, &k).await, MSG_RATE, 3);

    sleep_until(t0 + Duration::from_millis(3300)).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get_key(&gw, TARGET, &k).await.status);
    }
    assert_eq!(
        statuses,
        [200, 200, 429, 429],
        "t=3.3: exactly the 2 admissions of t=0 left the window"
    );

    sleep_until(t0 + Duration::from_millis(4800)).await;
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let r = get_key(&gw, TARGET, &k).await;
        statuses.push(r.status);
        last = Some(r);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "t=4.8: exactly the 3 admissions of t=1.5 left the window"
    );
    assert_429(&last.unwrap(), MSG_RATE, 3);
    assert_eq!(up.request_count(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_do_not_consume_rate_allowance() {
    // rate 10 per 1 s; 30 requests per second, evenly spaced, for 3 s.
    let (up, gw, k) = start_with_key(10, 1, -1, 0).await;
    let addr = gw.addr();

    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for i in 0..90u32 {
        let at = start + Duration::from_micros(33_333) * i;
        tokio::time::sleep_until(at).await;
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let r = tollgate_testkit::raw::request(
                addr,
                "GET",
                TARGET,
                &[("Authorization", k.as_str())],
                b"",
            )
            .await;
            (i, r)
        }));
    }
    let mut per_second = [0usize; 3];
    for t in tasks {
        let (i, r) = t.await.unwrap();
        match r.status {
            200 => per_second[(i / 30) as usize] += 1,
            _ => assert_429(&r, MSG_RATE, 1),
        }
    }
    let total: usize = per_second.iter().sum();
    assert!(
        per_second.iter().all(|&n| n <= 10),
        "more than 10 admissions in one second: {per_second:?}"
    );
    assert!(
        (27..=30).contains(&total),
        "expected ~10 admissions per second (27..=30 over 3 s), got {total}: {per_second:?}"
    );
    assert_eq!(up.request_count(), total);
}

#[tokio::test]
async fn rate_zero_or_minus_one_is_unlimited() {
    let (up, gw) = start(json!({}), json!({})).await;
    for (rate, per) in [(0, 0), (0, 1), (-1, 1), (-1, 0)] {
        let k = key(&gw, rate, per, -1, 0).await;
        assert_passes(
            &gw,
            TARGET,
            &k,
            25,
            &format!("rate {rate} per {per}, request"),
        )
        .await;
    }
    assert_eq!(up.request_count(), 100);
}

// --------------------------------------------------------------------- quota

#[tokio::test]
async fn quota_exceeded_then_renews() {
    let (up, gw) = start(json!({}), json!({})).await;
    let created = Instant::now();
    let k = key(&gw, 0, 0, 2, 2).await;

    assert_passes(&gw, TARGET, &k, 2, "quota 1/2 ..quota 2/2").await;
    let r = get_key(&gw, TARGET, &k).await;
    assert_quota_exceeded(&r, 3);
    assert_no_ratelimit_headers(&r);
    assert_eq!(up.request_count(), 2);

    // After the 2 s renewal, requests pass again.
    let deadline = created + Duration::from_millis(4500);
    let what = "the quota did not renew within 4.5 s of creating the key (renewal 2 s)";
    let refused = |r: &RawResponse| assert_quota_exceeded(r, 3);
    poll_until_passed(&gw, &k, (deadline, 100), refused, what).await;
    // The renewed period again allows exactly quota_max.
    assert_ok(&get_key(&gw, TARGET, &k).await, "renewed 2/2");
    assert_quota_exceeded(&get_key(&gw, TARGET, &k).await, 3);
    assert_eq!(up.request_count(), 4);
}

/// Waits until the wall clock is `frac` into a second (0.0..1.0).
async fn align_to_fraction(frac: f64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let wait = (frac - now.fract()).rem_euclid(1.0);
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
}

#[tokio::test]
async fn quota_does_not_renew_before_the_renewal_period() {
    // quota_max 2 per 2 s: no third request may pass until 2 s after the
    // quota period began (at the earliest, when the key was created). The
    // key is created half-way through a wall-clock second, so renewing on
    // whole unix seconds would show up as a renewal ~1.5 s in.
    let (up, gw) = start(json!({}), json!({})).await;
    align_to_fraction(0.5).await;
    let created = Instant::now();
    let k = key(&gw, 0, 0, 2, 2).await;
    assert_passes(&gw, TARGET, &k, 2, "1/2 ..2/2").await;
    let deadline = created + Duration::from_millis(3500);
    let what = "the quota did not renew within 3.5 s (renewal 2 s)";
    let refused = |r: &RawResponse| assert_quota_exceeded(r, 3);
    let renewed_after = poll_until_passed(&gw, &k, (deadline, 25), refused, what).await - created;
    assert!(
        renewed_after >= Duration::from_millis(1990),
        "a quota of 2 per 2 s renewed {renewed_after:?} after the key was created \
         (3 requests passed within {renewed_after:?})"
    );
    assert_eq!(up.request_count(), 3);
}

#[tokio::test]
async fn quota_renewal_rate_zero_never_renews() {
    let (up, gw, k) = start_with_key(0, 0, 2, 0).await;
    assert_passes(&gw, TARGET, &k, 2, "1/2 ..2/2").await;
    assert_tyk_error(&get_key(&gw, TARGET, &k).await, 403, MSG_QUOTA);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    for _ in 0..3 {
        assert_tyk_error(&get_key(&gw, TARGET, &k).await, 403, MSG_QUOTA);
    }
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn quota_minus_one_is_unlimited() {
    let (up, gw, k) = start_with_key(0, 0, -1, 3600).await;
    assert_passes(&gw, TARGET, &k, 30, "request").await;
    assert_eq!(up.request_count(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_exceed_the_quota() {
    const N: usize = 250;
    let (up, gw, k) = start_with_key(0, 0, 100, 3600).await;
    let addr = gw.addr();
    let request = Arc::new(
        format!("GET {TARGET} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {k}\r\nConnection: close\r\n\r\n")
            .into_bytes(),
    );

    // Connect all clients first, then send every request at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for _ in 0..N {
        let barrier = Arc::clone(&barrier);
        let request = Arc::clone(&request);
        tasks.push(tokio::spawn(async move {
            let mut c = RawClient::connect(addr).await.unwrap();
            barrier.wait().await;
            c.send(&request).await.unwrap();
            c.read_response(Duration::from_secs(20)).await.unwrap()
        }));
    }
    let (mut ok, mut quota) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            _ => {
                assert_quota_exceeded(&r, 3601);
                quota += 1;
            }
        }
    }
    assert_eq!((ok, quota), (100, 150), "(200s, 403s) for quota_max 100");
    // Give any stray forwarded request time to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        up.request_count(),
        100,
        "requests that reached the upstream"
    );
    let s = get_session(&gw, &k).await;
    assert_eq!(s["quota_remaining"], 0, "session: {s}");
}

#[tokio::test]
async fn quota_refusal_does_not_use_rate_allowance() {
    // rate 3 per 10 s, quota 2: if the quota-refused requests used rate
    // allowance, the 4th request would get 429.
    let (up, gw, k) = start_with_key(3, 10, 2, 3600).await;
    assert_passes(&gw, TARGET, &k, 2, "1 ..2").await;
    for i in 3..=5 {
        let r = get_key(&gw, TARGET, &k).await;
        assert_eq!(r.status, 403, "request {i}: {}", ctx(&r));
        assert_quota_exceeded(&r, 3601);
    }
    assert_eq!(up.request_count(), 2);
}

// ------------------------------------------------------------------- headers

/// Asserts `X-RateLimit-Limit` and `X-RateLimit-Remaining` (each once, as
/// integers); returns `X-RateLimit-Reset` (also once, an integer).
fn assert_limit_headers(r: &RawResponse, limit: i64, remaining: i64) -> i64 {
    assert_eq!(int_header(r, "X-RateLimit-Limit"), limit, "{}", ctx(r));
    assert_eq!(
        int_header(r, "X-RateLimit-Remaining"),
        remaining,
        "{}",
        ctx(r)
    );
    int_header(r, "X-RateLimit-Reset")
}

#[tokio::test]
async fn quota_headers_on_proxied_responses() {
    let up = MockUpstream::start().await;
    // The upstream's own X-RateLimit-* headers must not reach the client.
    let own = [("Limit", "999"), ("Remaining", "999"), ("Reset", "1")];
    let reply = own.iter().fold(Reply::fixed(200, "up"), |r, (k, v)| {
        r.header(&format!("X-RateLimit-{k}"), v)
    });
    up.on("/x", reply);
    let gw = start_on(&up, json!({}), json!({})).await;
    let k = key(&gw, 100, 1, 3, 60).await;
    let mut resets = Vec::new();
    for expected_remaining in [2, 1, 0] {
        let before = now_unix();
        let r = get_key(&gw, TARGET, &k).await;
        let after = now_unix();
        assert_eq!((r.status, r.text().as_str()), (200, "up"), "{}", ctx(&r));
        let reset = assert_limit_headers(&r, 3, expected_remaining);
        assert!(
            (before + 60 - 3..=after + 60 + 1).contains(&reset),
            "X-RateLimit-Reset {reset} not ≈ now ({before}) + 60; {}",
            ctx(&r)
        );
        resets.push(reset);
    }
    assert!(
        resets.iter().all(|&r| r == resets[0]),
        "the quota renewal moved between requests: {resets:?}"
    );
    let r = get_key(&gw, TARGET, &k).await;
    assert_quota_exceeded(&r, 61);
    assert_no_ratelimit_headers(&r);
    assert_eq!(up.request_count(), 3);
}

#[tokio::test]
async fn rate_limit_headers_mode() {
    let (up, gw) = start(
        json!({}),
        json!({"rate_limit_response_headers": "rate_limits"}),
    )
    .await;
    let k = key(&gw, 2, 10, 100, 3600).await;
    for expected_remaining in [1, 0] {
        let r = get_key(&gw, TARGET, &k).await;
        assert_ok(&r, "within rate");
        assert_limit_headers(&r, 2, expected_remaining);
    }
    let r = get_key(&gw, TARGET, &k).await;
    assert_429(&r, MSG_RATE, 10);
    assert_limit_headers(&r, 2, 0);
    assert_eq!(up.request_count(), 2);
}

// ------------------------------------------------------------------ keys API

#[tokio::test]
async fn key_details_show_quota_usage() {
    let (_up, gw, k) = start_with_key(0, 0, 5, 60).await;
    assert_passes(&gw, TARGET, &k, 2, "1 ..2").await;
    let now = now_unix();
    let s = get_session(&gw, &k).await;
    assert_eq!(s["quota_remaining"], 3, "session: {s}");
    let renews = s["quota_renews"]
        .as_i64()
        .unwrap_or_else(|| panic!("quota_renews is not an integer: {s}"));
    assert!(
        (now + 60 - 3..=now + 60 + 1).contains(&renews),
        "quota_renews {renews} not ≈ now ({now}) + 60: {s}"
    );
}

#[tokio::test]
async fn updating_a_key_resets_its_quota_unless_suppressed() {
    let (up, gw) = start(json!({}), json!({})).await;
    let body = limited_session(&[API], 0, 0, 2, 3600);
    let k = new_key(&gw, &body).await;
    let path = format!("/tyk/keys/{k}");

    assert_passes(&gw, TARGET, &k, 2, "1/2 ..2/2").await;
    assert_quota_exceeded(&get_key(&gw, TARGET, &k).await, 3601);

    // PUT with the same body resets the counter.
    put_ok(&gw, &path, &body).await;
    let s = get_session(&gw, &k).await;
    assert_eq!(s["quota_remaining"], 2, "after PUT: {s}");
    assert_passes(&gw, TARGET, &k, 2, "after reset 1/2 ..after reset 2/2").await;
    assert_quota_exceeded(&get_key(&gw, TARGET, &k).await, 3601);

    // With suppress_reset=1 the counter is kept.
    put_ok(&gw, &format!("{path}?suppress_reset=1"), &body).await;
    assert_quota_exceeded(&get_key(&gw, TARGET, &k).await, 3601);
    let s = get_session(&gw, &k).await;
    assert_eq!(s["quota_remaining"], 0, "after PUT ?suppress_reset=1: {s}");
    assert_eq!(up.request_count(), 4);
}

// ----------------------------------------------------------- per-API limits

#[tokio::test]
async fn per_api_limits_are_independent() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .api("a.json", keyed_api("A", "/a/", &up.url(), json!({})))
        .api("b.json", keyed_api("B", "/b/", &up.url(), json!({})))
        .start()
        .await;
    let mut a = right("A");
    a["limit"] = json!({"rate": 0, "per": 0, "quota_max": 2, "quota_renewal_rate": 3600});
    let mut b = right("B");
    b["limit"] = json!({"rate": 0, "per": 0, "quota_max": 3, "quota_renewal_rate": 3600});
    let mut body = limited_session(&["A", "B"], 1000, 1, 10, 3600);
    body["access_rights"] = json!({"A": a, "B": b});
    let k = new_key(&gw, &body).await;

    let plan: [(&str, u16); 9] = [
        ("/a/1", 200),
        ("/a/2", 200),
        ("/b/1", 200),
        ("/a/3", 403),
        ("/a/4", 403),
        ("/b/2", 200),
        ("/b/3", 200),
        ("/b/4", 403),
        ("/a/5", 403),
    ];
    for (target, status) in plan {
        let r = get_key(&gw, target, &k).await;
        assert_eq!(r.status, status, "{target}: {}", ctx(&r));
        if status == 403 {
            assert_quota_exceeded(&r, 3601);
        }
    }
    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/1", "/2", "/1", "/2", "/3"]);
}

// ---------------------------------------------------------------- throttling

/// A key on `API` at `rate` per `per` seconds with Tyk's throttle settings.
async fn throttled_key(gw: &Gateway, rate: i64, per: i64, interval: f64, retries: i64) -> String {
    let mut body = limited_session(&[API], rate, per, -1, 0);
    body["throttle_interval"] = json!(interval);
    body["throttle_retry_limit"] = json!(retries);
    new_key(gw, &body).await
}

#[tokio::test]
async fn a_throttled_request_waits_for_room_instead_of_a_429() {
    let (up, gw) = start(json!({}), json!({})).await;
    let k = throttled_key(&gw, 2, 1, 0.4, 5).await;

    let first = Instant::now();
    for _ in 0..2 {
        let r = get_key(&gw, TARGET, &k).await;
        assert_eq!(r.status, 200, "{}", ctx(&r));
    }
    // Over the rate: re-checked every 0.4 s until the 1 s window has slid past the first
    // admission, then proxied.
    let r = get_key(&gw, TARGET, &k).await;
    let waited = first.elapsed();
    assert_eq!(r.status, 200, "{}", ctx(&r));
    assert!(
        waited >= Duration::from_millis(990) && waited < Duration::from_millis(2500),
        "the throttled request ended {waited:?} after the first admission"
    );
    assert_eq!(up.request_count(), 3);
}

#[tokio::test]
async fn throttling_gives_up_after_its_retry_limit() {
    let (up, gw) = start(json!({}), json!({})).await;
    let k = throttled_key(&gw, 1, 60, 0.2, 2).await;
    assert_eq!(get_key(&gw, TARGET, &k).await.status, 200);

    let sent = Instant::now();
    let r = get_key(&gw, TARGET, &k).await;
    let waited = sent.elapsed();
    assert_429(&r, MSG_RATE, 60);
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(2000),
        "two re-checks 0.2 s apart took {waited:?}"
    );

    // Tyk's defaults (-1) do not throttle: refused at once.
    let plain = throttled_key(&gw, 1, 60, -1.0, -1).await;
    assert_eq!(get_key(&gw, TARGET, &plain).await.status, 200);
    let sent = Instant::now();
    assert_429(&get_key(&gw, TARGET, &plain).await, MSG_RATE, 60);
    assert!(
        sent.elapsed() < Duration::from_millis(350),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(up.request_count(), 2);
}

// -------------------------------------------------------- API-level settings

/// Two keyed APIs on a new upstream: `free` on /free/ with `free_extra`
/// merged into it, and `paid` on /paid/ without.
async fn free_and_paid(free_extra: Value) -> (MockUpstream, Gateway) {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .api(
            "free.json",
            keyed_api("free", "/free/", &up.url(), free_extra),
        )
        .api(
            "paid.json",
            keyed_api("paid", "/paid/", &up.url(), json!({})),
        )
        .start()
        .await;
    (up, gw)
}

#[tokio::test]
async fn disable_quota_neither_enforces_nor_counts() {
    let (up, gw) = free_and_paid(json!({"disable_quota": true})).await;
    let k = new_key(&gw, &limited_session(&["free", "paid"], 0, 0, 2, 3600)).await;
    assert_passes(&gw, "/free/x", &k, 5, "disable_quota API, request").await;
    // Nothing was counted: the key still has its full quota elsewhere.
    assert_passes(&gw, "/paid/x", &k, 2, "paid 1/2 ..paid 2/2").await;
    assert_quota_exceeded(&get_key(&gw, "/paid/x", &k).await, 3601);
    assert_eq!(up.request_count(), 7);
}

#[tokio::test]
async fn disable_rate_limit_does_not_enforce_the_rate() {
    let (up, gw) = free_and_paid(json!({"disable_rate_limit": true})).await;
    let k = new_key(&gw, &limited_session(&["free", "paid"], 2, 10, -1, 0)).await;
    assert_passes(&gw, "/free/x", &k, 6, "disable_rate_limit API, request").await;
    // Control: the same limits are enforced on an API without the switch.
    let k2 = new_key(&gw, &limited_session(&["free", "paid"], 2, 10, -1, 0)).await;
    assert_passes(&gw, "/paid/x", &k2, 2, "paid 1/2 ..paid 2/2").await;
    assert_429(&get_key(&gw, "/paid/x", &k2).await, MSG_RATE, 10);
    assert_eq!(up.request_count(), 8);
}

#[tokio::test]
async fn global_rate_limit_on_keyless_api_is_shared_by_all_clients() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .keyless_api(
            "g",
            &up,
            json!({"global_rate_limit": {"rate": 3, "per": 5}}),
        )
        .keyless_api("open", &up, json!({}))
        .start()
        .await;
    let clients = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];
    let mut statuses = Vec::new();
    for ip in clients {
        let r = get_h(&gw, "/g/x", &[("X-Forwarded-For", ip), ("X-Real-IP", ip)]).await;
        statuses.push(r.status);
        if r.status != 200 {
            assert_429(&r, MSG_API_RATE, 5);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // Another API is not affected.
    for i in 0..5 {
        assert_ok(&get_h(&gw, "/open/x", &[]).await, &format!("open {i}"));
    }
    assert_eq!(up.request_count(), 8);
}

#[tokio::test]
async fn key_rate_limit_applies_before_the_api_limit() {
    let (up, gw) = start(
        json!({"global_rate_limit": {"rate": 4, "per": 10}}),
        json!({}),
    )
    .await;
    let k1 = key(&gw, 1, 10, -1, 0).await;
    let k2 = key(&gw, 1, 10, -1, 0).await;
    for (name, k) in [("k1", &k1), ("k2", &k2)] {
        assert_ok(&get_key(&gw, TARGET, k).await, name);
        for _ in 0..3 {
            // The key's own limit, not the API's.
            assert_429(&get_key(&gw, TARGET, k).await, MSG_RATE, 10);
        }
    }
    // Only 2 of the API's 4 were used: two more keys get through.
    let k3 = key(&gw, 1, 10, -1, 0).await;
    assert_ok(&get_key(&gw, TARGET, &k3).await, "k3");
    let k4 = key(&gw, 1, 10, -1, 0).await;
    assert_ok(&get_key(&gw, TARGET, &k4).await, "k4");
    // Now the API limit is reached.
    let k5 = key(&gw, 1, 10, -1, 0).await;
    assert_429(&get_key(&gw, TARGET, &k5).await, MSG_API_RATE, 10);
    assert_eq!(up.request_count(), 4);
}

// ---------------------------------------------------------------- durability

/// After 3 of a quota of 5 were used (and a restart): the session shows 2
/// left, 2 more pass, the next is refused, 5 reached the upstream.
async fn assert_2_of_5_left(up: &MockUpstream, gw: &Gateway, k: &str, what: &str) {
    let s = get_session(gw, k).await;
    assert_eq!(s["quota_remaining"], 2, "{what}: {s}");
    assert_passes(gw, TARGET, k, 2, "4/5 ..5/5").await;
    assert_quota_exceeded(&get_key(gw, TARGET, k).await, 3601);
    assert_eq!(up.request_count(), 5);
}

#[tokio::test]
async fn quota_counter_survives_sigkill() {
    let (up, mut gw, k) = start_with_key(0, 0, 5, 3600).await;
    assert_passes(&gw, TARGET, &k, 3, "use").await;
    // The counter is written behind within ~0.5 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.restart().await;

    assert_2_of_5_left(&up, &gw, &k, "after SIGKILL restart").await;
}

#[tokio::test]
async fn quota_counter_survives_graceful_restart() {
    let (up, mut gw, k) = start_with_key(0, 0, 5, 3600).await;
    assert_passes(&gw, TARGET, &k, 3, "use").await;
    // No wait: a graceful shutdown flushes the counters.
    gw.sigterm();
    let exit = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "SIGTERM exit: {exit:?}\n{}",
        gw.log()
    );
    gw.restart().await;

    assert_2_of_5_left(&up, &gw, &k, "after SIGTERM restart").await;
}
