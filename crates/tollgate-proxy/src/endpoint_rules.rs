//! The per-endpoint rules of the served version besides its lists: Tyk's request size limit
//! (`global_size_limit` and `size_limits`), `hard_timeouts` and `mock_response`. Each is a
//! stage of its own, compiled only when the version has entries for it, because each sits at
//! a different point of Tyk's order (see `chain`).
//!
//! The tables are compiled at load ([`tollgate_rules::version::VersionRules`]); a stage only
//! looks the request up in them, without allocating.

use std::sync::Arc;

use http::request::Parts;
use http::{Method, header};
use tollgate_definitions::ApiSpec;
use tollgate_rules::endpoints::EndpointTable;
use tollgate_rules::version::VersionRules;

use crate::chain::{Flow, Reply};
use crate::ctx::{RequestCtx, StageRequest};
use crate::endpoints::PathReadings;
use crate::refusal::{Refusal, RefusalKind};

/// What every stage here looks a request up with: the served version's tables, and the
/// request paths they are matched against.
#[derive(Debug)]
struct VersionLookup {
    version: Arc<VersionRules>,
    paths: PathReadings,
}

impl VersionLookup {
    /// `spec`'s, or `None` when `used` says its version has nothing for the stage.
    fn of(spec: &ApiSpec, used: impl FnOnce(&VersionRules) -> bool) -> Option<Self> {
        used(&spec.version).then(|| Self {
            version: Arc::clone(&spec.version),
            paths: PathReadings::of(spec),
        })
    }

    /// The entry of `table` (one of the version's) for this request's method and path.
    fn find<'a, T>(
        &'a self,
        table: impl FnOnce(&VersionRules) -> &EndpointTable<T>,
        head: &Parts,
    ) -> Option<&'a T> {
        let paths = self.paths.candidates(head.uri.path());
        table(&self.version).find(&head.method, &paths)
    }
}

/// Tyk's `RequestSizeLimit`: a POST, PUT or PATCH must declare its length, and that length
/// must not exceed the version's global limit nor its endpoint's.
#[derive(Debug)]
pub(crate) struct SizeLimits(VersionLookup);

impl SizeLimits {
    /// The stage for `spec`, or `None` when its version limits nothing.
    pub(crate) fn compile(spec: &ApiSpec) -> Option<Self> {
        VersionLookup::of(spec, |v| {
            v.global_size_limit.is_some() || !v.size_limits.is_empty()
        })
        .map(Self)
    }

    pub(crate) fn on_request(&self, req: &StageRequest<'_>) -> Result<(), Refusal> {
        let head = &*req.head;
        // Tyk checks only the methods that carry a body; a GET's body is never refused here.
        if !matches!(head.method, Method::POST | Method::PUT | Method::PATCH) {
            return Ok(());
        }
        // The framing guard has already refused a malformed or conflicting length, and hyper
        // delivers exactly the declared bytes, so the declared length is the body's.
        let declared = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // The global limit first, then the endpoint's: both must hold, as in Tyk.
        if let Some(limit) = self.0.version.global_size_limit {
            check(declared, limit)?;
        }
        if self.0.version.size_limits.is_empty() {
            return Ok(());
        }
        match self.0.find(|v| &v.size_limits, head) {
            Some(&limit) => check(declared, limit),
            // No limit applies: a chunked body is fine (Tyk asks for a length only where a
            // limit needs one).
            None => Ok(()),
        }
    }
}

fn check(declared: Option<u64>, limit: u64) -> Result<(), Refusal> {
    match declared {
        None => Err(RefusalKind::ContentLengthRequired.into()),
        Some(len) if len > limit => Err(RefusalKind::RequestTooLarge.into()),
        Some(_) => Ok(()),
    }
}

/// `hard_timeouts`: records the endpoint's upstream timeout for the forwarding step, which
/// uses it instead of `proxy_default_timeout` (longer or shorter, as Tyk does).
#[derive(Debug)]
pub(crate) struct HardTimeouts(VersionLookup);

impl HardTimeouts {
    /// The stage for `spec`, or `None` when its version has no (enabled) entry.
    pub(crate) fn compile(spec: &ApiSpec) -> Option<Self> {
        VersionLookup::of(spec, |v| !v.hard_timeouts.is_empty()).map(Self)
    }

    pub(crate) fn on_request(&self, req: &StageRequest<'_>, cx: &mut RequestCtx) {
        if let Some(timeout) = self.0.find(|v| &v.hard_timeouts, req.head) {
            cx.upstream_timeout = Some(*timeout);
        }
    }
}

/// `mock_response`: answers the endpoint with its canned response instead of calling the
/// upstream. Unlike a `method_actions` reply (answered before anything else), this is Tyk's
/// later mock: the request has been authenticated and counted against its limits and quota.
#[derive(Debug)]
pub(crate) struct MockResponses(VersionLookup);

impl MockResponses {
    /// The stage for `spec`, or `None` when its version has no (enabled) entry.
    pub(crate) fn compile(spec: &ApiSpec) -> Option<Self> {
        VersionLookup::of(spec, |v| !v.mock_responses.is_empty()).map(Self)
    }

    pub(crate) fn on_request(&self, req: &StageRequest<'_>) -> Flow {
        match self.0.find(|v| &v.mock_responses, req.head) {
            Some(mock) => Flow::Reply(Reply {
                status: mock.status,
                mock: Some(Arc::clone(mock)),
            }),
            None => Flow::Continue,
        }
    }
}
