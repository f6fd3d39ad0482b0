//! Per-API hourly aggregates kept in the gateway process, fed by the analytics writer (so the
//! request path never touches them), and the query behind `GET /tyk/analytics/aggregates`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use crate::Record;

/// Latency bucket upper bounds in milliseconds (the last bucket is open).
const LATENCY_MS: [i64; 16] = [
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 250, 500, 1000, 5000,
];
/// Hours kept (older ones are dropped).
const HOURS_KEPT: i64 = 24 * 7;
/// Distinct keys counted per API and hour (beyond it, requests still count, keys do not).
const KEYS_PER_HOUR: usize = 10_000;

#[derive(Debug, Default, Clone)]
struct Hour {
    requests: u64,
    by_class: [u64; 5],
    latency: [u64; LATENCY_MS.len() + 1],
    keys: HashMap<String, u64>,
}

/// How many recent records are kept.
pub const RECENT_RECORDS: usize = 1000;

/// Aggregates of this gateway's records, and its most recent records.
#[derive(Debug, Default)]
pub struct Aggregates {
    hours: Mutex<BTreeMap<(String, i64), Hour>>,
    recent: Mutex<std::collections::VecDeque<Record>>,
}

/// The answer to an aggregates query.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// The API asked about.
    pub api_id: String,
    /// Start of the range (Unix seconds, rounded down to the hour).
    pub from: i64,
    /// End of the range (Unix seconds, exclusive, rounded up to the hour).
    pub to: i64,
    /// Requests recorded.
    pub requests: u64,
    /// Requests by status class (`2xx` ...).
    pub status_classes: BTreeMap<String, u64>,
    /// 4xx plus 5xx.
    pub errors: u64,
    /// Latency percentiles in milliseconds (upper bound of the bucket that holds them).
    pub latency_ms: BTreeMap<String, i64>,
    /// The busiest keys (by hash), most requests first, at most ten.
    pub top_keys: Vec<KeyCount>,
}

/// One key's request count.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct KeyCount {
    /// The key's hash.
    pub key: String,
    /// Requests.
    pub requests: u64,
}

impl Aggregates {
    /// The most recent records of `api_id` (all APIs when `None`), newest first.
    pub fn recent(&self, api_id: Option<&str>, limit: usize) -> Vec<Record> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent
            .iter()
            .rev()
            .filter(|r| api_id.is_none_or(|a| &*r.api_id == a))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Adds one record.
    pub fn add(&self, r: &Record) {
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() >= RECENT_RECORDS {
                recent.pop_front();
            }
            recent.push_back(r.clone());
        }
        let hour = r.timestamp.secs.div_euclid(3600) * 3600;
        let mut hours = self.hours.lock().unwrap_or_else(PoisonError::into_inner);
        let h = hours.entry((r.api_id.to_string(), hour)).or_default();
        h.requests += 1;
        let class = usize::try_from((r.response_code / 100).clamp(1, 5) - 1).unwrap_or(0);
        h.by_class[class] += 1;
        let bucket = LATENCY_MS
            .iter()
            .position(|b| r.request_time <= *b)
            .unwrap_or(LATENCY_MS.len());
        h.latency[bucket] += 1;
        if !r.api_key.is_empty()
            && (h.keys.len() < KEYS_PER_HOUR || h.keys.contains_key(&r.api_key))
        {
            *h.keys.entry(r.api_key.clone()).or_default() += 1;
        }
        // Forget hours past the retention window.
        let oldest = hour - HOURS_KEPT * 3600;
        hours.retain(|(_, start), _| *start >= oldest);
    }

    /// Aggregates of `api_id` over `[from, to)` (Unix seconds, widened to whole hours).
    pub fn summary(&self, api_id: &str, from: i64, to: i64) -> Summary {
        let from = from.div_euclid(3600) * 3600;
        let to = (to + 3599).div_euclid(3600) * 3600;
        let hours = self.hours.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = Hour::default();
        for ((_, _), h) in hours.range((api_id.to_owned(), from)..(api_id.to_owned(), to)) {
            total.requests += h.requests;
            for (a, b) in total.by_class.iter_mut().zip(h.by_class) {
                *a += b;
            }
            for (a, b) in total.latency.iter_mut().zip(h.latency) {
                *a += b;
            }
            for (k, n) in &h.keys {
                *total.keys.entry(k.clone()).or_default() += n;
            }
        }
        drop(hours);
        let status_classes = total
            .by_class
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("{}xx", i + 1), *n))
            .collect();
        let percentile = |p: u64| {
            if total.requests == 0 {
                return 0;
            }
            let rank = (total.requests * p).div_ceil(100);
            let mut seen = 0;
            for (i, n) in total.latency.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return LATENCY_MS.get(i).copied().unwrap_or(i64::MAX);
                }
            }
            i64::MAX
        };
        let latency_ms = [("p50", 50), ("p95", 95), ("p99", 99)]
            .into_iter()
            .map(|(name, p)| (name.to_owned(), percentile(p)))
            .collect();
        let mut top_keys: Vec<KeyCount> = total
            .keys
            .into_iter()
            .map(|(key, requests)| KeyCount { key, requests })
            .collect();
        top_keys.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.key.cmp(&b.key)));
        top_keys.truncate(10);
        Summary {
            api_id: api_id.to_owned(),
            from,
            to,
            requests: total.requests,
            errors: total.by_class[3] + total.by_class[4],
            status_classes,
            latency_ms,
            top_keys,
        }
    }
}
