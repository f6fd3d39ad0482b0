//! Rate-limit and quota stages: the key's own limits, then the API-wide limit (Tyk's order:
//! a key over its limit is refused before it can use up the API's shared allowance).

use tollgate_limits::RateDecision;
use tollgate_session::time::unix_now;
use tollgate_storage::Limited;

use crate::ctx::{RequestCtx, StageRequest};
use crate::headers::RateHeaders;
use crate::refusal::{Refusal, RefusalKind};

fn retry_after_secs(ns: u64) -> i64 {
    i64::try_from(ns.div_ceil(1_000_000_000))
        .unwrap_or(i64::MAX)
        .max(1)
}

fn rate_headers(limit: f64, d: &RateDecision, now: i64) -> RateHeaders {
    #[allow(clippy::cast_possible_truncation)]
    let limit = limit.floor() as i64;
    RateHeaders {
        limit,
        remaining: i64::try_from(d.remaining).unwrap_or(i64::MAX),
        reset: now + retry_after_secs(d.retry_after_ns.max(1)),
    }
}

/// A request over a rate (`rate`, decided `d` at `now`): refused with the seconds until one
/// fits, and reported in `X-RateLimit-*` when the stage reports rates.
fn over_rate(
    cx: &mut RequestCtx,
    report: bool,
    rate: f64,
    d: &RateDecision,
    now: i64,
    kind: RefusalKind,
) -> Refusal {
    if report {
        cx.rate_headers = Some(rate_headers(rate, d, now));
    }
    Refusal::retry_after(kind, retry_after_secs(d.retry_after_ns))
}

/// The key's rate limit and quota, checked together (one round trip on Redis).
#[derive(Debug)]
pub(crate) struct KeyLimits {
    pub(crate) rate_on: bool,
    pub(crate) quota_on: bool,
    /// Report the rate limit in `X-RateLimit-*` instead of the quota.
    pub(crate) rate_headers: bool,
}

impl KeyLimits {
    pub(crate) async fn on_request(
        &self,
        req: &StageRequest<'_>,
        cx: &mut RequestCtx,
    ) -> Result<(), Refusal> {
        let Some(key) = cx.key.clone() else {
            return Ok(());
        };
        let plan = key.plan(&req.api.api_id);
        let mut throttle_retries = plan.throttle.map_or(0, |t| t.retries);
        let (checked, now) = loop {
            let now = unix_now();
            let checked = req
                .sessions
                .counters()
                .check_key(plan, self.rate_on, self.quota_on, now)
                .await;
            match (&checked, plan.throttle) {
                // Throttling: over the rate, wait and ask again (refusals are not counted,
                // so waiting costs the key nothing).
                (Err(Limited::Rate(_)), Some(t)) if throttle_retries > 0 => {
                    throttle_retries -= 1;
                    tokio::time::sleep(t.interval).await;
                }
                _ => break (checked, now),
            }
        };
        match checked {
            Ok(admitted) => {
                cx.rate_headers = Some(if self.rate_headers {
                    admitted.rate.map_or(
                        RateHeaders {
                            limit: 0,
                            remaining: 0,
                            reset: 0,
                        },
                        |d| rate_headers(plan.rate, &d, now),
                    )
                } else {
                    match admitted.quota {
                        Some(q) => RateHeaders {
                            limit: plan.quota_max,
                            remaining: q.remaining,
                            reset: q.renews_at,
                        },
                        None => RateHeaders {
                            limit: plan.quota_max,
                            remaining: plan.quota_max,
                            reset: 0,
                        },
                    }
                });
                Ok(())
            }
            Err(Limited::Rate(d)) => Err(over_rate(
                cx,
                self.rate_headers,
                plan.rate,
                &d,
                now,
                RefusalKind::RateLimited,
            )),
            Err(Limited::Quota(q)) => Err(Refusal::retry_after(
                RefusalKind::QuotaExceeded,
                (q.renews_at - now).max(1),
            )),
            Err(Limited::Unavailable) => Err(Refusal::store_unavailable()),
        }
    }
}

/// `global_rate_limit`: one allowance for all traffic to the API, keyless included.
#[derive(Debug)]
pub(crate) struct ApiRateLimit {
    pub(crate) counter_id: Box<str>,
    pub(crate) rate: f64,
    pub(crate) per: f64,
    pub(crate) rate_headers: bool,
}

impl ApiRateLimit {
    pub(crate) async fn on_request(
        &self,
        req: &StageRequest<'_>,
        cx: &mut RequestCtx,
    ) -> Result<(), Refusal> {
        let now = unix_now();
        match req
            .sessions
            .counters()
            .check_api(&self.counter_id, self.rate, self.per)
            .await
        {
            Ok(d) => {
                if self.rate_headers && cx.key.is_none() {
                    cx.rate_headers = Some(rate_headers(self.rate, &d, now));
                }
                Ok(())
            }
            Err(d) => Err(over_rate(
                cx,
                self.rate_headers,
                self.rate,
                &d,
                now,
                RefusalKind::ApiRateLimited,
            )),
        }
    }
}
