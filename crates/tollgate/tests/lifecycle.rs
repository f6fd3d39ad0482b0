//! Process lifecycle: command line, reloads (SIGHUP, under load), graceful
//! shutdown and start-up failures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use tollgate_testkit::raw::{RawClient, get};
use tollgate_testkit::{Gateway, MockUpstream, Reply, api_def, client, gateway, start_with_api};

#[tokio::test]
async fn conf_flag_with_equals_sign() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .conf_equals_form()
        .with_api("a", "/a/", &up.url())
        .start()
        .await;
    gw.assert_routed(&up, "/a/x", &[], "/x").await;
}

#[tokio::test]
async fn sighup_reloads_app_path() {
    let up = MockUpstream::start().await;
    let gw = start_with_api!("a", "/a/", &up.url()).await;
    let r = get(gw.addr(), "/b/x", &[]).await;
    assert_eq!(r.status, 404);

    let def = api_def("b", "/b/", &up.url());
    std::fs::write(gw.apps_dir().join("b.json"), def.to_string()).unwrap();
    gw.sighup();

    let deadline = Instant::now() + Duration::from_millis(2500);
    loop {
        let r = get(gw.addr(), "/b/x", &[]).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 404, "{}", r.text());
        assert!(
            Instant::now() < deadline,
            "new API not served 2.5 s after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up.last().uri, "/x");
    // Still alive and still serving the old API.
    gw.assert_routed(&up, "/a/y", &[], "/y").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_no_requests() {
    let up = MockUpstream::start().await;
    let gw = start_with_api!("load", "/load/", &up.url()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let url = gw.url("/load/x");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (stop, ok, url) = (Arc::clone(&stop), Arc::clone(&ok), url.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut failures = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match c.get(&url).send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp.bytes().await;
                        match body {
                            Ok(b) if status == 200 && b.starts_with(b"{\"method\"") => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures.push(format!("task {t}: {status} {other:?}")),
                        }
                    }
                    Err(e) => failures.push(format!("task {t}: {e:?}")),
                }
            }
            failures
        }));
    }

    let admin = client();
    for i in 0..100 {
        let path = if i % 3 == 0 {
            "/tyk/reload?block=true"
        } else {
            "/tyk/reload"
        };
        let resp = admin
            .get(gw.url(path))
            .header("x-tyk-authorization", gw.secret())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "reload {i}");
        if i % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Let the last reload settle while traffic continues.
    let (status, _) = gw.admin_get("/tyk/reload?block=true").await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);

    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    let ok = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} failed requests ({ok} ok), first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok >= 100, "only {ok} requests completed during the reloads");
    assert_eq!(up.request_count(), ok);
}

