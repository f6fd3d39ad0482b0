//! Analytics records in Tyk's format, and the bounded queue between the request path and the
//! sinks.
//!
//! A record is a msgpack map keyed by Tyk's Go field names (`Method`, `APIKey`, `TimeStamp`,
//! ...), timestamps as `[unix seconds, nanoseconds]` as Tyk's msgpack library writes them, so
//! an existing Tyk Pump reading the Redis list `analytics-tyk-system-analytics` decodes
//! Tollgate's records unchanged.
//!
//! Recording never blocks a request: [`AnalyticsQueue::record`] puts the record in a bounded
//! queue or, when the writer has fallen behind and the queue is full, drops it and counts the
//! drop. [`run_writer`] drains the queue in batches (every 200 ms, or sooner when a batch is
//! full) into a [`Sink`].

mod aggregates;
pub mod pg;
mod uptime;

pub use aggregates::{Aggregates, KeyCount, RECENT_RECORDS, Summary};
pub use uptime::{TCP_ERROR_CODE, UPTIME_REDIS_LIST, UptimeRecord};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use tokio::sync::mpsc;

/// Tyk's analytics list in Redis.
pub const REDIS_LIST: &str = tollgate_session::keyspace::ANALYTICS_LIST;
/// Batches are written at least this often.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Largest batch written at once.
pub const MAX_BATCH: usize = 1000;

/// A point in time, encoded as Tyk's msgpack library encodes `time.Time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Unix seconds.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.secs, self.nanos).serialize(s)
    }
}

fn shared_str<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

fn shared_strs<S: Serializer>(v: &[Arc<str>], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq as _;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for t in v {
        seq.serialize_element(&**t)?;
    }
    seq.end()
}

/// The UTC calendar fields Tyk writes next to a record's time, on request and uptime records
/// alike (Pump's aggregations group by them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Calendar {
    /// Day of month (UTC).
    #[serde(rename = "Day")]
    pub day: i64,
    /// Month 1-12 (UTC).
    #[serde(rename = "Month")]
    pub month: i64,
    /// Year (UTC).
    #[serde(rename = "Year")]
    pub year: i64,
    /// Hour (UTC).
    #[serde(rename = "Hour")]
    pub hour: i64,
}

impl Calendar {
    /// The calendar of Unix second `secs`.
    pub fn utc(secs: i64) -> Self {
        let (year, month, day, secs_of_day) = tollgate_session::time::civil_utc(secs);
        Self {
            day,
            month,
            year,
            hour: secs_of_day / 3600,
        }
    }
}

/// Latencies in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Gateway total.
    #[serde(rename = "Total")]
    pub total: i64,
    /// Upstream part (0 when the request never reached one).
    #[serde(rename = "Upstream")]
    pub upstream: i64,
}

/// Tyk's (empty) network statistics: zero for HTTP.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Network {
    /// Always 0.
    #[serde(rename = "OpenConnections")]
    pub open_connections: i64,
    /// Always 0.
    #[serde(rename = "ClosedConnection")]
    pub closed_connection: i64,
    /// Always 0.
    #[serde(rename = "BytesIn")]
    pub bytes_in: i64,
    /// Always 0.
    #[serde(rename = "BytesOut")]
    pub bytes_out: i64,
}

