use std::path::PathBuf;

/// A TLS setting or file the gateway cannot use. Each names the configuration field it came
/// from, so the operator knows which line to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("{field}: cannot read {}: {source}", path.display())]
    Read {
        /// The configuration field that named the file.
        field: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no PEM certificate.
    #[error("{field}: {} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The configuration field that named the file.
        field: String,
        /// The file.
        path: PathBuf,
    },
    /// A file holds no PEM private key.
    #[error("{field}: {} holds no PEM private key", path.display())]
    NoKey {
        /// The configuration field that named the file.
        field: String,
        /// The file.
        path: PathBuf,
    },
    /// A file holds broken PEM.
    #[error("{field}: {}: {message}", path.display())]
    BadPem {
        /// The configuration field that named the file.
        field: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The key does not belong to the certificate it is paired with.
    #[error("{field}: the private key does not belong to the certificate in {}", cert.display())]
    KeyMismatch {
        /// The configuration field of the pair.
        field: String,
        /// The certificate file.
        cert: PathBuf,
    },
    /// A setting's value is not one the gateway can honour.
    #[error("{field}: {message}")]
    Setting {
        /// The configuration field.
        field: String,
        /// What is wrong with its value.
        message: String,
    },
    /// rustls refused the assembled configuration.
    #[error("{field}: {source}")]
    Rustls {
        /// The configuration field the configuration was built for.
        field: String,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
}

impl TlsError {
    pub(crate) fn setting(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Setting {
            field: field.into(),
            message: message.into(),
        }
    }
}
