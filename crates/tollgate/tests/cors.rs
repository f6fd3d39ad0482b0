//! API-definition CORS (`"CORS": {...}`), against the real binary: preflights are answered by
//! the gateway with 204 (no key needed, the upstream never sees them) unless
//! `options_passthrough`; every response after the CORS stage carries the headers its origin
//! earns, the gateway's own 401 included; a disallowed origin gets none; a definition with a
//! bad CORS value is not served and the log names file and field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_testkit::keys::{KEYED_LISTEN, MSG_MISSING, call, with_keyed_api};
use tollgate_testkit::raw::{RawResponse, assert_tyk_error};
use tollgate_testkit::{Gateway, MockUpstream, Reply, gateway};

const APP: &str = "https://app.example";
const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// A strict policy: one origin, a wildcard family, PUT, one custom header, credentials.
fn strict() -> Value {
    json!({"CORS": {
        "enable": true,
        "allowed_origins": [APP, "https://*.example.com"],
        "allowed_methods": ["GET", "PUT"],
        "allowed_headers": ["X-Api-Key", "Content-Type"],
        "exposed_headers": ["x-trace-id"],
        "allow_credentials": true,
        "max_age": 600,
        "options_passthrough": false,
        "debug": false
    }})
}

/// The CORS-related headers of a response (`access-control-*` and `vary`), lower-case names,
/// in order.
fn cors_headers(r: &RawResponse) -> Vec<(String, String)> {
    r.headers
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k.starts_with("access-control-") || k == "vary"
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Asserts exactly `expected` CORS headers (order-insensitive).
fn assert_cors(r: &RawResponse, expected: &[(&str, &str)]) {
    let mut got = cors_headers(r);
    let mut want = pairs(expected);
    got.sort();
    want.sort();
    assert_eq!(got, want, "response was:\n{}", r.dump());
}

async fn preflight(
    gw: &Gateway,
    target: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> RawResponse {
    let mut h = vec![
        ("Origin", origin),
        ("Access-Control-Request-Method", method),
    ];
    if let Some(v) = headers {
        h.push(("Access-Control-Request-Headers", v));
    }
    call(gw, "OPTIONS", target, &h).await
}

#[tokio::test]
async fn preflights_are_answered_by_the_gateway() {
    let up = MockUpstream::start().await;
    let gw = with_keyed_api(gateway!(), &up.url(), strict())
        .keyless_api("open", &up, strict())
        .start()
        .await;

    for target in ["/open/things", &format!("{KEYED_LISTEN}things")] {
        // Allowed: 204, exact headers, no key needed on the keyed API.
        let r = preflight(&gw, target, APP, "put", Some("x-api-key, content-type")).await;
        assert_eq!(r.status, 204, "{target}: {}", r.dump());
        assert!(r.body.is_empty());
        assert_cors(
            &r,
            &[
                ("access-control-allow-origin", APP),
                ("access-control-allow-methods", "PUT"),
                ("access-control-allow-headers", "x-api-key, content-type"),
                ("access-control-allow-credentials", "true"),
                ("access-control-max-age", "600"),
                ("vary", PREFLIGHT_VARY),
            ],
        );

        // Disallowed origin, method or header: still answered here, with no Allow-* at all.
        for r in [
            preflight(&gw, target, "https://evil.example", "GET", None).await,
            preflight(&gw, target, APP, "DELETE", None).await,
            preflight(&gw, target, APP, "GET", Some("x-secret")).await,
        ] {
            assert_eq!(r.status, 204, "{target}: {}", r.dump());
            assert_cors(&r, &[("vary", PREFLIGHT_VARY)]);
        }
    }

    // A wildcard origin; the origin is echoed as sent.
    let r = preflight(&gw, "/open/x", "https://Shop.EU.example.com", "GET", None).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://Shop.EU.example.com"),
        "{}",
        r.dump()
    );
    // The bare domain is not covered by `https://*.example.com`.
    let r = preflight(&gw, "/open/x", "https://example.com", "GET", None).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        None,
        "{}",
        r.dump()
    );

    assert_eq!(
        up.request_count(),
        0,
        "a preflight reached the upstream: {:?}",
        up.requests().iter().map(|r| &r.method).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn actual_requests_and_refusals_carry_the_headers() {
    let up = MockUpstream::start().await;
    // The upstream answers with its own, wider, CORS headers on /wide.
    up.on(
        "/wide",
        Reply::fixed(200, "wide")
            .header("Access-Control-Allow-Origin", "*")
            .header("Access-Control-Allow-Methods", "GET, DELETE")
            .header("Vary", "Accept-Encoding"),
    );
    let gw = with_keyed_api(gateway!(), &up.url(), strict())
        .keyless_api("open", &up, strict())
        .start()
        .await;
    let allowed = [
        ("access-control-allow-origin", APP),
        ("access-control-expose-headers", "X-Trace-Id"),
        ("access-control-allow-credentials", "true"),
        ("vary", "Origin"),
    ];

    let r = call(&gw, "GET", "/open/things", &[("Origin", APP)]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(up.last().path, "/things");
    assert_cors(&r, &allowed);

    // The keyed API's 401 for a missing key carries them too (the browser can read it).
    let r = call(
        &gw,
        "GET",
        &format!("{KEYED_LISTEN}things"),
        &[("Origin", APP)],
    )
    .await;
    assert_tyk_error(&r, 401, MSG_MISSING);
    assert_cors(&r, &allowed);

    // The gateway's headers replace the upstream's Access-Control-Allow-*; Vary is merged.
    let r = call(&gw, "GET", "/open/wide", &[("Origin", APP)]).await;
    assert_eq!(r.text(), "wide");
    let mut with_upstream_vary = allowed.to_vec();
    with_upstream_vary.push(("vary", "Accept-Encoding"));
    assert_cors(&r, &with_upstream_vary);

    // A disallowed origin: served as usual, no Access-Control-* (not even the upstream's).
    let before = up.request_count();
    let r = call(
        &gw,
        "GET",
        "/open/wide",
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(up.request_count(), before + 1);
    assert_cors(&r, &[("vary", "Accept-Encoding"), ("vary", "Origin")]);
    let r = call(&gw, "GET", "/open/x", &[("Origin", "https://evil.example")]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_cors(&r, &[("vary", "Origin")]);
    // A method outside allowed_methods: no Allow-* either.
    let r = call(&gw, "DELETE", "/open/x", &[("Origin", APP)]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_cors(&r, &[("vary", "Origin")]);
}

#[tokio::test]
async fn options_passthrough_sends_preflights_to_the_upstream() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .keyless_api(
            "pass",
            &up,
            json!({"CORS": {"enable": true, "options_passthrough": true,
                    "allowed_origins": ["*"]}}),
        )
        .start()
        .await;
    let r = preflight(&gw, "/pass/things", APP, "POST", Some("Content-Type")).await;
    assert_eq!(r.status, 200, "the upstream's answer: {}", r.dump());
    let seen = up.last();
    assert_eq!(seen.method, "OPTIONS");
    assert_eq!(seen.path, "/things");
    assert_eq!(seen.header("access-control-request-method"), Some("POST"));
    // The upstream's response still gets the preflight headers (`*`: any origin).
    assert_cors(
        &r,
        &[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "POST"),
            ("access-control-allow-headers", "Content-Type"),
            ("vary", PREFLIGHT_VARY),
        ],
    );
}

#[tokio::test]
async fn a_bad_cors_value_keeps_the_api_unserved_and_is_logged() {
    let up = MockUpstream::start().await;
    let bad = |cors: Value| json!({"CORS": cors});
    let gw = gateway!()
        .keyless_api(
            "twostars",
            &up,
            bad(json!({"enable": true, "allowed_origins": ["https://*.*.example"]})),
        )
        .keyless_api("negage", &up, bad(json!({"enable": true, "max_age": -1})))
        .keyless_api(
            "badheader",
            &up,
            bad(json!({"enable": true, "allowed_headers": ["X-Ok", "Not A Header"]})),
        )
        .keyless_api("ok", &up, json!({"CORS": {"enable": true}}))
        .start()
        .await;
    gw.assert_routed(&up, "/ok/x", &[], "/x").await;
    gw.assert_unserved(&up, &["/twostars/x", "/negage/x", "/badheader/x"])
        .await;

    gw.wait_stderr(&[
        "twostars.json: field `CORS.allowed_origins[0]`",
        "negage.json: field `CORS.max_age`",
        "badheader.json: field `CORS.allowed_headers[1]`",
    ])
    .await;
}
