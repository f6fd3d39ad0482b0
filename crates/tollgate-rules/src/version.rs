//! Everything one version of an API enforces, compiled once when its definition loads.
//!
//! A not-versioned API has exactly one of these (the version it serves). Each rule is optional
//! or an empty table when the version does not use it, so the proxy compiles a stage only for
//! what is there.

use std::sync::Arc;
use std::time::Duration;

use http::Method;

use crate::endpoints::{EndpointLists, EndpointTable, Mock};
use crate::expiry::Expiry;
use crate::headers::HeaderOps;
use crate::rewrite::UrlRewrite;

/// The compiled rules of one entry of `version_data.versions`.
#[derive(Debug, Clone, Default)]
pub struct VersionRules {
    /// The version's name (`Default` for the usual single version).
    pub name: Box<str>,
    /// `white_list` / `black_list` / `ignored` (extended or simple), when any has an entry.
    pub endpoints: Option<EndpointLists>,
    /// `expires`: after it the version answers 403.
    pub expires: Option<Expiry>,
    /// `global_size_limit`: the largest declared body (bytes) of a POST, PUT or PATCH, when
    /// set (`0` = off).
    pub global_size_limit: Option<u64>,
    /// `extended_paths.size_limits`: the endpoint's largest declared body, in bytes.
    pub size_limits: EndpointTable<u64>,
    /// `extended_paths.hard_timeouts`: the endpoint's upstream timeout, in place of the
    /// gateway's `proxy_default_timeout`.
    pub hard_timeouts: EndpointTable<Duration>,
    /// `extended_paths.mock_response`: the endpoint's canned answer, given after
    /// authentication and limits instead of calling the upstream.
    pub mock_responses: EndpointTable<Arc<Mock>>,
    /// `global_headers_remove` + `global_headers`, applied to every request before the
    /// endpoint's own edits.
    pub global_headers: Option<HeaderOps>,
    /// `extended_paths.transform_headers`.
    pub transform_headers: EndpointTable<HeaderOps>,
    /// `global_response_headers_remove` + `global_response_headers`, applied to every upstream
    /// response after the endpoint's own edits.
    pub global_response_headers: Option<HeaderOps>,
    /// `extended_paths.transform_response_headers`.
    pub transform_response_headers: EndpointTable<HeaderOps>,
    /// `extended_paths.url_rewrites`.
    pub url_rewrites: EndpointTable<UrlRewrite>,
    /// `extended_paths.method_transforms`.
    pub method_transforms: EndpointTable<Method>,
}

impl VersionRules {
    /// A copy for one worker thread: every regex with its own search cache (a regex shared
    /// between threads makes all but one of them take a lock per search) and every header
    /// value in its own buffer (cloning a shared one bumps a counter another core writes).
    pub fn detached(&self) -> Self {
        let ops = |o: &Option<HeaderOps>| o.as_ref().map(HeaderOps::detached);
        Self {
            name: self.name.clone(),
            endpoints: self.endpoints.as_ref().map(EndpointLists::detached),
            expires: self.expires,
            global_headers: ops(&self.global_headers),
            transform_headers: self.transform_headers.map(HeaderOps::detached),
            global_response_headers: ops(&self.global_response_headers),
            transform_response_headers: self.transform_response_headers.map(HeaderOps::detached),
            url_rewrites: self.url_rewrites.map(Clone::clone),
            method_transforms: self.method_transforms.map(Clone::clone),
            global_size_limit: self.global_size_limit,
            size_limits: self.size_limits.map(Clone::clone),
            hard_timeouts: self.hard_timeouts.map(Clone::clone),
            mock_responses: self.mock_responses.map(|m| Arc::new(m.detached())),
        }
    }

    /// True when the version changes what the upstream receives or returns (headers, path,
    /// method).
    pub fn transforms(&self) -> bool {
        self.edits_headers() || !self.url_rewrites.is_empty() || !self.method_transforms.is_empty()
    }

    /// True when the version edits request or response headers.
    pub fn edits_headers(&self) -> bool {
        self.global_headers.is_some()
            || !self.transform_headers.is_empty()
            || self.global_response_headers.is_some()
            || !self.transform_response_headers.is_empty()
    }
}
