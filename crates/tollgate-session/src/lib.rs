//! Sessions: what a key maps to, how keys are made and hashed, and how policies shape them.
//!
//! Pure logic with no I/O, so it is tested without a runtime. Storage lives in
//! `tollgate-storage`; the request-time checks live in the proxy's stage chain.

pub mod access;
mod hashing;
pub mod keyspace;
mod password;
pub mod policy;
pub mod session;
pub mod time;

pub use access::{Access, ActiveKey, LimitPlan, Throttle};
pub use hashing::{
    HashAlgorithm, KeyHashing, KeyToken, custom_key, generate_key, hex, hex_into, key_hash,
};
pub use password::{PasswordError, hash_password, is_slow, verify_password};
pub use policy::{Policy, PolicyError, PolicySet};
pub use session::{AccessDefinition, AccessSpec, ApiLimit, BasicAuthData, SessionState};
