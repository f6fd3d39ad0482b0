//! Mutual TLS (Tyk's certificate check, `use_mutual_tls_auth`): only a client that presented,
//! in the TLS handshake, one of the API's `client_certificates` (compared by SHA-256) gets
//! past this stage, which runs right after the IP lists and before any other authentication.

use std::sync::Arc;

use tollgate_definitions::client_certs::ClientCertRules;
use tollgate_session::time::unix_now;

use crate::ctx::StageRequest;
use crate::refusal::{Refusal, RefusalKind};

/// The client-certificate check of one API.
#[derive(Debug)]
pub(crate) struct ClientCertCheck {
    pub(crate) rules: Arc<ClientCertRules>,
}

impl ClientCertCheck {
    pub(crate) fn on_request(&self, req: &StageRequest<'_>) -> Result<(), Refusal> {
        // No TLS at all (a plain listener) is the same as no certificate.
        let Some(cert) = req.client_cert else {
            return Err(RefusalKind::ClientCertRequired.into());
        };
        if cert.not_after.is_none_or(|t| t < unix_now()) {
            return Err(RefusalKind::ClientCertExpired.into());
        }
        if !self.rules.allowed.contains(&cert.fingerprint) {
            return Err(RefusalKind::ClientCertNotAllowed.into());
        }
        Ok(())
    }
}
