//! Tyk's version check for a versioned API: which version a request is for, read from a
//! header, a query parameter or the first path segment after the listen path. Each version has
//! its own compiled chain and upstream (its `override_target`); this step picks one before
//! any of its stages run, and strips the version from the request when the API says so.
//!
//! A request naming no version gets `default_version` (none: 403 `Version information not
//! found`); an unknown one is refused with 403 `This API version does not seem to exist`
//! unless `fallback_to_default`. The version's own expiry is checked by its first stage
//! ([`crate::endpoints`]), as for a not-versioned API.

use std::borrow::Cow;
use std::sync::Arc;

use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use tollgate_config::GatewayConfig;
use tollgate_definitions::{ApiSpec, DefaultVersion, VersionLocation, Versioning};

use crate::balance::{Balancer, HostHealth};
use crate::chain::Chain;
use crate::ctx::RecordTexts;
use crate::endpoints::listen_prefix;
use crate::percent::{self, Plus};
use crate::refusal::{Refusal, RefusalKind};

/// One version as it is served.
#[derive(Debug)]
pub(crate) struct VersionRoute {
    /// The API with this version's rules and upstream.
    pub(crate) spec: ApiSpec,
    /// This version's stages.
    pub(crate) chain: Chain,
    /// This worker's round robin, when the API balances and the version has no
    /// `override_target`.
    pub(crate) balancer: Option<Balancer>,
    /// What its analytics records carry (the version's name among them).
    pub(crate) record_texts: Arc<RecordTexts>,
}

/// The versions of one versioned API.
#[derive(Debug)]
pub(crate) struct VersionRoutes {
    versioning: Arc<Versioning>,
    listen_prefix: Box<str>,
    each: Box<[VersionRoute]>,
}

impl VersionRoutes {
    /// The versions of `spec`, or `None` when it is not versioned.
    pub(crate) fn compile(
        spec: &ApiSpec,
        config: &GatewayConfig,
        health: Option<&HostHealth>,
    ) -> Option<Self> {
        let versioning = Arc::clone(spec.versioning.as_ref()?);
        let each = (0..versioning.versions.len())
            .filter_map(|i| spec.for_version(i))
            .map(|spec| VersionRoute {
                chain: Chain::compile(&spec, config),
                balancer: Balancer::compile(&spec, health),
                record_texts: Arc::new(RecordTexts::new(&spec)),
                spec,
            })
            .collect();
        Some(Self {
            versioning,
            listen_prefix: listen_prefix(spec),
            each,
        })
    }

    /// The version `head` is for; with `strip`, the version is removed from `head`.
    ///
    /// # Errors
    /// No version and no default, or an unknown version without `fallback_to_default`.
    pub(crate) fn select(&self, head: &mut Parts) -> Result<&VersionRoute, Refusal> {
        let v = &*self.versioning;
        let requested = self.requested(head);
        let found = requested.as_deref().and_then(|name| v.find(name));
        let index = match (&requested, found) {
            (_, Some(i)) => i,
            (None, None) => default_index(v.default)?,
            (Some(_), None) if v.fallback_to_default => default_index(v.default)?,
            (Some(_), None) => return Err(RefusalKind::VersionUnknown.into()),
        };
        if v.strip
            && found.is_some()
            && let Some(name) = &requested
        {
            let name = name.clone().into_owned();
            self.strip(head, &name);
        }
        self.each
            .get(index)
            .ok_or_else(|| RefusalKind::VersionUnknown.into())
    }

    /// The version the request names, if any (empty counts as none).
    fn requested<'h>(&self, head: &'h Parts) -> Option<Cow<'h, str>> {
        let name = match &self.versioning.location {
            VersionLocation::Header(h) => head
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(|s| Cow::Borrowed(s.trim())),
            VersionLocation::Param(key) => query_value(head.uri.query()?, key),
            VersionLocation::Url => self.first_segment(head.uri.path()).map(Cow::Borrowed),
        };
        name.filter(|n| !n.is_empty())
    }

    /// The first non-empty segment after the listen path.
    fn first_segment<'p>(&self, path: &'p str) -> Option<&'p str> {
        let rest = path.strip_prefix(&*self.listen_prefix)?;
        rest.split('/').find(|s| !s.is_empty())
    }

    fn strip(&self, head: &mut Parts, name: &str) {
        match &self.versioning.location {
            VersionLocation::Header(h) => {
                head.headers.remove(h);
            }
            VersionLocation::Param(key) => {
                if let Some(q) = head.uri.query() {
                    let kept: Vec<&str> = q
                        .split('&')
                        .filter(|pair| {
                            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
                            percent::decode(k, Plus::Space) != **key
                        })
                        .collect();
                    let path = head.uri.path().to_owned();
                    set_path_and_query(head, &path, &kept.join("&"));
                }
            }
            VersionLocation::Url => {
                let path = head.uri.path();
                let Some(rest) = path.strip_prefix(&*self.listen_prefix) else {
                    return;
                };
                let trimmed = rest.trim_start_matches('/');
                let Some(after) = trimmed.strip_prefix(name) else {
                    return;
                };
                if !(after.is_empty() || after.starts_with('/')) {
                    return;
                }
                let new_path = format!(
                    "{}{}",
                    self.listen_prefix,
                    if after.is_empty() { "/" } else { after }
                );
                let query = head.uri.query().unwrap_or("").to_owned();
                set_path_and_query(head, &new_path, &query);
            }
        }
    }
}

fn default_index(default: DefaultVersion) -> Result<usize, Refusal> {
    match default {
        DefaultVersion::Index(i) => Ok(i),
        DefaultVersion::Unset => Err(RefusalKind::VersionNotFound.into()),
        DefaultVersion::Missing => Err(RefusalKind::VersionUnknown.into()),
    }
}

/// The first value of query parameter `key`, decoded as Go's `url.Query` does.
fn query_value<'q>(query: &'q str, key: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent::decode(k, Plus::Space) == key).then(|| percent::decode(v, Plus::Space))
    })
}

fn set_path_and_query(head: &mut Parts, path: &str, query: &str) {
    let pq = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    if let Ok(pq) = PathAndQuery::try_from(pq) {
        let mut parts = head.uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            head.uri = uri;
        }
    }
}
