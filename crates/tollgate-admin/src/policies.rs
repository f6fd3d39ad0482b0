//! `/tyk/policies`: the loaded policies (file source; read-only here).

use http::StatusCode;
use tollgate_proxy::Gateway;

use crate::error::AdminError;
use crate::reply::{Reply, json_reply};

pub(crate) fn list(gateway: &Gateway) -> Reply {
    let set = gateway.sessions.policy_set();
    let all: Vec<serde_json::Value> = set
        .all()
        .into_iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
    json_reply(StatusCode::OK, &serde_json::Value::Array(all))
}

pub(crate) fn get(gateway: &Gateway, id: &str) -> Result<Reply, AdminError> {
    let set = gateway.sessions.policy_set();
    let v = set
        .get(id)
        .and_then(|p| serde_json::to_value(p).ok())
        .ok_or(AdminError::NotFound("Policy not found"))?;
    Ok(json_reply(StatusCode::OK, &v))
}
