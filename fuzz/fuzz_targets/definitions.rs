//! Classic API definitions: `ApiSpec::from_json` and the loader on arbitrary JSON, and on a
//! valid definition with one field replaced by fuzzer data. Definitions that validate are also
//! compiled into a routing table (stage chains included) and looked up.
//!
//! Invariant: nothing panics; a definition that validates also loads through `load_rows` (the
//! path database rows and files share after the JSON parse) and compiles.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tollgate_config::GatewayConfig;
use tollgate_definitions::{ApiSpec, LoadOptions, load_rows};
use tollgate_proxy::Routes;

static CONFIG: LazyLock<GatewayConfig> = LazyLock::new(|| {
    GatewayConfig::from_json(Path::new("/fuzz/tyk.conf"), r#"{"secret":"s"}"#)
        .unwrap_or_else(|e| panic!("fuzz config: {e}"))
});

/// Where a fuzzed value is put into an otherwise valid definition.
const FIELDS: &[&[&str]] = &[
    &["api_id"],
    &["org_id"],
    &["active"],
    &["domain"],
    &["use_keyless"],
    &["use_standard_auth"],
    &["use_basic_auth"],
    &["auth"],
    &["auth", "auth_header_name"],
    &["auth", "param_name"],
    &["auth", "cookie_name"],
    &["auth_configs"],
    &["proxy"],
    &["proxy", "listen_path"],
    &["proxy", "target_url"],
    &["version_data"],
    &["version_data", "versions"],
    &["version_data", "default_version"],
    &["version_data", "not_versioned"],
    &["version_data", "fallback_to_default"],
    &["definition"],
    &["definition", "location"],
    &["definition", "key"],
    &["version_data", "versions", "Default", "paths"],
    &["version_data", "versions", "Default", "extended_paths"],
    &["version_data", "versions", "Default", "extended_paths", "white_list"],
    &["version_data", "versions", "Default", "extended_paths", "black_list"],
    &["version_data", "versions", "Default", "extended_paths", "ignored"],
    &["version_data", "versions", "Default", "extended_paths", "url_rewrites"],
    &["version_data", "versions", "Default", "extended_paths", "transform_headers"],
    &["version_data", "versions", "Default", "extended_paths", "transform_response_headers"],
    &["version_data", "versions", "Default", "extended_paths", "method_transforms"],
    &["version_data", "versions", "Default", "extended_paths", "size_limits"],
    &["version_data", "versions", "Default", "extended_paths", "hard_timeouts"],
    &["version_data", "versions", "Default", "extended_paths", "mock_response"],
    &["version_data", "versions", "Default", "global_headers"],
    &["version_data", "versions", "Default", "global_size_limit"],
    &["version_data", "versions", "Default", "expires"],
    &["version_data", "versions", "Default", "override_target"],
    &["CORS"],
    &["allowed_ips"],
    &["expiration"],
    &["global_rate_limit"],
    &["global_rate_limit", "rate"],
    &["global_rate_limit", "per"],
    &["max_request_body_size"],
    &["strip_auth_data"],
];

fn base() -> Value {
    json!({
        "name": "Fuzz",
        "api_id": "fuzz",
        "org_id": "default",
        "active": true,
        "use_keyless": true,
        "proxy": {
            "listen_path": "/fuzz/",
            "target_url": "http://127.0.0.1:8000/",
            "strip_listen_path": true
        },
        "version_data": {
            "not_versioned": true,
            "versions": { "Default": { "name": "Default", "use_extended_paths": true } }
        }
    })
}

fn set(doc: &mut Value, path: &[&str], value: Value) {
    let mut at = doc;
    for key in &path[..path.len() - 1] {
        let Some(obj) = at.as_object_mut() else {
            return;
        };
        at = obj.entry(*key).or_insert_with(|| json!({}));
    }
    if let (Some(obj), Some(last)) = (at.as_object_mut(), path.last()) {
        obj.insert((*last).to_owned(), value);
    }
}

fn check(doc: Value) {
    let spec = ApiSpec::from_json(&doc);
    let outcome = load_rows(vec![("fuzz".to_owned(), doc.clone())], &LoadOptions::default());
    match spec {
        Ok(spec) => {
            if doc.is_object() {
                assert_eq!(outcome.apis.len(), 1, "validates but does not load");
            }
            let _ = spec.detached();
        }
        Err(err) => {
            let _ = err.to_string();
            assert!(outcome.apis.is_empty(), "does not validate but loads");
        }
    }
    // The same document twice: the second is refused as a duplicate, never loaded.
    let twice = load_rows(
        vec![("a".to_owned(), doc.clone()), ("b".to_owned(), doc)],
        &LoadOptions::default(),
    );
    assert!(twice.apis.len() <= 1, "a duplicate api_id loaded");
    for e in &twice.errors {
        let _ = e.to_string();
    }
    if let Some(api) = outcome.apis.first() {
        let host = api.spec.domain.as_deref().map(str::to_owned);
        let lp = api.spec.listen_path.to_string();
        let routes = Routes::build(outcome.apis, &CONFIG);
        let _ = routes.lookup(host.as_deref(), &lp);
        let _ = routes.detached(&CONFIG);
    }
}

fuzz_target!(|data: &[u8]| {
    // Arbitrary JSON as the whole document.
    if let Ok(doc) = serde_json::from_slice::<Value>(data) {
        check(doc);
    }
    // A valid definition with one field replaced: by the rest as JSON if it parses, else by
    // the rest as a string (so URL, path and name checks see arbitrary text).
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let field = FIELDS[usize::from(pick) % FIELDS.len()];
    let value = serde_json::from_slice::<Value>(rest)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(rest).into_owned()));
    let mut doc = base();
    set(&mut doc, field, value);
    check(doc);
});
