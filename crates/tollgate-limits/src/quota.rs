//! Quota counters.

/// A quota counter: requests used in the current period and when the period ends.
#[derive(Debug, Clone, Default)]
pub struct Quota {
    used: i64,
    /// Unix milliseconds when the period ends; 0 = no period started. Milliseconds, so a
    /// period lasts its full length and not "until the next whole second".
    renews_at_ms: i64,
    dirty: bool,
}

/// The persistent part of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSnapshot {
    /// Requests used in the period.
    pub used: i64,
    /// Unix milliseconds when the period ends (0 = not started).
    pub renews_at_ms: i64,
}

impl QuotaSnapshot {
    /// The period end in Unix seconds, rounded up (as reported to clients).
    pub fn renews_at(&self) -> i64 {
        ceil_secs(self.renews_at_ms)
    }
}

fn ceil_secs(ms: i64) -> i64 {
    if ms <= 0 {
        0
    } else {
        ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) > 0)
    }
}

/// The outcome of counting one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDecision {
    /// The request may go on.
    pub allowed: bool,
    /// Requests left in the period after this one (never negative).
    pub remaining: i64,
    /// Unix seconds when the period ends (rounded up).
    pub renews_at: i64,
}

impl Quota {
    /// Counts one request against `max` per `renewal_secs`. `max ≤ 0` is unlimited (nothing
    /// counted); `renewal_secs ≤ 0` never renews. A refused request is not counted, so
    /// exactly `max` requests pass per period however many are tried.
    pub fn check(&mut self, max: i64, renewal_secs: i64, now_ms: i64) -> QuotaDecision {
        if max <= 0 {
            return QuotaDecision {
                allowed: true,
                remaining: max,
                renews_at: ceil_secs(self.renews_at_ms),
            };
        }
        if renewal_secs > 0 && (self.renews_at_ms == 0 || now_ms >= self.renews_at_ms) {
            self.used = 0;
            self.renews_at_ms = now_ms + renewal_secs.saturating_mul(1000);
            self.dirty = true;
        }
        if self.used >= max {
            return QuotaDecision {
                allowed: false,
                remaining: 0,
                renews_at: ceil_secs(self.renews_at_ms),
            };
        }
        self.used += 1;
        self.dirty = true;
        QuotaDecision {
            allowed: true,
            remaining: max - self.used,
            renews_at: ceil_secs(self.renews_at_ms),
        }
    }

    /// Current state.
    pub fn snapshot(&self) -> QuotaSnapshot {
        QuotaSnapshot {
            used: self.used,
            renews_at_ms: self.renews_at_ms,
        }
    }

    /// Restores persisted state.
    pub fn restore(&mut self, s: QuotaSnapshot) {
        self.used = s.used;
        self.renews_at_ms = s.renews_at_ms;
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
        // First use half-way through a second: the period still lasts the full 60 s.
        let start = 1_000_500;
        let allowed = (0..10).filter(|_| q.check(3, 60, start).allowed).count();
        assert_eq!(allowed, 3);
        assert!(!q.check(3, 60, start + 59_999).allowed);
        let d = q.check(3, 60, start + 60_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
        assert_eq!(d.renews_at, 1121, "rounded up");
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
