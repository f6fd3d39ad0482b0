//! The routing table: which API a request belongs to.
//!
//! A [`Routes`] value is an immutable snapshot built off the request path at start-up and on
//! every reload, then swapped in whole (see [`crate::Gateway`]); a lookup takes no lock. APIs
//! with a `domain` are tried first for requests to that host, then APIs without one; within a
//! group the longest listen path wins (Tyk registers routes longest-first for the same effect).

use std::collections::HashMap;
use std::sync::Arc;

use tollgate_config::GatewayConfig;
use tollgate_definitions::{ApiSpec, LoadedApi};

use crate::balance::{Balancer, HostHealth};
use crate::chain::Chain;
use crate::ctx::RecordTexts;
use crate::versions::VersionRoutes;

/// One servable API: its definition and its compiled stage chain.
#[derive(Debug)]
pub struct ApiRoute {
    /// The validated definition.
    pub spec: ApiSpec,
    /// The stages every request to this API passes, in order.
    pub(crate) chain: Chain,
    /// A versioned API's versions, each with its own stages (then `chain` is unused).
    pub(crate) versions: Option<VersionRoutes>,
    /// This worker's round robin over `target_list`, when the API balances.
    pub(crate) balancer: Option<Balancer>,
    /// Strings every analytics record of this API carries, made once.
    pub(crate) record_texts: Arc<RecordTexts>,
}

/// An immutable routing snapshot.
#[derive(Debug, Default)]
pub struct Routes {
    by_domain: HashMap<Box<str>, Vec<Arc<ApiRoute>>>,
    any_domain: Vec<Arc<ApiRoute>>,
    loaded: Vec<LoadedApi>,
    strict: bool,
    health: Option<Arc<HostHealth>>,
}

impl Routes {
    /// Compiles a routing table from loaded definitions. Inactive APIs stay listed (the admin
    /// API shows them) but are not routed. No host is ever down (see
    /// [`Routes::build_with_health`]).
    pub fn build(loaded: Vec<LoadedApi>, config: &GatewayConfig) -> Self {
        Self::build_with_health(loaded, config, None)
    }

    /// Like [`Routes::build`]; load balancers that check hosts against the uptime tests
    /// read the hosts' state from `health`.
    pub fn build_with_health(
        loaded: Vec<LoadedApi>,
        config: &GatewayConfig,
        health: Option<Arc<HostHealth>>,
    ) -> Self {
        let mut by_domain: HashMap<Box<str>, Vec<Arc<ApiRoute>>> = HashMap::new();
        let mut any_domain = Vec::new();
        for api in loaded.iter().filter(|a| a.spec.active) {
            let route = Arc::new(ApiRoute {
                chain: Chain::compile(&api.spec, config),
                versions: VersionRoutes::compile(&api.spec, config, health.as_deref()),
                balancer: Balancer::compile(&api.spec, health.as_deref()),
                record_texts: Arc::new(RecordTexts::new(&api.spec)),
                spec: api.spec.clone(),
            });
            match route
                .spec
                .domain
                .as_deref()
                .filter(|_| config.custom_domains)
            {
                Some(domain) => by_domain.entry(domain.into()).or_default().push(route),
                None => any_domain.push(route),
            }
        }
        let longest_first = |v: &mut Vec<Arc<ApiRoute>>| {
            v.sort_by_key(|r| std::cmp::Reverse(r.spec.listen_path.len()))
        };
        by_domain.values_mut().for_each(longest_first);
        longest_first(&mut any_domain);
        Self {
            by_domain,
            any_domain,
            loaded,
            strict: config.strict_routes,
            health,
        }
    }

