//! The data path of the gateway.
//!
//! A request's way through, top to bottom (each step is a module):
//!
//! 1. [`server`]: a worker thread per core, each with its own `SO_REUSEPORT` listener,
//!    single-threaded runtime and upstream pool, so a request never changes thread.
//! 2. [`framing`]: strict HTTP/1.1 framing and size limits before hyper parses a head.
//! 3. [`proxy`]: the per-request flow: admin paths, path normalisation ([`path`]), routing
//!    ([`router`]), the API's stage chain ([`chain`]), forwarding ([`upstream`]) and the
//!    response.
//!
//! [`Gateway`] is the state every worker shares: the config and the current routing table,
//! swapped whole on reload.

mod auth;
pub mod body;
pub mod chain;
pub mod error;
pub mod framing;
pub mod headers;
pub mod limits;
pub mod path;
pub mod proxy;
pub mod router;
pub mod server;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};
use tollgate_config::GatewayConfig;

pub use router::Routes;

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
    routes: ArcSwap<Routes>,
    admin: Arc<dyn AdminApi>,
    /// Keys and policies.
    pub sessions: Arc<tollgate_storage::Sessions>,
    /// The PostgreSQL definitions table, when definitions come from there.
    pub api_db: Option<Arc<tollgate_definitions::pg::PgApiStore>>,
}

impl Gateway {
    /// Creates the shared state with an initial routing table.
    pub fn new(
        config: Arc<GatewayConfig>,
        routes: Routes,
        admin: Arc<dyn AdminApi>,
        sessions: Arc<tollgate_storage::Sessions>,
        api_db: Option<Arc<tollgate_definitions::pg::PgApiStore>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            routes: ArcSwap::from_pointee(routes),
            admin,
            sessions,
            api_db,
        })
    }

    /// The current routing table. In-flight requests keep the snapshot they started with.
    pub fn routes(&self) -> arc_swap::Guard<Arc<Routes>> {
        self.routes.load()
    }

    /// Answers an admin API request.
    pub async fn admin_handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.admin.handle(Arc::clone(self), req).await
    }

    /// Replaces the routing table atomically.
    pub fn swap_routes(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }
}

/// One reload request: `done` (if any) is answered once the new table is live.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Who asked (for the log).
    pub reason: &'static str,
    /// Answered with the reload's outcome when it has been applied.
    pub done: Option<oneshot::Sender<Result<(), String>>>,
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
    pub async fn request_and_wait(&self, reason: &'static str) -> Result<(), String> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(ReloadRequest {
                reason,
                done: Some(done),
            })
            .map_err(|_| "the reloader has stopped".to_owned())?;
        rx.await
            .map_err(|_| "the reloader has stopped".to_owned())?
    }
}

/// The client address of a connection, as the workers see it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);