/// One request, as Tyk records it.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// HTTP method.
    #[serde(rename = "Method")]
    pub method: String,
    /// Upstream host.
    #[serde(rename = "Host", serialize_with = "shared_str")]
    pub host: Arc<str>,
    /// Request path with the listen path stripped when the API strips it.
    #[serde(rename = "Path")]
    pub path: String,
    /// Request path.
    #[serde(rename = "RawPath")]
    pub raw_path: String,
    /// Request `Content-Length` (0 when absent).
    #[serde(rename = "ContentLength")]
    pub content_length: i64,
    /// `User-Agent`.
    #[serde(rename = "UserAgent")]
    pub user_agent: String,
    /// The calendar of `timestamp`.
    #[serde(flatten)]
    pub calendar: Calendar,
    /// Status sent to the client.
    #[serde(rename = "ResponseCode")]
    pub response_code: i64,
    /// The key's hash (never the raw key); empty for keyless requests.
    #[serde(rename = "APIKey")]
    pub api_key: String,
    /// When the request arrived.
    #[serde(rename = "TimeStamp")]
    pub timestamp: Timestamp,
    /// Version name (`Non Versioned` for a not-versioned API, as Tyk writes).
    #[serde(rename = "APIVersion", serialize_with = "shared_str")]
    pub api_version: Arc<str>,
    /// API name.
    #[serde(rename = "APIName", serialize_with = "shared_str")]
    pub api_name: Arc<str>,
    /// API id.
    #[serde(rename = "APIID", serialize_with = "shared_str")]
    pub api_id: Arc<str>,
    /// Org id.
    #[serde(rename = "OrgID", serialize_with = "shared_str")]
    pub org_id: Arc<str>,
    /// OAuth client (unused: empty).
    #[serde(rename = "OauthID")]
    pub oauth_id: &'static str,
    /// Total latency in milliseconds.
    #[serde(rename = "RequestTime")]
    pub request_time: i64,
    /// Base64 request (detailed recording; not recorded).
    #[serde(rename = "RawRequest")]
    pub raw_request: &'static str,
    /// Base64 response (detailed recording; not recorded).
    #[serde(rename = "RawResponse")]
    pub raw_response: &'static str,
    /// Client IP.
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    /// Zero network statistics.
    #[serde(rename = "Network")]
    pub network: Network,
    /// Latencies.
    #[serde(rename = "Latency")]
    pub latency: Latency,
    /// Tags: the key's, then `key-<hash>`, `org-<org>`, `api-<api>`.
    #[serde(rename = "Tags", serialize_with = "shared_strs")]
    pub tags: Vec<Arc<str>>,
    /// The key's alias.
    #[serde(rename = "Alias")]
    pub alias: String,
    /// Endpoint tracking (not used).
    #[serde(rename = "TrackPath")]
    pub track_path: bool,
    /// When the record may be purged.
    #[serde(rename = "ExpireAt")]
    pub expire_at: Timestamp,
}

impl Record {
    /// Fills the calendar fields from `timestamp` (UTC).
    pub fn set_calendar(&mut self) {
        self.calendar = Calendar::utc(self.timestamp.secs);
    }

    /// The msgpack bytes Tyk Pump reads.
    ///
    /// # Errors
    /// Encoding failed (it does not for well-formed records).
    pub fn to_msgpack(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(self)
    }
}

/// Why a sink did not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// No connection to the analytics database within the deadline.
    #[error("connecting to the analytics database timed out")]
    ConnectTimedOut,
    /// PostgreSQL refused the connection, the table or the rows.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// A sink defined elsewhere (the Redis list, in the binary) failed.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Where batches of records go.
pub trait Sink: Send + 'static {
    /// Writes one batch.
    ///
    /// # Errors
    /// The sink is unavailable; the batch is dropped and counted.
    fn write(
        &self,
        batch: &[Record],
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send;
}

/// The msgpack encoding of a batch, for sinks that store Tyk's wire format.
pub fn encode_batch(batch: &[Record]) -> Vec<Vec<u8>> {
    batch.iter().filter_map(|r| r.to_msgpack().ok()).collect()
}

/// Records a worker collects before handing them to the writer in one go.
pub const LOCAL_BATCH: usize = 64;

/// The bounded queue between the workers and the writer. Workers hand over batches (see
/// [`LocalBatch`]) so the request path touches the shared queue once per batch, not per record.
#[derive(Debug)]
pub struct AnalyticsQueue {
    tx: mpsc::Sender<Vec<Record>>,
    dropped: AtomicU64,
    written: AtomicU64,
    queued: AtomicU64,
    aggregates: Aggregates,
}

impl AnalyticsQueue {
    /// A queue holding about `capacity` records and the receiving end for [`run_writer`].
    pub fn new(capacity: usize) -> (Arc<Self>, mpsc::Receiver<Vec<Record>>) {
        let (tx, rx) = mpsc::channel((capacity / LOCAL_BATCH).max(4));
        (
            Arc::new(Self {
                tx,
                dropped: AtomicU64::new(0),
                written: AtomicU64::new(0),
                queued: AtomicU64::new(0),
                aggregates: Aggregates::default(),
            }),
            rx,
        )
    }

