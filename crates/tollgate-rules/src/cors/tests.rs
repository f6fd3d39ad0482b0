#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::Method;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::*;

fn policy(cors: Value) -> CorsPolicy {
    let mut raw = json!({"enable": true});
    if let (Some(o), Some(extra)) = (raw.as_object_mut(), cors.as_object()) {
        o.extend(extra.clone());
    }
    CorsPolicy::from_json("CORS", &raw).unwrap().unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

/// The response headers `h` produces, applied to an empty map, as sorted `name: value` lines.
fn applied(h: &CorsHeaders) -> Vec<String> {
    let mut out = HeaderMap::new();
    h.apply(&mut out);
    let mut lines: Vec<String> = out
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
        .collect();
    lines.sort();
    lines
}

fn preflight(p: &CorsPolicy, origin: &str, method: &str, req_headers: Option<&str>) -> CorsHeaders {
    let mut pairs = vec![
        ("origin", origin),
        ("access-control-request-method", method),
    ];
    if let Some(h) = req_headers {
        pairs.push(("access-control-request-headers", h));
    }
    p.preflight(&headers(&pairs))
}

fn origin_allowed(p: &CorsPolicy, origin: &str) -> bool {
    p.actual(&Method::GET, &headers(&[("origin", origin)]))
        .denied()
        .is_none()
}

const PREFLIGHT_VARY_LINE: &str =
    "vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

#[test]
fn off_unless_enabled() {
    for raw in [
        Value::Null,
        json!({}),
        json!({"enable": false, "allowed_origins": ["*"]}),
        json!({"enable": null}),
        // Disabled: the other keys are not read.
        json!({"enable": false, "max_age": -1, "allowed_origins": [1]}),
    ] {
        assert!(
            CorsPolicy::from_json("CORS", &raw).unwrap().is_none(),
            "{raw}"
        );
    }
    assert!(
        CorsPolicy::from_json("CORS", &json!({"enable": true}))
            .unwrap()
            .is_some()
    );
}

#[test]
fn defaults_when_lists_are_empty() {
    let p = policy(json!({"allowed_origins": [], "allowed_methods": null}));
    assert!(origin_allowed(&p, "https://anything.example"));
    for m in DEFAULT_METHODS {
        assert_eq!(
            preflight(&p, "https://a.example", m, None).denied(),
            None,
            "{m}"
        );
    }
    // OPTIONS is always allowed; others are not by default.
    assert_eq!(
        preflight(&p, "https://a.example", "OPTIONS", None).denied(),
        None
    );
    assert_eq!(
        preflight(&p, "https://a.example", "PUT", None).denied(),
        Some(Denial::Method)
    );
    let h = preflight(
        &p,
        "https://a.example",
        "POST",
        Some("Origin, accept, Content-Type, X-REQUESTED-WITH"),
    );
    assert_eq!(h.denied(), None);
    assert_eq!(
        preflight(&p, "https://a.example", "POST", Some("authorization")).denied(),
        Some(Denial::Headers)
    );
    // The actual method is checked against the list too.
    assert_eq!(
        p.actual(
            &Method::DELETE,
            &headers(&[("origin", "https://a.example")])
        )
        .denied(),
        Some(Denial::Method)
    );
}

#[test]
fn origins_match_exactly_or_by_one_wildcard_ignoring_case() {
    let p = policy(json!({"allowed_origins": [
        "https://App.Example.com", "https://*.example.org", "http://localhost:*"]}));
    let table = [
        ("https://app.example.com", true),
        ("HTTPS://APP.EXAMPLE.COM", true),
        ("https://app.example.com:443", false),
        ("http://app.example.com", false),
        ("https://a.example.org", true),
        ("https://a.b.EXAMPLE.org", true),
        // The wildcard stands for zero or more characters.
        ("https://.example.org", true),
        ("https://example.org", false),
        ("https://a.example.org.evil", false),
        ("http://localhost:3000", true),
        ("http://localhost:", true),
        ("http://localhost", false),
        ("null", false),
    ];
    for (origin, allowed) in table {
        assert_eq!(origin_allowed(&p, origin), allowed, "{origin}");
    }
    // Prefix and suffix may not overlap.
    let p = policy(json!({"allowed_origins": ["ab*ba"]}));
    assert!(!origin_allowed(&p, "aba"));
    assert!(origin_allowed(&p, "abba"));
}

#[test]
fn a_star_anywhere_allows_every_origin() {
    let p = policy(json!({"allowed_origins": ["https://a.example", "*"]}));
    assert!(origin_allowed(&p, "https://b.example"));
    let h = preflight(&p, "https://b.example", "GET", None);
    assert_eq!(h.allow_origin().unwrap(), "*");
}

#[test]
fn allowed_preflight_gets_exact_headers() {
    let p = policy(json!({
        "allowed_origins": ["https://app.example"],
        "allowed_methods": ["get", "PUT"],
        "allowed_headers": ["X-Api-Key", "content-type"],
        "exposed_headers": ["x-trace-id"],
        "allow_credentials": true,
        "max_age": 600,
    }));
    let h = preflight(
        &p,
        "https://APP.example",
        "put",
        Some("x-api-key, Content-Type"),
    );
    assert_eq!(h.denied(), None);
    assert_eq!(
        applied(&h),
        [
            "access-control-allow-credentials: true",
            "access-control-allow-headers: x-api-key, Content-Type",
            "access-control-allow-methods: PUT",
            // The request's origin as sent.
            "access-control-allow-origin: https://APP.example",
            "access-control-max-age: 600",
            PREFLIGHT_VARY_LINE,
        ]
    );
    // Origin is always allowed as a requested header when a list is configured.
    assert_eq!(
        preflight(&p, "https://app.example", "GET", Some("origin")).denied(),
        None
    );
    // Without requested headers, no Allow-Headers; without max_age, no Max-Age.
    let p = policy(json!({"allowed_origins": ["https://app.example"]}));
    assert_eq!(
        applied(&preflight(&p, "https://app.example", "GET", Some(" "))),
        [
            "access-control-allow-methods: GET",
            "access-control-allow-origin: https://app.example",
            PREFLIGHT_VARY_LINE,
        ]
    );
}

#[test]
fn refused_preflight_gets_vary_and_nothing_else() {
    let p = policy(
        json!({"allowed_origins": ["https://app.example"], "allow_credentials": true,
        "max_age": 60}),
    );
    let cases = [
        (
            preflight(&p, "https://evil.example", "GET", None),
            Denial::Origin,
        ),
        (
            preflight(&p, "https://app.example", "DELETE", None),
            Denial::Method,
        ),
        (
            preflight(
                &p,
                "https://app.example",
                "GET",
                Some("content-type, x-secret"),
            ),
            Denial::Headers,
        ),
        (
            p.preflight(&headers(&[("access-control-request-method", "GET")])),
            Denial::NoOrigin,
        ),
        (
            p.preflight(&headers(&[
                ("origin", ""),
                ("access-control-request-method", "GET"),
            ])),
            Denial::NoOrigin,
        ),
    ];
    for (h, why) in cases {
        assert_eq!(h.denied(), Some(why));
        assert_eq!(applied(&h), [PREFLIGHT_VARY_LINE], "{why:?}");
    }
}

#[test]
fn star_headers_allow_any_and_are_echoed() {
    let p = policy(json!({"allowed_headers": ["*"]}));
    let mut map = headers(&[
        ("origin", "https://a.example"),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "x-one"),
        ("access-control-request-headers", "X-Two"),
    ]);
    let h = p.preflight(&map);
    assert_eq!(h.denied(), None);
    assert!(applied(&h).contains(&"access-control-allow-headers: x-one, X-Two".to_owned()));
    map.insert(
        "access-control-request-headers",
        HeaderValue::from_static("anything-at-all"),
    );
    assert_eq!(p.preflight(&map).denied(), None);
}

