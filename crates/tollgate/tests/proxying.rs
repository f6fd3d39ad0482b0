//! Proxying: upstream URL construction, header handling, pass-through of
//! upstream responses, streaming, connection pooling, upstream errors and
//! WebSocket upgrades.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_testkit::raw::{RawClient, assert_tyk_error, get, request};
use tollgate_testkit::{
    MockUpstream, Recorded, Reply, api_with, checksum, client, gateway, pattern_bytes,
    refused_port, start_with_api,
};

const MIB: usize = 1024 * 1024;

/// Sends `GET /h/x` with `headers` through a gateway with the API `h` on
/// /h/; asserts 200 and returns the upstream and what it received.
async fn forwarded_through_h(headers: &[(&str, &str)]) -> (MockUpstream, Recorded) {
    let up = MockUpstream::start().await;
    let gw = start_with_api!("h", "/h/", &up.url()).await;
    let r = get(gw.addr(), "/h/x", headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = up.last();
    (up, rec)
}

/// The gateway's own connection management may say keep-alive or close;
/// nothing else may be in a Connection header.
fn assert_own_connection_only<S: AsRef<str>>(values: &[S], what: &str) {
    for v in values {
        let v = v.as_ref().to_ascii_lowercase();
        assert!(
            v == "keep-alive" || v == "close",
            "connection: {v:?} {what}"
        );
    }
}

#[tokio::test]
async fn upstream_url_joins_target_path_and_keeps_query() {
    let up = MockUpstream::start().await;
    let base = format!("{}/base", up.url());
    let base_slash = format!("{}/base/", up.url());
    let root = up.url();
    let root_slash = format!("{}/", up.url());
    let no_strip = api_with(
        "o5",
        "/o5/",
        &root,
        json!({"proxy": {"strip_listen_path": false}}),
    );
    let no_strip_base = api_with(
        "o6",
        "/o6/",
        &base,
        json!({"proxy": {"strip_listen_path": false}}),
    );
    let gw = gateway!()
        .with_api("o1", "/o1/", &base)
        .with_api("o2", "/o2/", &base_slash)
        .with_api("o3", "/o3/", &root)
        .with_api("o4", "/o4/", &root_slash)
        .api("o5.json", no_strip)
        .api("o6.json", no_strip_base)
        .with_api("orders", "/orders/", &root)
        .start()
        .await;

    let cases = [
        ("/o1/items/1?x=1&y=a%20b", "/base/items/1?x=1&y=a%20b"),
        ("/o2/items/1?x=1", "/base/items/1?x=1"),
        ("/o3/items/1?x=1", "/items/1?x=1"),
        ("/o4/items/1?x=1", "/items/1?x=1"),
        ("/o5/items/1?x=1", "/o5/items/1?x=1"),
        ("/o6/items/1", "/base/o6/items/1"),
        ("/orders/items/1", "/items/1"),
        ("/o3/", "/"),
    ];
    for (sent, want) in cases {
        let r = get(gw.addr(), sent, &[]).await;
        assert_eq!(r.status, 200, "{sent}: {}", r.text());
        assert_eq!(up.last().uri, want, "request {sent}");
        let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(echo["method"], "GET");
    }
    assert_eq!(up.request_count(), cases.len());
}

#[tokio::test]
async fn methods_and_request_body_are_forwarded() {
    let up = MockUpstream::start().await;
    let gw = start_with_api!("m", "/m/", &up.url()).await;
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let body = format!("{{\"method\":\"{method}\"}}");
        let r = request(
            gw.addr(),
            method,
            "/m/thing",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        let rec = up.last();
        assert_eq!(rec.method, method);
        assert_eq!(rec.uri, "/thing");
        assert_eq!(rec.body, body.as_bytes());
        assert_eq!(rec.header("content-type"), Some("application/json"));
    }
}

#[tokio::test]
async fn request_headers_forwarding_and_hop_by_hop_removal() {
    let (up, rec) = forwarded_through_h(&[
        ("Host", "client.example:9999"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Custom", "keep-me"),
        ("Accept", "application/json"),
        ("Connection", "keep-alive, X-Conn-Named"),
        ("X-Conn-Named", "drop-me"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("TE", "trailers"),
        ("Trailer", "X-Trail"),
        ("Upgrade", "foo/1"),
    ])
    .await;
    assert_eq!(rec.uri, "/x");
    assert_eq!(
        rec.header("host"),
        Some(up.host().as_str()),
        "{:?}",
        rec.headers
    );
    assert_eq!(
        rec.header_all("x-forwarded-for"),
        vec!["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(rec.header("x-forwarded-proto"), Some("http"));
    assert_eq!(rec.header("x-forwarded-host"), Some("client.example:9999"));
    assert_eq!(rec.header("x-custom"), Some("keep-me"));
    assert_eq!(rec.header("accept"), Some("application/json"));
    for h in [
        "x-conn-named",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            rec.headers.get(h).is_none(),
            "hop-by-hop {h} forwarded: {:?}",
            rec.headers
        );
    }
    // The gateway's own connection management may say keep-alive, but the
    // client's Connection header must not be forwarded.
    assert_own_connection_only(&rec.header_all("connection"), "forwarded");
}

#[tokio::test]
async fn forwarded_for_is_set_when_absent_and_host_can_be_preserved() {
    let up = MockUpstream::start().await;
    let preserve = json!({"proxy": {"preserve_host_header": true}});
    let keep = api_with("keep", "/keep/", &up.url(), preserve);
    let gw = gateway!()
        .with_api("plain", "/plain/", &up.url())
        .api("keep.json", keep)
        .start()
        .await;

    let r = get(gw.addr(), "/plain/x", &[("Host", "front.example")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = up.last();
    assert_eq!(rec.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(rec.header("host"), Some(up.host().as_str()));
    assert_eq!(rec.header("x-forwarded-host"), Some("front.example"));
    assert_eq!(rec.header("x-forwarded-proto"), Some("http"));

    let r = get(gw.addr(), "/keep/y", &[("Host", "front.example:8443")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = up.last();
    assert_eq!(rec.uri, "/y");
    assert_eq!(rec.header("host"), Some("front.example:8443"));
    assert_eq!(rec.header("x-forwarded-host"), Some("front.example:8443"));
}

#[tokio::test]
async fn upstream_response_passes_through_unchanged() {
    let up = MockUpstream::start().await;
    up.on(
        "/created",
        Reply::fixed(201, r#"{"created":true}"#)
            .header("Content-Type", "application/vnd.test+json")
            .header("X-Custom-Resp", "abc")
            .header("Set-Cookie", "a=1")
            .header("Set-Cookie", "b=2"),
    );
    up.on(
        "/boom",
        Reply::fixed(500, "upstream exploded").header("Content-Type", "text/plain"),
    );
    up.on("/missing", Reply::fixed(404, "no such thing"));
    let gw = start_with_api!("p", "/p/", &up.url()).await;

    let r = get(gw.addr(), "/p/created", &[]).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body, br#"{"created":true}"#);
    assert_eq!(r.header("content-type"), Some("application/vnd.test+json"));
    assert_eq!(r.header("x-custom-resp"), Some("abc"));
    assert_eq!(r.headers_all("set-cookie"), vec!["a=1", "b=2"]);
    assert_eq!(r.header("x-generator"), None);

    let r = get(gw.addr(), "/p/boom", &[]).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body, b"upstream exploded");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(
        r.header("x-generator"),
        None,
        "upstream error rewritten by the gateway"
    );

    let r = get(gw.addr(), "/p/missing", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, b"no such thing");
    assert_eq!(up.request_count(), 3);
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_removed() {
    let up = MockUpstream::start().await;
    up.on(
        "/hop",
        Reply::fixed(200, "hop body")
            .header("Connection", "X-Up-Named")
            .header("X-Up-Named", "drop-me")
            .header("Keep-Alive", "timeout=5")
            .header("Proxy-Connection", "keep-alive")
            .header("Proxy-Authenticate", "Basic realm=\"x\"")
            .header("Upgrade", "foo/1")
            .header("X-Up-Keep", "yes"),
    );
    let gw = start_with_api!("p", "/p/", &up.url()).await;
    let r = get(gw.addr(), "/p/hop", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hop body");
    assert_eq!(r.header("x-up-keep"), Some("yes"));
    for h in [
        "x-up-named",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "upgrade",
    ] {
        assert_eq!(
            r.header(h),
            None,
            "hop-by-hop {h} passed to the client:\n{}",
            r.head
        );
    }
    assert_own_connection_only(&r.headers_all("connection"), &format!(":\n{}", r.head));
}

/// POSTs 8 MiB of [`pattern_bytes`] to `url`; asserts 200 and returns the
/// payload and the response.
async fn post_8_mib(url: &str) -> (Vec<u8>, reqwest::Response) {
    let payload = pattern_bytes(8 * MIB);
    let resp = client()
        .post(url)
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    (payload, resp)
}

/// `got` has the length and checksum of `want`.
fn assert_intact(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    assert_eq!(checksum(got), checksum(want), "{what}");
}

#[tokio::test]
async fn large_upload_with_content_length_arrives_intact() {
    let up = MockUpstream::start().await;
    let gw = start_with_api!("u", "/u/", &up.url()).await;
    let (payload, resp) = post_8_mib(&gw.url("/u/upload")).await;
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["body_len"], 8 * MIB);
    assert_intact(&up.last().body, &payload, "upload");
}

#[tokio::test]
async fn large_chunked_upload_arrives_intact() {
    let up = MockUpstream::start().await;
    let gw = start_with_api!("u", "/u/", &up.url()).await;
    let payload = pattern_bytes(8 * MIB);
    let mut c = RawClient::connect(gw.addr()).await.unwrap();
    let head = format!(
        "POST /u/chunked HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        gw.addr()
    );
    c.send(head.as_bytes()).await.unwrap();
    // Uneven chunk sizes.
    let mut off = 0;
    let mut size = 1000;
    while off < payload.len() {
        let n = size.min(payload.len() - off);
        let mut chunk = format!("{n:x}\r\n").into_bytes();
        chunk.extend_from_slice(&payload[off..off + n]);
        chunk.extend_from_slice(b"\r\n");
        c.send(&chunk).await.unwrap();
        off += n;
        size = if size > 200_000 { 777 } else { size * 3 };
    }
    c.send(b"0\r\n\r\n").await.unwrap();
    let r = c.read_response(Duration::from_secs(30)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(echo["body_len"], 8 * MIB);
    let rec = up.last();
    assert_eq!(rec.uri, "/chunked");
    assert_eq!(rec.body.len(), payload.len());
    assert_eq!(checksum(&rec.body), checksum(&payload));
}

#[tokio::test]
async fn large_download_arrives_intact() {
    let up = MockUpstream::start().await;
    up.on("/big", Reply::stream(8 * MIB));
    up.on("/bigchunked", Reply::stream_chunked(8 * MIB));
    let gw = start_with_api!("d", "/d/", &up.url()).await;
    let want = pattern_bytes(8 * MIB);
    for path in ["/d/big", "/d/bigchunked"] {
        let resp = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_intact(&resp.bytes().await.unwrap(), &want, path);
    }
}

#[tokio::test]
async fn body_streams_both_ways_at_once() {
    let up = MockUpstream::start().await;
    up.on("/echo", Reply::echo_body());
    let gw = start_with_api!("e", "/e/", &up.url()).await;
    let (payload, resp) = post_8_mib(&gw.url("/e/echo")).await;
    assert_intact(&resp.bytes().await.unwrap(), &payload, "echoed");
    assert_eq!(checksum(&up.last().body), checksum(&payload));
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let up = MockUpstream::start().await;
    let gw = start_with_api!("pool", "/pool/", &up.url()).await;
    let c = client();
    for i in 0..50 {
        let resp = c.get(gw.url(&format!("/pool/{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let echo: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(echo["path"], format!("/{i}"));
    }
    assert_eq!(up.request_count(), 50);
    let conns = up.distinct_connections();
    assert!(
        conns <= 4,
        "50 sequential requests used {conns} upstream connections"
    );
}

#[tokio::test]
async fn refused_upstream_is_a_502() {
    let target = format!("http://127.0.0.1:{}", refused_port());
    let gw = start_with_api!("r", "/r/", &target).await;
    let r = get(gw.addr(), "/r/x", &[]).await;
    assert_tyk_error(&r, 502, "There was a problem proxying the request");
}

#[tokio::test]
async fn reset_upstream_is_a_502() {
    let up = MockUpstream::start_resetting().await;
    let gw = start_with_api!("r", "/r/", &up.url()).await;
    let r = get(gw.addr(), "/r/x", &[]).await;
    assert_tyk_error(&r, 502, "There was a problem proxying the request");
    assert!(up.accepted() >= 1, "the upstream was never contacted");
}

#[tokio::test]
async fn upstream_closing_without_answer_is_a_502() {
    let up = MockUpstream::start().await;
    up.on("/", Reply::close());
    let gw = start_with_api!("r", "/r/", &up.url()).await;
    let r = request(gw.addr(), "POST", "/r/x", &[], b"payload").await;
    assert_tyk_error(&r, 502, "There was a problem proxying the request");
    assert_eq!(up.last().body, b"payload");
}

#[tokio::test]
async fn slow_upstream_hits_the_hard_timeout() {
    let up = MockUpstream::start().await;
    up.on(
        "/slow",
        Reply::fixed(200, "too late").delay(Duration::from_secs(3)),
    );
    let gw = gateway!()
        .proxy_default_timeout(1)
        .with_api("t", "/t/", &up.url())
        .start()
        .await;
    let start = Instant::now();
    let r = get(gw.addr(), "/t/slow", &[]).await;
    let took = start.elapsed();
    assert_tyk_error(&r, 504, "Upstream service reached hard timeout.");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2800),
        "504 after {took:?} with a 1 s timeout"
    );
    assert_eq!(up.last().uri, "/slow");

    // Fast requests on the same API still work.
    let r = get(gw.addr(), "/t/fast", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Whether a Connection header value names `upgrade` (any case).
fn says_upgrade(connection: Option<&str>) -> bool {
    connection.is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
}

#[tokio::test]
async fn websocket_upgrade_tunnels_bytes_both_ways() {
    let up = MockUpstream::start().await;
    up.on("/", Reply::upgrade());
    let gw = start_with_api!("ws", "/ws/", &up.url()).await;
    let mut c = RawClient::connect(gw.addr()).await.unwrap();
    let head = format!(
        "GET /ws/ HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        gw.addr()
    );
    c.send(head.as_bytes()).await.unwrap();
    let r = c.read_response(Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status, 101, "{}", r.head);
    assert_eq!(
        r.header("upgrade").map(str::to_ascii_lowercase).as_deref(),
        Some("websocket"),
        "{}",
        r.head
    );
    assert!(says_upgrade(r.header("connection")), "{}", r.head);
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );

    let rec = up.last();
    assert_eq!(rec.uri, "/");
    assert_eq!(rec.header("upgrade"), Some("websocket"));
    assert!(says_upgrade(rec.header("connection")), "{:?}", rec.headers);
    assert_eq!(
        rec.header("sec-websocket-key"),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    assert_eq!(rec.header("sec-websocket-version"), Some("13"));

    // A masked text frame "hello", then a larger binary payload.
    let frame = [
        0x81u8, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    c.send(&frame).await.unwrap();
    let back = c
        .read_exact(frame.len(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(back, frame);
    let big = pattern_bytes(256 * 1024);
    c.send(&big).await.unwrap();
    let back = c
        .read_exact(big.len(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(checksum(&back), checksum(&big));

    let mut sent = frame.to_vec();
    sent.extend_from_slice(&big);
    let (recs, ok) = up
        .wait_until(Duration::from_secs(5), |r| {
            r.last().is_some_and(|r| r.body.len() >= sent.len())
        })
        .await;
    assert!(
        ok,
        "upstream tunnel got {} bytes",
        recs.last().map_or(0, |r| r.body.len())
    );
    assert_eq!(checksum(&recs.last().unwrap().body), checksum(&sent));
}

#[tokio::test]
async fn upstream_connection_close_is_respected() {
    let up = MockUpstream::start().await;
    up.on(
        "/",
        Reply::fixed(200, "closing").header("Connection", "close"),
    );
    let gw = start_with_api!("c", "/c/", &up.url()).await;
    let c = client();
    for i in 0..5 {
        let resp = c.get(gw.url(&format!("/c/{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(&resp.bytes().await.unwrap()[..], b"closing", "request {i}");
    }
    let recs = up.requests();
    assert_eq!(recs.len(), 5);
    assert_eq!(
        up.distinct_connections(),
        5,
        "reused a connection the upstream closed"
    );
}

#[tokio::test]
async fn pooled_connections_closed_by_the_upstream_are_not_reused() {
    // Like an upstream with a short keep-alive timeout.
    let up = MockUpstream::start_with_idle_timeout(Duration::from_millis(150)).await;
    let gw = start_with_api!("i", "/i/", &up.url()).await;
    let c = client();
    for i in 0..3 {
        let resp = c.get(gw.url(&format!("/i/{i}"))).send().await.unwrap();
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        assert_eq!(status, 200, "request {i}: {body:?}");
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["path"], format!("/{i}"));
        // Long enough for the upstream to close the idle connection.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(up.request_count(), 3);
    // Each idle connection was really closed by the upstream in between.
    assert_eq!(up.distinct_connections(), 3);
}

#[tokio::test]
async fn client_connection_is_kept_alive_across_requests() {
    let up = MockUpstream::start().await;
    let gw = start_with_api!("k", "/k/", &up.url()).await;
    let mut c = RawClient::connect(gw.addr()).await.unwrap();
    let host = gw.addr();
    c.send(format!("GET /k/1 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let r = c.read_response(Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    c.send(format!("GET /none HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let r = c.read_response(Duration::from_secs(5)).await.unwrap();
    assert_tyk_error(&r, 404, "Not Found");

    c.send(
        format!("POST /k/2 HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc").as_bytes(),
    )
    .await
    .unwrap();
    let r = c.read_response(Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    let recs = up.requests();
    assert_eq!(recs.len(), 2);
    assert_eq!(
        (recs[0].uri.as_str(), recs[0].body.as_slice()),
        ("/1", &b""[..])
    );
    assert_eq!(
        (recs[1].uri.as_str(), recs[1].body.as_slice()),
        ("/2", &b"abc"[..])
    );
}

#[tokio::test]
async fn every_connection_header_line_is_honoured() {
    let (_up, rec) = forwarded_through_h(&[
        ("Connection", "X-First"),
        ("Connection", "x-second, close"),
        ("X-First", "1"),
        ("X-Second", "2"),
        ("X-Third", "3"),
    ])
    .await;
    assert!(rec.headers.get("x-first").is_none(), "{:?}", rec.headers);
    assert!(rec.headers.get("x-second").is_none(), "{:?}", rec.headers);
    assert_eq!(rec.header("x-third"), Some("3"));
}

#[tokio::test]
async fn head_and_no_content_responses_keep_the_connection_in_sync() {
    let up = MockUpstream::start().await;
    up.on("/doc", Reply::fixed(200, "hello").header("X-Doc", "1"));
    up.on("/empty", Reply::fixed(204, ""));
    let gw = start_with_api!("h", "/h/", &up.url()).await;
    let host = gw.addr();
    let mut c = RawClient::connect(gw.addr()).await.unwrap();

    c.send(format!("HEAD /h/doc HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let r = c
        .read_response_to(Duration::from_secs(5), true)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("x-doc"), Some("1"));
    assert_eq!(r.header("content-length"), Some("5"), "{}", r.head);
    assert_eq!(up.last().method, "HEAD");

    c.send(format!("DELETE /h/empty HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let r = c.read_response(Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status, 204, "{}", r.head);

    // The next response on the same connection is read correctly, so no
    // stray body bytes were sent after the HEAD or 204 responses.
    c.send(format!("GET /h/doc HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let r = c.read_response(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"hello"[..]),
        "{}",
        r.head
    );
    let (rest, closed) = c.read_to_close(Duration::from_secs(2)).await;
    assert!(closed);
    assert!(
        rest.is_empty(),
        "extra bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(up.request_count(), 3);
}

#[tokio::test]
async fn expect_100_continue_upload_completes() {
    let up = MockUpstream::start().await;
    let gw = start_with_api!("u", "/u/", &up.url()).await;
    let body = pattern_bytes(64 * 1024);
    let mut c = RawClient::connect(gw.addr()).await.unwrap();
    let head = format!(
        "PUT /u/file HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        gw.addr(),
        body.len()
    );
    c.send(head.as_bytes()).await.unwrap();
    // Like curl: wait up to 1 s for `100 Continue`, then send the body anyway.
    if let Ok(r) = c.read_response(Duration::from_secs(1)).await {
        assert_eq!(
            r.status, 100,
            "final response before the body was sent: {}",
            r.head
        );
    }
    c.send(&body).await.unwrap();
    let r = c.read_response(Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.status, 200, "{}{}", r.head, r.text());
    let rec = up.last();
    assert_eq!(rec.method, "PUT");
    assert_eq!(checksum(&rec.body), checksum(&body));
}
