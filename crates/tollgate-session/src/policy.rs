//! Policies: named sets of rights and limits that keys inherit through `apply_policies`.
//!
//! [`PolicySet::apply`] computes the session a key effectively has: Tyk's merge rules (access
//! rights united, the most permissive rate, the highest quota, tags united, inactive if any
//! policy is), with partitions taking only the aspects they flag and `per_api` policies giving
//! each API its own limits and counters.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::session::{AccessDefinition, ApiLimit, SessionState};

/// One policy (Tyk's `Policy` JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Policy id (the map key in a `policy_record_name` file).
    pub id: String,
    /// Name.
    pub name: String,
    /// Owning org; a key of another org cannot use it.
    pub org_id: String,
    /// Requests per `per` seconds.
    #[serde(serialize_with = "crate::session::number")]
    pub rate: f64,
    /// Rate window.
    #[serde(serialize_with = "crate::session::number")]
    pub per: f64,
    /// Quota per period.
    pub quota_max: i64,
    /// Quota period.
    pub quota_renewal_rate: i64,
    /// Throttle wait.
    #[serde(serialize_with = "crate::session::number")]
    pub throttle_interval: f64,
    /// Throttle retries.
    pub throttle_retry_limit: i64,
    /// GraphQL depth.
    pub max_query_depth: i64,
    /// API rights granted.
    pub access_rights: BTreeMap<String, AccessDefinition>,
    /// Deactivates every key using it.
    pub is_inactive: bool,
    /// Tags added to keys.
    pub tags: Vec<String>,
    /// Keys using it sign requests (HMAC), as if each had `hmac_enabled`.
    pub hmac_enabled: bool,
    /// Seconds a newly created key lives (0 = forever).
    pub key_expires_in: i64,
    /// Which aspects this policy sets.
    pub partitions: Partitions,
    /// Metadata merged into keys.
    pub meta_data: serde_json::Map<String, serde_json::Value>,
    /// Every other field, round-tripped.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `partitions`: when any is set, only those aspects come from the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Partitions {
    /// Quota.
    pub quota: bool,
    /// Rate limit.
    pub rate_limit: bool,
    /// Query complexity.
    pub complexity: bool,
    /// Access rights.
    pub acl: bool,
    /// Limits per API.
    pub per_api: bool,
}

impl Partitions {
    fn any(self) -> bool {
        self.quota || self.rate_limit || self.complexity || self.acl
    }
}

/// Why policies could not be applied to a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A key with one policy names an unknown one.
    #[error("policy not found: {0}")]
    NotFound(String),
    /// The policy belongs to another org.
    #[error("attempting to apply policy from different organisation to key")]
    OtherOrg,
    /// `per_api` and partitioned policies on one key.
    #[error("cannot apply multiple policies when some have per_api set and some are partitioned")]
    MixedPerApi,
    /// Nothing grants access.
    #[error("key has no valid policies to be applied")]
    NoAccess,
}

/// Every loaded policy.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: HashMap<String, Policy>,
}

fn rate_value(rate: f64, per: f64) -> f64 {
    if rate <= 0.0 || per <= 0.0 {
        f64::INFINITY
    } else {
        rate / per
    }
}

/// Quota comparison where ≤ 0 (unlimited) beats everything.
fn quota_higher(candidate: i64, current: i64) -> bool {
    if current <= 0 && current != i64::MIN {
        return false;
    }
    candidate <= 0 || candidate > current
}

impl Policy {
    /// Parses one policy object (a file of a `policy_path` folder, a `/tyk/policies` body).
    ///
    /// # Errors
    /// The JSON is not a policy object.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl PolicySet {
    /// Builds a set; later duplicates replace earlier ones.
    pub fn new(policies: impl IntoIterator<Item = Policy>) -> Self {
        Self {
            policies: policies.into_iter().map(|p| (p.id.clone(), p)).collect(),
        }
    }

