//! tyk.conf settings that change security or exposure and are not built yet. Turning one on
//! stops the start (exit 2, one line naming the file and field) instead of running a gateway
//! more open than configured: plain HTTP where TLS was asked for, the admin API on the public
//! port, APIs answering any Host.
//!
//! Left alone on purpose (no change to who gets in or where the gateway is reachable):
//! `enable_jsvm` and `coprocess_options` (the plugins they run are refused per API),
//! `global_session_lifetime` unless forced (each API's own `session_lifetime` applies and is
//! refused per API), analytics and tracing settings. `uptime_tests` is read (`lib.rs`).

use serde_json::Value;

use crate::TykConf;

/// True when a raw field is switched on or non-empty. API definitions turn their settings on
/// the same loose way, so `tollgate-definitions` reads them with this too.
pub fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .unwrap_or(&Value::Null)
}

/// The first setting in `file` Tollgate cannot honour, as (field, message).
pub(crate) fn check(file: &TykConf, redis: bool) -> Option<(&'static str, String)> {
    let not_yet = |what: &str| format!("{what} not supported yet");
    if is_set(&file.hostname) {
        return Some(("hostname", not_yet("restricting every API to one Host is")));
    }
    let security = &file.security;
    if is_set(at(security, &["control_api_use_mutual_tls"])) {
        return Some((
            "security.control_api_use_mutual_tls",
            not_yet("mutual TLS on the admin API is"),
        ));
    }
    if is_set(at(security, &["pinned_public_keys"])) {
        return Some((
            "security.pinned_public_keys",
            not_yet("certificate pinning is"),
        ));
    }
    if is_set(at(security, &["certificates", "upstream"])) {
        return Some((
            "security.certificates.upstream",
            not_yet("upstream client certificates are"),
        ));
    }
    if is_set(at(security, &["certificates", "control_api"])) {
        return Some((
            "security.certificates.control_api",
            not_yet("admin API certificates are"),
        ));
    }
    if is_set(&file.enforce_org_quotas) {
        return Some(("enforce_org_quotas", not_yet("organisation quotas are")));
    }
    // A key Tyk would have dropped after its lifetime must not go on working here.
    if is_set(&file.force_global_session_lifetime) && is_set(&file.global_session_lifetime) {
        return Some((
            "global_session_lifetime",
            not_yet("key lifetimes (force_global_session_lifetime) are"),
        ));
    }
    let storage = &file.storage;
    if redis && storage.use_ssl {
        if !storage.cert_file.trim().is_empty() || !storage.key_file.trim().is_empty() {
            return Some((
                "storage.cert_file",
                not_yet("client certificates towards Redis are"),
            ));
        }
        // rustls offers 1.2 and 1.3: only a 1.3 floor would be weaker than asked.
        if storage.tls_min_version.trim() == "1.3" {
            return Some((
                "storage.tls_min_version",
                not_yet("a TLS 1.3 minimum towards Redis is"),
            ));
        }
    }
    None
}
