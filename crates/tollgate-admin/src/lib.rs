//! The Gateway REST API: Tyk's admin endpoints under `/tyk/`, plus `/hello`.
//!
//! Served on the proxy port by the workers (through [`tollgate_proxy::AdminApi`]). Every `/tyk/` call
//! needs the `x-tyk-authorization` header equal to the configured secret (compared in constant
//! time); an empty secret keeps the admin API closed. Bodies and messages are Tyk's, so
//! existing scripts and tools keep working.

mod apis;
mod error;
mod keys;
mod policies;
mod reply;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use subtle::ConstantTimeEq;
use tollgate_proxy::headers::X_TYK_AUTHORIZATION;
use tollgate_proxy::{AdminApi, Gateway, ReloadHandle};

use crate::error::AdminError;
use crate::reply::{Reply, json_reply, status_reply};

/// The admin API.
#[derive(Debug)]
pub struct Admin {
    reload: ReloadHandle,
}

impl Admin {
    /// Creates the admin API; reload calls go to `reload`.
    pub fn new(reload: ReloadHandle) -> Arc<Self> {
        Arc::new(Self { reload })
    }
}

impl AdminApi for Admin {
    fn handle(
        &self,
        gateway: Arc<Gateway>,
        req: Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send + 'static>> {
        let reload = self.reload.clone();
        Box::pin(async move {
            route(&gateway, &reload, req)
                .await
                .unwrap_or_else(AdminError::into_reply)
        })
    }
}

async fn route(
    gateway: &Arc<Gateway>,
    reload: &ReloadHandle,
    req: Request<Incoming>,
) -> Result<Reply, AdminError> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    if path == "/hello" {
        return if req.method() == Method::GET || req.method() == Method::HEAD {
            Ok(health(gateway).await)
        } else {
            Err(AdminError::MethodNotAllowed)
        };
    }
    if !authorised(gateway, &req) {
        return Err(AdminError::Forbidden);
    }
    // Segments are ids (keys end in `=` that clients often send as `%3D`): decode them fully.
    let decoded: Vec<String> = path
        .trim_start_matches("/tyk")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let block = query_flag(&req, "block");
    match segments.as_slice() {
        ["reload"] | ["reload", "group"] => {
            if req.method() != Method::GET {
                return Err(AdminError::MethodNotAllowed);
            }
            // On Redis a group reload is announced to every node (this one hears it too); on
            // one node it is a local reload.
            if segments.len() == 2
                && let Some(redis) = gateway.sessions.redis_store()
            {
                let message = tollgate_storage::notify::Notification::group_reload();
                if let Err(e) = redis.publish(&message.to_json(redis.node_secret())).await {
                    tracing::warn!(error = %e, "announcing a group reload failed; reloading this node only");
                    reload.request("admin API (group, local only)");
                }
            }
            if block {
                reload
                    .request_and_wait("admin API")
                    .await
                    .map_err(|e| AdminError::internal(format!("Reload failed: {e}"), e))?;
            } else {
                reload.request("admin API");
            }
            Ok(status_reply(StatusCode::OK, "ok", ""))
        }
        ["apis"] => match *req.method() {
            Method::GET => Ok(apis::list(gateway)),
            Method::POST => apis::create(gateway, req).await,
            _ => Err(AdminError::MethodNotAllowed),
        },
        ["apis", id] => {
            let id = (*id).to_owned();
            match *req.method() {
                Method::GET => apis::get(gateway, &id),
                Method::PUT => apis::update(gateway, &id, req).await,
                Method::DELETE => apis::delete(gateway, &id).await,
                _ => Err(AdminError::MethodNotAllowed),
            }
        }
        ["keys"] => match *req.method() {
            Method::GET => keys::list(gateway, &req).await,
            Method::POST => keys::create_generated(gateway, req).await,
            _ => Err(AdminError::MethodNotAllowed),
        },
        ["keys", "policy", key] if req.method() == Method::POST => {
            let key = (*key).to_owned();
            keys::set_policies(gateway, &key, req).await
        }
        ["keys", "create"] if req.method() == Method::POST => {
            keys::create_generated(gateway, req).await
        }
        ["keys", key] => {
            let key = (*key).to_owned();
            match *req.method() {
                Method::GET => keys::get(gateway, &key, &req).await,
                Method::POST => keys::create_custom(gateway, &key, req).await,
                Method::PUT => keys::update(gateway, &key, req).await,
                Method::DELETE => keys::delete(gateway, &key, &req).await,
                _ => Err(AdminError::MethodNotAllowed),
            }
        }
        ["analytics", "records"] => match *req.method() {
            Method::GET => analytics_records(gateway, &req),
            _ => Err(AdminError::MethodNotAllowed),
        },
        ["analytics", "aggregates"] => match *req.method() {
            Method::GET => analytics_aggregates(gateway, &req),
            _ => Err(AdminError::MethodNotAllowed),
        },
        ["cache", "jwks"] if req.method() == Method::DELETE => {
            Ok(apis::invalidate_jwks(gateway, None))
        }
        ["cache", "jwks", id] if req.method() == Method::DELETE => {
            Ok(apis::invalidate_jwks(gateway, Some(id)))
        }
        ["policies"] => match *req.method() {
            Method::GET => Ok(policies::list(gateway)),
            Method::POST => policies::create(gateway, None, req).await,
            _ => Err(AdminError::MethodNotAllowed),
        },
        ["policies", id] => {
            let id = (*id).to_owned();
            match *req.method() {
                Method::GET => policies::get(gateway, &id),
                Method::POST => policies::create(gateway, Some(&id), req).await,
                Method::PUT => policies::update(gateway, &id, req).await,
                Method::DELETE => policies::delete(gateway, &id).await,
                _ => Err(AdminError::MethodNotAllowed),
            }
        }
        _ => Err(AdminError::NotFound("Not found")),
    }
}

