//! `/tyk/apis`: API definitions. Writes go to the definition source (files in `app_path`, or
//! the PostgreSQL table) and take effect on the next reload, as in Tyk; reads show what is
//! loaded now.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tollgate_definitions::{ApiSource, ApiSpec};
use tollgate_proxy::Gateway;

use crate::error::AdminError;
use crate::reply::{Reply, json_reply, modified_reply};

const NOT_FOUND: AdminError = AdminError::NotFound("API not found");
const EXISTS: AdminError = AdminError::Conflict("API already exists");

pub(crate) fn list(gateway: &Gateway) -> Reply {
    let routes = gateway.routes();
    let all: Vec<serde_json::Value> = routes.apis().iter().map(|a| a.raw.clone()).collect();
    json_reply(StatusCode::OK, &serde_json::Value::Array(all))
}

pub(crate) fn get(gateway: &Gateway, id: &str) -> Result<Reply, AdminError> {
    let routes = gateway.routes();
    let api = routes.api(id).ok_or(NOT_FOUND)?;
    Ok(json_reply(StatusCode::OK, &api.raw))
}

pub(crate) async fn create(
    gateway: &Arc<Gateway>,
    req: Request<Incoming>,
) -> Result<Reply, AdminError> {
    let mut doc = read_definition(req).await?;
    let id = match doc.get("api_id").and_then(|v| v.as_str()) {
        Some(id) if !id.trim().is_empty() => id.to_owned(),
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            doc["api_id"] = serde_json::Value::String(id.clone());
            id
        }
    };
    validate(&doc)?;
    if gateway.routes().api(&id).is_some() {
        return Err(EXISTS);
    }
    if let Some(db) = &gateway.api_db {
        return match db.insert(&id, &doc).await {
            Ok(true) => Ok(modified_reply(&id, "added")),
            Ok(false) => Err(EXISTS),
            Err(e) => Err(AdminError::DatabaseUnavailable(e)),
        };
    }
    let file = default_file(gateway, &id);
    if file.exists() {
        return Err(EXISTS);
    }
    write_atomically(&file, &doc).await?;
    Ok(modified_reply(&id, "added"))
}

pub(crate) async fn update(
    gateway: &Arc<Gateway>,
    id: &str,
    req: Request<Incoming>,
) -> Result<Reply, AdminError> {
    let doc = read_definition(req).await?;
    if doc.get("api_id").and_then(|v| v.as_str()) != Some(id) {
        return Err(AdminError::Invalid(
            "Request APIID does not match that in Definition! For Update operations these must match.".into(),
        ));
    }
    validate(&doc)?;
    if let Some(db) = &gateway.api_db {
        return match db.update(id, &doc).await {
            Ok(true) => Ok(modified_reply(id, "modified")),
            Ok(false) => Err(NOT_FOUND),
            Err(e) => Err(AdminError::DatabaseUnavailable(e)),
        };
    }
    let file = existing_file(gateway, id).ok_or(NOT_FOUND)?;
    write_atomically(&file, &doc).await?;
    Ok(modified_reply(id, "modified"))
}

pub(crate) async fn delete(gateway: &Arc<Gateway>, id: &str) -> Result<Reply, AdminError> {
    if let Some(db) = &gateway.api_db {
        return match db.delete(id).await {
            Ok(true) => Ok(modified_reply(id, "deleted")),
            Ok(false) => Err(NOT_FOUND),
            Err(e) => Err(AdminError::DatabaseUnavailable(e)),
        };
    }
    let file = existing_file(gateway, id).ok_or(NOT_FOUND)?;
    match tokio::fs::remove_file(&file).await {
        Ok(()) => Ok(modified_reply(id, "deleted")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NOT_FOUND),
        Err(source) => Err(AdminError::WriteFailed { file, source }),
    }
}

async fn read_definition(req: Request<Incoming>) -> Result<serde_json::Value, AdminError> {
    crate::read_json(req).await.ok_or(AdminError::Malformed)
}

fn validate(doc: &serde_json::Value) -> Result<(), AdminError> {
    ApiSpec::from_json(doc).map(|_| ()).map_err(|e| {
        AdminError::Invalid(
            format!(
                "Validation of API Definition failed. Reason: {}.",
                e.reason()
            )
            .into(),
        )
    })
}

fn default_file(gateway: &Gateway, id: &str) -> PathBuf {
    gateway.config.app_path.join(format!("{id}.json"))
}

/// The file an API lives in: the one it was loaded from, else `{app_path}/{id}.json` if that
/// exists (added but not reloaded yet).
fn existing_file(gateway: &Gateway, id: &str) -> Option<PathBuf> {
    if let Some(api) = gateway.routes().api(id)
        && let ApiSource::File(file) = &api.source
    {
        return Some(file.clone());
    }
    let file = default_file(gateway, id);
    file.exists().then_some(file)
}

/// Writes to a temporary file and renames it over the target, so a failed write never leaves
/// a half-written definition behind.
async fn write_atomically(file: &Path, doc: &serde_json::Value) -> Result<(), AdminError> {
    write_file_atomically(file, doc)
        .await
        .map_err(|source| AdminError::WriteFailed {
            file: file.to_owned(),
            source,
        })
}

pub(crate) async fn write_file_atomically(
    file: &Path,
    doc: &serde_json::Value,
) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(doc)?;
    text.push(b'\n');
    let tmp = file.with_extension("json.tmp");
    tokio::fs::write(&tmp, &text).await?;
    let synced = async {
        let f = tokio::fs::File::open(&tmp).await?;
        f.sync_all().await
    };
    if let Err(e) = synced.await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    if let Err(e) = tokio::fs::rename(&tmp, file).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    Ok(())
}

/// `DELETE /tyk/cache/jwks[/{api_id}]`: the JWKS keys of one API (or of all) are forgotten and
/// fetched again by the next token. Idempotent, as in Tyk: an API without a JWKS (or unknown)
/// answers the same.
pub(crate) fn invalidate_jwks(gateway: &Gateway, id: Option<&str>) -> Reply {
    let routes = gateway.routes();
    for api in routes.apis() {
        if id.is_some_and(|id| *api.spec.api_id != *id) {
            continue;
        }
        if let tollgate_definitions::AuthMode::Jwt(_, jwt) = &api.spec.auth {
            jwt.invalidate_keys();
        }
    }
    crate::reply::status_reply(StatusCode::OK, "ok", "cache invalidated")
}
