//! Several gateway nodes sharing one Redis: keys created on one node work on
//! the others, updates and deletes reach every node within a second, a group
//! reload reaches every node, and quotas and rate limits hold across nodes.
//!
//! Every test starts its own redis-server on a free port (never 6379).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_testkit::keys::*;
use tollgate_testkit::limits::quota_session;
use tollgate_testkit::raw::assert_tyk_error;
use tollgate_testkit::redis::*;
use tollgate_testkit::traffic::*;
use tollgate_testkit::{Gateway, MockUpstream, api_def, gateway, tyk_error_body};

const API: &str = "keyed";
const MSG_QUOTA: &str = "Quota exceeded";
const MSG_RATE: &str = "Rate Limit Exceeded";

/// A new Redis, a new upstream and [`nodes`]`(n)` on them.
async fn setup(n: usize) -> (RedisServer, MockUpstream, Vec<Gateway>) {
    let redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let gws = nodes(&redis, &up, n).await;
    (redis, up, gws)
}

/// `n` nodes on `redis`, each with the keyed API (`keyed` on /api/) to `up`.
async fn nodes(redis: &RedisServer, up: &MockUpstream, n: usize) -> Vec<Gateway> {
    keyed_nodes(gateway!(), &redis_storage(redis.port()), &up.url(), n).await
}

/// Polls `GET /api/ping` with `key` on `gw` every 50 ms until it answers
/// 403 with exactly `message`; panics if that takes longer than 1 s from
/// `since`. Returns how long it took.
async fn node_refuses_within_1s(
    gw: &Gateway,
    key: &str,
    message: &str,
    since: Instant,
    name: &str,
) -> Duration {
    let what = format!("node {name} refusing the key with 403 {message:?}");
    let took = refused_within_1s(gw, ("/api/ping", key), message, since, &what).await;
    assert!(
        took <= Duration::from_secs(1),
        "node {name} took {took:?} to refuse the key"
    );
    took
}

/// Every request got a 200 or Tyk's 429 rate-limit refusal.
fn assert_ok_or_rate_limited(sent: &[Sent]) {
    let rate_body = tyk_error_body(MSG_RATE);
    let bad = first_bad(sent, |s| {
        s.status() == 200
            || s.resp
                .as_ref()
                .is_ok_and(|r| r.status == 429 && r.text() == rate_body)
    });
    assert!(
        bad.is_empty(),
        "statuses {:?}; unexpected:\n{bad}",
        status_counts(sent)
    );
}

#[tokio::test]
async fn key_created_on_one_node_works_on_every_node() {
    let (redis, up, gws) = setup(3).await;

    let (key, hash) = create_key(&gws[0], &session_for(&[API])).await;

    // B and C have never seen the key: they must find it in Redis.
    for (i, gw) in gws.iter().enumerate().rev() {
        let before = up.request_count();
        let r = get_with_key(gw, "/api/ping", &key).await;
        assert_echo_ok(&r, "/ping");
        assert_eq!(up.request_count(), before + 1, "node {i}");
        assert_eq!(up.last().header("authorization"), Some(key.as_str()));
    }

    // Redis holds the session under Tyk's key name.
    let stored = redis.cli(&["GET", &format!("apikey-{hash}")]).await;
    let session: Value = serde_json::from_str(&stored).unwrap_or_else(|e| {
        panic!("redis GET apikey-{hash} is not a JSON session ({e}): {stored:?}")
    });
    assert_eq!(session["org_id"], ORG, "{stored}");

    // The admin API of another node reads it too.
    let s = get_session(&gws[2], &key).await;
    assert_eq!(s["org_id"], ORG, "{s}");

    // An unknown key is refused everywhere and reaches no upstream.
    let before = up.request_count();
    for gw in &gws {
        let r = get_with_key(gw, "/api/ping", "no-such-key-anywhere").await;
        assert_tyk_error(&r, 403, MSG_DISALLOWED);
    }
    assert_eq!(up.request_count(), before);
}

/// Nodes `b` and `c` refuse `key` with 403 `message` within 1 s from now
/// (see [`node_refuses_within_1s`]); `what` names the change in the log.
async fn b_and_c_refuse(b: &Gateway, c: &Gateway, key: &str, message: &str, what: &str) {
    let since = Instant::now();
    let tb = node_refuses_within_1s(b, key, message, since, "B").await;
    let tc = node_refuses_within_1s(c, key, message, since, "C").await;
    eprintln!("{what} seen on B after {tb:?}, on C after {tc:?}");
}

