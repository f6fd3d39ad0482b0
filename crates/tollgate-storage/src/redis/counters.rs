//! The shared counters: a key's rate limit and quota, and API-wide rate limits, in Redis under
//! Tyk's names. Exact: a request passes only if its own count is within every limit.

use redis::{Pipeline, Value};
use tollgate_limits::{QuotaDecision, QuotaSnapshot, RateDecision};
use tollgate_session::LimitPlan;

use super::RedisStore;
use super::scripts::{BUCKETS, EXACT_LOG_LIMIT, quota_start_period, quota_take_back};
use crate::error::{RedisFailure, StoreError};
use crate::keyspace;
use crate::verdict::{Admitted, Limited, whole, window_units};

#[cfg(test)]
mod tests;

/// How one request's check of a key runs on Redis ([`KeyCheck::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyCheck {
    /// No limit applies.
    Nothing,
    /// Script-free counting ([`RedisStore::count`]), which concurrent requests may share.
    Count(CountParams),
    /// The exact sorted-set log, in one script ([`RedisStore::check_key_script`]).
    Script {
        /// Requests per window (1..=[`EXACT_LOG_LIMIT`]).
        rate: u64,
        /// 0 = no quota.
        quota_max: i64,
    },
}

impl KeyCheck {
    /// Which check a request of `plan` needs. Above [`EXACT_LOG_LIMIT`] (or with a quota
    /// alone) it needs no script.
    pub(crate) fn new(plan: &LimitPlan, rate_on: bool, quota_on: bool) -> Self {
        let rate = if rate_on && plan.rate > 0.0 && plan.per > 0.0 {
            whole(plan.rate)
        } else {
            0
        };
        let quota_max = if quota_on && plan.quota_max > 0 {
            plan.quota_max
        } else {
            0
        };
        if rate == 0 && quota_max == 0 {
            Self::Nothing
        } else if rate == 0 || rate > EXACT_LOG_LIMIT {
            Self::Count(CountParams {
                rate,
                per_us: micros(plan.per),
                quota_max,
                renewal: plan.quota_renewal_rate.max(0),
            })
        } else {
            Self::Script { rate, quota_max }
        }
    }
}

impl RedisStore {
    /// Counter key names (rate log, rate buckets, quota): Tyk's, with the key id in a hash tag
    /// in cluster mode so every counter of a key lives in one slot and one script can touch
    /// them all.
    fn counter_names(&self, plan: &LimitPlan) -> (String, String, String) {
        let id = self.slotted(&plan.storage_id);
        let rate = keyspace::rate_limit(&plan.scope, &id);
        (
            keyspace::buckets(&rate),
            rate,
            keyspace::quota(&plan.scope, &id),
        )
    }

    /// An id as counter names hold it: in a hash tag in cluster mode.
    fn slotted(&self, id: &str) -> String {
        if self.settings.cluster {
            keyspace::hash_tag(id)
        } else {
            id.to_owned()
        }
    }

    /// A log member suffix no other request of this node uses: the scripts prefix it with
    /// Redis's time, and the process id keeps nodes apart.
    fn next_member_salt(&self) -> String {
        let salt = self.salt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{salt}", std::process::id())
    }

    /// Checks one request of a key with the key script: its rate limit (exact log) and
    /// quota, atomically, in one round trip.
    ///
    /// # Errors
    /// [`Limited`] when refused or when Redis cannot be reached.
    pub(crate) async fn check_key_script(
        &self,
        plan: &LimitPlan,
        rate: u64,
        quota_max: i64,
        now_unix: i64,
    ) -> Result<Admitted, Limited> {
        let (buckets_key, rate_key, quota_key) = self.counter_names(plan);
        let mut conn = self.conn().await.map_err(|_| Limited::Unavailable)?;
        let mut inv = self.key_script.key(&rate_key);
        inv.key(&buckets_key)
            .key(&quota_key)
            .arg(rate)
            .arg(micros(plan.per))
            .arg(quota_max)
            .arg(plan.quota_renewal_rate.max(0))
            .arg(self.next_member_salt());
        let reply: Vec<i64> = self
            .deadline(inv.invoke_async(&mut conn))
            .await
            .map_err(|_| Limited::Unavailable)?;
        let [status, rate_left, retry_us, quota_left, ttl_ms] = reply[..] else {
            return Err(Limited::Unavailable);
        };
        let rate_decision = script_rate_decision(status != 2, rate_left, retry_us);
        let quota_decision = QuotaDecision {
            allowed: status != 3,
            remaining: quota_left.max(0),
            renews_at: renews_at(now_unix, ttl_ms),
        };
        match status {
            2 => Err(Limited::Rate(rate_decision)),
            3 => Err(Limited::Quota(quota_decision)),
            _ => Ok(Admitted {
                rate: (rate > 0).then_some(rate_decision),
                quota: (quota_max > 0).then_some(quota_decision),
            }),
        }
    }

