//! Authentication and key checks: the stages that turn a credential into a key and decide
//! whether that key may make this request. Messages and statuses are Tyk's, in Tyk's order.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::Uri;
use http::header::{self, HeaderValue};
use http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_definitions::CredentialSource;
use tollgate_session::time::unix_now;
use tollgate_session::{Access, ActiveKey, custom_key, is_slow, verify_password};

use crate::ctx::{RequestCtx, StageRequest};
use crate::headers::list_items;
use crate::percent::{self, Plus};
use crate::refusal::{Refusal, RefusalKind};

/// Where an auth method reads the credential and whether it leaves the request
/// (`strip_auth_data`): the same for auth tokens and basic auth.
#[derive(Debug)]
pub(crate) struct CredentialUse {
    pub(crate) source: CredentialSource,
    pub(crate) strip: bool,
}

impl CredentialUse {
    /// The request's credential, or `missing()` when it carries none.
    pub(crate) fn find<'h>(
        &self,
        head: &'h Parts,
        missing: impl FnOnce() -> Refusal,
    ) -> Result<Credential<'h>, Refusal> {
        find_credential(head, &self.source).ok_or_else(missing)
    }

    /// [`CredentialUse::admit`] for a stored key, under the current policies: a key whose
    /// policies cannot be applied is refused as having no rights, as in Tyk.
    pub(crate) fn admit_entry(
        &self,
        req: &mut StageRequest<'_>,
        cx: &mut RequestCtx,
        location: Location,
        entry: &tollgate_storage::KeyEntry,
    ) -> Result<(), Refusal> {
        let active = req
            .sessions
            .active(entry)
            .map_err(|_| RefusalKind::ApiDisallowed)?;
        self.admit(req, cx, location, active, &entry.storage_id);
        Ok(())
    }

    /// Once the key is accepted: the credential is stripped when the API asks, and the key
    /// goes on to the later stages.
    pub(crate) fn admit(
        &self,
        req: &mut StageRequest<'_>,
        cx: &mut RequestCtx,
        location: Location,
        active: Arc<ActiveKey>,
        storage_id: &str,
    ) {
        if self.strip {
            strip_credential(req.head, &self.source, location);
        }
        cx.key = Some(active);
        cx.key_id = Some(storage_id.into());
    }
}

/// Auth-token authentication (Tyk's standard auth).
#[derive(Debug)]
pub(crate) struct TokenAuth {
    pub(crate) credential: CredentialUse,
    pub(crate) min_token_length: usize,
}

impl TokenAuth {
    pub(crate) async fn on_request(
        &self,
        req: &mut StageRequest<'_>,
        cx: &mut RequestCtx,
    ) -> Result<(), Refusal> {
        let found = self
            .credential
            .find(req.head, || RefusalKind::AuthFieldMissing.into())?;
        let presented = found.value.as_ref();
        if presented.len() < self.min_token_length {
            return Err(RefusalKind::KeyNotFound.into());
        }
        let entry = req
            .sessions
            .find(presented, &req.api.org_id)
            .await
            .map_err(|_| Refusal::store_unavailable())?
            .ok_or(RefusalKind::KeyNotFound)?;
        // A key whose policies cannot be applied is refused with the same message as an
        // unknown one, as in Tyk.
        let location = found.location;
        self.credential.admit_entry(req, cx, location, &entry)
    }
}

/// Basic authentication: username = key id (org + username), password checked against the
/// stored hash. Successful bcrypt checks are remembered, since bcrypt costs milliseconds.
#[derive(Debug)]
pub(crate) struct BasicAuth {
    pub(crate) credential: CredentialUse,
    pub(crate) challenge: HeaderValue,
    /// storage id → SHA-256 of (stored hash, password) last verified for it.
    pub(crate) verified: papaya::HashMap<Box<str>, [u8; 32]>,
}

impl BasicAuth {
    /// A 401 carries the challenge, so the client knows to send credentials.
    fn refuse(&self, kind: RefusalKind) -> Refusal {
        let unauthorised = kind.status_and_message().0 == http::StatusCode::UNAUTHORIZED;
        Refusal {
            www_authenticate: unauthorised.then(|| self.challenge.clone()),
            ..Refusal::new(kind)
        }
    }

