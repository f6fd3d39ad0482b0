//! `/tyk/keys`: create, read, update, delete and list keys, with Tyk's bodies and messages.
//!
//! Writes are acknowledged only once the store has them durably. A request that fails
//! validation stores nothing.

use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tollgate_proxy::Gateway;
use tollgate_session::time::{rfc3339_utc, unix_now};
use tollgate_session::{KeyToken, SessionState, custom_key, generate_key, hash_password};
use tollgate_storage::KeyEntry;

use crate::error::{AdminError, store_failure};
use crate::reply::{Reply, json_reply};
use crate::{query_flag, query_value, read_json};

/// Tyk's message for a key that cannot be prepared or generated.
fn create_failed(
    e: impl std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
) -> AdminError {
    let message = format!("Failed to create key - {e}");
    AdminError::internal(message, e)
}

fn modified(key: &str, action: &str, key_hash: Option<&str>) -> Reply {
    let mut body = serde_json::json!({"key": key, "status": "ok", "action": action});
    if let Some(h) = key_hash {
        body["key_hash"] = serde_json::Value::String(h.to_owned());
    }
    json_reply(StatusCode::OK, &body)
}

async fn read_session(req: Request<Incoming>) -> Result<SessionState, AdminError> {
    let doc = read_json(req).await.ok_or(AdminError::Malformed)?;
    serde_json::from_value(doc).map_err(|_| AdminError::Malformed)
}

/// Fills the fields a new or updated key carries and checks it can be used.
fn prepare(
    gateway: &Gateway,
    session: &mut SessionState,
    created: Option<&SessionState>,
) -> Result<(), AdminError> {
    let now = unix_now();
    match created {
        Some(old) if !old.date_created.is_empty() => {
            session.date_created.clone_from(&old.date_created)
        }
        _ if session.date_created.is_empty() => session.date_created = rfc3339_utc(now),
        _ => {}
    }
    session.last_updated = now.to_string();
    if session.quota_renewal_rate > 0 {
        session.quota_renews = now + session.quota_renewal_rate;
    }
    session.quota_remaining = session.quota_max;

    // An update that sends no password keeps the stored one.
    if let Some(old) = created
        && session.basic_auth_data.password.is_empty()
    {
        session.basic_auth_data = old.basic_auth_data.clone();
    }
    let keys = &gateway.config.keys;
    hash_password(
        &mut session.basic_auth_data,
        &keys.basic_auth_hash_key_function,
    )
    .map_err(create_failed)?;

    let policies = gateway.sessions.policy_set();
    if created.is_none() {
        let lifetime = policies.key_expires_in(session);
        if lifetime > 0 {
            session.expires = now + lifetime;
        }
    }
    let policy_signs = if session.policy_ids().is_empty() {
        if session.access_rights.is_empty() && !keys.allow_master_keys {
            return Err(AdminError::Invalid(
                "Failed to create key, keys must have at least one Access Rights record set."
                    .into(),
            ));
        }
        false
    } else {
        policies.apply(session).map_err(create_failed)?.hmac_enabled
    };
    let signs = session.hmac_enabled || policy_signs;
    if signs && session.hmac_string.is_empty() {
        // Tyk's behaviour: the gateway makes the secret (for a key whose own flag or a
        // policy's asks for signatures); the key's owner reads it from `GET /tyk/keys/{key}`.
        session.hmac_string = match created {
            Some(old) if !old.hmac_string.is_empty() => old.hmac_string.clone(),
            _ => tollgate_auth::hmac::new_secret()
                .map_err(|_| create_failed("the random source failed"))?,
        };
    }
    Ok(())
}

async fn store(
    gateway: &Gateway,
    id: &str,
    session: SessionState,
) -> Result<Arc<KeyEntry>, AdminError> {
    gateway.sessions.put(id, session).await.map_err(|e| {
        store_failure(
            e,
            "Failed to create key, ensure security settings are correct.",
        )
    })
}

/// Resets a key's counters (a failure is logged: the key change itself already happened).
async fn reset_counters(gateway: &Gateway, entry: &KeyEntry) {
    if let Ok(active) = gateway.sessions.active(entry)
        && let Err(e) = gateway.sessions.counters().reset_key(&active).await
    {
        tracing::warn!(error = %e, "resetting a key's counters failed");
    }
}

fn key_hash(gateway: &Gateway, storage_id: &str) -> Option<String> {
    gateway.config.keys.hash_keys.then(|| storage_id.to_owned())
}

/// `POST /tyk/keys/create`, `POST /tyk/keys`: a generated key.
pub(crate) async fn create_generated(
    gateway: &Arc<Gateway>,
    req: Request<Incoming>,
) -> Result<Reply, AdminError> {
    let mut session = read_session(req).await?;
    prepare(gateway, &mut session, None)?;
    let hashing = gateway.sessions.hashing();
    // A key bound to a client certificate is named by it (Tyk's custom key of the
    // certificate id: org id + SHA-256), so the certificate alone finds it.
    let key = match session
        .extra
        .get("certificate")
        .and_then(serde_json::Value::as_str)
        .filter(|c| !c.trim().is_empty())
    {
        Some(certificate) => custom_key(&session.org_id, certificate.trim(), hashing.algorithm),
        None => generate_key(&session.org_id, hashing.algorithm).map_err(create_failed)?,
    };
    let id = hashing.storage_id(&key);
    store(gateway, &id, session).await?;
    Ok(modified(&key, "added", key_hash(gateway, &id).as_deref()))
}

