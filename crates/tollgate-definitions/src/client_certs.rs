//! `use_mutual_tls_auth` with `client_certificates`: the certificates an API lets in, as
//! SHA-256 fingerprints (Tyk's certificate ids, with or without the org id in front) or PEM
//! files, read when the definition loads. A client proves it holds one in the TLS handshake;
//! the proxy's check compares fingerprints.

use std::collections::HashSet;
use std::path::Path;

use crate::DefinitionError;

/// The client certificates an API allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertRules {
    /// SHA-256 of each allowed certificate's DER.
    pub allowed: HashSet<[u8; 32]>,
}

/// Reads `client_certificates` for an API with `use_mutual_tls_auth`.
///
/// # Errors
/// An entry that is neither a fingerprint nor an absolute path to a PEM file with a
/// certificate, or an empty list (no client could ever get in).
pub(crate) fn compile(entries: &serde_json::Value) -> Result<ClientCertRules, DefinitionError> {
    let field = "client_certificates";
    let list: Vec<String> = match entries {
        serde_json::Value::Null => Vec::new(),
        raw => serde_json::from_value(raw.clone())
            .map_err(|_| DefinitionError::new(field, "must be a list of certificate ids"))?,
    };
    if list.is_empty() {
        return Err(DefinitionError::new(
            field,
            "use_mutual_tls_auth needs at least one allowed certificate",
        ));
    }
    let mut allowed = HashSet::new();
    for (i, entry) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let entry = entry.trim();
        if let Some(fp) = fingerprint_id(entry) {
            allowed.insert(fp);
            continue;
        }
        let path = Path::new(entry);
        if !path.is_absolute() {
            return Err(DefinitionError::new(
                at,
                format!(
                    "`{entry}` is neither a certificate's SHA-256 nor an absolute path to a PEM file"
                ),
            ));
        }
        let fps = tollgate_tls::client_auth::file_fingerprints(&at, path)
            .map_err(|e| DefinitionError::new(at.clone(), e.to_string()))?;
        allowed.extend(fps);
    }
    Ok(ClientCertRules { allowed })
}

/// A certificate id: 64 hex digits, after an optional org id (letters and digits).
fn fingerprint_id(entry: &str) -> Option<[u8; 32]> {
    let hex = entry.get(entry.len().checked_sub(64)?..)?;
    let org = &entry[..entry.len() - 64];
    if !org.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_and_refusals() {
        let hex = "ab".repeat(32);
        let rules = compile(&json!([hex, format!("5e9d9544a1dcd60001d0ed20{hex}")])).unwrap();
        assert_eq!(rules.allowed.len(), 1);
        assert!(rules.allowed.contains(&[0xab; 32]));
        let err = |v| compile(&v).unwrap_err().to_string();
        assert!(err(json!([])).contains("at least one"));
        assert!(err(json!(null)).contains("at least one"));
        assert!(err(json!(["certs/client.pem"])).contains("client_certificates[0]"));
        assert!(err(json!(["/no/such/file.pem"])).contains("client_certificates[0]"));
        assert!(err(json!("x")).contains("list"));
    }
}
