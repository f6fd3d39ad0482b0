//! Tyk's request transforms (its step 9, after authentication and limits): the version's
//! `global_headers_remove` / `global_headers`, then the endpoint's `transform_headers`. The
//! response header edits (`transform_response_headers`, then the global ones) are rendered
//! here too, while the request is at hand, and applied when the upstream answers.
//!
//! Values may use `$tyk_meta.<field>` (the key's `meta_data`) and, when the API sets
//! `enable_context_vars`, `$tyk_context.<name>`; both are read from the request as it was
//! before any edit, as Tyk captures its context variables before the transforms run.
//!
//! Then the endpoint's `url_rewrites` (reading the headers as edited) and `method_transforms`,
//! both selected by the request's original path and method. The rewritten target is kept in
//! [`RequestCtx::rewrite`] for the forwarding step.

use std::net::IpAddr;
use std::sync::Arc;

use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Uri, header};
use tollgate_definitions::ApiSpec;
use tollgate_rules::headers::{HeaderOps, apply_edits};
use tollgate_rules::rewrite::{RewriteInput, Rewritten};
use tollgate_rules::template::{Vars, push_json};
use tollgate_rules::version::VersionRules;
use tollgate_session::ActiveKey;

use crate::ctx::{RequestCtx, RewriteTo, StageRequest};
use crate::endpoints::PathReadings;
use crate::headers::X_REQUEST_ID;
use crate::ip_rules::client_ip;

/// The header transforms of the served version.
#[derive(Debug)]
pub(crate) struct Transforms {
    version: Arc<VersionRules>,
    paths: PathReadings,
    context_vars: bool,
    strip_listen_path: bool,
    xff_depth: usize,
}

impl Transforms {
    /// The stage for `spec`, or `None` when its version edits no header.
    pub(crate) fn compile(spec: &ApiSpec, xff_depth: usize) -> Option<Self> {
        spec.version.transforms().then(|| Self {
            version: Arc::clone(&spec.version),
            paths: PathReadings::of(spec),
            context_vars: spec.context_vars,
            strip_listen_path: spec.strip_listen_path,
            xff_depth,
        })
    }

    pub(crate) fn on_request(&self, req: &mut StageRequest<'_>, cx: &mut RequestCtx) {
        let v = &*self.version;
        let head = &mut *req.head;
        let full = head.uri.path();
        let paths = self.paths.candidates(full);
        let endpoint = v.transform_headers.find(&head.method, &paths);
        let response = v.transform_response_headers.find(&head.method, &paths);
        let rewrite = v.url_rewrites.find(&head.method, &paths);
        let to_method = v.method_transforms.find(&head.method, &paths);
        let ops = [
            v.global_headers.as_ref(),
            endpoint,
            response,
            v.global_response_headers.as_ref(),
        ];
        // Context variables read the request as it arrived. Values are rendered before any
        // edit is applied, so that needs no copy of the request, except for a URL rewrite,
        // which runs after the header edits (its triggers see the edited headers).
        let needs_context = self.context_vars && ops.iter().flatten().any(|o| o.uses_context());
        let original = (self.context_vars && rewrite.is_some())
            .then(|| (head.uri.clone(), head.headers.clone()));
        let request_ops = [v.global_headers.as_ref(), endpoint];
        if needs_context && original.is_none() {
            let mut edits = Vec::new();
            let vars = RequestVars {
                key: cx.key.as_deref(),
                request: Some((&head.uri, &head.headers)),
                peer: req.peer,
                xff_depth: self.xff_depth,
            };
            for ops in request_ops.into_iter().flatten() {
                ops.record(&vars, &mut edits);
            }
            for ops in [response, v.global_response_headers.as_ref()]
                .into_iter()
                .flatten()
            {
                ops.record(&vars, &mut cx.response_edits);
            }
            apply_edits(&edits, &mut head.headers);
        } else {
            let vars = RequestVars {
                key: cx.key.as_deref(),
                request: original.as_ref().map(|(u, h)| (u, h)),
                peer: req.peer,
                xff_depth: self.xff_depth,
            };
            for ops in request_ops.into_iter().flatten() {
                ops.apply(&mut head.headers, &vars);
            }
            for ops in [response, v.global_response_headers.as_ref()]
                .into_iter()
                .flatten()
            {
                ops.record(&vars, &mut cx.response_edits);
            }
        }
        let vars = RequestVars {
            key: cx.key.as_deref(),
            request: original.as_ref().map(|(u, h)| (u, h)),
            peer: req.peer,
            xff_depth: self.xff_depth,
        };
        if let Some(rule) = rewrite {
            let path = if self.strip_listen_path {
                paths.stripped
            } else {
                paths.full
            };
            let pq = match head.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.to_owned(),
            };
            let input = RewriteInput {
                path_and_query: &pq,
                headers: &head.headers,
                meta: cx.key.as_deref().map(|k| &k.session.meta_data),
            };
            cx.rewrite = rule.apply(&input, &vars).and_then(|r| parse_rewrite(&r));
        }
        if let Some(m) = to_method {
            head.method = m.clone();
        }
    }
}