    /// Queues a batch without waiting; a full queue drops it (counted).
    pub fn send(&self, batch: Vec<Record>) {
        let n = batch.len() as u64;
        if n == 0 {
            return;
        }
        if self.tx.try_send(batch).is_err() {
            self.dropped.fetch_add(n, Ordering::Relaxed);
        } else {
            self.queued.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Queues one record (tests and low-volume callers; workers use [`LocalBatch`]).
    pub fn record(&self, record: Record) {
        self.send(vec![record]);
    }

    /// Records dropped because the queue was full or a sink failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written to the sink.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// This gateway's per-API hourly aggregates.
    pub fn aggregates(&self) -> &Aggregates {
        &self.aggregates
    }

    /// Records handed to the writer and not yet written or dropped.
    pub fn depth(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }
}

/// One worker's pending records: filled on the request path without touching anything shared,
/// handed to the queue every [`LOCAL_BATCH`] records and by the worker's flush timer.
#[derive(Debug)]
pub struct LocalBatch {
    queue: Arc<AnalyticsQueue>,
    pending: std::cell::RefCell<Vec<Record>>,
}

impl LocalBatch {
    /// A batch feeding `queue`.
    pub fn new(queue: Arc<AnalyticsQueue>) -> Self {
        Self {
            queue,
            pending: std::cell::RefCell::new(Vec::with_capacity(LOCAL_BATCH)),
        }
    }

    /// Adds a record; hands the batch over once it is full.
    pub fn record(&self, record: Record) {
        let full = {
            let mut pending = self.pending.borrow_mut();
            pending.push(record);
            pending.len() >= LOCAL_BATCH
        };
        if full {
            self.flush();
        }
    }

    /// Hands over whatever is pending.
    pub fn flush(&self) {
        let batch = std::mem::replace(
            &mut *self.pending.borrow_mut(),
            Vec::with_capacity(LOCAL_BATCH),
        );
        self.queue.send(batch);
    }
}

/// Drains the queue into `sink` until every sender is gone: a write at least every
/// [`FLUSH_INTERVAL`], or as soon as [`MAX_BATCH`] records are waiting.
pub async fn run_writer(
    queue: Arc<AnalyticsQueue>,
    mut rx: mpsc::Receiver<Vec<Record>>,
    sink: impl Sink,
) {
    let mut batch: Vec<Record> = Vec::with_capacity(MAX_BATCH);
    loop {
        let deadline = tokio::time::sleep(FLUSH_INTERVAL);
        tokio::pin!(deadline);
        let open = loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(mut records) => {
                        batch.append(&mut records);
                        if batch.len() >= MAX_BATCH {
                            break true;
                        }
                    }
                    None => break false,
                },
                () = &mut deadline => break true,
            }
        };
        if !batch.is_empty() {
            let n = batch.len() as u64;
            queue.queued.fetch_sub(
                n.min(queue.queued.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            for r in &batch {
                queue.aggregates.add(r);
            }
            let result = sink.write(&batch).await;
            batch.clear();
            match result {
                Ok(()) => {
                    queue.written.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    queue.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(error = %e, records = n, "analytics sink failed; records dropped");
                }
            }
        }
        if !open {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut r = Record {
            method: "GET".into(),
            host: "up:80".into(),
            path: "/x".into(),
            raw_path: "/api/x".into(),
            content_length: 0,
            user_agent: "ua".into(),
            calendar: Calendar::default(),
            response_code: 200,
            api_key: "h".into(),
            timestamp: Timestamp {
                secs: 1_723_203_634,
                nanos: 5,
            },
            api_version: "Non Versioned".into(),
            api_name: "A".into(),
            api_id: "a".into(),
            org_id: "o".into(),
            oauth_id: "",
            request_time: 3,
            raw_request: "",
            raw_response: "",
            ip_address: "127.0.0.1".into(),
            network: Network::default(),
            latency: Latency {
                total: 3,
                upstream: 2,
            },
            tags: vec!["key-h".into()],
            alias: String::new(),
            track_path: false,
            expire_at: Timestamp { secs: 1, nanos: 0 },
        };
        r.set_calendar();
        r
    }

    #[test]
    fn msgpack_uses_go_field_names_and_time_pairs() {
        let bytes = record().to_msgpack().unwrap();
        let v = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        let map = v.as_map().unwrap();
        let get = |k: &str| {
            map.iter()
                .find(|(key, _)| key.as_str() == Some(k))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("Method").as_str(), Some("GET"));
        assert_eq!(get("ResponseCode").as_i64(), Some(200));
        assert_eq!(get("APIID").as_str(), Some("a"));
        let ts = get("TimeStamp");
        let ts = ts.as_array().unwrap();
        assert_eq!(ts[0].as_i64(), Some(1_723_203_634));
        assert_eq!(ts[1].as_i64(), Some(5));
        assert_eq!(get("Latency").as_map().unwrap().len(), 2);
        assert_eq!(get("Month").as_i64(), Some(8));
        assert_eq!(get("Day").as_i64(), Some(9));
        assert_eq!(get("Year").as_i64(), Some(2024));
        assert_eq!(get("Hour").as_i64(), Some(11));
    }

    struct Collect(Arc<std::sync::Mutex<Vec<Vec<u8>>>>, bool);

    impl Sink for Collect {
        async fn write(&self, batch: &[Record]) -> Result<(), SinkError> {
            if self.1 {
                return Err(SinkError::Other("down".into()));
            }
            self.0.lock().unwrap().extend(encode_batch(batch));
            Ok(())
        }
    }

    #[tokio::test]
    async fn full_queue_drops_and_counts_and_writer_flushes() {
        // Room for 4 batches: the fifth and sixth are dropped and counted.
        let (q, rx) = AnalyticsQueue::new(2);
        for _ in 0..6 {
            q.record(record());
        }
        assert_eq!(q.dropped(), 2);
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = tokio::spawn(run_writer(
            Arc::clone(&q),
            rx,
            Collect(Arc::clone(&out), false),
        ));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(out.lock().unwrap().len(), 4);
        assert_eq!(q.written(), 4);
        assert_eq!(q.depth(), 0);
        writer.abort();
    }

    #[tokio::test]
    async fn local_batches_hand_over_when_full_or_flushed() {
        let (q, mut rx) = AnalyticsQueue::new(10_000);
        let local = LocalBatch::new(Arc::clone(&q));
        for _ in 0..LOCAL_BATCH + 3 {
            local.record(record());
        }
        assert_eq!(rx.try_recv().unwrap().len(), LOCAL_BATCH);
        assert!(
            rx.try_recv().is_err(),
            "the 3 extra records wait for a flush"
        );
        local.flush();
        assert_eq!(rx.try_recv().unwrap().len(), 3);
    }

    #[test]
    fn aggregates_count_classes_latency_and_keys() {
        let agg = Aggregates::default();
        for (code, ms, key) in [
            (200, 3, "k1"),
            (200, 40, "k1"),
            (404, 1, "k2"),
            (503, 900, ""),
        ] {
            let mut r = record();
            r.response_code = code;
            r.request_time = ms;
            r.api_key = key.into();
            agg.add(&r);
        }
        let s = agg.summary("a", 1_723_200_000, 1_723_210_000);
        assert_eq!(s.requests, 4);
        assert_eq!(s.errors, 2);
        assert_eq!(s.status_classes["2xx"], 2);
        assert_eq!(s.latency_ms["p50"], 3);
        assert_eq!(s.latency_ms["p99"], 1000);
        assert_eq!(
            s.top_keys[0],
            KeyCount {
                key: "k1".into(),
                requests: 2
            }
        );
        let recent = agg.recent(Some("a"), 2);
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].response_code, 503, "newest first");
        assert!(agg.recent(Some("other"), 10).is_empty());
        assert_eq!(agg.summary("a", 0, 1000).requests, 0, "outside the range");
        assert_eq!(
            agg.summary("other", 1_723_200_000, 1_723_210_000).requests,
            0
        );
    }

    #[tokio::test]
    async fn a_failing_sink_counts_drops() {
        let (q, rx) = AnalyticsQueue::new(10);
        q.record(record());
        let writer = tokio::spawn(run_writer(
            Arc::clone(&q),
            rx,
            Collect(Arc::default(), true),
        ));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(q.dropped(), 1);
        writer.abort();
    }
}
