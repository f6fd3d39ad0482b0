//! Why a stage refused a request, as a type: one [`RefusalKind`] per situation of Tyk's error
//! catalogue, mapped to Tyk's status and message in [`RefusalKind::status_and_message`] and
//! nowhere else. Metrics and analytics classify by the kind, never by the message text, so an
//! operator's `override_messages` changes what clients read and nothing else.

use std::collections::BTreeMap;

use http::{HeaderValue, StatusCode};
use tollgate_config::MessageOverride;

/// What a stage refused a request for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// The path is black-listed, or not on the white-list.
    EndpointForbidden,
    /// The API is past its `expiration`.
    ApiExpired,
    /// A versioned API: the request names no version and there is no default.
    VersionNotFound,
    /// A versioned API: the request names a version the API does not have.
    VersionUnknown,
    /// The version is past its `expires`.
    VersionExpired,
    /// The client's IP is outside the API's allow-list or inside its block-list.
    IpDisallowed,
    /// No credential where the API expects one.
    AuthFieldMissing,
    /// The key is unknown (or shorter than `min_token_length`).
    KeyNotFound,
    /// The key has no rights to this API, or its policies could not be applied.
    ApiDisallowed,
    /// The key's `allowed_urls` do not cover this method and path.
    ResourceDisallowed,
    /// The key is switched off.
    KeyInactive,
    /// The key is past its `expires`.
    KeyExpired,
    /// The key store cannot be reached: a valid caller must not be told their key is bad.
    StoreUnavailable,
    /// Basic auth: no `Authorization` header.
    BasicAuthMissing,
    /// Basic auth: the header is not `Basic <data>`.
    BasicAuthNotBasic,
    /// Basic auth: the data is not base64 text.
    BasicAuthBadEncoding,
    /// Basic auth: the decoded data has no `user:password` split.
    BasicAuthBadValues,
    /// Basic auth: unknown user or wrong password.
    UserNotAuthorised,
    /// The key's rate limit.
    RateLimited,
    /// The API's `global_rate_limit`.
    ApiRateLimited,
    /// The key's quota is used up.
    QuotaExceeded,
    /// The body is larger than the API or gateway allows.
    BodyTooLarge,
    /// The declared body is over the version's `global_size_limit` or the endpoint's
    /// `size_limits` entry.
    RequestTooLarge,
    /// A size limit applies but the request declares no `Content-Length` (chunked).
    ContentLengthRequired,
    /// JWT: no token where the API expects one (Tyk answers 400 here, not 401).
    JwtMissing,
    /// JWT: not a token, a bad signature, or no configured key for it.
    JwtInvalid,
    /// JWT: the token's `alg` is outside the API's `jwt_signing_method`.
    JwtUnexpectedSigningMethod,
    /// JWT: `exp` is past.
    JwtExpired,
    /// JWT: `iat` is in the future.
    JwtUsedBeforeIssued,
    /// JWT: `nbf` is in the future.
    JwtNotValidYet,
    /// JWT: neither the identity claim nor `sub` names a user.
    JwtNoIdentity,
    /// JWT: `sub` is empty.
    JwtEmptySub,
    /// JWT: the identity claim is empty.
    JwtEmptyIdentity,
    /// JWT: the token names a policy that does not exist (or belongs to another org).
    JwtPolicyUnknown,
    /// JWT: neither the token nor the API names a policy.
    JwtNoPolicy,
    /// JWT: the token's scopes map to no policy.
    JwtNoScopePolicy,
    /// JWT: a known identity's token names neither a scope nor a policy.
    JwtNoScopeOrPolicy,
    /// HMAC: no signature, a malformed one, an unknown key, a mismatch, a date outside the
    /// skew (Tyk answers all alike).
    HmacInvalid,
    /// Mutual TLS: the client presented no certificate (or came without TLS).
    ClientCertRequired,
    /// Mutual TLS: the certificate is past its `notAfter` (or its dates cannot be read).
    ClientCertExpired,
    /// Mutual TLS: the certificate is not one of the API's `client_certificates`.
    ClientCertNotAllowed,
}