    pub(crate) async fn on_request(
        &self,
        req: &mut StageRequest<'_>,
        cx: &mut RequestCtx,
    ) -> Result<(), Refusal> {
        let found = self
            .credential
            .find(req.head, || self.refuse(RefusalKind::BasicAuthMissing))?;
        let (user, password) = parse_basic(found.raw.as_ref()).map_err(|kind| self.refuse(kind))?;
        let hashing = req.sessions.hashing();
        let token = custom_key(&req.api.org_id, &user, hashing.algorithm);
        let not_authorised = || self.refuse(RefusalKind::UserNotAuthorised);
        let entry = req
            .sessions
            .get(&hashing.storage_id(&token))
            .await
            .map_err(|_| Refusal::store_unavailable())?
            .ok_or_else(not_authorised)?;
        let active = req
            .sessions
            .active(&entry)
            .map_err(|_| RefusalKind::ApiDisallowed)?;
        let stored = entry.stored.basic_auth_data.clone();
        if is_slow(&stored) {
            let fingerprint = fingerprint(&stored.password, &password);
            let cached = self.verified.pin().get(&entry.storage_id).copied();
            let ok = match cached {
                Some(f) if bool::from(f.ct_eq(&fingerprint)) => true,
                _ => {
                    let pw = password.clone();
                    let data = stored.clone();
                    // bcrypt takes milliseconds of CPU: keep it off the worker thread.
                    let ok = tokio::task::spawn_blocking(move || verify_password(&data, &pw))
                        .await
                        .unwrap_or(false);
                    if ok {
                        self.verified
                            .pin()
                            .insert(entry.storage_id.clone(), fingerprint);
                    }
                    ok
                }
            };
            if !ok {
                return Err(not_authorised());
            }
        } else if !verify_password(&stored, &password) {
            return Err(not_authorised());
        }
        let location = found.location;
        self.credential
            .admit(req, cx, location, active, &entry.storage_id);
        Ok(())
    }
}

fn fingerprint(stored_hash: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(stored_hash.as_bytes());
    h.update([0]);
    h.update(password.as_bytes());
    h.finalize().into()
}

/// `Basic base64(user:password)` → (user, password), split at the first colon.
pub(crate) fn parse_basic(value: &str) -> Result<(String, String), RefusalKind> {
    let encoded = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, rest)| rest.trim())
        .ok_or(RefusalKind::BasicAuthNotBasic)?;
    let decoded = STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(RefusalKind::BasicAuthBadEncoding)?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or(RefusalKind::BasicAuthBadValues)?;
    Ok((user.to_owned(), password.to_owned()))
}

/// Key expiry and access rights (Tyk's KeyExpired, AccessRights and GranularAccess middleware).
#[derive(Debug)]
pub(crate) struct KeyChecks;

impl KeyChecks {
    pub(crate) fn on_request(req: &StageRequest<'_>, cx: &RequestCtx) -> Result<(), Refusal> {
        let Some(key) = cx.key.as_deref() else {
            return Ok(());
        };
        let session = &key.session;
        if session.is_inactive {
            return Err(RefusalKind::KeyInactive.into());
        }
        if session.is_expired(unix_now()) {
            return Err(RefusalKind::KeyExpired.into());
        }
        // A versioned API checks the key's rights to the version too (`access_rights.*.versions`).
        let version = req.api.versioning.is_some().then(|| &*req.api.version.name);
        match key.check(
            &req.api.api_id,
            version,
            req.head.method.as_str(),
            req.head.uri.path(),
        ) {
            Access::Granted => Ok(()),
            Access::ApiDenied => Err(RefusalKind::ApiDisallowed.into()),
            Access::ResourceDenied => Err(RefusalKind::ResourceDisallowed.into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Location {
    Header,
    Param,
    Cookie,
}

pub(crate) struct Credential<'a> {
    /// The value with a `Bearer ` prefix removed (tokens).
    pub(crate) value: Cow<'a, str>,
    /// The value as sent (basic auth parses it itself).
    pub(crate) raw: Cow<'a, str>,
    pub(crate) location: Location,
}

/// Header, then query parameter, then cookie; a later non-empty source overrides.
pub(crate) fn find_credential<'a>(
    head: &'a Parts,
    source: &CredentialSource,
) -> Option<Credential<'a>> {
    let mut found = None;
    if let Some(name) = &source.header
        && let Some(v) = head.headers.get(name).and_then(|v| v.to_str().ok())
        && !v.is_empty()
    {
        found = Some((Cow::Borrowed(v), Location::Header));
    }
    if let Some(param) = &source.param
        && let Some(v) = query_param(&head.uri, param)
        && !v.is_empty()
    {
        found = Some((v, Location::Param));
    }
    if let Some(cookie) = &source.cookie
        && let Some(v) = cookie_value(head, cookie)
        && !v.is_empty()
    {
        found = Some((Cow::Borrowed(v), Location::Cookie));
    }
    let (raw, location) = found?;
    let value = match &raw {
        Cow::Borrowed(s) => Cow::Borrowed(strip_bearer(s)),
        Cow::Owned(s) => Cow::Owned(strip_bearer(s).to_owned()),
    };
    Some(Credential {
        value,
        raw,
        location,
    })
}

fn strip_bearer(v: &str) -> &str {
    match v.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
        _ => v.trim(),
    }
}

