//! Tyk classic API definitions.
//!
//! Two models, converted in one place: [`model::ApiDefinition`] is the JSON operators write
//! (Tyk's field names, tolerant of everything we do not use yet, kept verbatim for the admin
//! API), and [`ApiSpec`] is the validated, typed form the proxy compiles its routes from.
//! [`load_dir`] reads a folder of definition files, reporting each broken file with its name and
//! field while the others still load.

pub mod client_certs;
mod endpoints;
mod ip;
pub mod jwt;
mod load;
pub mod model;
pub mod pg;
mod spec;
mod transport;
mod unsupported;
mod uptime;
mod versioning;

pub use ip::IpList;
pub use load::{ApiSource, LoadOptions, LoadOutcome, LoadedApi, load_dir, load_rows};
pub use spec::{ApiSpec, AuthMode, CredentialSource, HmacRules, LoadBalancing, Scheme, Target};
pub use tollgate_rules::endpoints::MatchOptions;
pub use uptime::{DEFAULT_CHECK_TIMEOUT, UptimeCheck, UptimeTests};
pub use versioning::{ApiVersion, DefaultVersion, VersionLocation, Versioning};

/// Why one API definition was rejected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{}{message}", origin_prefix(.origin), field_prefix(.field))]
pub struct DefinitionError {
    /// Where it came from (a file path, or a database row), when known.
    pub origin: Option<String>,
    /// Dotted path of the offending field (`.` for the whole document).
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// `message` is the text of one of Tyk's own validation rules (see
    /// [`DefinitionError::reason`]).
    tyk_rule: bool,
}

fn field_prefix(field: &str) -> String {
    if field == "." {
        String::new()
    } else {
        format!("field `{field}`: ")
    }
}

fn origin_prefix(origin: &Option<String>) -> String {
    origin
        .as_ref()
        .map(|o| format!("API definition {o}: "))
        .unwrap_or_default()
}

impl DefinitionError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            origin: None,
            field: field.into(),
            message: message.into(),
            tyk_rule: false,
        }
    }

    /// A refusal Tyk's own validator makes too, with Tyk's message: clients of the admin API
    /// that match on Tyk's text see the same words (see [`DefinitionError::reason`]).
    pub(crate) fn tyk_rule(field: impl Into<String>, message: &'static str) -> Self {
        Self {
            tyk_rule: true,
            ..Self::new(field, message)
        }
    }

    /// The reason as the admin API words it after `Validation of API Definition failed.
    /// Reason: `: Tyk's own message for the rules Tyk's validator has, else the field and
    /// what is wrong with it.
    pub fn reason(&self) -> String {
        if self.tyk_rule {
            self.message.clone()
        } else {
            format!("{}{}", field_prefix(&self.field), self.message)
        }
    }

    pub(crate) fn at(mut self, source: &ApiSource) -> Self {
        self.origin = Some(source.to_string());
        self
    }
}

impl From<tollgate_rules::RuleError> for DefinitionError {
    fn from(err: tollgate_rules::RuleError) -> Self {
        Self::new(err.field, err.message)
    }
}
