//! Analytics records in Tyk Pump's format: a known request sequence through a gateway on its
//! own Redis, then the records read back from `analytics-tyk-system-analytics` and decoded as
//! msgpack.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use rmpv::Value as Mp;
use serde_json::json;
use tollgate_testkit::keys::create_key;
use tollgate_testkit::pg::PgDb;
use tollgate_testkit::redis::{
    RedisServer, node, pump_records, record_field as field, redis_storage,
};
use tollgate_testkit::{MockUpstream, api_with, client, gateway, get_status};

/// A key body with access to the API `keyed` only.
fn keyed_key_body() -> serde_json::Value {
    json!({"org_id": "default", "access_rights": {"keyed": {"api_id": "keyed", "versions": ["Default"]}}})
}

async fn records(port: u16) -> Vec<Mp> {
    pump_records(port, "analytics-tyk-system-analytics").await
}

#[tokio::test]
async fn records_arrive_in_redis_as_tyk_pump_reads_them() {
    let redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let keyed_extra = json!({"use_keyless": false, "name": "Keyed API"});
    let keyed = api_with("keyed", "/keyed/", &up.url(), keyed_extra);
    let one_per_minute = json!({"global_rate_limit": {"rate": 1, "per": 60}});
    let limited = api_with("limited", "/limited/", &up.url(), one_per_minute);
    let quiet = api_with("quiet", "/quiet/", &up.url(), json!({"do_not_track": true}));
    let versions = json!({"version_data": {"not_versioned": false, "default_version": "v1",
        "versions": {"v1": {"name": "v1"}, "v2": {"name": "v2"}}}});
    let versioned = api_with("versioned", "/versioned/", &up.url(), versions);
    let gw = node(gateway!(), &redis_storage(redis.port()))
        .conf(json!({"enable_analytics": true}))
        .api("keyed.json", keyed)
        .api("limited.json", limited)
        .api("quiet.json", quiet)
        .api("versioned.json", versioned)
        .start()
        .await;
    let (key, key_hash) = create_key(
        &gw,
        &json!({"org_id": "default", "alias": "my-alias", "tags": ["t1"],
        "access_rights": {"keyed": {"api_id": "keyed", "versions": ["Default"]}}}),
    )
    .await;

    let c = client();
    let send = |path: &str, key: Option<&str>| {
        let mut r = c.get(gw.url(path)).header("user-agent", "analytics-test");
        if let Some(k) = key {
            r = r.header("authorization", k);
        }
        r.send()
    };
    assert_eq!(
        send("/keyed/ok?x=1", Some(&key)).await.unwrap().status(),
        200
    );
    assert_eq!(send("/keyed/nokey", None).await.unwrap().status(), 401);
    assert_eq!(
        send("/keyed/bad", Some("not-a-key"))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(send("/limited/a", None).await.unwrap().status(), 200);
    assert_eq!(send("/limited/b", None).await.unwrap().status(), 429);
    assert_eq!(send("/quiet/c", None).await.unwrap().status(), 200);
    let v2 = [("x-api-version", "v2")];
    assert_eq!(get_status(&c, &gw.url("/versioned/d"), &v2).await, 200);

    // Written within a flush interval (200 ms) or two.
    let deadline = Instant::now() + Duration::from_secs(5);
    let recs = loop {
        let recs = records(redis.port()).await;
        if recs.len() >= 6 || Instant::now() > deadline {
            break recs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let codes: Vec<i64> = recs
        .iter()
        .map(|r| field(r, "ResponseCode").as_i64().unwrap())
        .collect();
    assert_eq!(
        codes,
        vec![200, 401, 403, 200, 429, 200],
        "do_not_track API recorded, or a record missing"
    );

    let ok = &recs[0];
    assert_eq!(field(ok, "Method").as_str(), Some("GET"));
    assert_eq!(field(ok, "RawPath").as_str(), Some("/keyed/ok"));
    assert_eq!(
        field(ok, "Path").as_str(),
        Some("/ok"),
        "listen path stripped"
    );
    assert_eq!(field(ok, "APIID").as_str(), Some("keyed"));
    assert_eq!(field(ok, "APIName").as_str(), Some("Keyed API"));
    assert_eq!(field(ok, "OrgID").as_str(), Some("default"));
    assert_eq!(field(ok, "APIKey").as_str(), Some(key_hash.as_str()));
    assert_eq!(field(ok, "Alias").as_str(), Some("my-alias"));
    assert_eq!(field(ok, "UserAgent").as_str(), Some("analytics-test"));
    assert_eq!(field(ok, "IPAddress").as_str(), Some("127.0.0.1"));
    assert_eq!(field(ok, "APIVersion").as_str(), Some("Non Versioned"));
    assert_eq!(field(&recs[5], "APIVersion").as_str(), Some("v2"));
    let tags: Vec<&str> = field(ok, "Tags")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tags.contains(&"t1") && tags.contains(&format!("key-{key_hash}").as_str()),
        "{tags:?}"
    );
    assert!(
        tags.contains(&"org-default") && tags.contains(&"api-keyed"),
        "{tags:?}"
    );
    // time.Time as [seconds, nanoseconds], as Tyk's msgpack library writes it.
    let ts = field(ok, "TimeStamp").as_array().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts[0].as_i64().unwrap()).abs() < 60, "{ts:?}");
    assert_eq!(field(ok, "Year").as_i64().unwrap(), 1970 + now / 31_556_952);
    let latency = field(ok, "Latency");
    assert!(
        field(latency, "Total").as_i64().unwrap() >= field(latency, "Upstream").as_i64().unwrap()
    );
    // The raw key never appears in any record.
    for r in &recs {
        assert!(!format!("{r}").contains(&key), "raw key recorded: {r}");
    }
    // Rejected requests are recorded without a key and with no upstream time.
    assert_eq!(field(&recs[1], "APIKey").as_str(), Some(""));
    assert_eq!(
        field(field(&recs[4], "Latency"), "Upstream").as_i64(),
        Some(0)
    );
}

