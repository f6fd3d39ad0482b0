//! Errors that end a request at the gateway, and the response each one becomes.
//!
//! Clients of a Tyk gateway parse `{"error": "..."}` bodies with Tyk's exact messages, so every
//! gateway-generated error goes through [`GatewayError::into_response`]: one mapping from what
//! went wrong to status and message, classified by where it came from.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{ProxyBody, RequestBodyError};
use crate::headers::X_GENERATOR;

/// Why a request ended at the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No API matches the host and path.
    #[error("no API matches the request")]
    NoRoute,
    /// A stage refused the request (auth, access rights, limits).
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The request path cannot be normalised.
    #[error("malformed request path")]
    BadPath,
    /// The request framing broke a rule (see [`crate::framing`]).
    #[error("request rejected: {0:?}")]
    Framing(crate::framing::Rejection),
    /// The request body is larger than allowed.
    #[error("request body too large")]
    BodyTooLarge,
    /// The upstream refused, reset or broke the connection.
    #[error("upstream {authority}: {source}")]
    Upstream {
        /// The upstream's `host:port`.
        authority: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The upstream sent no response headers within `proxy_default_timeout`.
    #[error("upstream {authority}: no response in time")]
    UpstreamTimeout {
        /// The upstream's `host:port`.
        authority: String,
    },
    /// The client's request body failed mid-way (bad chunking, reset).
    #[error("reading the request body: {0}")]
    ClientBody(String),
    /// The client went quiet mid-body for longer than the read timeout.
    #[error("client body read timed out")]
    ClientTimeout,
}

impl GatewayError {
    /// Status and Tyk's message.
    pub fn status_and_message(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NoRoute => (StatusCode::NOT_FOUND, "Not Found"),
            Self::Refused(r) => (r.status, r.message),
            Self::BadPath => (StatusCode::BAD_REQUEST, "Bad Request"),
            Self::Framing(r) => (r.status(), r.message()),
            Self::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
            // Tyk answers 500 here; HTTP says 502 (a documented deviation).
            Self::Upstream { .. } => (
                StatusCode::BAD_GATEWAY,
                "There was a problem proxying the request",
            ),
            Self::UpstreamTimeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "Upstream service reached hard timeout.",
            ),
            Self::ClientBody(_) => (
                StatusCode::BAD_REQUEST,
                "There was a problem with reading Body of the Request.",
            ),
            Self::ClientTimeout => (StatusCode::REQUEST_TIMEOUT, "Request Timeout"),
        }
    }

    /// The response a client gets.
    pub fn into_response(self) -> Response<ProxyBody> {
        let (status, message) = self.status_and_message();
        let mut resp = error_response(status, message);
        if let Self::Refused(r) = &self {
            if let Some(challenge) = &r.www_authenticate {
                resp.headers_mut()
                    .insert(http::header::WWW_AUTHENTICATE, challenge.clone());
            }
            if let Some(secs) = r.retry_after {
                crate::limits::set_retry_after(resp.headers_mut(), secs);
            }
        }
        if matches!(
            self,
            Self::Framing(_)
                | Self::ClientBody(_)
                | Self::ClientTimeout
                | Self::BadPath
                | Self::BodyTooLarge
        ) {
            // The connection's byte stream can no longer be trusted.
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// A refusal by a stage: Tyk's status and message, and for basic auth the challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Status.
    pub status: StatusCode,
    /// Tyk's message.
    pub message: &'static str,
    /// `WWW-Authenticate` value, for basic auth.
    pub www_authenticate: Option<HeaderValue>,
    /// `Retry-After` seconds, for limits.
    pub retry_after: Option<i64>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl Refusal {
    /// A refusal without a challenge.
    pub const fn new(status: StatusCode, message: &'static str) -> Self {
        Self {
            status,
            message,
            www_authenticate: None,
            retry_after: None,
        }
    }
}

impl From<Refusal> for GatewayError {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl GatewayError {
    /// Classifies a failed upstream exchange. A failure of the client's own body surfaces as a
    /// send error too; it is the client's fault, not the upstream's, and says so.
    pub(crate) fn from_upstream(
        authority: &http::uri::Authority,
        err: Box<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
        while let Some(e) = cause {
            if let Some(body) = e.downcast_ref::<RequestBodyError>() {
                return match body {
                    RequestBodyError::TooLarge { .. } => Self::BodyTooLarge,
                    RequestBodyError::IdleTimeout(_) => Self::ClientTimeout,
                    RequestBodyError::Client(e) => Self::ClientBody(e.to_string()),
                };
            }
            cause = e.source();
        }
        Self::Upstream {
            authority: authority.to_string(),
            source: err,
        }
    }
}

/// A gateway-generated error in Tyk's stock JSON template: `{\n    "error": "<message>"\n}`.
pub fn error_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let escaped = serde_json_escape(message);
    let body = format!("{{\n    \"error\": \"{escaped}\"\n}}");
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(X_GENERATOR, HeaderValue::from_static("tyk.io"));
    resp
}

fn serde_json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn tyk_error_shape() {
        let resp = GatewayError::NoRoute.into_response();
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(resp.headers()["x-generator"], "tyk.io");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{\n    \"error\": \"Not Found\"\n}");
    }

    #[test]
    fn escaping() {
        assert_eq!(serde_json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