/// Query parameters and cookies are form-encoded: `+` is a space.
fn form_decode(s: &str) -> Cow<'_, str> {
    percent::decode(s, Plus::Space)
}

fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<Cow<'a, str>> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k) == name).then(|| form_decode(v))
    })
}

fn cookie_value<'a>(head: &'a Parts, name: &str) -> Option<&'a str> {
    list_items(&head.headers, &header::COOKIE, ';').find_map(|c| {
        let (k, v) = c.split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Removes the credential from where it was found (`strip_auth_data`).
pub(crate) fn strip_credential(head: &mut Parts, source: &CredentialSource, location: Location) {
    match location {
        Location::Header => {
            if let Some(name) = &source.header {
                head.headers.remove(name);
            }
        }
        Location::Param => {
            if let Some(param) = &source.param
                && let Some(query) = head.uri.query()
            {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        form_decode(pair.split_once('=').map_or(*pair, |(k, _)| k))
                            != param.as_str()
                    })
                    .collect();
                let pq = if kept.is_empty() {
                    head.uri.path().to_owned()
                } else {
                    format!("{}?{}", head.uri.path(), kept.join("&"))
                };
                let mut parts = head.uri.clone().into_parts();
                if let Ok(pq) = pq.parse() {
                    parts.path_and_query = Some(pq);
                    if let Ok(uri) = Uri::from_parts(parts) {
                        head.uri = uri;
                    }
                }
            }
        }
        Location::Cookie => {
            if let Some(cookie) = &source.cookie {
                let kept: Vec<String> = list_items(&head.headers, &header::COOKIE, ';')
                    .filter(|c| c.split_once('=').map_or(*c, |(k, _)| k) != cookie.as_str())
                    .map(str::to_owned)
                    .collect();
                head.headers.remove(header::COOKIE);
                if !kept.is_empty()
                    && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
                {
                    head.headers.insert(header::COOKIE, v);
                }
            }
        }
    }
}

/// Fuzzing only (see `crate::fuzzing`): [`find_credential`], then [`strip_credential`] at
/// the location it was found. Returns `(value, raw, location)` of what was found.
pub(crate) fn find_and_strip(
    head: &mut Parts,
    source: &CredentialSource,
) -> Option<(String, String, &'static str)> {
    let found = find_credential(head, source)?;
    let out = (
        found.value.into_owned(),
        found.raw.into_owned(),
        match found.location {
            Location::Header => "header",
            Location::Param => "param",
            Location::Cookie => "cookie",
        },
    );
    let location = found.location;
    strip_credential(head, source, location);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn source(param: bool, cookie: bool) -> CredentialSource {
        CredentialSource {
            header: Some(header::AUTHORIZATION),
            param: param.then(|| "api_key".to_owned()),
            cookie: cookie.then(|| "auth".to_owned()),
        }
    }

    #[test]
    fn order_header_param_cookie() {
        let h = head(
            "/a?api_key=from%2Bparam",
            &[("authorization", "Bearer hdr"), ("cookie", "x=1; auth=ck")],
        );
        assert_eq!(
            find_credential(&h, &source(false, false)).unwrap().value,
            "hdr"
        );
        assert_eq!(
            find_credential(&h, &source(true, false)).unwrap().value,
            "from+param"
        );
        assert_eq!(
            find_credential(&h, &source(true, true)).unwrap().value,
            "ck"
        );
        assert!(find_credential(&head("/a", &[]), &source(true, true)).is_none());
    }

    #[test]
    fn strip_each_location() {
        let mut h = head(
            "/a?x=1&api_key=k&y=2",
            &[("authorization", "k"), ("cookie", "x=1; auth=k")],
        );
        strip_credential(&mut h, &source(true, true), Location::Param);
        assert_eq!(h.uri.to_string(), "/a?x=1&y=2");
        strip_credential(&mut h, &source(true, true), Location::Cookie);
        assert_eq!(h.headers[header::COOKIE], "x=1");
        strip_credential(&mut h, &source(true, true), Location::Header);
        assert!(!h.headers.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn basic_parsing() {
        let enc = |s: &str| format!("Basic {}", STANDARD.encode(s));
        assert_eq!(
            parse_basic(&enc("u:p:q")).unwrap(),
            ("u".into(), "p:q".into())
        );
        let message = |v: &str| parse_basic(v).unwrap_err().status_and_message().1;
        assert!(message(&enc("nocolon")).contains("values not in basic auth format"));
        assert!(message("Basic !!").contains("not encoded correctly"));
        assert!(message("Bearer x").contains("header not in basic auth format"));
    }
}
