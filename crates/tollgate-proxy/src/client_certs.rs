//! Mutual TLS (Tyk's certificate check, `use_mutual_tls_auth`): only a client that presented,
//! in the TLS handshake, one of the API's `client_certificates` (compared by SHA-256) gets
//! past this stage, which runs right after the IP lists and before any other authentication.

use std::sync::Arc;

use tollgate_definitions::client_certs::ClientCertRules;
use tollgate_session::custom_key;
use tollgate_session::time::unix_now;
use tollgate_tls::client_auth::ClientCert;

use crate::ctx::{RequestCtx, StageRequest};
use crate::refusal::{Refusal, RefusalKind};

/// The client's certificate, if it presented one that is still valid.
fn presented(req: &StageRequest<'_>) -> Result<ClientCert, Refusal> {
    // No TLS at all (a plain listener) is the same as no certificate.
    let cert = req.client_cert.ok_or(RefusalKind::ClientCertRequired)?;
    if cert.not_after.is_none_or(|t| t < unix_now()) {
        return Err(RefusalKind::ClientCertExpired.into());
    }
    Ok(cert)
}

/// Certificate-bound keys (`auth.use_certificate`): the key is the one made for the client
/// certificate (Tyk's custom key `<org_id>` + the certificate's SHA-256 in hex); the request
/// carries no token.
#[derive(Debug)]
pub(crate) struct CertKeyAuth;

impl CertKeyAuth {
    pub(crate) async fn on_request(
        req: &mut StageRequest<'_>,
        cx: &mut RequestCtx,
    ) -> Result<(), Refusal> {
        let cert = presented(req)?;
        let hex = tollgate_session::hex(&cert.fingerprint);
        let hashing = req.sessions.hashing();
        let storage_id = hashing.storage_id(&custom_key(&req.api.org_id, &hex, hashing.algorithm));
        let entry = req
            .sessions
            .get(&storage_id)
            .await
            .map_err(|_| Refusal::store_unavailable())?
            .ok_or(RefusalKind::ClientCertNotAllowed)?;
        let active = req
            .sessions
            .active(&entry)
            .map_err(|_| RefusalKind::ApiDisallowed)?;
        cx.key = Some(active);
        cx.key_id = Some(entry.storage_id.clone());
        Ok(())
    }
}

/// The client-certificate check of one API.
#[derive(Debug)]
pub(crate) struct ClientCertCheck {
    pub(crate) rules: Arc<ClientCertRules>,
}

impl ClientCertCheck {
    pub(crate) fn on_request(&self, req: &StageRequest<'_>) -> Result<(), Refusal> {
        let cert = presented(req)?;
        if !self.rules.allowed.contains(&cert.fingerprint) {
            return Err(RefusalKind::ClientCertNotAllowed.into());
        }
        Ok(())
    }
}
