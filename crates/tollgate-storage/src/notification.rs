//! The cluster notification message, in Tyk's format, so Tyk and Tollgate nodes hear each
//! other: `{"command": ..., "payload": ..., "signature": ..., "algorithm": 5}` on channel
//! `tyk.cluster.notifications`, signed with SHA-256 over command + payload + `node_secret`.
//!
//! Pure encoding and verification: the session facade announces key changes with it, and
//! the listener in `notify` (above the facade) acts on it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Tyk's number for SHA-256 (Go's `crypto.SHA256`).
const SHA256_ALGORITHM: u8 = 5;

/// A cluster notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// What happened.
    pub command: String,
    /// Command data (comma-separated key hashes for key changes).
    #[serde(default)]
    pub payload: String,
    /// Hex SHA-256 of command + payload + node secret.
    #[serde(default)]
    pub signature: String,
    /// Signature algorithm (5 = SHA-256).
    #[serde(default)]
    pub algorithm: u8,
}

/// Commands that make a node reload its APIs and policies.
pub(crate) const RELOAD_COMMANDS: [&str; 5] = [
    "GroupReload",
    "ApiUpdated",
    "ApiAdded",
    "ApiRemoved",
    "PolicyChanged",
];
/// A key changed: drop it from local caches.
pub(crate) const KEY_CHANGED: &str = "KeySpaceUpdateNotification";

fn sign(command: &str, payload: &str, secret: &str) -> String {
    let digest = Sha256::new()
        .chain_update(command.as_bytes())
        .chain_update(payload.as_bytes())
        .chain_update(secret.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Notification {
    /// Tells nodes to reload.
    pub fn group_reload() -> Self {
        Self::new("GroupReload", String::new())
    }

    /// Tells nodes a key changed.
    pub fn key_changed(storage_id: &str) -> Self {
        Self::new(KEY_CHANGED, storage_id.to_owned())
    }

    fn new(command: &str, payload: String) -> Self {
        Self {
            command: command.to_owned(),
            payload,
            signature: String::new(),
            algorithm: SHA256_ALGORITHM,
        }
    }

    /// The signed JSON to publish.
    pub fn to_json(&self, node_secret: &str) -> String {
        let signed = Self {
            signature: sign(&self.command, &self.payload, node_secret),
            ..self.clone()
        };
        serde_json::to_string(&signed).unwrap_or_default()
    }

    /// Parses and verifies a received message; `None` for garbage or a bad signature.
    pub fn verify(json: &[u8], node_secret: &str, allow_insecure: bool) -> Option<Self> {
        let n: Self = serde_json::from_slice(json).ok()?;
        if allow_insecure {
            return Some(n);
        }
        let expected = sign(&n.command, &n.payload, node_secret);
        bool::from(expected.as_bytes().ct_eq(n.signature.as_bytes())).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_round_trip() {
        let json = Notification::group_reload().to_json("secret");
        let n = Notification::verify(json.as_bytes(), "secret", false).unwrap();
        assert_eq!(n.command, "GroupReload");
        assert_eq!(n.algorithm, 5);
        assert!(Notification::verify(json.as_bytes(), "other", false).is_none());
        assert!(Notification::verify(json.as_bytes(), "other", true).is_some());
        assert!(Notification::verify(b"nope", "secret", true).is_none());
    }

    #[test]
    fn tyk_signature() {
        // sha256("GroupReload" + "" + "secret")
        let n = Notification::group_reload();
        let json: serde_json::Value = serde_json::from_str(&n.to_json("secret")).unwrap();
        assert_eq!(
            json["signature"].as_str().unwrap(),
            sign("GroupReload", "", "secret")
        );
        assert_eq!(json["signature"].as_str().unwrap().len(), 64);
    }
}
