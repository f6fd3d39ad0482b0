//! Rate-limit and quota stages: the key's own limits, then the API-wide limit (Tyk's order:
//! a key over its limit is refused before it can use up the API's shared allowance).

use http::HeaderValue;
use http::header::{HeaderName, RETRY_AFTER};
use http::{HeaderMap, StatusCode};
use tollgate_limits::RateDecision;
use tollgate_session::time::unix_now;
use tollgate_storage::Limited;

use crate::chain::RequestCtx;
use crate::error::Refusal;

/// `X-RateLimit-Limit`.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

const RATE_EXCEEDED: &str = "Rate Limit Exceeded";
const API_RATE_EXCEEDED: &str = "API Rate Limit Exceeded";
const QUOTA_EXCEEDED: &str = "Quota exceeded";

/// The values of the `X-RateLimit-*` headers for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    /// `X-RateLimit-Limit`.
    pub limit: i64,
    /// `X-RateLimit-Remaining`.
    pub remaining: i64,
    /// `X-RateLimit-Reset` (Unix seconds).
    pub reset: i64,
}

impl RateHeaders {
    /// Sets the three headers, replacing any the upstream sent.
    pub fn apply(self, headers: &mut HeaderMap) {
        headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(X_RATELIMIT_RESET, HeaderValue::from(self.reset));
    }
}

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

fn refused(status: StatusCode, message: &'static str, retry_after: i64) -> Refusal {
    Refusal {
        status,
        message,
        www_authenticate: None,
        retry_after: Some(retry_after),
    }
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
    pub(crate) async fn on_request(&self, cx: &mut RequestCtx<'_>) -> Result<(), Refusal> {
        let Some(key) = cx.key.clone() else {
            return Ok(());
        };
        let plan = key.plan(&cx.api.api_id);
        let mut throttle_retries = plan.throttle.map_or(0, |t| t.retries);
        let (checked, now) = loop {
            let now = unix_now();
            let checked = cx
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
            Err(Limited::Rate(d)) => {
                if self.rate_headers {
                    cx.rate_headers = Some(rate_headers(plan.rate, &d, now));
                }
                Err(refused(
                    StatusCode::TOO_MANY_REQUESTS,
                    RATE_EXCEEDED,
                    retry_after_secs(d.retry_after_ns),
                ))
            }
            Err(Limited::Quota(q)) => Err(refused(
                StatusCode::FORBIDDEN,
                QUOTA_EXCEEDED,
                (q.renews_at - now).max(1),
            )),
            Err(Limited::Unavailable) => Err(crate::auth::STORE_UNAVAILABLE),
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
    pub(crate) async fn on_request(&self, cx: &mut RequestCtx<'_>) -> Result<(), Refusal> {
        let now = unix_now();
        match cx
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
            Err(d) => {
                if self.rate_headers {
                    cx.rate_headers = Some(rate_headers(self.rate, &d, now));
                }
                Err(refused(
                    StatusCode::TOO_MANY_REQUESTS,
                    API_RATE_EXCEEDED,
                    retry_after_secs(d.retry_after_ns),
                ))
            }
        }
    }
}

/// Adds `Retry-After` to a refusal response.
pub(crate) fn set_retry_after(headers: &mut HeaderMap, secs: i64) {
    headers.insert(RETRY_AFTER, HeaderValue::from(secs));
}
