//! The admin API on its own port (`control_api_port`) and host (`control_api_hostname`),
//! against the real binary: `/tyk/` moves off the public listener, which then answers 404 for
//! it; the control listener serves nothing else; `/hello` answers on both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use serde_json::json;
use tollgate_testkit::raw::{assert_tyk_error, get};
use tollgate_testkit::{MockUpstream, TEST_SECRET, free_port, gateway};

const ADMIN: (&str, &str) = ("x-tyk-authorization", TEST_SECRET);

#[tokio::test]
async fn the_admin_api_moves_to_its_own_port() {
    let up = MockUpstream::start().await;
    let port = free_port();
    let gw = gateway!()
        .conf(json!({"control_api_port": port}))
        .with_api("a", "/a/", &up.url())
        .start()
        .await;
    let control: SocketAddr = ([127, 0, 0, 1], port).into();
    // Public port: the APIs, and a 404 for the admin paths, even with the secret.
    let r = get(gw.addr(), "/a/x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(get(gw.addr(), "/hello", &[]).await.status, 200);
    for path in ["/tyk/apis", "/tyk/keys", "/tyk/reload", "/tyk"] {
        assert_tyk_error(&get(gw.addr(), path, &[ADMIN]).await, 404, "Not Found");
    }
    // Control port: the admin API, still behind the secret, and nothing else.
    let r = get(control, "/tyk/apis", &[ADMIN]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert!(r.text().contains("\"api_id\":\"a\""), "{}", r.text());
    assert_eq!(get(control, "/hello", &[]).await.status, 200);
    assert_eq!(get(control, "/tyk/apis", &[]).await.status, 403);
    let before = up.request_count();
    assert_tyk_error(&get(control, "/a/x", &[]).await, 404, "Not Found");
    assert_eq!(
        up.request_count(),
        before,
        "the control port proxied a request"
    );
}

#[tokio::test]
async fn the_same_port_as_listen_port_shares_it() {
    let gw = gateway!().start().await;
    let port = gw.port();
    drop(gw);
    // `control_api_port` equal to `listen_port` is Tyk's way of writing "shared".
    let gw = gateway!()
        .port(port)
        .conf(json!({"control_api_port": port}))
        .start()
        .await;
    let r = get(gw.addr(), "/tyk/apis", &[ADMIN]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
}

#[tokio::test]
async fn a_control_hostname_hides_the_admin_api_from_other_hosts() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .conf(json!({"control_api_hostname": "Admin.Internal"}))
        .with_api("a", "/a/", &up.url())
        .start()
        .await;
    let r = get(
        gw.addr(),
        "/tyk/apis",
        &[ADMIN, ("Host", "admin.internal:8080")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.dump());
    let r = get(gw.addr(), "/tyk/apis", &[ADMIN, ("Host", "public.example")]).await;
    assert_tyk_error(&r, 404, "Not Found");
    assert_eq!(get(gw.addr(), "/hello", &[]).await.status, 200);
    // The APIs answer any host.
    let r = get(gw.addr(), "/a/x", &[("Host", "public.example")]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
}
