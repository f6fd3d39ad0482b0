//! The sliding-window rate limiter.

use std::collections::VecDeque;

use crate::Nanos;

/// Up to this many requests per window the limiter keeps exact admission times.
pub const EXACT_LOG_LIMIT: u64 = 4096;

/// Sub-buckets per window when the rate is above [`EXACT_LOG_LIMIT`].
const BUCKETS: u64 = 1024;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// The request may go on.
    pub allowed: bool,
    /// Requests still allowed in the current window after this one.
    pub remaining: u64,
    /// Nanoseconds until one more request would be allowed (0 when some are left).
    pub retry_after_ns: Nanos,
}

/// A sliding window over `per` nanoseconds admitting at most `rate` requests in any window.
#[derive(Debug, Clone)]
pub struct RateWindow {
    rate: u64,
    per: Nanos,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// Admission times of the requests in the window, oldest first.
    Log(VecDeque<Nanos>),
    /// Counts per sub-bucket: (bucket index, count), oldest first.
    Buckets {
        width: Nanos,
        counts: VecDeque<(u64, u64)>,
        total: u64,
    },
}

impl RateWindow {
    /// A limiter for `rate` requests per `per` nanoseconds (`per` > 0).
    pub fn new(rate: u64, per: Nanos) -> Self {
        let per = per.max(1);
        let state = if rate <= EXACT_LOG_LIMIT {
            State::Log(VecDeque::with_capacity(
                usize::try_from(rate.min(64)).unwrap_or(64),
            ))
        } else {
            State::Buckets {
                width: (per / BUCKETS).max(1),
                counts: VecDeque::new(),
                total: 0,
            }
        };
        Self { rate, per, state }
    }

    /// Adopts new limits (a key was updated); history is kept when the mode allows.
    pub fn reconfigure(&mut self, rate: u64, per: Nanos) {
        let per = per.max(1);
        if rate == self.rate && per == self.per {
            return;
        }
        let exact = rate <= EXACT_LOG_LIMIT;
        match (&self.state, exact) {
            (State::Log(_), true) => {
                self.rate = rate;
                self.per = per;
            }
            _ => *self = Self::new(rate, per),
        }
    }

    /// Checks one request at `now` and records it when allowed.
    pub fn check(&mut self, now: Nanos) -> RateDecision {
        let (rate, per) = (self.rate, self.per);
        match &mut self.state {
            State::Log(log) => {
                // A request admitted at t counts until t + per.
                if let Some(floor) = now.checked_sub(per) {
                    while log.front().is_some_and(|&t| t <= floor) {
                        log.pop_front();
                    }
                }
                let used = log.len() as u64;
                if used >= rate {
                    let oldest = log.front().copied().unwrap_or(now);
                    return RateDecision {
                        allowed: false,
                        remaining: 0,
                        retry_after_ns: (oldest + per).saturating_sub(now).max(1),
                    };
                }
                log.push_back(now);
                RateDecision {
                    allowed: true,
                    remaining: rate - used - 1,
                    retry_after_ns: 0,
                }
            }
            State::Buckets {
                width,
                counts,
                total,
            } => {
                let width = *width;
                let current = now / width;
                // A window [now-per, now] touches the buckets from (now-per)/width on; count
                // each of them whole, so nothing that could be inside the window is missed.
                let first = now.checked_sub(per).map_or(0, |f| f / width);
                while counts.front().is_some_and(|&(b, _)| b < first) {
                    if let Some((_, c)) = counts.pop_front() {
                        *total -= c;
                    }
                }
                if *total >= rate {
                    let retry = counts
                        .front()
                        .map_or(width, |&(b, _)| ((b + 1) * width + per).saturating_sub(now));
                    return RateDecision {
                        allowed: false,
                        remaining: 0,
                        retry_after_ns: retry.max(1),
                    };
                }
                match counts.back_mut() {
                    Some((b, c)) if *b == current => *c += 1,
                    _ => counts.push_back((current, 1)),
                }
                *total += 1;
                RateDecision {
                    allowed: true,
                    remaining: rate - *total,
                    retry_after_ns: 0,
                }
            }
        }
    }

    /// Forgets the most recent admission (the request was refused later on).
    pub fn refund(&mut self) {
        match &mut self.state {
            State::Log(log) => {
                log.pop_back();
            }
            State::Buckets { counts, total, .. } => {
                if let Some((_, c)) = counts.back_mut()
                    && *c > 0
                {
                    *c -= 1;
                    *total -= 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: Nanos = 1_000_000_000;

    #[test]
    fn five_per_minute_in_any_minute() {
        let mut w = RateWindow::new(5, 60 * SEC);
        let allowed: Vec<bool> = (0..10).map(|i| w.check(i * SEC).allowed).collect();
        assert_eq!(allowed.iter().filter(|a| **a).count(), 5);
        // The first admission (t=0) leaves the window at t=60 s, not before.
        assert!(!w.check(59 * SEC).allowed);
        assert!(w.check(60 * SEC + 1).allowed);
    }

    #[test]
    fn refusals_do_not_use_the_allowance() {
        // 60 requests/s against 20 per second: 20 pass in every second.
        let mut w = RateWindow::new(20, SEC);
        for second in 0..5u64 {
            let passed = (0..60)
                .filter(|i| w.check(second * SEC + i * (SEC / 60)).allowed)
                .count();
            assert_eq!(passed, 20, "second {second}");
        }
    }

    #[test]
    fn refund_gives_the_slot_back() {
        let mut w = RateWindow::new(1, SEC);
        assert!(w.check(0).allowed);
        w.refund();
        assert!(w.check(1).allowed);
    }

    /// Admissions in any window of `per` never exceed `rate` (checked against the record of
    /// every admitted request).
    fn holds_on_every_window(rate: u64, per: Nanos, gaps: &[u64]) -> Result<(), TestCaseError> {
        let mut w = RateWindow::new(rate, per);
        let mut now = 0;
        let mut admitted = Vec::new();
        for g in gaps {
            now += g;
            if w.check(now).allowed {
                admitted.push(now);
            }
        }
        for (i, &start) in admitted.iter().enumerate() {
            let in_window = admitted[i..]
                .iter()
                .take_while(|&&t| t < start + per)
                .count() as u64;
            prop_assert!(
                in_window <= rate,
                "{in_window} > {rate} in the window from {start}"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn exact_log_never_exceeds(rate in 1u64..50, gaps in proptest::collection::vec(0u64..200_000_000, 1..400)) {
            holds_on_every_window(rate, SEC, &gaps)?;
        }

        #[test]
        fn buckets_never_exceed(gaps in proptest::collection::vec(0u64..2_000_000, 1..12_000)) {
            holds_on_every_window(EXACT_LOG_LIMIT + 1, SEC, &gaps)?;
        }
    }

    #[test]
    fn buckets_admit_close_to_the_rate() {
        let rate = 10_000;
        let mut w = RateWindow::new(rate, SEC);
        // 20 000 requests/s for 3 s: each second should pass nearly `rate`.
        let mut passed = [0u64; 3];
        for i in 0..60_000u64 {
            let t = i * (SEC / 20_000);
            if w.check(t).allowed {
                passed[usize::try_from(t / SEC).unwrap()] += 1;
            }
        }
        for p in passed {
            assert!(p <= rate && p >= rate * 99 / 100, "{p}");
        }
    }
}
