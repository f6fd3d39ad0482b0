use super::*;

fn load(text: &str) -> Result<GatewayConfig, ConfigError> {
    GatewayConfig::from_json(Path::new("/etc/tollgate/tyk.conf"), text)
}

#[test]
fn defaults_and_relative_paths() {
    let cfg = load(r#"{"secret": "s", "some_unknown_key": {"x": 1}}"#).unwrap();
    assert_eq!(cfg.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(cfg.app_path, PathBuf::from("/etc/tollgate/apps"));
    assert_eq!(cfg.proxy_default_timeout, Duration::from_secs(30));
    assert_eq!(cfg.edge.max_request_line_bytes, 8192);
    assert_eq!(cfg.edge.max_request_head_bytes, 65536);
    assert_eq!(cfg.edge.max_request_headers, 100);
    assert_eq!(cfg.edge.max_request_body_bytes, None);
    assert_eq!(cfg.xff_depth, 0);
    assert!(cfg.keys.hash_keys);
    assert_eq!(cfg.keys.min_token_length, 3);
    assert_eq!(
        cfg.storage,
        StorageSettings::Embedded {
            path: PathBuf::from("/etc/tollgate/data")
        }
    );
    assert!(cfg.websockets);
}

#[test]
fn explicit_values() {
    let cfg = load(
        r#"{"listen_address": "127.0.0.1", "listen_port": 9000, "secret": "s", "app_path": "/srv/apps",
            "proxy_default_timeout": 2, "http_server_options": {"read_timeout": 3, "max_request_body_size": 10,
            "enable_strict_routes": true, "xff_depth": 2}, "hash_keys": false}"#,
    )
    .unwrap();
    assert_eq!(cfg.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(cfg.app_path, PathBuf::from("/srv/apps"));
    assert_eq!(cfg.proxy_default_timeout, Duration::from_secs(2));
    assert_eq!(cfg.edge.read_timeout, Duration::from_secs(3));
    assert_eq!(cfg.edge.max_request_body_bytes, Some(10));
    assert!(cfg.strict_routes);
    assert_eq!(cfg.xff_depth, 2);
    assert!(!cfg.keys.hash_keys);
}

#[test]
fn field_errors_name_file_and_field() {
    let err = load(r#"{"listen_port": "abc"}"#).unwrap_err().to_string();
    assert!(err.contains("/etc/tollgate/tyk.conf"), "{err}");
    assert!(err.contains("listen_port"), "{err}");

    let err = load(r#"{"http_server_options": {"read_timeout": -1}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("http_server_options.read_timeout"), "{err}");

    let err = load(r#"{"listen_address": "nope"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen_address"), "{err}");
}

#[test]
fn broken_json_names_file() {
    let err = load("{").unwrap_err().to_string();
    assert!(err.contains("tyk.conf"), "{err}");
}

#[test]
fn secret_debug_is_redacted() {
    let cfg = load(r#"{"secret": "hunter2"}"#).unwrap();
    assert!(!format!("{cfg:?}").contains("hunter2"));
}

#[test]
fn unsupported_exposure_settings_stop_the_start() {
    let table = [
        (r#"{"hostname": "api.example.com"}"#, "hostname"),
        (
            r#"{"security": {"control_api_use_mutual_tls": true}}"#,
            "security.control_api_use_mutual_tls",
        ),
        (
            r#"{"security": {"pinned_public_keys": {"*": "k"}}}"#,
            "security.pinned_public_keys",
        ),
        (
            r#"{"security": {"certificates": {"upstream": {"*": "c"}}}}"#,
            "security.certificates.upstream",
        ),
        (
            r#"{"security": {"certificates": {"control_api": ["c"]}}}"#,
            "security.certificates.control_api",
        ),
        (r#"{"enforce_org_quotas": true}"#, "enforce_org_quotas"),
        (
            r#"{"force_global_session_lifetime": true, "global_session_lifetime": 100}"#,
            "global_session_lifetime",
        ),
        (
            r#"{"storage": {"type": "redis", "use_ssl": true, "key_file": "k.pem"}}"#,
            "storage.cert_file",
        ),
        (
            r#"{"storage": {"type": "redis", "use_ssl": true, "tls_min_version": "1.3"}}"#,
            "storage.tls_min_version",
        ),
    ];
    for (text, field) in table {
        let err = load(text).expect_err(text);
        let ConfigError::Invalid { field: got, .. } = &err else {
            panic!("{text}: {err}");
        };
        assert_eq!(*got, field, "{text}");
        let line = err.to_string();
        assert!(line.contains("/etc/tollgate/tyk.conf"), "{line}");
        assert!(line.contains(&format!("`{field}`")), "{line}");
        assert!(line.contains("not supported yet"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}

#[test]
fn off_values_of_unsupported_settings_are_accepted() {
    // The values Tyk's own sample configs carry.
    load(
        r#"{"listen_port": 8080, "control_api_port": 0, "control_api_hostname": "", "hostname": "",
            "enforce_org_quotas": false, "force_global_session_lifetime": false,
            "http_server_options": {"use_ssl": false, "certificates": null, "ssl_certificates": [],
                                    "min_version": 771},
            "security": {"control_api_use_mutual_tls": false, "pinned_public_keys": {},
                         "certificates": {"upstream": {}, "control_api": null, "dashboard_api": []}},
            "storage": {"type": "embedded", "use_ssl": true},
            "policies": {"policy_source": "file", "policy_path": "", "policy_record_name": "p.json"},
            "enable_jsvm": true, "global_session_lifetime": 100}"#,
    )
    .unwrap();
    // The control port equal to the listen port is Tyk's shared-port setup.
    load(r#"{"listen_port": 9000, "control_api_port": 9000}"#).unwrap();
    // A policy folder is read instead of the record file, as in Tyk.
    let both = load(r#"{"policies": {"policy_path": "policies", "policy_record_name": "p.json"}}"#)
        .unwrap();
    assert_eq!(
        both.policy_dir.as_deref(),
        Some(std::path::Path::new("/etc/tollgate/policies"))
    );
    assert_eq!(both.policy_file, None);
}

#[test]
fn tls_settings_are_read_with_paths_next_to_the_config() {
    let cfg = load(
        r#"{"http_server_options": {"use_ssl": true, "enable_http2": true,
              "certificates": [{"domain_name": "*.example.com", "cert_file": "a.crt", "key_file": "/k/a.key"}],
              "ssl_certificates": ["both.pem"], "min_version": 772,
              "ssl_ciphers": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]},
            "proxy_ssl_insecure_skip_verify": true, "proxy_ssl_ca_cert": "ca.pem",
            "proxy_ssl_min_version": 771}"#,
    )
    .unwrap();
    let tls = cfg.tls.expect("use_ssl");
    assert!(tls.http2);
    assert_eq!(tls.min_version, 772);
    assert_eq!(tls.certificates.len(), 2);
    let first = &tls.certificates[0];
    assert_eq!(first.domain.as_deref(), Some("*.example.com"));
    assert_eq!(first.cert_file, Path::new("/etc/tollgate/a.crt"));
    assert_eq!(first.key_file, Path::new("/k/a.key"));
    assert_eq!(first.field, "http_server_options.certificates[0]");
    let second = &tls.certificates[1];
    assert_eq!(second.cert_file, second.key_file);
    assert_eq!(second.field, "http_server_options.ssl_certificates[0]");
    assert!(cfg.upstream_tls.insecure_skip_verify);
    assert_eq!(cfg.upstream_tls.min_version, 771);
    assert_eq!(
        cfg.upstream_tls.ca_files,
        [Path::new("/etc/tollgate/ca.pem")]
    );
    // Without use_ssl the certificates are not read at all.
    let plain = load(r#"{"http_server_options": {"certificates": [{"cert_file": "x"}]}}"#).unwrap();
    assert!(plain.tls.is_none());
}

#[test]
fn tls_values_that_are_not_tls_stop_the_start() {
    for (text, field) in [
        (
            r#"{"http_server_options": {"use_ssl": true, "min_version": 12}}"#,
            "http_server_options.min_version",
        ),
        (
            r#"{"http_server_options": {"use_ssl": true, "ssl_ciphers": ["TLS_FOO"]}}"#,
            "http_server_options.ssl_ciphers[0]",
        ),
        (r#"{"proxy_ssl_max_version": 770}"#, "proxy_ssl_max_version"),
        (r#"{"proxy_ssl_ciphers": ["nope"]}"#, "proxy_ssl_ciphers[0]"),
    ] {
        let err = load(text).expect_err(text).to_string();
        assert!(
            err.starts_with(&format!(
                "config file /etc/tollgate/tyk.conf: field {field}: "
            )),
            "{err}"
        );
    }
}

#[test]
fn uptime_tests_defaults_and_values() {
    let cfg = load(r#"{"secret": "s"}"#).unwrap();
    let u = cfg.uptime.unwrap();
    assert_eq!(u.failure_trigger_sample_size, 3);
    assert_eq!(u.time_wait, Duration::from_secs(10));
    assert!(u.checker_pool_size >= 1);
    assert!(!u.analytics);
    let cfg = load(
        r#"{"uptime_tests": {"disable": false, "poller_group": "g", "config": {
            "failure_trigger_sample_size": 2, "time_wait": 1, "checker_pool_size": 5,
            "enable_uptime_analytics": true}}}"#,
    )
    .unwrap();
    assert_eq!(
        cfg.uptime,
        Some(UptimeSettings {
            failure_trigger_sample_size: 2,
            time_wait: Duration::from_secs(1),
            checker_pool_size: 5,
            analytics: true,
        })
    );
    // Zero means Tyk's default.
    let cfg =
        load(r#"{"uptime_tests": {"config": {"failure_trigger_sample_size": 0, "time_wait": 0}}}"#)
            .unwrap();
    let u = cfg.uptime.unwrap();
    assert_eq!(
        (u.failure_trigger_sample_size, u.time_wait),
        (3, Duration::from_secs(10))
    );
    assert!(
        load(r#"{"uptime_tests": {"disable": true}}"#)
            .unwrap()
            .uptime
            .is_none()
    );
    // Tyk's `time_wait` is whole seconds: a fraction is refused, naming the field.
    let err = load(r#"{"uptime_tests": {"config": {"time_wait": 0.5}}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("uptime_tests.config.time_wait"), "{err}");
}