#[test]
fn actual_request_headers() {
    let p = policy(json!({"allowed_origins": ["https://app.example"],
        "exposed_headers": ["x-trace-id", "X-RATELIMIT-REMAINING"], "allow_credentials": true,
        "max_age": 60}));
    let h = p.actual(&Method::GET, &headers(&[("origin", "https://app.example")]));
    assert_eq!(
        applied(&h),
        [
            "access-control-allow-credentials: true",
            "access-control-allow-origin: https://app.example",
            "access-control-expose-headers: X-Trace-Id, X-Ratelimit-Remaining",
            "vary: Origin",
        ]
    );
    // Disallowed or missing origin: Vary only, as rs/cors always sets it.
    for map in [headers(&[("origin", "https://evil.example")]), headers(&[])] {
        let h = p.actual(&Method::GET, &map);
        assert!(h.denied().is_some());
        assert_eq!(applied(&h), ["vary: Origin"]);
    }
    // An OPTIONS that is not a preflight is an actual request (OPTIONS is always allowed).
    let map = headers(&[("origin", "https://app.example")]);
    assert!(!is_preflight(&Method::OPTIONS, &map));
    assert_eq!(p.actual(&Method::OPTIONS, &map).denied(), None);
}

#[test]
fn credentials_with_any_origin_answers_star() {
    // rs/cors no longer reflects the origin for `*` + credentials (its issue 55): browsers
    // then refuse credentialed reads, which is the safe outcome.
    let p = policy(json!({"allow_credentials": true}));
    let h = p.actual(&Method::GET, &headers(&[("origin", "https://a.example")]));
    assert_eq!(
        applied(&h),
        [
            "access-control-allow-credentials: true",
            "access-control-allow-origin: *",
            "vary: Origin",
        ]
    );
    let h = preflight(&p, "https://a.example", "GET", None);
    assert_eq!(h.allow_origin().unwrap(), "*");
    // Without credentials, `*` as well.
    let p = policy(json!({}));
    let h = preflight(&p, "https://a.example", "GET", None);
    assert_eq!(h.allow_origin().unwrap(), "*");
}