/// The rewritten target as the forwarding step uses it; one that is not a valid URI is
/// dropped (the request goes where it would have without the rewrite), as Tyk does.
fn parse_rewrite(r: &Rewritten) -> Option<RewriteTo> {
    let parsed = match r {
        Rewritten::Path(p) => {
            let p = if p.starts_with('/') {
                p.clone()
            } else {
                format!("/{p}")
            };
            PathAndQuery::try_from(p).ok().map(RewriteTo::Path)
        }
        Rewritten::Url(u) => Uri::try_from(u.as_str()).ok().and_then(|uri| {
            let written = uri.authority()?;
            let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let host = HeaderValue::from_str(written.as_str()).ok()?;
            // The pool connects to `host:port`: a URL that leaves the port out means the
            // scheme's.
            let authority = match written.port_u16() {
                Some(_) => written.clone(),
                None => {
                    let port = if https { 443 } else { 80 };
                    Authority::try_from(format!("{}:{port}", written.host())).ok()?
                }
            };
            let tls = if https {
                Some(tollgate_tls::client::server_name(written.host()).ok()?)
            } else {
                None
            };
            let pq = uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            Some(RewriteTo::Url {
                authority,
                host,
                path_and_query: pq,
                tls,
            })
        }),
    };
    if parsed.is_none() {
        tracing::debug!("URL rewrite result is not a valid URI; request not rewritten");
    }
    parsed
}

/// True when the version's global edits drop `X-Forwarded-For`: the upstream then gets none
/// (Tyk's way of not telling an upstream the client's address).
pub(crate) fn drops_forwarded_for(spec: &ApiSpec) -> bool {
    spec.version
        .global_headers
        .as_ref()
        .is_some_and(|g: &HeaderOps| g.removes(&crate::headers::X_FORWARDED_FOR))
}

/// Tyk's template variables for one request.
pub(crate) struct RequestVars<'a> {
    pub(crate) key: Option<&'a ActiveKey>,
    /// The request as it arrived; `None` = context variables are off.
    pub(crate) request: Option<(&'a Uri, &'a HeaderMap)>,
    pub(crate) peer: IpAddr,
    pub(crate) xff_depth: usize,
}

impl Vars for RequestVars<'_> {
    fn meta(&self, key: &str, out: &mut String) {
        if let Some(v) = self.key.and_then(|k| k.session.meta_data.get(key)) {
            push_json(v, out);
        }
    }

    fn context(&self, key: &str, out: &mut String) {
        let Some((uri, headers)) = self.request else {
            return;
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let value = match key {
            "path" => Some(uri.path()),
            "path_parts" => {
                // Tyk splits on `/`, drops the leading empty part and joins with `,`.
                let parts = uri.path().strip_prefix('/').unwrap_or(uri.path());
                for (i, part) in parts.split('/').enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(part);
                }
                None
            }
            "remote_addr" => {
                use std::fmt::Write as _;
                let _ = write!(out, "{}", client_ip(headers, self.peer, self.xff_depth));
                None
            }
            "request_id" => header(X_REQUEST_ID.as_str()),
            _ => {
                if let Some(name) = key.strip_prefix("headers_") {
                    header(&name.replace('_', "-"))
                } else if let Some(name) = key.strip_prefix("cookies_") {
                    cookie(headers, name)
                } else {
                    None
                }
            }
        };
        if let Some(v) = value {
            out.push_str(v);
        }
    }
}

/// The value of the cookie whose name (with `-` read as `_`, as Tyk names the variable) is
/// `name`.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| {
            n.len() == name.len()
                && n.bytes()
                    .zip(name.bytes())
                    .all(|(a, b)| a == b || (a == b'-' && b == b'_'))
        })
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_rules::template::Template;

    fn render(src: &str, vars: &RequestVars<'_>) -> String {
        Template::compile("f", src, false).unwrap().render(vars)
    }

    #[test]
    fn context_variables_read_the_request() {
        let uri: Uri = "/api/a/b?x=1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-real-ip", HeaderValue::from_static("10.1.2.3"));
        h.insert("x-user-tier", HeaderValue::from_static("gold"));
        h.insert("cookie", HeaderValue::from_static("a=1; session-id=s3"));
        h.insert("x-request-id", HeaderValue::from_static("r-7"));
        let on = RequestVars {
            key: None,
            request: Some((&uri, &h)),
            peer: IpAddr::from([127, 0, 0, 1]),
            xff_depth: 0,
        };
        let cases = [
            ("$tyk_context.path", "/api/a/b"),
            ("$tyk_context.path_parts", "api,a,b"),
            ("$tyk_context.remote_addr", "10.1.2.3"),
            ("$tyk_context.request_id", "r-7"),
            ("$tyk_context.headers_X_User_Tier", "gold"),
            ("$tyk_context.cookies_session_id", "s3"),
            ("[$tyk_context.nope]", "[]"),
            ("[$tyk_meta.anything]", "[]"),
        ];
        for (src, want) in cases {
            assert_eq!(render(src, &on), want, "{src}");
        }
        let off = RequestVars {
            request: None,
            ..on
        };
        assert_eq!(render("[$tyk_context.path]", &off), "[]");
    }

    #[test]
    fn rewritten_urls_connect_to_an_explicit_port() {
        let url = |u: &str| parse_rewrite(&Rewritten::Url(u.into()));
        let Some(RewriteTo::Url {
            authority,
            host,
            path_and_query,
            tls,
        }) = url("https://Api.Example/v2?q=1")
        else {
            panic!("not a URL rewrite");
        };
        assert_eq!(authority.as_str(), "Api.Example:443");
        assert_eq!(host, "Api.Example");
        assert_eq!(path_and_query.as_str(), "/v2?q=1");
        assert!(tls.is_some());
        let Some(RewriteTo::Url {
            authority,
            host,
            tls,
            ..
        }) = url("http://10.0.0.7:8080")
        else {
            panic!("not a URL rewrite");
        };
        assert_eq!(
            (authority.as_str(), host.to_str().unwrap()),
            ("10.0.0.7:8080", "10.0.0.7:8080")
        );
        assert!(tls.is_none());
        assert!(
            matches!(url("http://plain/x"), Some(RewriteTo::Url { authority, .. }) if authority == "plain:80")
        );
        assert_eq!(url("http://bad host/"), None);
    }
}
