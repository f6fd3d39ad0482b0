//! Key generation and key hashing.
//!
//! Keys are Tyk's base64-JSON tokens, `{"org":"<org_id>","id":"<random hex>","h":"<algorithm>"}`,
//! so a key still names its org and the hash it is stored under. The random part is 128 bits
//! from the operating system's CSPRNG. Tollgate hashes with SHA-256 by default: Tyk's default
//! 32-bit murmur hash lets near-miss keys collide; the murmur variants stay available so a store
//! migrated from Tyk keeps working.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// A key hash function (`hash_key_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// SHA-256, 64 hex chars (Tollgate's default).
    Sha256,
    /// Tyk's legacy default, 8 hex chars.
    Murmur32,
    /// First half of MurmurHash3 x64-128, 16 hex chars.
    Murmur64,
    /// MurmurHash3 x64-128, 32 hex chars.
    Murmur128,
}

impl HashAlgorithm {
    /// The configured function: empty means Tollgate's default (SHA-256); an unknown name falls
    /// back to murmur64 as in Tyk.
    pub fn from_config(name: &str) -> Self {
        match name {
            "" | "sha256" => Self::Sha256,
            other => Self::from_name(other).unwrap_or(Self::Murmur64),
        }
    }

    /// Parses an exact algorithm name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            "murmur32" => Some(Self::Murmur32),
            "murmur64" => Some(Self::Murmur64),
            "murmur128" => Some(Self::Murmur128),
            _ => None,
        }
    }

    /// Tyk's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Murmur32 => "murmur32",
            Self::Murmur64 => "murmur64",
            Self::Murmur128 => "murmur128",
        }
    }

    /// Lower-case hex of the digest, big-endian (Tyk's encoding).
    pub fn hash(self, data: &[u8]) -> String {
        match self {
            Self::Sha256 => hex(&Sha256::digest(data)),
            Self::Murmur32 => {
                let h = murmur3::murmur3_32(&mut std::io::Cursor::new(data), 0).unwrap_or(0);
                format!("{h:08x}")
            }
            Self::Murmur64 => {
                let (h1, _) = murmur128(data);
                format!("{h1:016x}")
            }
            Self::Murmur128 => {
                let (h1, h2) = murmur128(data);
                format!("{h1:016x}{h2:016x}")
            }
        }
    }
}

/// (h1, h2) of MurmurHash3 x64-128 with seed 0. The crate packs them as `h2 << 64 | h1`.
fn murmur128(data: &[u8]) -> (u64, u64) {
    let v = murmur3::murmur3_x64_128(&mut std::io::Cursor::new(data), 0).unwrap_or(0);
    #[allow(clippy::cast_possible_truncation)]
    (v as u64, (v >> 64) as u64)
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Lower-case hex of `bytes` written into `out` (two digits a byte; stops at the shorter),
/// for callers that must not allocate.
pub fn hex_into(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(b >> 4)];
        pair[1] = HEX_DIGITS[usize::from(b & 0xf)];
    }
}

/// The parts of a base64-JSON key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyToken {
    /// Org id.
    pub org: String,
    /// Key id (random, or the custom id).
    pub id: String,
    /// Hash algorithm name.
    #[serde(default)]
    pub h: String,
}

impl KeyToken {
    /// Encodes as Tyk does: standard base64, with padding, of the compact JSON.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        STANDARD.encode(json)
    }

    /// Decodes a key that is a base64-JSON token; `None` for any other key.
    pub fn decode(key: &str) -> Option<Self> {
        if !key.starts_with("ey") {
            return None;
        }
        let json = STANDARD.decode(key).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

/// A new random key for `org_id`.
///
/// # Errors
/// The operating system's random source failed.
pub fn generate_key(org_id: &str, algorithm: HashAlgorithm) -> Result<String, getrandom::Error> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)?;
    Ok(KeyToken {
        org: org_id.to_owned(),
        id: hex(&id),
        h: algorithm.name().to_owned(),
    }
    .encode())
}

