//! Prometheus metrics, kept per worker thread so recording never contends across cores: each
//! worker has its own table behind its own (uncontended) lock; a scrape sums the tables.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Latency histogram bounds in seconds.
const BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Why the gateway refused a request itself: the refusal's class, never its message.
pub use crate::refusal::RefusalClass as Rejection;

const REJECTIONS: [Rejection; 4] = [
    Rejection::Auth,
    Rejection::Rate,
    Rejection::Quota,
    Rejection::Other,
];

fn reason_label(r: Rejection) -> &'static str {
    match r {
        Rejection::Auth => "auth",
        Rejection::Rate => "rate",
        Rejection::Quota => "quota",
        Rejection::Other => "other",
    }
}

/// What one request contributes.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Response status.
    pub status: u16,
    /// Time to the response head.
    pub total: Duration,
    /// Time the upstream took, when the request reached one.
    pub upstream: Option<Duration>,
    /// Set when the gateway refused the request.
    pub rejection: Option<Rejection>,
    /// Set when the upstream could not be reached or did not answer in time.
    pub upstream_error: bool,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BOUNDS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, bound) in self.buckets.iter_mut().zip(BOUNDS) {
            if s <= bound {
                *b += 1;
            }
        }
        self.count += 1;
        self.sum += s;
    }

    fn merge(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }
}

#[derive(Debug, Default, Clone)]
struct ApiMetrics {
    by_class: [u64; 5],
    rejected: [u64; 4],
    upstream_errors: u64,
    total: Histogram,
    upstream: Histogram,
}

impl ApiMetrics {
    fn record(&mut self, s: &Sample) {
        let class = usize::from((s.status / 100).clamp(1, 5)) - 1;
        self.by_class[class] += 1;
        if let Some(r) = s.rejection {
            self.rejected[r as usize] += 1;
        }
        if s.upstream_error {
            self.upstream_errors += 1;
        }
        self.total.observe(s.total);
        if let Some(u) = s.upstream {
            self.upstream.observe(u);
        }
    }

    fn merge(&mut self, o: &Self) {
        for (a, b) in self.by_class.iter_mut().zip(o.by_class) {
            *a += b;
        }
        for (a, b) in self.rejected.iter_mut().zip(o.rejected) {
            *a += b;
        }
        self.upstream_errors += o.upstream_errors;
        self.total.merge(&o.total);
        self.upstream.merge(&o.upstream);
    }
}

/// One worker's table. Only that worker writes it.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    apis: Mutex<HashMap<Arc<str>, ApiMetrics>>,
}

impl WorkerMetrics {
    /// Records one request; `api` is empty for requests that matched no API.
    pub fn record(&self, api: &Arc<str>, sample: &Sample) {
        let mut apis = self.apis.lock().unwrap_or_else(PoisonError::into_inner);
        match apis.get_mut(api) {
            Some(m) => m.record(sample),
            None => apis.entry(Arc::clone(api)).or_default().record(sample),
        }
    }
}

/// Every worker's table plus process-wide gauges.
#[derive(Debug)]
pub struct Metrics {
    workers: Vec<Arc<WorkerMetrics>>,
    reloads: AtomicU64,
    last_reload: AtomicI64,
    store_errors: AtomicU64,
}

