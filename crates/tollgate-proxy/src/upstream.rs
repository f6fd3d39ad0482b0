//! The upstream client: one pool of HTTP/1.1 keep-alive connections per worker thread.
//!
//! Each worker owns its pool (`Rc`, no lock): a request never leaves the thread that accepted
//! it, and no two threads contend for a connection. Idle connections are kept per upstream
//! `host:port`; a connection goes back to the pool only after its response body has been read
//! to the end, and one that the upstream closed is dropped at checkout.

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

use crate::request_body::{RequestBodyError, UpstreamBody};

type Sender = SendRequest<UpstreamBody>;

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
    idle: RefCell<HashMap<Authority, Vec<Sender>>>,
    max_idle_per_host: usize,
    keep_alive: bool,
}

/// Hands a connection back to its pool when the response body is complete.
pub(crate) struct PoolReturn {
    pool: Rc<UpstreamPool>,
    authority: Authority,
    sender: Sender,
}

impl PoolReturn {
    pub(crate) fn give_back(self) {
        if !self.pool.keep_alive || self.sender.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.borrow_mut();
        let list = idle.entry(self.authority).or_default();
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

    fn checkout(&self, authority: &Authority) -> Option<Sender> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(authority)?;
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
        authority: &Authority,
        mut req: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Result<(Response<Incoming>, PoolReturn), UpstreamError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while let Some(mut sender) = self.checkout(authority) {
            if sender.ready().await.is_err() {
                continue;
            }
            match tokio::time::timeout_at(deadline, sender.try_send_request(req)).await {
                Err(_) => return Err(timeout_error(authority)),
                Ok(Ok(resp)) => return Ok((resp, self.pool_return(authority, sender))),
                Ok(Err(mut err)) => match err.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(upstream_error(authority, err.into_error())),
                },
            }
        }
        let mut sender = tokio::time::timeout_at(deadline, connect(authority, false))
            .await
            .map_err(|_| timeout_error(authority))??;
        let resp = tokio::time::timeout_at(deadline, sender.send_request(req))
            .await
            .map_err(|_| timeout_error(authority))?
            .map_err(|e| upstream_error(authority, e))?;
        Ok((resp, self.pool_return(authority, sender)))
    }

    fn pool_return(self: &Rc<Self>, authority: &Authority, sender: Sender) -> PoolReturn {
        PoolReturn {
            pool: Rc::clone(self),
            authority: authority.clone(),
            sender,
        }
    }
}

/// Sends one request on a new connection that may switch protocols (`101`); such a connection
/// is never pooled.
pub(crate) async fn send_upgrade(
    authority: &Authority,
    req: Request<UpstreamBody>,
    timeout: Duration,
) -> Result<Response<Incoming>, UpstreamError> {
    let work = async {
        let mut sender = connect(authority, true).await?;
        sender
            .send_request(req)
            .await
            .map_err(|e| upstream_error(authority, e))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| timeout_error(authority))?
}

async fn connect(authority: &Authority, upgrades: bool) -> Result<Sender, UpstreamError> {
    let stream = TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| upstream_error(authority, e))?;
    // Small request heads must not wait for Nagle's delayed-ACK dance.
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
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
