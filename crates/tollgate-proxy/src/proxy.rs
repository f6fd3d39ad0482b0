//! One request's way through the gateway, top to bottom.
//!
//! [`handle`] is the whole flow; every branch that ends a request early returns a response
//! from here, so the order below is the order a client experiences.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tollgate_definitions::ApiSpec;

use crate::body::{ProxyBody, RequestBody, UpstreamBody};
use crate::chain::RequestCtx;
use crate::error::GatewayError;
use crate::framing::FramingVerdict;
use crate::headers::{self as hdr, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID};
use crate::metrics::{Rejection, Sample, WorkerMetrics};
use crate::path;
use crate::router::ApiRoute;
use crate::upstream::{self, UpstreamPool};
use crate::{Gateway, Routes};

/// State of one worker thread, shared by its connections (never by other threads).
pub(crate) struct WorkerCtx {
    pub(crate) index: usize,
    pub(crate) pool: Rc<UpstreamPool>,
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
    fn routes(&self, gateway: &Gateway) -> Arc<Routes> {
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
    pub(crate) scheme: &'static str,
    pub(crate) verdict: Arc<FramingVerdict>,
    pub(crate) next_index: Cell<u64>,
}

/// Serves one request.
pub(crate) async fn handle(conn: &ConnCtx, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let index = conn.next_index.get();
    conn.next_index.set(index + 1);
    let close = conn.gateway.config.close_connections;
    // Observation costs nothing unless metrics or the access log are on.
    let access_log = conn.gateway.config.access_log;
    let analytics = conn.gateway.analytics.is_some();
    let observing = access_log || analytics || conn.worker.metrics.is_some();
    let started = observing.then(Instant::now);
    let mut seen = Observed::default();
    if access_log {
        seen.request_id = Some(request_id(&mut req));
    }
    if access_log || analytics {
        seen.method = Some(req.method().clone());
        seen.path = Some(req.uri().path().to_owned());
    }
    if analytics {
        seen.timestamp = Some(tollgate_analytics::Timestamp::now());
        let text = |name: header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        seen.user_agent = text(header::USER_AGENT);
        seen.content_length = text(header::CONTENT_LENGTH).parse().unwrap_or(0);
    }
    let mut resp = match serve(conn, index, req, &mut seen).await {
        Ok(resp) => resp,
        Err(err) => {
            log_error(&err);
            seen.classify(&err);
            err.into_response()
        }
    };
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(started) = started {
        seen.finish(conn, resp.status(), started.elapsed());
    }
    resp
}

/// What one request did, for metrics and the access log.
#[derive(Debug, Default)]
struct Observed {
    api: Option<Arc<str>>,
    key_id: Option<Box<str>>,
    upstream: Option<Duration>,
    upstream_error: bool,
    store_error: bool,
    rejection: Option<Rejection>,
    request_id: Option<HeaderValue>,
    method: Option<http::Method>,
    path: Option<String>,
    /// Set when an analytics record is to be written for this request.
    track: Option<Tracked>,
    timestamp: Option<tollgate_analytics::Timestamp>,
    user_agent: String,
    content_length: i64,
}

/// What an analytics record needs from the route and the key.
#[derive(Debug)]
struct Tracked {
    api_name: Arc<str>,
    org_id: Arc<str>,
    host: Arc<str>,
    org_tag: Arc<str>,
    api_tag: Arc<str>,
    strip: Option<String>,
    alias: String,
    tags: Vec<Arc<str>>,
}

impl Observed {
    /// The key as analytics and logs show it: its storage id when keys are hashed, else a
    /// SHA-256 of the raw key.
    fn key_hash(&self, conn: &ConnCtx) -> String {
        self.key_id.as_deref().map_or_else(String::new, |id| {
            if conn.gateway.config.keys.hash_keys {
                id.to_owned()
            } else {
                tollgate_session::HashAlgorithm::Sha256.hash(id.as_bytes())
            }
        })
    }

