//! The Lua scripts and script-like commands of the shared counters. Their text is what goes on
//! the wire: the numbers in them are the constants below, written out.

use redis::Cmd;

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
pub(super) const KEY_SCRIPT: &str = concat!(
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
pub(super) const API_SCRIPT: &str = concat!(
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
pub(super) fn quota_take_back(quota_key: &str, amount: i64, seen_ttl_ms: i64) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(QUOTA_TAKE_BACK_SCRIPT)
        .arg(1)
        .arg(quota_key)
        .arg(amount)
        .arg(seen_ttl_ms.max(-1));
    cmd
}

/// Starts a quota counter's period: gives it its renewal expiry unless it has one already.
/// Every node that saw the new counter without an expiry sends this; a plain `EXPIRE` from
/// the second one would push the period's end back up, and a take-back counted in between
/// would then read the higher PTTL as another period and give nothing back.
///
/// KEYS: quota counter. ARGV: renewal (s).
const QUOTA_START_PERIOD_SCRIPT: &str = r"
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 0
";

/// The command that runs [`QUOTA_START_PERIOD_SCRIPT`] (once per period and node at most, so
/// sent as `EVAL` like the take-back).
pub(super) fn quota_start_period(quota_key: &str, renewal_secs: i64) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(QUOTA_START_PERIOD_SCRIPT)
        .arg(1)
        .arg(quota_key)
        .arg(renewal_secs);
    cmd
}
