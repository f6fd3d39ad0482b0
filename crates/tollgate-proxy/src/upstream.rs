//! The upstream client: one pool of HTTP/1.1 keep-alive connections per worker thread.
//!
//! Each worker owns its pool (`Rc`, no lock): a request never leaves the thread that accepted
//! it, and no two threads contend for a connection. Idle connections are kept per upstream
//! `host:port` and TLS configuration (plain, or the id of an [`UpstreamTls`]), so an `https`
//! connection is handshaken once and then reused like a plain one; a connection goes back to the
//! pool only after its response body has been read to the end, and one that the upstream closed
//! is dropped at checkout.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tollgate_tls::UpstreamTls;
use tollgate_tls::client::ServerName;

use crate::request_body::{RequestBodyError, UpstreamBody};

type Sender = SendRequest<UpstreamBody>;

/// Where a request goes: the upstream's address and, for `https`, how to speak TLS to it.
#[derive(Clone, Copy)]
pub(crate) struct Upstream<'a> {
    pub(crate) authority: &'a Authority,
    pub(crate) tls: Option<(&'a UpstreamTls, &'a ServerName<'static>)>,
}

impl<'a> Upstream<'a> {
    /// The target's upstream; an `https` target always carries its TLS configuration.
    pub(crate) fn of(target: &'a tollgate_definitions::Target) -> Self {
        Self {
            authority: &target.authority,
            tls: target.tls.as_deref().zip(target.server_name.as_ref()),
        }
    }

    /// A plain-HTTP upstream (a URL rewrite to another host).
    pub(crate) fn plain(authority: &'a Authority) -> Self {
        Self {
            authority,
            tls: None,
        }
    }

    fn key(&self) -> PoolKey {
        PoolKey {
            authority: self.authority.clone(),
            tls: self.tls.map_or(0, |(t, _)| t.id()),
        }
    }
}

/// Idle connections are only reused for the same address spoken to the same way.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    authority: Authority,
    /// 0 = plain HTTP.
    tls: u64,
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream refused, reset or broke the connection.
    #[error("upstream {authority}: {source}")]
    Failed {
        /// The upstream's `host:port`.
        authority: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The TLS handshake with an `https` upstream failed (its certificate could not be
    /// verified, no common version or suite, not TLS at all).
    #[error("upstream {authority}: TLS: {source}")]
    Tls {
        /// The upstream's `host:port`.
        authority: String,
        /// rustls' reason, inside the I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The upstream sent no response headers within the timeout.
    #[error("upstream {authority}: no response in time")]
    Timeout {
        /// The upstream's `host:port`.
        authority: String,
    },
    /// The client's own body failed while it was being sent: the client's fault, not the
    /// upstream's.
    #[error("request body: {0}")]
    ClientBody(ClientBodyFault),
}

/// How the client's body failed, as seen through a failed send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientBodyFault {
    /// Over the body cap.
    TooLarge,
    /// Quiet for longer than the read timeout.
    Idle,
    /// The stream broke (bad chunking, reset).
    Broken(String),
}

impl std::fmt::Display for ClientBodyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge => f.write_str("too large"),
            Self::Idle => f.write_str("client went quiet"),
            Self::Broken(e) => f.write_str(e),
        }
    }
}

impl UpstreamError {
    /// Classifies a failed exchange. A failure of the client's own body surfaces as a send
    /// error too; it is told apart by looking down the cause chain.
    fn classify(authority: &Authority, err: Box<dyn std::error::Error + Send + Sync>) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
        while let Some(e) = cause {
            if let Some(body) = e.downcast_ref::<RequestBodyError>() {
                return Self::ClientBody(match body {
                    RequestBodyError::TooLarge { .. } => ClientBodyFault::TooLarge,
                    RequestBodyError::IdleTimeout(_) => ClientBodyFault::Idle,
                    RequestBodyError::Client(e) => ClientBodyFault::Broken(e.to_string()),
                });
            }
            cause = e.source();
        }
        Self::Failed {
            authority: authority.to_string(),
            source: err,
        }
    }
}

/// Per-worker pool of idle upstream connections.
pub(crate) struct UpstreamPool {
    idle: RefCell<HashMap<PoolKey, Vec<Sender>>>,
    max_idle_per_host: usize,
    keep_alive: bool,
}