    fn record(
        &self,
        conn: &ConnCtx,
        track: &Tracked,
        timestamp: tollgate_analytics::Timestamp,
        status: StatusCode,
        total: Duration,
    ) -> tollgate_analytics::Record {
        let raw_path = self.path.clone().unwrap_or_default();
        let path = match &track.strip {
            Some(lp) => match raw_path.strip_prefix(lp.as_str()) {
                Some(rest) if rest.starts_with('/') => rest.to_owned(),
                Some(rest) => format!("/{rest}"),
                None => raw_path.clone(),
            },
            None => raw_path.clone(),
        };
        let api_key = self.key_hash(conn);
        let api_id = self.api.clone().unwrap_or_else(|| Arc::from(""));
        let mut tags = Vec::with_capacity(track.tags.len() + 3);
        tags.extend(track.tags.iter().cloned());
        if !api_key.is_empty() {
            tags.push(Arc::from(format!("key-{api_key}")));
        }
        tags.push(Arc::clone(&track.org_tag));
        tags.push(Arc::clone(&track.api_tag));
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let mut record = tollgate_analytics::Record {
            method: self
                .method
                .as_ref()
                .map_or("", http::Method::as_str)
                .to_owned(),
            host: Arc::clone(&track.host),
            path,
            raw_path,
            content_length: self.content_length,
            user_agent: self.user_agent.clone(),
            day: 0,
            month: 0,
            year: 0,
            hour: 0,
            response_code: i64::from(status.as_u16()),
            api_key,
            timestamp,
            api_version: "Non Versioned",
            api_name: Arc::clone(&track.api_name),
            api_id,
            org_id: Arc::clone(&track.org_id),
            oauth_id: "",
            request_time: ms(total),
            raw_request: "",
            raw_response: "",
            ip_address: conn.peer_ip.to_str().unwrap_or("").to_owned(),
            network: tollgate_analytics::Network::default(),
            latency: tollgate_analytics::Latency {
                total: ms(total),
                upstream: self.upstream.map_or(0, ms),
            },
            tags,
            alias: track.alias.clone(),
            track_path: false,
            expire_at: tollgate_analytics::Timestamp {
                secs: timestamp.secs.saturating_add(100 * 365 * 86_400),
                nanos: 0,
            },
        };
        record.set_calendar();
        record
    }

    fn classify(&mut self, err: &GatewayError) {
        match err {
            GatewayError::Refused(r) => {
                self.rejection = Some(match r.message {
                    "Rate Limit Exceeded" | "API Rate Limit Exceeded" => Rejection::Rate,
                    "Quota exceeded" => Rejection::Quota,
                    _ if r.status == StatusCode::SERVICE_UNAVAILABLE => {
                        self.store_error = true;
                        Rejection::Other
                    }
                    _ => Rejection::Auth,
                });
            }
            GatewayError::Upstream { .. } | GatewayError::UpstreamTimeout { .. } => {
                self.upstream_error = true;
            }
            _ => self.rejection = Some(Rejection::Other),
        }
    }

    fn finish(self, conn: &ConnCtx, status: StatusCode, total: Duration) {
        static NO_API: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
        if let Some(metrics) = &conn.worker.metrics {
            let sample = Sample {
                status: status.as_u16(),
                total,
                upstream: self.upstream,
                rejection: self.rejection,
                upstream_error: self.upstream_error,
            };
            metrics.record(self.api.as_ref().unwrap_or(&NO_API), &sample);
            if self.store_error
                && let Some(all) = &conn.gateway.metrics
            {
                all.store_error();
            }
        }
        if let (Some(batch), Some(track), Some(timestamp)) =
            (&conn.worker.analytics, &self.track, self.timestamp)
        {
            batch.record(self.record(conn, track, timestamp, status, total));
        }
        if conn.gateway.config.access_log {
            // The key is logged by the id it is stored under, hashed when it is stored raw:
            // a raw key never reaches the log.
            let key = self.key_hash(conn);
            tracing::info!(
                target: "tollgate::access",
                request_id = self.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
                method = self.method.as_ref().map_or("", http::Method::as_str),
                path = self.path.as_deref().unwrap_or(""),
                api_id = self.api.as_deref().unwrap_or(""),
                key = key.as_str(),
                status = status.as_u16(),
                latency_ms = total.as_secs_f64() * 1000.0,
                upstream_ms = self.upstream.map(|u| u.as_secs_f64() * 1000.0),
                "request"
            );
        }
    }
}

/// The request's `X-Request-Id`, generated (and added, so the upstream sees it) when absent.
fn request_id(req: &mut Request<Incoming>) -> HeaderValue {
    if let Some(v) = req.headers().get(X_REQUEST_ID) {
        return v.clone();
    }
    static PREFIX: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        u32::from_le_bytes(b)
    });
    static THREADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    thread_local! {
        // Each thread numbers its own requests (no counter shared between cores), in its own
        // range: the top 16 bits are the thread's.
        static NEXT: std::cell::Cell<u64> = std::cell::Cell::new(
            THREADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 48,
        );
    }
    let n = NEXT.with(|next| {
        let n = next.get();
        next.set(n + 1);
        n
    });
    let mut hex = [0u8; 24];
    tollgate_session::hex_into(&mut hex[..8], &PREFIX.to_be_bytes());
    tollgate_session::hex_into(&mut hex[8..], &n.to_be_bytes());
    let id = HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("0"));
    req.headers_mut().insert(X_REQUEST_ID, id.clone());
    id
}