/// How a refusal counts in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalClass {
    /// Authentication or access rights.
    Auth,
    /// A rate limit (key or API).
    Rate,
    /// A quota.
    Quota,
    /// Anything else.
    Other,
}

impl RefusalKind {
    /// Tyk's default status and message.
    pub const fn status_and_message(self) -> (StatusCode, &'static str) {
        const DISALLOWED: &str = "Access to this API has been disallowed";
        match self {
            Self::AuthFieldMissing | Self::BasicAuthMissing => {
                (StatusCode::UNAUTHORIZED, "Authorization field missing")
            }
            Self::EndpointForbidden => (StatusCode::FORBIDDEN, "Requested endpoint is forbidden"),
            Self::ApiExpired => (
                StatusCode::FORBIDDEN,
                "API has expired, please check documentation or contact administrator",
            ),
            Self::VersionNotFound => (StatusCode::FORBIDDEN, "Version information not found"),
            Self::VersionUnknown => (
                StatusCode::FORBIDDEN,
                "This API version does not seem to exist",
            ),
            Self::VersionExpired => (
                StatusCode::FORBIDDEN,
                "Api Version has expired, please check documentation or contact administrator",
            ),
            Self::IpDisallowed => (
                StatusCode::FORBIDDEN,
                "access from this IP has been disallowed",
            ),
            Self::KeyNotFound | Self::ApiDisallowed => (StatusCode::FORBIDDEN, DISALLOWED),
            Self::ResourceDisallowed => (
                StatusCode::FORBIDDEN,
                "Access to this resource has been disallowed",
            ),
            Self::KeyInactive => (StatusCode::FORBIDDEN, "Key is inactive, please renew"),
            Self::KeyExpired => (StatusCode::UNAUTHORIZED, "Key has expired, please renew"),
            Self::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Key store unavailable, please retry",
            ),
            Self::BasicAuthNotBasic => (
                StatusCode::BAD_REQUEST,
                "Attempted access with malformed header, header not in basic auth format",
            ),
            Self::BasicAuthBadEncoding => (
                StatusCode::BAD_REQUEST,
                "Attempted access with malformed header, auth data not encoded correctly",
            ),
            Self::BasicAuthBadValues => (
                StatusCode::BAD_REQUEST,
                "Attempted access with malformed header, values not in basic auth format",
            ),
            Self::UserNotAuthorised => (StatusCode::UNAUTHORIZED, "User not authorised"),
            Self::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "Rate Limit Exceeded"),
            Self::ApiRateLimited => (StatusCode::TOO_MANY_REQUESTS, "API Rate Limit Exceeded"),
            Self::QuotaExceeded => (StatusCode::FORBIDDEN, "Quota exceeded"),
            Self::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
            Self::RequestTooLarge => (StatusCode::BAD_REQUEST, "Request is too large"),
            Self::ContentLengthRequired => (
                StatusCode::LENGTH_REQUIRED,
                "Content length is required for this request",
            ),
            Self::JwtMissing => (StatusCode::BAD_REQUEST, "Authorization field missing"),
            Self::JwtInvalid => (StatusCode::FORBIDDEN, "Key not authorized"),
            Self::JwtUnexpectedSigningMethod => (
                StatusCode::FORBIDDEN,
                "Key not authorized: Unexpected signing method",
            ),
            Self::JwtExpired => (
                StatusCode::UNAUTHORIZED,
                "Key not authorized: token has expired",
            ),
            Self::JwtUsedBeforeIssued => (
                StatusCode::UNAUTHORIZED,
                "Key not authorized: token used before issued",
            ),
            Self::JwtNotValidYet => (
                StatusCode::UNAUTHORIZED,
                "Key not authorized: token is not valid yet",
            ),
            Self::JwtNoIdentity => (
                StatusCode::FORBIDDEN,
                "no suitable claims for user ID were found",
            ),
            Self::JwtEmptySub => (StatusCode::FORBIDDEN, "found an empty user ID in sub claim"),
            Self::JwtEmptyIdentity => (
                StatusCode::FORBIDDEN,
                "found an empty user ID in predefined base claim",
            ),
            Self::JwtPolicyUnknown => (
                StatusCode::FORBIDDEN,
                "key not authorized: no matching policy",
            ),
            Self::JwtNoPolicy => (
                StatusCode::FORBIDDEN,
                "key not authorized: no matching policy found",
            ),
            Self::JwtNoScopePolicy => (
                StatusCode::FORBIDDEN,
                "key not authorized: no matching policy found in scope claim",
            ),
            Self::JwtNoScopeOrPolicy => (
                StatusCode::FORBIDDEN,
                "key not authorized: no scope or policy in token",
            ),
            Self::HmacInvalid => (
                StatusCode::BAD_REQUEST,
                "Authorization field missing, malformed or invalid",
            ),
            Self::ClientCertRequired => (StatusCode::UNAUTHORIZED, "Client certificate required"),
            Self::ClientCertExpired => (StatusCode::FORBIDDEN, "Certificate has expired"),
            Self::ClientCertNotAllowed => (StatusCode::FORBIDDEN, DISALLOWED),
        }
    }

    /// Tyk's `override_messages` id, for the kinds Tyk lets an operator reword.
    pub const fn override_id(self) -> Option<&'static str> {
        match self {
            Self::AuthFieldMissing => Some("auth.auth_field_missing"),
            Self::KeyNotFound => Some("auth.key_not_found"),
            _ => None,
        }
    }

    /// The metrics bucket.
    pub const fn class(self) -> RefusalClass {
        match self {
            Self::RateLimited | Self::ApiRateLimited => RefusalClass::Rate,
            Self::QuotaExceeded => RefusalClass::Quota,
            Self::StoreUnavailable
            | Self::BodyTooLarge
            | Self::RequestTooLarge
            | Self::ContentLengthRequired => RefusalClass::Other,
            _ => RefusalClass::Auth,
        }
    }

    /// Whether the connection must close after the response: after a refused body its byte
    /// stream can no longer be trusted, and an unread one (possibly large, or chunked without
    /// end) is not worth draining.
    pub const fn closes_connection(self) -> bool {
        matches!(
            self,
            Self::BodyTooLarge | Self::RequestTooLarge | Self::ContentLengthRequired
        )
    }
}

