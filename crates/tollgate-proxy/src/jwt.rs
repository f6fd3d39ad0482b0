//! JWT authentication: a verified token becomes a key, as in Tyk. Each identity (the token's
//! `jwt_identity_base_field`, else `sub`) gets one session, stored under the key Tyk gives it
//! (org + MD5 of the identity), made on first use from the policy the token names
//! (`jwt_policy_field_name`) or the API's `jwt_default_policies`, and moved to another policy
//! when a later token names one. Rate limits and quotas then count per identity, like any key.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};
use tollgate_auth::{JwtError, JwtSettings, jwt};
use tollgate_session::time::unix_now;
use tollgate_session::{SessionState, custom_key};

use crate::auth::CredentialUse;
use crate::ctx::{RequestCtx, StageRequest};
use crate::refusal::{Refusal, RefusalKind};

/// The JWT stage of one API.
#[derive(Debug)]
pub(crate) struct JwtAuth {
    pub(crate) credential: CredentialUse,
    pub(crate) settings: Arc<JwtSettings>,
}

impl JwtAuth {
    pub(crate) async fn on_request(
        &self,
        req: &mut StageRequest<'_>,
        cx: &mut RequestCtx,
    ) -> Result<(), Refusal> {
        let found = self
            .credential
            .find(req.head, || RefusalKind::JwtMissing.into())?;
        let now = unix_now();
        if self.settings.is_per_key() {
            let (token, location) = (found.value.into_owned(), found.location);
            return self.per_key(req, cx, &token, location, now).await;
        }
        let claims = self
            .settings
            .verify(&found.value, u64::try_from(now).unwrap_or(0))
            .await
            .map_err(refusal)?;
        let identity = jwt::identity(&claims, &self.settings.identity_field).map_err(refusal)?;
        let hashing = req.sessions.hashing();
        let key = custom_key(
            &req.api.org_id,
            &jwt::session_key_id(identity),
            hashing.algorithm,
        );
        let storage_id = hashing.storage_id(&key);
        let stored = req
            .sessions
            .get(&storage_id)
            .await
            .map_err(|_| Refusal::store_unavailable())?;
        let client_policy = self.client_policy(req, &claims).await?;
        let wanted = self.policies(&claims, stored.is_some(), client_policy.as_deref())?;
        let policies = req.sessions.policy_set();
        // A policy of another organisation must not grant rights here, as in Tyk.
        let known = |id: &String| {
            policies
                .get(id)
                .is_some_and(|p| p.org_id == *req.api.org_id)
        };
        if !wanted.iter().all(known) {
            return Err(RefusalKind::JwtPolicyUnknown.into());
        }
        // The session lives as long as the token passes: `exp` plus its skew (Tyk stops at
        // `exp`, so a token inside its skew was refused as an expired key there).
        let skew = i64::try_from(self.settings.skews().expires_at).unwrap_or(i64::MAX);
        let token_expires = claims
            .get("exp")
            .and_then(Value::as_f64)
            .map(|f| (f as i64).saturating_add(skew));
        let entry = match stored {
            Some(entry) => match updated(&entry.stored, &wanted, token_expires) {
                None => entry,
                Some(session) => req
                    .sessions
                    .put(&storage_id, session)
                    .await
                    .map_err(|_| Refusal::store_unavailable())?,
            },
            None => {
                let mut session = SessionState {
                    org_id: req.api.org_id.to_string(),
                    apply_policies: wanted.into_owned(),
                    alias: identity.to_owned(),
                    meta_data: Map::from_iter([(
                        "TykJWTSessionID".to_owned(),
                        Value::String(key.clone()),
                    )]),
                    ..SessionState::default()
                };
                let lifetime = policies.key_expires_in(&session);
                if lifetime > 0 {
                    session.expires = now + lifetime;
                }
                if let Some(exp) = token_expires {
                    session.expires = session.expires.max(exp);
                }
                req.sessions
                    .put(&storage_id, session)
                    .await
                    .map_err(|_| Refusal::store_unavailable())?
            }
        };
        let location = found.location;
        self.credential.admit_entry(req, cx, location, &entry)
    }
}

impl JwtAuth {
    /// Tyk's mode without `jwt_source`: the token names a key (`kid`, else its identity),
    /// and must verify with that key's own `jwt_data.secret`; the key's session is used as it
    /// is. Every failure is Tyk's `Key not authorized`.
    async fn per_key(
        &self,
        req: &mut StageRequest<'_>,
        cx: &mut RequestCtx,
        token: &str,
        location: crate::auth::Location,
        now: i64,
    ) -> Result<(), Refusal> {
        let key_id = self
            .settings
            .key_id(token, self.settings.skip_kid)
            .map_err(refusal)?;
        let entry = req
            .sessions
            .find(&key_id, &req.api.org_id)
            .await
            .map_err(|_| Refusal::store_unavailable())?
            .ok_or(RefusalKind::JwtInvalid)?;
        let secret = entry
            .stored
            .jwt_secret()
            .ok_or(RefusalKind::JwtInvalid)?
            .to_owned();
        self.settings
            .verify_with_secret(token, secret.as_bytes(), u64::try_from(now).unwrap_or(0))
            .await
            .map_err(refusal)?;
        self.credential.admit_entry(req, cx, location, &entry)
    }

