//! Path normalisation and routing lookups on arbitrary paths and hosts.
//!
//! Input: `host \n path` (no `\n`: the whole input is the path, no host). Invariants:
//! - nothing panics;
//! - a normalised path starts with `/`, has no `//` and no `.` or `..` segment, and
//!   normalising it again changes nothing;
//! - a route found for a normalised path has a listen path that is a prefix of it.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tollgate_config::GatewayConfig;
use tollgate_definitions::{ApiSource, ApiSpec, LoadedApi};
use tollgate_proxy::Routes;
use tollgate_proxy::path::normalise;

fn api(id: &str, listen_path: &str, domain: &str) -> LoadedApi {
    let raw = json!({
        "api_id": id,
        "domain": domain,
        "use_keyless": true,
        "proxy": {"listen_path": listen_path, "target_url": "http://127.0.0.1:1"}
    });
    LoadedApi {
        spec: ApiSpec::from_json(&raw).unwrap_or_else(|e| panic!("fuzz table: {e}")),
        raw,
        source: ApiSource::File(PathBuf::from(format!("{id}.json"))),
    }
}

fn table(extra: &str) -> Routes {
    let config = GatewayConfig::from_json(
        Path::new("/fuzz/tyk.conf"),
        &format!(r#"{{"secret":"s"{extra}}}"#),
    )
    .unwrap_or_else(|e| panic!("fuzz config: {e}"));
    Routes::build(
        vec![
            api("root", "/", ""),
            api("a", "/a/", ""),
            api("app", "/app", ""),
            api("deep", "/a/b/c/", ""),
            api("dom", "/a/", "api.example.com"),
            api("dom-only", "/only", "API.Example.com"),
            api("v6", "/v6", "[::1]"),
        ],
        &config,
    )
}

static LOOSE: LazyLock<Routes> = LazyLock::new(|| table(""));
static STRICT: LazyLock<Routes> =
    LazyLock::new(|| table(r#","http_server_options":{"enable_strict_routes":true}"#));

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (host, path) = match text.split_once('\n') {
        Some((h, p)) => (Some(h), p),
        None => (None, text.as_ref()),
    };
    for routes in [&*LOOSE, &*STRICT] {
        // Lookups must cope with any path, normalised or not.
        let _ = routes.lookup(host, path);
    }
    let Ok(once) = normalise(path) else {
        return;
    };
    assert!(once.starts_with('/'), "not absolute: {once:?}");
    assert!(!once.contains("//"), "empty segment: {once:?}");
    assert!(
        !once.split('/').any(|s| s == "." || s == ".."),
        "dot segment: {once:?}"
    );
    let twice = normalise(&once).unwrap_or_else(|_| panic!("normal form refused: {once:?}"));
    assert_eq!(once, twice, "normalising twice changed {path:?}");
    for routes in [&*LOOSE, &*STRICT] {
        if let Some(route) = routes.lookup(host, &once) {
            assert!(
                once.starts_with(&*route.spec.listen_path),
                "{once:?} routed to {:?}",
                route.spec.listen_path
            );
        }
    }
});
