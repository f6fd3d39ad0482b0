//! Rules Tollgate does not implement yet. A definition that turns one on is refused with the
//! field's path instead of being served without the rule: an API relying on an endpoint
//! black-list or an expiry date must never be served more open than written, and
//! the upstream must never receive something other than what Tyk would send it.
//!
//! Empty, `null`, `false`, `0` and `""` all count as "off", so the skeleton Tyk itself writes
//! (`"Default": {"name": "Default", "use_extended_paths": true, "extended_paths": {}}`, empty
//! lists, `"expires": ""`, an unused `definition.location`) still loads.
//!
//! Left alone on purpose (they change neither who gets in nor what the upstream receives):
//! analytics and tracking (`enable_detailed_recording`, `tags`, `tag_headers`,
//! `track_endpoints`, `do_not_track_endpoints`, `event_handlers`), response caching
//! (`cache_options`, `extended_paths.cache`, `advance_cache_config`), `config_data`,
//! `error_overrides`, `basic_auth` caching and body extraction (ignoring them can only refuse
//! a request Tyk would let in). Load balancing and `uptime_tests` are read (`spec.rs`,
//! `uptime.rs`), which refuse the parts not built.

use serde_json::{Map, Value};

use crate::DefinitionError;
use crate::model::{ApiDefinition, AuthConf};

/// `extended_paths` lists that are safe to ignore here: analytics marks and the response
/// cache, and the lists `endpoints.rs` compiles (and checks).
const HARMLESS_EXTENDED: &[&str] = &[
    "white_list",
    "black_list",
    "ignored",
    "transform_headers",
    "transform_response_headers",
    "url_rewrites",
    "method_transforms",
    "size_limits",
    "hard_timeouts",
    "mock_response",
    "track_endpoints",
    "do_not_track_endpoints",
    "cache",
    "advance_cache_config",
];

/// What each known `extended_paths` list does, for the message; any other non-empty list is
/// refused too, as an unknown rule.
const EXTENDED: &[(&str, &str)] = &[
    ("transform", "body transforms"),
    ("transform_response", "response body transforms"),
    ("transform_jq", "jq transforms"),
    ("transform_jq_response", "jq transforms"),
    ("circuit_breakers", "circuit breakers"),
    ("virtual", "virtual endpoints"),
    ("validate_json", "JSON validation"),
    ("validate_request", "request validation"),
    ("internal", "internal endpoints"),
    ("go_plugin", "Go plugins"),
    ("rate_limit", "per-endpoint rate limits"),
    ("persist_graphql", "persisted GraphQL queries"),
];

pub(crate) use tollgate_config::is_set;

/// True for an object field `key` that is set.
fn field_set(obj: &Value, key: &str) -> bool {
    obj.get(key).is_some_and(is_set)
}

fn refuse(field: impl Into<String>, what: &str) -> DefinitionError {
    DefinitionError::new(field, format!("{what} not supported yet"))
}

/// The first `(on, field, what)` that is on, refused.
fn first_on(rules: &[(bool, &str, &str)]) -> Result<(), DefinitionError> {
    match rules.iter().find(|(on, _, _)| *on) {
        Some((_, field, what)) => Err(refuse(*field, what)),
        None => Ok(()),
    }
}

/// The first rule `def` turns on that Tollgate cannot enforce.
///
/// # Errors
/// That rule's field, with "… not supported yet".
/// `cert_bound`: the API authenticates with certificate-bound keys, so its token
/// configuration's `use_certificate` is read rather than refused.
pub(crate) fn check(def: &ApiDefinition, cert_bound: bool) -> Result<(), DefinitionError> {
    access(def, cert_bound)?;
    exposure(def)?;
    upstream(def)?;
    plugins(def)?;
    versions(def)
}

/// Who gets in: expiry, key binding, external identity providers.
fn access(def: &ApiDefinition, cert_bound: bool) -> Result<(), DefinitionError> {
    first_on(&[
        // Tyk drops a key from storage after this many seconds; serving it on would keep keys
        // working longer than the definition allows.
        (
            is_set(&def.session_lifetime),
            "session_lifetime",
            "key lifetimes are",
        ),
        (
            field_set(&def.external_oauth, "enabled"),
            "external_oauth.enabled",
            "external OAuth is",
        ),
    ])?;
    let confs = std::iter::once(("auth".to_owned(), &def.auth)).chain(
        def.auth_configs
            .iter()
            .map(|(name, conf)| (format!("auth_configs.{name}"), conf)),
    );
    let token_path = if def.auth_configs.contains_key("authToken") {
        "auth_configs.authToken"
    } else {
        "auth"
    };
    for (path, conf) in confs {
        auth_conf(&path, conf, cert_bound && path == token_path)?;
    }
    Ok(())
}

