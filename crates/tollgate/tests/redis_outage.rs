//! Gateway nodes on a Redis that goes away: keyless traffic does not notice,
//! keyed traffic fails closed (503 with Retry-After, never 401/403 for a
//! valid key, never 200 for an unknown one), admin writes fail without a
//! partial write, nothing hangs, and everything recovers without a gateway
//! restart when Redis comes back. Both a killed Redis and a frozen one
//! (SIGSTOP: connections stay open, nothing answers) are covered.
//!
//! Every test starts its own redis-server on a free port (never 6379).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use tollgate_testkit::keys::*;
use tollgate_testkit::raw::{RawResponse, assert_gateway_error_shape, assert_tyk_error};
use tollgate_testkit::redis::*;
use tollgate_testkit::traffic::*;
use tollgate_testkit::{Gateway, MockUpstream, api_def, gateway};

const API: &str = "keyed";
const MSG_UNAVAILABLE: &str = "Key store unavailable, please retry";
/// The longest any request may take while Redis is down.
const OUTAGE_ANSWER: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyless_api_without_global_rate_limit_ignores_a_redis_outage() {
    let mut redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let storage = redis_storage(redis.port());
    let def = api_def("open", "/open/", &up.url());
    let gws = start_nodes(node(gateway!(), &storage).api("open.json", def), 2).await;
    for gw in &gws {
        assert_echo_ok(&call(gw, "GET", "/open/x", &[]).await, "/x");
    }

    redis.stop().await;
    up.clear();
    let addrs = addrs(&gws);
    let sent = Load::new("/open/x", None, OUTAGE_ANSWER)
        .closed_loop(&addrs, 4, Duration::from_secs(3))
        .await;
    let bad = first_bad(&sent, |s| s.status() == 200);
    assert!(
        bad.is_empty(),
        "{} requests, statuses {:?}; failures:\n{bad}",
        sent.len(),
        status_counts(&sent)
    );
    assert!(
        sent.len() >= 100,
        "only {} keyless requests completed in 3 s",
        sent.len()
    );
    assert_eq!(up.request_count(), sent.len(), "upstream request count");
    let slowest = sent.iter().map(|s| s.took).max().unwrap_or_default();
    eprintln!("{} keyless requests, slowest {slowest:?}", sent.len());
}

/// Sends `GET target` (with `key`) and fails if there is no answer within
/// [`OUTAGE_ANSWER`].
async fn get_quickly(gw: &Gateway, target: &str, key: &str, what: &str) -> RawResponse {
    quickly(what, try_get(gw.addr(), target, Some(key), OUTAGE_ANSWER))
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer within {OUTAGE_ANSWER:?}: {e}"))
}

/// Awaits `f` for at most [`OUTAGE_ANSWER`] (panicking after that) and
/// asserts it took no longer.
async fn quickly<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let t = Instant::now();
    let v = tokio::time::timeout(OUTAGE_ANSWER, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {OUTAGE_ANSWER:?}"));
    assert!(
        t.elapsed() <= OUTAGE_ANSWER,
        "{what}: took {:?}",
        t.elapsed()
    );
    v
}

/// During the outage a valid key gets 200 or 503 "Key store unavailable"
/// with Retry-After; never 401/403.
fn check_valid_key_reply(r: &RawResponse, what: &str) {
    match r.status {
        200 => {}
        503 => assert_unavailable(r, what),
        _ => panic!(
            "a valid key got {} during the outage; {what}: response was:\n{}",
            r.status,
            r.dump()
        ),
    }
}

/// 503 "Key store unavailable" with a Retry-After.
fn assert_unavailable(r: &RawResponse, what: &str) {
    assert_tyk_error(r, 503, MSG_UNAVAILABLE);
    assert!(
        r.header("retry-after").is_some_and(|v| !v.is_empty()),
        "no Retry-After; {what}: response was:\n{}",
        r.dump()
    );
}

/// During the outage an unknown key gets 503 (as above) or 403; never 200.
fn check_unknown_key_reply(r: &RawResponse, what: &str) {
    match r.status {
        503 => assert_unavailable(r, what),
        403 => assert_gateway_error_shape(r, 403),
        _ => panic!(
            "an unknown key got {} during the outage; {what}: response was:\n{}",
            r.status,
            r.dump()
        ),
    }
}

