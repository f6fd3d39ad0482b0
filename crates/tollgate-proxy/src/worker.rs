//! State of one worker thread and of one client connection, as the request flow reads it.
//! Neither is shared between threads: a request never leaves the worker that accepted it.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use http::HeaderValue;

use crate::framing::FramingVerdict;
use crate::metrics::WorkerMetrics;
use crate::upstream::UpstreamPool;
use crate::{Gateway, Routes};

/// What observes requests on this worker; fixed for the process (the config is not reloaded).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Observing {
    /// Prometheus metrics.
    pub(crate) metrics: bool,
    /// Analytics records.
    pub(crate) analytics: bool,
    /// The access log.
    pub(crate) access_log: bool,
}

impl Observing {
    /// Whether anything needs the request's timings and identity.
    pub(crate) const fn any(self) -> bool {
        self.metrics || self.analytics || self.access_log
    }
}

/// State of one worker thread, shared by its connections (never by other threads).
pub(crate) struct WorkerCtx {
    pub(crate) index: usize,
    pub(crate) pool: Rc<UpstreamPool>,
    pub(crate) observing: Observing,
    /// This worker's metrics table, when metrics are on.
    pub(crate) metrics: Option<Arc<WorkerMetrics>>,
    /// This worker's pending analytics records, when analytics are on.
    pub(crate) analytics: Option<tollgate_analytics::LocalBatch>,
    /// This worker's routing table and the generation it belongs to.
    routes: RefCell<Option<(u64, Arc<Routes>)>>,
}

impl WorkerCtx {
    pub(crate) fn new(index: usize, pool: Rc<UpstreamPool>, gateway: &Gateway) -> Rc<Self> {
        Rc::new(Self {
            index,
            pool,
            observing: Observing {
                metrics: gateway.metrics.is_some(),
                analytics: gateway.analytics.is_some(),
                access_log: gateway.config.access_log,
            },
            metrics: gateway.metrics.as_ref().map(|m| m.worker(index)),
            analytics: gateway
                .analytics
                .as_ref()
                .map(|q| tollgate_analytics::LocalBatch::new(Arc::clone(q))),
            routes: RefCell::new(None),
        })
    }

    /// The worker's current table: one atomic load to check the generation, then a reference
    /// count no other core touches (each worker has its own table).
    pub(crate) fn routes(&self, gateway: &Gateway) -> Arc<Routes> {
        let current = gateway.routes_generation();
        let mut cached = self.routes.borrow_mut();
        match cached.as_ref() {
            Some((generation, table)) if *generation == current => Arc::clone(table),
            _ => {
                let (generation, table) = gateway.worker_routes(self.index);
                *cached = Some((generation, Arc::clone(&table)));
                table
            }
        }
    }
}

/// Per-connection state the request flow reads.
pub(crate) struct ConnCtx {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) worker: Rc<WorkerCtx>,
    /// The client's IP, ready to append to `X-Forwarded-For`.
    pub(crate) peer_ip: HeaderValue,
    /// The client's IP (the socket peer), for the IP lists.
    pub(crate) peer_addr: IpAddr,
    pub(crate) scheme: &'static str,
    pub(crate) verdict: Arc<FramingVerdict>,
    pub(crate) next_index: Cell<u64>,
    /// What the listener that accepted the connection serves.
    pub(crate) role: ListenerRole,
    /// The certificate the client presented in the TLS handshake, if any.
    pub(crate) client_cert: Option<tollgate_tls::client_auth::ClientCert>,
}

/// What one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerRole {
    /// The APIs and the admin API (no `control_api_port`).
    Shared,
    /// The APIs only: the admin API has its own port.
    Public,
    /// The admin API only (`control_api_port`).
    Control,
}

/// Runs hyper's HTTP/2 tasks (a client connection's streams, an upstream connection) on the
/// worker's own thread, like everything else on it.
#[derive(Clone, Copy)]
pub(crate) struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}
