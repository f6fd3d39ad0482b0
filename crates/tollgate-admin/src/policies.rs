//! `/tyk/policies`: the loaded policies (file source; read-only here).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use tollgate_proxy::Gateway;

use crate::reply::{json_reply, status_reply};

pub(crate) fn list(gateway: &Gateway) -> Response<Full<Bytes>> {
    let set = gateway.sessions.policy_set();
    let all: Vec<serde_json::Value> = set
        .all()
        .into_iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
    json_reply(StatusCode::OK, &serde_json::Value::Array(all))
}

pub(crate) fn get(gateway: &Gateway, id: &str) -> Response<Full<Bytes>> {
    let set = gateway.sessions.policy_set();
    match set.get(id).and_then(|p| serde_json::to_value(p).ok()) {
        Some(v) => json_reply(StatusCode::OK, &v),
        None => status_reply(StatusCode::NOT_FOUND, "error", "Policy not found"),
    }
}
