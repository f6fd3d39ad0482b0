//! Routing: listen-path matching, domains, inactive/broken/duplicate API
//! definitions and path normalisation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use tollgate_testkit::raw::get;
use tollgate_testkit::{Gateway, MockUpstream, api_def, api_with, gateway, start_with_api};

/// The API `s` on `/sample` (no trailing slash) that keeps its listen path.
fn sample_unstripped(up: &MockUpstream) -> serde_json::Value {
    let extra = json!({"proxy": {"strip_listen_path": false}});
    api_with("s", "/sample", &up.url(), extra)
}

#[tokio::test]
async fn unmatched_path_is_a_tyk_404() {
    let up = MockUpstream::start().await;
    let gw = start_with_api!("a", "/a/", &up.url()).await;
    gw.assert_not_found("/nothing/here", &[]).await;
    gw.assert_not_found("/", &[]).await;
    assert_eq!(up.request_count(), 0);

    // The API itself is served.
    gw.assert_routed(&up, "/a/x", &[], "/x").await;
}

#[tokio::test]
async fn listen_path_is_a_loose_prefix_by_default() {
    let up = MockUpstream::start().await;
    let def = sample_unstripped(&up);
    let gw = gateway!().api("s.json", def).start().await;

    gw.assert_routed(&up, "/samplefoo/bar?q=1", &[], "/samplefoo/bar?q=1")
        .await;

    gw.assert_routed(&up, "/sample/x", &[], "/sample/x").await;

    gw.assert_not_found("/sampl", &[]).await;
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn strict_routes_require_a_segment_boundary() {
    let up = MockUpstream::start().await;
    let def = sample_unstripped(&up);
    let gw = gateway!()
        .conf(json!({"http_server_options": {"enable_strict_routes": true}}))
        .api("s.json", def)
        .start()
        .await;

    gw.assert_not_found("/samplefoo", &[]).await;
    assert_eq!(up.request_count(), 0);

    gw.assert_routed(&up, "/sample/x", &[], "/sample/x").await;

    gw.assert_routed(&up, "/sample", &[], "/sample").await;
}

#[tokio::test]
async fn longest_listen_path_wins_regardless_of_file_order() {
    let short = MockUpstream::start().await;
    let long = MockUpstream::start().await;
    // The shorter listen path is in the file that sorts first.
    let gw = gateway!()
        .api("a.json", api_def("short", "/a/", &short.url()))
        .api("b.json", api_def("long", "/a/b/", &long.url()))
        .start()
        .await;

    gw.assert_get_ok("/a/b/c").await;
    assert_eq!(short.request_count(), 0, "went to the shorter listen path");
    assert_eq!(long.last().uri, "/c");

    gw.assert_routed(&short, "/a/c", &[], "/c").await;
    assert_eq!(long.request_count(), 1);
}

#[tokio::test]
async fn inactive_api_is_not_served() {
    let up = MockUpstream::start().await;
    let off = api_with("off", "/off/", &up.url(), json!({"active": false}));
    let gw = gateway!()
        .api("off.json", off)
        .with_api("on", "/on/", &up.url())
        .start()
        .await;

    gw.assert_not_found("/off/x", &[]).await;
    assert_eq!(up.request_count(), 0);

    gw.assert_routed(&up, "/on/x", &[], "/x").await;
}

#[tokio::test]
async fn domain_api_answers_only_for_its_host() {
    let up = MockUpstream::start().await;
    let def = api_with("d", "/d/", &up.url(), json!({"domain": "api.example.com"}));
    let gw = gateway!().api("d.json", def).start().await;

    // Port in the Host header is ignored.
    gw.assert_routed(&up, "/d/x", &[("Host", "api.example.com:8080")], "/x")
        .await;
    gw.assert_routed(&up, "/d/y", &[("Host", "api.example.com")], "/y")
        .await;

    gw.assert_not_found("/d/z", &[("Host", "other.example.com")])
        .await;
    gw.assert_not_found("/d/z", &[]).await; // Host: 127.0.0.1:port
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn same_listen_path_on_different_domains() {
    let with_domain = MockUpstream::start().await;
    let any_host = MockUpstream::start().await;
    let domain = json!({"domain": "one.example"});
    let d = api_with("dom", "/same/", &with_domain.url(), domain);
    let gw = gateway!()
        .api("a.json", api_def("any", "/same/", &any_host.url()))
        .api("b.json", d)
        .start()
        .await;

    gw.assert_routed(&with_domain, "/same/1", &[("Host", "one.example")], "/1")
        .await;
    assert_eq!(any_host.request_count(), 0);

    gw.assert_routed(&any_host, "/same/2", &[("Host", "two.example")], "/2")
        .await;
    assert_eq!(with_domain.request_count(), 1);
}

/// Starts a gateway with one good API and one bad file; the good one must
/// be served, the bad one's listen path must 404, and the log must name the
/// bad file.
async fn check_bad_file_is_skipped(file: &str, text: &str, bad_path: &str) {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .raw_app(file, text)
        .with_api("good", "/good/", &up.url())
        .start()
        .await;

    gw.assert_routed(&up, "/good/ok", &[], "/ok").await;

    gw.assert_not_found(bad_path, &[]).await;
    assert_eq!(up.request_count(), 1);

    gw.wait_stderr(&[file]).await;
}

#[tokio::test]
async fn invalid_json_file_is_skipped() {
    check_bad_file_is_skipped(
        "broken.json",
        r#"{"api_id": "broken", "proxy": {"listen_path": "/broken/", "#,
        "/broken/x",
    )
    .await;
}

#[tokio::test]
async fn file_with_wrongly_typed_field_is_skipped() {
    let def = api_with(
        "badfield",
        "/badfield/",
        "http://127.0.0.1:9",
        json!({"proxy": {"listen_path": 5}}),
    );
    check_bad_file_is_skipped("badfield.json", &def.to_string(), "/badfield/x").await;
    // A number listen path must not be served as "/5" either.
    let def = api_with(
        "five",
        "/five/",
        "http://127.0.0.1:9",
        json!({"proxy": {"listen_path": 5}}),
    );
    check_bad_file_is_skipped("five.json", &def.to_string(), "/5").await;
}

#[tokio::test]
async fn file_without_target_url_is_skipped() {
    let mut def = api_def("notarget", "/notarget/", "http://127.0.0.1:9");
    def["proxy"].as_object_mut().unwrap().remove("target_url");
    check_bad_file_is_skipped("notarget.json", &def.to_string(), "/notarget/x").await;
}

#[tokio::test]
async fn file_with_invalid_target_url_is_skipped() {
    let def = api_def("badtarget", "/badtarget/", "not a url");
    check_bad_file_is_skipped("badtarget.json", &def.to_string(), "/badtarget/x").await;
}

#[tokio::test]
async fn only_json_files_are_loaded() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .raw_app("notes.txt", &api_def("txt", "/txt/", &up.url()).to_string())
        .with_api("good", "/good/", &up.url())
        .start()
        .await;
    gw.assert_not_found("/txt/x", &[]).await;
    gw.assert_get_ok("/good/x").await;
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn duplicate_listen_path_keeps_the_file_that_sorts_first() {
    let first = MockUpstream::start().await;
    let second = MockUpstream::start().await;
    let gw = gateway!()
        .api("b.json", api_def("dup-b", "/dup/", &second.url()))
        .api("a.json", api_def("dup-a", "/dup/", &first.url()))
        .start()
        .await;

    for i in 0..3 {
        gw.assert_get_ok(&format!("/dup/{i}")).await;
    }
    assert_eq!(first.request_count(), 3);
    assert_eq!(second.request_count(), 0, "the later file was served");
    gw.wait_stderr(&["b.json"]).await;
}

/// Two APIs, `/public/` and `/private/`, on separate upstreams.
async fn public_private() -> (Gateway, MockUpstream, MockUpstream) {
    let public = MockUpstream::start().await;
    let private = MockUpstream::start().await;
    let gw = gateway!()
        .with_api("public", "/public/", &public.url())
        .with_api("private", "/private/", &private.url())
        .start()
        .await;
    (gw, public, private)
}

#[tokio::test]
async fn encoded_slash_does_not_escape_the_listen_path() {
    let (gw, public, private) = public_private().await;
    let r = get(gw.addr(), "/public/..%2Fprivate/x", &[]).await;
    assert_eq!(
        private.request_count(),
        0,
        "reached the private upstream: {r:?}"
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // %2F is reserved: it stays encoded, so `..%2Fprivate` is no dot segment.
    assert_eq!(public.last().uri, "/..%2Fprivate/x");

    let r = get(gw.addr(), "/public/..%2fprivate/x", &[]).await;
    assert_eq!(
        private.request_count(),
        0,
        "reached the private upstream: {r:?}"
    );
}

#[tokio::test]
async fn encoded_dot_segments_are_resolved_before_routing() {
    let (gw, public, private) = public_private().await;
    gw.assert_get_ok("/public/%2e%2e/private/x").await;
    assert_eq!(public.request_count(), 0);
    assert_eq!(private.last().uri, "/x");

    gw.assert_routed(&private, "/public/%2E%2E/private/y", &[], "/y")
        .await;

    gw.assert_routed(&private, "/public/../private/z", &[], "/z")
        .await;
    assert_eq!(public.request_count(), 0);
}

#[tokio::test]
async fn duplicate_slashes_are_collapsed() {
    let (gw, public, private) = public_private().await;
    gw.assert_routed(&private, "//private//x", &[], "/x").await;

    gw.assert_routed(&public, "/public///a//b", &[], "/a/b")
        .await;
}

#[tokio::test]
async fn unreserved_escapes_are_decoded_and_dots_resolved() {
    let (gw, public, private) = public_private().await;
    gw.assert_routed(&public, "/public/%7Euser/%61b/./c/../d", &[], "/~user/ab/d")
        .await;

    gw.assert_routed(&public, "/public/%7e%41", &[], "/~A")
        .await;

    // Decoding happens before matching: `%6c` is `l`.
    gw.assert_routed(&public, "/pub%6cic/y", &[], "/y").await;

    // Dot segments never climb above the root.
    gw.assert_not_found("/public/../../../etc/passwd", &[])
        .await;
    assert_eq!(public.request_count(), 3);
    assert_eq!(private.request_count(), 0);
}

#[tokio::test]
async fn query_string_is_not_normalised() {
    let (gw, public, _private) = public_private().await;
    gw.assert_routed(
        &public,
        "/public/a?x=%2e%2e/..//&y=%7E&z",
        &[],
        "/a?x=%2e%2e/..//&y=%7E&z",
    )
    .await;
}
