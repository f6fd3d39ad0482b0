//! Basic-auth passwords: hashed when a key is stored, verified in constant time.

use subtle::ConstantTimeEq;

use crate::HashAlgorithm;
use crate::session::BasicAuthData;

/// bcrypt's cost, as Tyk uses (`bcrypt.DefaultCost`).
const BCRYPT_COST: u32 = 10;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the basic auth password: {0}")]
pub struct PasswordError(String);

/// Replaces a plain password with its hash (`basic_auth_hash_key_function`, default bcrypt).
/// Data already hashed (a non-empty `hash_type`) is left alone.
///
/// # Errors
/// bcrypt failed.
pub fn hash_password(data: &mut BasicAuthData, function: &str) -> Result<(), PasswordError> {
    if !data.hash_type.is_empty() || data.password.is_empty() {
        return Ok(());
    }
    let (hash, kind) = match function {
        "" | "bcrypt" => (
            bcrypt::hash(&data.password, BCRYPT_COST).map_err(|e| PasswordError(e.to_string()))?,
            "bcrypt",
        ),
        other => {
            let alg = HashAlgorithm::from_name(other).unwrap_or(HashAlgorithm::Sha256);
            (alg.hash(data.password.as_bytes()), alg.name())
        }
    };
    data.password = hash;
    data.hash_type = kind.to_owned();
    Ok(())
}

/// Checks a presented password against stored data. bcrypt is deliberately slow (milliseconds):
/// callers keep it off the request thread and cache successes.
pub fn verify_password(data: &BasicAuthData, presented: &str) -> bool {
    match data.hash_type.as_str() {
        "" => presented.as_bytes().ct_eq(data.password.as_bytes()).into(),
        "bcrypt" => bcrypt::verify(presented, &data.password).unwrap_or(false),
        other => HashAlgorithm::from_name(other).is_some_and(|alg| {
            alg.hash(presented.as_bytes())
                .as_bytes()
                .ct_eq(data.password.as_bytes())
                .into()
        }),
    }
}

/// True when verifying this data is expensive enough to be worth caching.
pub fn is_slow(data: &BasicAuthData) -> bool {
    data.hash_type == "bcrypt"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for function in ["bcrypt", "sha256", "murmur64", "murmur128"] {
            let mut d = BasicAuthData {
                password: "s3cret".into(),
                hash_type: String::new(),
            };
            hash_password(&mut d, function).unwrap();
            assert_ne!(d.password, "s3cret");
            assert!(verify_password(&d, "s3cret"), "{function}");
            assert!(!verify_password(&d, "s3cret!"), "{function}");
        }
        let plain = BasicAuthData {
            password: "p".into(),
            hash_type: String::new(),
        };
        assert!(verify_password(&plain, "p"));
        assert!(!verify_password(&plain, "q"));
    }
}