    /// Parses a `policy_record_name` file: one object keyed by policy id.
    ///
    /// # Errors
    /// The JSON does not have that shape.
    pub fn from_record_json(text: &str) -> Result<Self, serde_json::Error> {
        let map: BTreeMap<String, Policy> = serde_json::from_str(text)?;
        Ok(Self::new(map.into_iter().map(|(id, mut p)| {
            p.id = id;
            p
        })))
    }

    /// A policy by id.
    pub fn get(&self, id: &str) -> Option<&Policy> {
        self.policies.get(id)
    }

    /// All policies, sorted by id.
    pub fn all(&self) -> Vec<&Policy> {
        let mut v: Vec<&Policy> = self.policies.values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The number of policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// True when no policy is loaded.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The largest `key_expires_in` of the key's policies (0 = none).
    pub fn key_expires_in(&self, session: &SessionState) -> i64 {
        session
            .policy_ids()
            .iter()
            .filter_map(|id| self.policies.get(*id))
            .map(|p| p.key_expires_in)
            .max()
            .unwrap_or(0)
    }

    /// The session a key effectively has once its policies are applied. A key without
    /// policies is returned as it is.
    ///
    /// # Errors
    /// [`PolicyError`] as Tyk refuses such keys.
    pub fn apply(&self, session: &SessionState) -> Result<SessionState, PolicyError> {
        let ids = session.policy_ids();
        if ids.is_empty() {
            return Ok(session.clone());
        }
        let mut policies = Vec::with_capacity(ids.len());
        for id in &ids {
            match self.policies.get(*id) {
                Some(p) => policies.push(p),
                None if ids.len() == 1 => return Err(PolicyError::NotFound((*id).to_owned())),
                None => {}
            }
        }
        if policies.iter().any(|p| p.partitions.per_api)
            && policies.iter().any(|p| p.partitions.any())
        {
            return Err(PolicyError::MixedPerApi);
        }

        let mut out = session.clone();
        let mut rights: BTreeMap<String, AccessDefinition> = BTreeMap::new();
        let mut set_acl = false;
        let mut set_rate = false;
        let mut set_quota = false;
        let mut inactive = false;
        // Session-level limits start "unset" so the first policy that sets them wins outright.
        let (mut rate, mut per) = (0.0, 0.0);
        let mut rate_best = f64::NEG_INFINITY;
        let mut quota_max = i64::MIN;
        let mut quota_renewal = i64::MIN;
        let mut throttle_interval = f64::NEG_INFINITY;
        let mut throttle_retry = i64::MIN;
        let mut depth = i64::MIN;

        for p in &policies {
            if !p.org_id.is_empty() && !session.org_id.is_empty() && p.org_id != session.org_id {
                return Err(PolicyError::OtherOrg);
            }
            inactive |= p.is_inactive;
            let parts = p.partitions;
            let whole = !parts.any() && !parts.per_api;
            let takes_acl = whole || parts.acl || parts.per_api;
            let takes_rate = whole || parts.rate_limit;
            let takes_quota = whole || parts.quota;

            if takes_acl {
                set_acl = true;
                for (api_id, ar) in &p.access_rights {
                    let entry = rights
                        .entry(api_id.clone())
                        .or_insert_with(|| AccessDefinition {
                            api_id: api_id.clone(),
                            ..ar.clone()
                        });
                    entry.api_name.clone_from(&ar.api_name);
                    for v in &ar.versions {
                        if !entry.versions.contains(v) {
                            entry.versions.push(v.clone());
                        }
                    }
                    for u in &ar.allowed_urls {
                        match entry.allowed_urls.iter_mut().find(|e| e.url == u.url) {
                            Some(e) => {
                                for m in &u.methods {
                                    if !e.methods.contains(m) {
                                        e.methods.push(m.clone());
                                    }
                                }
                            }
                            None => entry.allowed_urls.push(u.clone()),
                        }
                    }
                    if parts.per_api {
                        // Each API gets its own limits and its own counters.
                        let limit =
                            ar.limit
                                .clone()
                                .filter(|l| !l.is_empty())
                                .unwrap_or_else(|| ApiLimit {
                                    rate: p.rate,
                                    per: p.per,
                                    throttle_interval: p.throttle_interval,
                                    throttle_retry_limit: p.throttle_retry_limit,
                                    max_query_depth: p.max_query_depth,
                                    quota_max: p.quota_max,
                                    quota_renewal_rate: p.quota_renewal_rate,
                                    ..ApiLimit::default()
                                });
                        entry.limit = Some(merge_limit(entry.limit.take(), limit));
                        if entry.allowance_scope.is_empty() {
                            entry.allowance_scope.clone_from(api_id);
                        }
                    }
                }
            }
            if takes_rate {
                set_rate = true;
                let v = rate_value(p.rate, p.per);
                if v > rate_best {
                    rate_best = v;
                    rate = p.rate;
                    per = p.per;
                }
                throttle_interval = throttle_interval.max(p.throttle_interval);
                throttle_retry = throttle_retry.max(p.throttle_retry_limit);
            }
            if takes_quota {
                set_quota = true;
                if quota_max == i64::MIN || quota_higher(p.quota_max, quota_max) {
                    quota_max = p.quota_max;
                }
                quota_renewal = quota_renewal.max(p.quota_renewal_rate);
            }
            if whole || parts.complexity {
                depth = depth.max(p.max_query_depth);
            }
            for t in &p.tags {
                if !out.tags.contains(t) {
                    out.tags.push(t.clone());
                }
            }
            // OR-ed, as in Tyk: any policy can make its keys sign.
            out.hmac_enabled |= p.hmac_enabled;
            for (k, v) in &p.meta_data {
                out.meta_data.insert(k.clone(), v.clone());
            }
        }

        if set_acl {
            out.access_rights = rights;
        }
        if set_rate {
            out.rate = rate;
            out.per = per;
            out.throttle_interval = throttle_interval;
            out.throttle_retry_limit = throttle_retry;
        }
        if set_quota {
            out.quota_max = quota_max;
            out.quota_renewal_rate = quota_renewal;
        }
        if depth != i64::MIN {
            out.max_query_depth = depth;
        }
        // With policies, a key is inactive only through a policy.
        out.is_inactive = inactive;
        if out.access_rights.is_empty() {
            return Err(PolicyError::NoAccess);
        }
        Ok(out)
    }
}

/// Two per-API limits for one API: the more permissive of each aspect.
fn merge_limit(current: Option<ApiLimit>, new: ApiLimit) -> ApiLimit {
    let Some(mut cur) = current else { return new };
    if rate_value(new.rate, new.per) > rate_value(cur.rate, cur.per) {
        cur.rate = new.rate;
        cur.per = new.per;
    }
    if quota_higher(new.quota_max, cur.quota_max) {
        cur.quota_max = new.quota_max;
    }
    cur.quota_renewal_rate = cur.quota_renewal_rate.max(new.quota_renewal_rate);
    cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(v: serde_json::Value) -> PolicySet {
        PolicySet::from_record_json(&v.to_string()).unwrap()
    }

    fn key(policies: &[&str]) -> SessionState {
        SessionState {
            org_id: "org".into(),
            apply_policies: policies.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn ar(api: &str) -> serde_json::Value {
        json!({api: {"api_id": api, "api_name": api, "versions": ["Default"]}})
    }

    #[test]
    fn single_policy_sets_everything() {
        let ps = set(
            json!({"p": {"org_id": "org", "rate": 10, "per": 1, "quota_max": 100, "quota_renewal_rate": 60,
            "access_rights": ar("a"), "tags": ["t1"], "meta_data": {"m": 1}}}),
        );
        let s = ps.apply(&key(&["p"])).unwrap();
        assert!((s.rate - 10.0).abs() < f64::EPSILON);
        assert_eq!(s.quota_max, 100);
        assert_eq!(s.quota_renewal_rate, 60);
        assert!(s.access_rights.contains_key("a"));
        assert_eq!(s.tags, vec!["t1"]);
        assert_eq!(s.meta_data["m"], 1);
    }

    #[test]
    fn merge_most_permissive_rate_highest_quota_union_rights() {
        let ps = set(json!({
            "a": {"rate": 10, "per": 1, "quota_max": 100, "access_rights": ar("x"), "tags": ["t"]},
            "b": {"rate": 100, "per": 60, "quota_max": -1, "access_rights": ar("y"), "tags": ["t", "u"]}
        }));
        let s = ps.apply(&key(&["a", "b"])).unwrap();
        assert!((s.rate - 10.0).abs() < f64::EPSILON && (s.per - 1.0).abs() < f64::EPSILON);
        assert_eq!(s.quota_max, -1);
        assert_eq!(s.access_rights.len(), 2);
        assert_eq!(s.tags, vec!["t", "u"]);
        assert!(!s.hmac_enabled);
    }

    #[test]
    fn errors() {
        let ps = set(json!({"p": {"org_id": "other", "access_rights": ar("a")}, "empty": {}}));
        assert_eq!(
            ps.apply(&key(&["nope"])),
            Err(PolicyError::NotFound("nope".into()))
        );
        assert_eq!(ps.apply(&key(&["p"])), Err(PolicyError::OtherOrg));
        assert_eq!(ps.apply(&key(&["empty"])), Err(PolicyError::NoAccess));
        // With several policies an unknown one is skipped.
        let ps = set(json!({"q": {"access_rights": ar("a")}}));
        assert!(ps.apply(&key(&["nope", "q"])).is_ok());
    }

    #[test]
    fn partitions_take_only_their_aspect() {
        let ps = set(json!({
            "quota": {"quota_max": 5, "quota_renewal_rate": 10, "rate": 1, "per": 1, "partitions": {"quota": true}},
            "acl": {"access_rights": ar("a"), "partitions": {"acl": true}}
        }));
        let mut k = key(&["quota", "acl"]);
        k.rate = 50.0;
        k.per = 1.0;
        let s = ps.apply(&k).unwrap();
        assert_eq!(s.quota_max, 5);
        assert!(
            (s.rate - 50.0).abs() < f64::EPSILON,
            "rate stays the key's own"
        );
        assert!(s.access_rights.contains_key("a"));
    }

    #[test]
    fn per_api_gives_each_api_its_limit_and_scope() {
        let ps = set(
            json!({"p": {"partitions": {"per_api": true}, "access_rights": {
            "a": {"api_id": "a", "limit": {"rate": 1, "per": 1, "quota_max": 2, "quota_renewal_rate": 60}},
            "b": {"api_id": "b", "limit": {"rate": 5, "per": 1, "quota_max": 9, "quota_renewal_rate": 60}}}}}),
        );
        let s = ps.apply(&key(&["p"])).unwrap();
        assert_eq!(s.access_rights["a"].limit.as_ref().unwrap().quota_max, 2);
        assert_eq!(s.access_rights["b"].limit.as_ref().unwrap().quota_max, 9);
        assert_eq!(s.access_rights["a"].allowance_scope, "a");
        let mixed = set(
            json!({"p": {"partitions": {"per_api": true}, "access_rights": ar("a")},
                               "q": {"partitions": {"quota": true}}}),
        );
        assert_eq!(
            mixed.apply(&key(&["p", "q"])),
            Err(PolicyError::MixedPerApi)
        );
    }

    #[test]
    fn inactive_comes_from_policies_only() {
        let ps = set(
            json!({"on": {"access_rights": ar("a")}, "off": {"access_rights": ar("a"), "is_inactive": true}}),
        );
        let mut k = key(&["on"]);
        k.is_inactive = true;
        assert!(!ps.apply(&k).unwrap().is_inactive);
        assert!(ps.apply(&key(&["on", "off"])).unwrap().is_inactive);
    }
}