impl Metrics {
    /// Tables for `workers` worker threads.
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(Self {
            workers: (0..workers.max(1))
                .map(|_| Arc::new(WorkerMetrics::default()))
                .collect(),
            reloads: AtomicU64::new(0),
            last_reload: AtomicI64::new(0),
            store_errors: AtomicU64::new(0),
        })
    }

    /// The table of one worker.
    pub fn worker(&self, index: usize) -> Arc<WorkerMetrics> {
        Arc::clone(&self.workers[index % self.workers.len()])
    }

    /// Counts a reload.
    pub fn reloaded(&self, unix_secs: i64) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
        self.last_reload.store(unix_secs, Ordering::Relaxed);
    }

    /// Counts a key store failure seen on the request path.
    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the analytics queue's state when there is one.
    pub fn render(&self, analytics: Option<&tollgate_analytics::AnalyticsQueue>) -> String {
        let mut all: HashMap<Arc<str>, ApiMetrics> = HashMap::new();
        for w in &self.workers {
            let apis = w.apis.lock().unwrap_or_else(PoisonError::into_inner);
            for (api, m) in apis.iter() {
                all.entry(Arc::clone(api)).or_default().merge(m);
            }
        }
        let mut apis: Vec<_> = all.into_iter().collect();
        apis.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::with_capacity(4096);
        let label = |api: &str| escape(api);

        out.push_str("# HELP tollgate_requests_total Requests answered, by API and status class.\n# TYPE tollgate_requests_total counter\n");
        for (api, m) in &apis {
            for (i, n) in m.by_class.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "tollgate_requests_total{{api_id=\"{}\",code=\"{}xx\"}} {n}",
                    label(api),
                    i + 1
                );
            }
        }
        out.push_str("# HELP tollgate_rejected_requests_total Requests the gateway refused, by reason.\n# TYPE tollgate_rejected_requests_total counter\n");
        for (api, m) in &apis {
            for r in REJECTIONS {
                let _ = writeln!(
                    out,
                    "tollgate_rejected_requests_total{{api_id=\"{}\",reason=\"{}\"}} {}",
                    label(api),
                    reason_label(r),
                    m.rejected[r as usize]
                );
            }
        }
        out.push_str("# HELP tollgate_upstream_errors_total Upstream refused, reset or timed out, or every load-balanced host was down.\n# TYPE tollgate_upstream_errors_total counter\n");
        for (api, m) in &apis {
            let _ = writeln!(
                out,
                "tollgate_upstream_errors_total{{api_id=\"{}\"}} {}",
                label(api),
                m.upstream_errors
            );
        }
        for (name, help, pick) in [
            (
                "tollgate_request_duration_seconds",
                "Time to the response head.",
                0,
            ),
            (
                "tollgate_upstream_duration_seconds",
                "Time the upstream took to answer.",
                1,
            ),
        ] {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
            for (api, m) in &apis {
                let h = if pick == 0 { &m.total } else { &m.upstream };
                for (bound, n) in BOUNDS.iter().zip(h.buckets) {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{api_id=\"{}\",le=\"{bound}\"}} {n}",
                        label(api)
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{{api_id=\"{}\",le=\"+Inf\"}} {}",
                    label(api),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{{api_id=\"{}\"}} {}", label(api), h.sum);
                let _ = writeln!(out, "{name}_count{{api_id=\"{}\"}} {}", label(api), h.count);
            }
        }
        let _ = write!(
            out,
            "# HELP tollgate_reloads_total Reloads applied.\n# TYPE tollgate_reloads_total counter\ntollgate_reloads_total {}\n\
             # HELP tollgate_last_reload_timestamp_seconds Unix time of the last reload.\n# TYPE tollgate_last_reload_timestamp_seconds gauge\ntollgate_last_reload_timestamp_seconds {}\n\
             # HELP tollgate_store_errors_total Key store failures on the request path.\n# TYPE tollgate_store_errors_total counter\ntollgate_store_errors_total {}\n",
            self.reloads.load(Ordering::Relaxed),
            self.last_reload.load(Ordering::Relaxed),
            self.store_errors.load(Ordering::Relaxed),
        );
        if let Some(q) = analytics {
            let _ = write!(
                out,
                "# HELP tollgate_analytics_queue_depth Analytics records waiting to be written.\n# TYPE tollgate_analytics_queue_depth gauge\ntollgate_analytics_queue_depth {}\n\
                 # HELP tollgate_analytics_written_total Analytics records written to the sink.\n# TYPE tollgate_analytics_written_total counter\ntollgate_analytics_written_total {}\n\
                 # HELP tollgate_analytics_dropped_total Analytics records dropped (queue full or sink down).\n# TYPE tollgate_analytics_dropped_total counter\ntollgate_analytics_dropped_total {}\n",
                q.depth(),
                q.written(),
                q.dropped(),
            );
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_sum_across_workers() {
        let m = Metrics::new(2);
        let api: Arc<str> = "a".into();
        let ok = Sample {
            status: 200,
            total: Duration::from_millis(2),
            upstream: Some(Duration::from_millis(1)),
            rejection: None,
            upstream_error: false,
        };
        let quota = Sample {
            status: 403,
            total: Duration::from_micros(100),
            upstream: None,
            rejection: Some(Rejection::Quota),
            upstream_error: false,
        };
        m.worker(0).record(&api, &ok);
        m.worker(1).record(&api, &ok);
        m.worker(1).record(&api, &quota);
        let text = m.render(None);
        assert!(
            text.contains("tollgate_requests_total{api_id=\"a\",code=\"2xx\"} 2"),
            "{text}"
        );
        assert!(text.contains("tollgate_requests_total{api_id=\"a\",code=\"4xx\"} 1"));
        assert!(text.contains("tollgate_rejected_requests_total{api_id=\"a\",reason=\"quota\"} 1"));
        assert!(text.contains("tollgate_request_duration_seconds_count{api_id=\"a\"} 3"));
        assert!(
            text.contains("tollgate_upstream_duration_seconds_bucket{api_id=\"a\",le=\"0.001\"} 2")
        );
    }
}
