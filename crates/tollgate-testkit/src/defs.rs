//! JSON builders for tyk.conf and Tyk classic API definitions.

use serde_json::{Value, json};

/// The secret the default test `tyk.conf` uses.
pub(crate) const DEFAULT_SECRET: &str = "test-secret";

/// A minimal `tyk.conf` for tests: loopback listener on `port`, the given
/// admin `secret`, `app_path` relative to the config file (`apps`) and the
/// given `proxy_default_timeout` in seconds.
pub fn tyk_conf(port: u16, secret: &str, proxy_default_timeout: u64) -> Value {
    json!({
        "listen_address": "127.0.0.1",
        "listen_port": port,
        "secret": secret,
        "app_path": "apps",
        "proxy_default_timeout": proxy_default_timeout,
    })
}

/// A keyless, active, unversioned API definition that proxies
/// `listen_path` to `target_url`, stripping the listen path.
pub fn api_def(api_id: &str, listen_path: &str, target_url: &str) -> Value {
    json!({
        "name": format!("API {api_id}"),
        "api_id": api_id,
        "org_id": "default",
        "use_keyless": true,
        "active": true,
        "proxy": {
            "listen_path": listen_path,
            "target_url": target_url,
            "strip_listen_path": true,
        },
        "version_data": {
            "not_versioned": true,
            "versions": {
                "Default": { "name": "Default" }
            }
        }
    })
}

/// [`api_def`] deep-merged with `extra` (e.g. `{"proxy":
/// {"strip_listen_path": false}}`).
pub fn api_with(api_id: &str, listen_path: &str, target_url: &str, extra: Value) -> Value {
    let mut def = api_def(api_id, listen_path, target_url);
    merge_json(&mut def, extra);
    def
}

/// The `version_data` of a not-versioned API whose one version, `Default`, reads
/// `extended_paths` (`use_extended_paths` on), with `version` deep-merged into that version.
pub fn extended_version(version: Value) -> Value {
    let mut default = json!({"name": "Default", "use_extended_paths": true});
    merge_json(&mut default, version);
    json!({"version_data": {"not_versioned": true, "versions": {"Default": default}}})
}

/// Deep-merges `extra` into `base`: objects merge key by key (recursively),
/// every other value in `extra` replaces the one in `base`.
pub fn merge_json(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_deep() {
        let mut a = json!({"a": 1, "o": {"x": 1, "y": 2}});
        merge_json(&mut a, json!({"b": 2, "o": {"y": 3, "z": 4}}));
        assert_eq!(a, json!({"a": 1, "b": 2, "o": {"x": 1, "y": 3, "z": 4}}));
    }

    #[test]
    fn api_def_shape() {
        let d = api_def("x", "/x/", "http://127.0.0.1:1");
        assert_eq!(d["proxy"]["listen_path"], "/x/");
        assert_eq!(d["use_keyless"], true);
        assert_eq!(d["version_data"]["versions"]["Default"]["name"], "Default");
    }
}
