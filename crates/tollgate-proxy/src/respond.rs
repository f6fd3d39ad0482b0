//! The responses the gateway makes itself: every [`GatewayError`] becomes Tyk's status and
//! `{"error": "..."}` body here, with the operator's `override_messages` applied, so the
//! mapping from what went wrong to what a client reads exists once.

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS,
};
use http::{Response, StatusCode};

use crate::body::ProxyBody;
use crate::error::GatewayError;
use crate::headers::X_GENERATOR;
use crate::refusal::{Messages, Refusal};
use crate::upstream::UpstreamError;

impl GatewayError {
    /// Status and message, after the operator's overrides.
    pub fn status_and_message<'m>(&self, messages: &'m Messages) -> (StatusCode, &'m str) {
        match self {
            Self::NoRoute => (StatusCode::NOT_FOUND, "Not Found"),
            Self::Refused(r) => messages.status_and_message(r.kind),
            Self::BadPath => (StatusCode::BAD_REQUEST, "Bad Request"),
            Self::Framing(r) => (r.status(), r.message()),
            // Tyk answers 500 here; HTTP says 502 (a documented deviation).
            Self::Upstream(UpstreamError::Timeout { .. }) => (
                StatusCode::GATEWAY_TIMEOUT,
                "Upstream service reached hard timeout.",
            ),
            Self::Upstream(_) => (
                StatusCode::BAD_GATEWAY,
                "There was a problem proxying the request",
            ),
            Self::ClientBody(_) => (
                StatusCode::BAD_REQUEST,
                "There was a problem with reading Body of the Request.",
            ),
            Self::ClientTimeout => (StatusCode::REQUEST_TIMEOUT, "Request Timeout"),
            Self::AllHostsDown => (StatusCode::SERVICE_UNAVAILABLE, ALL_HOSTS_DOWN),
        }
    }

    /// The response a client gets.
    pub fn into_response(self, messages: &Messages) -> Response<ProxyBody> {
        if let Self::AllHostsDown = self {
            return all_hosts_down();
        }
        let (status, message) = self.status_and_message(messages);
        let mut resp = error_response(status, message);
        let closes = match &self {
            Self::Refused(r) => {
                refusal_headers(r, resp.headers_mut());
                r.kind.closes_connection()
            }
            Self::Framing(_) | Self::ClientBody(_) | Self::ClientTimeout | Self::BadPath => true,
            Self::NoRoute | Self::Upstream(_) | Self::AllHostsDown => false,
        };
        if closes {
            // The connection's byte stream can no longer be trusted.
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

fn refusal_headers(r: &Refusal, headers: &mut http::HeaderMap) {
    if let Some(challenge) = &r.www_authenticate {
        headers.insert(WWW_AUTHENTICATE, challenge.clone());
    }
    if let Some(secs) = r.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
}

/// What Tyk's all-hosts-down stub answers.
const ALL_HOSTS_DOWN: &str = "all hosts are down";

/// Tyk sends a request whose every load-balanced host is down to a stub that answers with Go's
/// `http.Error`: plain text (with its newline), not the JSON error template.
fn all_hosts_down() -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from_static(b"all hosts are down\n")));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// A gateway-generated error in Tyk's stock JSON template: `{\n    "error": "<message>"\n}`.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
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
    use crate::refusal::RefusalKind;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn tyk_error_shape() {
        let resp = GatewayError::NoRoute.into_response(&Messages::default());
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(resp.headers()["x-generator"], "tyk.io");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{\n    \"error\": \"Not Found\"\n}");
    }

    #[test]
    fn refusal_headers_and_connection() {
        let resp = GatewayError::Refused(Refusal::retry_after(RefusalKind::QuotaExceeded, 7))
            .into_response(&Messages::default());
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()[RETRY_AFTER], "7");
        assert!(!resp.headers().contains_key(CONNECTION));
        let resp = GatewayError::Refused(Refusal::new(RefusalKind::BodyTooLarge))
            .into_response(&Messages::default());
        assert_eq!(resp.status(), 413);
        assert_eq!(resp.headers()[CONNECTION], "close");
    }

    #[tokio::test]
    async fn all_hosts_down_is_tyks_plain_text() {
        let err = GatewayError::AllHostsDown;
        assert_eq!(
            err.status_and_message(&Messages::default()),
            (StatusCode::SERVICE_UNAVAILABLE, "all hosts are down")
        );
        let resp = err.into_response(&Messages::default());
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(resp.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(!resp.headers().contains_key("x-generator"));
        assert!(!resp.headers().contains_key(CONNECTION));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"all hosts are down\n");
    }

    #[test]
    fn escaping() {
        assert_eq!(serde_json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
