//! What one request carries through the gateway (pingora's per-request `CTX`).
//!
//! [`RequestCtx`] is created when a request arrives and lives until the observe phase has
//! read it after the response: every phase writes what it learned (the API, the key, the
//! limits' and CORS headers, why it was refused, how long the upstream took) and nothing reads a
//! response's text to find out what happened. [`StageRequest`] is the borrowed view the
//! stages work on: the request head they may rewrite, its API and the key store.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method};
use tollgate_definitions::ApiSpec;
use tollgate_rules::cors::CorsHeaders;
use tollgate_rules::headers::HeaderEdit;
use tollgate_session::ActiveKey;
use tollgate_storage::Sessions;

use crate::error::GatewayError;
use crate::headers::RateHeaders;
use crate::refusal::{RefusalClass, RefusalKind};

/// The request as the stages see it.
#[derive(Debug)]
pub struct StageRequest<'a> {
    /// The request head (path already normalised); stages may rewrite it.
    pub head: &'a mut Parts,
    /// The API being served.
    pub api: &'a ApiSpec,
    /// Where keys are looked up.
    pub sessions: &'a Sessions,
    /// The socket peer's address.
    pub peer: IpAddr,
    /// The certificate the client presented in the TLS handshake, if any.
    pub client_cert: Option<tollgate_tls::client_auth::ClientCert>,
}

/// Per-request state, written by the phases and read by the final observe phase.
#[derive(Debug, Default)]
pub struct RequestCtx {
    /// When the request arrived, when anything observes it.
    pub started: Option<Instant>,
    /// What the request looked like on arrival (only when something observes it).
    pub arrival: Option<Arrival>,
    /// The API that served it, once routed.
    pub api_id: Option<Arc<str>>,
    /// What its analytics record needs from the API, when one is written.
    pub track: Option<Arc<RecordTexts>>,
    /// The body cap the forwarding step enforces while streaming; stages may lower it.
    pub body_limit: Option<u64>,
    /// The endpoint's hard timeout, which the forwarding step uses instead of
    /// `proxy_default_timeout`.
    pub upstream_timeout: Option<Duration>,
    /// An `ignored` endpoint: authentication and limits are skipped.
    pub ignored: bool,
    /// `x-tyk-api-expires` for the response, when the API has an expiry.
    pub api_expires: Option<HeaderValue>,
    /// The key, once authentication found one.
    pub key: Option<Arc<ActiveKey>>,
    /// The id that key is stored under.
    pub key_id: Option<Box<str>>,
    /// `X-RateLimit-*` values for the response, set by the limit stages.
    pub rate_headers: Option<RateHeaders>,
    /// CORS headers for whatever response the request gets, once the CORS stage ran.
    pub cors: Option<CorsHeaders>,
    /// Response header transforms, rendered while the request was at hand, for the
    /// upstream's response.
    pub response_edits: Vec<HeaderEdit>,
    /// Where a URL rewrite sends the request, when one matched.
    pub rewrite: Option<RewriteTo>,
    /// Why the gateway refused the request itself.
    pub refusal: Option<RefusalClass>,
    /// The key store could not be reached.
    pub store_error: bool,
    /// The upstream could not be reached or did not answer in time.
    pub upstream_error: bool,
    /// Time the upstream took to answer, when the request reached one.
    pub upstream: Option<Duration>,
}

/// A URL rewrite's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteTo {
    /// This path and query, joined to the API's target as the request path would be.
    Path(PathAndQuery),
    /// Another upstream (`rewrite_to` was an `http://` or `https://` URL).
    Url {
        /// Where to connect (`host:port`, the port always written).
        authority: Authority,
        /// Its Host header (as the URL wrote it).
        host: HeaderValue,
        /// Path and query sent as they are.
        path_and_query: PathAndQuery,
        /// For `https`: the name its certificate is checked against and sent as SNI.
        tls: Option<tollgate_tls::client::ServerName<'static>>,
    },
}

/// The request as it arrived, for analytics and the access log.
#[derive(Debug)]
pub struct Arrival {
    /// `X-Request-Id` (the client's or the one the gateway added).
    pub request_id: Option<HeaderValue>,
    /// Method.
    pub method: Method,
    /// Path as sent, before normalisation.
    pub path: String,
    /// When it arrived, for analytics.
    pub timestamp: Option<tollgate_analytics::Timestamp>,
    /// `User-Agent`, for analytics.
    pub user_agent: String,
    /// `Content-Length` (0 when absent), for analytics.
    pub content_length: i64,
}

/// What every analytics record of one API carries, made once when the API loads.
#[derive(Debug)]
pub struct RecordTexts {
    /// API name.
    pub api_name: Arc<str>,
    /// Organisation.
    pub org_id: Arc<str>,
    /// Upstream host.
    pub host: Arc<str>,
    /// `org-<id>` tag.
    pub org_tag: Arc<str>,
    /// `api-<id>` tag.
    pub api_tag: Arc<str>,
    /// The listen path, when the API strips it (records show the path without it).
    pub strip: Option<Box<str>>,
    /// The version served (`Non Versioned` for a not-versioned API).
    pub api_version: Arc<str>,
}

impl RecordTexts {
    /// The texts of one API (one version of it, when versioned).
    pub fn new(spec: &ApiSpec) -> Self {
        Self {
            api_name: Arc::clone(&spec.name),
            org_id: Arc::clone(&spec.org_id),
            host: spec.target.host_header.to_str().unwrap_or("").into(),
            org_tag: format!("org-{}", spec.org_id).into(),
            api_tag: format!("api-{}", spec.api_id).into(),
            strip: spec
                .strip_listen_path
                .then(|| spec.listen_path.as_str().into()),
            api_version: if spec.versioning.is_some() {
                spec.version.name.as_ref().into()
            } else {
                "Non Versioned".into()
            },
        }
    }
}

impl RequestCtx {
    /// Notes a stage's refusal.
    pub fn refused(&mut self, kind: RefusalKind) {
        self.refusal = Some(kind.class());
        self.store_error = kind == RefusalKind::StoreUnavailable;
    }

    /// Notes an error that ended the request.
    pub fn failed(&mut self, err: &GatewayError) {
        match err {
            GatewayError::Refused(r) => self.refused(r.kind),
            GatewayError::Upstream(_) | GatewayError::AllHostsDown => self.upstream_error = true,
            _ => self.refusal = Some(RefusalClass::Other),
        }
    }
}