#[tokio::test]
async fn a_stopped_sink_costs_no_traffic_and_counts_drops() {
    let mut redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = node(gateway!(), &redis_storage(redis.port()))
        .conf(json!({"enable_analytics": true,
            "prometheus": {"enabled": true, "listen_port": metrics_port}}))
        .with_api("open", "/open/", &up.url())
        .start()
        .await;
    redis.stop().await;
    let c = client();
    for i in 0..50 {
        let r = c.get(gw.url(&format!("/open/{i}"))).send().await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "request {i} failed while the analytics sink was down"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let text = c
            .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let dropped = text
            .lines()
            .find_map(|l| l.strip_prefix("tollgate_analytics_dropped_total "))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .unwrap_or_else(|| panic!("no drop counter in:\n{text}"));
        if dropped >= 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "drop counter stuck at {dropped}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn aggregates_endpoint_counts_the_traffic_on_the_embedded_store() {
    let up = MockUpstream::start().await;
    let keyed = api_with("keyed", "/keyed/", &up.url(), json!({"use_keyless": false}));
    let gw = gateway!()
        .conf(json!({"enable_analytics": true}))
        .api("keyed.json", keyed)
        .with_api("open", "/open/", &up.url())
        .start()
        .await;
    let (key, key_hash) = create_key(&gw, &keyed_key_body()).await;
    let c = client();
    let auth = [("authorization", key.as_str())];
    for _ in 0..3 {
        assert_eq!(get_status(&c, &gw.url("/keyed/x"), &auth).await, 200);
    }
    assert_eq!(get_status(&c, &gw.url("/keyed/x"), &[]).await, 401);
    assert_eq!(get_status(&c, &gw.url("/open/x"), &[]).await, 200);

    let deadline = Instant::now() + Duration::from_secs(5);
    let summary = loop {
        let (status, body) = gw.admin_get("/tyk/analytics/aggregates?api_id=keyed").await;
        assert_eq!(status, 200, "{body}");
        if body["requests"] == 4 || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(summary["requests"], 4, "{summary}");
    assert_eq!(summary["status_classes"]["2xx"], 3, "{summary}");
    assert_eq!(summary["status_classes"]["4xx"], 1, "{summary}");
    assert_eq!(summary["errors"], 1, "{summary}");
    assert_eq!(summary["top_keys"][0]["key"], json!(key_hash), "{summary}");
    assert_eq!(summary["top_keys"][0]["requests"], 3, "{summary}");
    assert!(
        summary["latency_ms"]["p99"].as_i64().unwrap()
            >= summary["latency_ms"]["p50"].as_i64().unwrap()
    );

    // The most recent records, newest first.
    let (status, recent) = gw
        .admin_get("/tyk/analytics/records?api_id=keyed&limit=2")
        .await;
    assert_eq!(status, 200, "{recent}");
    let recent = recent.as_array().unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0]["ResponseCode"], 401, "{recent:?}");
    assert_eq!(recent[1]["ResponseCode"], 200, "{recent:?}");
    assert_eq!(recent[1]["APIKey"], json!(key_hash));

    // A range in the past holds nothing; bad parameters are refused.
    let (status, old) = gw
        .admin_get("/tyk/analytics/aggregates?api_id=keyed&from=0&to=3600")
        .await;
    assert_eq!(status, 200);
    assert_eq!(old["requests"], 0);
    let (status, body) = gw.admin_get("/tyk/analytics/aggregates").await;
    assert_eq!(
        (status.as_u16(), body["message"].as_str()),
        (400, Some("missing api_id parameter"))
    );
    let (status, _) = gw
        .admin_get("/tyk/analytics/aggregates?api_id=keyed&from=abc")
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn records_arrive_in_postgresql() {
    let db = PgDb::create().await;
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .conf(
            json!({"enable_analytics": true, "analytics_config": {"type": "postgres",
            "connection_string": db.url()}}),
        )
        .with_api("open", "/open/", &up.url())
        .start()
        .await;
    let c = client();
    for i in 0..5 {
        let url = gw.url(&format!("/open/item/{i}"));
        assert_eq!(
            get_status(&c, &url, &[("user-agent", "pg-test")]).await,
            200
        );
    }
    assert_eq!(get_status(&c, &gw.url("/nowhere"), &[]).await, 404);
    let deadline = Instant::now() + Duration::from_secs(8);
    let count = loop {
        let exists = db
            .sql("SELECT to_regclass('tollgate_analytics') IS NOT NULL")
            .await;
        let n = if exists == "t" {
            db.sql("SELECT count(*) FROM tollgate_analytics")
                .await
                .parse::<u64>()
                .unwrap()
        } else {
            0
        };
        if n >= 5 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        count, 5,
        "unrouted requests are not recorded; the 5 proxied ones are"
    );
    let row = db.sql("SELECT api_id, method, path, raw_path, response_code, user_agent, ip_address FROM tollgate_analytics ORDER BY id LIMIT 1").await;
    assert_eq!(row, "open|GET|/item/0|/open/item/0|200|pg-test|127.0.0.1");
    let recent = db
        .sql("SELECT count(*) FROM tollgate_analytics WHERE ts > now() - interval '1 minute'")
        .await;
    assert_eq!(recent, "5");
}
