//! The Redis backend: sessions, counters and cluster notifications in a Redis shared by every
//! gateway node (standalone or Redis Cluster), under Tyk's key names so a Tyk node and a
//! Tollgate node can share one Redis.
//!
//! Every call has a deadline. After a failure the backend stays "down" for `DOWN_FOR` and
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

/// Gives back what refused requests of a batch added to a quota counter, unless the counter
/// has since ended its period (expired, and perhaps been started again by another node): a
/// plain `DECRBY` would then make the new period start below zero. The counter's own expiry
/// tells the periods apart: within one period its PTTL only shrinks, so a PTTL above the one
/// the count saw, a counter without expiry that had one, or no counter, is another period.
///
/// KEYS: quota counter. ARGV: amount, PTTL (ms) the count saw (-1: none yet). Returns 1 if
/// given back.
const QUOTA_TAKE_BACK_SCRIPT: &str = r"
local ttl = redis.call('PTTL', KEYS[1])
local seen = tonumber(ARGV[2])
if ttl == -2 then return 0 end
if seen < 0 or (ttl >= 0 and ttl <= seen) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return 1
end
return 0
";

/// The command that runs [`QUOTA_TAKE_BACK_SCRIPT`]. Sent as `EVAL` (Redis keeps it compiled
/// by its digest): it runs only when a batch refused requests, never on the usual path, and
/// needs no `NOSCRIPT` retry inside a pipeline.
fn quota_take_back(quota_key: &str, amount: i64, seen_ttl_ms: i64) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(QUOTA_TAKE_BACK_SCRIPT)
        .arg(1)
        .arg(quota_key)
        .arg(amount)
        .arg(seen_ttl_ms.max(-1));
    cmd
}

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
    /// Above [`EXACT_LOG_LIMIT`] (or with a quota alone) the check needs no script, and on a
    /// gateway worker thread concurrent requests of one key share the round trip (see
    /// [`crate::batching`]).
    ///
    /// # Errors
    /// [`Limited`] when refused or when Redis cannot be reached.
    pub async fn check_key(
        self: &Arc<Self>,
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
        if rate == 0 || rate > EXACT_LOG_LIMIT {
            let params = CountParams {
                rate,
                per_us: micros(plan.per),
                quota_max,
                renewal: plan.quota_renewal_rate.max(0),
            };
            if let Some(answer) = crate::batching::join(self, plan, params) {
                return answer.await;
            }
            let spec = self.count_spec(plan, params);
            let (counted, followup) = self
                .count(&spec, 1, now_unix, &mut WindowCache::default())
                .await
                .map_err(|_| Limited::Unavailable)?;
            self.follow_up(followup).await;
            return counted.answer(0);
        }
        let (buckets_key, rate_key, quota_key) = self.counter_names(plan);
        let mut conn = self.conn().await.map_err(|_| Limited::Unavailable)?;
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

    pub(crate) fn id(&self) -> u64 {
        self.id
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
            let used = next_int().ok_or_else(|| unavailable("unexpected INCRBY reply"))?;
            (used, next_int().unwrap_or(-1))
        } else {
            (0, -1)
        };
        let (bucket_now, in_window) = if p.rate > 0 {
            let bucket_now = next_int().ok_or_else(|| unavailable("unexpected HINCRBY reply"))?;
            let older_and_previous = if cur == first {
                0
            } else {
                // first..=cur-1 (all read), or just cur-1 (the older ones known).
                let counts: Vec<Option<i64>> = values
                    .next()
                    .and_then(|v| redis::from_redis_value(v).ok())
                    .ok_or_else(|| unavailable("unexpected HMGET reply"))?;
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
                .cmd("EXPIRE")
                .arg(&spec.quota_key)
                .arg(p.renewal)
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
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let us = (per * 1e6) as u64;
    us.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(rate: u64, quota_max: i64) -> CountParams {
        CountParams {
            rate,
            per_us: 60_000_000,
            quota_max,
            renewal: 3600,
        }
    }

    /// The batch a count of n found, as the n requests would have seen it one by one.
    fn counted(p: CountParams, n: i64, window_before: i64, used_before: i64) -> Counted {
        let rate_i = i64::try_from(p.rate).unwrap();
        Counted {
            params: p,
            rate_fits: if p.rate > 0 {
                (rate_i - window_before).clamp(0, n)
            } else {
                n
            },
            quota_fits: if p.quota_max > 0 {
                (p.quota_max - used_before).clamp(0, n)
            } else {
                n
            },
            window_before,
            used_before,
            renews_at: 1000,
            retry_after_ns: 7,
        }
    }

    #[test]
    fn a_batch_admits_the_first_requests_that_fit_both_limits() {
        // Rate: 3 slots left; quota: 5 left; a batch of 6.
        let c = counted(params(10, 100), 6, 7, 95);
        let answers: Vec<_> = (0..6).map(|i| c.answer(i)).collect();
        for (i, a) in answers.iter().take(3).enumerate() {
            let a = a.as_ref().unwrap();
            let i = i64::try_from(i).unwrap();
            assert_eq!(
                a.rate.unwrap().remaining,
                u64::try_from(10 - (7 + i + 1)).unwrap()
            );
            assert_eq!(a.quota.unwrap().remaining, 100 - (95 + i + 1));
        }
        for a in &answers[3..] {
            let Err(Limited::Rate(d)) = a else {
                panic!("want a rate refusal, got {a:?}")
            };
            assert_eq!((d.allowed, d.remaining, d.retry_after_ns), (false, 0, 7));
        }
    }

    #[test]
    fn requests_past_the_quota_but_within_the_rate_are_quota_refusals() {
        // Quota: 2 left; rate: plenty; a batch of 4.
        let c = counted(params(1000, 10), 4, 0, 8);
        assert!(c.answer(0).is_ok());
        assert_eq!(c.answer(1).unwrap().quota.unwrap().remaining, 0);
        for i in 2..4 {
            let Err(Limited::Quota(q)) = c.answer(i) else {
                panic!("want a quota refusal")
            };
            assert_eq!((q.allowed, q.remaining, q.renews_at), (false, 0, 1000));
        }
    }

    #[test]
    fn a_counter_already_past_its_limit_refuses_the_whole_batch() {
        // Other nodes' refused requests may have pushed the count past the limit.
        let c = counted(params(0, 10), 3, 0, 12);
        assert!((0..3).all(|i| matches!(c.answer(i), Err(Limited::Quota(_)))));
        let c = counted(params(5, 0), 3, 9, 0);
        assert!((0..3).all(|i| matches!(c.answer(i), Err(Limited::Rate(_)))));
    }

    #[test]
    fn only_the_limits_that_apply_are_reported() {
        let c = counted(params(0, 10), 1, 0, 0);
        let a = c.answer(0).unwrap();
        assert!(a.rate.is_none() && a.quota.is_some());
        let c = counted(params(10, 0), 1, 0, 0);
        let a = c.answer(0).unwrap();
        assert!(a.rate.is_some() && a.quota.is_none());
    }

    #[test]
    fn window_cache_answers_only_for_the_same_window() {
        let mut w = WindowCache::default();
        assert_eq!(w.older_sum(10, 30), None);
        w.remember(10, 30, 42);
        assert_eq!(w.older_sum(10, 30), Some(42));
        assert_eq!(w.older_sum(11, 30), None);
        assert_eq!(w.older_sum(11, 31), None);
    }

    #[test]
    fn renewal_time_rounds_up_to_the_second() {
        assert_eq!(renews_at(100, 1), 101);
        assert_eq!(renews_at(100, 1000), 101);
        assert_eq!(renews_at(100, 1001), 102);
        assert_eq!(renews_at(100, -1), 0);
        assert_eq!(renews_at(100, -2), 0);
    }

    /// A store on a private redis-server, and a plain connection to look at its counters.
    async fn private_redis() -> (
        tollgate_testkit::redis::RedisServer,
        Arc<RedisStore>,
        redis::aio::MultiplexedConnection,
    ) {
        let server = tollgate_testkit::redis::RedisServer::start().await;
        let url = format!("redis://{}", server.addr());
        let store = RedisStore::new(RedisSettings {
            urls: vec![url.clone()],
            cluster: false,
            timeout: Duration::from_secs(2),
            node_secret: String::new(),
            allow_insecure: false,
        })
        .unwrap();
        let conn = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        (server, store, conn)
    }

    async fn run<T: redis::FromRedisValue>(
        conn: &mut redis::aio::MultiplexedConnection,
        cmd: &Cmd,
    ) -> T {
        cmd.query_async(conn).await.unwrap()
    }

    async fn counter(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<i64> {
        run(conn, redis::cmd("GET").arg(key)).await
    }

    #[tokio::test]
    async fn a_quota_take_back_lands_only_in_the_period_it_was_counted_in() {
        let (_server, _store, mut conn) = private_redis().await;
        let k = "quota-k";
        let set = |v: i64, px: Option<i64>| {
            let mut c = redis::cmd("SET");
            c.arg(k).arg(v);
            if let Some(px) = px {
                c.arg("PX").arg(px);
            }
            c
        };
        // Same period, counted with its expiry: given back.
        run::<()>(&mut conn, &set(10, Some(60_000))).await;
        assert_eq!(
            run::<i64>(&mut conn, &quota_take_back(k, 2, 60_000)).await,
            1
        );
        assert_eq!(counter(&mut conn, k).await, Some(8));
        // Same period, counted before any node had set its expiry: given back.
        run::<()>(&mut conn, &set(5, None)).await;
        assert_eq!(run::<i64>(&mut conn, &quota_take_back(k, 1, -1)).await, 1);
        assert_eq!(counter(&mut conn, k).await, Some(4));
        // The period ended and no request has started the next: nothing made below zero.
        run::<()>(&mut conn, redis::cmd("DEL").arg(k)).await;
        assert_eq!(
            run::<i64>(&mut conn, &quota_take_back(k, 3, 60_000)).await,
            0
        );
        assert_eq!(counter(&mut conn, k).await, None);
        // The next period was started by another node, its expiry not set yet.
        run::<()>(&mut conn, &set(1, None)).await;
        assert_eq!(
            run::<i64>(&mut conn, &quota_take_back(k, 3, 5_000)).await,
            0
        );
        assert_eq!(counter(&mut conn, k).await, Some(1));
        // The next period with its expiry: more time left than the count saw.
        run::<()>(&mut conn, &set(1, Some(60_000))).await;
        assert_eq!(
            run::<i64>(&mut conn, &quota_take_back(k, 3, 5_000)).await,
            0
        );
        assert_eq!(counter(&mut conn, k).await, Some(1));
    }

    #[tokio::test]
    async fn a_batch_refused_by_the_quota_gives_back_only_what_it_counted_in_its_own_period() {
        let (_server, store, mut conn) = private_redis().await;
        let spec = CountSpec {
            buckets_key: "rate-limit-k:b".to_owned(),
            quota_key: "quota-k".to_owned(),
            params: params(0, 3),
        };
        let now = tollgate_session::time::unix_now();
        // Two of three used; a batch of three: one admitted, two refused and given back.
        run::<()>(
            &mut conn,
            redis::cmd("SET").arg("quota-k").arg(2).arg("EX").arg(3600),
        )
        .await;
        let (counted, followup) = store
            .count(&spec, 3, now, &mut WindowCache::default())
            .await
            .unwrap();
        assert!(counted.answer(0).is_ok());
        assert!(counted.answer(1).is_err() && counted.answer(2).is_err());
        assert_eq!(counter(&mut conn, "quota-k").await, Some(5));
        store.follow_up(followup).await;
        assert_eq!(counter(&mut conn, "quota-k").await, Some(3));

        // The same near the end of a period, which ends before the take-back: another node
        // starts the next one with a request of its own, and that period keeps it.
        run::<()>(
            &mut conn,
            redis::cmd("SET")
                .arg("quota-k")
                .arg(2)
                .arg("PX")
                .arg(10_000),
        )
        .await;
        let (_, followup) = store
            .count(&spec, 3, now, &mut WindowCache::default())
            .await
            .unwrap();
        run::<()>(
            &mut conn,
            redis::cmd("SET").arg("quota-k").arg(1).arg("EX").arg(3600),
        )
        .await;
        store.follow_up(followup).await;
        assert_eq!(counter(&mut conn, "quota-k").await, Some(1));
    }
}
