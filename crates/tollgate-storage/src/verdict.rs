//! What a limit check answers, whichever backend counted: shared by the local counters, the
//! Redis counters and their group commit (`batching`).

use tollgate_limits::{QuotaDecision, RateDecision};

/// Why a request is refused by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Over the rate limit.
    Rate(RateDecision),
    /// Over the quota.
    Quota(QuotaDecision),
    /// The shared counters cannot be reached, so the limits cannot be checked.
    Unavailable,
}

/// What the checks admitted, for response headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admitted {
    /// The rate decision, when a rate limit applied.
    pub rate: Option<RateDecision>,
    /// The quota decision, when a quota applied.
    pub quota: Option<QuotaDecision>,
}

/// A rate as a whole number of requests (at least 1): both backends count whole requests.
pub(crate) fn whole(rate: f64) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let r = rate.floor() as u64;
    r.max(1)
}

/// A window of `per` seconds in whole units of `1 / units_per_sec` seconds (at least 1): the
/// local limiter counts nanoseconds, the Redis scripts microseconds.
pub(crate) fn window_units(per: f64, units_per_sec: f64) -> u64 {
    // Saturating float-to-int conversion; `per` is validated positive by the caller.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let units = (per * units_per_sec) as u64;
    units.max(1)
}
