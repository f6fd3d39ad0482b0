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
            "enable_strict_routes": true}, "hash_keys": false}"#,
    )
    .unwrap();
    assert_eq!(cfg.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(cfg.app_path, PathBuf::from("/srv/apps"));
    assert_eq!(cfg.proxy_default_timeout, Duration::from_secs(2));
    assert_eq!(cfg.edge.read_timeout, Duration::from_secs(3));
    assert_eq!(cfg.edge.max_request_body_bytes, Some(10));
    assert!(cfg.strict_routes);
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