/// A gateway with the API `s` on /s/ whose upstream answers /slow with
/// `body` after `delay_ms`, and a `GET /s/slow` the upstream has received
/// and not yet answered. The task yields the status and body.
async fn slow_request_in_flight(
    body: &'static str,
    delay_ms: u64,
) -> (
    MockUpstream,
    Gateway,
    tokio::task::JoinHandle<(StatusCode, bytes::Bytes)>,
) {
    let up = MockUpstream::start().await;
    up.on(
        "/slow",
        Reply::fixed(200, body).delay(Duration::from_millis(delay_ms)),
    );
    let gw = start_with_api!("s", "/s/", &up.url()).await;
    let url = gw.url("/s/slow");
    let in_flight = tokio::spawn(async move {
        let resp = client().get(url).send().await.unwrap();
        let status = resp.status();
        (status, resp.bytes().await.unwrap())
    });
    up.wait_for_requests(1, Duration::from_secs(5)).await;
    (up, gw, in_flight)
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let (_up, mut gw, in_flight) = slow_request_in_flight("done", 1500).await;
    let term_at = Instant::now();
    gw.sigterm();

    // New connections are refused soon after.
    let refused_after = loop {
        match tokio::net::TcpStream::connect(gw.addr()).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                break term_at.elapsed();
            }
            _ => {}
        }
        assert!(
            term_at.elapsed() < Duration::from_millis(1200),
            "still accepting connections 1.2 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };

    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK, "in-flight request: {body:?}");
    assert_eq!(&body[..], b"done");

    let exit = gw.wait_exit(Duration::from_secs(5)).await;
    let exit = exit.unwrap_or_else(|| panic!("still running 5 s after SIGTERM\n{}", gw.log()));
    assert!(exit.success(), "exit status {exit:?}\n{}", gw.log());
    assert!(refused_after < Duration::from_millis(1200));
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_delay_shutdown() {
    let up = MockUpstream::start().await;
    let mut gw = start_with_api!("a", "/a/", &up.url()).await;
    // A client that keeps its connection open after a request.
    let mut idle = RawClient::connect(gw.addr()).await.unwrap();
    idle.send(format!("GET /a/x HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr()).as_bytes())
        .await
        .unwrap();
    let r = idle.read_response(Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    gw.sigterm();
    let exit = gw.wait_exit(Duration::from_secs(5)).await;
    let exit = exit.unwrap_or_else(|| {
        panic!("an idle keep-alive connection kept the gateway alive 5 s after SIGTERM")
    });
    assert!(exit.success(), "exit status {exit:?}\n{}", gw.log());
    // And the idle connection was closed.
    assert!(idle.wait_closed(Duration::from_secs(1)).await.is_ok());
}

#[tokio::test]
async fn reload_does_not_cut_in_flight_requests() {
    let (_up, gw, in_flight) = slow_request_in_flight("slow done", 800).await;

    // Remove the API and reload while the request waits for the upstream.
    let (status, _) = gw.admin(Method::DELETE, "/tyk/apis/s", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = gw.admin_get("/tyk/reload?block=true").await;
    assert_eq!(status, StatusCode::OK);
    let r = get(gw.addr(), "/s/other", &[]).await;
    assert_eq!(r.status, 404, "API still served after delete + reload");

    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"slow done");
}

#[tokio::test]
async fn invalid_json_config_fails_fast() {
    let mut gw = gateway!().raw_conf("{ \"listen_port\": 8080, ").spawn();
    let exit = gw.wait_exit(Duration::from_secs(5)).await;
    let exit = exit.unwrap_or_else(|| panic!("still running with a broken tyk.conf\n{}", gw.log()));
    assert!(!exit.success(), "exit status {exit:?}");
    let stderr = gw.stderr();
    assert!(
        stderr.contains("tyk.conf"),
        "stderr does not name the config file:\n{stderr}"
    );
}

#[tokio::test]
async fn wrongly_typed_config_field_fails_fast() {
    let conf = json!({
        "listen_address": "127.0.0.1",
        "listen_port": "abc",
        "secret": "test-secret",
        "app_path": "apps",
    });
    let mut gw = gateway!().raw_conf(conf.to_string()).spawn();
    let exit = gw.wait_exit(Duration::from_secs(5)).await;
    let exit =
        exit.unwrap_or_else(|| panic!("still running with listen_port \"abc\"\n{}", gw.log()));
    assert!(!exit.success(), "exit status {exit:?}");
    let stderr = gw.stderr();
    assert!(
        stderr.contains("tyk.conf"),
        "stderr does not name the config file:\n{stderr}"
    );
    assert!(
        stderr.contains("listen_port"),
        "stderr does not name the field:\n{stderr}"
    );
}

#[tokio::test]
async fn port_in_use_fails_fast() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut gw = gateway!().port(port).spawn();
    let exit = gw.wait_exit(Duration::from_secs(5)).await;
    let exit = exit.unwrap_or_else(|| panic!("still running on a taken port\n{}", gw.log()));
    assert!(!exit.success(), "exit status {exit:?}");
    let stderr = gw.stderr();
    assert!(
        stderr.contains(&port.to_string()),
        "stderr does not mention port {port}:\n{stderr}"
    );
    drop(taken);
}

#[tokio::test]
async fn unknown_config_keys_are_ignored() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .conf(json!({"some_future_option": {"x": [1, 2]}, "enable_analytics": true}))
        .with_api("a", "/a/", &up.url())
        .start()
        .await;
    gw.assert_get_ok("/a/x").await;
}

#[tokio::test]
async fn apis_created_through_the_admin_api_survive_a_restart() {
    let up = MockUpstream::start().await;
    let mut gw = gateway!().start().await;
    let def = api_def("persist", "/persist/", &up.url());
    let (status, _) = gw.admin(Method::POST, "/tyk/apis", Some(&def)).await;
    assert_eq!(status, StatusCode::OK);

    gw.restart().await;
    gw.assert_routed(&up, "/persist/x", &[], "/x").await;
    let (status, v) = gw.admin_get("/tyk/apis/persist").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["api_id"], "persist");
}
