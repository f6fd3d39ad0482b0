//! TLS against the real binary, with certificates made in the test: `https://` upstreams
//! (verified against a configured CA, refused for an unknown CA or another name, accepted with
//! skip-verify, connections reused), and the TLS listener (certificates by SNI, HTTP/2 by ALPN,
//! plain HTTP to it, bad certificate files at start, certificates reloaded on SIGHUP).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::raw::{assert_tyk_error, get};
use tollgate_testkit::tls::{Leaf, TestCa};
use tollgate_testkit::{MockUpstream, Reply, client, extended_version, gateway};

fn https(host: &str, up: &MockUpstream, path: &str) -> String {
    format!("https://{host}:{}{path}", up.port())
}

#[tokio::test]
async fn https_upstreams_are_verified_and_their_connections_reused() {
    let ca = TestCa::default();
    let up = MockUpstream::start_tls(ca.issue(&["localhost"]).server_config()).await;
    let stranger = TestCa::new("Someone Else");
    let other = MockUpstream::start_tls(stranger.issue(&["localhost"]).server_config()).await;
    let expired = MockUpstream::start_tls(ca.issue_expired(&["localhost"]).server_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "ca.pem");

    let gw = gateway!()
        .conf(json!({"proxy_ssl_ca_cert": ca_file}))
        .with_api("good", "/good/", &https("localhost", &up, "/base"))
        // The certificate names `localhost`, not the address.
        .with_api("by-ip", "/by-ip/", &https("127.0.0.1", &up, "/"))
        .with_api(
            "unknown-ca",
            "/unknown-ca/",
            &https("localhost", &other, "/"),
        )
        .with_api("expired", "/expired/", &https("localhost", &expired, "/"))
        .with_api_extra(
            "skip",
            "/skip/",
            &https("localhost", &other, "/"),
            json!({"proxy": {"transport": {"ssl_insecure_skip_verify": true}}}),
        )
        .start()
        .await;

    let http = client();
    for i in 0..5 {
        let r = http
            .get(gw.url(&format!("/good/item/{i}?q=1")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let recs = up.requests();
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[0].uri, "/base/item/0?q=1");
    assert_eq!(
        recs[0].header("host"),
        Some(format!("localhost:{}", up.port()).as_str())
    );
    // One handshake, then the pooled connection: no TLS handshake per request.
    assert_eq!(up.distinct_connections(), 1);

    for path in ["/by-ip/x", "/unknown-ca/x", "/expired/x"] {
        let r = get(gw.addr(), path, &[]).await;
        assert_tyk_error(&r, 502, "There was a problem proxying the request");
    }
    assert_eq!(
        up.request_count(),
        5,
        "a request reached an unverified host"
    );
    assert_eq!(other.request_count(), 0);
    assert_eq!(expired.request_count(), 0);
    let log = gw
        .wait_stderr(&["certificate not valid for name", "UnknownIssuer", "xpired"])
        .await;
    assert!(log.contains("TLS"), "{log}");

    let r = get(gw.addr(), "/skip/x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(other.request_count(), 1);
}

#[tokio::test]
async fn url_rewrites_to_https_hosts_are_verified_like_targets() {
    let ca = TestCa::default();
    let secure = MockUpstream::start_tls(ca.issue(&["localhost"]).server_config()).await;
    let stranger = TestCa::new("Someone Else");
    let unknown = MockUpstream::start_tls(stranger.issue(&["localhost"]).server_config()).await;
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "ca.pem");
    let rewrites = extended_version(json!({"extended_paths": {"url_rewrites": [
        {"path": "/secure/{rest}", "method": "GET", "match_pattern": "^/secure/(.*)",
         "rewrite_to": https("localhost", &secure, "/there/$1")},
        {"path": "/unknown", "method": "GET", "match_pattern": ".*",
         "rewrite_to": https("localhost", &unknown, "/x")}
    ]}}));
    let gw = gateway!()
        .conf(json!({"proxy_ssl_ca_cert": ca_file, "worker_threads": 1}))
        .with_api_extra("rw", "/rw/", &up.url(), rewrites)
        .start()
        .await;
    for _ in 0..3 {
        let r = get(gw.addr(), "/rw/secure/a?b=1", &[]).await;
        assert_eq!(r.status, 200, "{}", r.dump());
    }
    let rec = secure.last();
    assert_eq!(rec.uri, "/there/a?b=1");
    assert_eq!(
        rec.header("host"),
        Some(format!("localhost:{}", secure.port()).as_str())
    );
    // Pooled like any https upstream: one handshake (one worker, so one pool).
    assert_eq!(secure.distinct_connections(), 1);
    let r = get(gw.addr(), "/rw/unknown", &[]).await;
    assert_tyk_error(&r, 502, "There was a problem proxying the request");
    assert_eq!(unknown.request_count(), 0);
    assert_eq!(
        up.request_count(),
        0,
        "a rewritten request went to the target"
    );
    gw.wait_stderr(&["UnknownIssuer"]).await;
}

#[tokio::test]
async fn gateway_wide_skip_verify_and_versions() {
    let stranger = TestCa::new("Self-signed shop");
    let up = MockUpstream::start_tls(stranger.issue(&["localhost"]).server_config()).await;
    let gw = gateway!()
        .conf(json!({"proxy_ssl_insecure_skip_verify": true, "proxy_ssl_min_version": 772}))
        .with_api("a", "/a/", &https("localhost", &up, "/"))
        .start()
        .await;
    let r = get(gw.addr(), "/a/x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.dump());

    // A version that is no TLS version stops the start, naming the field.
    let mut bad = gateway!()
        .conf(json!({"proxy_ssl_min_version": 999}))
        .spawn();
    let status = bad.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert_eq!(status.code(), Some(2));
    assert!(
        bad.stderr().contains("proxy_ssl_min_version"),
        "{}",
        bad.stderr()
    );
}

#[tokio::test]
async fn a_refused_transport_setting_skips_only_its_api() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .with_api("ok", "/ok/", &up.url())
        .keyless_api(
            "proxied",
            &up,
            json!({"proxy": {"transport": {"proxy_url": "http://squid:3128"}}}),
        )
        .start()
        .await;
    gw.assert_unserved(&up, &["/proxied/x"]).await;
    assert_eq!(get(gw.addr(), "/ok/x", &[]).await.status, 200);
    let log = gw.wait_stderr(&["proxy.transport.proxy_url"]).await;
    assert!(log.contains("proxied"), "{log}");
}

/// A TLS gateway with `a.test` in `certificates` and `b.test` in `ssl_certificates` (one file
/// holding chain and key).
fn tls_conf(dir: &Path, a: &Leaf, b: &Leaf, extra: Value) -> Value {
    let (a_crt, a_key) = a.write(dir, "a");
    let both = dir.join("b.pem");
    std::fs::write(&both, format!("{}{}", b.cert_pem, b.key_pem)).unwrap();
    let mut conf = json!({"http_server_options": {
        "use_ssl": true,
        "enable_http2": true,
        "certificates": [{"domain_name": "a.test", "cert_file": a_crt, "key_file": a_key}],
        "ssl_certificates": [both],
    }});
    tollgate_testkit::merge_json(&mut conf, extra);
    conf
}

/// A TLS gateway ([`tls_conf`]) with one keyless API `/api/` on a plain upstream.
struct TlsGateway {
    ca: TestCa,
    a: Leaf,
    b: Leaf,
    up: MockUpstream,
    gw: tollgate_testkit::Gateway,
    dir: tempfile::TempDir,
}

impl TlsGateway {
    async fn start() -> Self {
        let ca = TestCa::default();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (ca.issue(&["a.test"]), ca.issue(&["b.test"]));
        let up = MockUpstream::start().await;
        let gw = gateway!()
            .conf(tls_conf(dir.path(), &a, &b, json!({})))
            .serves_tls()
            .with_api("api", "/api/", &up.url())
            .start()
            .await;
        Self {
            ca,
            a,
            b,
            up,
            gw,
            dir,
        }
    }
}

async fn fetch(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> reqwest::Response {
    client.get(url).send().await.unwrap()
}

fn peer_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("peer certificate")
        .to_vec()
}

#[tokio::test]
async fn the_listener_picks_certificates_by_sni_and_speaks_http2() {
    let TlsGateway {
        ca,
        a,
        b,
        up,
        gw,
        dir: _dir,
    } = TlsGateway::start().await;
    up.on("/api/echo", Reply::echo_body());
    let port = gw.port();
    let tls_client = |http1_only: bool| {
        let mut b = ca
            .client_builder()
            .resolve("a.test", gw.addr())
            .resolve("b.test", gw.addr())
            .tls_info(true);
        if http1_only {
            b = b.http1_only();
        }
        b.build().unwrap()
    };

    let h1 = tls_client(true);
    let r = fetch(&h1, format!("https://a.test:{port}/api/x")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(peer_cert(&r), a.der);
    let r = fetch(&h1, format!("https://b.test:{port}/api/x")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(peer_cert(&r), b.der);
    let rec = up.last();
    assert_eq!(rec.header("x-forwarded-proto"), Some("https"));

    // HTTP/2 by ALPN, a streamed request body both ways; the upstream gets HTTP/1.1.
    let h2 = tls_client(false);
    let body = tollgate_testkit::pattern_bytes(300_000);
    let r = h2
        .post(format!("https://a.test:{port}/api/echo"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(echoed["body_len"], 300_000);
    let rec = up.last();
    assert!(rec.body == body, "the body changed on its way");
    assert_eq!(rec.version, http::Version::HTTP_11);
    assert_eq!(rec.header("host"), Some(up.host().as_str()));
    // Routing and refusals work the same over h2.
    let r = fetch(&h2, format!("https://a.test:{port}/nothing-here")).await;
    assert_eq!(r.status(), 404);
    let r = fetch(&h2, format!("https://a.test:{port}/hello")).await;
    assert_eq!(r.status(), 200);

    // Plain HTTP to the TLS port: Go's one-line answer, and the gateway goes on.
    let r = get(gw.addr(), "/api/x", &[]).await;
    assert_eq!(r.status, 400, "{}", r.dump());
    assert!(
        r.text().contains("HTTP request to an HTTPS server"),
        "{}",
        r.dump()
    );
    let r = fetch(&h1, format!("https://a.test:{port}/api/x")).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn websockets_tunnel_with_tls_on_both_sides() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = TestCa::default();
    let up = MockUpstream::start_tls(ca.issue(&["localhost"]).server_config()).await;
    up.on("/", Reply::upgrade());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (a, b) = (ca.issue(&["a.test"]), ca.issue(&["b.test"]));
    let gw = gateway!()
        .conf(tls_conf(
            dir.path(),
            &a,
            &b,
            json!({"proxy_ssl_ca_cert": ca_file}),
        ))
        .serves_tls()
        .with_api("ws", "/ws/", &https("localhost", &up, "/"))
        .start()
        .await;
    let mut s = ca.connect(gw.addr(), "a.test").await;
    s.write_all(
        b"GET /ws/ HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Bytes through the tunnel: TLS to the gateway, TLS from the gateway to the upstream.
    let payload = b"through two TLS legs";
    s.write_all(payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, payload);
    assert_eq!(up.last().header("upgrade"), Some("websocket"));
}

#[tokio::test]
async fn tls_to_a_plain_port_is_refused_without_harm() {
    let up = MockUpstream::start().await;
    let gw = gateway!().with_api("a", "/a/", &up.url()).start().await;
    let ca = TestCa::default();
    let err = ca
        .client()
        .get(format!("https://127.0.0.1:{}/a/x", gw.port()))
        .send()
        .await;
    assert!(err.is_err());
    assert_eq!(get(gw.addr(), "/a/x", &[]).await.status, 200);
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn certificates_reload_on_sighup_without_dropping_connections() {
    let TlsGateway {
        ca, a, up, gw, dir, ..
    } = TlsGateway::start().await;
    let port = gw.port();
    let client = ca
        .client_builder()
        .resolve("a.test", gw.addr())
        .tls_info(true)
        .http1_only()
        .build()
        .unwrap();
    let url = format!("https://a.test:{port}/api/x");
    let r = fetch(&client, &url).await;
    assert_eq!(peer_cert(&r), a.der);

    // A broken file: the reload keeps the served certificates.
    std::fs::write(dir.path().join("a.crt"), "not a certificate").unwrap();
    gw.sighup();
    gw.wait_stderr(&["keeping the current TLS certificates"])
        .await;
    let fresh = || {
        ca.client_builder()
            .resolve("a.test", gw.addr())
            .tls_info(true)
            .build()
            .unwrap()
    };
    let r = fetch(&fresh(), &url).await;
    assert_eq!(peer_cert(&r), a.der);

    let renewed = ca.issue(&["a.test"]);
    renewed.write(dir.path(), "a");
    gw.sighup();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = fetch(&fresh(), &url).await;
        if peer_cert(&r) == renewed.der {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the reloads still serves.
    let before = up.distinct_connections();
    let r = fetch(&client, &url).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        peer_cert(&r),
        a.der,
        "the kept-alive connection was replaced"
    );
    assert!(up.distinct_connections() >= before);
}

#[tokio::test]
async fn bad_certificate_files_stop_the_start_naming_them() {
    let ca = TestCa::default();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (ca.issue(&["a.test"]), ca.issue(&["b.test"]));
    let missing = json!({"http_server_options": {"certificates": [
        {"domain_name": "a.test", "cert_file": dir.path().join("nope.crt"), "key_file": dir.path().join("a.key")}
    ]}});
    let (_, b_key) = b.write(dir.path(), "b");
    let mismatched = json!({"http_server_options": {"certificates": [
        {"domain_name": "a.test", "cert_file": dir.path().join("a.crt"), "key_file": b_key}
    ]}});
    let none = json!({"http_server_options": {"certificates": null, "ssl_certificates": []}});
    for (extra, needle) in [
        (
            missing,
            "http_server_options.certificates[0].cert_file: cannot read",
        ),
        (mismatched, "does not belong to the certificate"),
        (none, "no certificate is configured"),
    ] {
        let conf = tls_conf(dir.path(), &a, &b, extra);
        let mut gw = gateway!().conf(conf).serves_tls().spawn();
        let status = gw.wait_exit(Duration::from_secs(10)).await.unwrap();
        assert_eq!(status.code(), Some(2), "{}", gw.stderr());
        assert!(gw.stderr().contains(needle), "{needle}: {}", gw.stderr());
    }
}
