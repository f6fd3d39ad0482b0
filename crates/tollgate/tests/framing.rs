//! Strict HTTP/1.1 framing at the edge, header/URI/body size limits and
//! slow clients, all over raw TCP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_testkit::raw::{RawClient, assert_gateway_error_shape, exchange};
use tollgate_testkit::{Exchange, Gateway, GatewayBuilder, MockUpstream, gateway};

async fn start(builder: GatewayBuilder) -> (Gateway, MockUpstream) {
    let up = MockUpstream::start().await;
    let gw = builder.with_api("f", "/f/", &up.url()).start().await;
    (gw, up)
}

async fn send(gw: &Gateway, bytes: &[u8]) -> Exchange {
    exchange(gw.addr(), bytes, Duration::from_secs(5))
        .await
        .unwrap()
}

/// Sends `bytes` and asserts the first response is a gateway error with
/// `status`.
async fn refused(gw: &Gateway, bytes: &[u8], status: u16) {
    assert_gateway_error_shape(send(gw, bytes).await.first(), status);
}

/// The upstream must not have been contacted at all.
fn assert_upstream_untouched(up: &MockUpstream) {
    assert_eq!(up.request_count(), 0, "upstream got {:#?}", up.requests());
    assert_eq!(
        up.accepted(),
        0,
        "the gateway opened an upstream connection"
    );
}

#[tokio::test]
async fn sanity_a_well_formed_request_is_proxied() {
    let (gw, up) = start(gateway!()).await;
    let req = format!(
        "POST /f/ok HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        gw.addr()
    );
    let ex = send(&gw, req.as_bytes()).await;
    assert_eq!(ex.first().status, 200, "{}", ex.first().text());
    assert_eq!(up.last().body, b"hello");
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_rejected_and_closed() {
    let (gw, up) = start(gateway!()).await;
    // Classic smuggling shape: by Content-Length the body holds a second
    // request, by chunked framing it ends at `0`. Neither may reach the
    // upstream.
    let smuggled = "GET /f/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");
    let req = format!(
        "POST /f/x HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        gw.addr(),
        body.len()
    );
    let ex = send(&gw, req.as_bytes()).await;
    assert_eq!(
        ex.responses.len(),
        1,
        "raw: {:?}",
        String::from_utf8_lossy(&ex.raw)
    );
    assert_gateway_error_shape(ex.first(), 400);
    assert!(
        ex.closed,
        "the connection was left open after a CL+TE request"
    );
    assert_upstream_untouched(&up);
}

#[tokio::test]
async fn duplicate_content_length_is_rejected() {
    let (gw, up) = start(gateway!()).await;
    for (a, b) in [("5", "5"), ("5", "6")] {
        let req = format!(
            "POST /f/x HTTP/1.1\r\nHost: {}\r\nContent-Length: {a}\r\nContent-Length: {b}\r\nConnection: close\r\n\r\nhello!",
            gw.addr()
        );
        refused(&gw, req.as_bytes(), 400).await;
    }
    assert_upstream_untouched(&up);
}

#[tokio::test]
async fn transfer_encoding_other_than_plain_chunked_is_rejected() {
    let (gw, up) = start(gateway!()).await;
    for te in ["gzip, chunked", "xchunked"] {
        let req = format!(
            "POST /f/x HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: {te}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            gw.addr()
        );
        let ex = send(&gw, req.as_bytes()).await;
        assert!(!ex.responses.is_empty(), "TE {te:?}: no response");
        assert_eq!(ex.first().status, 400, "TE {te:?}: {}", ex.first().head);
        assert_gateway_error_shape(ex.first(), 400);
    }
    assert_upstream_untouched(&up);
}

#[tokio::test]
async fn request_line_over_8k_is_414() {
    let (gw, up) = start(gateway!()).await;
    let long = "a".repeat(9000);
    let req = format!(
        "GET /f/{long} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        gw.addr()
    );
    refused(&gw, req.as_bytes(), 414).await;
    assert_upstream_untouched(&up);

    // Just under the limit is fine.
    let ok = "b".repeat(7000);
    let req = format!(
        "GET /f/{ok} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        gw.addr()
    );
    let ex = send(&gw, req.as_bytes()).await;
    assert_eq!(ex.first().status, 200, "{}", ex.first().head);
    assert_eq!(up.last().uri, format!("/{ok}"));
}

