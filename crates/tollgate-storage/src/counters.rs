//! Rate-limit and quota counters as the gateway uses them: one call per request checks the
//! key's rate limit and quota together (on Redis that is one round trip).
//!
//! The local backend keeps counters in process ([`LocalLimits`]) and writes quota counters
//! behind to the embedded store every [`FLUSH_INTERVAL`], so a restart does not hand a key a
//! fresh quota; a crash loses at most the last interval of counting.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate_limits::{LocalLimits, QuotaSnapshot, RateDecision};
use tollgate_session::{ActiveKey, LimitPlan};

use crate::batching;
use crate::embedded::EmbeddedStore;
use crate::error::StoreError;
use crate::redis::{KeyCheck, RedisStore};
use crate::verdict::{Admitted, Limited, whole, window_units};

/// How often quota counters are written behind.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// The counters of one gateway node.
#[derive(Debug)]
pub struct Counters {
    /// Shared counters (Redis); `None` = this node's own.
    shared: Option<Arc<RedisStore>>,
    local: LocalLimits,
    origin: Instant,
    persist: Option<EmbeddedStore>,
    /// Counters reset since the last flush, to delete from the store.
    removed: Mutex<Vec<String>>,
}

fn per_ns(per: f64) -> u64 {
    window_units(per, 1e9)
}

impl Counters {
    pub(crate) fn new(persist: Option<EmbeddedStore>, shared: Option<Arc<RedisStore>>) -> Self {
        Self {
            shared,
            local: LocalLimits::new(),
            origin: Instant::now(),
            persist,
            removed: Mutex::new(Vec::new()),
        }
    }

    pub(crate) async fn restore(&self) -> Result<usize, StoreError> {
        let Some(store) = &self.persist else {
            return Ok(0);
        };
        let saved = store.load_quotas().await?;
        let n = saved.len();
        for (id, snapshot) in saved {
            self.local.restore_quota(&id, snapshot);
        }
        Ok(n)
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Checks (and counts) one request of a key against its rate limit and quota.
    /// A request refused by the quota gives its rate-limit slot back.
    ///
    /// # Errors
    /// [`Limited`] when a limit refuses the request.
    pub async fn check_key(
        &self,
        plan: &LimitPlan,
        rate_on: bool,
        quota_on: bool,
        now_unix: i64,
    ) -> Result<Admitted, Limited> {
        if let Some(redis) = &self.shared {
            return check_shared(redis, plan, rate_on, quota_on, now_unix).await;
        }
        let mut admitted = Admitted::default();
        let limit_rate = rate_on && plan.rate > 0.0 && plan.per > 0.0;
        if limit_rate {
            let d = self.local.check_rate(
                &plan.rate_id,
                whole(plan.rate),
                per_ns(plan.per),
                self.now_ns(),
            );
            if !d.allowed {
                return Err(Limited::Rate(d));
            }
            admitted.rate = Some(d);
        }
        if quota_on && plan.quota_max > 0 {
            let d = self.local.check_quota(
                &plan.quota_id,
                plan.quota_max,
                plan.quota_renewal_rate,
                tollgate_session::time::unix_now_ms(),
            );
            if !d.allowed {
                if limit_rate {
                    self.local.refund_rate(&plan.rate_id);
                }
                return Err(Limited::Quota(d));
            }
            admitted.quota = Some(d);
        }
        Ok(admitted)
    }

    /// Checks one request against an API-wide rate limit.
    ///
    /// # Errors
    /// The limit refuses the request.
    pub async fn check_api(
        &self,
        id: &str,
        rate: f64,
        per: f64,
    ) -> Result<RateDecision, RateDecision> {
        if let Some(redis) = &self.shared {
            match redis.check_api(id, rate, per).await {
                Ok(d) if d.allowed => return Ok(d),
                Ok(d) => return Err(d),
                // Redis is down: the API limit falls back to this node's own window, so
                // keyless traffic keeps flowing (each node then admits up to the full rate).
                Err(_) => {}
            }
        }
        let d = self
            .local
            .check_rate(id, whole(rate), per_ns(per), self.now_ns());
        if d.allowed { Ok(d) } else { Err(d) }
    }

    /// The current quota state of a counter (for `GET /tyk/keys/{key}`).
    pub async fn quota(&self, plan: &LimitPlan, now_unix: i64) -> Option<QuotaSnapshot> {
        match &self.shared {
            Some(redis) => redis.quota(plan, now_unix).await.ok().flatten(),
            None => self.local.quota_snapshot(&plan.quota_id),
        }
    }

    /// Resets every counter of a key (update without `suppress_reset`, delete).
    ///
    /// # Errors
    /// The shared counters cannot be reached.
    pub async fn reset_key(&self, key: &ActiveKey) -> Result<(), StoreError> {
        let plans: Vec<&LimitPlan> = key.plans().collect();
        if let Some(redis) = &self.shared {
            return redis.reset(&plans).await;
        }
        let mut removed = Vec::new();
        for plan in plans {
            self.local.reset_ids(&[&plan.rate_id, &plan.quota_id]);
            removed.push(plan.quota_id.to_string());
        }
        self.removed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(removed);
        Ok(())
    }

    /// Writes changed quota counters to the embedded store (no-op elsewhere).
    ///
    /// # Errors
    /// The store refused the write; the changes are retried next time.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let Some(store) = &self.persist else {
            return Ok(0);
        };
        let removed = std::mem::take(
            &mut *self
                .removed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut batch: Vec<(String, Option<QuotaSnapshot>)> =
            removed.into_iter().map(|id| (id, None)).collect();
        batch.extend(
            self.local
                .take_dirty_quotas()
                .into_iter()
                .map(|(id, s)| (id, Some(s))),
        );
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        store.put_quotas(batch).await?;
        Ok(n)
    }
}

/// Checks a key's rate limit and quota on Redis in one round trip.
///
/// Above [`EXACT_LOG_LIMIT`](crate::redis::EXACT_LOG_LIMIT) (or with a quota alone) the check
/// needs no script, and on a gateway worker thread concurrent requests of one key share the
/// round trip (see [`crate::batching`]).
async fn check_shared(
    redis: &Arc<RedisStore>,
    plan: &LimitPlan,
    rate_on: bool,
    quota_on: bool,
    now_unix: i64,
) -> Result<Admitted, Limited> {
    match KeyCheck::new(plan, rate_on, quota_on) {
        KeyCheck::Nothing => Ok(Admitted::default()),
        KeyCheck::Count(params) => match batching::join(redis, plan, params) {
            Some(answer) => answer.await,
            None => redis.count_alone(plan, params, now_unix).await,
        },
        KeyCheck::Script { rate, quota_max } => {
            redis
                .check_key_script(plan, rate, quota_max, now_unix)
                .await
        }
    }
}
