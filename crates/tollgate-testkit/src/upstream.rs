//! An in-process mock upstream that records what it receives.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RespBody = BoxBody<Bytes, BoxError>;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query exactly as received on the request line.
    pub uri: String,
    /// The path part of `uri`.
    pub path: String,
    /// The query part of `uri` (without `?`).
    pub query: Option<String>,
    /// The authority of an absolute request URI: HTTP/2's `:authority`.
    pub authority: Option<String>,
    pub version: http::Version,
    pub headers: HeaderMap,
    /// The request body; for [`Reply::echo_body`] it grows as the body
    /// streams, for [`Reply::upgrade`] it holds the bytes received through
    /// the tunnel.
    pub body: Vec<u8>,
    /// Distinct per accepted upstream TCP connection.
    pub conn_id: u64,
    /// The gateway side's address of that connection.
    pub peer: SocketAddr,
}

impl Recorded {
    /// The first value of header `name` as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

#[derive(Debug, Clone)]
enum ReplyKind {
    Echo,
    Fixed {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
        trailers: Vec<(String, String)>,
    },
    Stream {
        len: usize,
        chunked: bool,
    },
    EchoBody,
    Upgrade,
    Close,
}

/// How the mock upstream answers requests under a path prefix.
#[derive(Debug, Clone)]
pub struct Reply {
    kind: ReplyKind,
    delay: Duration,
}

impl Reply {
    fn of(kind: ReplyKind) -> Self {
        Self {
            kind,
            delay: Duration::ZERO,
        }
    }

    /// 200 with a JSON echo `{"method","path","query","headers","body_len"}`
    /// (the default). `headers` maps lower-case names to values (repeated
    /// headers joined with `", "`).
    pub fn echo() -> Self {
        Self::of(ReplyKind::Echo)
    }

    /// A fixed status and body (add headers with [`Reply::header`]).
    pub fn fixed(status: u16, body: impl Into<Bytes>) -> Self {
        Self::of(ReplyKind::Fixed {
            status,
            headers: Vec::new(),
            body: body.into(),
            trailers: Vec::new(),
        })
    }

    /// Adds a response header (for [`Reply::fixed`]; ignored otherwise).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let ReplyKind::Fixed { headers, .. } = &mut self.kind {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// Adds a trailer sent after the body (for [`Reply::fixed`]; ignored otherwise), as a
    /// gRPC server sends `grpc-status`.
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        if let ReplyKind::Fixed { trailers, .. } = &mut self.kind {
            trailers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// 200 with `len` bytes of [`pattern_bytes`], streamed in 64 KiB frames
    /// with a Content-Length.
    pub fn stream(len: usize) -> Self {
        Self::of(ReplyKind::Stream {
            len,
            chunked: false,
        })
    }

    /// Like [`Reply::stream`] but without a length (chunked encoding).
    pub fn stream_chunked(len: usize) -> Self {
        Self::of(ReplyKind::Stream { len, chunked: true })
    }

    /// 200 that streams the request body back as it arrives.
    pub fn echo_body() -> Self {
        Self::of(ReplyKind::EchoBody)
    }

    /// `101 Switching Protocols` for requests with an `Upgrade` header, then
    /// echoes raw bytes both ways. Requests without one get 426.
    pub fn upgrade() -> Self {
        Self::of(ReplyKind::Upgrade)
    }

    /// Reads the request, then drops the connection without answering.
    pub fn close() -> Self {
        Self::of(ReplyKind::Close)
    }

    /// Waits `d` (after the request head and, except for streaming
    /// replies, the body were received and recorded) before answering.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

#[derive(Debug, Default)]
struct State {
    routes: Mutex<Vec<(String, Reply)>>,
    records: Mutex<Vec<Recorded>>,
    changed: Notify,
    next_conn: AtomicU64,
}

impl State {
    fn reply_for(&self, path: &str) -> Reply {
        let routes = self.routes.lock().expect("routes lock");
        routes
            .iter()
            .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, r)| r.clone())
            .unwrap_or_else(Reply::echo)
    }

    fn push(&self, rec: Recorded) -> usize {
        let mut records = self.records.lock().expect("records lock");
        records.push(rec);
        let idx = records.len() - 1;
        drop(records);
        self.changed.notify_waiters();
        idx
    }