#[tokio::test]
async fn more_than_100_headers_is_431() {
    let (gw, up) = start(gateway!()).await;
    // Host + 100 more = 101 header fields.
    let mut req = format!("GET /f/x HTTP/1.1\r\nHost: {}\r\n", gw.addr());
    for i in 0..100 {
        req.push_str(&format!("X-H-{i}: v\r\n"));
    }
    req.push_str("\r\n");
    refused(&gw, req.as_bytes(), 431).await;
    assert_upstream_untouched(&up);
}

#[tokio::test]
async fn head_over_64k_is_431() {
    let (gw, up) = start(gateway!()).await;
    let mut req = format!("GET /f/x HTTP/1.1\r\nHost: {}\r\n", gw.addr());
    let value = "v".repeat(2000);
    for i in 0..40 {
        req.push_str(&format!("X-Big-{i}: {value}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    assert!(req.len() > 64 * 1024);
    refused(&gw, req.as_bytes(), 431).await;
    assert_upstream_untouched(&up);
}

#[tokio::test]
async fn body_over_max_request_body_size_is_413() {
    let (gw, up) =
        start(gateway!().conf(json!({"http_server_options": {"max_request_body_size": 1024}})))
            .await;
    let body = vec![b'x'; 2048];
    let mut req = format!(
        "POST /f/x HTTP/1.1\r\nHost: {}\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n",
        gw.addr()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    refused(&gw, &req, 413).await;
    assert_upstream_untouched(&up);

    // A body within the limit is proxied intact.
    let mut req = format!(
        "POST /f/small HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n",
        gw.addr()
    )
    .into_bytes();
    req.extend_from_slice(&[b'y'; 1000]);
    let ex = send(&gw, &req).await;
    assert_eq!(ex.first().status, 200, "{}", ex.first().text());
    assert_eq!(up.last().body, vec![b'y'; 1000]);
}

#[tokio::test]
async fn slow_client_is_disconnected_by_read_timeout() {
    let (gw, up) =
        start(gateway!().conf(json!({"http_server_options": {"read_timeout": 2}}))).await;
    let start = Instant::now();
    let c = RawClient::connect(gw.addr()).await.unwrap();
    let (mut rd, mut wr) = c.into_stream().into_split();
    let head = format!("GET /f/slow HTTP/1.1\r\nHost: {}\r\nX-Slow: ", gw.addr());
    let trickle = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        // One byte every 200 ms, for at most 10 s; never finishes the head.
        for b in head.bytes().chain(std::iter::repeat_n(b'a', 50)) {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut got = Vec::new();
    let closed_after = {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(8), rd.read(&mut buf)).await {
                Err(_) => panic!("still connected 8 s after connecting"),
                Ok(Ok(0)) | Ok(Err(_)) => break start.elapsed(),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    trickle.abort();
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after <= Duration::from_millis(4500),
        "slow client disconnected after {closed_after:?} (read_timeout 2 s)"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.starts_with("HTTP/1.1 200"),
        "the slow request was served: {text}"
    );
    assert_upstream_untouched(&up);
}

#[tokio::test]
async fn client_that_stops_reading_is_cut_off_by_write_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tollgate_testkit::Reply;
    const BIG: usize = 64 * 1024 * 1024;
    let (gw, up) =
        start(gateway!().conf(json!({"http_server_options": {"write_timeout": 1}}))).await;
    up.on("/big", Reply::stream(BIG));
    let c = RawClient::connect(gw.addr()).await.unwrap();
    let (mut rd, mut wr) = c.into_stream().into_split();
    let head = format!("GET /f/big HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr());
    wr.write_all(head.as_bytes()).await.unwrap();
    // Read nothing for 3 s: the gateway's writes block, and after write_timeout (1 s) it must
    // give up on this client instead of holding the connection.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rd.read(&mut buf)).await {
            Err(_) => panic!("connection still open after 10 s; read {total} bytes"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => total += n,
        }
    }
    assert!(
        total < BIG,
        "the whole {BIG}-byte response arrived ({total} bytes): the stalled client was never cut off"
    );
    assert!(total > 0, "no response bytes arrived at all");
}
