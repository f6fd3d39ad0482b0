//! Every storage key name Tollgate uses, defined once: Tyk's Redis key prefixes and channel
//! (a Tyk node and a Tollgate node sharing one Redis must read each other's keys, counters and
//! notifications), Tollgate's own additions next to them, and the embedded store's tables.
//!
//! It lives in this crate, the lowest one that names storage keys ([`LimitPlan`](crate::LimitPlan)
//! builds its counter ids once per key), and is re-exported as `tollgate_storage::keyspace` for
//! the crates above storage. Pure string building, no I/O.

/// Tyk's prefix for a stored session: `apikey-<storage id>`.
pub const SESSION_PREFIX: &str = "apikey-";
/// Tyk's prefix for a rate limiter: `rate-limit-[<scope>-]<key>`.
pub const RATE_LIMIT_PREFIX: &str = "rate-limit-";
/// Tyk's prefix for a quota counter: `quota-[<scope>-]<key>`.
pub const QUOTA_PREFIX: &str = "quota-";
/// Tyk's prefix for an API-wide rate limiter's id: `apilimiter-<org><api>`.
pub const API_LIMITER_PREFIX: &str = "apilimiter-";
/// Suffix of the hash that holds a shared rate limiter's sub-window buckets, next to the
/// limiter's own key (Tollgate's addition: Tyk keeps only the log).
pub const BUCKETS_SUFFIX: &str = ":b";
/// Tyk's cluster notification channel (Redis pub/sub).
pub const NOTIFICATION_CHANNEL: &str = "tyk.cluster.notifications";
/// Tyk's analytics list in Redis, where Tyk Pump reads records.
pub const ANALYTICS_LIST: &str = "analytics-tyk-system-analytics";
/// Tyk's list of uptime check results (its host checker's `host-checker:` prefix and
/// `tyk-uptime-analytics`), where Tyk Pump's uptime pumps read them.
pub const UPTIME_ANALYTICS_LIST: &str = "host-checker:tyk-uptime-analytics";
/// The embedded store's table of sessions (storage id → session JSON).
pub const EMBEDDED_SESSIONS: &str = "sessions";
/// The embedded store's table of quota counters (quota id → used, renewal time).
pub const EMBEDDED_QUOTAS: &str = "quotas";

/// The Redis key of a stored session.
pub fn session(storage_id: &str) -> String {
    format!("{SESSION_PREFIX}{storage_id}")
}

/// `<scope>-`, or nothing for the key's own counters (Tyk's `allowance_scope` naming).
fn scoped(scope: &str) -> String {
    if scope.is_empty() {
        String::new()
    } else {
        format!("{scope}-")
    }
}

/// A rate limiter's name: `rate-limit-[<scope>-]<id>`.
pub fn rate_limit(scope: &str, id: &str) -> String {
    format!("{RATE_LIMIT_PREFIX}{}{id}", scoped(scope))
}

/// A quota counter's name: `quota-[<scope>-]<id>`.
pub fn quota(scope: &str, id: &str) -> String {
    format!("{QUOTA_PREFIX}{}{id}", scoped(scope))
}

/// The bucket hash that goes with the rate limiter named `rate_key`.
pub fn buckets(rate_key: &str) -> String {
    format!("{rate_key}{BUCKETS_SUFFIX}")
}

/// An API-wide rate limiter's id: `apilimiter-<org><api>`, as Tyk names it.
pub fn api_limiter(org_id: &str, api_id: &str) -> String {
    format!("{API_LIMITER_PREFIX}{org_id}{api_id}")
}

/// `id` as a Redis Cluster hash tag (`{id}`): keys naming the same tag share a slot, so one
/// script may touch all of them.
pub fn hash_tag(id: &str) -> String {
    format!("{{{id}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_tyks() {
        assert_eq!(session("h"), "apikey-h");
        assert_eq!(rate_limit("", "h"), "rate-limit-h");
        assert_eq!(rate_limit("api", "h"), "rate-limit-api-h");
        assert_eq!(quota("", "h"), "quota-h");
        assert_eq!(quota("s", &hash_tag("h")), "quota-s-{h}");
        assert_eq!(buckets("rate-limit-h"), "rate-limit-h:b");
        assert_eq!(api_limiter("o", "a"), "apilimiter-oa");
    }
}
