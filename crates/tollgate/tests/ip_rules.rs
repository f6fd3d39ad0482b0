//! IP allow- and block-lists (`allowed_ips`, `blacklisted_ips`): the client's address is read
//! from `X-Real-IP`, then `X-Forwarded-For` (`xff_depth`), then the socket (the tests reach
//! the gateway from 127.0.0.1); a refused client gets Tyk's 403 before auth and the upstream
//! is never called; a definition with a bad entry is not served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use tollgate_testkit::keys::{KEYED_LISTEN, with_keyed_api};
use tollgate_testkit::raw::{RawResponse, assert_tyk_error, get};
use tollgate_testkit::{Gateway, MockUpstream, gateway};

const MSG_IP: &str = "access from this IP has been disallowed";

async fn call(gw: &Gateway, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    Box::pin(get(gw.addr(), target, headers)).await
}

/// Asserts `GET target` with `headers` reached the upstream (one more request) with 200.
async fn assert_passes(gw: &Gateway, up: &MockUpstream, target: &str, headers: &[(&str, &str)]) {
    let before = up.request_count();
    let r = call(gw, target, headers).await;
    assert_eq!(r.status, 200, "{target} {headers:?}: {}", r.dump());
    assert_eq!(up.request_count(), before + 1);
}

/// Asserts `GET target` with `headers` got Tyk's IP 403 and never reached the upstream.
async fn assert_ip_refused(
    gw: &Gateway,
    up: &MockUpstream,
    target: &str,
    headers: &[(&str, &str)],
) {
    gw.assert_refused(up, ("GET", target), headers, b"", (403, MSG_IP))
        .await;
}

#[tokio::test]
async fn allow_and_block_lists_read_the_client_address() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .keyless_api("local", &up, json!({"allowed_ips": ["127.0.0.1"]}))
        .keyless_api(
            "ten",
            &up,
            json!({"enable_ip_whitelisting": true, "allowed_ips": ["10.0.0.0/8"]}),
        )
        .keyless_api(
            "block",
            &up,
            json!({"enable_ip_blacklisting": true, "blacklisted_ips": ["127.0.0.0/24"]}),
        )
        .keyless_api(
            "off",
            &up,
            json!({"enable_ip_blacklisting": true, "blacklisted_ips": ["127.0.0.0/24"],
                    "ip_access_control_disabled": true}),
        )
        .start()
        .await;

    // The socket peer.
    assert_passes(&gw, &up, "/local/x", &[]).await;
    assert_ip_refused(&gw, &up, "/ten/x", &[]).await;
    assert_ip_refused(&gw, &up, "/block/x", &[]).await;
    assert_passes(&gw, &up, "/off/x", &[]).await;

    // X-Forwarded-For (first entry by default), then X-Real-IP over it.
    assert_passes(&gw, &up, "/ten/x", &[("X-Forwarded-For", "10.1.2.3")]).await;
    assert_passes(
        &gw,
        &up,
        "/ten/x",
        &[("X-Forwarded-For", "10.1.2.3, 127.0.0.1")],
    )
    .await;
    assert_ip_refused(&gw, &up, "/local/x", &[("X-Forwarded-For", "10.1.2.3")]).await;
    assert_ip_refused(&gw, &up, "/ten/x", &[("X-Real-IP", "192.168.1.1")]).await;
    assert_ip_refused(
        &gw,
        &up,
        "/ten/x",
        &[
            ("X-Real-IP", "192.168.1.1"),
            ("X-Forwarded-For", "10.1.2.3"),
        ],
    )
    .await;
    // An unparsable X-Real-IP is skipped.
    assert_passes(
        &gw,
        &up,
        "/ten/x",
        &[("X-Real-IP", "bob"), ("X-Forwarded-For", "10.1.2.3")],
    )
    .await;
    // Behind a proxy, the block-list sees the forwarded client, not the proxy.
    assert_passes(&gw, &up, "/block/x", &[("X-Forwarded-For", "203.0.113.5")]).await;
}

#[tokio::test]
async fn xff_depth_picks_from_the_right() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .conf(json!({"http_server_options": {"xff_depth": 1}}))
        .keyless_api("ten", &up, json!({"allowed_ips": ["10.0.0.0/8"]}))
        .start()
        .await;
    // Depth 1: the right-most entry.
    assert_passes(
        &gw,
        &up,
        "/ten/x",
        &[("X-Forwarded-For", "192.168.1.1, 10.1.2.3")],
    )
    .await;
    assert_ip_refused(
        &gw,
        &up,
        "/ten/x",
        &[("X-Forwarded-For", "10.1.2.3, 192.168.1.1")],
    )
    .await;
}

#[tokio::test]
async fn a_bad_entry_keeps_the_api_unserved_and_is_logged() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .keyless_api(
            "badip",
            &up,
            json!({"allowed_ips": ["127.0.0.1", "127.0.0.1/24", "bob"]}),
        )
        .with_api("good", "/good/", &up.url())
        .start()
        .await;
    gw.assert_routed(&up, "/good/ok", &[], "/ok").await;
    gw.assert_unserved(&up, &["/badip/x"]).await;

    gw.wait_stderr(&["badip.json", "allowed_ips[2]"]).await;
}

#[tokio::test]
async fn ip_refusal_comes_before_auth() {
    let up = MockUpstream::start().await;
    let gw = with_keyed_api(
        gateway!(),
        &up.url(),
        json!({"blacklisted_ips": ["127.0.0.1"]}),
    )
    .start()
    .await;
    // No key, blocked address: the IP refusal, not 401.
    let target = format!("{KEYED_LISTEN}x");
    assert_ip_refused(&gw, &up, &target, &[]).await;
    // Not blocked: auth decides.
    let r = call(&gw, &target, &[("X-Real-IP", "10.0.0.1")]).await;
    assert_tyk_error(&r, 401, "Authorization field missing");
    assert_eq!(up.request_count(), 0);
}
