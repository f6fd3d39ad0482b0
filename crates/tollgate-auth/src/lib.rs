//! Authentication methods beyond auth tokens, each compiled once when an API definition loads
//! and asked per request by the proxy's stage for it.
//!
//! - [`jwt`]: Tyk's JWT authentication (`enable_jwt`), with the verification key from
//!   `jwt_source`: a secret, a PEM public key or certificate, or a JWKS URL ([`jwks`]).
//! - [`hmac`]: Tyk's HMAC request signatures (`enable_signature_checking`).
//!
//! What a verified token turns into (a session from policies, rate limits, quotas) is the
//! proxy's business: this crate only decides whether a token is genuine and valid now, and
//! what it says.

pub mod hmac;
pub mod jwks;
pub mod jwt;

pub use jwt::{JwtError, JwtSettings, SigningMethod};
