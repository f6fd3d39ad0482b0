//! Everything one version of an API enforces, compiled once when its definition loads.
//!
//! A not-versioned API has exactly one of these (the version it serves). Each rule is optional
//! or an empty table when the version does not use it, so the proxy compiles a stage only for
//! what is there.

use crate::endpoints::EndpointLists;

/// The compiled rules of one entry of `version_data.versions`.
#[derive(Debug, Clone, Default)]
pub struct VersionRules {
    /// The version's name (`Default` for the usual single version).
    pub name: Box<str>,
    /// `white_list` / `black_list` / `ignored` (extended or simple), when any has an entry.
    pub endpoints: Option<EndpointLists>,
}
