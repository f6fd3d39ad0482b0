//! Why an admin call failed. Each variant is one status and Tyk's message; causes that must
//! not reach the caller (file paths, database errors) are kept as sources for the log.

use std::borrow::Cow;

use http::StatusCode;
use tollgate_definitions::pg::PgError;
use tollgate_storage::StoreError;

use crate::reply::{Reply, status_reply};

/// A failed admin call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// The body is not a JSON object of the expected shape.
    #[error("Request malformed")]
    Malformed,
    /// The request is understood but not acceptable.
    #[error("{0}")]
    Invalid(Cow<'static, str>),
    /// What the URL names does not exist.
    #[error("{0}")]
    NotFound(&'static str),
    /// The method is not served on this path.
    #[error("Method not supported")]
    MethodNotAllowed,
    /// The secret header is missing or wrong.
    #[error("Attempted administrative access with invalid or missing key!")]
    Forbidden,
    /// The id is taken.
    #[error("{0}")]
    Conflict(&'static str),
    /// The key store cannot be reached: nothing was changed.
    #[error("Key store unavailable, nothing was changed")]
    StoreUnavailable(#[source] StoreError),
    /// The definitions database cannot be reached: nothing was changed.
    #[error("API definitions database unavailable, nothing was changed")]
    DatabaseUnavailable(#[source] PgError),
    /// Writing a definition file failed (the old file, if any, is intact).
    #[error("Unable to write the API definition")]
    WriteFailed {
        /// The definition file.
        file: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gateway could not do what was asked; the message says what.
    #[error("{message}")]
    Internal {
        /// Tyk's message.
        message: Cow<'static, str>,
        /// The cause, for the log.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl AdminError {
    /// A 500 with Tyk's message and the cause for the log.
    pub(crate) fn internal(
        message: impl Into<Cow<'static, str>>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Internal {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The status Tyk answers with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Malformed | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::StoreUnavailable(_) | Self::DatabaseUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::WriteFailed { .. } | Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `{"status": "error", "message": ...}`, after logging what the caller is not shown.
    pub(crate) fn into_reply(self) -> Reply {
        match &self {
            Self::StoreUnavailable(e) => {
                tracing::warn!(error = %e, "key store unavailable for an admin call");
            }
            Self::DatabaseUnavailable(e) => {
                tracing::error!(error = %e, "writing an API definition to the database failed");
            }
            Self::WriteFailed { file, source } => {
                tracing::error!(file = %file.display(), error = %source, "writing an API definition failed");
            }
            Self::Internal {
                message,
                source: Some(source),
            } => tracing::error!(error = %source, "{message}"),
            _ => {}
        }
        status_reply(self.status(), "error", &self.to_string())
    }
}

/// A store failure on an admin write: unreachable is a 503 (retry), anything else a 500 with
/// the message Tyk gives for that operation.
pub(crate) fn store_failure(err: StoreError, message: &'static str) -> AdminError {
    match err {
        e @ StoreError::Unavailable(_) => AdminError::StoreUnavailable(e),
        e => AdminError::internal(message, e),
    }
}
