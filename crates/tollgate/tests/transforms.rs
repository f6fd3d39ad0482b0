//! Header transforms of a not-versioned API (`global_headers`, `global_headers_remove`,
//! `transform_headers`, `transform_response_headers`, `global_response_headers(_remove)`) with
//! `$tyk_meta` / `$tyk_context` values, against the real binary: what the upstream received
//! and what the client got back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_testkit::keys::{
    KEYED, KEYED_LISTEN, MSG_MISSING, call, create_key, session_with, with_keyed_api,
};
use tollgate_testkit::raw::assert_tyk_error;
use tollgate_testkit::{MockUpstream, Reply, api_with, extended_version, gateway};

#[tokio::test]
async fn request_and_response_headers_are_edited_as_tyk() {
    let up = MockUpstream::start().await;
    up.on(
        "/fixed",
        Reply::fixed(200, "ok")
            .header("x-upstream-secret", "s")
            .header("x-kept", "k")
            .header("x-internal-trace", "t"),
    );
    let extra = json!({"enable_context_vars": true});
    let mut extra_v = extended_version(json!({
        "global_headers": {"X-Global": "g", "X-Tier": "$tyk_meta.tier",
                           "X-Client": "$tyk_context.remote_addr"},
        "global_headers_remove": ["X-Drop"],
        "global_response_headers": {"X-Served-By": "tollgate"},
        "global_response_headers_remove": ["X-Internal-Trace"],
        "extended_paths": {
            "transform_headers": [
                {"path": "/get", "method": "GET", "delete_headers": ["Authorization"],
                 "add_headers": {"X-Endpoint": "e-$tyk_context.headers_X_Device",
                                 "X-Meta-Missing": "[$tyk_meta.nope]"}},
                {"path": "/off", "method": "GET", "disabled": true,
                 "add_headers": {"X-Off": "1"}}
            ],
            "transform_response_headers": [
                {"path": "/fixed", "method": "GET", "delete_headers": ["X-Upstream-Secret"],
                 "add_headers": {"X-Resp": "r-$tyk_meta.tier"}}
            ]
        }
    }));
    tollgate_testkit::merge_json(&mut extra_v, extra);
    let gw = with_keyed_api(gateway!(), &up.url(), extra_v).start().await;
    let (key, _) = create_key(
        &gw,
        &session_with(&[KEYED], json!({"meta_data": {"tier": "gold"}})),
    )
    .await;
    let at = |p: &str| format!("{KEYED_LISTEN}{p}");

    // Global then endpoint edits; variables from the key and the request as it arrived.
    let r = call(
        &gw,
        "GET",
        &at("get"),
        &[
            ("Authorization", &key),
            ("X-Drop", "secret"),
            ("X-Device", "phone"),
            ("X-Real-IP", "10.9.8.7"),
            ("X-Global", "from-client"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.dump());
    let got = up.last();
    assert_eq!(got.header("x-global"), Some("g"), "a set header overwrites");
    assert_eq!(got.header("x-tier"), Some("gold"));
    assert_eq!(got.header("x-client"), Some("10.9.8.7"));
    assert_eq!(got.header("x-drop"), None);
    assert_eq!(got.header("x-endpoint"), Some("e-phone"));
    assert_eq!(got.header("x-meta-missing"), Some("[]"));
    assert_eq!(got.header("authorization"), None, "the endpoint deleted it");
    // The global response edits apply to every upstream response.
    assert_eq!(r.header("x-served-by"), Some("tollgate"));

    // Another method on the same path: only the global edits.
    let r = call(&gw, "POST", &at("get"), &[("Authorization", &key)]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    let got = up.last();
    assert_eq!(got.header("x-global"), Some("g"));
    assert_eq!(got.header("x-endpoint"), None);
    assert!(got.header("authorization").is_some());

    // A disabled entry does nothing.
    call(&gw, "GET", &at("off"), &[("Authorization", &key)]).await;
    assert_eq!(up.last().header("x-off"), None);

    // Response edits: the endpoint's, then the global ones.
    let r = call(&gw, "GET", &at("fixed"), &[("Authorization", &key)]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(r.header("x-upstream-secret"), None);
    assert_eq!(r.header("x-internal-trace"), None);
    assert_eq!(r.header("x-kept"), Some("k"));
    assert_eq!(r.header("x-resp"), Some("r-gold"));
    assert_eq!(r.header("x-served-by"), Some("tollgate"));

    // A refusal is the gateway's own answer: no transforms, and nothing forwarded.
    let before = up.request_count();
    let r = call(&gw, "GET", &at("fixed"), &[]).await;
    assert_tyk_error(&r, 401, MSG_MISSING);
    assert_eq!(r.header("x-served-by"), None);
    assert_eq!(up.request_count(), before);
}

#[tokio::test]
async fn keyless_values_and_forwarded_for_removal() {
    let up = MockUpstream::start().await;
    let plain = extended_version(json!({
        "global_headers": {"X-Who": "[$tyk_meta.user][$tyk_context.remote_addr]"}
    }));
    let hidden = extended_version(json!({"global_headers_remove": ["X-Forwarded-For"]}));
    let gw = gateway!()
        .keyless_api("plain", &up, plain)
        .keyless_api("hidden", &up, hidden)
        .start()
        .await;
    // Keyless: no metadata; context variables are off without `enable_context_vars`.
    let r = call(&gw, "GET", "/plain/x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    let got = up.last();
    assert_eq!(got.header("x-who"), Some("[][]"));
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
    // Removing X-Forwarded-For globally hides the client from the upstream entirely.
    let r = call(&gw, "GET", "/hidden/x", &[("X-Forwarded-For", "1.2.3.4")]).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(up.last().header("x-forwarded-for"), None);
}

#[tokio::test]
async fn a_bad_transform_refuses_only_its_definition() {
    let up = MockUpstream::start().await;
    let bad_name = extended_version(json!({"global_headers": {"Bad Name": "x"}}));
    let secret = extended_version(json!({"extended_paths": {"transform_headers": [
        {"path": "/x", "method": "GET", "add_headers": {"X-Token": "$secret_env.TOKEN"}}]}}));
    let no_method = extended_version(json!({"extended_paths": {"transform_response_headers": [
        {"path": "/x", "add_headers": {"X-A": "1"}}]}}));
    let gw = gateway!()
        .keyless_api("badname", &up, bad_name)
        .keyless_api("secret", &up, secret)
        .keyless_api("nomethod", &up, no_method)
        .with_api("good", "/good/", &up.url())
        .start()
        .await;
    gw.assert_routed(&up, "/good/x", &[], "/x").await;
    gw.assert_unserved(&up, &["/badname/x", "/secret/x", "/nomethod/x"])
        .await;
    gw.wait_stderr(&[
        "badname.json: field `version_data.versions.Default.global_headers.Bad Name`",
        "secret.json: field `version_data.versions.Default.extended_paths.transform_headers[0].add_headers.X-Token`",
        "nomethod.json: field `version_data.versions.Default.extended_paths.transform_response_headers[0].method`",
    ])
    .await;
}

#[tokio::test]
async fn url_rewrites_and_method_transforms_as_tyk() {
    let up = MockUpstream::start().await;
    let other = MockUpstream::start().await;
    let mut extra = extended_version(json!({"extended_paths": {
        "url_rewrites": [
            {"path": "/books/{rest}", "method": "GET",
             "match_pattern": r"^/books/(\w+)/(\w+)",
             "rewrite_to": "library/service?value1=$1&value2=$2",
             "triggers": [
                {"on": "any", "options": {"header_matches": {"X-Beta": {"match_rx": r"^user-(\d+)$"}}},
                 "rewrite_to": "/beta/$tyk_context.trigger-0-X-Beta-0-0"},
                {"on": "all", "options": {
                    "query_val_matches": {"edition": {"match_rx": "^first$"}},
                    "path_part_matches": {"part": {"match_rx": "^rare$"}}},
                 "rewrite_to": "/vault/$2"}
             ]},
            {"path": "/keep", "method": "GET", "match_pattern": "^/keep(.*)", "rewrite_to": "/kept$1"},
            {"path": "/away", "method": "GET", "match_pattern": "^/away/(.*)",
             "rewrite_to": format!("{}/there/$1", other.url())},
            {"path": "/nomatch", "method": "GET", "match_pattern": "^/zzz", "rewrite_to": "/never"},
            {"path": "/ctx", "method": "GET", "match_pattern": "^/ctx",
             "rewrite_to": "/ctx?h=$tyk_context.headers_X_Name"},
            {"path": "/off", "method": "GET", "disabled": true, "match_pattern": ".*",
             "rewrite_to": "/never"}
        ],
        "method_transforms": [{"path": "/post-me", "method": "GET", "to_method": "post"}]
    }}));
    tollgate_testkit::merge_json(&mut extra, json!({"enable_context_vars": true}));
    let target = format!("{}/base", up.url());
    let gw = gateway!()
        .with_api_extra("rw", "/rw/", &target, extra)
        .start()
        .await;
    let seen = |method: &str, target: &str, headers: &'static [(&'static str, &'static str)]| {
        let gw = &gw;
        let target = target.to_owned();
        let method = method.to_owned();
        async move {
            let r = call(gw, &method, &target, headers).await;
            assert_eq!(r.status, 200, "{method} {target}: {}", r.dump());
        }
    };

    // Tyk's documented example, joined to the target's path.
    seen("GET", "/rw/books/fiction/9780", &[]).await;
    let got = up.last();
    assert_eq!(got.uri, "/base/library/service?value1=fiction&value2=9780");
    // A header trigger (`any`) picks its own target and reads what it matched.
    seen("GET", "/rw/books/fiction/9780", &[("X-Beta", "user-42")]).await;
    assert_eq!(up.last().uri, "/base/beta/42");
    // `all`: both the query and a path segment must match.
    seen("GET", "/rw/books/rare/7?edition=first", &[]).await;
    assert_eq!(up.last().uri, "/base/vault/7");
    seen("GET", "/rw/books/common/7?edition=first", &[]).await;
    assert_eq!(
        up.last().uri,
        "/base/library/service?value1=common&value2=7"
    );
    // The query is part of what is matched; a target without one drops it unless carried.
    seen("GET", "/rw/keep?x=1", &[]).await;
    assert_eq!(up.last().uri, "/base/kept?x=1");
    // No match: the request goes on unchanged; a disabled entry does nothing.
    seen("GET", "/rw/nomatch/a", &[]).await;
    assert_eq!(up.last().uri, "/base/nomatch/a");
    seen("GET", "/rw/off", &[]).await;
    assert_eq!(up.last().uri, "/base/off");
    // Variables in a rewritten URL are URL-escaped.
    seen("GET", "/rw/ctx", &[("X-Name", "a b/c&d")]).await;
    assert_eq!(up.last().uri, "/base/ctx?h=a+b%2Fc%26d");
    // Another host, addressed as itself.
    let before = up.request_count();
    seen("GET", "/rw/away/x?q=1", &[]).await;
    let got = other.last();
    assert_eq!(got.uri, "/there/x?q=1");
    assert_eq!(got.header("host"), Some(other.host().as_str()));
    assert_eq!(up.request_count(), before);
    // Method transform: selected by the original method, the upstream gets the new one.
    seen("GET", "/rw/post-me", &[]).await;
    let got = up.last();
    assert_eq!(
        (got.method.as_str(), got.uri.as_str()),
        ("POST", "/base/post-me")
    );
    seen("PUT", "/rw/post-me", &[]).await;
    assert_eq!(up.last().method, "PUT");
}

#[tokio::test]
async fn unsupported_rewrites_refuse_their_definition() {
    let up = MockUpstream::start().await;
    let rw = |entry: Value| extended_version(json!({"extended_paths": {"url_rewrites": [entry]}}));
    let base = json!({"path": "/x", "method": "GET", "match_pattern": ".*"});
    let with = |extra: Value| {
        let mut e = base.clone();
        tollgate_testkit::merge_json(&mut e, extra);
        rw(e)
    };
    let cases = [
        (
            "loop",
            with(json!({"rewrite_to": "tyk://other/x"})),
            "url_rewrites[0].rewrite_to",
        ),
        (
            "host-variable",
            with(json!({"rewrite_to": "https://$tyk_meta.host/"})),
            "url_rewrites[0].rewrite_to",
        ),
        (
            "body",
            with(json!({"rewrite_to": "/y", "triggers": [{"on": "any",
                "options": {"payload_matches": {"match_rx": "x"}}, "rewrite_to": "/z"}]})),
            "url_rewrites[0].triggers[0].options.payload_matches",
        ),
        (
            "regex",
            with(json!({"match_pattern": "(", "rewrite_to": "/y"})),
            "url_rewrites[0].match_pattern",
        ),
        (
            "method",
            extended_version(json!({"extended_paths": {"method_transforms": [
                {"path": "/x", "method": "GET", "to_method": "NOT A METHOD"}]}})),
            "method_transforms[0].to_method",
        ),
    ];
    let mut builder = gateway!().with_api("good", "/good/", &up.url());
    for (name, def, _) in &cases {
        builder = builder.api(
            &format!("{name}.json"),
            api_with(name, &format!("/{name}/"), &up.url(), def.clone()),
        );
    }
    let gw = builder.start().await;
    gw.assert_routed(&up, "/good/x", &[], "/x").await;
    let targets: Vec<String> = cases
        .iter()
        .map(|(name, ..)| format!("/{name}/x"))
        .collect();
    gw.assert_unserved(&up, &targets).await;
    let needles: Vec<String> = cases
        .iter()
        .map(|(name, _, field)| {
            format!("{name}.json: field `version_data.versions.Default.extended_paths.{field}`")
        })
        .collect();
    gw.wait_stderr(&needles).await;
}
