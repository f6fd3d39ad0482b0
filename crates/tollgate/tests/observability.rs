//! Prometheus metrics, the access log and request ids, against the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::json;
use tollgate_testkit::keys::{create_key, session_with};
use tollgate_testkit::{
    Gateway, MockUpstream, api_with, client, free_port, gateway, get_status, tyk_error_body,
};

async fn start(up: &MockUpstream, metrics_port: u16) -> Gateway {
    let keyed = api_with("keyed", "/keyed/", &up.url(), json!({"use_keyless": false}));
    gateway!()
        .conf(json!({
            "enable_access_log": true,
            "prometheus": {"enabled": true, "listen_address": "127.0.0.1", "listen_port": metrics_port, "path": "/metrics"}
        }))
        .with_api("open", "/open/", &up.url())
        .api("keyed.json", keyed)
        .start()
        .await
}

async fn scrape(port: u16) -> String {
    let resp = client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    resp.text().await.unwrap()
}

/// The value of one sample line, e.g. `tollgate_requests_total{api_id="open",code="2xx"}`.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}")) as u64
}

#[tokio::test]
async fn metrics_count_the_traffic_sent() {
    let up = MockUpstream::start().await;
    let port = free_port();
    let gw = start(&up, port).await;
    let c = client();
    for _ in 0..5 {
        assert_eq!(c.get(gw.url("/open/x")).send().await.unwrap().status(), 200);
    }
    for _ in 0..2 {
        assert_eq!(
            c.get(gw.url("/keyed/x")).send().await.unwrap().status(),
            401
        );
    }
    assert_eq!(
        c.get(gw.url("/keyed/x"))
            .header("authorization", "unknown-key")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        c.get(gw.url("/nowhere")).send().await.unwrap().status(),
        404
    );

    let text = scrape(port).await;
    assert_eq!(
        sample(
            &text,
            r#"tollgate_requests_total{api_id="open",code="2xx"}"#
        ),
        5
    );
    assert_eq!(
        sample(
            &text,
            r#"tollgate_requests_total{api_id="keyed",code="4xx"}"#
        ),
        3
    );
    assert_eq!(
        sample(
            &text,
            r#"tollgate_rejected_requests_total{api_id="keyed",reason="auth"}"#
        ),
        3
    );
    assert_eq!(
        sample(
            &text,
            r#"tollgate_rejected_requests_total{api_id="keyed",reason="quota"}"#
        ),
        0
    );
    assert_eq!(
        sample(&text, r#"tollgate_requests_total{api_id="",code="4xx"}"#),
        1
    );
    assert_eq!(
        sample(
            &text,
            r#"tollgate_request_duration_seconds_count{api_id="open"}"#
        ),
        5
    );
    assert_eq!(
        sample(
            &text,
            r#"tollgate_upstream_duration_seconds_count{api_id="open"}"#
        ),
        5
    );
    assert_eq!(
        sample(
            &text,
            r#"tollgate_upstream_duration_seconds_count{api_id="keyed"}"#
        ),
        0
    );
    assert_eq!(
        sample(
            &text,
            r#"tollgate_request_duration_seconds_bucket{api_id="open",le="+Inf"}"#
        ),
        5
    );
    assert_eq!(sample(&text, "tollgate_reloads_total"), 0);

    // Every line is a comment or `name{labels} number` (the text format parses).
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        assert!(series.starts_with("tollgate_"), "{line}");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
    }

    // A reload is counted.
    let (status, _) = gw.admin_get("/tyk/reload?block=true").await;
    assert_eq!(status, 200);
    let text = scrape(port).await;
    assert_eq!(sample(&text, "tollgate_reloads_total"), 1);
    assert!(sample(&text, "tollgate_last_reload_timestamp_seconds") > 1_700_000_000);

    // The metrics are not on the public port.
    assert_eq!(
        c.get(gw.url("/metrics")).send().await.unwrap().status(),
        404
    );
}

