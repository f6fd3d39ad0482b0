//! Rate limits and quotas.
//!
//! Pure logic over a caller-supplied clock, so every rule is tested without sleeping:
//!
//! - [`RateWindow`]: a sliding window that holds on *every* window of `per` seconds, not only
//!   on average. Up to [`EXACT_LOG_LIMIT`] requests per window it keeps the exact admission
//!   times (a sliding log); above that it counts in sub-buckets and counts a partly expired
//!   bucket whole, so it can admit slightly fewer than `rate` but never more. Refused
//!   requests are not recorded: a client above its limit gets exactly `rate` requests through
//!   per window instead of being locked out (Tyk's rolling limiter logs refusals too).
//! - [`Quota`]: `max` requests per renewal period, renewed when the period has passed.
//! - [`LocalLimits`]: the per-node store of both, keyed by counter id, lock-free to look up;
//!   each counter has its own small lock, so only requests of the same key ever wait for
//!   each other.

mod quota;
mod window;

use std::sync::{Arc, Mutex};

pub use quota::{Quota, QuotaDecision, QuotaSnapshot};
pub use window::{EXACT_LOG_LIMIT, RateDecision, RateWindow};

/// Nanoseconds on a monotonic or wall clock, as the caller chooses (one clock per store).
pub type Nanos = u64;

/// The in-process limiter and quota store of one gateway node.
#[derive(Debug, Default)]
pub struct LocalLimits {
    windows: papaya::HashMap<Box<str>, Arc<Mutex<RateWindow>>>,
    quotas: papaya::HashMap<Box<str>, Arc<Mutex<Quota>>>,
}

impl LocalLimits {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks and, when allowed, records one request against `rate` per `per_ns`.
    pub fn check_rate(&self, id: &str, rate: u64, per_ns: Nanos, now: Nanos) -> RateDecision {
        let window = self.window(id, rate, per_ns);
        let mut w = window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.reconfigure(rate, per_ns);
        w.check(now)
    }

    /// Gives back the slot of the last admitted request (it was refused further on).
    pub fn refund_rate(&self, id: &str) {
        if let Some(window) = self.windows.pin().get(id) {
            window
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .refund();
        }
    }

    fn window(&self, id: &str, rate: u64, per_ns: Nanos) -> Arc<Mutex<RateWindow>> {
        let map = self.windows.pin();
        if let Some(w) = map.get(id) {
            return Arc::clone(w);
        }
        Arc::clone(map.get_or_insert_with(id.into(), || {
            Arc::new(Mutex::new(RateWindow::new(rate, per_ns)))
        }))
    }

    fn quota(&self, id: &str) -> Arc<Mutex<Quota>> {
        let map = self.quotas.pin();
        if let Some(q) = map.get(id) {
            return Arc::clone(q);
        }
        Arc::clone(map.get_or_insert_with(id.into(), || Arc::new(Mutex::new(Quota::default()))))
    }

    /// Counts one request against `max` per `renewal_secs` (see [`Quota::check`]).
    pub fn check_quota(&self, id: &str, max: i64, renewal_secs: i64, now_ms: i64) -> QuotaDecision {
        let quota = self.quota(id);
        let mut q = quota
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.check(max, renewal_secs, now_ms)
    }

    /// The quota state of a counter without counting.
    pub fn quota_snapshot(&self, id: &str) -> Option<QuotaSnapshot> {
        let map = self.quotas.pin();
        let q = map.get(id)?;
        let snapshot = q
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .snapshot();
        Some(snapshot)
    }

    /// Sets a counter (restoring persisted state at start-up).
    pub fn restore_quota(&self, id: &str, snapshot: QuotaSnapshot) {
        let quota = self.quota(id);
        quota
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .restore(snapshot);
    }

    /// Forgets a quota counter (key updated without `suppress_reset`, or deleted).
    pub fn reset_quota(&self, id: &str) {
        self.quotas.pin().remove(id);
    }

    /// Forgets these counters (rate or quota ids).
    pub fn reset_ids(&self, ids: &[&str]) {
        let quotas = self.quotas.pin();
        let windows = self.windows.pin();
        for id in ids {
            quotas.remove(*id);
            windows.remove(*id);
        }
    }

    /// Every quota counter changed since the last call, for write-behind persistence.
    pub fn take_dirty_quotas(&self) -> Vec<(String, QuotaSnapshot)> {
        let map = self.quotas.pin();
        map.iter()
            .filter_map(|(id, q)| {
                let mut q = q.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                q.take_dirty().then(|| (id.to_string(), q.snapshot()))
            })
            .collect()
    }
}
