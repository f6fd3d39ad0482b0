//! The upstream client: per worker thread, a pool of HTTP/1.1 keep-alive connections and one
//! shared connection per upstream that speaks HTTP/2.
//!
//! Each worker owns its pool (`Rc`, no lock): a request never leaves the thread that accepted
//! it, and no two threads contend for a connection. Connections are kept per upstream
//! `host:port` and transport (plain, `h2c`, or the id of an [`UpstreamTls`]), so an `https`
//! connection is handshaken once and then reused like a plain one. An HTTP/1.1 connection goes
//! back to the pool only after its response body has been read to the end, and one that the
//! upstream closed is dropped at checkout. An HTTP/2 connection (`h2c://` targets, or an
//! `https` upstream that picks `h2` by ALPN under `proxy_enable_http2`) carries every request
//! of the worker to that upstream as concurrent streams.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tollgate_tls::UpstreamTls;
use tollgate_tls::client::ServerName;

use crate::request_body::{RequestBodyError, UpstreamBody};
use crate::worker::LocalExec;

type Http1Sender = http1::SendRequest<UpstreamBody>;
type Http2Sender = http2::SendRequest<UpstreamBody>;

/// A new connection, in the protocol the upstream agreed to.
enum Connection {
    Http1(Http1Sender),
    Http2(Http2Sender),
}

/// Where a request goes: the upstream's address and how to speak to it.
#[derive(Clone, Copy)]
pub(crate) struct Upstream<'a> {
    pub(crate) authority: &'a Authority,
    /// For `https`: the TLS configuration and the name to verify.
    pub(crate) tls: Option<(&'a UpstreamTls, &'a ServerName<'static>)>,
    /// `h2c://`: HTTP/2 from the first byte, without TLS.
    pub(crate) h2c: bool,
}

impl<'a> Upstream<'a> {
    /// The target's upstream; an `https` target always carries its TLS configuration.
    pub(crate) fn of(target: &'a tollgate_definitions::Target) -> Self {
        Self {
            authority: &target.authority,
            tls: target.tls.as_deref().zip(target.server_name.as_ref()),
            h2c: target.scheme == tollgate_definitions::Scheme::H2c,
        }
    }

    /// The host a URL rewrite sends to; `https` (`server_name` given) with the API's TLS
    /// configuration.
    pub(crate) fn rewritten(
        authority: &'a Authority,
        server_name: Option<&'a ServerName<'static>>,
        spec: &'a tollgate_definitions::ApiSpec,
    ) -> Result<Self, UpstreamError> {
        let tls = match server_name {
            None => None,
            // Loading gives every API with an `https://` rewrite its configuration.
            Some(name) => match spec.rewrite_tls.as_deref() {
                Some(tls) => Some((tls, name)),
                None => {
                    return Err(UpstreamError::Tls {
                        authority: authority.to_string(),
                        source: std::io::Error::other("no TLS configuration for the rewrite"),
                    });
                }
            },
        };
        Ok(Self {
            authority,
            tls,
            h2c: false,
        })
    }

    fn key(&self) -> PoolKey {
        let transport = match self.tls {
            Some((tls, _)) => tls.id(),
            None if self.h2c => H2C,
            None => PLAIN,
        };
        PoolKey {
            authority: self.authority.clone(),
            transport,
        }
    }

    /// Whether a new connection may turn out to speak HTTP/2.
    fn may_speak_http2(&self) -> bool {
        match self.tls {
            Some((tls, _)) => tls.offers_http2(),
            None => self.h2c,
        }
    }

    /// The scheme an HTTP/2 request names (`:scheme`).
    fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }
}

/// Connections are only reused for the same address spoken to the same way.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    authority: Authority,
    /// [`PLAIN`], [`H2C`] or the id of the TLS configuration.
    transport: u64,
}

/// Plain HTTP/1.1 (TLS configuration ids start at 1).
const PLAIN: u64 = 0;
/// HTTP/2 with prior knowledge, no TLS.
const H2C: u64 = u64::MAX;

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

