//! Listeners and worker threads.
//!
//! One worker per core, each a single-threaded tokio runtime with its own `SO_REUSEPORT`
//! listener and its own upstream pool: the kernel spreads connections over the listeners and a
//! request is served start to finish on the thread that accepted it, with no cross-thread
//! wake-ups and no shared pool to contend for. Only [`Gateway`] is shared, and it is read
//! without locks.

use std::cell::Cell;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;

use crate::Gateway;
use crate::framing::{FramingGuard, FramingLimits, FramingVerdict};
use crate::proxy;
use crate::upstream::UpstreamPool;
use crate::worker::{ConnCtx, ListenerRole, LocalExec, WorkerCtx};
use crate::write_deadline::WriteDeadline;

/// Binds `count` listening sockets sharing `addr` through `SO_REUSEPORT`.
///
/// # Errors
/// The address is in use (by anything, including another gateway) or cannot be bound.
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        // SO_REUSEPORT would let us share a port with another process of the same user; a
        // plain bind first makes "port in use" an error, as operators expect.
        let probe = new_socket(addr, false)?;
        probe.bind(&addr.into())?;
        probe.listen(1)?;
    }
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = new_socket(addr, true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        // With port 0 the first bind picks the port; the others join it.
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn new_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The running worker threads.
pub struct Workers {
    threads: Vec<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

impl Workers {
    /// Starts one worker per listener.
    ///
    /// # Errors
    /// A thread or runtime could not be created.
    /// `control` are the admin API's own listeners (`control_api_port`), one per worker, or
    /// empty when it shares the public port.
    pub fn start(
        gateway: &Arc<Gateway>,
        listeners: Vec<std::net::TcpListener>,
        control: Vec<std::net::TcpListener>,
    ) -> io::Result<Self> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut threads = Vec::with_capacity(listeners.len());
        let mut control = control.into_iter();
        for (i, listener) in listeners.into_iter().enumerate() {
            let control = control.next();
            let gateway = Arc::clone(gateway);
            let shutdown_rx = shutdown_rx.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let thread = std::thread::Builder::new()
                .name(format!("tollgate-worker-{i}"))
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&runtime, worker(i, gateway, listener, control, shutdown_rx));
                })?;
            threads.push(thread);
        }
        Ok(Self { threads, shutdown })
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, and waits for
    /// every worker to end.
    pub fn shutdown_and_join(self) {
        let _ = self.shutdown.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Counts a worker's open connections so shutdown can wait for them.
#[derive(Default)]
struct ConnTracker {
    open: Cell<usize>,
    drained: Notify,
}

struct ConnGuard(Rc<ConnTracker>);

impl ConnGuard {
    fn new(tracker: &Rc<ConnTracker>) -> Self {
        tracker.open.set(tracker.open.get() + 1);
        Self(Rc::clone(tracker))
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let open = self.0.open.get() - 1;
        self.0.open.set(open);
        if open == 0 {
            self.0.drained.notify_waiters();
        }
    }
}

/// How far ahead the worker's anchor timer is always due (see `worker`).
const TIMER_ANCHOR_PERIOD: Duration = Duration::from_millis(500);

async fn worker(
    index: usize,
    gateway: Arc<Gateway>,
    listener: std::net::TcpListener,
    control: Option<std::net::TcpListener>,
    mut shutdown: watch::Receiver<bool>,
) {
    let register = |l: std::net::TcpListener| match TcpListener::from_std(l) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(error = %e, "worker could not register its listener");
            None
        }
    };
    let Some(listener) = register(listener) else {
        return;
    };
    let control = match control.map(register) {
        Some(None) => return,
        Some(Some(l)) => Some(l),
        None => None,
    };
    let public_role = if control.is_some() {
        ListenerRole::Public
    } else {
        ListenerRole::Shared
    };
    let config = Arc::clone(&gateway.config);
    let pool = UpstreamPool::new(
        config.max_idle_upstream_per_host,
        !config.proxy_close_connections,
    );
    let worker_ctx = WorkerCtx::new(index, pool, &gateway);
    // Requests run as tasks of this thread's LocalSet, so their counter updates can share
    // Redis round trips.
    tollgate_storage::batching::enable_on_this_thread();
    if worker_ctx.analytics.is_some() {
        // Records wait at most one flush interval in the worker before the writer sees them.
        let ctx = Rc::clone(&worker_ctx);
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(tollgate_analytics::FLUSH_INTERVAL);
            loop {
                tick.tick().await;
                if let Some(batch) = &ctx.analytics {
                    batch.flush();
                }
            }
        });
    }
    // Every proxied request arms an upstream timeout. Tokio wakes its own parked I/O driver
    // (an eventfd write, then a spurious epoll return) whenever a new timer is due before the
    // earliest one it parked with, which with no timer pending is every first request after
    // a park: thousands of syscalls a second under load. A timer that is always due within
    // half a second keeps request timeouts (seconds) from ever being the earliest one.
    tokio::task::spawn_local(async {
        let mut tick = tokio::time::interval(TIMER_ANCHOR_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
        }
    });
    let tracker = Rc::new(ConnTracker::default());
    // The certificates behind it are swapped on reload; the acceptor itself never changes.
    let acceptor = gateway.tls.as_ref().map(|t| TlsAcceptor::from(t.config()));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted.map(|a| (a, public_role)),
            accepted = accept_control(control.as_ref()) => accepted.map(|a| (a, ListenerRole::Control)),
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok(((stream, peer), role)) => {
                let guard = ConnGuard::new(&tracker);
                let task = serve_connection(
                    Arc::clone(&gateway),
                    Rc::clone(&worker_ctx),
                    stream,
                    peer,
                    role,
                    acceptor.clone(),
                    shutdown.clone(),
                );
                tokio::task::spawn_local(async move {
                    task.await;
                    drop(guard);
                });
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    drop(control);
    if let Some(batch) = &worker_ctx.analytics {
        batch.flush();
    }
    if tracker.open.get() > 0 {
        let drained = tracker.drained.notified();
        if tokio::time::timeout(config.graceful_shutdown_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!(
                open = tracker.open.get(),
                "grace period over; closing remaining connections"
            );
        }
    }
}