    /// Counts one request on its own (not batched): [`Self::count`] of 1, then its
    /// follow-up.
    ///
    /// # Errors
    /// [`Limited`] when refused or when Redis cannot be reached.
    pub(crate) async fn count_alone(
        &self,
        plan: &LimitPlan,
        params: CountParams,
        now_unix: i64,
    ) -> Result<Admitted, Limited> {
        let spec = self.count_spec(plan, params);
        let (counted, followup) = self
            .count(&spec, 1, now_unix, &mut WindowCache::default())
            .await
            .map_err(|_| Limited::Unavailable)?;
        self.follow_up(followup).await;
        counted.answer(0)
    }

    /// The counter names and limits of one key for [`Self::count`].
    pub(crate) fn count_spec(&self, plan: &LimitPlan, params: CountParams) -> CountSpec {
        let (buckets_key, _, quota_key) = self.counter_names(plan);
        CountSpec {
            buckets_key,
            quota_key,
            params,
        }
    }

    /// Counts `n` requests of one key in one round trip, with no script: the quota by `INCRBY`
    /// and the bucketed window by `HINCRBY` then summing the window's buckets. The answer is
    /// the one the n requests would have had reaching Redis one after another: the first ones
    /// that fit both limits pass, and what the others counted is taken back by the returned
    /// follow-up (which also prunes old buckets when one starts). Never over either limit: a
    /// request passes only if its own increment is within it.
    ///
    /// Bucket numbers come from this gateway's clock, so nodes' clocks must agree to well
    /// under one bucket (per/20).
    pub(crate) async fn count(
        &self,
        spec: &CountSpec,
        n: u32,
        now_unix: i64,
        window: &mut WindowCache,
    ) -> Result<(Counted, Option<Pipeline>), StoreError> {
        let mut conn = self.conn().await?;
        let p = spec.params;
        let n_i = i64::from(n);
        let now_us = tollgate_session::time::unix_now_micros();
        let width = p.per_us.div_ceil(BUCKETS).max(1);
        let cur = now_us / width;
        let first = now_us.saturating_sub(p.per_us) / width;
        // Buckets before the previous one are closed: their sum is read once per bucket and
        // kept, so most round trips read just the previous bucket (still open to requests in
        // flight and to clocks a little behind) besides counting in the current one.
        let known = window.older_sum(first, cur);
        let mut pipe = redis::pipe();
        if p.quota_max > 0 {
            pipe.cmd("INCRBY").arg(&spec.quota_key).arg(n);
            pipe.cmd("PTTL").arg(&spec.quota_key);
        }
        if p.rate > 0 {
            pipe.cmd("HINCRBY").arg(&spec.buckets_key).arg(cur).arg(n);
            // The buckets before the current one still to read (none for a one-bucket window:
            // HINCRBY's reply is all of it).
            let from = if known.is_some() {
                cur.saturating_sub(1).max(first)
            } else {
                first
            };
            if from < cur {
                let mut hmget = redis::cmd("HMGET");
                hmget.arg(&spec.buckets_key);
                for b in from..cur {
                    hmget.arg(b);
                }
                pipe.add_command(hmget);
            }
        }
        let values: Vec<Value> = self.deadline(pipe.query_async(&mut conn)).await?;
        let mut values = values.into_iter();
        let mut next_int = || {
            values
                .next()
                .and_then(|v| redis::from_redis_value::<i64>(v).ok())
        };
        let (used, ttl_ms) = if p.quota_max > 0 {
            let used = next_int().ok_or_else(|| RedisFailure::UnexpectedReply("INCRBY"))?;
            (used, next_int().unwrap_or(-1))
        } else {
            (0, -1)
        };
        let (bucket_now, in_window) = if p.rate > 0 {
            let bucket_now = next_int().ok_or_else(|| RedisFailure::UnexpectedReply("HINCRBY"))?;
            let older_and_previous = if cur == first {
                0
            } else {
                // first..=cur-1 (all read), or just cur-1 (the older ones known).
                let counts: Vec<Option<i64>> = values
                    .next()
                    .and_then(|v| redis::from_redis_value(v).ok())
                    .ok_or_else(|| RedisFailure::UnexpectedReply("HMGET"))?;
                let read: i64 = counts.iter().flatten().sum();
                match known {
                    Some(older) => older + read,
                    None => {
                        let previous = counts.last().copied().flatten().unwrap_or(0);
                        window.remember(first, cur, read - previous);
                        read
                    }
                }
            };
            let in_window = older_and_previous + bucket_now;
            (bucket_now, in_window)
        } else {
            (0, 0)
        };
        // How many of the n, counting from the first, fit under a limit that stood at
        // `after - n` before this round trip.
        let fits = |limit: i64, after: i64| (limit - (after - n_i)).clamp(0, n_i);
        let rate_i = i64::try_from(p.rate).unwrap_or(i64::MAX);
        let rate_fits = if p.rate > 0 {
            fits(rate_i, in_window)
        } else {
            n_i
        };
        let quota_fits = if p.quota_max > 0 {
            fits(p.quota_max, used)
        } else {
            n_i
        };
        let refused = n_i - rate_fits.min(quota_fits);

        let mut followup = redis::pipe();
        let mut any = false;
        if refused > 0 {
            if p.rate > 0 {
                followup
                    .cmd("HINCRBY")
                    .arg(&spec.buckets_key)
                    .arg(cur)
                    .arg(-refused)
                    .ignore();
            }
            if p.quota_max > 0 {
                followup
                    .add_command(quota_take_back(&spec.quota_key, refused, ttl_ms))
                    .ignore();
            }
            any = true;
        }
        // A quota counter without an expiry was just made by INCRBY (or its maker died before
        // giving it one): its period starts now. Whichever node sees it first sets it.
        let mut renews = renews_at(now_unix, ttl_ms);
        if p.quota_max > 0 && p.renewal > 0 && ttl_ms == -1 {
            followup
                .add_command(quota_start_period(&spec.quota_key, p.renewal))
                .ignore();
            renews = now_unix + p.renewal;
            any = true;
        }
        if p.rate > 0 && bucket_now == n_i {
            let mut hdel = redis::cmd("HDEL");
            hdel.arg(&spec.buckets_key);
            for b in first.saturating_sub(BUCKETS + 1)..first {
                hdel.arg(b);
            }
            followup.add_command(hdel).ignore();
            followup
                .cmd("PEXPIRE")
                .arg(&spec.buckets_key)
                .arg((p.per_us + width).div_ceil(1000))
                .ignore();
            any = true;
        }
        let counted = Counted {
            params: p,
            rate_fits,
            quota_fits,
            window_before: in_window - n_i,
            used_before: used - n_i,
            renews_at: renews,
            retry_after_ns: ((first + 1) * width + p.per_us)
                .saturating_sub(now_us)
                .saturating_mul(1000),
        };
        Ok((counted, any.then_some(followup)))
    }

