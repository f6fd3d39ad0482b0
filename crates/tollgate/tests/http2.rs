//! HTTP/2 against the real binary: to `https` upstreams that pick `h2` by ALPN under
//! `proxy_enable_http2`, to `h2c://` targets, from clients over h2c (`enable_http2` without
//! TLS), trailers end to end as gRPC needs them, WebSockets still on HTTP/1.1, and no tunnel for
//! an `Upgrade: h2c` (which would carry requests past every rule).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_testkit::raw::get;
use tollgate_testkit::tls::TestCa;
use tollgate_testkit::{MockUpstream, Reply, client, extended_version, gateway, pattern_bytes};

/// An HTTP/2 connection to `addr` without TLS (prior knowledge), as a gRPC client opens one.
async fn h2c_client(
    addr: std::net::SocketAddr,
) -> hyper::Result<hyper::client::conn::http2::SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn h2_request(
    addr: std::net::SocketAddr,
    path: &str,
    body: &'static [u8],
) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("http://{addr}{path}"))
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

#[tokio::test]
async fn https_upstreams_that_pick_h2_share_one_connection() {
    let ca = TestCa::default();
    let up = MockUpstream::start_tls(ca.issue(&["localhost"]).server_config_h2()).await;
    up.on("/base/ws", Reply::upgrade());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "ca.pem");
    let target = format!("https://localhost:{}/base", up.port());
    let start = |http2: bool| {
        gateway!()
            .conf(json!({
                "proxy_ssl_ca_cert": ca_file,
                "proxy_enable_http2": http2,
                "worker_threads": 1,
            }))
            .with_api("a", "/a/", &target)
            .start()
    };

    let gw = start(true).await;
    let http = client();
    let body = pattern_bytes(200_000);
    let sends: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(
                http.post(gw.url(&format!("/a/item/{i}")))
                    .body(body.clone())
                    .send(),
            )
        })
        .collect();
    for sent in sends {
        let r = sent.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        let echoed: Value = r.json().await.unwrap();
        assert_eq!(echoed["body_len"], 200_000);
    }
    let recs = up.requests();
    assert_eq!(recs.len(), 8);
    for rec in &recs {
        assert_eq!(rec.version, http::Version::HTTP_2, "{rec:?}");
        assert!(rec.path.starts_with("/base/item/"), "{}", rec.uri);
        assert!(rec.body == body, "the body changed on its way");
        // `:authority` names the target's host, in place of a Host header (which nginx,
        // for one, would refuse as a second Host).
        assert_eq!(
            rec.authority.as_deref(),
            Some(format!("localhost:{}", up.port()).as_str())
        );
        assert_eq!(rec.header("host"), None);
        assert_eq!(rec.header("x-forwarded-proto"), Some("http"));
    }
    // Eight concurrent requests, one worker: streams of one connection.
    assert_eq!(up.distinct_connections(), 1);

    // A WebSocket to the same upstream still gets HTTP/1.1 (a connection of its own).
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(
        b"GET /a/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"ping");
    assert_eq!(up.last().version, http::Version::HTTP_11);
    drop(gw);

    // Without proxy_enable_http2 the same upstream is spoken to in HTTP/1.1.
    up.clear();
    let gw = start(false).await;
    let r = get(gw.addr(), "/a/x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(up.last().version, http::Version::HTTP_11);
}

#[tokio::test]
async fn h2c_targets_and_h2c_clients_carry_trailers_end_to_end() {
    let up = MockUpstream::start_h2c().await;
    up.on(
        "/pkg.Greeter/",
        Reply::fixed(200, &b"\x00\x00\x00\x00\x05hello"[..])
            .header("content-type", "application/grpc")
            .trailer("grpc-status", "0")
            .trailer("grpc-message", "fine"),
    );
    let gw = gateway!()
        .conf(json!({"http_server_options": {"enable_http2": true}}))
        .with_api_extra(
            "grpc",
            "/pkg.Greeter/",
            &format!("h2c://127.0.0.1:{}", up.port()),
            json!({"proxy": {"strip_listen_path": false}}),
        )
        .with_api_extra(
            "closed",
            "/closed/",
            &format!("h2c://127.0.0.1:{}", up.port()),
            json!({"use_keyless": false, "auth": {"auth_header_name": "authorization"}}),
        )
        .start()
        .await;

    // HTTP/2 from the client without TLS (prior knowledge), HTTP/2 to the upstream.
    let mut h2 = h2c_client(gw.addr()).await.unwrap();
    let resp = h2
        .send_request(h2_request(
            gw.addr(),
            "/pkg.Greeter/SayHello",
            b"\x00\x00\x00\x00\x02hi",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");
    assert_eq!(&collected.to_bytes()[..], b"\x00\x00\x00\x00\x05hello");
    let rec = up.last();
    assert_eq!(rec.version, http::Version::HTTP_2);
    assert_eq!(rec.uri, "/pkg.Greeter/SayHello");
    assert_eq!(rec.body, b"\x00\x00\x00\x00\x02hi");
    // gRPC servers insist on `te: trailers`; it is the one hop-by-hop field h2 carries.
    assert_eq!(rec.header("te"), Some("trailers"));

    // The same rules hold over h2c: a keyed API refuses a request without a key.
    let resp = h2
        .send_request(h2_request(gw.addr(), "/closed/x", b""))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "Authorization field missing");
    assert_eq!(up.request_count(), 1);

    // HTTP/1.1 clients keep working on the same port, and reach the h2c target too (without
    // trailers, which they did not ask for).
    let r = get(gw.addr(), "/pkg.Greeter/SayHello", &[]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(up.last().version, http::Version::HTTP_2);
    assert_eq!(up.last().header("te"), None);
}

#[tokio::test]
async fn without_enable_http2_the_plain_listener_speaks_http1_only() {
    let up = MockUpstream::start().await;
    let gw = gateway!().with_api("a", "/a/", &up.url()).start().await;
    let refused = match h2c_client(gw.addr()).await {
        Err(_) => true,
        Ok(mut h2) => h2
            .send_request(h2_request(gw.addr(), "/a/x", b""))
            .await
            .is_err(),
    };
    assert!(refused, "an HTTP/2 preface was served without enable_http2");
    assert_eq!(up.request_count(), 0);
    assert_eq!(get(gw.addr(), "/a/x", &[]).await.status, 200);
}

#[tokio::test]
async fn an_h2c_upgrade_is_never_tunnelled() {
    // An upstream that switches protocols for any Upgrade it is sent.
    let up = MockUpstream::start().await;
    up.on("/", Reply::upgrade());
    let gw = gateway!()
        .keyless_api(
            "a",
            &up,
            extended_version(json!({"extended_paths": {
                "black_list": [{"path": "/admin", "method": "GET"}]
            }})),
        )
        .start()
        .await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(
        b"GET /a/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    // The upstream never saw an Upgrade, so it answered 426 instead of switching.
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    let rec = up.last();
    assert_eq!(rec.header("upgrade"), None, "{:?}", rec.headers);
    assert_eq!(rec.header("http2-settings"), None, "{:?}", rec.headers);
    // The path rule the tunnel would have bypassed still holds for this client.
    let r = get(gw.addr(), "/a/admin", &[]).await;
    assert_eq!(r.status, 403, "{}", r.dump());
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn h2c_uptime_checks_are_refused_at_load() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .with_api("ok", "/ok/", &up.url())
        .keyless_api("checked", &up, json!({"uptime_tests": {"check_list": [{"url": format!("h2c://127.0.0.1:{}/health", up.port())}]}}),
        )
        .start()
        .await;
    gw.assert_unserved(&up, &["/checked/x"]).await;
    let log = gw.wait_stderr(&["uptime_tests.check_list[0].url"]).await;
    assert!(log.contains("h2c://"), "{log}");
    assert_eq!(get(gw.addr(), "/ok/x", &[]).await.status, 200);
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("response head in time")
            .unwrap();
        assert_eq!(n, 1, "closed: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}