/// Hands a connection back to its pool when the response body is complete.
pub(crate) struct PoolReturn {
    pool: Rc<UpstreamPool>,
    key: PoolKey,
    sender: Sender,
}

impl PoolReturn {
    pub(crate) fn give_back(self) {
        if !self.pool.keep_alive || self.sender.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.borrow_mut();
        let list = idle.entry(self.key).or_default();
        if list.len() < self.pool.max_idle_per_host {
            list.push(self.sender);
        }
    }
}

impl UpstreamPool {
    pub(crate) fn new(max_idle_per_host: usize, keep_alive: bool) -> Rc<Self> {
        Rc::new(Self {
            idle: RefCell::new(HashMap::new()),
            max_idle_per_host,
            keep_alive,
        })
    }

    fn checkout(&self, key: &PoolKey) -> Option<Sender> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        while let Some(sender) = list.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Sends a request, reusing an idle connection when one is alive. A request that a reused
    /// connection could not even start sending (the upstream had closed it) is retried once on
    /// a new connection; nothing of it has reached the upstream, so that is safe for any method.
    pub(crate) async fn send(
        self: &Rc<Self>,
        upstream: Upstream<'_>,
        mut req: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Result<(Response<Incoming>, PoolReturn), UpstreamError> {
        let authority = upstream.authority;
        let key = upstream.key();
        let deadline = tokio::time::Instant::now() + timeout;
        while let Some(mut sender) = self.checkout(&key) {
            if sender.ready().await.is_err() {
                continue;
            }
            match tokio::time::timeout_at(deadline, sender.try_send_request(req)).await {
                Err(_) => return Err(timeout_error(authority)),
                Ok(Ok(resp)) => return Ok((resp, self.pool_return(key, sender))),
                Ok(Err(mut err)) => match err.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(upstream_error(authority, err.into_error())),
                },
            }
        }
        let mut sender = tokio::time::timeout_at(deadline, connect(upstream, false))
            .await
            .map_err(|_| timeout_error(authority))??;
        let resp = tokio::time::timeout_at(deadline, sender.send_request(req))
            .await
            .map_err(|_| timeout_error(authority))?
            .map_err(|e| upstream_error(authority, e))?;
        Ok((resp, self.pool_return(key, sender)))
    }

    fn pool_return(self: &Rc<Self>, key: PoolKey, sender: Sender) -> PoolReturn {
        PoolReturn {
            pool: Rc::clone(self),
            key,
            sender,
        }
    }
}

/// Sends one request on a new connection that may switch protocols (`101`); such a connection
/// is never pooled.
pub(crate) async fn send_upgrade(
    upstream: Upstream<'_>,
    req: Request<UpstreamBody>,
    timeout: Duration,
) -> Result<Response<Incoming>, UpstreamError> {
    let authority = upstream.authority;
    let work = async {
        let mut sender = connect(upstream, true).await?;
        sender
            .send_request(req)
            .await
            .map_err(|e| upstream_error(authority, e))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| timeout_error(authority))?
}

async fn connect(upstream: Upstream<'_>, upgrades: bool) -> Result<Sender, UpstreamError> {
    let authority = upstream.authority;
    let stream = TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| upstream_error(authority, e))?;
    // Small request heads must not wait for Nagle's delayed-ACK dance.
    let _ = stream.set_nodelay(true);
    match upstream.tls {
        None => handshake(authority, stream, upgrades).await,
        Some((tls, name)) => {
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(tls.config()));
            // A certificate the upstream cannot prove fails here, never falls back to plain.
            let stream =
                connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| UpstreamError::Tls {
                        authority: authority.to_string(),
                        source: e,
                    })?;
            handshake(authority, stream, upgrades).await
        }
    }
}

/// HTTP/1.1 over an open (plain or TLS) connection; the connection is driven by a task of this
/// worker.
async fn handshake<T>(authority: &Authority, io: T, upgrades: bool) -> Result<Sender, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| upstream_error(authority, e))?;
    if upgrades {
        tokio::task::spawn_local(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
    } else {
        tokio::task::spawn_local(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
    }
    Ok(sender)
}

fn upstream_error(
    authority: &Authority,
    err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> UpstreamError {
    UpstreamError::classify(authority, err.into())
}

fn timeout_error(authority: &Authority) -> UpstreamError {
    UpstreamError::Timeout {
        authority: authority.to_string(),
    }
}
