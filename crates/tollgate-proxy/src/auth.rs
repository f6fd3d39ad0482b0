//! Authentication and key checks: the stages that turn a credential into a key and decide
//! whether that key may make this request. Messages and statuses are Tyk's, in Tyk's order.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{StatusCode, Uri};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_definitions::CredentialSource;
use tollgate_session::time::unix_now;
use tollgate_session::{Access, custom_key, is_slow, verify_password};

use crate::chain::RequestCtx;
use crate::error::Refusal;

const AUTH_FIELD_MISSING: Refusal =
    Refusal::new(StatusCode::UNAUTHORIZED, "Authorization field missing");
const DISALLOWED: Refusal = Refusal::new(
    StatusCode::FORBIDDEN,
    "Access to this API has been disallowed",
);
const RESOURCE_DISALLOWED: Refusal = Refusal::new(
    StatusCode::FORBIDDEN,
    "Access to this resource has been disallowed",
);
const INACTIVE: Refusal = Refusal::new(StatusCode::FORBIDDEN, "Key is inactive, please renew");
/// The key store cannot be reached: a valid caller must not be told their key is bad.
pub(crate) const STORE_UNAVAILABLE: Refusal = Refusal {
    status: StatusCode::SERVICE_UNAVAILABLE,
    message: "Key store unavailable, please retry",
    www_authenticate: None,
    retry_after: Some(1),
};
const EXPIRED: Refusal = Refusal::new(StatusCode::UNAUTHORIZED, "Key has expired, please renew");

/// Auth-token authentication (Tyk's standard auth).
#[derive(Debug)]
pub(crate) struct TokenAuth {
    pub(crate) source: CredentialSource,
    pub(crate) strip: bool,
    pub(crate) min_token_length: usize,
}

impl TokenAuth {
    pub(crate) async fn on_request(&self, cx: &mut RequestCtx<'_>) -> Result<(), Refusal> {
        let Some(found) = find_credential(cx.head, &self.source) else {
            return Err(AUTH_FIELD_MISSING);
        };
        let presented = found.value.as_ref();
        if presented.len() < self.min_token_length {
            return Err(DISALLOWED);
        }
        let entry = cx
            .sessions
            .find(presented, &cx.api.org_id)
            .await
            .map_err(|_| STORE_UNAVAILABLE)?
            .ok_or(DISALLOWED)?;
        // A key whose policies cannot be applied is refused like an unknown one, as in Tyk.
        let active = cx.sessions.active(&entry).map_err(|_| DISALLOWED)?;
        let location = found.location;
        if self.strip {
            strip_credential(cx.head, &self.source, location);
        }
        cx.key = Some(active);
        cx.key_id = Some(entry.storage_id.clone());
        Ok(())
    }
}

/// Basic authentication: username = key id (org + username), password checked against the
/// stored hash. Successful bcrypt checks are remembered, since bcrypt costs milliseconds.
#[derive(Debug)]
pub(crate) struct BasicAuth {
    pub(crate) source: CredentialSource,
    pub(crate) challenge: HeaderValue,
    pub(crate) strip: bool,
    /// storage id → SHA-256 of (stored hash, password) last verified for it.
    pub(crate) verified: papaya::HashMap<Box<str>, [u8; 32]>,
}

impl BasicAuth {
    fn refuse(&self, status: StatusCode, message: &'static str) -> Refusal {
        Refusal {
            status,
            message,
            www_authenticate: (status == StatusCode::UNAUTHORIZED).then(|| self.challenge.clone()),
            retry_after: None,
        }
    }