/// A refusal by a stage: its kind, plus the headers some kinds carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was refused.
    pub kind: RefusalKind,
    /// `WWW-Authenticate` value, for basic auth.
    pub www_authenticate: Option<HeaderValue>,
    /// `Retry-After` seconds, for limits and an unreachable store.
    pub retry_after: Option<i64>,
}

impl Refusal {
    /// A refusal without extra headers.
    pub const fn new(kind: RefusalKind) -> Self {
        Self {
            kind,
            www_authenticate: None,
            retry_after: None,
        }
    }

    /// A refusal that tells the client when to try again.
    pub const fn retry_after(kind: RefusalKind, secs: i64) -> Self {
        Self {
            kind,
            www_authenticate: None,
            retry_after: Some(secs),
        }
    }

    /// The key store is unreachable: try again in a second.
    pub const fn store_unavailable() -> Self {
        Self::retry_after(RefusalKind::StoreUnavailable, 1)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (status, message) = self.kind.status_and_message();
        write!(f, "{} {message}", status.as_u16())
    }
}

impl From<RefusalKind> for Refusal {
    fn from(kind: RefusalKind) -> Self {
        Self::new(kind)
    }
}

/// The operator's `override_messages`, compiled once: per kind, the status and message that
/// replace Tyk's defaults (a zero code or empty message keeps that part, as in Tyk).
#[derive(Debug, Default)]
pub struct Messages {
    overrides: Vec<(RefusalKind, Option<StatusCode>, Option<Box<str>>)>,
}

/// Every kind with an override id, for compiling the table.
const OVERRIDABLE: [RefusalKind; 2] = [RefusalKind::AuthFieldMissing, RefusalKind::KeyNotFound];

