//! Load balancing (`proxy.enable_load_balancing` + `target_list`) and uptime checks
//! (`uptime_tests`, `proxy.check_host_against_uptime_tests`): round robin over real upstreams,
//! weights by repetition, a host taken out by its failing check and put back, 503 `all hosts
//! are down`, the empty list refused at load and by the admin API, and uptime records in
//! Redis for Tyk Pump.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_testkit::raw::get;
use tollgate_testkit::traffic::poll_until;
use tollgate_testkit::{Gateway, MockUpstream, Reply, api_with, gateway};

/// A keyless API on `/<id>/` balancing over `list`; `extra` is merged in.
fn balanced(id: &str, list: &[String], extra: Value) -> Value {
    let mut def = api_with(
        id,
        &format!("/{id}/"),
        "",
        json!({"proxy": {"enable_load_balancing": true, "target_list": list}}),
    );
    tollgate_testkit::merge_json(&mut def, extra);
    def
}

/// Requests the upstream served for the API on `/<id>/` (uptime checks not counted).
fn served(up: &MockUpstream, id: &str) -> usize {
    let path = format!("/{id}");
    up.requests().iter().filter(|r| r.path == path).count()
}

/// Sends `n` requests to `/<id>/<id>` (the upstream sees `/<id>`), each answered 200.
async fn send(gw: &Gateway, id: &str, n: usize) {
    for _ in 0..n {
        let r = get(gw.addr(), &format!("/{id}/{id}"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[tokio::test]
async fn round_robin_gives_each_target_its_share() {
    let ups = three_upstreams().await;
    let [a, b, c] = &ups;
    // The third entry has no scheme: `http://` is added, as in Tyk.
    let even = [a.url(), b.url(), c.host()];
    let weighted = [a.url(), a.url(), b.url()];
    // A version with its own `override_target` sends there; the others balance.
    let versions = json!({"version_data": {"not_versioned": false, "default_version": "v1",
        "versions": {"v1": {"name": "v1"}, "v2": {"name": "v2", "override_target": c.url()}}}});
    let gw = gateway!()
        // One worker, one round robin: the shares are exact.
        .conf(json!({"worker_threads": 1}))
        .api("even.json", balanced("even", &even, json!({})))
        .api("weighted.json", balanced("weighted", &weighted, json!({})))
        .api(
            "versioned.json",
            balanced("versioned", &[a.url(), b.url()], versions),
        )
        .start()
        .await;

    send(&gw, "even", 30).await;
    assert_eq!(
        ups.iter().map(|u| served(u, "even")).collect::<Vec<_>>(),
        [10, 10, 10]
    );
    // Each upstream is sent its own Host.
    assert_eq!(c.last().header("host"), Some(c.host().as_str()));

    send(&gw, "weighted", 30).await;
    assert_eq!(
        ups.iter()
            .map(|u| served(u, "weighted"))
            .collect::<Vec<_>>(),
        [20, 10, 0]
    );

    for version in ["v1", "v2"] {
        for _ in 0..4 {
            let r = get(
                gw.addr(),
                "/versioned/versioned",
                &[("x-api-version", version)],
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    assert_eq!(
        ups.iter()
            .map(|u| served(u, "versioned"))
            .collect::<Vec<_>>(),
        [2, 2, 4]
    );
}

async fn three_upstreams() -> [MockUpstream; 3] {
    [
        MockUpstream::start().await,
        MockUpstream::start().await,
        MockUpstream::start().await,
    ]
}

/// Sends rounds of 6 requests to `/checked/` until `done(counts per upstream in the last
/// round)` holds (10 s); returns that round's counts. Until then a request may also get 503
/// (every host down).
async fn until(
    gw: &Gateway,
    ups: &[MockUpstream],
    what: &str,
    done: impl Fn(&[usize]) -> bool,
) -> Vec<usize> {
    let done = &done;
    let (round, _) = poll_until(
        Instant::now(),
        Duration::from_secs(10),
        what,
        || async move {
            let before: Vec<usize> = ups.iter().map(|u| served(u, "checked")).collect();
            for _ in 0..6 {
                let r = get(gw.addr(), "/checked/checked", &[]).await;
                assert!(matches!(r.status, 200 | 503), "{}", r.dump());
            }
            let round: Vec<usize> = ups
                .iter()
                .zip(&before)
                .map(|(u, b)| served(u, "checked") - b)
                .collect();
            if done(&round) {
                Ok(round)
            } else {
                Err(format!("last round {round:?}\n{}", gw.log()))
            }
        },
    )
    .await;
    round
}

#[tokio::test]
async fn uptime_checks_take_a_host_out_and_put_it_back() {
    let ups = three_upstreams().await;
    for up in &ups {
        up.on("/health", Reply::fixed(200, "ok"));
    }
    let list: Vec<String> = ups.iter().map(MockUpstream::url).collect();
    let checks: Vec<Value> = ups
        .iter()
        .map(|u| json!({"url": format!("{}/health", u.url()), "method": "GET"}))
        .collect();
    let gw = gateway!()
        .conf(json!({"worker_threads": 1, "uptime_tests": {"config": {
            "failure_trigger_sample_size": 1, "time_wait": 1}}}))
        .api(
            "checked.json",
            balanced(
                "checked",
                &list,
                json!({"proxy": {"check_host_against_uptime_tests": true},
                       "uptime_tests": {"check_list": checks}}),
            ),
        )
        .start()
        .await;
    let [_, b, _] = &ups;

    let round = until(&gw, &ups, "all up", |r| r.iter().all(|n| *n == 2)).await;
    assert_eq!(round, [2, 2, 2]);

    // b's health check fails: it is taken out, the others share its traffic.
    b.on("/health", Reply::fixed(500, "sick"));
    let round = until(&gw, &ups, "b taken out", |r| r[1] == 0).await;
    assert_eq!(round.iter().sum::<usize>(), 6);
    gw.wait_stderr(&[&format!("host={}", b.host()), "host is down"])
        .await;

    // It passes again: it is put back.
    b.on("/health", Reply::fixed(200, "ok"));
    until(&gw, &ups, "b put back", |r| r.iter().all(|n| *n == 2)).await;
    gw.wait_stderr(&["host is up again"]).await;

    // Every check fails: Tyk's stub answer, without a request upstream.
    for up in &ups {
        up.on("/health", Reply::close());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before: usize = ups.iter().map(|u| served(u, "checked")).sum();
        let r = get(gw.addr(), "/checked/checked", &[]).await;
        if r.status == 503 {
            assert_eq!(r.text(), "all hosts are down\n");
            assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
            assert_eq!(
                ups.iter().map(|u| served(u, "checked")).sum::<usize>(),
                before
            );
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(Instant::now() < deadline, "never all down\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A reload keeps the hosts down (their checks still fail) and keeps checking.
    let (status, _) = gw.admin_get("/tyk/reload/?block=true").await;
    assert_eq!(status, 200);
    let r = get(gw.addr(), "/checked/checked", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    for up in &ups {
        up.on("/health", Reply::fixed(200, "ok"));
    }
    until(&gw, &ups, "back after reload", |r| {
        r.iter().all(|n| *n == 2)
    })
    .await;
}

#[tokio::test]
async fn an_empty_target_list_is_refused() {
    let up = MockUpstream::start().await;
    let empty = balanced("empty", &[], json!({"proxy": {"target_url": up.url()}}));
    let gw = gateway!().api("empty.json", empty.clone()).start().await;
    gw.assert_unserved(&up, &["/empty/x"]).await;
    gw.wait_stderr(&[
        "empty.json",
        "field `proxy.target_list`: all load balancing targets have weight 0",
    ])
    .await;

    let mut posted = empty;
    posted["api_id"] = json!("posted");
    posted["proxy"]["listen_path"] = json!("/posted/");
    let (status, body) = gw.admin(Method::POST, "/tyk/apis", Some(&posted)).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"status": "error", "message": "Validation of API Definition failed. Reason: \
            all load balancing targets have weight 0, at least one target must have weight > 0."})
    );
}

#[tokio::test]
async fn uptime_results_are_recorded_for_tyk_pump() {
    use tollgate_testkit::redis::{
        RedisServer, node, pump_records, record_field as field, redis_storage,
    };

    let redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    up.on("/health", Reply::fixed(200, "ok"));
    let ok = format!("{}/health", up.url());
    let refused = format!(
        "http://127.0.0.1:{}/health",
        tollgate_testkit::refused_port()
    );
    let def = api_with(
        "recorded",
        "/recorded/",
        &up.url(),
        json!({"uptime_tests": {"check_list": [{"url": ok}, {"url": refused}],
            "config": {"expire_utime_after": 60}}}),
    );
    let _gw = node(gateway!(), &redis_storage(redis.port()))
        .conf(
            json!({"uptime_tests": {"config": {"time_wait": 1, "enable_uptime_analytics": true}}}),
        )
        .api("recorded.json", def)
        .start()
        .await;

    let since = Instant::now();
    let (records, _) = poll_until(since, Duration::from_secs(10), "uptime records", || async {
        let records = pump_records(redis.port(), "host-checker:tyk-uptime-analytics").await;
        if records.len() >= 2 {
            Ok(records)
        } else {
            Err(format!("no uptime records: {records:?}"))
        }
    })
    .await;
    let by_url = |url: &str| {
        records
            .iter()
            .find(|r| field(r, "URL").as_str() == Some(url))
            .unwrap_or_else(|| panic!("no record for {url}: {records:?}"))
    };
    let passed = by_url(&ok);
    assert_eq!(field(passed, "ResponseCode").as_i64(), Some(200));
    assert_eq!(field(passed, "TCPError").as_bool(), Some(false));
    assert_eq!(field(passed, "APIID").as_str(), Some("recorded"));
    assert_eq!(field(passed, "OrgID").as_str(), Some("default"));
    let failed = by_url(&refused);
    assert_eq!(field(failed, "ResponseCode").as_i64(), Some(521));
    assert_eq!(field(failed, "TCPError").as_bool(), Some(true));
}
