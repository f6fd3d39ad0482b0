//! Two gateway nodes on a three-node Redis Cluster (`enable_cluster`): keys
//! are shared, deletes propagate within a second, and a quota is exact across
//! both nodes.
//!
//! Every test starts its own three cluster-enabled redis-servers on free
//! ports (never 6379).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_testkit::keys::*;
use tollgate_testkit::limits::quota_session;
use tollgate_testkit::raw::assert_tyk_error;
use tollgate_testkit::redis::*;
use tollgate_testkit::traffic::*;
use tollgate_testkit::{Gateway, MockUpstream, gateway, tyk_error_body};

const API: &str = "keyed";
const MSG_QUOTA: &str = "Quota exceeded";

/// Two nodes on `cluster`, each with the keyed API (`keyed` on /api/) to `up`.
async fn cluster_nodes(cluster: &RedisCluster, up: &MockUpstream) -> Vec<Gateway> {
    let storage = cluster_storage(&cluster.addrs());
    keyed_nodes(gateway!(), &storage, &up.url(), 2).await
}

#[tokio::test]
async fn cluster_key_is_shared_and_delete_reaches_the_other_node() {
    let cluster = RedisCluster::start().await;
    let up = MockUpstream::start().await;
    let gws = cluster_nodes(&cluster, &up).await;
    let (a, b) = (&gws[0], &gws[1]);

    let (key, hash) = create_key(a, &session_for(&[API])).await;
    // B has never seen the key.
    for gw in [b, a] {
        assert_echo_ok(&get_with_key(gw, "/api/ping", &key).await, "/ping");
    }
    assert_eq!(up.request_count(), 2);

    let stored = cluster.cli(&["GET", &format!("apikey-{hash}")]).await;
    let session: Value = serde_json::from_str(&stored).unwrap_or_else(|e| {
        panic!("cluster GET apikey-{hash} is not a JSON session ({e}): {stored:?}")
    });
    assert_eq!(session["org_id"], ORG, "{stored}");

    let r = admin(a, "DELETE", &format!("/tyk/keys/{key}"), None).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let since = Instant::now();
    let what = "node B refusing the deleted key";
    let took = refused_within_1s(b, ("/api/ping", &key), MSG_DISALLOWED, since, what).await;
    assert!(took <= Duration::from_secs(1), "B took {took:?}");
    eprintln!("delete seen on B after {took:?}");
    assert_tyk_error(
        &get_with_key(a, "/api/ping", &key).await,
        403,
        MSG_DISALLOWED,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_quota_is_exact_across_nodes() {
    let cluster = RedisCluster::start().await;
    let up = MockUpstream::start().await;
    let gws = cluster_nodes(&cluster, &up).await;
    let body = quota_session(&[API], 20, 3600);
    let (key, hash) = create_key(&gws[0], &body).await;

    let addrs = addrs(&gws);
    let sent = Load::new("/api/q", Some(&key), Duration::from_secs(10))
        .burst(&addrs, 60, 60)
        .await;
    let quota_body = tyk_error_body(MSG_QUOTA);
    let is_refusal = |s: &Sent| s.is(403, &quota_body);
    let ok = sent.iter().filter(|s| s.status() == 200).count();
    let refused = sent.iter().filter(|s| is_refusal(s)).count();
    assert_eq!(
        (ok, refused),
        (20, 40),
        "statuses {:?}; unexpected:\n{}",
        status_counts(&sent),
        first_bad(&sent, |s| s.status() == 200 || is_refusal(s))
    );
    for s in sent.iter().filter(|s| s.status() == 403) {
        assert_tyk_error(s.resp.as_ref().unwrap(), 403, MSG_QUOTA);
    }
    assert_eq!(up.request_count(), 20, "upstream request count");

    // What refused requests counted was taken back (by a script, in the counter's slot):
    // the counter holds exactly the 20 admitted.
    let counter = format!("quota-{{{hash}}}");
    let (cluster, counter) = (&cluster, &counter);
    poll_until(
        Instant::now(),
        Duration::from_secs(5),
        "quota counter back at 20",
        || async move {
            let v = cluster.cli(&["GET", counter]).await;
            if v == "20" { Ok(()) } else { Err(v) }
        },
    )
    .await;
}