impl Messages {
    /// Compiles `override_messages`. Ids of features Tollgate does not have (certificates,
    /// OAuth) are kept by the config but have nothing to reword yet.
    pub fn compile(overrides: &BTreeMap<String, MessageOverride>) -> Self {
        let overrides = OVERRIDABLE
            .iter()
            .filter_map(|&kind| {
                let o = overrides.get(kind.override_id()?)?;
                let status = u16::try_from(o.code)
                    .ok()
                    .filter(|c| *c != 0)
                    .and_then(|c| StatusCode::from_u16(c).ok());
                let message = (!o.message.is_empty()).then(|| o.message.as_str().into());
                Some((kind, status, message))
            })
            .collect();
        Self { overrides }
    }

    /// The status and message a client gets for `kind`.
    pub fn status_and_message(&self, kind: RefusalKind) -> (StatusCode, &str) {
        let (status, message) = kind.status_and_message();
        match self.overrides.iter().find(|(k, _, _)| *k == kind) {
            Some((_, s, m)) => (s.unwrap_or(status), m.as_deref().unwrap_or(message)),
            None => (status, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, i64, &str)]) -> Messages {
        Messages::compile(
            &pairs
                .iter()
                .map(|(id, code, message)| {
                    (
                        (*id).to_owned(),
                        MessageOverride {
                            code: *code,
                            message: (*message).to_owned(),
                        },
                    )
                })
                .collect(),
        )
    }

    fn assert_answers(m: &Messages, expected: &[(RefusalKind, StatusCode, &str)]) {
        for &(kind, status, message) in expected {
            assert_eq!(m.status_and_message(kind), (status, message), "{kind:?}");
        }
    }

    #[test]
    fn defaults_are_tyks() {
        assert_answers(
            &Messages::default(),
            &[
                (
                    RefusalKind::QuotaExceeded,
                    StatusCode::FORBIDDEN,
                    "Quota exceeded",
                ),
                (
                    RefusalKind::AuthFieldMissing,
                    StatusCode::UNAUTHORIZED,
                    "Authorization field missing",
                ),
                (
                    RefusalKind::RequestTooLarge,
                    StatusCode::BAD_REQUEST,
                    "Request is too large",
                ),
                (
                    RefusalKind::ContentLengthRequired,
                    StatusCode::LENGTH_REQUIRED,
                    "Content length is required for this request",
                ),
            ],
        );
    }

    #[test]
    fn partial_overrides_replace_only_their_part() {
        let m = overrides(&[
            ("auth.auth_field_missing", 0, "Send a key"),
            ("auth.key_not_found", 401, ""),
            ("oauth.client_deleted", 418, "ignored"),
        ]);
        assert_answers(
            &m,
            &[
                (
                    RefusalKind::AuthFieldMissing,
                    StatusCode::UNAUTHORIZED,
                    "Send a key",
                ),
                (
                    RefusalKind::KeyNotFound,
                    StatusCode::UNAUTHORIZED,
                    "Access to this API has been disallowed",
                ),
                // Not overridable in Tyk: the same message from the access-rights check stays.
                (
                    RefusalKind::ApiDisallowed,
                    StatusCode::FORBIDDEN,
                    "Access to this API has been disallowed",
                ),
            ],
        );
    }

    #[test]
    fn classes_do_not_depend_on_messages() {
        assert_eq!(RefusalKind::RateLimited.class(), RefusalClass::Rate);
        assert_eq!(RefusalKind::ApiRateLimited.class(), RefusalClass::Rate);
        assert_eq!(RefusalKind::QuotaExceeded.class(), RefusalClass::Quota);
        assert_eq!(RefusalKind::KeyNotFound.class(), RefusalClass::Auth);
        assert_eq!(RefusalKind::IpDisallowed.class(), RefusalClass::Auth);
        assert_eq!(RefusalKind::StoreUnavailable.class(), RefusalClass::Other);
        // A size refusal is the client's body, not a failed authentication.
        assert_eq!(RefusalKind::RequestTooLarge.class(), RefusalClass::Other);
        assert_eq!(
            RefusalKind::ContentLengthRequired.class(),
            RefusalClass::Other
        );
    }
}