    /// `jwt_client_base_field` (read only without `jwt_policy_field_name`, as in Tyk): the
    /// claim names a key (an OAuth client's, say), whose first policy the token's session
    /// gets. A key that does not exist, or has no policy, names none.
    async fn client_policy(
        &self,
        req: &StageRequest<'_>,
        claims: &serde_json::Map<String, Value>,
    ) -> Result<Option<String>, Refusal> {
        let settings = &self.settings;
        if !settings.policy_field.is_empty() || settings.client_field.is_empty() {
            return Ok(None);
        }
        let Some(Value::String(client)) = claims.get(&settings.client_field) else {
            return Ok(None);
        };
        let entry = req
            .sessions
            .find(client, &req.api.org_id)
            .await
            .map_err(|_| Refusal::store_unavailable())?;
        Ok(entry.and_then(|e| e.stored.policy_ids().first().map(|p| (*p).to_owned())))
    }

    /// The policies the session is to have, as Tyk picks them: the one the token names, else
    /// the API's defaults; with a scope mapping, the token's scopes mapped to policies (on top
    /// of a named policy, instead of the defaults).
    fn policies(
        &self,
        claims: &serde_json::Map<String, Value>,
        exists: bool,
        client_policy: Option<&str>,
    ) -> Result<Cow<'_, [String]>, Refusal> {
        let settings = &self.settings;
        let named = jwt::policy(claims, &settings.policy_field).or(client_policy);
        // The defaults are borrowed: most tokens of a default-policy API name none.
        let mut wanted: Cow<'_, [String]> = match named {
            Some(named) => Cow::Owned(vec![named.to_owned()]),
            None => Cow::Borrowed(&settings.default_policies),
        };
        if !settings.scope_policies.is_empty() {
            let scopes = jwt::scopes(claims, &settings.scope_claim);
            if !scopes.is_empty() {
                let mut ids: Vec<String> = named.map(str::to_owned).into_iter().collect();
                for scope in scopes {
                    if let Some(p) = settings.scope_policies.get(scope)
                        && !ids.contains(p)
                    {
                        ids.push(p.clone());
                    }
                }
                if ids.is_empty() {
                    return Err(RefusalKind::JwtNoScopePolicy.into());
                }
                wanted = Cow::Owned(ids);
            } else if wanted.is_empty() && exists {
                // A token without scopes must not keep the rights an earlier one's gave.
                return Err(RefusalKind::JwtNoScopeOrPolicy.into());
            }
        }
        if wanted.is_empty() {
            return Err(RefusalKind::JwtNoPolicy.into());
        }
        Ok(wanted)
    }
}

/// The session with the token's policies and a later expiry, when either changes it.
fn updated(
    session: &SessionState,
    wanted: &[String],
    token_expires: Option<i64>,
) -> Option<SessionState> {
    let same_policies = session.apply_policies.len() == wanted.len()
        && wanted.iter().all(|p| session.apply_policies.contains(p));
    let later = token_expires.filter(|exp| *exp > session.expires);
    if same_policies && later.is_none() {
        return None;
    }
    let mut session = session.clone();
    if !same_policies {
        session.apply_policies = wanted.to_vec();
    }
    if let Some(exp) = later {
        session.expires = exp;
    }
    Some(session)
}

fn refusal(e: JwtError) -> Refusal {
    Refusal::new(match e {
        JwtError::Malformed | JwtError::NoKey | JwtError::BadSignature => RefusalKind::JwtInvalid,
        JwtError::UnexpectedSigningMethod => RefusalKind::JwtUnexpectedSigningMethod,
        JwtError::Expired => RefusalKind::JwtExpired,
        JwtError::UsedBeforeIssued => RefusalKind::JwtUsedBeforeIssued,
        JwtError::NotValidYet => RefusalKind::JwtNotValidYet,
        JwtError::NoIdentity => RefusalKind::JwtNoIdentity,
        JwtError::EmptySub => RefusalKind::JwtEmptySub,
        JwtError::EmptyBaseField => RefusalKind::JwtEmptyIdentity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_changes_only_for_other_policies_or_a_later_expiry() {
        let s = SessionState {
            apply_policies: vec!["a".into(), "b".into()],
            expires: 100,
            ..SessionState::default()
        };
        assert!(updated(&s, &["b".into(), "a".into()], Some(50)).is_none());
        let moved = updated(&s, &["c".into()], None).unwrap();
        assert_eq!(moved.apply_policies, ["c"]);
        assert_eq!(moved.expires, 100);
        let longer = updated(&s, &["a".into(), "b".into()], Some(200)).unwrap();
        assert_eq!(longer.expires, 200);
    }
}