/// The key for a custom key id (`POST /tyk/keys/{id}`, basic-auth usernames): the id with any
/// leading org id removed, wrapped in a token for `org_id`, as Tyk does.
pub fn custom_key(org_id: &str, custom_id: &str, algorithm: HashAlgorithm) -> String {
    let id = if org_id.is_empty() {
        custom_id
    } else {
        custom_id
            .strip_prefix(org_id)
            .filter(|s| !s.is_empty())
            .unwrap_or(custom_id)
    };
    KeyToken {
        org: org_id.to_owned(),
        id: id.to_owned(),
        h: algorithm.name().to_owned(),
    }
    .encode()
}

/// The hash a key is stored under: the algorithm a token names, else `default`.
pub fn key_hash(key: &str, default: HashAlgorithm) -> String {
    let algorithm = KeyToken::decode(key)
        .and_then(|t| HashAlgorithm::from_name(&t.h))
        .unwrap_or(default);
    algorithm.hash(key.as_bytes())
}

/// How keys map to the ids they are stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHashing {
    /// Store by hash (`hash_keys`); otherwise by the raw key.
    pub hash_keys: bool,
    /// The default hash function.
    pub algorithm: HashAlgorithm,
}

impl KeyHashing {
    /// The id a key is stored under.
    pub fn storage_id(&self, key: &str) -> String {
        if self.hash_keys {
            key_hash(key, self.algorithm)
        } else {
            key.to_owned()
        }
    }

    /// The hash of a key (shown as `key_hash` even where keys are stored raw).
    pub fn hash(&self, key: &str) -> String {
        key_hash(key, self.algorithm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_into_writes_two_digits_a_byte() {
        let mut out = [0u8; 8];
        hex_into(&mut out, &0x1234_abcd_u32.to_be_bytes());
        assert_eq!(&out, b"1234abcd");
        let mut out = [0u8; 4];
        hex_into(&mut out, &[0x0a, 0x0b, 0xff]);
        assert_eq!(&out, b"0a0b");
    }

    #[test]
    fn golden_vectors() {
        assert_eq!(HashAlgorithm::Murmur32.hash(b"hello"), "248bfa47");
        assert_eq!(
            HashAlgorithm::Sha256.hash(b"hello"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        // Lengths Tyk's TestHashKeyHandler asserts.
        assert_eq!(HashAlgorithm::Murmur64.hash(b"k").len(), 16);
        assert_eq!(HashAlgorithm::Murmur128.hash(b"k").len(), 32);
        assert_eq!(HashAlgorithm::from_config("wrong"), HashAlgorithm::Murmur64);
        assert_eq!(HashAlgorithm::from_config(""), HashAlgorithm::Sha256);
    }

    #[test]
    fn murmur128_starts_with_murmur64() {
        let m64 = HashAlgorithm::Murmur64.hash(b"some key");
        let m128 = HashAlgorithm::Murmur128.hash(b"some key");
        assert!(m128.starts_with(&m64));
    }

    #[test]
    fn generated_keys_are_tokens_with_128_random_bits() {
        let a = generate_key("org1", HashAlgorithm::Sha256).unwrap();
        let b = generate_key("org1", HashAlgorithm::Sha256).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("ey"));
        let t = KeyToken::decode(&a).unwrap();
        assert_eq!(t.org, "org1");
        assert_eq!(t.h, "sha256");
        assert_eq!(t.id.len(), 32);
    }

    #[test]
    fn token_format_matches_tyk() {
        let t = KeyToken {
            org: "o".into(),
            id: "i".into(),
            h: "murmur64".into(),
        };
        assert_eq!(
            STANDARD.decode(t.encode()).unwrap(),
            br#"{"org":"o","id":"i","h":"murmur64"}"#
        );
    }

    #[test]
    fn custom_keys_strip_the_org_prefix() {
        let a = custom_key("org", "orgalice", HashAlgorithm::Sha256);
        let b = custom_key("org", "alice", HashAlgorithm::Sha256);
        assert_eq!(a, b);
        assert_eq!(KeyToken::decode(&a).unwrap().id, "alice");
    }

    #[test]
    fn near_miss_keys_hash_differently() {
        let key = generate_key("org", HashAlgorithm::Murmur32).unwrap();
        let h = key_hash(&key, HashAlgorithm::Sha256);
        for miss in [
            format!("{key}abc"),
            format!("x{key}"),
            key[..key.len() - 1].to_owned(),
        ] {
            assert_ne!(key_hash(&miss, HashAlgorithm::Sha256), h);
        }
    }
}
