//! Rules Tollgate does not implement yet are refused, never ignored: a definition turning one
//! on is not served (404) and the log names its file and field; `--validate` fails naming
//! them; a tyk.conf turning on an unsupported exposure setting stops the start with exit 2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::raw::get;
use tollgate_testkit::{MockUpstream, api_def, gateway, merge_json, tyk_conf};

/// (name, what the definition adds, the field the refusal must name). Each API listens on
/// `/<name>/`; the full list per field is unit-tested in `tollgate-definitions`.
fn refused_table() -> Vec<(&'static str, Value, &'static str)> {
    let ep = json!([{"path": "/x", "method": "GET"}]);
    let version = |v: Value| json!({"version_data": {"versions": {"Default": v}}});
    vec![
        (
            "vpattern",
            json!({"definition": {"location": "url", "url_versioning_pattern": "^v[0-9]+$"},
                   "version_data": {"not_versioned": false, "default_version": "Default"}}),
            "definition.url_versioning_pattern",
        ),
        (
            "breakers",
            version(
                json!({"use_extended_paths": true, "extended_paths": {"circuit_breakers": ep}}),
            ),
            "version_data.versions.Default.extended_paths.circuit_breakers",
        ),
        (
            "vtimeout",
            version(json!({"global_enforce_timeout": true})),
            "version_data.versions.Default.global_enforce_timeout",
        ),
        (
            "tcpcheck",
            json!({"uptime_tests": {"check_list": [{"url": "http://127.0.0.1:9/", "protocol": "tcp"}]}}),
            "uptime_tests.check_list[0].protocol",
        ),
        (
            "discovery",
            json!({"proxy": {"service_discovery": {"use_discovery_service": true}}}),
            "proxy.service_discovery.use_discovery_service",
        ),
        (
            "viaproxy",
            json!({"proxy": {"transport": {"proxy_url": "http://127.0.0.1:3128"}}}),
            "proxy.transport.proxy_url",
        ),
        (
            "batch",
            json!({"enable_batch_request_support": true}),
            "enable_batch_request_support",
        ),
        (
            "plugin",
            json!({"custom_middleware": {"pre": [{"name": "f", "path": "m.js"}]}}),
            "custom_middleware.pre",
        ),
        (
            "upcerts",
            json!({"upstream_certificates": {"*": "cert-id"}}),
            "upstream_certificates",
        ),
        (
            "pinned",
            json!({"pinned_public_keys": {"*": "key-id"}}),
            "pinned_public_keys",
        ),
        ("internal", json!({"internal": true}), "internal"),
        ("ownport", json!({"listen_port": 9443}), "listen_port"),
    ]
}

fn refused_def(name: &str, extra: &Value, target: &str) -> Value {
    let mut def = api_def(name, &format!("/{name}/"), target);
    merge_json(&mut def, extra.clone());
    def
}

