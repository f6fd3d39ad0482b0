//! Tyk classic API definitions.
//!
//! Two models, converted in one place: [`model::ApiDefinition`] is the JSON operators write
//! (Tyk's field names, tolerant of everything we do not use yet, kept verbatim for the admin
//! API), and [`ApiSpec`] is the validated, typed form the proxy compiles its routes from.
//! [`load_dir`] reads a folder of definition files, reporting each broken file with its name and
//! field while the others still load.

mod load;
pub mod model;
mod spec;

pub use load::{LoadOutcome, LoadedApi, load_dir};
pub use spec::{ApiSpec, AuthMode, CredentialSource, Scheme, Target};

use std::path::PathBuf;

/// Why one API definition was rejected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{}{message}", source_prefix(.file), field_prefix(.field))]
pub struct DefinitionError {
    /// The file it came from, when it came from a file.
    pub file: Option<PathBuf>,
    /// Dotted path of the offending field (`.` for the whole document).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn field_prefix(field: &str) -> String {
    if field == "." {
        String::new()
    } else {
        format!("field `{field}`: ")
    }
}

fn source_prefix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!("API definition {}: ", f.display()))
        .unwrap_or_default()
}

impl DefinitionError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: None,
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn in_file(mut self, file: PathBuf) -> Self {
        self.file = Some(file);
        self
    }
}