/// `POST /tyk/keys/{key}`: a key with a chosen id.
pub(crate) async fn create_custom(
    gateway: &Arc<Gateway>,
    key: &str,
    req: Request<Incoming>,
) -> Result<Reply, AdminError> {
    let min = gateway.config.keys.min_token_length;
    if key.len() < min {
        return Err(AdminError::Invalid(
            format!(
                "custom key ID length {} is less than min_token_length ({min}); the key would be unreachable at auth time. Use an ID of at least min_token_length characters, or lower min_token_length in the gateway configuration.",
                key.len()
            )
            .into(),
        ));
    }
    let mut session = read_session(req).await?;
    let hashing = gateway.sessions.hashing();
    let token = custom_key(&session.org_id, key, hashing.algorithm);
    let id = hashing.storage_id(&token);
    let existing = gateway
        .sessions
        .get(&id)
        .await
        .map_err(AdminError::StoreUnavailable)?;
    prepare(
        gateway,
        &mut session,
        existing.as_deref().map(|e| &e.stored),
    )?;
    store(gateway, &id, session).await?;
    if let Some(old) = &existing {
        reset_counters(gateway, old).await;
    }
    Ok(modified(key, "added", key_hash(gateway, &id).as_deref()))
}

/// Finds the key an admin URL names: by hash with `?hashed=true`, else as presented, else as
/// a custom id of one of the orgs the gateway serves.
async fn resolve(
    gateway: &Gateway,
    key: &str,
    req: &Request<Incoming>,
) -> Result<Option<Arc<KeyEntry>>, AdminError> {
    let sessions = &gateway.sessions;
    let hashing = sessions.hashing();
    let get = |id: String| async move {
        sessions
            .get(&id)
            .await
            .map_err(AdminError::StoreUnavailable)
    };
    if query_flag(req, "hashed") {
        if !hashing.hash_keys {
            return Err(AdminError::Invalid(
                "Key requested by hash but key hashing is not enabled".into(),
            ));
        }
        return get(key.to_owned()).await;
    }
    if let Some(e) = get(hashing.storage_id(key)).await? {
        return Ok(Some(e));
    }
    if KeyToken::decode(key).is_some() {
        return Ok(None);
    }
    let mut orgs: Vec<String> = Vec::new();
    {
        let routes = gateway.routes();
        if let Some(org) = query_value(req, "org_id") {
            orgs.push(org);
        }
        if let Some(api) = query_value(req, "api_id")
            .and_then(|id| routes.api(&id).map(|a| a.spec.org_id.to_string()))
        {
            orgs.push(api);
        }
        orgs.extend(routes.apis().iter().map(|a| a.spec.org_id.to_string()));
    }
    orgs.push(String::new());
    orgs.sort();
    orgs.dedup();
    for org in orgs {
        let id = hashing.storage_id(&custom_key(&org, key, hashing.algorithm));
        if let Some(e) = get(id).await? {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// The key an admin URL names, or Tyk's not-found message for that call.
async fn existing(
    gateway: &Gateway,
    key: &str,
    req: &Request<Incoming>,
    not_found: &'static str,
) -> Result<Arc<KeyEntry>, AdminError> {
    resolve(gateway, key, req)
        .await?
        .ok_or(AdminError::NotFound(not_found))
}

/// Fills `quota_remaining` / `quota_renews` (key-level and per-API) from the live counters.
async fn show_quota(gateway: &Gateway, entry: &KeyEntry, shown: &mut SessionState) {
    let Ok(active) = gateway.sessions.active(entry) else {
        return;
    };
    let counters = gateway.sessions.counters();
    let now = unix_now();
    let live = |snapshot: Option<tollgate_limits::QuotaSnapshot>, max: i64| match snapshot {
        // A period that has ended counts as renewed.
        Some(s) if s.renews_at_ms == 0 || now.saturating_mul(1000) < s.renews_at_ms => {
            Some(((max - s.used).max(0), s.renews_at()))
        }
        _ => None,
    };
    let plan = active.default_plan();
    if plan.quota_max > 0
        && let Some((remaining, renews)) = live(counters.quota(plan, now).await, plan.quota_max)
    {
        shown.quota_remaining = remaining;
        shown.quota_renews = renews;
    }
    for (api_id, ar) in &mut shown.access_rights {
        let plan = active.plan(api_id);
        if let Some(limit) = ar.limit.as_mut()
            && plan.quota_max > 0
            && let Some((remaining, renews)) = live(counters.quota(plan, now).await, plan.quota_max)
        {
            limit.quota_remaining = remaining;
            limit.quota_renews = renews;
        }
    }
}

/// `GET /tyk/keys/{key}`.
pub(crate) async fn get(
    gateway: &Arc<Gateway>,
    key: &str,
    req: &Request<Incoming>,
) -> Result<Reply, AdminError> {
    let entry = existing(gateway, key, req, "Key not found").await?;
    // Shown with policies applied, as Tyk does; the stored password never leaves.
    let mut shown = match gateway.sessions.active(&entry) {
        Ok(active) => active.session.clone(),
        Err(_) => entry.stored.clone(),
    };
    shown.basic_auth_data.password = String::new();
    show_quota(gateway, &entry, &mut shown).await;
    let v = serde_json::to_value(&shown)
        .map_err(|e| AdminError::internal("Failed to encode the key", e))?;
    Ok(json_reply(StatusCode::OK, &v))
}

/// `PUT /tyk/keys/{key}`.
pub(crate) async fn update(
    gateway: &Arc<Gateway>,
    key: &str,
    req: Request<Incoming>,
) -> Result<Reply, AdminError> {
    let entry = existing(gateway, key, &req, "Key is not found").await?;
    let suppress_reset = query_flag(&req, "suppress_reset");
    let mut session = read_session(req).await?;
    prepare(gateway, &mut session, Some(&entry.stored))?;
    if suppress_reset {
        // Keeps counters and `last_updated`, as Tyk does.
        session.last_updated.clone_from(&entry.stored.last_updated);
    }
    store(gateway, &entry.storage_id, session).await?;
    if !suppress_reset {
        reset_counters(gateway, &entry).await;
    }
    Ok(modified(
        key,
        "modified",
        key_hash(gateway, &entry.storage_id).as_deref(),
    ))
}

/// `DELETE /tyk/keys/{key}`.
pub(crate) async fn delete(
    gateway: &Arc<Gateway>,
    key: &str,
    req: &Request<Incoming>,
) -> Result<Reply, AdminError> {
    let entry = existing(gateway, key, req, "There is no such key found").await?;
    gateway
        .sessions
        .delete(&entry.storage_id)
        .await
        .map_err(|e| store_failure(e, "Delete failed"))?;
    reset_counters(gateway, &entry).await;
    Ok(modified(key, "deleted", None))
}

/// `GET /tyk/keys`.
pub(crate) async fn list(
    gateway: &Arc<Gateway>,
    req: &Request<Incoming>,
) -> Result<Reply, AdminError> {
    let keys = &gateway.config.keys;
    if keys.hash_keys && !keys.enable_hashed_keys_listing {
        return Err(AdminError::NotFound(
            "Hashed key listing is disabled in config (enable_hashed_keys_listing)",
        ));
    }
    let api = query_value(req, "api_id");
    let org = query_value(req, "filter");
    let entries = gateway
        .sessions
        .entries()
        .await
        .map_err(AdminError::StoreUnavailable)?;
    let mut ids: Vec<String> = entries
        .into_iter()
        .filter(|e| {
            org.as_deref()
                .is_none_or(|o| e.stored.org_id.starts_with(o))
        })
        .filter(|e| {
            api.as_deref().is_none_or(|api| {
                e.stored.access_rights.contains_key(api)
                    || gateway
                        .sessions
                        .active(e)
                        .is_ok_and(|a| a.session.access_rights.contains_key(api))
            })
        })
        .map(|e| e.storage_id.to_string())
        .collect();
    ids.sort();
    Ok(json_reply(
        StatusCode::OK,
        &serde_json::json!({ "keys": ids }),
    ))
}

/// `POST /tyk/keys/policy/{key_hash}`: sets the policies of the key stored under `key_hash`
/// (the key itself when keys are not hashed) from `{"apply_policies": [...]}` (or the legacy
/// `{"policy": "id"}`). Counters are kept; the new rights apply at once.
pub(crate) async fn set_policies(
    gateway: &Arc<Gateway>,
    key_hash: &str,
    req: Request<Incoming>,
) -> Result<Reply, AdminError> {
    #[derive(serde::Deserialize)]
    struct PolicyUpdate {
        #[serde(default)]
        policy: String,
        #[serde(default)]
        apply_policies: Vec<String>,
    }
    let entry = gateway
        .sessions
        .get(key_hash)
        .await
        .map_err(AdminError::StoreUnavailable)?
        .ok_or(AdminError::NotFound("Key not found"))?;
    let doc = read_json(req).await.ok_or(AdminError::Malformed)?;
    let update: PolicyUpdate = serde_json::from_value(doc).map_err(|_| AdminError::Malformed)?;
    let mut session = entry.stored.clone();
    session.apply_policies = if update.apply_policies.is_empty() && !update.policy.is_empty() {
        vec![update.policy]
    } else {
        update.apply_policies
    };
    // A policy that does not exist would lock the key out; refuse it and keep the key as it
    // was.
    gateway
        .sessions
        .policy_set()
        .apply(&session)
        .map_err(|e| AdminError::Invalid(format!("Could not apply the policies: {e}").into()))?;
    session.last_updated = unix_now().to_string();
    gateway
        .sessions
        .put(&entry.storage_id, session)
        .await
        .map_err(|e| store_failure(e, "Could not write key data"))?;
    Ok(modified(key_hash, "updated", None))
}