/// The version skeletons Tyk itself writes for an API without rules, and a version using the
/// endpoint rules built since they were refused (they must load and serve).
fn stock_defs(target: &str) -> [(&'static str, Value); 3] {
    let mut minimal = api_def("stock", "/stock/", target);
    minimal["version_data"] = json!({"not_versioned": true, "versions": {"Default": {
        "name": "Default", "use_extended_paths": true, "extended_paths": {}}}});
    minimal["definition"] = json!({"location": "header", "key": "x-api-version"});
    let mut full = api_def("full", "/full/", target);
    merge_json(
        &mut full,
        json!({
            "expiration": "", "allowed_ips": null, "blacklisted_ips": [], "CORS": {"enable": false},
            "enable_ip_whitelisting": false, "proxy": {"target_list": [], "transport": {"proxy_url": ""}},
            "custom_middleware": {"pre": [], "post": null}, "cache_options": {"enable_cache": false},
            "version_data": {"not_versioned": true, "default_version": "", "versions": {"Default": {
                "name": "Default", "expires": "", "use_extended_paths": true,
                "paths": {"ignored": [], "white_list": [], "black_list": []},
                "extended_paths": {"white_list": [], "black_list": null, "ignored": []},
                "global_headers": {}, "global_headers_remove": [], "global_size_limit": 0,
                "override_target": ""}}}
        }),
    );
    let mut built = api_def("built", "/built/", target);
    built["version_data"] = json!({"not_versioned": true, "versions": {"Default": {
        "name": "Default", "use_extended_paths": true, "global_size_limit": 1024,
        "extended_paths": {
            "size_limits": [{"path": "/post", "method": "POST", "size_limit": 512}],
            "hard_timeouts": [{"path": "/slow", "method": "GET", "timeout": 5}],
            "mock_response": [{"path": "/mock", "method": "GET", "code": 200, "body": "m",
                "headers": {}}]}}}});
    [("stock", minimal), ("full", full), ("built", built)]
}

#[tokio::test]
async fn refused_rules_are_not_served_and_the_log_names_file_and_field() {
    let up = MockUpstream::start().await;
    let mut builder = gateway!();
    for (name, extra, _) in refused_table() {
        builder = builder.api(
            &format!("{name}.json"),
            refused_def(name, &extra, &up.url()),
        );
    }
    for (name, def) in stock_defs(&up.url()) {
        builder = builder.api(&format!("{name}.json"), def);
    }
    let gw = builder.start().await;

    for (name, _) in stock_defs(&up.url()) {
        let r = get(gw.addr(), &format!("/{name}/ok"), &[]).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(up.last().uri, "/ok");
    }
    let targets: Vec<String> = refused_table()
        .into_iter()
        .map(|(name, ..)| format!("/{name}/x"))
        .collect();
    gw.assert_unserved(&up, &targets).await;

    let needles: Vec<String> = refused_table()
        .into_iter()
        .map(|(name, _, field)| format!("{name}.json: field `{field}`"))
        .collect();
    let log = gw.wait_stderr(&needles).await;
    for (name, _, _) in refused_table() {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("{name}.json")))
            .unwrap();
        assert!(line.contains("not supported yet"), "{line}");
    }
    assert!(
        !log.contains("stock.json") && !log.contains("full.json"),
        "{log}"
    );
}

/// Runs `tollgate --conf <dir>/tyk.conf --validate`.
fn validate(dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--conf")
        .arg(dir.join("tyk.conf"))
        .arg("--validate")
        .output()
        .expect("run tollgate --validate")
}

fn write_folder(dir: &Path, conf: &Value, apps: &[(String, Value)]) {
    std::fs::write(dir.join("tyk.conf"), conf.to_string()).unwrap();
    std::fs::create_dir_all(dir.join("apps")).unwrap();
    for (file, def) in apps {
        std::fs::write(dir.join("apps").join(file), def.to_string()).unwrap();
    }
}

#[test]
fn validate_fails_naming_every_refused_definition() {
    let target = "http://127.0.0.1:9";
    let good: Vec<(String, Value)> = stock_defs(target)
        .into_iter()
        .map(|(name, def)| (format!("{name}.json"), def))
        .collect();
    let conf = tyk_conf(8080, "test-secret", 10);

    let clean = tempfile::tempdir().unwrap();
    write_folder(clean.path(), &conf, &good);
    let out = validate(clean.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("3 API definition(s) are valid"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let mut apps = good;
    for (name, extra, _) in refused_table() {
        apps.push((format!("{name}.json"), refused_def(name, &extra, target)));
    }
    write_folder(dir.path(), &conf, &apps);
    let out = validate(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for (name, _, field) in refused_table() {
        assert!(
            stderr.contains(&format!("{name}.json: field `{field}`")),
            "{name}/{field} not named:\n{stderr}"
        );
    }
    let n = refused_table().len();
    assert!(
        stderr.contains(&format!(
            "{n} API definition(s) would be skipped, 3 would load"
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn unsupported_gateway_settings_stop_the_start_with_exit_2() {
    let table = [
        (
            json!({"storage": {"type": "redis", "use_ssl": true, "cert_file": "client.pem"}}),
            "storage.cert_file",
        ),
        (
            json!({"security": {"control_api_use_mutual_tls": true}}),
            "security.control_api_use_mutual_tls",
        ),
        (json!({"hostname": "api.example.com"}), "hostname"),
    ];
    for (extra, field) in table {
        let mut gw = gateway!().conf(extra.clone()).spawn();
        let exit = gw.wait_exit(Duration::from_secs(5)).await;
        let exit = exit.unwrap_or_else(|| panic!("still running with {extra}\n{}", gw.log()));
        assert_eq!(exit.code(), Some(2), "{extra}\n{}", gw.log());
        let stderr = gw.stderr();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{extra}: want one line:\n{stderr}");
        let line = lines[0];
        assert!(line.contains("tyk.conf"), "{line}");
        assert!(line.contains(&format!("field `{field}`")), "{line}");
        assert!(line.contains("not supported yet"), "{line}");
    }
}
