//! The data path of the gateway.
//!
//! A request's way through, top to bottom (docs/architecture.md draws it whole):
//!
//! 1. [`server`]: a worker thread per core, each with its own `SO_REUSEPORT` listener,
//!    single-threaded runtime and upstream pool, so a request never changes thread.
//! 2. [`framing`]: strict HTTP/1.1 framing and size limits before hyper parses a head.
//! 3. The lifecycle (`proxy.rs`, one function top to bottom): path normalisation ([`path`]),
//!    admin paths, routing ([`router`]), the API's stage chain ([`chain`]) working on the
//!    request context ([`ctx`]) and refusing with typed refusals ([`refusal`]), the load
//!    balancer's pick ([`balance`]), forwarding ([`upstream`]), the response, and the observe
//!    phase (metrics, analytics, access log).
//!
//! [`Gateway`] is the state every worker shares: the config and the current routing table,
//! swapped whole on reload.

mod auth;
pub mod balance;
pub mod body;
pub mod chain;
mod client_certs;
mod cors;
pub mod ctx;
mod endpoint_rules;
mod endpoints;
pub mod error;
pub mod framing;
pub mod headers;
mod hmac;
mod ip_rules;
mod jwt;
mod limits;
pub mod metrics;
mod observe;
pub mod path;
pub use tollgate_rules::percent;
mod proxy;
pub mod refusal;
pub mod request_body;
mod respond;
pub mod router;
pub mod server;
mod transforms;
pub mod upstream;
mod versions;
mod worker;
pub mod write_deadline;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};
use tollgate_config::GatewayConfig;

pub use router::Routes;

/// Entry points for the fuzz targets in `fuzz/`: thin wrappers over private parsers, with no
/// behaviour of their own. Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use http::request::Parts;
    use tollgate_definitions::CredentialSource;

    /// `Basic base64(user:password)` → `(user, password)`; `None` where the gateway refuses.
    pub fn parse_basic(value: &str) -> Option<(String, String)> {
        crate::auth::parse_basic(value).ok()
    }

    /// Finds the credential as the auth stages do and strips it from where it was found (as
    /// `strip_auth_data` does): `(value, raw, "header" | "param" | "cookie")`.
    pub fn find_and_strip_credential(
        head: &mut Parts,
        source: &CredentialSource,
    ) -> Option<(String, String, &'static str)> {
        crate::auth::find_and_strip(head, source)
    }
}

/// The Gateway REST API (`/tyk/...`, `/hello`), served on the proxy port by the workers.
pub trait AdminApi: Send + Sync + 'static {
    /// Answers one admin request.
    fn handle(
        &self,
        gateway: Arc<Gateway>,
        req: Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send + 'static>>;
}

/// State shared by every worker.
pub struct Gateway {
    /// The process configuration (not reloaded, as in Tyk).
    pub config: Arc<GatewayConfig>,
    routes: ArcSwap<RouteSet>,
    /// Bumped after every swap; workers compare it to refresh their cached table.
    generation: AtomicU64,
    admin: Arc<dyn AdminApi>,
    /// Keys and policies.
    pub sessions: Arc<tollgate_storage::Sessions>,
    /// The PostgreSQL definitions table, when definitions come from there.
    pub api_db: Option<Arc<tollgate_definitions::pg::PgApiStore>>,
    /// Prometheus metrics, when enabled.
    pub metrics: Option<Arc<metrics::Metrics>>,
    /// The analytics queue, when analytics are recorded.
    pub analytics: Option<Arc<tollgate_analytics::AnalyticsQueue>>,
    /// The gateway's own error messages, after `override_messages`.
    pub messages: refusal::Messages,
    /// The listeners' TLS (`http_server_options.use_ssl`); its certificates are read again on
    /// every reload.
    pub tls: Option<Arc<tollgate_tls::ServerTls>>,
}

/// TLS handshakes ask for a client certificate while some API uses mutual TLS, and only then
/// (a browser would otherwise offer the user a certificate to pick for every site).
fn ask_for_client_certs(tls: Option<&tollgate_tls::ServerTls>, routes: &Routes) {
    if let Some(tls) = tls {
        tls.ask_for_client_certs(routes.apis().iter().any(|a| {
            a.spec.client_certs.is_some()
                || matches!(a.spec.auth, tollgate_definitions::AuthMode::CertificateKey)
        }));
    }
}