    /// Sends what [`Self::count`] left to do.
    pub(crate) async fn follow_up(&self, followup: Option<Pipeline>) {
        let Some(pipe) = followup else { return };
        let Ok(mut conn) = self.conn().await else {
            return;
        };
        if let Err(e) = self.deadline(pipe.query_async::<()>(&mut conn)).await {
            tracing::warn!(error = %e, "counter follow-up (take-back, expiry, pruning) failed");
        }
    }

    /// Checks an API-wide rate limit.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn check_api(
        &self,
        id: &str,
        rate: f64,
        per: f64,
    ) -> Result<RateDecision, StoreError> {
        let mut conn = self.conn().await?;
        // The API's counters share a hash tag in cluster mode, like a key's.
        let log = keyspace::rate_limit("", &self.slotted(id));
        let mut inv = self.api_script.key(&log);
        inv.key(keyspace::buckets(&log))
            .arg(whole(rate))
            .arg(micros(per))
            .arg(self.next_member_salt());
        let reply: Vec<i64> = self.deadline(inv.invoke_async(&mut conn)).await?;
        let [allowed, left, retry_us] = reply[..] else {
            return Err(RedisFailure::UnexpectedReply("script").into());
        };
        Ok(script_rate_decision(allowed == 1, left, retry_us))
    }

    /// A quota counter's state.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn quota(
        &self,
        plan: &LimitPlan,
        now_unix: i64,
    ) -> Result<Option<QuotaSnapshot>, StoreError> {
        let (_, _, quota_key) = self.counter_names(plan);
        let used: Option<i64> = self.query(redis::cmd("GET").arg(&quota_key)).await?;
        let Some(used) = used else { return Ok(None) };
        let ttl: i64 = self.query(redis::cmd("PTTL").arg(&quota_key)).await?;
        let renews_at_ms = if ttl > 0 {
            now_unix.saturating_mul(1000) + ttl
        } else {
            0
        };
        Ok(Some(QuotaSnapshot { used, renews_at_ms }))
    }

    /// Deletes counters.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn reset(&self, plans: &[&LimitPlan]) -> Result<(), StoreError> {
        for plan in plans {
            let (buckets_key, rate_key, quota_key) = self.counter_names(plan);
            // One DEL per plan; a plan's keys share a slot, other plans' may not.
            self.query::<i64>(
                redis::cmd("DEL")
                    .arg(&rate_key)
                    .arg(&buckets_key)
                    .arg(&quota_key),
            )
            .await?;
        }
        Ok(())
    }
}