    /// Finds the API for a request. `host` is the Host header (any case, port allowed);
    /// `path` must already be normalised.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<&Arc<ApiRoute>> {
        if !self.by_domain.is_empty()
            && let Some(host) = host
        {
            let host = strip_port(host);
            let hit = match self.by_domain.get(host) {
                Some(v) => Some(v),
                None if host.bytes().any(|b| b.is_ascii_uppercase()) => {
                    self.by_domain.get(host.to_ascii_lowercase().as_str())
                }
                None => None,
            };
            if let Some(route) = hit.and_then(|v| self.first_match(v, path)) {
                return Some(route);
            }
        }
        self.first_match(&self.any_domain, path)
    }

    fn first_match<'a>(
        &self,
        routes: &'a [Arc<ApiRoute>],
        path: &str,
    ) -> Option<&'a Arc<ApiRoute>> {
        routes
            .iter()
            .find(|r| listen_path_matches(&r.spec.listen_path, path, self.strict))
    }

    /// An equal table whose APIs share no buffers with this one (see [`ApiSpec::detached`]),
    /// with load balancers of its own and the same host health.
    pub fn detached(&self, config: &GatewayConfig) -> Self {
        let loaded = self
            .loaded
            .iter()
            .map(|a| LoadedApi {
                spec: a.spec.detached(),
                raw: a.raw.clone(),
                source: a.source.clone(),
            })
            .collect();
        Self::build_with_health(loaded, config, self.health.clone())
    }

    /// The host health the load balancers read, when the uptime checker runs.
    pub fn health(&self) -> Option<&Arc<HostHealth>> {
        self.health.as_ref()
    }

    /// Every loaded definition, active or not, in file-name order.
    pub fn apis(&self) -> &[LoadedApi] {
        &self.loaded
    }

    /// A loaded definition by `api_id`.
    pub fn api(&self, api_id: &str) -> Option<&LoadedApi> {
        self.loaded.iter().find(|a| &*a.spec.api_id == api_id)
    }
}

/// Tyk's prefix rule: `/app` matches `/apple` unless strict routes are on, when a listen path
/// not ending in `/` matches only itself or itself followed by `/`.
pub(crate) fn listen_path_matches(listen_path: &str, path: &str, strict: bool) -> bool {
    let Some(rest) = path.strip_prefix(listen_path) else {
        return false;
    };
    !strict || listen_path.ends_with('/') || rest.is_empty() || rest.starts_with('/')
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::{Path, PathBuf};

    fn config(extra: &str) -> GatewayConfig {
        GatewayConfig::from_json(
            Path::new("/t/tyk.conf"),
            &format!(r#"{{"secret":"s"{extra}}}"#),
        )
        .unwrap()
    }

    fn api(id: &str, lp: &str, domain: &str) -> LoadedApi {
        let raw = json!({"api_id": id, "domain": domain, "proxy": {"listen_path": lp, "target_url": "http://u"}});
        LoadedApi {
            spec: ApiSpec::from_json(&raw).unwrap(),
            raw,
            source: tollgate_definitions::ApiSource::File(PathBuf::from(format!("{id}.json"))),
        }
    }

    /// Builds a table of `(api_id, listen_path, domain)` and checks `(host, path) → api_id`.
    fn check(
        apis: &[(&str, &str, &str)],
        conf: &str,
        lookups: &[(Option<&str>, &str, Option<&str>)],
    ) {
        let apis = apis.iter().map(|(i, lp, d)| api(i, lp, d)).collect();
        let routes = Routes::build(apis, &config(conf));
        for (host, path, want) in lookups {
            let got = routes.lookup(*host, path).map(|r| &*r.spec.api_id);
            assert_eq!(got, *want, "{host:?} {path}");
        }
    }

    #[test]
    fn longest_listen_path_wins() {
        check(
            &[
                ("short", "/foo", ""),
                ("long", "/foo-bar", ""),
                ("root", "/", ""),
            ],
            "",
            &[
                (None, "/foo-bar/x", Some("long")),
                (None, "/foo/x", Some("short")),
                (None, "/foox", Some("short")),
                (None, "/other", Some("root")),
            ],
        );
    }

    #[test]
    fn strict_routes() {
        check(
            &[("a", "/sample", "")],
            r#","http_server_options":{"enable_strict_routes":true}"#,
            &[
                (None, "/sample", Some("a")),
                (None, "/sample/", Some("a")),
                (None, "/sample/x", Some("a")),
                (None, "/samplefoo", None),
            ],
        );
    }

    #[test]
    fn domains_first_then_any() {
        check(
            &[
                ("d", "/x", "api.example.com"),
                ("any", "/x", ""),
                ("only", "/only", "api.example.com"),
            ],
            "",
            &[
                (Some("API.example.com:8080"), "/x", Some("d")),
                (Some("other"), "/x", Some("any")),
                (None, "/only", None),
                (Some("other"), "/only", None),
            ],
        );
    }

    #[test]
    fn custom_domains_off_ignores_domain() {
        check(
            &[("d", "/x", "api.example.com")],
            r#","enable_custom_domains":false"#,
            &[(Some("other"), "/x", Some("d"))],
        );
    }
}