fn authorised(gateway: &Gateway, req: &Request<Incoming>) -> bool {
    let secret = &gateway.config.secret;
    if secret.is_empty() {
        return false;
    }
    let Some(given) = req.headers().get(X_TYK_AUTHORIZATION) else {
        return false;
    };
    // Lengths are compared first in `ct_eq` without leaking content.
    given.as_bytes().ct_eq(secret.expose().as_bytes()).into()
}

/// Decodes `%XX` escapes in an id (`+` stays a plus); a malformed escape is kept as it is.
fn percent_decode(s: &str) -> String {
    tollgate_proxy::percent::decode(s, tollgate_proxy::percent::Plus::Literal).into_owned()
}

/// A query parameter's value (raw; admin parameters are ids and flags).
pub(crate) fn query_value(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.to_owned())
    })
}

/// A boolean query flag (`true` or `1`).
pub(crate) fn query_flag(req: &Request<Incoming>, name: &str) -> bool {
    query_value(req, name).is_some_and(|v| matches!(v.as_str(), "true" | "1"))
}

/// Largest admin request body accepted.
const MAX_ADMIN_BODY: usize = 16 * 1024 * 1024;

/// Reads a JSON object body; `None` when it is not one.
pub(crate) async fn read_json(req: Request<Incoming>) -> Option<serde_json::Value> {
    use http_body_util::{BodyExt as _, Limited};
    let body = Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let doc: serde_json::Value = serde_json::from_slice(&body).ok()?;
    doc.is_object().then_some(doc)
}

/// Tyk's health document: always 200; `status` is `fail` when the key store is unreachable.
async fn health(gateway: &Gateway) -> Reply {
    let mut details = serde_json::Map::new();
    let mut status = "pass";
    if let Some(redis) = gateway.sessions.redis_store() {
        let time = tollgate_session::time::rfc3339_utc(tollgate_session::time::unix_now());
        let mut component =
            serde_json::json!({"status": "pass", "componentType": "datastore", "time": time});
        if let Err(e) = redis.ping().await {
            status = "fail";
            component["status"] = "fail".into();
            component["output"] = e.to_string().into();
        }
        details.insert("redis".into(), component);
    }
    json_reply(
        StatusCode::OK,
        &serde_json::json!({
            "status": status,
            "version": concat!("v", env!("CARGO_PKG_VERSION")),
            "description": "Tollgate GW",
            "details": details,
        }),
    )
}

const ANALYTICS_OFF: AdminError = AdminError::Invalid(std::borrow::Cow::Borrowed(
    "Analytics are not enabled (enable_analytics)",
));

/// `GET /tyk/analytics/aggregates?api_id=X[&from=unix][&to=unix]`: this node's aggregates
/// (default range: the last 24 hours).
fn analytics_aggregates(gateway: &Gateway, req: &Request<Incoming>) -> Result<Reply, AdminError> {
    let queue = gateway.analytics.as_ref().ok_or(ANALYTICS_OFF)?;
    let api_id = query_value(req, "api_id")
        .filter(|v| !v.is_empty())
        .ok_or(AdminError::Invalid("missing api_id parameter".into()))?;
    let now = tollgate_session::time::unix_now();
    let number = |name: &str, default: i64| match query_value(req, name) {
        None => Ok(default),
        Some(v) => v.parse::<i64>().map_err(|_| name.to_owned()),
    };
    let (from, to) = match (number("from", now - 86_400), number("to", now + 1)) {
        (Ok(f), Ok(t)) if f <= t => (f, t),
        (Err(name), _) | (_, Err(name)) => {
            return Err(AdminError::Invalid(
                format!("`{name}` must be Unix seconds").into(),
            ));
        }
        _ => return Err(AdminError::Invalid("`from` is after `to`".into())),
    };
    let summary = queue
        .aggregates()
        .summary(&percent_decode(&api_id), from, to);
    encoded(&summary)
}

fn encoded(value: &impl serde::Serialize) -> Result<Reply, AdminError> {
    let v = serde_json::to_value(value).map_err(|e| AdminError::internal("encoding failed", e))?;
    Ok(json_reply(StatusCode::OK, &v))
}

/// `GET /tyk/analytics/records[?api_id=X][&limit=N]`: this node's most recent records,
/// newest first (at most 1000 are kept; default limit 100).
fn analytics_records(gateway: &Gateway, req: &Request<Incoming>) -> Result<Reply, AdminError> {
    let queue = gateway.analytics.as_ref().ok_or(ANALYTICS_OFF)?;
    let limit = match query_value(req, "limit").map(|v| v.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) => n,
        Some(Err(_)) => return Err(AdminError::Invalid("`limit` must be a number".into())),
    };
    let api = query_value(req, "api_id").map(|a| percent_decode(&a));
    let records = queue.aggregates().recent(api.as_deref(), limit);
    encoded(&records)
}