fn auth_conf(path: &str, conf: &AuthConf, cert_bound: bool) -> Result<(), DefinitionError> {
    if !cert_bound && is_set(&conf.use_certificate) {
        return Err(refuse(
            format!("{path}.use_certificate"),
            "certificate-bound keys are",
        ));
    }
    if is_set(&conf.validate_signature) {
        return Err(refuse(
            format!("{path}.validate_signature"),
            "auth token signatures are",
        ));
    }
    Ok(())
}

/// Where and how the API is reachable.
fn exposure(def: &ApiDefinition) -> Result<(), DefinitionError> {
    first_on(&[
        (
            is_set(&def.internal),
            "internal",
            "internal APIs (reachable only from other APIs) are",
        ),
        (is_set(&def.listen_port), "listen_port", "per-API ports are"),
    ])?;
    match &def.protocol {
        Value::String(p) if matches!(p.trim(), "" | "http") => {}
        Value::Null => {}
        other => {
            return Err(DefinitionError::new(
                "protocol",
                format!("protocol {other} is not supported yet (only http)"),
            ));
        }
    }
    first_on(&[
        (
            is_set(&def.certificates),
            "certificates",
            "per-API TLS certificates are",
        ),
        (
            is_set(&def.enable_batch_request_support),
            "enable_batch_request_support",
            "batch requests are",
        ),
        (
            field_set(&def.graphql, "enabled"),
            "graphql.enabled",
            "GraphQL APIs are",
        ),
    ])
}

/// What the upstream receives and how it is reached.
fn upstream(def: &ApiDefinition) -> Result<(), DefinitionError> {
    let p = &def.proxy;
    if field_set(&p.service_discovery, "use_discovery_service") {
        return Err(refuse(
            "proxy.service_discovery.use_discovery_service",
            "service discovery is",
        ));
    }
    if is_set(&def.upstream_certificates) {
        return Err(refuse(
            "upstream_certificates",
            "upstream client certificates are",
        ));
    }
    if is_set(&def.pinned_public_keys) {
        return Err(refuse("pinned_public_keys", "certificate pinning is"));
    }
    if field_set(&def.upstream_auth, "enabled") {
        return Err(refuse(
            "upstream_auth.enabled",
            "upstream authentication is",
        ));
    }
    if field_set(&def.request_signing, "is_enabled") {
        return Err(refuse("request_signing.is_enabled", "request signing is"));
    }
    Ok(())
}

/// Plugins and response processors.
fn plugins(def: &ApiDefinition) -> Result<(), DefinitionError> {
    let mw = &def.custom_middleware;
    for hook in ["pre", "post", "post_key_auth", "response"] {
        if field_set(mw, hook) {
            return Err(refuse(
                format!("custom_middleware.{hook}"),
                "custom middleware is",
            ));
        }
    }
    if mw
        .get("auth_check")
        .is_some_and(|a| field_set(a, "name") || field_set(a, "path"))
    {
        return Err(refuse(
            "custom_middleware.auth_check",
            "custom middleware is",
        ));
    }
    if is_set(&def.custom_middleware_bundle) && !is_set(&def.custom_middleware_bundle_disabled) {
        return Err(refuse("custom_middleware_bundle", "middleware bundles are"));
    }
    // `header_injector` was the switch for response header transforms before Tyk 5.3; they
    // are always on here, so the bare switch is harmless. Its own `options` are not read.
    if let Value::Array(list) = &def.response_processors {
        for (i, p) in list.iter().enumerate() {
            let injector = p.get("name").and_then(Value::as_str) == Some("header_injector");
            if injector && !field_set(p, "options") {
                continue;
            }
            let field = if injector {
                format!("response_processors[{i}].options")
            } else {
                format!("response_processors[{i}]")
            };
            return Err(DefinitionError::new(
                field,
                "response processors are not supported yet (response header transforms need \
                 only `global_response_headers` / `transform_response_headers`)",
            ));
        }
    } else if is_set(&def.response_processors) {
        return Err(refuse("response_processors", "response processors are"));
    }
    Ok(())
}

