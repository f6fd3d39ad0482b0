//! Quota counters.

/// A quota counter: requests used in the current period and when the period ends.
#[derive(Debug, Clone, Default)]
pub struct Quota {
    used: i64,
    /// Unix seconds when the period ends; 0 = no period started.
    renews_at: i64,
    dirty: bool,
}

/// The persistent part of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSnapshot {
    /// Requests used in the period.
    pub used: i64,
    /// Unix seconds when the period ends (0 = not started).
    pub renews_at: i64,
}

/// The outcome of counting one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDecision {
    /// The request may go on.
    pub allowed: bool,
    /// Requests left in the period after this one (never negative).
    pub remaining: i64,
    /// Unix seconds when the period ends.
    pub renews_at: i64,
}

impl Quota {
    /// Counts one request against `max` per `renewal_secs`. `max ≤ 0` is unlimited (nothing
    /// counted); `renewal_secs ≤ 0` never renews. A refused request is not counted, so
    /// exactly `max` requests pass per period however many are tried.
    pub fn check(&mut self, max: i64, renewal_secs: i64, now: i64) -> QuotaDecision {
        if max <= 0 {
            return QuotaDecision {
                allowed: true,
                remaining: max,
                renews_at: self.renews_at,
            };
        }
        if renewal_secs > 0 && (self.renews_at == 0 || now >= self.renews_at) {
            self.used = 0;
            self.renews_at = now + renewal_secs;
            self.dirty = true;
        }
        if self.used >= max {
            return QuotaDecision {
                allowed: false,
                remaining: 0,
                renews_at: self.renews_at,
            };
        }
        self.used += 1;
        self.dirty = true;
        QuotaDecision {
            allowed: true,
            remaining: max - self.used,
            renews_at: self.renews_at,
        }
    }

    /// Current state.
    pub fn snapshot(&self) -> QuotaSnapshot {
        QuotaSnapshot {
            used: self.used,
            renews_at: self.renews_at,
        }
    }

    /// Restores persisted state.
    pub fn restore(&mut self, s: QuotaSnapshot) {
        self.used = s.used;
        self.renews_at = s.renews_at;
        self.dirty = false;
    }

    /// True once after each change.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_max_per_period_then_renewal() {
        let mut q = Quota::default();
        let allowed = (0..10).filter(|_| q.check(3, 60, 1000).allowed).count();
        assert_eq!(allowed, 3);
        assert_eq!(q.check(3, 60, 1059).remaining, 0);
        let d = q.check(3, 60, 1060);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
        assert_eq!(d.renews_at, 1120);
    }

    #[test]
    fn unlimited_and_never_renewing() {
        let mut q = Quota::default();
        assert!((0..100).all(|_| q.check(-1, 60, 0).allowed));
        let mut q = Quota::default();
        assert!(q.check(1, 0, 0).allowed);
        assert!(!q.check(1, 0, 1_000_000).allowed);
    }
}