#[test]
fn preflight_detection() {
    let with = |pairs: &[(&str, &str)]| headers(pairs);
    assert!(is_preflight(
        &Method::OPTIONS,
        &with(&[("access-control-request-method", "GET")])
    ));
    assert!(!is_preflight(
        &Method::OPTIONS,
        &with(&[("access-control-request-method", "")])
    ));
    assert!(!is_preflight(
        &Method::GET,
        &with(&[("access-control-request-method", "GET")])
    ));
}

#[test]
fn apply_replaces_the_upstreams_allow_headers() {
    let p = policy(json!({"allowed_origins": ["https://app.example"]}));
    let mut upstream = headers(&[
        ("access-control-allow-origin", "*"),
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-methods", "GET, DELETE"),
        ("access-control-max-age", "86400"),
        ("access-control-expose-headers", "X-Up"),
        ("vary", "Accept-Encoding"),
    ]);
    let denied = p.actual(
        &Method::GET,
        &headers(&[("origin", "https://evil.example")]),
    );
    denied.apply(&mut upstream);
    let mut names: Vec<&str> = upstream.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["access-control-expose-headers", "vary"]);
    let vary: Vec<&HeaderValue> = upstream.get_all("vary").iter().collect();
    assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    // An allowed origin: ours replace theirs.
    let mut upstream = headers(&[("access-control-allow-origin", "*")]);
    p.actual(&Method::GET, &headers(&[("origin", "https://app.example")]))
        .apply(&mut upstream);
    let acao: Vec<&HeaderValue> = upstream
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(acao, ["https://app.example"]);
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let table = [
        (json!("yes"), "CORS"),
        (json!({"enable": "true"}), "CORS.enable"),
        (json!({"enable": 1}), "CORS.enable"),
        (
            json!({"enable": true, "allowed_origins": "*"}),
            "CORS.allowed_origins",
        ),
        (
            json!({"enable": true, "allowed_origins": ["https://a", 7]}),
            "CORS.allowed_origins[1]",
        ),
        (
            json!({"enable": true, "allowed_origins": ["https://*.*.example"]}),
            "CORS.allowed_origins[0]",
        ),
        (
            json!({"enable": true, "allowed_origins": ["**"]}),
            "CORS.allowed_origins[0]",
        ),
        (
            json!({"enable": true, "allowed_origins": [""]}),
            "CORS.allowed_origins[0]",
        ),
        (
            json!({"enable": true, "allowed_origins": [" https://a.example"]}),
            "CORS.allowed_origins[0]",
        ),
        (
            json!({"enable": true, "allowed_methods": ["GET", "BAD METHOD"]}),
            "CORS.allowed_methods[1]",
        ),
        (
            json!({"enable": true, "allowed_headers": ["X-Ok", "Bad Header"]}),
            "CORS.allowed_headers[1]",
        ),
        (
            json!({"enable": true, "exposed_headers": ["x:y"]}),
            "CORS.exposed_headers[0]",
        ),
        (json!({"enable": true, "max_age": -1}), "CORS.max_age"),
        (json!({"enable": true, "max_age": 1.5}), "CORS.max_age"),
        (json!({"enable": true, "max_age": "60"}), "CORS.max_age"),
        (
            json!({"enable": true, "allow_credentials": "no"}),
            "CORS.allow_credentials",
        ),
        (
            json!({"enable": true, "options_passthrough": 0}),
            "CORS.options_passthrough",
        ),
        (json!({"enable": true, "debug": []}), "CORS.debug"),
    ];
    for (raw, field) in table {
        let err = CorsPolicy::from_json("CORS", &raw).expect_err(&raw.to_string());
        assert_eq!(err.field, field, "{raw}: {err}");
    }
    let err = CorsPolicy::from_json(
        "CORS",
        &json!({"enable": true, "allowed_origins": ["https://*.*.example"]}),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "field `CORS.allowed_origins[0]`: `https://*.*.example` has more than one `*`; one \
         wildcard is allowed per origin"
    );
}

#[test]
fn flags_and_detached_copies() {
    let p = policy(
        json!({"options_passthrough": true, "debug": true, "max_age": 5,
        "exposed_headers": ["x-a"]}),
    );
    assert!(p.options_passthrough() && p.debug());
    let d = p.detached();
    let probe = headers(&[("origin", "https://a.example")]);
    assert_eq!(
        d.actual(&Method::GET, &probe),
        p.actual(&Method::GET, &probe)
    );
    let pre = headers(&[
        ("origin", "https://a.example"),
        ("access-control-request-method", "GET"),
    ]);
    assert_eq!(d.preflight(&pre), p.preflight(&pre));
    let p = policy(json!({}));
    assert!(!p.options_passthrough() && !p.debug());
}
