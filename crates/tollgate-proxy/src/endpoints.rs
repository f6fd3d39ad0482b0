//! The rest of Tyk's version check, once the version is known ([`crate::versions`] picks it
//! for a versioned API): the API's `expiration` and the version's `expires`, then the
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
use tollgate_definitions::{ApiSpec, VersionLocation};
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
    /// The version's own `expires`.
    version_expiry: Option<(Expiry, HeaderValue)>,
    version: Arc<VersionRules>,
    paths: PathReadings,
}

impl EndpointRules {
    /// The stage for `spec`, or `None` when it has neither an expiry nor lists.
    pub(crate) fn compile(spec: &ApiSpec) -> Option<Self> {
        let dated = |e: Expiry| HeaderValue::from_str(&e.http_date()).ok().map(|h| (e, h));
        let expiry = spec.expiration.and_then(dated);
        let version_expiry = spec.version.expires.and_then(dated);
        (expiry.is_some() || version_expiry.is_some() || spec.version.endpoints.is_some()).then(
            || Self {
                expiry,
                version_expiry,
                version: Arc::clone(&spec.version),
                paths: PathReadings::of(spec),
            },
        )
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
        // Tyk's header names the version's expiry when it has one.
        if let Some((expiry, header)) = &self.version_expiry {
            if expiry.passed(unix_now()) {
                return Err(RefusalKind::VersionExpired.into());
            }
            cx.api_expires = Some(header.clone());
        }
        let Some(lists) = &self.version.endpoints else {
            return Ok(Flow::Continue);
        };
        let full = req.head.uri.path();
        let strict = self.paths.candidates(full);
        let loose_path = path::loose(full);
        let loose = match &loose_path {
            None => Loose::Unreadable,
            Some(p) if p.as_ref() == full => Loose::Same,
            Some(p) => Loose::Other(self.paths.candidates(p)),
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

/// How a version's patterns read request paths: after the listen path, and under URL
/// versioning that leaves the version in the path, also without it (Tyk's three readings).
#[derive(Debug, Clone)]
pub(crate) struct PathReadings {
    listen_prefix: Box<str>,
    /// `/<version>`, when the version segment stays in the path.
    version_segment: Option<Box<str>>,
}

impl PathReadings {
    /// The readings for `spec` (one version of it, when versioned).
    pub(crate) fn of(spec: &ApiSpec) -> Self {
        let version_segment = spec
            .versioning
            .as_ref()
            .filter(|v| v.location == VersionLocation::Url && !v.strip)
            .map(|_| format!("/{}", spec.version.name).into());
        Self {
            listen_prefix: listen_prefix(spec),
            version_segment,
        }
    }

    /// The readings of `full`.
    pub(crate) fn candidates<'p>(&self, full: &'p str) -> Candidates<'p> {
        let mut c = candidates(&self.listen_prefix, full);
        if let Some(rest) = self
            .version_segment
            .as_deref()
            .and_then(|seg| c.stripped.strip_prefix(seg))
        {
            if rest.is_empty() {
                c.unversioned = Some("/");
            } else if rest.starts_with('/') {
                c.unversioned = Some(rest);
            }
        }
        c
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