/// Per-worker pool of upstream connections.
pub(crate) struct UpstreamPool {
    idle: RefCell<HashMap<PoolKey, Vec<Http1Sender>>>,
    /// One multiplexed connection per upstream that speaks HTTP/2.
    shared: RefCell<HashMap<PoolKey, Http2Sender>>,
    /// Upstreams a connection that may speak HTTP/2 is being opened to: requests arriving
    /// meanwhile wait for it instead of each opening their own.
    connecting: RefCell<HashMap<PoolKey, Rc<Notify>>>,
    max_idle_per_host: usize,
    keep_alive: bool,
}

/// Hands an HTTP/1.1 connection back to its pool when the response body is complete.
pub(crate) struct PoolReturn {
    pool: Rc<UpstreamPool>,
    key: PoolKey,
    sender: Http1Sender,
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

/// Why a request did not go out on an HTTP/2 connection.
enum Http2Failure {
    /// The connection had closed before the request was sent; the request comes back (in
    /// HTTP/1.1 form) to be sent elsewhere.
    Unsent(Request<UpstreamBody>),
    Failed(UpstreamError),
}

impl UpstreamPool {
    pub(crate) fn new(max_idle_per_host: usize, keep_alive: bool) -> Rc<Self> {
        Rc::new(Self {
            idle: RefCell::new(HashMap::new()),
            shared: RefCell::new(HashMap::new()),
            connecting: RefCell::new(HashMap::new()),
            max_idle_per_host,
            keep_alive,
        })
    }

    fn checkout(&self, key: &PoolKey) -> Option<Http1Sender> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        while let Some(sender) = list.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// The open HTTP/2 connection to `key`, if there is one.
    fn shared(&self, key: &PoolKey) -> Option<Http2Sender> {
        let mut shared = self.shared.borrow_mut();
        let sender = shared.get(key)?;
        if sender.is_closed() {
            shared.remove(key);
            return None;
        }
        Some(sender.clone())
    }

    /// Sends a request, reusing an open connection when there is one. A request that a reused
    /// connection could not even start sending (the upstream had closed it) is retried once on
    /// a new connection; nothing of it has reached the upstream, so that is safe for any method.
    /// `trailers`: the client takes trailers (`TE: trailers`), which an HTTP/2 upstream is told.
    ///
    /// The [`PoolReturn`] is there for an HTTP/1.1 connection, to be handed back once the body
    /// is read; an HTTP/2 connection stays shared and needs none.
    pub(crate) async fn send(
        self: &Rc<Self>,
        upstream: Upstream<'_>,
        mut req: Request<UpstreamBody>,
        timeout: Duration,
        trailers: bool,
    ) -> Result<(Response<Incoming>, Option<PoolReturn>), UpstreamError> {
        let authority = upstream.authority;
        let key = upstream.key();
        let deadline = Instant::now() + timeout;
        if let Some(sender) = self.shared(&key) {
            match send_http2(sender, req, upstream, deadline, trailers).await {
                Ok(resp) => return Ok((resp, None)),
                Err(Http2Failure::Failed(e)) => return Err(e),
                Err(Http2Failure::Unsent(unsent)) => {
                    self.shared.borrow_mut().remove(&key);
                    req = unsent;
                }
            }
        }
        while let Some(mut sender) = self.checkout(&key) {
            if sender.ready().await.is_err() {
                continue;
            }
            match tokio::time::timeout_at(deadline, sender.try_send_request(req)).await {
                Err(_) => return Err(timeout_error(authority)),
                Ok(Ok(resp)) => return Ok((resp, Some(self.pool_return(key, sender)))),
                Ok(Err(mut err)) => match err.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(upstream_error(authority, err.into_error())),
                },
            }
        }
        let connecting = if upstream.may_speak_http2() {
            match self.wait_for_connecting(&key, deadline).await? {
                Some(sender) => {
                    let sent = send_http2(sender, req, upstream, deadline, trailers).await;
                    return last_chance(sent, authority);
                }
                None => Some(Connecting::start(self, &key)),
            }
        } else {
            None
        };
        let connection = tokio::time::timeout_at(deadline, connect(upstream, false)).await;
        let connection = match connection {
            Err(_) => Err(timeout_error(authority)),
            Ok(opened) => opened,
        };
        let connection = match connection {
            Ok(Connection::Http2(sender)) if self.keep_alive => {
                self.shared.borrow_mut().insert(key.clone(), sender.clone());
                Connection::Http2(sender)
            }
            opened => opened?,
        };
        // Requests that waited now find the shared connection, or open their own.
        drop(connecting);
        match connection {
            Connection::Http1(mut sender) => {
                let resp = tokio::time::timeout_at(deadline, sender.send_request(req))
                    .await
                    .map_err(|_| timeout_error(authority))?
                    .map_err(|e| upstream_error(authority, e))?;
                Ok((resp, Some(self.pool_return(key, sender))))
            }
            Connection::Http2(sender) => {
                let sent = send_http2(sender, req, upstream, deadline, trailers).await;
                last_chance(sent, authority)
            }
        }
    }