    pub(crate) async fn on_request(&self, cx: &mut RequestCtx<'_>) -> Result<(), Refusal> {
        let Some(found) = find_credential(cx.head, &self.source) else {
            return Err(self.refuse(StatusCode::UNAUTHORIZED, "Authorization field missing"));
        };
        let (user, password) =
            parse_basic(found.raw.as_ref()).map_err(|m| self.refuse(StatusCode::BAD_REQUEST, m))?;
        let hashing = cx.sessions.hashing();
        let token = custom_key(&cx.api.org_id, &user, hashing.algorithm);
        let not_authorised = || self.refuse(StatusCode::UNAUTHORIZED, "User not authorised");
        let entry = cx
            .sessions
            .get(&hashing.storage_id(&token))
            .await
            .map_err(|_| STORE_UNAVAILABLE)?
            .ok_or_else(not_authorised)?;
        let active = cx.sessions.active(&entry).map_err(|_| DISALLOWED)?;
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
        if self.strip {
            strip_credential(cx.head, &self.source, found.location);
        }
        cx.key = Some(active);
        cx.key_id = Some(entry.storage_id.clone());
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
fn parse_basic(value: &str) -> Result<(String, String), &'static str> {
    let encoded = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, rest)| rest.trim())
        .ok_or("Attempted access with malformed header, header not in basic auth format")?;
    let decoded = STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or("Attempted access with malformed header, auth data not encoded correctly")?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or("Attempted access with malformed header, values not in basic auth format")?;
    Ok((user.to_owned(), password.to_owned()))
}

/// Key expiry and access rights (Tyk's KeyExpired, AccessRights and GranularAccess middleware).
#[derive(Debug)]
pub(crate) struct KeyChecks;

impl KeyChecks {
    pub(crate) fn on_request(cx: &RequestCtx<'_>) -> Result<(), Refusal> {
        let Some(key) = cx.key.as_deref() else {
            return Ok(());
        };
        let session = &key.session;
        if session.is_inactive {
            return Err(INACTIVE);
        }
        if session.is_expired(unix_now()) {
            return Err(EXPIRED);
        }
        match key.check(
            &cx.api.api_id,
            None,
            cx.head.method.as_str(),
            cx.head.uri.path(),
        ) {
            Access::Granted => Ok(()),
            Access::ApiDenied => Err(DISALLOWED),
            Access::ResourceDenied => Err(RESOURCE_DISALLOWED),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Location {
    Header,
    Param,
    Cookie,
}

struct Credential<'a> {
    /// The value with a `Bearer ` prefix removed (tokens).
    value: Cow<'a, str>,
    /// The value as sent (basic auth parses it itself).
    raw: Cow<'a, str>,
    location: Location,
}

/// Header, then query parameter, then cookie; a later non-empty source overrides.
fn find_credential<'a>(head: &'a Parts, source: &CredentialSource) -> Option<Credential<'a>> {
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

fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<Cow<'a, str>> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(k) == name).then(|| decode_component(v))
    })
}

fn cookie_value<'a>(head: &'a Parts, name: &str) -> Option<&'a str> {
    head.headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Form-style percent decoding (`+` is a space); bad escapes are kept as they are.
fn decode_component(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (
                    bytes.get(i + 1).and_then(|b| hex(*b)),
                    bytes.get(i + 2).and_then(|b| hex(*b)),
                ) {
                    (Some(h), Some(l)) => {
                        #[allow(clippy::cast_possible_truncation)]
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Removes the credential from where it was found (`strip_auth_data`).
fn strip_credential(head: &mut Parts, source: &CredentialSource, location: Location) {
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
                        decode_component(pair.split_once('=').map_or(*pair, |(k, _)| k))
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
                let kept: Vec<String> = head
                    .headers
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|c| {
                        !c.is_empty() && c.split_once('=').map_or(*c, |(k, _)| k) != cookie.as_str()
                    })
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
        assert!(
            parse_basic(&enc("nocolon"))
                .unwrap_err()
                .contains("values not in basic auth format")
        );
        assert!(
            parse_basic("Basic !!")
                .unwrap_err()
                .contains("not encoded correctly")
        );
        assert!(
            parse_basic("Bearer x")
                .unwrap_err()
                .contains("header not in basic auth format")
        );
    }
}