/// Versioning and the per-version rules (checked in every version, used or not).
fn versions(def: &ApiDefinition) -> Result<(), DefinitionError> {
    let vd = &def.version_data;
    if field_set(&def.definition, "enabled") && field_set(&def.definition, "versions") {
        return Err(refuse("definition.versions", "versioned child APIs are"));
    }
    for (name, version) in &vd.versions {
        if let Value::Object(v) = version {
            version_rules(&format!("version_data.versions.{name}"), v)?;
        }
    }
    Ok(())
}

fn version_rules(path: &str, v: &Map<String, Value>) -> Result<(), DefinitionError> {
    let get = |k: &str| v.get(k).unwrap_or(&Value::Null);
    // Checked whatever `use_extended_paths` says: a stale list is cheap to remove, a list
    // silently dropped is an open endpoint.
    if let Value::Object(ext) = get("extended_paths") {
        for (key, list) in ext {
            if HARMLESS_EXTENDED.contains(&key.as_str()) || !is_set(list) {
                continue;
            }
            let what = EXTENDED
                .iter()
                .find(|(k, _)| k == key)
                .map_or("these endpoint rules", |(_, what)| what);
            return Err(refuse(
                format!("{path}.extended_paths.{key}"),
                &format!("{what} are"),
            ));
        }
    }
    let rules = [("global_enforce_timeout", "version-wide timeouts are")];
    for (key, what) in rules {
        if is_set(get(key)) {
            return Err(refuse(format!("{path}.{key}"), what));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::{ApiSpec, model::ApiDefinition};

    fn base() -> Value {
        json!({
            "api_id": "a", "name": "A", "org_id": "o", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://up"},
            "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}}
        })
    }

    fn with(extra: Value) -> Value {
        let mut d = base();
        tollgate_testkit::merge_json(&mut d, extra);
        d
    }

    fn ext(list: &str, entry: Value) -> Value {
        json!({"version_data": {"versions": {"Default": {
            "use_extended_paths": true, "extended_paths": {list: [entry]}}}}})
    }

    #[test]
    fn each_rule_is_refused_naming_its_field() {
        let ep = json!({"path": "/x", "method": "GET"});
        let table = [
            (
                json!({"external_oauth": {"enabled": true}}),
                "external_oauth.enabled",
            ),
            (
                json!({"auth": {"use_certificate": true}}),
                "auth.use_certificate",
            ),
            (
                json!({"auth_configs": {"authToken": {"validate_signature": true}}}),
                "auth_configs.authToken.validate_signature",
            ),
            (json!({"internal": true}), "internal"),
            (json!({"session_lifetime": 3600}), "session_lifetime"),
            (json!({"listen_port": 9443}), "listen_port"),
            (json!({"protocol": "https"}), "protocol"),
            (json!({"certificates": ["c1"]}), "certificates"),
            (
                json!({"enable_batch_request_support": true}),
                "enable_batch_request_support",
            ),
            (json!({"graphql": {"enabled": true}}), "graphql.enabled"),
            (
                json!({"proxy": {"service_discovery": {"use_discovery_service": true}}}),
                "proxy.service_discovery.use_discovery_service",
            ),
            (
                json!({"proxy": {"transport": {"proxy_url": "http://squid:3128"}}}),
                "proxy.transport.proxy_url",
            ),
            (
                json!({"upstream_certificates": {"*": "c"}}),
                "upstream_certificates",
            ),
            (
                json!({"pinned_public_keys": {"*": "k"}}),
                "pinned_public_keys",
            ),
            (
                json!({"upstream_auth": {"enabled": true}}),
                "upstream_auth.enabled",
            ),
            (
                json!({"request_signing": {"is_enabled": true}}),
                "request_signing.is_enabled",
            ),
            (
                json!({"custom_middleware": {"pre": [{"name": "f", "path": "m.js"}]}}),
                "custom_middleware.pre",
            ),
            (
                json!({"custom_middleware": {"response": [{"name": "f"}]}}),
                "custom_middleware.response",
            ),
            (
                json!({"custom_middleware_bundle": "b.zip"}),
                "custom_middleware_bundle",
            ),
            (
                json!({"response_processors": [{"name": "header_injector"}, {"name": "x"}]}),
                "response_processors[1]",
            ),
            (
                json!({"response_processors": [{"name": "header_injector", "options": {"add_headers": {"a": "b"}}}]}),
                "response_processors[0].options",
            ),
            (
                json!({"version_data": {"not_versioned": false, "default_version": "Default"},
                       "definition": {"location": "url", "url_versioning_pattern": "^v[0-9]+$"}}),
                "definition.url_versioning_pattern",
            ),
            (
                json!({"definition": {"enabled": true, "versions": {"v2": "api-v2"}}}),
                "definition.versions",
            ),
            (
                ext("circuit_breakers", ep.clone()),
                "version_data.versions.Default.extended_paths.circuit_breakers",
            ),
            (
                ext("rate_limit", ep.clone()),
                "version_data.versions.Default.extended_paths.rate_limit",
            ),
            (
                ext("some_future_rule", ep),
                "version_data.versions.Default.extended_paths.some_future_rule",
            ),
            (
                json!({"version_data": {"versions": {"Default": {"global_enforce_timeout": true}}}}),
                "version_data.versions.Default.global_enforce_timeout",
            ),
            // A rule in a version the unversioned API never uses is refused too.
            (
                json!({"version_data": {"versions": {"old": {"global_enforce_timeout": 5}}}}),
                "version_data.versions.old.global_enforce_timeout",
            ),
        ];
        for (extra, field) in table {
            let d = with(extra.clone());
            let err = ApiSpec::from_json(&d).expect_err(&format!("{extra} must be refused"));
            assert_eq!(err.field, field, "{extra}: {err}");
            assert!(err.message.contains("not supported yet"), "{err}");
        }
    }

    #[test]
    fn endpoint_lists_load_and_stale_ones_are_refused() {
        let d = with(
            json!({"expiration": "2030-01-01 00:00", "version_data": {"versions": {"Default": {
            "use_extended_paths": true,
            "extended_paths": {"black_list": [{"path": "/x", "method": "GET"}]}}}}}),
        );
        let spec = ApiSpec::from_json(&d).unwrap();
        assert!(spec.version.endpoints.is_some() && spec.expiration.is_some());
        // Tyk would ignore the simple list while extended paths are on: refused, not dropped.
        let d = with(json!({"version_data": {"versions": {"Default": {
            "use_extended_paths": true, "paths": {"black_list": ["/admin"]}}}}}));
        let err = ApiSpec::from_json(&d).unwrap_err();
        assert_eq!(err.field, "version_data.versions.Default.paths.black_list");
        let d = with(json!({"version_data": {"versions": {"Default": {
            "extended_paths": {"white_list": [{"path": "/a", "method": "GET"}]}}}}}));
        let err = ApiSpec::from_json(&d).unwrap_err();
        assert_eq!(
            err.field,
            "version_data.versions.Default.extended_paths.white_list"
        );
        for (entry, field) in [
            (json!({"path": "/a("}), "white_list[0].path"),
            (json!({"path": "/a"}), "white_list[0].method"),
            (
                json!({"path": "/a", "method_actions": {"GET": {"action": "redirect"}}}),
                "white_list[0].method_actions.GET.action",
            ),
            (
                json!({"path": "/a", "method_actions": {"GET": {"action": "reply", "headers": {"bad name": "x"}}}}),
                "white_list[0].method_actions.GET",
            ),
        ] {
            let d = with(ext("white_list", entry));
            let err = ApiSpec::from_json(&d).unwrap_err();
            assert_eq!(
                err.field,
                format!("version_data.versions.Default.extended_paths.{field}"),
                "{err}"
            );
        }
        let err = ApiSpec::from_json(&with(json!({"expiration": "soon"}))).unwrap_err();
        assert_eq!(err.field, "expiration");
    }

    #[test]
    fn message_names_the_field() {
        let err =
            ApiSpec::from_json(&with(ext("circuit_breakers", json!({"path": "/x"})))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `version_data.versions.Default.extended_paths.circuit_breakers`: \
             circuit breakers are not supported yet"
        );
    }

    #[test]
    fn off_and_empty_values_still_load() {
        // What Tyk itself writes for an API without any of these rules.
        // Left alone on purpose: context vars, detailed recording, session lifetime, tags,
        // caching and event handlers.
        let stock: Value = serde_json::from_str(
            r#"{
             "expiration": "", "allowed_ips": null, "blacklisted_ips": [],
             "enable_ip_whitelisting": false, "enable_ip_blacklisting": false,
             "CORS": {"enable": false, "allowed_origins": ["*"], "options_passthrough": false},
             "definition": {"location": "header", "key": "x-api-version", "enabled": false, "versions": {}},
             "listen_port": 0, "protocol": "", "internal": false,
             "custom_middleware": {"pre": [], "post": null, "post_key_auth": [], "response": [],
                                   "auth_check": {"name": "", "path": ""}, "driver": "otto"},
             "custom_middleware_bundle": "", "response_processors": [],
             "enable_batch_request_support": false, "upstream_certificates": {},
             "pinned_public_keys": {}, "certificates": null,
             "upstream_auth": {"enabled": false}, "request_signing": {"is_enabled": false},
             "graphql": {"enabled": false}, "external_oauth": {"enabled": false},
             "auth": {"auth_header_name": "Authorization", "use_certificate": false, "validate_signature": false},
             "uptime_tests": {"check_list": [], "config": {"expire_utime_after": 0,
                 "service_discovery": {"use_discovery_service": false}, "recheck_wait": 0}},
             "proxy": {"enable_load_balancing": false, "target_list": ["not even a URL"],
                       "check_host_against_uptime_tests": false,
                       "service_discovery": {"use_discovery_service": false, "query_endpoint": ""},
                       "transport": {"ssl_insecure_skip_verify": false, "ssl_ciphers": null,
                                     "ssl_min_version": 0, "ssl_max_version": 0, "proxy_url": ""}},
             "version_data": {"not_versioned": true, "default_version": "", "versions": {"Default": {
                 "name": "Default", "expires": "", "use_extended_paths": true,
                 "paths": {"ignored": [], "white_list": [], "black_list": []},
                 "extended_paths": {"ignored": null, "white_list": [], "black_list": [],
                                    "track_endpoints": [{"path": "/t", "method": "GET"}],
                                    "cache": ["/c"]},
                 "global_headers": {}, "global_headers_remove": [], "global_response_headers": {},
                 "global_size_limit": 0, "override_target": ""}}},
             "enable_context_vars": true, "enable_detailed_recording": true,
             "session_lifetime": 0, "tags": ["edge"],
             "cache_options": {"enable_cache": true, "cache_timeout": 60},
             "event_handlers": {"events": {"QuotaExceeded": [{"handler_name": "eh_log_handler"}]}}
        }"#,
        )
        .unwrap();
        ApiSpec::from_json(&with(stock)).unwrap();
        // The minimal stock skeleton, and an expiry of -1 (never).
        ApiSpec::from_json(&with(json!({"expiration": "-1", "version_data": {"versions": {"Default": {
            "name": "Default", "use_extended_paths": true, "extended_paths": {}, "expires": "-1"}}}})))
        .unwrap();
        // IP lists with access control switched off are not enforced by Tyk either.
        ApiSpec::from_json(&with(json!({"ip_access_control_disabled": true,
            "allowed_ips": ["10.0.0.1"], "blacklisted_ips": ["10.0.0.2"]})))
        .unwrap();
        // A disabled bundle is not loaded.
        ApiSpec::from_json(&with(json!({"custom_middleware_bundle": "b.zip",
            "custom_middleware_bundle_disabled": true})))
        .unwrap();
    }

    #[test]
    fn absent_version_data_loads_as_not_versioned() {
        let d = json!({"api_id": "a", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://up"}});
        ApiSpec::from_json(&d).unwrap();
        let d: ApiDefinition = serde_json::from_value(
            json!({"api_id": "a", "use_keyless": true, "version_data": {"versions": {"Default": {}}},
                "proxy": {"listen_path": "/a/", "target_url": "http://up"}}),
        )
        .unwrap();
        ApiSpec::from_definition(&d).unwrap();
    }

    #[test]
    fn shipped_examples_still_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/apps");
        let out = crate::load_dir(&dir, &crate::LoadOptions::default()).unwrap();
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert!(!out.apis.is_empty());
    }
}
