//! Tyk's admin API response envelopes: JSON followed by a newline.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// An admin response.
pub(crate) type Reply = Response<Full<Bytes>>;

/// Any JSON value as a response.
pub(crate) fn json_reply(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    body.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `{"status": ..., "message": ...}`.
pub(crate) fn status_reply(status: StatusCode, word: &str, message: &str) -> Response<Full<Bytes>> {
    json_reply(
        status,
        &serde_json::json!({"status": word, "message": message}),
    )
}

/// `{"key": ..., "status": "ok", "action": ...}`.
pub(crate) fn modified_reply(key: &str, action: &str) -> Response<Full<Bytes>> {
    json_reply(
        StatusCode::OK,
        &serde_json::json!({"key": key, "status": "ok", "action": action}),
    )
}
