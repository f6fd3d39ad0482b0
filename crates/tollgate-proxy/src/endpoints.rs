//! Tyk's version check for a not-versioned API: the API's `expiration`, then the served
//! version's endpoint lists (`white_list`, `black_list`, `ignored`, `method_actions`
//! replies). First in the chain, as Tyk's `VersionCheck` middleware: a forbidden endpoint is
//! refused before anything else is spent on it, an ignored one skips authentication and limits,
//! a reply is answered without the upstream.
//!
//! Patterns are compiled at load ([`tollgate_rules::endpoints`]); this stage only builds the
//! readings of the (already normalised) path they are tested against.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response};
use tollgate_definitions::ApiSpec;
use tollgate_rules::endpoints::{Candidates, Loose, Mock, Verdict};
use tollgate_rules::expiry::Expiry;
use tollgate_rules::version::VersionRules;
use tollgate_session::time::unix_now;

use crate::body::ProxyBody;
use crate::chain::{Flow, Reply};
use crate::ctx::{RequestCtx, StageRequest};
use crate::path;
use crate::refusal::{Refusal, RefusalKind};

/// The API's expiry and endpoint lists.
#[derive(Debug)]
pub(crate) struct EndpointRules {
    expiry: Option<(Expiry, HeaderValue)>,
    version: Arc<VersionRules>,
    /// The listen path without its trailing slash, stripped for the `stripped` reading.
    listen_prefix: Box<str>,
}

impl EndpointRules {
    /// The stage for `spec`, or `None` when it has neither an expiry nor lists.
    pub(crate) fn compile(spec: &ApiSpec) -> Option<Self> {
        let expiry = spec
            .expiration
            .and_then(|e| HeaderValue::from_str(&e.http_date()).ok().map(|h| (e, h)));
        (expiry.is_some() || spec.version.endpoints.is_some()).then(|| Self {
            expiry,
            version: Arc::clone(&spec.version),
            listen_prefix: listen_prefix(spec),
        })
    }

    pub(crate) fn on_request(
        &self,
        req: &StageRequest<'_>,
        cx: &mut RequestCtx,
    ) -> Result<Flow, Refusal> {
        if let Some((expiry, header)) = &self.expiry {
            if expiry.passed(unix_now()) {
                return Err(RefusalKind::ApiExpired.into());
            }
            cx.api_expires = Some(header.clone());
        }
        let Some(lists) = &self.version.endpoints else {
            return Ok(Flow::Continue);
        };
        let full = req.head.uri.path();
        let strict = candidates(&self.listen_prefix, full);
        let loose_path = path::loose(full);
        let loose = match &loose_path {
            None => Loose::Unreadable,
            Some(p) if p.as_ref() == full => Loose::Same,
            Some(p) => Loose::Other(candidates(&self.listen_prefix, p)),
        };
        match lists.decide(&req.head.method, &strict, loose) {
            Verdict::Pass => Ok(Flow::Continue),
            Verdict::Ignored => {
                cx.ignored = true;
                Ok(Flow::Continue)
            }
            Verdict::Forbidden => Err(RefusalKind::EndpointForbidden.into()),
            Verdict::Reply(mock) => Ok(Flow::Reply(Reply {
                status: mock.status,
                mock: Some(Arc::clone(mock)),
            })),
        }
    }
}

/// The listen path without its trailing slash: what [`candidates`] strips.
pub(crate) fn listen_prefix(spec: &ApiSpec) -> Box<str> {
    spec.listen_path.trim_end_matches('/').into()
}

/// The readings of a (normalised) request path that every endpoint pattern of the version is
/// tested against, as Tyk tests them.
pub(crate) fn candidates<'p>(listen_prefix: &str, full: &'p str) -> Candidates<'p> {
    let stripped = match full.strip_prefix(listen_prefix) {
        Some("") => "/",
        Some(rest) => rest,
        None => full,
    };
    Candidates {
        stripped,
        unversioned: None,
        full,
    }
}

/// A canned answer as a response.
pub(crate) fn reply(mock: &Mock) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::clone(&mock.body)));
    *resp.status_mut() = mock.status;
    let headers = resp.headers_mut();
    for (name, value) in &mock.headers {
        headers.append(name.clone(), value.clone());
    }
    resp
}