#[tokio::test]
async fn access_log_and_request_ids() {
    let up = MockUpstream::start().await;
    let gw = start(&up, free_port()).await;
    let c = client();
    let (key, key_hash) = create_key(
        &gw,
        &json!({"org_id": "default", "access_rights": {"keyed": {"api_id": "keyed", "versions": ["Default"]}}}),
    )
    .await;

    // No X-Request-Id from the client: the upstream gets a generated one.
    let keyed = [("authorization", key.as_str())];
    assert_eq!(get_status(&c, &gw.url("/keyed/a"), &keyed).await, 200);
    // A client's own id passes through unchanged.
    let own_id = [("x-request-id", "client-id-42")];
    assert_eq!(get_status(&c, &gw.url("/open/b"), &own_id).await, 200);
    let recs = up.wait_for_requests(2, Duration::from_secs(5)).await;
    let generated = recs[0].headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 24, "generated id {generated}");
    assert_eq!(recs[1].headers["x-request-id"], "client-id-42");

    // One access line per request, with the key's hash and never the raw key.
    gw.wait_stderr(&["client-id-42"]).await;
    let log = gw.log();
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tollgate::access"))
        .collect();
    assert!(access.len() >= 2, "access lines: {access:#?}\nlog:\n{log}");
    let keyed = access
        .iter()
        .find(|l| l.contains("path=\"/keyed/a\""))
        .unwrap_or_else(|| panic!("no access line for /keyed/a:\n{log}"));
    assert!(keyed.contains("status=200"), "{keyed}");
    assert!(
        keyed.contains("api_id=\"keyed\"") || keyed.contains("api_id=keyed"),
        "{keyed}"
    );
    assert!(keyed.contains(&key_hash), "{keyed}");
    assert!(keyed.contains(&generated), "{keyed}");
    assert!(!log.contains(&key), "the raw key reached the log");
}

/// `override_messages` rewords the gateway's own errors; the refusal metrics still count by
/// what was refused, not by what the client reads.
#[tokio::test]
async fn overridden_messages_reach_clients_and_metrics_count_by_kind() {
    let up = MockUpstream::start().await;
    let port = free_port();
    let gw = gateway!()
        .conf(json!({
            "override_messages": {
                "auth.auth_field_missing": {"code": 400, "message": "Send a key"},
                // Reworded to another refusal's text: a classifier that read messages would
                // count this as a rate refusal.
                "auth.key_not_found": {"message": "Rate Limit Exceeded"},
                // A partial override with neither part keeps Tyk's default.
                "oauth.key_not_found": {"code": 0, "message": ""}
            },
            "prometheus": {"enabled": true, "listen_address": "127.0.0.1", "listen_port": port, "path": "/metrics"}
        }))
        .keyless_api("keyed", &up, json!({"use_keyless": false}))
        .start()
        .await;
    let c = client();
    let refusal = |status: u16, message: &'static str, key: Option<String>| {
        let mut req = c.get(gw.url("/keyed/x"));
        if let Some(key) = key {
            req = req.header("authorization", key);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), status, "{message}");
            assert_eq!(resp.headers()["content-type"], "application/json");
            assert_eq!(resp.text().await.unwrap(), tyk_error_body(message));
        }
    };
    refusal(400, "Send a key", None).await;
    // The code is kept when only the message is set.
    refusal(403, "Rate Limit Exceeded", Some("not-a-key".into())).await;
    // A quota of one: the second request gets Tyk's (not overridable) quota message.
    let (key, _) = create_key(
        &gw,
        &session_with(
            &["keyed"],
            json!({"quota_max": 1, "quota_renewal_rate": 3600}),
        ),
    )
    .await;
    let ok = c.get(gw.url("/keyed/x")).header("authorization", &key);
    assert_eq!(ok.send().await.unwrap().status(), 200);
    refusal(403, "Quota exceeded", Some(key)).await;

    let text = scrape(port).await;
    let rejected = |reason: &str| {
        let series =
            format!("tollgate_rejected_requests_total{{api_id=\"keyed\",reason=\"{reason}\"}}");
        sample(&text, &series)
    };
    assert_eq!(rejected("auth"), 2, "{text}");
    assert_eq!(rejected("quota"), 1, "{text}");
    assert_eq!(rejected("rate"), 0, "{text}");
}
