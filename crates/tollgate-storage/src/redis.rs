//! The Redis backend: sessions, counters and cluster notifications in a Redis shared by every
//! gateway node (standalone or Redis Cluster), under Tyk's key names so a Tyk node and a
//! Tollgate node can share one Redis.
//!
//! Every call has a deadline. After a failure the backend stays "down" for [`DOWN_FOR`] and
//! fails at once instead of waiting again, so an unreachable Redis costs the request path
//! nothing but an error answer; the connection reconnects on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};
use tollgate_limits::{QuotaDecision, QuotaSnapshot, RateDecision};
use tollgate_session::LimitPlan;

use crate::StoreError;
use crate::counters::{Admitted, Limited, whole};

/// Tyk's prefix for sessions.
const SESSION_PREFIX: &str = "apikey-";
/// Tyk's cluster notification channel.
pub const NOTIFICATION_CHANNEL: &str = "tyk.cluster.notifications";
/// How long a failure keeps the backend marked down.
const DOWN_FOR: Duration = Duration::from_millis(500);

/// Up to this many requests per window the shared limiter keeps every admission time (a
/// sorted set, exact on every window); above it, it counts in [`BUCKETS`] sub-buckets of the
/// window (a hash) and counts a partly expired bucket whole, so it never admits more than the
/// rate and at most 1/BUCKETS (5 %) fewer, at a constant cost per request.
pub const EXACT_LOG_LIMIT: u64 = 1000;
/// Sub-buckets per window above [`EXACT_LOG_LIMIT`].
pub const BUCKETS: u64 = 20;

/// The sliding-window check shared by both scripts. KEYS of the caller: the log (sorted set)
/// and the bucket hash of one limiter. Refused requests are not recorded.
macro_rules! rate_lua {
    () => {
        r"
local function rate_check(log, buckets, rate, per, now, member)
  if rate <= 1000 then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - per)
    local used = redis.call('ZCARD', log)
    if used >= rate then
      local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
      local retry = per
      if oldest[2] then retry = tonumber(oldest[2]) + per - now end
      return false, 0, retry
    end
    redis.call('ZADD', log, now, member)
    redis.call('PEXPIRE', log, math.ceil(per / 1000))
    return true, rate - used - 1, 0
  end
  local width = math.ceil(per / 20)
  local cur = math.floor(now / width)
  local first = math.floor((now - per) / width)
  local fields = {}
  for b = first, cur do fields[#fields + 1] = b end
  local counts = redis.call('HMGET', buckets, unpack(fields))
  local used = 0
  for i = 1, #counts do used = used + (tonumber(counts[i]) or 0) end
  if used >= rate then
    return false, 0, (first + 1) * width + per - now
  end
  -- Pruning and the expiry only when a bucket starts: one write per request otherwise.
  if redis.call('HINCRBY', buckets, cur, 1) == 1 then
    for _, f in ipairs(redis.call('HKEYS', buckets)) do
      if tonumber(f) < first then redis.call('HDEL', buckets, f) end
    end
    redis.call('PEXPIRE', buckets, math.ceil(per / 1000) + math.ceil(width / 1000))
  end
  return true, rate - used - 1, 0
end
local function rate_undo(log, buckets, rate, per, now, member)
  if rate <= 1000 then
    redis.call('ZREM', log, member)
  else
    redis.call('HINCRBY', buckets, math.floor(now / math.ceil(per / 20)), -1)
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"
    };
}

