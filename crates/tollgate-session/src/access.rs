//! A key's effective session, compiled for request-time checks.
//!
//! Built once when a key is stored or its policies change, never per request: `allowed_urls`
//! patterns become regexes here so the request path only runs them.

use std::collections::HashMap;

use regex::Regex;

use crate::session::SessionState;

/// A key ready for request-time checks.
#[derive(Debug, Clone)]
pub struct ActiveKey {
    /// The session after policies.
    pub session: SessionState,
    access: HashMap<String, ApiAccess>,
    plans: HashMap<String, LimitPlan>,
    default_plan: LimitPlan,
}

/// The rate limit and quota that apply to one key on one API, with the ids of the counters
/// they use. Built once per key so the request path formats no strings.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitPlan {
    /// Requests per `per` seconds; ≤ 0 = unlimited.
    pub rate: f64,
    /// Rate window in seconds.
    pub per: f64,
    /// Quota per period; ≤ 0 = unlimited.
    pub quota_max: i64,
    /// Quota period in seconds; ≤ 0 = never renews.
    pub quota_renewal_rate: i64,
    /// The id of the key these counters belong to.
    pub storage_id: Box<str>,
    /// Counter scope (`allowance_scope` or the API id for per-API limits; empty = the key's).
    pub scope: Box<str>,
    /// Rate counter id, Tyk's name: `rate-limit-[<scope>-]<key>`.
    pub rate_id: Box<str>,
    /// Quota counter id, Tyk's name: `quota-[<scope>-]<key>`.
    pub quota_id: Box<str>,
    /// Waiting and re-checking before a rate-limit refusal; `None` refuses at once.
    pub throttle: Option<Throttle>,
}

/// Tyk's throttling: a request over the rate limit waits `interval` and is checked again, up
/// to `retries` times, before it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Wait before each re-check.
    pub interval: std::time::Duration,
    /// Re-checks before the refusal.
    pub retries: u32,
}

impl Throttle {
    /// From `throttle_interval` (seconds) and `throttle_retry_limit`; either ≤ 0 (Tyk's -1
    /// default) or an interval too large to wait means no throttling.
    pub fn new(interval_secs: f64, retry_limit: i64) -> Option<Self> {
        let retries = u32::try_from(retry_limit).ok().filter(|r| *r > 0)?;
        // Also false for NaN.
        if interval_secs.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        let interval = std::time::Duration::try_from_secs_f64(interval_secs).ok()?;
        Some(Self { interval, retries })
    }
}

impl LimitPlan {
    fn new(
        storage_id: &str,
        scope: &str,
        rate: f64,
        per: f64,
        quota_max: i64,
        renewal: i64,
    ) -> Self {
        Self {
            rate,
            per,
            quota_max,
            quota_renewal_rate: renewal,
            storage_id: storage_id.into(),
            scope: scope.into(),
            rate_id: crate::keyspace::rate_limit(scope, storage_id).into(),
            quota_id: crate::keyspace::quota(scope, storage_id).into(),
            throttle: None,
        }
    }

    fn throttled(mut self, interval_secs: f64, retry_limit: i64) -> Self {
        self.throttle = Throttle::new(interval_secs, retry_limit);
        self
    }
}

#[derive(Debug, Clone, Default)]
struct ApiAccess {
    versions: Vec<String>,
    urls: Vec<(Regex, Vec<String>)>,
}

/// Outcome of the access-rights check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Allowed.
    Granted,
    /// The API (or version) is not in the key's rights.
    ApiDenied,
    /// The API is, but not this path/method (`allowed_urls`).
    ResourceDenied,
}

/// Tyk's endpoint pattern rules: `{name}` matches one segment, `/*` anything below; the
/// result is a regex matched anywhere in the path unless it anchors itself.
pub fn compile_pattern(pattern: &str) -> Result<Regex, regex::Error> {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' => {
                for n in chars.by_ref() {
                    if n == '}' {
                        break;
                    }
                }
                out.push_str("([^/]+)");
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str("/.*");
            }
            c => out.push(c),
        }
    }
    Regex::new(&out)
}

impl ActiveKey {
    /// Compiles the checks of an effective session. A pattern that is not a valid regex never
    /// matches (and so never grants access).
    pub fn new(session: SessionState, storage_id: &str) -> Self {
        let default_plan = LimitPlan::new(
            storage_id,
            "",
            session.rate,
            session.per,
            session.quota_max,
            session.quota_renewal_rate,
        )
        .throttled(session.throttle_interval, session.throttle_retry_limit);
        // A per-API `limit` counts on its own (scope = allowance_scope, else the API id);
        // otherwise the API shares the key's counters, or its allowance_scope's.
        let plans = session
            .access_rights
            .iter()
            .map(|(api_id, ar)| {
                let plan = match ar.limit.as_ref().filter(|l| !l.is_empty()) {
                    Some(l) => {
                        let scope = if ar.allowance_scope.is_empty() {
                            api_id
                        } else {
                            &ar.allowance_scope
                        };
                        LimitPlan::new(
                            storage_id,
                            scope,
                            l.rate,
                            l.per,
                            l.quota_max,
                            l.quota_renewal_rate,
                        )
                        .throttled(l.throttle_interval, l.throttle_retry_limit)
                    }
                    None => LimitPlan::new(
                        storage_id,
                        &ar.allowance_scope,
                        session.rate,
                        session.per,
                        session.quota_max,
                        session.quota_renewal_rate,
                    )
                    .throttled(session.throttle_interval, session.throttle_retry_limit),
                };
                (api_id.clone(), plan)
            })
            .collect();
        let access = session
            .access_rights
            .iter()
            .map(|(api_id, ar)| {
                let urls = ar
                    .allowed_urls
                    .iter()
                    .filter_map(|u| {
                        compile_pattern(&u.url)
                            .ok()
                            .map(|re| (re, u.methods.clone()))
                    })
                    .collect();
                (
                    api_id.clone(),
                    ApiAccess {
                        versions: ar.versions.clone(),
                        urls,
                    },
                )
            })
            .collect();
        Self {
            session,
            access,
            plans,
            default_plan,
        }
    }

