//! `/tyk/apis`: API definitions. Writes go to the definition source (files in `app_path`, or
//! the PostgreSQL table) and take effect on the next reload, as in Tyk; reads show what is
//! loaded now.

// Handlers return the finished error response as `Err`; boxing it buys nothing off the data path.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tollgate_definitions::pg::PgError;
use tollgate_definitions::{ApiSource, ApiSpec};
use tollgate_proxy::Gateway;

use crate::reply::{json_reply, modified_reply, status_reply};

type Reply = Response<Full<Bytes>>;

pub(crate) fn list(gateway: &Gateway) -> Reply {
    let routes = gateway.routes();
    let all: Vec<serde_json::Value> = routes.apis().iter().map(|a| a.raw.clone()).collect();
    json_reply(StatusCode::OK, &serde_json::Value::Array(all))
}

pub(crate) fn get(gateway: &Gateway, id: &str) -> Reply {
    match gateway.routes().api(id) {
        Some(api) => json_reply(StatusCode::OK, &api.raw),
        None => not_found(),
    }
}

pub(crate) async fn create(gateway: &Arc<Gateway>, req: Request<Incoming>) -> Reply {
    let mut doc = match read_definition(req).await {
        Ok(doc) => doc,
        Err(resp) => return resp,
    };
    let id = match doc.get("api_id").and_then(|v| v.as_str()) {
        Some(id) if !id.trim().is_empty() => id.to_owned(),
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            doc["api_id"] = serde_json::Value::String(id.clone());
            id
        }
    };
    if let Err(resp) = validate(&doc) {
        return resp;
    }
    let exists = || status_reply(StatusCode::CONFLICT, "error", "API already exists");
    if gateway.routes().api(&id).is_some() {
        return exists();
    }
    if let Some(db) = &gateway.api_db {
        return match db.insert(&id, &doc).await {
            Ok(true) => modified_reply(&id, "added"),
            Ok(false) => exists(),
            Err(e) => db_error(&e),
        };
    }
    let file = default_file(gateway, &id);
    if file.exists() {
        return exists();
    }
    match write_atomically(&file, &doc).await {
        Ok(()) => modified_reply(&id, "added"),
        Err(e) => storage_error(&file, &e),
    }
}

pub(crate) async fn update(gateway: &Arc<Gateway>, id: &str, req: Request<Incoming>) -> Reply {
    let doc = match read_definition(req).await {
        Ok(doc) => doc,
        Err(resp) => return resp,
    };
    if doc.get("api_id").and_then(|v| v.as_str()) != Some(id) {
        return status_reply(
            StatusCode::BAD_REQUEST,
            "error",
            "Request APIID does not match that in Definition! For Update operations these must match.",
        );
    }
    if let Err(resp) = validate(&doc) {
        return resp;
    }
    if let Some(db) = &gateway.api_db {
        return match db.update(id, &doc).await {
            Ok(true) => modified_reply(id, "modified"),
            Ok(false) => not_found(),
            Err(e) => db_error(&e),
        };
    }
    let Some(file) = existing_file(gateway, id) else {
        return not_found();
    };
    match write_atomically(&file, &doc).await {
        Ok(()) => modified_reply(id, "modified"),
        Err(e) => storage_error(&file, &e),
    }
}

pub(crate) async fn delete(gateway: &Arc<Gateway>, id: &str) -> Reply {
    if let Some(db) = &gateway.api_db {
        return match db.delete(id).await {
            Ok(true) => modified_reply(id, "deleted"),
            Ok(false) => not_found(),
            Err(e) => db_error(&e),
        };
    }
    let Some(file) = existing_file(gateway, id) else {
        return not_found();
    };
    match tokio::fs::remove_file(&file).await {
        Ok(()) => modified_reply(id, "deleted"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => not_found(),
        Err(e) => storage_error(&file, &e),
    }
}

fn not_found() -> Reply {
    status_reply(StatusCode::NOT_FOUND, "error", "API not found")
}

async fn read_definition(req: Request<Incoming>) -> Result<serde_json::Value, Reply> {
    crate::read_json(req)
        .await
        .ok_or_else(|| status_reply(StatusCode::BAD_REQUEST, "error", "Request malformed"))
}

fn validate(doc: &serde_json::Value) -> Result<(), Reply> {
    ApiSpec::from_json(doc).map(|_| ()).map_err(|e| {
        status_reply(
            StatusCode::BAD_REQUEST,
            "error",
            &format!("Validation of API Definition failed. Reason: {e}."),
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
async fn write_atomically(file: &Path, doc: &serde_json::Value) -> std::io::Result<()> {
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

fn storage_error(file: &Path, err: &std::io::Error) -> Reply {
    tracing::error!(file = %file.display(), error = %err, "writing an API definition failed");
    status_reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        "error",
        "Unable to write the API definition",
    )
}

fn db_error(err: &PgError) -> Reply {
    tracing::error!(error = %err, "writing an API definition to the database failed");
    status_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "error",
        "API definitions database unavailable, nothing was changed",
    )
}
