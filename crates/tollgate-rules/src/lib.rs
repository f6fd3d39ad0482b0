//! The traffic rules of a Tyk classic API definition.
//!
//! Everything here is compiled once when a definition loads (regexes, origin patterns,
//! dates) and then only read: the proxy's stages ask pure questions of it (which version,
//! which endpoint rule, which CORS headers, has it expired) with no I/O and no allocation
//! where it can be avoided. A rule that cannot be compiled is a [`RuleError`] naming the
//! field, which the definitions crate reports with the file and skips that definition.

pub mod cors;
pub mod endpoints;
pub mod expiry;
pub mod headers;
pub mod percent;
pub mod rewrite;
pub mod template;
pub mod version;

/// Why a rule of a definition cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct RuleError {
    /// Dotted path of the offending field, from the definition's root.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl RuleError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