#[tokio::test]
async fn key_update_and_delete_reach_every_node_within_a_second() {
    let (_redis, up, gws) = setup(3).await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);

    let (key, _) = create_key(a, &session_for(&[API])).await;
    // B and C serve the key once, so they hold it in their caches.
    for gw in [b, c] {
        assert_echo_ok(&get_with_key(gw, "/api/ping", &key).await, "/ping");
    }

    // Deactivate on A.
    let body = session_with(&[API], json!({"is_inactive": true}));
    let path = format!("/tyk/keys/{key}");
    admin(a, "PUT", &path, Some(&body))
        .await
        .assert_action("modified");
    b_and_c_refuse(b, c, &key, MSG_INACTIVE, "inactive").await;

    // Delete on A.
    admin(a, "DELETE", &path, None)
        .await
        .assert_action("deleted");
    b_and_c_refuse(b, c, &key, MSG_DISALLOWED, "delete").await;

    // It stays refused (no stale cache entry comes back) and A agrees.
    let before = up.request_count();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for gw in &gws {
        let r = get_with_key(gw, "/api/ping", &key).await;
        assert_tyk_error(&r, 403, MSG_DISALLOWED);
    }
    assert_eq!(
        up.request_count(),
        before,
        "a refused request reached upstream"
    );
    assert_key_absent(b, &key).await;
}

/// `GET path` answers 200 from the echo upstream on `gw` (polling every
/// 50 ms until `deadline` from `since`).
async fn serves_within(gw: &Gateway, path: &str, since: Instant, deadline: Duration, name: &str) {
    let what = format!("node {name} serving {path}");
    let (_, took) = status_within(gw, (path, None), 200, (since, deadline), &what).await;
    eprintln!("node {name} serves {path} after {took:?}");
}