/// Rate limit and quota (a counter that expires with its period) for one key, atomically, in
/// one round trip. Time is Redis's own, so gateway clocks never disagree.
///
/// KEYS: rate log, rate buckets, quota counter. ARGV: rate, per (µs), quota max, renewal (s),
/// member salt. Returns {status (1 ok, 2 rate, 3 quota), rate remaining, retry (µs), quota
/// remaining, quota ttl (ms)}.
const KEY_SCRIPT: &str = concat!(
    rate_lua!(),
    r"
local rate = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
local qmax = tonumber(ARGV[3])
local renewal = tonumber(ARGV[4])
local member = now .. '-' .. ARGV[5]
local rate_left = -1
if rate > 0 then
  local ok, left, retry = rate_check(KEYS[1], KEYS[2], rate, per, now, member)
  if not ok then return {2, 0, retry, -1, -1} end
  rate_left = left
end
local quota_left = -1
local ttl = -1
if qmax > 0 then
  local used = redis.call('INCR', KEYS[3])
  if used == 1 and renewal > 0 then
    redis.call('EXPIRE', KEYS[3], renewal)
  end
  ttl = redis.call('PTTL', KEYS[3])
  if used > qmax then
    redis.call('DECR', KEYS[3])
    if rate > 0 then rate_undo(KEYS[1], KEYS[2], rate, per, now, member) end
    return {3, 0, 0, 0, ttl}
  end
  quota_left = qmax - used
end
return {1, rate_left, 0, quota_left, ttl}
"
);

/// The API-wide limit. KEYS: rate log, rate buckets. ARGV: rate, per (µs), member salt.
const API_SCRIPT: &str = concat!(
    rate_lua!(),
    r"
local ok, left, retry = rate_check(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), now, now .. '-' .. ARGV[3])
if not ok then return {0, 0, retry} end
return {1, left, 0}
"
);

/// A connection to standalone Redis or to a Redis Cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Per-thread connections, by store id.
    static THREAD_CONNS: std::cell::RefCell<Vec<(u64, Conn)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Connection settings, from tyk.conf's `storage`.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` URLs of the nodes (one for standalone).
    pub urls: Vec<String>,
    /// Redis Cluster mode.
    pub cluster: bool,
    /// Deadline for one call.
    pub timeout: Duration,
    /// Signs and verifies cluster notifications.
    pub node_secret: String,
    /// Accept unsigned notifications (`allow_insecure_configs`).
    pub allow_insecure: bool,
}