async fn serve(
    conn: &ConnCtx,
    index: u64,
    mut req: Request<Incoming>,
    seen: &mut Observed,
) -> Result<Response<ProxyBody>, GatewayError> {
    // 1. A head the framing guard refused reaches us as a stand-in request, in order.
    if let Some(rejection) = conn.verdict.rejection_for(index) {
        return Err(GatewayError::Framing(rejection));
    }

    // 2. Normalise the path once; every rule after this sees only the normalised form.
    let normalised = path::normalise(req.uri().path()).map_err(|_| GatewayError::BadPath)?;
    if let Cow::Owned(p) = &normalised {
        *req.uri_mut() = with_path(req.uri(), p)?;
    }
    let path = req.uri().path();

    // 3. The admin API and health check share the port and come before any API, as in Tyk.
    if path == "/hello" || path == "/tyk" || path.starts_with("/tyk/") {
        let resp = conn.gateway.admin_handle(req).await;
        return Ok(resp.map(|inner| ProxyBody::Full { inner }));
    }

    // 4. Route: the worker's own snapshot of the table; the request keeps it even if a
    //    reload swaps the table meanwhile.
    let routes = conn.worker.routes(&conn.gateway);
    let route = routes
        .lookup(request_host(&req), path)
        .ok_or(GatewayError::NoRoute)?;
    let observing = conn.worker.metrics.is_some()
        || conn.gateway.config.access_log
        || conn.gateway.analytics.is_some();
    if observing {
        seen.api = Some(Arc::clone(&route.spec.api_id));
    }
    if conn.gateway.analytics.is_some() && !route.spec.do_not_track {
        let spec = &route.spec;
        let texts = &route.record_texts;
        seen.track = Some(Tracked {
            api_name: Arc::clone(&spec.name),
            org_id: Arc::clone(&spec.org_id),
            host: Arc::clone(&texts.host),
            org_tag: Arc::clone(&texts.org_tag),
            api_tag: Arc::clone(&texts.api_tag),
            strip: spec.strip_listen_path.then(|| spec.listen_path.clone()),
            alias: String::new(),
            tags: Vec::new(),
        });
    }

    let (mut parts, body) = req.into_parts();

    // 5. The API's stages, in Tyk's order (see `chain`).
    let mut cx = RequestCtx {
        head: &mut parts,
        api: &route.spec,
        sessions: &conn.gateway.sessions,
        body_limit: None,
        key: None,
        key_id: None,
        rate_headers: None,
    };
    let outcome = route.chain.run(&mut cx).await;
    let (body_limit, rate_headers) = (cx.body_limit, cx.rate_headers);
    if observing {
        seen.key_id = cx.key_id.take();
    }
    if let (Some(track), Some(key)) = (seen.track.as_mut(), cx.key.as_ref()) {
        track.alias.clone_from(&key.session.alias);
        track.tags = key
            .session
            .tags
            .iter()
            .map(|t| Arc::from(t.as_str()))
            .collect();
    }
    if let Err(err) = outcome {
        seen.classify(&err);
        let mut resp = err.into_response();
        // Tyk's rate_limits mode reports the window on refusals too.
        if let Some(h) = rate_headers.filter(|_| conn.gateway.config.rate_limit_headers) {
            h.apply(resp.headers_mut());
        }
        return Ok(resp);
    }

    // 6. Forward; the limit headers go on the upstream's response.
    let sent = observing.then(Instant::now);
    let result = forward(conn, route, parts, body, body_limit).await;
    if let Some(sent) = sent {
        seen.upstream = Some(sent.elapsed());
    }
    let mut resp = result?;
    if let Some(h) = rate_headers {
        h.apply(resp.headers_mut());
    }
    Ok(resp)
}