    /// The limits that apply on `api_id`.
    pub fn plan(&self, api_id: &str) -> &LimitPlan {
        self.plans.get(api_id).unwrap_or(&self.default_plan)
    }

    /// The key-level plan (no per-API limit).
    pub fn default_plan(&self) -> &LimitPlan {
        &self.default_plan
    }

    /// Every plan of the key (to reset all its counters).
    pub fn plans(&self) -> impl Iterator<Item = &LimitPlan> {
        std::iter::once(&self.default_plan).chain(self.plans.values())
    }

    /// Checks the API, the version (`None` for non-versioned APIs) and the path/method.
    pub fn check(&self, api_id: &str, version: Option<&str>, method: &str, path: &str) -> Access {
        if self.session.access_rights.is_empty() {
            // A master key (only creatable with `allow_master_keys`).
            return Access::Granted;
        }
        let Some(api) = self.access.get(api_id) else {
            return Access::ApiDenied;
        };
        if let Some(v) = version
            && !api.versions.iter().any(|x| x == v)
        {
            return Access::ApiDenied;
        }
        if self
            .session
            .access_rights
            .get(api_id)
            .is_some_and(|ar| !ar.allowed_urls.is_empty())
            && !api.urls.iter().any(|(re, methods)| {
                methods.iter().any(|m| m.eq_ignore_ascii_case(method)) && re.is_match(path)
            })
        {
            return Access::ResourceDenied;
        }
        Access::Granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(json: serde_json::Value) -> ActiveKey {
        ActiveKey::new(serde_json::from_value(json).unwrap(), "h")
    }

    #[test]
    fn throttle_needs_both_a_positive_interval_and_retry_limit() {
        let t = Throttle::new(0.25, 3).unwrap();
        assert_eq!(t.interval, std::time::Duration::from_millis(250));
        assert_eq!(t.retries, 3);
        for (interval, retries) in [(-1.0, -1), (0.0, 3), (1.0, 0), (1.0, -1), (f64::NAN, 3)] {
            assert_eq!(
                Throttle::new(interval, retries),
                None,
                "{interval} {retries}"
            );
        }
        assert_eq!(Throttle::new(f64::INFINITY, 3), None);
    }

    #[test]
    fn a_per_api_limit_brings_its_own_throttle() {
        let k = key(serde_json::json!({
            "rate": 10, "per": 1, "throttle_interval": 2, "throttle_retry_limit": 4,
            "access_rights": {
                "a": {"api_id": "a"},
                "b": {"api_id": "b", "limit": {"rate": 5, "per": 1, "throttle_interval": 0.5,
                                               "throttle_retry_limit": 1}},
                "c": {"api_id": "c", "limit": {"rate": 5, "per": 1}}}}));
        let secs = |api: &str| {
            k.plan(api)
                .throttle
                .map(|t| (t.interval.as_secs_f64(), t.retries))
        };
        assert_eq!(secs("a"), Some((2.0, 4)));
        assert_eq!(secs("b"), Some((0.5, 1)));
        assert_eq!(secs("c"), None);
        assert_eq!(k.default_plan().throttle.map(|t| t.retries), Some(4));
    }

    #[test]
    fn patterns() {
        let re = compile_pattern("/users/{id}/orders/*").unwrap();
        assert!(re.is_match("/api/users/42/orders/7"));
        assert!(!re.is_match("/users//orders/7"));
        assert!(compile_pattern("^/exact$").unwrap().is_match("/exact"));
    }

    #[test]
    fn checks() {
        let k = key(serde_json::json!({"access_rights": {
            "a": {"api_id": "a", "versions": ["Default"]},
            "b": {"api_id": "b", "versions": ["v1"], "allowed_urls": [{"url": "/users", "methods": ["GET"]}]}}}));
        assert_eq!(k.check("a", None, "GET", "/x"), Access::Granted);
        assert_eq!(k.check("c", None, "GET", "/x"), Access::ApiDenied);
        assert_eq!(k.check("b", Some("v2"), "GET", "/users"), Access::ApiDenied);
        assert_eq!(
            k.check("b", Some("v1"), "GET", "/b/users/1"),
            Access::Granted
        );
        assert_eq!(
            k.check("b", None, "POST", "/b/users"),
            Access::ResourceDenied
        );
        assert_eq!(
            k.check("b", None, "GET", "/b/other"),
            Access::ResourceDenied
        );
        assert_eq!(
            key(serde_json::json!({})).check("any", None, "GET", "/"),
            Access::Granted
        );
    }
}
