//! Everything one version of an API enforces, compiled once when its definition loads.
//!
//! A not-versioned API has exactly one of these (the version it serves). Each rule is optional
//! or an empty table when the version does not use it, so the proxy compiles a stage only for
//! what is there.

use std::sync::Arc;
use std::time::Duration;

use crate::endpoints::{EndpointLists, EndpointTable, Mock};

/// The compiled rules of one entry of `version_data.versions`.
#[derive(Debug, Clone, Default)]
pub struct VersionRules {
    /// The version's name (`Default` for the usual single version).
    pub name: Box<str>,
    /// `white_list` / `black_list` / `ignored` (extended or simple), when any has an entry.
    pub endpoints: Option<EndpointLists>,
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
}
