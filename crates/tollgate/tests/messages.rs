//! `override_messages` rewords the gateway's own errors; the refusal metrics still count by
//! what was refused, not by what the client reads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use tollgate_testkit::{MockUpstream, api_def, client, gateway};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rejected(metrics: &str, reason: &str) -> u64 {
    let series =
        format!("tollgate_rejected_requests_total{{api_id=\"keyed\",reason=\"{reason}\"}}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn overridden_messages_reach_clients_and_metrics_count_by_kind() {
    let up = MockUpstream::start().await;
    let metrics_port = free_port();
    let mut keyed = api_def("keyed", "/keyed/", &up.url());
    keyed["use_keyless"] = json!(false);
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
            "prometheus": {"enabled": true, "listen_address": "127.0.0.1", "listen_port": metrics_port, "path": "/metrics"}
        }))
        .api("keyed.json", keyed)
        .start()
        .await;
    let c = client();

    let resp = c.get(gw.url("/keyed/x")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        resp.text().await.unwrap(),
        "{\n    \"error\": \"Send a key\"\n}"
    );

    let resp = c
        .get(gw.url("/keyed/x"))
        .header("authorization", "not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "code kept when only the message is set");
    assert_eq!(
        resp.text().await.unwrap(),
        "{\n    \"error\": \"Rate Limit Exceeded\"\n}"
    );

    // A key with a quota of one: the second request is refused with Tyk's (not overridable)
    // quota message.
    let created: serde_json::Value = c
        .post(gw.url("/tyk/keys/create"))
        .header("x-tyk-authorization", gw.secret())
        .json(&json!({
            "org_id": "default", "allowance": 100, "rate": 100, "per": 1, "expires": 0,
            "quota_max": 1, "quota_renewal_rate": 3600,
            "access_rights": {"keyed": {"api_id": "keyed", "api_name": "keyed", "versions": ["Default"]}}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap();
    let get = || {
        c.get(gw.url("/keyed/x"))
            .header("authorization", key)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);
    let resp = get().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.text().await.unwrap(),
        "{\n    \"error\": \"Quota exceeded\"\n}"
    );

    let metrics = c
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(rejected(&metrics, "auth"), 2, "{metrics}");
    assert_eq!(rejected(&metrics, "quota"), 1, "{metrics}");
    assert_eq!(rejected(&metrics, "rate"), 0, "{metrics}");
}