impl Gateway {
    /// Creates the shared state with an initial routing table.
    pub fn new(
        config: Arc<GatewayConfig>,
        routes: Routes,
        admin: Arc<dyn AdminApi>,
        sessions: Arc<tollgate_storage::Sessions>,
        api_db: Option<Arc<tollgate_definitions::pg::PgApiStore>>,
        analytics: Option<Arc<tollgate_analytics::AnalyticsQueue>>,
        tls: Option<Arc<tollgate_tls::ServerTls>>,
    ) -> Arc<Self> {
        let config_for_set = Arc::clone(&config);
        ask_for_client_certs(tls.as_deref(), &routes);
        Arc::new(Self {
            config,
            routes: ArcSwap::from_pointee(RouteSet::new(routes, &config_for_set, 0)),
            generation: AtomicU64::new(0),
            admin,
            sessions,
            api_db,
            analytics,
            tls,
            messages: refusal::Messages::compile(&config_for_set.file.override_messages),
            metrics: config_for_set
                .prometheus
                .is_some()
                .then(|| metrics::Metrics::new(config_for_set.worker_threads)),
        })
    }

    /// The current routing table (for the admin API). In-flight requests keep the snapshot
    /// they started with.
    pub fn routes(&self) -> Arc<Routes> {
        Arc::clone(&self.routes.load().primary)
    }

    /// Answers an admin API request.
    pub async fn admin_handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.admin.handle(Arc::clone(self), req).await
    }

    /// Replaces the routing table atomically (every worker picks it up on its next request).
    pub fn swap_routes(&self, routes: Routes) {
        ask_for_client_certs(self.tls.as_deref(), &routes);
        if let Some(m) = &self.metrics {
            m.reloaded(tollgate_session::time::unix_now());
        }
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        self.routes
            .store(Arc::new(RouteSet::new(routes, &self.config, generation)));
        self.generation.store(generation, Ordering::Release);
    }

    /// The current table of one worker: `(generation, table)`.
    pub(crate) fn worker_routes(&self, worker: usize) -> (u64, Arc<Routes>) {
        let set = self.routes.load();
        let table = set.workers.get(worker).unwrap_or(&set.primary);
        (set.generation, Arc::clone(table))
    }

    /// The generation of the current table.
    pub(crate) fn routes_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// One routing table per worker thread (plus one for the admin API), built from the same
/// definitions. Workers never share a table, so request-time reference counting stays on
/// the worker's own core.
struct RouteSet {
    generation: u64,
    primary: Arc<Routes>,
    workers: Vec<Arc<Routes>>,
}

impl RouteSet {
    fn new(primary: Routes, config: &GatewayConfig, generation: u64) -> Self {
        let workers = (0..config.worker_threads)
            .map(|_| Arc::new(primary.detached(config)))
            .collect();
        Self {
            generation,
            primary: Arc::new(primary),
            workers,
        }
    }
}

/// One reload request: `done` (if any) is answered once the new table is live.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Who asked (for the log).
    pub reason: &'static str,
    /// Answered with the reload's outcome when it has been applied.
    pub done: Option<oneshot::Sender<Result<(), ReloadError>>>,
}

/// Why a reload did not happen. Cloned to every caller a coalesced reload answers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    /// The reloader task is gone (the gateway is stopping).
    #[error("the reloader has stopped")]
    Stopped,
    /// The definitions could not be read; the old table stays.
    #[error(transparent)]
    Failed(Arc<dyn std::error::Error + Send + Sync>),
}

impl ReloadError {
    /// A failed reload with its cause.
    pub fn failed(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Failed(Arc::from(err.into()))
    }
}

/// Asks the reloader (owned by the binary) to re-read the API definitions.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    tx: mpsc::UnboundedSender<ReloadRequest>,
}

impl ReloadHandle {
    /// A handle and the queue the reloader drains.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<ReloadRequest>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Queues a reload without waiting.
    pub fn request(&self, reason: &'static str) {
        let _ = self.tx.send(ReloadRequest { reason, done: None });
    }

    /// Queues a reload and waits until the new routing table is live.
    ///
    /// # Errors
    /// The reload failed (the old table stays), or the reloader is gone.
    pub async fn request_and_wait(&self, reason: &'static str) -> Result<(), ReloadError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(ReloadRequest {
                reason,
                done: Some(done),
            })
            .map_err(|_| ReloadError::Stopped)?;
        rx.await.map_err(|_| ReloadError::Stopped)?
    }
}

/// The client address of a connection, as the workers see it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);
