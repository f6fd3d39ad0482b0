//! Redis over TLS (`storage.use_ssl`): nodes reach a `redis-server` that speaks only TLS,
//! verifying it against `storage.ca_file` or skipping verification, and share keys through it;
//! a node that would speak plain text, or trusts another CA, cannot use it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use tollgate_testkit::keys::*;
use tollgate_testkit::redis::{RedisServer, start_all};
use tollgate_testkit::tls::TestCa;
use tollgate_testkit::{MockUpstream, gateway};

#[tokio::test]
async fn nodes_share_keys_through_a_tls_only_redis() {
    let ca = TestCa::default();
    let (redis, ca_file) = RedisServer::start_tls(&ca).await;
    let up = MockUpstream::start().await;
    let storage = |extra: serde_json::Value| {
        let mut s =
            json!({"type": "redis", "host": "127.0.0.1", "port": redis.port(), "timeout": 1});
        tollgate_testkit::merge_json(&mut s, extra);
        with_keyed_api(gateway!(), &up.url(), json!({}))
            .conf(json!({"storage": s, "node_secret": tollgate_testkit::redis::NODE_SECRET}))
    };
    let nodes = start_all([
        storage(json!({"use_ssl": true, "ca_file": ca_file})),
        storage(json!({"use_ssl": true, "ssl_insecure_skip_verify": true})),
        // Plain text to the TLS port, and TLS trusting only the system's roots.
        storage(json!({})),
        storage(json!({"use_ssl": true})),
    ])
    .await;
    let (key, _) = create_key(&nodes[0], &session_for(&["keyed"])).await;
    for gw in &nodes[..2] {
        let r = get_with_key(gw, "/api/x", &key).await;
        assert_eq!(r.status, 200, "{}", r.dump());
    }
    for gw in &nodes[2..] {
        let r = get_with_key(gw, "/api/x", &key).await;
        assert_ne!(r.status, 200, "{}", r.dump());
    }
    assert_eq!(up.request_count(), 2);
    // The key is in this Redis, under Tyk's name.
    let keys = redis_keys_over_tls(&redis, &ca_file).await;
    assert!(keys.iter().any(|k| k.starts_with("apikey-")), "{keys:?}");
}

async fn redis_keys_over_tls(redis: &RedisServer, ca: &std::path::Path) -> Vec<String> {
    let (ca, port) = (ca.to_owned(), redis.port().to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(ca)
            .args(["-h", "127.0.0.1", "-p", &port, "--scan"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}
