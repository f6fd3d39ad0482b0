//! One request's way through the gateway, top to bottom.
//!
//! [`handle`] is the whole flow; every branch that ends a request early returns a response
//! from here, so the order below is the order a client experiences.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tollgate_definitions::{ApiSpec, Target};

use crate::balance::Balancer;
use crate::body::ProxyBody;
use crate::chain::{Flow, Reply};
use crate::ctx::{RequestCtx, RewriteTo, StageRequest};
use crate::error::GatewayError;
use crate::headers::{self as hdr, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_TYK_API_EXPIRES};
use crate::observe;
use crate::path;
use crate::refusal::Refusal;
use crate::request_body::{RequestBody, UpstreamBody};
use crate::upstream::{self, Upstream};
use crate::worker::{ConnCtx, ListenerRole};

/// Serves one request, from its arrival to its observation.
pub(crate) async fn handle(conn: &ConnCtx, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let index = conn.next_index.get();
    conn.next_index.set(index + 1);
    let mut cx = RequestCtx::default();
    observe::arrival(conn, &mut req, &mut cx);
    let mut resp = match serve(conn, index, req, &mut cx).await {
        Ok(resp) => resp,
        Err(err) => {
            log_error(&err);
            cx.failed(&err);
            err.into_response(&conn.gateway.messages)
        }
    };
    // Once the CORS stage ran, every response carries its headers: the upstream's, a
    // refusal, an upstream failure, an answered preflight (Tyk's CORS handler sets them on
    // the writer before anything after it runs).
    if let Some(cors) = &cx.cors {
        cors.apply(resp.headers_mut());
    }
    if conn.gateway.config.close_connections {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    observe::finish(conn, &cx, resp.status());
    resp
}

/// The lifecycle: framing verdict → normalise → admin → route → version → stages (which may
/// refuse or answer) → forward.
async fn serve(
    conn: &ConnCtx,
    index: u64,
    mut req: Request<Incoming>,
    cx: &mut RequestCtx,
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

    // 3. The admin API and health check come before any API, as in Tyk. `/tyk/` is served on
    //    the shared port, or only on `control_api_port` (whose listener serves nothing else),
    //    and with `control_api_hostname` only for that Host; `/hello` on every listener, so a
    //    load balancer can check the port it sends traffic to.
    let admin = if path == "/hello" {
        true
    } else if path == "/tyk" || path.starts_with("/tyk/") {
        conn.role != ListenerRole::Public && admin_host_ok(conn, &req)
    } else {
        false
    };
    if admin {
        let resp = conn.gateway.admin_handle(req).await;
        return Ok(resp.map(|inner| ProxyBody::Full { inner }));
    }
    if conn.role == ListenerRole::Control {
        return Err(GatewayError::NoRoute);
    }

    // 4. Route: the worker's own snapshot of the table; the request keeps it even if a
    //    reload swaps the table meanwhile.
    let routes = conn.worker.routes(&conn.gateway);
    let route = routes
        .lookup(request_host(&req), path)
        .ok_or(GatewayError::NoRoute)?;
    observe::routed(conn, route, cx);

    // 5. The version's stages, in Tyk's order (see `chain`): one may refuse, or answer the
    //    request itself (a CORS preflight).
    let (mut parts, body) = req.into_parts();
    // A versioned API serves each version with its own stages and upstream.
    let (spec, chain, balancer) = match &route.versions {
        None => (&route.spec, &route.chain, route.balancer.as_ref()),
        Some(versions) => match versions.select(&mut parts) {
            Ok(v) => {
                observe::versioned(v, cx);
                (&v.spec, &v.chain, v.balancer.as_ref())
            }
            Err(refusal) => return Ok(refuse(conn, cx, refusal)),
        },
    };
    let mut stage_req = StageRequest {
        head: &mut parts,
        api: spec,
        sessions: &conn.gateway.sessions,
        peer: conn.peer_addr,
        client_cert: conn.client_cert,
    };
    match chain.run(&mut stage_req, cx).await {
        Ok(Flow::Continue) => {}
        Ok(Flow::Reply(reply)) => return Ok(answered(cx, reply)),
        Err(refusal) => return Ok(refuse(conn, cx, refusal)),
    }

    // 6. Forward (to the load balancer's pick, when the API balances); the limit headers go
    //    on the upstream's response.
    let sent = cx.started.is_some().then(Instant::now);
    let result = forward(
        conn,
        spec,
        balancer,
        parts,
        body,
        cx.body_limit,
        cx.upstream_timeout,
        cx.rewrite.take(),
    )
    .await;
    if let Some(sent) = sent {
        cx.upstream = Some(sent.elapsed());
    }
    let mut resp = result?;
    tollgate_rules::headers::apply_edits(&cx.response_edits, resp.headers_mut());
    if let Some(h) = cx.rate_headers {
        h.apply(resp.headers_mut());
    }
    if let Some(h) = cx.api_expires.take() {
        resp.headers_mut().insert(X_TYK_API_EXPIRES, h);
    }
    Ok(resp)
}

/// A stage's own (non-error) answer, a CORS preflight or a mock: metrics count it as a
/// success with no upstream time. A preflight writes no analytics record, as Tyk's CORS
/// handler answers before its analytics recording is reached; a mock does.
fn answered(cx: &mut RequestCtx, reply: Reply) -> Response<ProxyBody> {
    // A preflight is not an API call (Tyk answers it before analytics); a mock is.
    if reply.mock.is_none() {
        cx.track = None;
    }
    let mut resp = reply.into_response();
    // A mock after the limit stages carries the key's quota headers, as an upstream's
    // response would (Tyk sets them on mock responses too).
    if let Some(h) = cx.rate_headers {
        h.apply(resp.headers_mut());
    }
    if let Some(h) = cx.api_expires.take() {
        resp.headers_mut().insert(X_TYK_API_EXPIRES, h);
    }
    resp
}

/// A stage's refusal as the client gets it.
fn refuse(conn: &ConnCtx, cx: &mut RequestCtx, refusal: Refusal) -> Response<ProxyBody> {
    cx.refused(refusal.kind);
    let mut resp = GatewayError::Refused(refusal).into_response(&conn.gateway.messages);
    // Tyk's rate_limits mode reports the window on refusals too.
    if let Some(h) = cx
        .rate_headers
        .filter(|_| conn.gateway.config.rate_limit_headers)
    {
        h.apply(resp.headers_mut());
    }
    resp
}

/// True unless `control_api_hostname` names another host than the request's.
fn admin_host_ok(conn: &ConnCtx, req: &Request<Incoming>) -> bool {
    conn.gateway
        .config
        .control_hostname
        .as_deref()
        .is_none_or(|want| {
            request_host(req).is_some_and(|h| {
                let host = h.rsplit_once(':').map_or(h, |(host, port)| {
                    if port.bytes().all(|b| b.is_ascii_digit()) {
                        host
                    } else {
                        h
                    }
                });
                host.eq_ignore_ascii_case(want)
            })
        })
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

#[allow(clippy::too_many_arguments)] // each is one thing the earlier phases decided
async fn forward(
    conn: &ConnCtx,
    spec: &ApiSpec,
    balancer: Option<&Balancer>,
    mut parts: Parts,
    body: Incoming,
    body_limit: Option<u64>,
    hard_timeout: Option<Duration>,
    rewrite: Option<RewriteTo>,
) -> Result<Response<ProxyBody>, GatewayError> {
    // The upstream: a rewrite to another host goes there whatever the balancer would pick (in
    // Tyk the retained host replaces the balanced target too, even when all are down); else
    // the balancer's pick, before anything of the request is committed (a tunnel included).
    let target = match (&rewrite, balancer) {
        (Some(RewriteTo::Url { .. }), _) | (_, None) => &spec.target,
        (_, Some(b)) => b.pick().ok_or(GatewayError::AllHostsDown)?,
    };
    let config = &conn.gateway.config;
    let upgrade = config.websockets && hdr::wants_websocket(&parts.headers);
    let trailers = hdr::accepts_trailers(&parts.headers);
    let on_client_upgrade = if upgrade {
        // From here on the client's bytes are tunnel data, not HTTP.
        conn.verdict.stop_inspecting();
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };

    let mut upstream = Upstream::of(target);
    let rewritten;
    let mut rewritten_host = None;
    parts.uri = match rewrite {
        None => upstream_uri(spec, target, &parts.uri)?,
        Some(RewriteTo::Path(pq)) => target_uri(spec, target, pq.path(), pq.query())?,
        Some(RewriteTo::Url {
            authority,
            host,
            path_and_query,
            tls,
        }) => {
            rewritten = (authority, tls);
            upstream = Upstream::rewritten(&rewritten.0, rewritten.1.as_ref(), spec)?;
            rewritten_host = Some(host);
            Uri::from(path_and_query)
        }
    };
    parts.version = Version::HTTP_11;
    rewrite_request_headers(conn, spec, target, &mut parts.headers, upgrade);
    // A rewrite to another host talks to that host as itself (Tyk's retained host).
    if let Some(host) = rewritten_host {
        parts.headers.insert(header::HOST, host);
    }

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
    // The endpoint's hard timeout wins even when longer than the default, as in Tyk.
    let timeout = hard_timeout.unwrap_or(config.proxy_default_timeout);

    if let Some(on_client_upgrade) = on_client_upgrade {
        let mut resp = upstream::send_upgrade(upstream, req, timeout).await?;
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

    let (mut resp, pool_return) = conn
        .worker
        .pool
        .send(upstream, req, timeout, trailers)
        .await?;
    // We speak HTTP/1.1 to the client whatever the upstream spoke.
    *resp.version_mut() = Version::HTTP_11;
    hdr::remove_hop_by_hop(resp.headers_mut(), false);
    Ok(resp.map(|b| ProxyBody::upstream(b, pool_return)))
}

/// The upstream URI: target path prefix + (listen-path-stripped) request path, target query
/// then request query. Origin-form, since the connection already names the upstream.
fn upstream_uri(spec: &ApiSpec, target: &Target, uri: &Uri) -> Result<Uri, GatewayError> {
    let path = uri.path();
    let rest = if spec.strip_listen_path {
        path.strip_prefix(spec.listen_path.as_str()).unwrap_or(path)
    } else {
        path
    };
    // Common case: nothing to prepend; the (already normalised) path and query pass as they are.
    if target.base_path.is_empty() && target.base_query.is_none() && rest.len() == path.len() {
        return Ok(uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone())));
    }
    target_uri(spec, target, rest, uri.query())
}

/// The target's path joined with `rest`, the target's query then `query`.
fn target_uri(
    spec: &ApiSpec,
    target: &Target,
    rest: &str,
    query: Option<&str>,
) -> Result<Uri, GatewayError> {
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
    target: &Target,
    headers: &mut http::HeaderMap,
    upgrade: bool,
) {
    hdr::remove_hop_by_hop(headers, upgrade);
    // hyper answers `100-continue` to the client itself when the body is first read.
    headers.remove(header::EXPECT);
    if !crate::transforms::drops_forwarded_for(spec) {
        hdr::append_forwarded_for(headers, &conn.peer_ip);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(conn.scheme));
    let client_host = headers.get(header::HOST).cloned();
    if let Some(host) = client_host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if !spec.preserve_host_header || !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, target.host_header.clone());
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
        GatewayError::Upstream(_) => {
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
        upstream_uri(s, &s.target, &uri.parse().unwrap())
            .unwrap()
            .to_string()
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
