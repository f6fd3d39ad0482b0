//! HMAC request signatures (Tyk's `enable_signature_checking`): the request names its key
//! (`keyId`) and proves it holds the key's `hmac_string` by signing the listed headers. Every
//! failure answers Tyk's one 400, so a caller learns nothing about which check failed; the
//! log line says (never the secret or the signature).

use tollgate_auth::hmac::{self, HmacError, SignatureParams};
use tollgate_definitions::HmacRules;
use tollgate_session::time::unix_now_ms;

use crate::auth::CredentialUse;
use crate::ctx::{RequestCtx, StageRequest};
use crate::percent::{self, Plus};
use crate::refusal::{Refusal, RefusalKind};

/// The HMAC stage of one API.
#[derive(Debug)]
pub(crate) struct HmacAuth {
    pub(crate) credential: CredentialUse,
    pub(crate) rules: HmacRules,
}

impl HmacAuth {
    pub(crate) async fn on_request(
        &self,
        req: &mut StageRequest<'_>,
        cx: &mut RequestCtx,
    ) -> Result<(), Refusal> {
        let refused = |why: HmacError| {
            tracing::info!(reason = %why, "HMAC signature refused");
            Refusal::new(RefusalKind::HmacInvalid)
        };
        let found = self
            .credential
            .find(req.head, || RefusalKind::HmacInvalid.into())?;
        let params = SignatureParams::parse(&found.raw).map_err(refused)?;
        if !self.rules.algorithms.is_empty() && !self.rules.algorithms.contains(&params.algorithm) {
            return Err(refused(HmacError::Algorithm));
        }
        let entry = req
            .sessions
            .find(&params.key_id, &req.api.org_id)
            .await
            .map_err(|_| Refusal::store_unavailable())?
            .ok_or_else(|| refused(HmacError::Mismatch))?;
        // Under its policies: a policy with `hmac_enabled` makes its keys sign.
        let active = req
            .sessions
            .active(&entry)
            .map_err(|_| RefusalKind::ApiDisallowed)?;
        let session = &active.session;
        if !session.hmac_enabled || session.hmac_string.is_empty() {
            return Err(refused(HmacError::Mismatch));
        }
        let signed = hmac::signing_string(
            &params,
            req.head.method.as_str(),
            req.head.uri.path(),
            &req.head.headers,
        );
        // Clients send the base64 query-escaped (`%2B`, `%3D`), in either case; `+` is base64.
        let signature = percent::decode(&params.signature, Plus::Literal);
        if !hmac::verify(
            params.algorithm,
            session.hmac_string.as_bytes(),
            &signed,
            &signature,
        ) {
            return Err(refused(HmacError::Mismatch));
        }
        if !hmac::date_within(&req.head.headers, unix_now_ms(), self.rules.clock_skew_ms) {
            return Err(refused(HmacError::Date));
        }
        let location = found.location;
        self.credential
            .admit(req, cx, location, active, &entry.storage_id);
        Ok(())
    }
}