/// The Redis backend.
pub struct RedisStore {
    settings: RedisSettings,
    /// Standalone: ready at once (reconnects by itself). Cluster: made on first use.
    /// Distinguishes stores in the per-thread connection table.
    id: u64,
    /// The standalone client (connections are made per thread from it).
    single: Option<redis::Client>,
    key_script: Script,
    api_script: Script,
    /// Process-relative millis until which the backend counts as down.
    down_until: AtomicU64,
    /// When the last probe of a recovering Redis started (process-relative millis).
    probe_started: AtomicU64,
    origin: Instant,
    salt: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Prepares the backend. Standalone connects lazily (a Redis that is down at start-up
    /// does not stop the gateway: keyless APIs still serve).
    ///
    /// # Errors
    /// The settings are unusable (bad address).
    pub fn new(settings: RedisSettings) -> Result<Arc<Self>, StoreError> {
        let single = if settings.cluster {
            None
        } else {
            let url = settings
                .urls
                .first()
                .ok_or_else(|| unavailable("no Redis address configured"))?;
            Some(redis::Client::open(url.as_str()).map_err(unavailable)?)
        };
        Ok(Arc::new(Self {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            settings,
            single,
            key_script: Script::new(KEY_SCRIPT),
            api_script: Script::new(API_SCRIPT),
            down_until: AtomicU64::new(0),
            probe_started: AtomicU64::new(0),
            origin: Instant::now(),
            salt: AtomicU64::new(0),
        }))
    }

    /// The secret notifications are signed with.
    pub fn node_secret(&self) -> &str {
        &self.settings.node_secret
    }

    /// The settings in use.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// False while a recent failure marks Redis as down.
    pub fn is_up(&self) -> bool {
        self.now_ms() >= self.down_until.load(Ordering::Relaxed)
    }

    /// This thread's connection. Each worker thread keeps its own multiplexed connection,
    /// driven by its own runtime, so a Redis call never wakes another thread.
    async fn conn(&self) -> Result<Conn, StoreError> {
        let now = self.now_ms();
        let down_until = self.down_until.load(Ordering::Relaxed);
        if now < down_until {
            return Err(unavailable("Redis is unreachable"));
        }
        if down_until != 0 {
            // Recovering: one request at a time probes Redis (each probe may take the whole
            // timeout); the others keep failing fast until it answers. A probe that is
            // abandoned mid-way stops counting once the timeout has passed.
            let started = self.probe_started.load(Ordering::Relaxed);
            let timeout_ms = u64::try_from(self.settings.timeout.as_millis()).unwrap_or(u64::MAX);
            if now < started.saturating_add(timeout_ms)
                || self
                    .probe_started
                    .compare_exchange(started, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                return Err(unavailable("Redis is unreachable"));
            }
        }
        let cached = THREAD_CONNS.with(|conns| {
            conns
                .borrow()
                .iter()
                .find(|(id, _)| *id == self.id)
                .map(|(_, c)| c.clone())
        });
        if let Some(c) = cached {
            return Ok(c);
        }
        let conn = match &self.single {
            Some(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.settings.timeout))
                    .set_response_timeout(Some(self.settings.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Conn::Single(
                    ConnectionManager::new_lazy_with_config(client.clone(), config)
                        .map_err(unavailable)?,
                )
            }
            None => {
                let client = redis::cluster::ClusterClientBuilder::new(self.settings.urls.clone())
                    .connection_timeout(self.settings.timeout)
                    .response_timeout(self.settings.timeout)
                    .build()
                    .map_err(unavailable)?;
                match tokio::time::timeout(self.settings.timeout, client.get_async_connection())
                    .await
                {
                    Ok(Ok(c)) => Conn::Cluster(c),
                    Ok(Err(e)) => return Err(self.failed(e)),
                    Err(_) => return Err(self.failed("connecting timed out")),
                }
            }
        };
        THREAD_CONNS.with(|conns| conns.borrow_mut().push((self.id, conn.clone())));
        Ok(conn)
    }

    fn failed(&self, e: impl std::fmt::Display) -> StoreError {
        self.down_until.store(
            self.now_ms() + u64::try_from(DOWN_FOR.as_millis()).unwrap_or(500),
            Ordering::Relaxed,
        );
        tracing::warn!(error = %e, "Redis call failed; treating Redis as down for a moment");
        unavailable(e)
    }

    /// Redis answered: it is up again.
    fn answered(&self) {
        if self.down_until.load(Ordering::Relaxed) != 0 {
            self.down_until.store(0, Ordering::Relaxed);
            tracing::info!("Redis answers again");
        }
    }

    /// Awaits one Redis call with the deadline; a failure marks Redis down.
    async fn deadline<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(Ok(v)) => {
                self.answered();
                Ok(v)
            }
            Ok(Err(e)) => Err(self.failed(e)),
            Err(_) => Err(self.failed("timed out")),
        }
    }

    /// Runs one command with the deadline.
    ///
    /// Used for session reads and writes, which are safe to send twice: when a thread's
    /// connection turns out to be stale (Redis restarted since it was last used) the command
    /// is retried once on the fresh connection before Redis is treated as down.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        let mut retried = false;
        loop {
            match tokio::time::timeout(self.settings.timeout, cmd.query_async::<T>(&mut conn)).await
            {
                Ok(Ok(v)) => {
                    self.answered();
                    return Ok(v);
                }
                Ok(Err(e)) if !retried && e.is_connection_dropped() && !e.is_timeout() => {
                    retried = true;
                }
                Ok(Err(e)) => return Err(self.failed(e)),
                Err(_) => return Err(self.failed("timed out")),
            }
        }
    }

    /// A session's JSON, if stored.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn get_session(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(redis::cmd("GET").arg(format!("{SESSION_PREFIX}{id}")))
            .await
    }

    /// Stores a session.
    ///
    /// # Errors
    /// Redis cannot be reached; nothing was written.
    pub async fn put_session(&self, id: &str, json: &[u8]) -> Result<(), StoreError> {
        self.query::<()>(
            redis::cmd("SET")
                .arg(format!("{SESSION_PREFIX}{id}"))
                .arg(json),
        )
        .await
    }

    /// Deletes a session; true when it existed.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .query(redis::cmd("DEL").arg(format!("{SESSION_PREFIX}{id}")))
            .await?;
        Ok(n > 0)
    }

    /// Every stored session id (SCAN, on every master in cluster mode).
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn session_ids(&self) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{SESSION_PREFIX}*");
        let keys: Vec<String> = if self.settings.cluster {
            let mut conn = self.conn().await?;
            let mut cmd = redis::cmd("KEYS");
            cmd.arg(&pattern);
            // KEYS fans out to every master in cluster mode; SCAN cursors do not.
            self.deadline(cmd.query_async::<Vec<String>>(&mut conn))
                .await?
        } else {
            let mut out = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = self
                    .query(
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000),
                    )
                    .await?;
                out.extend(batch);
                if next == 0 {
                    break out;
                }
                cursor = next;
            }
        };
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(SESSION_PREFIX).map(str::to_owned))
            .collect())
    }

    /// Counter key names (rate log, rate buckets, quota): Tyk's, with the key id in a hash tag
    /// in cluster mode so every counter of a key lives in one slot and one script can touch
    /// them all.
    fn counter_names(&self, plan: &LimitPlan) -> (String, String, String) {
        let scoped = if plan.scope.is_empty() {
            String::new()
        } else {
            format!("{}-", plan.scope)
        };
        let id = if self.settings.cluster {
            format!("{{{}}}", plan.storage_id)
        } else {
            plan.storage_id.to_string()
        };
        let rate = format!("rate-limit-{scoped}{id}");
        (format!("{rate}:b"), rate, format!("quota-{scoped}{id}"))
    }

    fn next_salt(&self) -> u64 {
        self.salt.fetch_add(1, Ordering::Relaxed)
    }

    /// Checks the key's rate limit and quota in one round trip.
    ///
    /// # Errors
    /// [`Limited`] when refused or when Redis cannot be reached.
    pub async fn check_key(
        &self,
        plan: &LimitPlan,
        rate_on: bool,
        quota_on: bool,
        now_unix: i64,
    ) -> Result<Admitted, Limited> {
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
            return Ok(Admitted::default());
        }
        let (buckets_key, rate_key, quota_key) = self.counter_names(plan);
        let mut conn = self.conn().await.map_err(|_| Limited::Unavailable)?;
        if rate == 0 || rate > EXACT_LOG_LIMIT {
            let check = PipelinedCheck {
                buckets_key: &buckets_key,
                quota_key: &quota_key,
                rate,
                per_us: micros(plan.per),
                quota_max,
                renewal: plan.quota_renewal_rate.max(0),
            };
            return self.check_pipelined(&mut conn, &check, now_unix).await;
        }
        let mut inv = self.key_script.key(&rate_key);
        inv.key(&buckets_key)
            .key(&quota_key)
            .arg(rate)
            .arg(micros(plan.per))
            .arg(quota_max)
            .arg(plan.quota_renewal_rate.max(0))
            .arg(format!("{}-{}", std::process::id(), self.next_salt()));
        let reply: Vec<i64> = self
            .deadline(inv.invoke_async(&mut conn))
            .await
            .map_err(|_| Limited::Unavailable)?;
        let [status, rate_left, retry_us, quota_left, ttl_ms] = reply[..] else {
            return Err(Limited::Unavailable);
        };
        let renews_at = if ttl_ms > 0 {
            now_unix + ttl_ms.div_euclid(1000) + i64::from(ttl_ms % 1000 > 0)
        } else {
            0
        };
        let rate_decision = RateDecision {
            allowed: status != 2,
            remaining: u64::try_from(rate_left.max(0)).unwrap_or(0),
            retry_after_ns: u64::try_from(retry_us.max(0))
                .unwrap_or(0)
                .saturating_mul(1000),
        };
        let quota_decision = QuotaDecision {
            allowed: status != 3,
            remaining: quota_left.max(0),
            renews_at,
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

    /// The cheap path (no script): quota by `INCR` (exact: a request passes iff its increment
    /// is within the quota; refused ones are taken back) and the bucketed window by `HINCRBY`
    /// then summing the window's buckets (never over the rate). Bucket numbers come from this
    /// gateway's clock, so nodes' clocks must agree to well under one bucket (per/20).
    async fn check_pipelined(
        &self,
        conn: &mut Conn,
        c: &PipelinedCheck<'_>,
        now_unix: i64,
    ) -> Result<Admitted, Limited> {
        let now_us = tollgate_session::time::unix_now_micros();
        let width = c.per_us.div_ceil(BUCKETS).max(1);
        let cur = now_us / width;
        let first = now_us.saturating_sub(c.per_us) / width;
        let mut pipe = redis::pipe();
        if c.quota_max > 0 {
            if c.renewal > 0 {
                pipe.cmd("SET")
                    .arg(c.quota_key)
                    .arg(0)
                    .arg("EX")
                    .arg(c.renewal)
                    .arg("NX")
                    .ignore();
            }
            pipe.cmd("INCR").arg(c.quota_key);
            pipe.cmd("PTTL").arg(c.quota_key);
        }
        if c.rate > 0 {
            pipe.cmd("HINCRBY").arg(c.buckets_key).arg(cur).arg(1);
            let mut hmget = redis::cmd("HMGET");
            hmget.arg(c.buckets_key);
            for b in first..=cur {
                hmget.arg(b);
            }
            pipe.add_command(hmget);
        }
        let values: Vec<Value> = self
            .deadline(pipe.query_async(conn))
            .await
            .map_err(|_| Limited::Unavailable)?;
        let mut values = values.into_iter();
        let mut next_int = || {
            values
                .next()
                .and_then(|v| redis::from_redis_value::<i64>(v).ok())
        };
        let (used, ttl_ms) = if c.quota_max > 0 {
            (next_int().unwrap_or(i64::MAX), next_int().unwrap_or(-1))
        } else {
            (0, -1)
        };
        let (bucket_now, in_window) = if c.rate > 0 {
            let created = next_int().unwrap_or(0);
            let counts: Vec<Option<i64>> = values
                .next()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or_default();
            (created, counts.into_iter().flatten().sum::<i64>())
        } else {
            (0, 0)
        };
        let rate_i = i64::try_from(c.rate).unwrap_or(i64::MAX);
        let rate_ok = c.rate == 0 || in_window <= rate_i;
        let quota_ok = c.quota_max == 0 || used <= c.quota_max;
        let renews_at = if ttl_ms > 0 {
            now_unix + ttl_ms.div_euclid(1000) + i64::from(ttl_ms % 1000 > 0)
        } else {
            0
        };

        // Take back what a refused request counted; prune old buckets when one starts.
        let mut followup = redis::pipe();
        let mut any = false;
        if !(rate_ok && quota_ok) {
            if c.rate > 0 {
                followup
                    .cmd("HINCRBY")
                    .arg(c.buckets_key)
                    .arg(cur)
                    .arg(-1)
                    .ignore();
            }
            if c.quota_max > 0 {
                followup.cmd("DECR").arg(c.quota_key).ignore();
            }
            any = true;
        }
        if c.rate > 0 && bucket_now == 1 {
            let mut hdel = redis::cmd("HDEL");
            hdel.arg(c.buckets_key);
            for b in first.saturating_sub(BUCKETS + 1)..first {
                hdel.arg(b);
            }
            followup.add_command(hdel).ignore();
            followup
                .cmd("PEXPIRE")
                .arg(c.buckets_key)
                .arg((c.per_us + width).div_ceil(1000))
                .ignore();
            any = true;
        }
        if any && let Err(e) = followup.query_async::<()>(conn).await {
            tracing::warn!(error = %e, "taking back a refused request's counts failed");
        }

        let remaining = u64::try_from((rate_i - in_window).max(0)).unwrap_or(0);
        let rate_decision = RateDecision {
            allowed: rate_ok,
            remaining,
            retry_after_ns: if rate_ok {
                0
            } else {
                ((first + 1) * width + c.per_us)
                    .saturating_sub(now_us)
                    .saturating_mul(1000)
            },
        };
        let quota_decision = QuotaDecision {
            allowed: quota_ok,
            remaining: (c.quota_max - used).max(0),
            renews_at,
        };
        if !rate_ok {
            return Err(Limited::Rate(rate_decision));
        }
        if !quota_ok {
            return Err(Limited::Quota(quota_decision));
        }
        Ok(Admitted {
            rate: (c.rate > 0).then_some(rate_decision),
            quota: (c.quota_max > 0).then_some(quota_decision),
        })
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
        let log = if self.settings.cluster {
            format!("rate-limit-{{{id}}}")
        } else {
            format!("rate-limit-{id}")
        };
        let mut inv = self.api_script.key(&log);
        inv.key(format!("{log}:b"))
            .arg(whole(rate))
            .arg(micros(per))
            .arg(format!("{}-{}", std::process::id(), self.next_salt()));
        let reply: Vec<i64> = self.deadline(inv.invoke_async(&mut conn)).await?;
        let [allowed, left, retry_us] = reply[..] else {
            return Err(unavailable("unexpected script reply"));
        };
        Ok(RateDecision {
            allowed: allowed == 1,
            remaining: u64::try_from(left.max(0)).unwrap_or(0),
            retry_after_ns: u64::try_from(retry_us.max(0))
                .unwrap_or(0)
                .saturating_mul(1000),
        })
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

    /// Publishes a cluster notification.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn publish(&self, message: &str) -> Result<(), StoreError> {
        self.query::<i64>(redis::cmd("PUBLISH").arg(NOTIFICATION_CHANNEL).arg(message))
            .await
            .map(|_| ())
    }

    /// Appends analytics records to Tyk's list (one round trip), renewing its expiry.
    ///
    /// # Errors
    /// Redis cannot be reached; the batch was not written.
    pub async fn push_analytics(
        &self,
        list: &str,
        batch: Vec<Vec<u8>>,
        expire_secs: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("RPUSH").arg(list).arg(batch).ignore();
        if expire_secs > 0 {
            pipe.cmd("EXPIRE").arg(list).arg(expire_secs).ignore();
        }
        self.deadline(pipe.query_async::<()>(&mut conn)).await
    }

    /// A pub/sub connection subscribed to the notification channel.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn subscribe(&self) -> Result<redis::aio::PubSub, StoreError> {
        // Cluster nodes relay published messages to each other, so any reachable node will
        // do; try them in turn.
        let mut last = unavailable("no Redis address configured");
        for url in &self.settings.urls {
            match self.subscribe_to(url).await {
                Ok(pubsub) => return Ok(pubsub),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn subscribe_to(&self, url: &str) -> Result<redis::aio::PubSub, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let mut pubsub = tokio::time::timeout(self.settings.timeout, client.get_async_pubsub())
            .await
            .map_err(|_| unavailable("connecting timed out"))?
            .map_err(unavailable)?;
        pubsub
            .subscribe(NOTIFICATION_CHANNEL)
            .await
            .map_err(unavailable)?;
        Ok(pubsub)
    }

    /// A liveness probe for `/hello`: answers within 250 ms whatever Redis does (a health
    /// check must never hang), and at once while Redis is known to be down.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let limit = self.settings.timeout.min(Duration::from_millis(250));
        match tokio::time::timeout(limit, self.query::<String>(&redis::cmd("PING"))).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(unavailable("no answer to PING in time")),
        }
    }
}

/// One key's counters for [`RedisStore::check_pipelined`].
struct PipelinedCheck<'a> {
    buckets_key: &'a str,
    quota_key: &'a str,
    rate: u64,
    per_us: u64,
    quota_max: i64,
    renewal: i64,
}

fn micros(per: f64) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let us = (per * 1e6) as u64;
    us.max(1)
}