/// The host a request is for: the Host header, else the authority of an absolute-form URI.
fn request_host(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

fn with_path(uri: &Uri, path: &str) -> Result<Uri, GatewayError> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).map_err(|_| GatewayError::BadPath)?);
    Uri::from_parts(parts).map_err(|_| GatewayError::BadPath)
}

async fn forward(
    conn: &ConnCtx,
    route: &ApiRoute,
    mut parts: Parts,
    body: Incoming,
    body_limit: Option<u64>,
) -> Result<Response<ProxyBody>, GatewayError> {
    let spec = &route.spec;
    let config = &conn.gateway.config;
    let upgrade = config.websockets && hdr::wants_upgrade(&parts.headers);
    let on_client_upgrade = if upgrade {
        // From here on the client's bytes are tunnel data, not HTTP.
        conn.verdict.stop_inspecting();
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };

    parts.uri = upstream_uri(spec, &parts.uri)?;
    parts.version = Version::HTTP_11;
    rewrite_request_headers(conn, spec, &mut parts.headers, upgrade);

    let body = if body.is_end_stream() {
        UpstreamBody::Empty
    } else {
        UpstreamBody::Streaming(Box::pin(RequestBody::new(
            body,
            body_limit,
            config.edge.read_timeout,
        )))
    };
    let req = Request::from_parts(parts, body);
    let authority = &spec.target.authority;
    let timeout = config.proxy_default_timeout;

    if let Some(on_client_upgrade) = on_client_upgrade {
        let mut resp = upstream::send_upgrade(authority, req, timeout).await?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let on_upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::task::spawn_local(tunnel(on_client_upgrade, on_upstream_upgrade));
            hdr::remove_hop_by_hop(resp.headers_mut(), true);
        } else {
            // Not upgraded: the client may already be streaming tunnel bytes we no longer
            // inspect, so this connection ends with this response.
            hdr::remove_hop_by_hop(resp.headers_mut(), false);
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return Ok(resp.map(ProxyBody::unpooled));
    }

    let (mut resp, pool_return) = conn.worker.pool.send(authority, req, timeout).await?;
    // We speak HTTP/1.1 to the client whatever the upstream spoke.
    *resp.version_mut() = Version::HTTP_11;
    hdr::remove_hop_by_hop(resp.headers_mut(), false);
    Ok(resp.map(|b| ProxyBody::upstream(b, pool_return)))
}

/// The upstream URI: target path prefix + (listen-path-stripped) request path, target query
/// then request query. Origin-form, since the connection already names the upstream.
fn upstream_uri(spec: &ApiSpec, uri: &Uri) -> Result<Uri, GatewayError> {
    let path = uri.path();
    let rest = if spec.strip_listen_path {
        path.strip_prefix(spec.listen_path.as_str()).unwrap_or(path)
    } else {
        path
    };
    let target = &spec.target;
    let query = uri.query();
    // Common case: nothing to prepend; the (already normalised) path and query pass as they are.
    if target.base_path.is_empty() && target.base_query.is_none() && rest.len() == path.len() {
        return Ok(uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone())));
    }
    let mut out =
        String::with_capacity(target.base_path.len() + rest.len() + query.map_or(0, str::len) + 2);
    join_paths(&mut out, &target.base_path, rest, spec.disable_strip_slash);
    match (target.base_query.as_deref(), query) {
        (Some(b), Some(q)) => {
            out.push('?');
            out.push_str(b);
            out.push('&');
            out.push_str(q);
        }
        (Some(q), None) | (None, Some(q)) => {
            out.push('?');
            out.push_str(q);
        }
        (None, None) => {}
    }
    Uri::try_from(out).map_err(|_| GatewayError::BadPath)
}