/// An admin request that must answer within [`OUTAGE_ANSWER`].
async fn admin_quickly(
    gw: &Gateway,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Admin {
    quickly(&format!("{method} {path}"), admin(gw, method, path, body)).await
}

fn assert_admin_unavailable(a: &Admin, what: &str) {
    assert_eq!(
        a.status,
        503,
        "{what} during the outage: reply was:\n{}{}",
        a.raw.head,
        a.raw.text()
    );
    assert_eq!(a.json["status"], "error", "{what}: {}", a.json);
    assert!(a.json["message"].is_string(), "{what}: {}", a.json);
}

/// `POST path` creating a key answers 503 within [`OUTAGE_ANSWER`].
async fn create_is_unavailable(gw: &Gateway, path: &str) {
    let a = admin_quickly(gw, "POST", path, Some(&session_for(&[API]))).await;
    assert_admin_unavailable(&a, &format!("POST {path}"));
}

/// Two keyed nodes on `redis`, with `up` as upstream.
async fn keyed_pair(redis: &RedisServer, up: &MockUpstream) -> Vec<Gateway> {
    let storage = redis_storage(redis.port());
    keyed_nodes(gateway!(), &storage, &up.url(), 2).await
}

/// Valid keys for the outage: `both` was used on A and B before the outage,
/// `a_only` was created and used on A only (B has never seen it).
struct OutageKeys {
    both: String,
    a_only: String,
}

async fn create_and_use_keys(gws: &[Gateway]) -> OutageKeys {
    let (a, b) = (&gws[0], &gws[1]);
    let (both, _) = create_key(a, &session_for(&[API])).await;
    let (a_only, _) = create_key(a, &session_for(&[API])).await;
    for gw in [a, b] {
        assert_echo_ok(&get_with_key(gw, "/api/known", &both).await, "/known");
    }
    assert_echo_ok(&get_with_key(a, "/api/known", &a_only).await, "/known");
    OutageKeys { both, a_only }
}

/// Proxied traffic while Redis is unavailable: sequential rounds on both
/// nodes for at least `dur`, then a concurrent burst with the shared key.
/// Checks every reply (valid keys: 200 or 503, never 401/403; unknown key:
/// 503 or 403, never 200; all within 2 s) and that exactly the 200s reached
/// the upstream. Returns the status counts for valid keys.
async fn outage_traffic(
    gws: &[Gateway],
    keys: &OutageKeys,
    up: &MockUpstream,
    dur: Duration,
) -> Vec<(u16, usize)> {
    up.clear();
    let started = Instant::now();
    let mut valid: Vec<u16> = Vec::new();
    let mut rounds = 0;
    while rounds < 3 || started.elapsed() < dur {
        rounds += 1;
        for (gw, name) in gws.iter().zip(["A", "B"]) {
            for (key, which) in [
                (&keys.both, "key used on A and B"),
                (&keys.a_only, "key used on A only"),
            ] {
                let what = format!("round {rounds}, node {name}, {which}");
                let r = get_quickly(gw, "/api/known", key, &what).await;
                check_valid_key_reply(&r, &what);
                valid.push(r.status);
            }
            let what = format!("round {rounds}, node {name}, unknown key");
            let r = get_quickly(gw, "/api/unknown", "unknown-key-during-outage", &what).await;
            check_unknown_key_reply(&r, &what);
        }
    }

    // Concurrent traffic with the shared key.
    let addrs = addrs(gws);
    let sent = Load::new("/api/known", Some(&keys.both), OUTAGE_ANSWER)
        .burst(&addrs, 40, 20)
        .await;
    for s in &sent {
        let r = s
            .resp
            .as_ref()
            .unwrap_or_else(|e| panic!("concurrent valid-key request: {e} ({})", s.describe()));
        assert!(s.took <= OUTAGE_ANSWER, "{}", s.describe());
        check_valid_key_reply(r, &s.describe());
        valid.push(r.status);
    }

    let recs = up.requests();
    assert!(
        recs.iter().all(|r| r.path == "/known"),
        "an unknown key's request reached the upstream during the outage: {:?}",
        recs.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    let ok = valid.iter().filter(|s| **s == 200).count();
    assert_eq!(
        recs.len(),
        ok,
        "upstream got {} requests but {ok} valid-key requests were answered 200",
        recs.len()
    );
    let mut counts: Vec<(u16, usize)> = Vec::new();
    for st in [200, 503] {
        counts.push((st, valid.iter().filter(|s| **s == st).count()));
    }
    counts
}

/// `/hello` answers 200 within 2 s on every node.
async fn hello_answers(gws: &[Gateway]) {
    for gw in gws {
        let t = Instant::now();
        let r = tokio::time::timeout(OUTAGE_ANSWER, call(gw, "GET", "/hello", &[]))
            .await
            .unwrap_or_else(|_| panic!("/hello: no answer within {OUTAGE_ANSWER:?}"));
        assert_eq!(
            r.status,
            200,
            "/hello during the outage:\n{}{}",
            r.head,
            r.text()
        );
        eprintln!("/hello during the outage ({:?}): {}", t.elapsed(), r.text());
    }
}

/// Polls until a new key can be created on A and used on every node, within
/// 5 s of `back`. Returns `(key, key_hash)`.
async fn recovers_within_5s(gws: &[Gateway], back: Instant) -> (String, String) {
    let a = &gws[0];
    let ((key, hash), took) = poll_until(
        back,
        Duration::from_secs(5),
        "creating a key after Redis came back",
        || async {
            let r = admin(a, "POST", "/tyk/keys/create", Some(&session_for(&[API]))).await;
            if r.status == 200 {
                Ok(assert_added(&r, Some(64)))
            } else {
                Err(format!("{}{}", r.raw.head, r.raw.text()))
            }
        },
    )
    .await;
    eprintln!("key creation works {took:?} after Redis came back");
    for (gw, name) in gws.iter().zip(["A", "B"]) {
        let what = format!("node {name} serving a new key after Redis came back");
        let target = ("/api/after", Some(key.as_str()));
        let (_, took) = status_within(gw, target, 200, (back, Duration::from_secs(5)), &what).await;
        eprintln!("node {name} serves the new key {took:?} after Redis came back");
    }
    (key, hash)
}

/// Deletes `key` on A and asserts B (which has served it) refuses it within
/// 1 s: cache invalidation works again after the outage.
async fn delete_reaches_b_within_1s(gws: &[Gateway], key: &str) {
    let (a, b) = (&gws[0], &gws[1]);
    let r = admin(a, "DELETE", &format!("/tyk/keys/{key}"), None).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let since = Instant::now();
    let what = "node B refusing a key deleted on A after the outage";
    let took = refused_within_1s(b, ("/api/after", key), MSG_DISALLOWED, since, what).await;
    eprintln!("delete after the outage seen on B after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_traffic_fails_closed_during_a_redis_outage_and_recovers() {
    let mut redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let gws = keyed_pair(&redis, &up).await;
    let (a, b) = (&gws[0], &gws[1]);
    let keys = create_and_use_keys(&gws).await;

    redis.stop().await;
    let counts = outage_traffic(&gws, &keys, &up, Duration::from_millis(1500)).await;
    eprintln!("valid-key statuses during the outage: {counts:?}");

    // Admin writes fail with 503.
    create_is_unavailable(a, "/tyk/keys/create").await;
    create_is_unavailable(b, "/tyk/keys/outage-custom-key").await;

    hello_answers(&gws).await;

    // Redis comes back, empty. Within 5 s a new key works on both nodes,
    // without a gateway restart.
    redis.restart().await;
    let back = Instant::now();
    let (new_key, new_hash) = recovers_within_5s(&gws, back).await;

    // The writes refused during the outage left nothing behind.
    for gw in &gws {
        assert_key_absent(gw, "outage-custom-key").await;
        let r = get_with_key(gw, "/api/ping", "outage-custom-key").await;
        assert_tyk_error(&r, 403, MSG_DISALLOWED);
    }
    let stored = redis.cli(&["KEYS", "apikey-*"]).await;
    let stored: Vec<&str> = stored.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        stored.len() == 1 && stored[0].contains(&new_hash),
        "Redis should hold only the key created after the outage (apikey-{new_hash}); \
         KEYS apikey-* = {stored:?}"
    );

    // Cache invalidation across nodes works again.
    delete_reaches_b_within_1s(&gws, &new_key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_traffic_does_not_hang_when_redis_freezes() {
    // A frozen (SIGSTOP) Redis accepts nothing and answers nothing but keeps
    // its connections open: only the configured timeout (1 s) gets the
    // gateway out. Nothing may take longer than 2 s.
    let redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let gws = keyed_pair(&redis, &up).await;
    let keys = create_and_use_keys(&gws).await;

    redis.freeze(true);
    let counts = outage_traffic(&gws, &keys, &up, Duration::from_millis(1500)).await;
    eprintln!("valid-key statuses while Redis is frozen: {counts:?}");
    create_is_unavailable(&gws[0], "/tyk/keys/create").await;
    hello_answers(&gws).await;

    redis.freeze(false);
    let back = Instant::now();
    let (new_key, _) = recovers_within_5s(&gws, back).await;
    // The keys from before still work on both nodes (Redis kept its data).
    for gw in &gws {
        assert_echo_ok(&get_with_key(gw, "/api/known", &keys.both).await, "/known");
        assert_echo_ok(
            &get_with_key(gw, "/api/known", &keys.a_only).await,
            "/known",
        );
    }
    delete_reaches_b_within_1s(&gws, &new_key).await;
}