/// The next connection on the admin API's own listener; never, without one.
async fn accept_control(control: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match control {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_connection(
    gateway: Arc<Gateway>,
    worker: Rc<WorkerCtx>,
    stream: TcpStream,
    peer: SocketAddr,
    role: ListenerRole,
    acceptor: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = acceptor else {
        let h2c = gateway.config.h2c
            && opens_with_http2_preface(&stream, gateway.config.edge.read_timeout).await;
        let ctx = conn_ctx(gateway, worker, peer, role, "http", None);
        if h2c {
            return serve_http2(ctx, stream, shutdown).await;
        }
        return serve_http1(ctx, stream, shutdown).await;
    };
    let timeout = gateway.config.edge.read_timeout.min(TLS_HANDSHAKE_TIMEOUT);
    let stream = match tokio::time::timeout(timeout, refuse_plain_http(stream)).await {
        Ok(Some(stream)) => stream,
        Ok(None) => return,
        Err(_) => {
            tracing::debug!(%peer, "client sent nothing; closing");
            return;
        }
    };
    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let client_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(<[_]>::first)
        .map(|c| tollgate_tls::client_auth::ClientCert::of(c.as_ref()));
    let ctx = conn_ctx(gateway, worker, peer, role, "https", client_cert);
    if h2 {
        serve_http2(ctx, tls, shutdown).await;
    } else {
        serve_http1(ctx, tls, shutdown).await;
    }
}

/// Whether a plain connection opens with HTTP/2's connection preface (h2c with prior
/// knowledge). Nothing is consumed: an HTTP/1.1 request stays in the socket for its parser.
async fn opens_with_http2_preface(stream: &TcpStream, timeout: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    let look = async {
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 || buf[..n] != PREFACE[..n] {
                return Some(false);
            }
            if n == PREFACE.len() {
                return Some(true);
            }
            // A preface split over segments: peek returns at once while the socket holds
            // anything, so wait a little for the rest.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    matches!(tokio::time::timeout(timeout, look).await, Ok(Some(true)))
}

/// A client speaking plain HTTP to the TLS port gets Go's one-line answer instead of a
/// handshake error it cannot read; anything that starts like a TLS record goes on.
async fn refuse_plain_http(stream: TcpStream) -> Option<TcpStream> {
    // Every TLS connection opens with a handshake record (content type 22).
    const HANDSHAKE_RECORD: u8 = 0x16;
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if first[0] == HANDSHAKE_RECORD => Some(stream),
        Ok(1) => {
            let mut stream = stream;
            let _ = stream
                .write_all(
                    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n\
                      Client sent an HTTP request to an HTTPS server.\n",
                )
                .await;
            let _ = stream.shutdown().await;
            None
        }
        _ => None,
    }
}

fn conn_ctx(
    gateway: Arc<Gateway>,
    worker: Rc<WorkerCtx>,
    peer: SocketAddr,
    role: ListenerRole,
    scheme: &'static str,
    client_cert: Option<tollgate_tls::client_auth::ClientCert>,
) -> Rc<ConnCtx> {
    let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    Rc::new(ConnCtx {
        gateway,
        worker,
        peer_ip,
        peer_addr: peer.ip(),
        scheme,
        verdict: Arc::new(FramingVerdict::default()),
        next_index: Cell::new(0),
        role,
        client_cert,
    })
}

async fn serve_http1<T>(ctx: Rc<ConnCtx>, stream: T, mut shutdown: watch::Receiver<bool>)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let config = Arc::clone(&ctx.gateway.config);
    let limits = FramingLimits {
        max_request_line: config.edge.max_request_line_bytes,
        max_head_bytes: config.edge.max_request_head_bytes,
        max_headers: config.edge.max_request_headers,
    };
    let stream = WriteDeadline::new(stream, config.edge.write_timeout);
    let io = TokioIo::new(FramingGuard::new(stream, limits, Arc::clone(&ctx.verdict)));
    let service = service_fn(move |req| {
        let ctx = Rc::clone(&ctx);
        async move { Ok::<_, Infallible>(proxy::handle(&ctx, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.edge.read_timeout)
        .max_headers(config.edge.max_request_headers)
        .keep_alive(!config.close_connections);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    // Finish the request in flight (if any), then close.
    serve_until_shutdown(conn, &mut shutdown, |c| c.graceful_shutdown()).await;
}

/// HTTP/2: ALPN `h2` on the TLS listener, or h2c on a plain one. Streams run as tasks of
/// this worker, like everything else on it; the framing guard is HTTP/1's, h2 frames its own
/// requests.
async fn serve_http2<T>(ctx: Rc<ConnCtx>, stream: T, mut shutdown: watch::Receiver<bool>)
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let config = Arc::clone(&ctx.gateway.config);
    let io = TokioIo::new(WriteDeadline::new(stream, config.edge.write_timeout));
    let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let ctx = Rc::clone(&ctx);
        async move {
            crate::headers::host_from_authority(&mut req);
            Ok::<_, Infallible>(proxy::handle(&ctx, req).await)
        }
    });
    let head_bytes = u32::try_from(config.edge.max_request_head_bytes).unwrap_or(u32::MAX);
    let conn = hyper::server::conn::http2::Builder::new(LocalExec)
        .timer(TokioTimer::new())
        .max_header_list_size(head_bytes)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(config.edge.read_timeout))
        .serve_connection(io, service);
    tokio::pin!(conn);
    // GOAWAY: streams in flight finish, no new ones start.
    serve_until_shutdown(conn, &mut shutdown, |c| c.graceful_shutdown()).await;
}

/// Runs a connection to its end; a shutdown first asks it to close (hyper's two connection
/// types have no trait in common for that, hence `graceful`) and then waits for it.
async fn serve_until_shutdown<C>(
    mut conn: Pin<&mut C>,
    shutdown: &mut watch::Receiver<bool>,
    graceful: impl FnOnce(Pin<&mut C>),
) where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::select! {
        res = conn.as_mut() => log_conn_end(res),
        _ = shutdown.changed() => {
            graceful(conn.as_mut());
            log_conn_end(conn.await);
        }
    }
}

fn log_conn_end(res: Result<(), hyper::Error>) {
    if let Err(e) = res {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}