/// Tyk's single-joining-slash rule: one `/` between the parts; an empty remainder yields the
/// target path without its trailing slash (kept with `disable_strip_slash`).
fn join_paths(out: &mut String, base: &str, rest: &str, keep_trailing_slash: bool) {
    if rest.is_empty() || rest == "/" {
        let base = if keep_trailing_slash {
            base
        } else {
            base.trim_end_matches('/')
        };
        out.push_str(if base.is_empty() { "/" } else { base });
        return;
    }
    let base = base.trim_end_matches('/');
    let rest = rest.trim_start_matches('/');
    if !base.starts_with('/') {
        out.push('/');
    }
    out.push_str(base);
    if !base.is_empty() {
        out.push('/');
    }
    out.push_str(rest);
}

fn rewrite_request_headers(
    conn: &ConnCtx,
    spec: &ApiSpec,
    headers: &mut http::HeaderMap,
    upgrade: bool,
) {
    hdr::remove_hop_by_hop(headers, upgrade);
    // hyper answers `100-continue` to the client itself when the body is first read.
    headers.remove(header::EXPECT);
    hdr::append_forwarded_for(headers, &conn.peer_ip);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(conn.scheme));
    let client_host = headers.get(header::HOST).cloned();
    if let Some(host) = client_host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if !spec.preserve_host_header || !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, spec.target.host_header.clone());
    }
}

/// Copies bytes both ways between client and upstream once both sides have switched protocols.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel closed");
    }
}

fn log_error(err: &GatewayError) {
    match err {
        GatewayError::Upstream { .. } | GatewayError::UpstreamTimeout { .. } => {
            tracing::warn!(error = %err, "upstream request failed");
        }
        _ => tracing::debug!(error = %err, "request refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(lp: &str, target: &str, strip: bool) -> ApiSpec {
        ApiSpec::from_json(&serde_json::json!({"api_id": "a",
            "proxy": {"listen_path": lp, "target_url": target, "strip_listen_path": strip}}))
        .unwrap()
    }

    fn up(s: &ApiSpec, uri: &str) -> String {
        upstream_uri(s, &uri.parse().unwrap()).unwrap().to_string()
    }

    #[test]
    fn upstream_paths() {
        let s = spec("/orders/", "http://u/base", true);
        assert_eq!(up(&s, "/orders/items/1?x=1"), "/base/items/1?x=1");
        assert_eq!(up(&s, "/orders/"), "/base");
        let s = spec("/orders/", "http://u/base", false);
        assert_eq!(up(&s, "/orders/items/1"), "/base/orders/items/1");
        let s = spec("/orders/", "http://u", true);
        assert_eq!(up(&s, "/orders/get"), "/get");
        assert_eq!(up(&s, "/orders/"), "/");
        let s = spec("/orders", "http://u/", true);
        assert_eq!(up(&s, "/ordersfoo"), "/foo");
        let s = spec("/a/", "http://u/t?k=v", false);
        assert_eq!(up(&s, "/a/b?q=1"), "/t/a/b?k=v&q=1");
        let s = spec("/a/", "http://u", false);
        assert_eq!(up(&s, "/a/b?q=1"), "/a/b?q=1");
    }

    #[test]
    fn single_joining_slash() {
        let j = |b: &str, r: &str, keep: bool| {
            let mut s = String::new();
            join_paths(&mut s, b, r, keep);
            s
        };
        assert_eq!(j("/foo", "", false), "/foo");
        assert_eq!(j("/foo", "/", false), "/foo");
        assert_eq!(j("/foo/", "/bar", false), "/foo/bar");
        assert_eq!(j("/foo//", "//bar/", false), "/foo/bar/");
        assert_eq!(j("/", "", true), "/");
        assert_eq!(j("/foo/", "/", true), "/foo/");
    }
}