    /// While another request of this worker opens a connection to `key` that may speak
    /// HTTP/2, waits for it: its connection, if HTTP/2, is shared. `None`: open one.
    async fn wait_for_connecting(
        &self,
        key: &PoolKey,
        deadline: Instant,
    ) -> Result<Option<Http2Sender>, UpstreamError> {
        let Some(opening) = self.connecting.borrow().get(key).cloned() else {
            return Ok(None);
        };
        // Single-threaded: nothing can notify between the lookup and this wait.
        tokio::time::timeout_at(deadline, opening.notified())
            .await
            .map_err(|_| timeout_error(&key.authority))?;
        Ok(self.shared(key))
    }

    fn pool_return(self: &Rc<Self>, key: PoolKey, sender: Http1Sender) -> PoolReturn {
        PoolReturn {
            pool: Rc::clone(self),
            key,
            sender,
        }
    }
}

/// Marks a connection being opened to an upstream, for [`UpstreamPool::wait_for_connecting`];
/// dropped once it is open (or failed), waking the requests that waited.
struct Connecting<'a> {
    pool: &'a UpstreamPool,
    key: PoolKey,
    opening: Rc<Notify>,
}

impl<'a> Connecting<'a> {
    fn start(pool: &'a UpstreamPool, key: &PoolKey) -> Self {
        let opening = Rc::new(Notify::new());
        pool.connecting
            .borrow_mut()
            .insert(key.clone(), Rc::clone(&opening));
        Self {
            pool,
            key: key.clone(),
            opening,
        }
    }
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.pool.connecting.borrow_mut().remove(&self.key);
        self.opening.notify_waiters();
    }
}

/// One request as a stream of an HTTP/2 connection.
async fn send_http2(
    mut sender: Http2Sender,
    req: Request<UpstreamBody>,
    upstream: Upstream<'_>,
    deadline: Instant,
    trailers: bool,
) -> Result<Response<Incoming>, Http2Failure> {
    let authority = upstream.authority;
    let req = into_http2(req, upstream, trailers)
        .map_err(|e| Http2Failure::Failed(upstream_error(authority, e)))?;
    match tokio::time::timeout_at(deadline, sender.try_send_request(req)).await {
        Err(_) => Err(Http2Failure::Failed(timeout_error(authority))),
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(mut err)) => match err.take_message() {
            Some(unsent) => Err(Http2Failure::Unsent(into_http1(unsent))),
            None => Err(Http2Failure::Failed(upstream_error(
                authority,
                err.into_error(),
            ))),
        },
    }
}