/// The limits one script-free count applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CountParams {
    /// Requests per window; 0 = no rate limit.
    pub(crate) rate: u64,
    pub(crate) per_us: u64,
    /// 0 = no quota.
    pub(crate) quota_max: i64,
    pub(crate) renewal: i64,
}

/// One key's counters and limits for [`RedisStore::count`].
#[derive(Debug)]
pub(crate) struct CountSpec {
    buckets_key: String,
    quota_key: String,
    params: CountParams,
}

/// What one [`RedisStore::count`] of n requests found; [`Counted::answer`] gives each of
/// the n its own answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counted {
    params: CountParams,
    /// How many of the n (the first ones) fit the rate limit, and the quota.
    rate_fits: i64,
    quota_fits: i64,
    /// The window's count and the quota's before the n were counted.
    window_before: i64,
    used_before: i64,
    renews_at: i64,
    retry_after_ns: u64,
}

impl Counted {
    /// The answer of the i-th (from 0) request of the batch.
    pub(crate) fn answer(&self, i: u32) -> Result<Admitted, Limited> {
        let i = i64::from(i);
        let p = self.params;
        let rate_ok = i < self.rate_fits;
        let quota_ok = i < self.quota_fits;
        let rate_i = i64::try_from(p.rate).unwrap_or(i64::MAX);
        let rate_decision = RateDecision {
            allowed: rate_ok,
            remaining: if rate_ok {
                u64::try_from(rate_i - (self.window_before + i + 1)).unwrap_or(0)
            } else {
                0
            },
            retry_after_ns: if rate_ok { 0 } else { self.retry_after_ns },
        };
        let quota_decision = QuotaDecision {
            allowed: quota_ok,
            remaining: if quota_ok {
                (p.quota_max - (self.used_before + i + 1)).max(0)
            } else {
                0
            },
            renews_at: self.renews_at,
        };
        if !rate_ok {
            return Err(Limited::Rate(rate_decision));
        }
        if !quota_ok {
            return Err(Limited::Quota(quota_decision));
        }
        Ok(Admitted {
            rate: (p.rate > 0).then_some(rate_decision),
            quota: (p.quota_max > 0).then_some(quota_decision),
        })
    }
}

/// The sum of a window's closed buckets (all but the previous and the current one), kept
/// between round trips of one key.
#[derive(Debug, Default)]
pub(crate) struct WindowCache {
    /// (first bucket, current bucket, sum of first..=current-2)
    known: Option<(u64, u64, i64)>,
}

impl WindowCache {
    fn older_sum(&self, first: u64, cur: u64) -> Option<i64> {
        match self.known {
            Some((f, c, sum)) if f == first && c == cur => Some(sum),
            _ => None,
        }
    }

    fn remember(&mut self, first: u64, cur: u64, sum: i64) {
        self.known = Some((first, cur, sum));
    }
}

/// When a counter with `ttl_ms` left renews, in Unix seconds (rounded up); 0 = never.
fn renews_at(now_unix: i64, ttl_ms: i64) -> i64 {
    if ttl_ms > 0 {
        now_unix + ttl_ms.div_euclid(1000) + i64::from(ttl_ms % 1000 > 0)
    } else {
        0
    }
}

fn micros(per: f64) -> u64 {
    window_units(per, 1e6)
}

/// A rate decision from a script's reply: requests left and the wait (µs) before a retry.
fn script_rate_decision(allowed: bool, left: i64, retry_us: i64) -> RateDecision {
    RateDecision {
        allowed,
        remaining: u64::try_from(left.max(0)).unwrap_or(0),
        retry_after_ns: u64::try_from(retry_us.max(0))
            .unwrap_or(0)
            .saturating_mul(1000),
    }
}
