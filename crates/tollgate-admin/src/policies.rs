//! `/tyk/policies`: the loaded policies, and writes to the `policies.policy_path` folder (one
//! `{id}.json` per policy). As in Tyk, a write takes effect on the next reload; reads show
//! what is loaded now.

use std::path::{Path, PathBuf};

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tollgate_proxy::Gateway;
use tollgate_session::Policy;

use crate::error::AdminError;
use crate::reply::{Reply, json_reply, modified_reply};

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

/// `POST /tyk/policies[/{id}]`: the id from the URL, else from the body.
pub(crate) async fn create(
    gateway: &Gateway,
    path_id: Option<&str>,
    req: Request<Incoming>,
) -> Result<Reply, AdminError> {
    let dir = folder(gateway)?;
    let mut doc = read_policy(req).await?;
    let id = match path_id {
        Some(id) => id.to_owned(),
        None => body_id(&doc).unwrap_or_default(),
    };
    if id.is_empty() {
        return Err(AdminError::Invalid(
            "Unable to create policy without id.".into(),
        ));
    }
    doc["id"] = serde_json::Value::String(id.clone());
    write(dir, &id, &doc).await?;
    Ok(modified_reply(&id, "added"))
}

/// `PUT /tyk/policies/{id}`: the body's id must be the URL's.
pub(crate) async fn update(
    gateway: &Gateway,
    id: &str,
    req: Request<Incoming>,
) -> Result<Reply, AdminError> {
    let dir = folder(gateway)?;
    let mut doc = read_policy(req).await?;
    match body_id(&doc) {
        Some(body) if body != id => {
            return Err(AdminError::Invalid(
                "Request ID does not match that in policy! For Update operations these must match."
                    .into(),
            ));
        }
        _ => doc["id"] = serde_json::Value::String(id.to_owned()),
    }
    write(dir, id, &doc).await?;
    Ok(modified_reply(id, "modified"))
}

/// `DELETE /tyk/policies/{id}`: removes its file.
pub(crate) async fn delete(gateway: &Gateway, id: &str) -> Result<Reply, AdminError> {
    let dir = folder(gateway)?;
    let file = file_of(dir, id)?;
    match tokio::fs::remove_file(&file).await {
        Ok(()) => Ok(modified_reply(id, "deleted")),
        Err(source) => Err(AdminError::internal("Delete failed", source)),
    }
}

/// The folder writes go to; without `policies.policy_path` there is none (Tyk would write
/// next to its working directory, where nothing reads the file).
fn folder(gateway: &Gateway) -> Result<&Path, AdminError> {
    gateway
        .config
        .policy_dir
        .as_deref()
        .ok_or_else(|| storage_error(std::io::Error::other("policies.policy_path is not set")))
}

fn storage_error(source: std::io::Error) -> AdminError {
    AdminError::internal("Unable to access policy storage.", source)
}

/// The body, which must be a policy object (a field of the wrong type is malformed too).
async fn read_policy(req: Request<Incoming>) -> Result<serde_json::Value, AdminError> {
    let doc = crate::read_json(req).await.ok_or(AdminError::Malformed)?;
    serde_json::from_value::<Policy>(doc.clone()).map_err(|_| AdminError::Malformed)?;
    Ok(doc)
}

fn body_id(doc: &serde_json::Value) -> Option<String> {
    doc.get("id")
        .and_then(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// `{dir}/{id}.json`; an id that could name another file (`/`, `..`, a control character) is
/// refused, as Tyk does without `allow_unsafe_policy_ids`.
fn file_of(dir: &Path, id: &str) -> Result<PathBuf, AdminError> {
    let safe = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':'));
    if !safe {
        return Err(AdminError::Invalid("Invalid Policy ID".into()));
    }
    Ok(dir.join(format!("{id}.json")))
}

async fn write(dir: &Path, id: &str, doc: &serde_json::Value) -> Result<(), AdminError> {
    let file = file_of(dir, id)?;
    crate::apis::write_file_atomically(&file, doc)
        .await
        .map_err(storage_error)
}