/// HTTP/2 names the upstream in the request itself: `:scheme` and `:authority`, which takes
/// the place of `Host` (the Host the upstream is to see). The header goes: servers such as
/// nginx count `:authority` as a Host header and refuse a second one.
fn into_http2(
    mut req: Request<UpstreamBody>,
    upstream: Upstream<'_>,
    trailers: bool,
) -> Result<Request<UpstreamBody>, http::Error> {
    let authority = match req.headers_mut().remove(header::HOST) {
        Some(host) => Authority::try_from(host.as_bytes())?,
        None => upstream.authority.clone(),
    };
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::builder()
        .scheme(upstream.scheme())
        .authority(authority)
        .path_and_query(path)
        .build()?;
    *req.version_mut() = Version::HTTP_2;
    if trailers {
        // The one hop-by-hop field HTTP/2 carries; gRPC servers require it.
        req.headers_mut()
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    Ok(req)
}

/// Undoes [`into_http2`] for a request that goes to an HTTP/1.1 connection after all.
fn into_http1(mut req: Request<UpstreamBody>) -> Request<UpstreamBody> {
    if let Some(host) = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, host);
    }
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    *req.version_mut() = Version::HTTP_11;
    req.headers_mut().remove(header::TE);
    req
}

/// Sends one request on a new HTTP/1.1 connection that may switch protocols (`101`); such a
/// connection is never pooled.
pub(crate) async fn send_upgrade(
    upstream: Upstream<'_>,
    req: Request<UpstreamBody>,
    timeout: Duration,
) -> Result<Response<Incoming>, UpstreamError> {
    let authority = upstream.authority;
    let work = async {
        let Connection::Http1(mut sender) = connect(upstream, true).await? else {
            unreachable!("an upgrade connection offers HTTP/1.1 only");
        };
        sender
            .send_request(req)
            .await
            .map_err(|e| upstream_error(authority, e))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| timeout_error(authority))?
}

/// Opens a connection; `upgrades`: one that may switch protocols, so HTTP/1.1 whatever the
/// upstream would otherwise speak.
async fn connect(upstream: Upstream<'_>, upgrades: bool) -> Result<Connection, UpstreamError> {
    let authority = upstream.authority;
    let stream = TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| upstream_error(authority, e))?;
    // Small request heads must not wait for Nagle's delayed-ACK dance.
    let _ = stream.set_nodelay(true);
    match upstream.tls {
        None if upstream.h2c && !upgrades => handshake_http2(authority, stream).await,
        None => handshake_http1(authority, stream, upgrades).await,
        Some((tls, name)) => {
            let config = if upgrades {
                tls.http1_config()
            } else {
                tls.config()
            };
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(config));
            // A certificate the upstream cannot prove fails here, never falls back to plain.
            let stream =
                connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| UpstreamError::Tls {
                        authority: authority.to_string(),
                        source: e,
                    })?;
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                handshake_http2(authority, stream).await
            } else {
                handshake_http1(authority, stream, upgrades).await
            }
        }
    }
}

/// HTTP/1.1 over an open (plain or TLS) connection; the connection is driven by a task of this
/// worker.
async fn handshake_http1<T>(
    authority: &Authority,
    io: T,
    upgrades: bool,
) -> Result<Connection, UpstreamError>
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
    Ok(Connection::Http1(sender))
}

/// HTTP/2 over an open connection, driven by a task of this worker; it ends when the upstream
/// closes it or the last handle to it is gone.
async fn handshake_http2<T>(authority: &Authority, io: T) -> Result<Connection, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let (sender, conn) = http2::Builder::new(LocalExec)
        .timer(TokioTimer::new())
        // Grows the flow-control windows to what the link carries, so one connection's
        // streams are not held to 64 KiB in flight each.
        .adaptive_window(true)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| upstream_error(authority, e))?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
        }
    });
    Ok(Connection::Http2(sender))
}

fn upstream_error(
    authority: &Authority,
    err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> UpstreamError {
    UpstreamError::classify(authority, err.into())
}

/// A request on a fresh HTTP/2 connection has no second chance: unsent is failed too.
fn last_chance(
    sent: Result<Response<Incoming>, Http2Failure>,
    authority: &Authority,
) -> Result<(Response<Incoming>, Option<PoolReturn>), UpstreamError> {
    match sent {
        Ok(resp) => Ok((resp, None)),
        Err(Http2Failure::Failed(e)) => Err(e),
        Err(Http2Failure::Unsent(_)) => Err(upstream_error(
            authority,
            "the connection closed before the request was sent",
        )),
    }
}

fn timeout_error(authority: &Authority) -> UpstreamError {
    UpstreamError::Timeout {
        authority: authority.to_string(),
    }
}
