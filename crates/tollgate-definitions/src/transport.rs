//! `proxy.transport`: an API's own upstream TLS settings.
//!
//! Read into [`ApiTransport`] and laid over the gateway's `proxy_ssl_*` settings. Every key is
//! known: an unknown one, an HTTP proxy (`proxy_url`) or the common-name check is refused, since
//! ignoring it would reach the upstream another way than the definition asks.

use serde_json::Value;
use tollgate_tls::client::ApiTransport;
use tollgate_tls::settings;

use crate::DefinitionError;
use crate::unsupported::is_set;

const FIELD: &str = "proxy.transport";

/// The API's transport settings; an absent or empty object is all defaults.
///
/// # Errors
/// A value of the wrong type, a version or cipher that is no TLS value, or a setting Tollgate
/// does not implement.
pub(crate) fn read(raw: &Value) -> Result<ApiTransport, DefinitionError> {
    let mut out = ApiTransport::default();
    let obj = match raw {
        Value::Null => return Ok(out),
        Value::Object(o) => o,
        _ => return Err(DefinitionError::new(FIELD, "must be an object")),
    };
    for (key, value) in obj {
        let field = format!("{FIELD}.{key}");
        match key.as_str() {
            "ssl_insecure_skip_verify" => out.insecure_skip_verify = bool_at(&field, value)?,
            "ssl_min_version" => out.min_version = version_at(&field, value)?,
            "ssl_max_version" => out.max_version = version_at(&field, value)?,
            "ssl_ciphers" => out.ciphers = names_at(&field, value)?,
            "ssl_force_common_name_check" | "proxy_url" if is_set(value) => {
                return Err(DefinitionError::new(
                    field,
                    match key.as_str() {
                        "proxy_url" => "an HTTP proxy towards the upstream is not supported yet",
                        _ => {
                            "the common-name check is not supported: certificates are checked \
                             against their subject alternative names"
                        }
                    },
                ));
            }
            "ssl_force_common_name_check" | "proxy_url" => {}
            _ if is_set(value) => {
                return Err(DefinitionError::new(
                    field,
                    "is not a transport setting Tollgate knows",
                ));
            }
            _ => {}
        }
    }
    settings::protocol_versions(
        &format!("{FIELD}.ssl_min_version"),
        out.min_version,
        &format!("{FIELD}.ssl_max_version"),
        out.max_version,
    )
    .and_then(|_| {
        settings::cipher_suites(
            &format!("{FIELD}.ssl_ciphers"),
            &out.ciphers,
            &settings::default_provider(),
        )
    })
    .map_err(|e| match e {
        tollgate_tls::TlsError::Setting { field, message } => DefinitionError::new(field, message),
        e => DefinitionError::new(FIELD, e.to_string()),
    })?;
    Ok(out)
}

fn bool_at(field: &str, v: &Value) -> Result<bool, DefinitionError> {
    match v {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(*b),
        _ => Err(DefinitionError::new(field, "must be true or false")),
    }
}

fn version_at(field: &str, v: &Value) -> Result<u16, DefinitionError> {
    match v {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| DefinitionError::new(field, "must be a TLS version number (771, 772)")),
        _ => Err(DefinitionError::new(
            field,
            "must be a TLS version number (771, 772)",
        )),
    }
}

fn names_at(field: &str, v: &Value) -> Result<Vec<String>, DefinitionError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    DefinitionError::new(format!("{field}[{i}]"), "must be a string")
                })
            })
            .collect(),
        _ => Err(DefinitionError::new(
            field,
            "must be a list of cipher names",
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_tyk_transport_settings() {
        let t = read(&json!({
            "ssl_insecure_skip_verify": true, "ssl_min_version": 772, "ssl_max_version": 0,
            "ssl_ciphers": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
            "ssl_force_common_name_check": false, "proxy_url": ""
        }))
        .unwrap();
        assert!(t.insecure_skip_verify);
        assert_eq!(t.min_version, 772);
        assert_eq!(t.ciphers.len(), 1);
        assert_eq!(read(&Value::Null).unwrap(), ApiTransport::default());
        assert_eq!(read(&json!({})).unwrap(), ApiTransport::default());
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for (raw, field) in [
            (
                json!({"proxy_url": "http://squid:3128"}),
                "proxy.transport.proxy_url",
            ),
            (
                json!({"ssl_force_common_name_check": true}),
                "proxy.transport.ssl_force_common_name_check",
            ),
            (
                json!({"ssl_min_version": 1}),
                "proxy.transport.ssl_min_version",
            ),
            (
                json!({"ssl_max_version": "1.3"}),
                "proxy.transport.ssl_max_version",
            ),
            (
                json!({"ssl_ciphers": ["RC5"]}),
                "proxy.transport.ssl_ciphers[0]",
            ),
            (
                json!({"ssl_ciphers": [1]}),
                "proxy.transport.ssl_ciphers[0]",
            ),
            (
                json!({"ssl_insecure_skip_verify": "yes"}),
                "proxy.transport.ssl_insecure_skip_verify",
            ),
            (json!({"mystery": true}), "proxy.transport.mystery"),
            (json!([]), "proxy.transport"),
        ] {
            let e = read(&raw).expect_err(&raw.to_string());
            assert_eq!(e.field, field, "{raw}");
        }
    }
}