#[tokio::test]
async fn group_reload_on_one_node_reloads_every_node() {
    let redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let apps = SharedApps::new();
    apps.write("a.json", &api_def("a", "/a/", &up.url()));
    let storage = redis_storage(redis.port());
    let gws = start_nodes(node(gateway!(), &storage).conf(apps.conf()), 3).await;
    for gw in &gws {
        assert_echo_ok(&call(gw, "GET", "/a/x", &[]).await, "/x");
    }

    // A new definition is not live anywhere before a reload.
    apps.write("b.json", &api_def("b", "/b/", &up.url()));
    for gw in &gws {
        assert_tyk_error(&call(gw, "GET", "/b/x", &[]).await, 404, "Not Found");
    }

    let r = admin(&gws[0], "GET", "/tyk/reload/group", None).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "ok", "{}", r.json);
    let since = Instant::now();
    let deadline = Duration::from_secs(2);
    for (gw, name) in gws.iter().zip(["A", "B", "C"]) {
        serves_within(gw, "/b/x", since, deadline, name).await;
    }
    for gw in &gws {
        assert_echo_ok(&call(gw, "GET", "/a/x", &[]).await, "/x");
    }

    // With ?block=true, A has reloaded when it answers; B and C follow.
    apps.write("c.json", &api_def("c", "/c/", &up.url()));
    let r = admin(&gws[0], "GET", "/tyk/reload/group?block=true", None).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "ok", "{}", r.json);
    let since = Instant::now();
    assert_echo_ok(&call(&gws[0], "GET", "/c/x", &[]).await, "/x");
    for (gw, name) in gws[1..].iter().zip(["B", "C"]) {
        serves_within(gw, "/c/x", since, deadline, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_is_exact_across_nodes() {
    let (_redis, up, gws) = setup(3).await;
    let body = quota_session(&[API], 100, 3600);
    let (key, _) = create_key(&gws[0], &body).await;

    let sent = Load::new("/api/q", Some(&key), Duration::from_secs(10))
        .burst(&addrs(&gws), 700, 100)
        .await;
    let counts = status_counts(&sent);
    let ok = sent.iter().filter(|s| s.status() == 200).count();
    let quota_body = tyk_error_body(MSG_QUOTA);
    let refused = sent
        .iter()
        .filter(|s| {
            s.resp
                .as_ref()
                .is_ok_and(|r| r.status == 403 && r.text() == quota_body)
        })
        .count();
    assert_eq!(
        (ok, refused),
        (100, 600),
        "statuses {counts:?}; unexpected:\n{}",
        first_bad(&sent, |s| s.status() == 200
            || s.resp
                .as_ref()
                .is_ok_and(|r| r.status == 403 && r.text() == quota_body))
    );
    for s in sent.iter().filter(|s| s.status() == 403) {
        assert_tyk_error(s.resp.as_ref().unwrap(), 403, MSG_QUOTA);
    }
    assert_eq!(up.request_count(), 100, "upstream request count");

    for (gw, name) in gws.iter().zip(["A", "B", "C"]) {
        let s = get_session(gw, &key).await;
        assert_eq!(s["quota_remaining"], 0, "node {name}: {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_holds_across_nodes() {
    let (_redis, up, gws) = setup(3).await;
    let body = session_with(&[API], json!({"rate": 50, "allowance": 50, "per": 1}));
    let (key, _) = create_key(&gws[0], &body).await;
    // Warm every node's connections (and any script cache) with another key,
    // so first-request latency does not shift admissions between windows.
    let (warm, _) = create_key(&gws[0], &session_for(&[API])).await;
    for gw in &gws {
        for _ in 0..3 {
            assert_echo_ok(&get_with_key(gw, "/api/warm", &warm).await, "/warm");
        }
    }
    up.clear();

    let sent = Load::new("/api/r", Some(&key), Duration::from_secs(5))
        .paced(&addrs(&gws), 150, Duration::from_secs(3))
        .await;
    assert_ok_or_rate_limited(&sent);
    let mut windows = [0usize; 3];
    for s in sent.iter().filter(|s| s.status() == 200) {
        let w = (s.at.as_secs() as usize).min(2);
        windows[w] += 1;
    }
    let total: usize = windows.iter().sum();
    eprintln!(
        "sent {} requests; 200s per 1 s window: {windows:?}; total {total}; last send at {:?}",
        sent.len(),
        sent.last().map(|s| s.at)
    );
    for (i, n) in windows.iter().enumerate() {
        assert!(
            *n as f64 <= 50.0 * 1.05,
            "window {i}: {n} requests admitted, limit 50/s (+5%); windows {windows:?}"
        );
    }
    assert!(
        total as f64 >= 0.9 * 150.0,
        "only {total} requests admitted over 3 s at 50/s; windows {windows:?}, statuses {:?}",
        status_counts(&sent)
    );
    assert_eq!(up.request_count(), total, "upstream request count");
}

/// Above 1000 requests per window the shared limiter counts in buckets, and
/// concurrent requests of one key on one node share a Redis round trip. Both
/// limits still hold exactly: every admitted request got its own slot of the
/// quota (the quota headers of the 200s are all different), the rate limit
/// admits exactly its rate, and what the refused requests counted is taken
/// back from the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_counting_is_exact_across_nodes() {
    let (_redis, up, gws) = setup(3).await;
    let body = session_with(
        &[API],
        json!({"rate": 1200, "allowance": 1200, "per": 60, "quota_max": 5000,
               "quota_remaining": 5000, "quota_renewal_rate": 3600}),
    );
    let (key, _) = create_key(&gws[0], &body).await;

    let sent = Load::new("/api/b", Some(&key), Duration::from_secs(20))
        .burst(&addrs(&gws), 2000, 150)
        .await;
    assert_ok_or_rate_limited(&sent);
    let ok: Vec<_> = sent.iter().filter(|s| s.status() == 200).collect();
    assert_eq!(ok.len(), 1200, "statuses {:?}", status_counts(&sent));
    assert_eq!(up.request_count(), 1200, "upstream request count");

    let mut remaining: Vec<i64> = ok
        .iter()
        .map(|s| {
            let r = s.resp.as_ref().unwrap();
            r.header("X-RateLimit-Remaining")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no X-RateLimit-Remaining: {}", r.head))
        })
        .collect();
    remaining.sort_unstable();
    let want: Vec<i64> = (3800..5000).collect();
    assert!(
        remaining == want,
        "each admitted request must get its own quota slot: remaining values \
         {}..={} with {} distinct of 1200",
        remaining.first().unwrap(),
        remaining.last().unwrap(),
        {
            let mut d = remaining.clone();
            d.dedup();
            d.len()
        }
    );

    // The 800 refused requests' quota counts are taken back (asynchronously).
    let since = Instant::now();
    poll_until(
        since,
        Duration::from_secs(2),
        "quota_remaining 3800 on every node",
        || async {
            for gw in &gws {
                let s = get_session(gw, &key).await;
                if s["quota_remaining"] != 3800 {
                    return Err(s["quota_remaining"].to_string());
                }
            }
            Ok(())
        },
    )
    .await;
}

/// The quota counter's period starts with its first request, and a counter
/// left without an expiry (its node died between counting and setting it) is
/// given one by the next request on any node, so the quota still renews.
#[tokio::test]
async fn quota_counter_always_gets_its_renewal_expiry() {
    let (redis, _up, gws) = setup(2).await;
    let body = quota_session(&[API], 50, 600);
    let (key, _) = create_key(&gws[0], &body).await;
    assert_echo_ok(&get_with_key(&gws[0], "/api/e", &key).await, "/e");

    let counters = redis.cli(&["--raw", "KEYS", "quota-*"]).await;
    let counter = counters.lines().next().expect("a quota counter").to_owned();
    // The expiry is set right after the answer: give it a moment.
    expires_in_600s(&redis, &counter).await;

    assert_eq!(redis.cli(&["PERSIST", &counter]).await, "1");
    assert_eq!(pttl(&redis, &counter).await, -1);
    let r = get_with_key(&gws[1], "/api/e", &key).await;
    assert_echo_ok(&r, "/e");
    assert_eq!(r.header("X-RateLimit-Remaining"), Some("48"), "{}", r.head);
    expires_in_600s(&redis, &counter).await;
    assert_eq!(redis.cli(&["GET", &counter]).await, "2");
}

async fn pttl(redis: &RedisServer, key: &str) -> i64 {
    redis.cli(&["PTTL", key]).await.parse().unwrap()
}

/// Waits up to 2 s for `key` to expire in (590, 600] s.
async fn expires_in_600s(redis: &RedisServer, key: &str) {
    poll_until(
        Instant::now(),
        Duration::from_secs(2),
        &format!("{key} expiring in 600 s"),
        || async {
            let ttl = pttl(redis, key).await;
            if ttl > 590_000 && ttl <= 600_000 {
                Ok(())
            } else {
                Err(ttl.to_string())
            }
        },
    )
    .await;
}