    fn append_body(&self, idx: usize, data: &[u8]) {
        let mut records = self.records.lock().expect("records lock");
        if let Some(r) = records.get_mut(idx) {
            r.body.extend_from_slice(data);
        }
        drop(records);
        self.changed.notify_waiters();
    }
}

/// A mock HTTP/1.1 upstream on 127.0.0.1, served on the current tokio
/// runtime. Stops accepting when dropped.
#[derive(Debug)]
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    /// Starts on a free port.
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr) -> Self {
        Self::start_inner(addr, None).await
    }

    /// Starts on a free port; connections idle (no new request head) for
    /// `idle` are closed by the upstream, like a server's keep-alive
    /// timeout.
    pub async fn start_with_idle_timeout(idle: Duration) -> Self {
        Self::start_inner(SocketAddr::from(([127, 0, 0, 1], 0)), Some(idle)).await
    }

    /// Starts on a free port, speaking HTTPS with `tls` (see [`crate::tls::TestCa`]): HTTP/2
    /// when the client picks `h2` among the configuration's ALPN protocols, else HTTP/1.1.
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        Self::start_with(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            None,
            Transport::Tls(acceptor),
        )
        .await
    }

    /// Starts on a free port speaking only HTTP/2 without TLS (h2c with prior knowledge).
    pub async fn start_h2c() -> Self {
        Self::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), None, Transport::H2c).await
    }

    async fn start_inner(addr: SocketAddr, idle: Option<Duration>) -> Self {
        Self::start_with(addr, idle, Transport::Plain).await
    }

    async fn start_with(addr: SocketAddr, idle: Option<Duration>, transport: Transport) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind mock upstream");
        let addr = listener.local_addr().expect("mock upstream addr");
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let conn_id = st.next_conn.fetch_add(1, Ordering::SeqCst) + 1;
                let st = Arc::clone(&st);
                let transport = transport.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(Arc::clone(&st), conn_id, peer, req));
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    if let Some(idle) = idle {
                        builder.timer(TokioTimer::new()).header_read_timeout(idle);
                    }
                    match transport {
                        Transport::Plain => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        }
                        Transport::H2c => serve_http2(stream, svc).await,
                        Transport::Tls(acceptor) => {
                            // A handshake the client gives up on (unknown CA) ends here.
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                                serve_http2(stream, svc).await;
                            } else {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .with_upgrades()
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, state, task }
    }

    /// A server that accepts TCP connections and immediately resets them
    /// (SO_LINGER 0, no bytes read or written). Its `accepted()` count
    /// tells how many connections it got; it records no requests.
    pub async fn start_resetting() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind resetting upstream");
        let addr = listener.local_addr().expect("resetting upstream addr");
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.next_conn.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_zero_linger();
                drop(stream);
            }
        });
        Self { addr, state, task }
    }

    /// Sets how requests whose path starts with `prefix` are answered
    /// (longest prefix wins; unmatched paths get [`Reply::echo`]).
    pub fn on(&self, prefix: &str, reply: Reply) -> &Self {
        let mut routes = self.state.routes.lock().expect("routes lock");
        routes.retain(|(p, _)| p != prefix);
        routes.push((prefix.to_owned(), reply));
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:<port>` (what a Host header for this upstream says).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request recorded so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.records.lock().expect("records lock").clone()
    }

    /// The number of requests recorded so far.
    pub fn request_count(&self) -> usize {
        self.state.records.lock().expect("records lock").len()
    }

    /// The last recorded request; panics if there is none.
    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the mock upstream received no request")
    }

    /// How many TCP connections were accepted.
    pub fn accepted(&self) -> u64 {
        self.state.next_conn.load(Ordering::SeqCst)
    }

    /// How many distinct connections the recorded requests came on.
    pub fn distinct_connections(&self) -> usize {
        let mut ids: Vec<u64> = self.requests().iter().map(|r| r.conn_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.state.records.lock().expect("records lock").clear();
    }

    /// Waits until `pred(records)` holds or `timeout` passes; returns the
    /// records at that point and whether `pred` held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&[Recorded]) -> bool,
    ) -> (Vec<Recorded>, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.state.changed.notified();
            let recs = self.requests();
            if pred(&recs) {
                return (recs, true);
            }
            if Instant::now() >= deadline {
                return (recs, false);
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// Waits until at least `n` requests were recorded; panics on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let (recs, ok) = self.wait_until(timeout, |r| r.len() >= n).await;
        assert!(
            ok,
            "expected {n} upstream requests within {timeout:?}, got {}: {recs:#?}",
            recs.len()
        );
        recs
    }
}

/// How a mock upstream's connections are spoken.
#[derive(Clone)]
enum Transport {
    Plain,
    H2c,
    Tls(tokio_rustls::TlsAcceptor),
}

async fn serve_http2<T, S>(io: T, svc: S)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = RespBody> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<RespBody> {
    let mut resp = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp
}

async fn handle(
    st: Arc<State>,
    conn_id: u64,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<RespBody>, BoxError> {
    let uri = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| req.uri().to_string());
    let path = req.uri().path().to_owned();
    let reply = st.reply_for(&path);
    let rec = Recorded {
        method: req.method().as_str().to_owned(),
        uri,
        path,
        query: req.uri().query().map(str::to_owned),
        authority: req.uri().authority().map(|a| a.as_str().to_owned()),
        version: req.version(),
        headers: req.headers().clone(),
        body: Vec::new(),
        conn_id,
        peer,
    };

    match reply.kind {
        ReplyKind::EchoBody => {
            let idx = st.push(rec);
            tokio::time::sleep(reply.delay).await;
            let body = RecordingBody {
                inner: req.into_body(),
                state: st,
                idx,
            };
            let mut resp = Response::new(body.boxed());
            *resp.status_mut() = StatusCode::OK;
            Ok(resp)
        }
        ReplyKind::Upgrade => {
            let Some(upgrade) = req.headers().get(http::header::UPGRADE).cloned() else {
                st.push(rec);
                return Ok(full(StatusCode::UPGRADE_REQUIRED, "upgrade required"));
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            let idx = st.push(rec);
            tokio::time::sleep(reply.delay).await;
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut io = TokioIo::new(upgraded);
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    st.append_body(idx, &buf[..n]);
                    if io.write_all(&buf[..n]).await.is_err() || io.flush().await.is_err() {
                        break;
                    }
                }
                let _ = io.shutdown().await;
            });
            let mut resp = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
            let h = resp.headers_mut();
            h.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("Upgrade"),
            );
            h.insert(http::header::UPGRADE, upgrade);
            // The RFC 6455 example accept value (for key dGhlIHNhbXBsZSBub25jZQ==).
            h.insert(
                "sec-websocket-accept",
                HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            );
            Ok(resp)
        }
        kind => {
            let headers = rec.headers.clone();
            let method = rec.method.clone();
            let path = rec.path.clone();
            let query = rec.query.clone();
            let body = req.into_body().collect().await?.to_bytes();
            let mut rec = rec;
            rec.body = body.to_vec();
            st.push(rec);
            tokio::time::sleep(reply.delay).await;
            match kind {
                ReplyKind::Echo => Ok(echo_response(
                    &method,
                    &path,
                    query.as_deref(),
                    &headers,
                    body.len(),
                )),
                ReplyKind::Fixed {
                    status,
                    headers,
                    body,
                    trailers,
                } => {
                    let status = StatusCode::from_u16(status).expect("valid status");
                    let mut resp = if trailers.is_empty() {
                        full(status, body)
                    } else {
                        let trailers = header_map(&trailers);
                        let body = Full::new(body)
                            .map_err(|never: Infallible| match never {})
                            .with_trailers(async move { Some(Ok(trailers)) })
                            .boxed();
                        let mut resp = Response::new(body);
                        *resp.status_mut() = status;
                        resp
                    };
                    for (k, v) in headers {
                        resp.headers_mut().append(
                            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                            HeaderValue::from_str(&v).expect("header value"),
                        );
                    }
                    Ok(resp)
                }
                ReplyKind::Stream { len, chunked } => {
                    let body = PatternBody {
                        offset: 0,
                        len,
                        chunked,
                    };
                    Ok(Response::new(body.boxed()))
                }
                ReplyKind::Close => Err("mock upstream: closing the connection".into()),
                ReplyKind::EchoBody | ReplyKind::Upgrade => unreachable!("handled above"),
            }
        }
    }
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    map
}

/// The JSON echo response body: method, path, query, headers, body length.
pub(crate) fn echo_json(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body_len: usize,
) -> serde_json::Value {
    let mut hs: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        hs.entry(name.as_str().to_owned())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    json!({
        "method": method,
        "path": path,
        "query": query,
        "headers": hs,
        "body_len": body_len,
    })
}

pub(crate) fn echo_response(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body_len: usize,
) -> Response<RespBody> {
    let v = echo_json(method, path, query, headers, body_len);
    let mut resp = full(
        StatusCode::OK,
        serde_json::to_vec(&v).expect("serialize echo"),
    );
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Streams the request body back while appending it to the record.
struct RecordingBody {
    inner: Incoming,
    state: Arc<State>,
    idx: usize,
}

impl Body for RecordingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    self.state.append_body(self.idx, &data);
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                // Trailers: not echoed.
                Err(_) => Poll::Ready(None),
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `len` bytes of [`pattern_bytes`] in 64 KiB frames.
struct PatternBody {
    offset: usize,
    len: usize,
    chunked: bool,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.offset >= self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.offset).min(64 * 1024);
        let chunk: Vec<u8> = (self.offset..self.offset + n).map(pattern_byte).collect();
        self.offset += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        if self.chunked {
            SizeHint::default()
        } else {
            SizeHint::with_exact((self.len - self.offset) as u64)
        }
    }
}

fn pattern_byte(i: usize) -> u8 {
    // Period 251 (prime): misplaced, dropped or repeated chunks show up.
    (i % 251) as u8 ^ ((i >> 16) as u8)
}

/// The deterministic test payload of `len` bytes (what [`Reply::stream`]
/// sends).
pub fn pattern_bytes(len: usize) -> Vec<u8> {
    (0..len).map(pattern_byte).collect()
}

/// FNV-1a 64 of `data`, to compare large payloads in messages.
pub fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A port on 127.0.0.1 with nothing listening (connections are refused).
pub fn refused_port() -> u16 {
    let l = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = l.local_addr().expect("local addr").port();
    drop(l);
    port
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::{RawClient, exchange};

    #[tokio::test]
    async fn echoes_and_records() {
        let up = MockUpstream::start().await;
        let ex = exchange(
            up.addr(),
            b"POST /a/b?x=1 HTTP/1.1\r\nHost: h\r\nX-T: 1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let r = ex.first();
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/a/b");
        assert_eq!(v["query"], "x=1");
        assert_eq!(v["headers"]["x-t"], "1");
        assert_eq!(v["body_len"], 3);
        let rec = up.last();
        assert_eq!(rec.uri, "/a/b?x=1");
        assert_eq!(rec.body, b"abc");
        assert_eq!(rec.header("host"), Some("h"));
    }

    #[tokio::test]
    async fn fixed_stream_and_close() {
        let up = MockUpstream::start().await;
        up.on("/f", Reply::fixed(201, "made").header("x-y", "z"));
        up.on("/s", Reply::stream_chunked(200_000));
        up.on("/c", Reply::close());
        let mut c = RawClient::connect(up.addr()).await.unwrap();
        c.send(b"GET /f HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
        let r = c.read_response(Duration::from_secs(5)).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"made"[..]));
        assert_eq!(r.header("x-y"), Some("z"));
        c.send(b"GET /s HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
        let r = c.read_response(Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.body, pattern_bytes(200_000));
        assert_eq!(up.distinct_connections(), 1);
        let ex = exchange(
            up.addr(),
            b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(ex.closed);
        assert!(ex.responses.is_empty(), "{:?}", ex.responses);
    }

    #[tokio::test]
    async fn fixed_reply_sends_hop_by_hop_headers_verbatim() {
        // The gateway tests rely on these reaching the gateway.
        let up = MockUpstream::start().await;
        let hop = [
            ("Connection", "X-Up-Named"),
            ("X-Up-Named", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authenticate", "Basic"),
            ("Upgrade", "foo/1"),
        ];
        let reply = hop
            .iter()
            .fold(Reply::fixed(200, "b"), |r, (k, v)| r.header(k, v));
        up.on("/hop", reply);
        let ex = exchange(
            up.addr(),
            b"GET /hop HTTP/1.1\r\nHost: h\r\n\r\n",
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        let r = ex.first();
        for (h, _) in hop {
            assert!(r.header(h).is_some(), "{h} missing:\n{}", r.head);
        }
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let up = MockUpstream::start_with_idle_timeout(Duration::from_millis(200)).await;
        let mut c = RawClient::connect(up.addr()).await.unwrap();
        c.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
        let r = c.read_response(Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.status, 200);
        let start = std::time::Instant::now();
        let rest = c.wait_closed(Duration::from_secs(3)).await.unwrap();
        assert!(rest.is_empty());
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn upgrade_echoes() {
        let up = MockUpstream::start().await;
        up.on("/ws", Reply::upgrade());
        let mut c = RawClient::connect(up.addr()).await.unwrap();
        c.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .await
            .unwrap();
        let r = c.read_response(Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.status, 101);
        c.send(b"ping-bytes").await.unwrap();
        let back = c.read_exact(10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(back, b"ping-bytes");
    }

    #[tokio::test]
    async fn resetting_server() {
        let up = MockUpstream::start_resetting().await;
        let ex = exchange(
            up.addr(),
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(ex.closed);
        assert!(ex.raw.is_empty());
        assert_eq!(up.accepted(), 1);
    }

    #[tokio::test]
    async fn echo_body_streams() {
        let up = MockUpstream::start().await;
        up.on("/e", Reply::echo_body());
        let resp = crate::client()
            .post(format!("{}/e", up.url()))
            .body(pattern_bytes(1 << 20))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let got = resp.bytes().await.unwrap();
        assert_eq!(got.len(), 1 << 20);
        assert!(got == pattern_bytes(1 << 20));
        assert_eq!(up.last().body.len(), 1 << 20);
    }
}
