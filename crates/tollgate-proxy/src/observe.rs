//! The logging phase: what the gateway records about a request once its response is known.
//!
//! Nothing here decides anything about the request. [`arrival`] notes what the request looked
//! like (only what some observer needs), [`routed`] what routing found, and [`finish`] reads
//! the [`RequestCtx`] the phases filled in and feeds the worker's metrics table, its analytics
//! batch and the access log. With all three off, each is a branch and nothing more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use hyper::body::Incoming;

use crate::ctx::{Arrival, RecordTexts, RequestCtx};
use crate::headers::X_REQUEST_ID;
use crate::metrics::Sample;
use crate::router::ApiRoute;
use crate::versions::VersionRoute;
use crate::worker::ConnCtx;

/// Notes what the request looked like on arrival, for whatever observes it.
pub(crate) fn arrival(conn: &ConnCtx, req: &mut Request<Incoming>, cx: &mut RequestCtx) {
    let observing = conn.worker.observing;
    if !observing.any() {
        return;
    }
    cx.started = Some(Instant::now());
    if !observing.analytics && !observing.access_log {
        return;
    }
    let request_id = observing.access_log.then(|| request_id(req));
    let (timestamp, user_agent, content_length) = if observing.analytics {
        let text = |name: header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        (
            Some(tollgate_analytics::Timestamp::now()),
            text(header::USER_AGENT).to_owned(),
            text(header::CONTENT_LENGTH).parse().unwrap_or(0),
        )
    } else {
        (None, String::new(), 0)
    };
    cx.arrival = Some(Arrival {
        request_id,
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        timestamp,
        user_agent,
        content_length,
    });
}

/// Notes the API that serves the request.
pub(crate) fn routed(conn: &ConnCtx, route: &ApiRoute, cx: &mut RequestCtx) {
    let observing = conn.worker.observing;
    if observing.any() {
        cx.api_id = Some(Arc::clone(&route.spec.api_id));
    }
    if observing.analytics && !route.spec.do_not_track {
        cx.track = Some(Arc::clone(&route.record_texts));
    }
}

/// Notes the version that serves the request: its records name it.
pub(crate) fn versioned(version: &VersionRoute, cx: &mut RequestCtx) {
    if cx.track.is_some() {
        cx.track = Some(Arc::clone(&version.record_texts));
    }
}

/// Records the finished request: metrics, analytics, access log.
pub(crate) fn finish(conn: &ConnCtx, cx: &RequestCtx, status: StatusCode) {
    let Some(started) = cx.started else {
        return;
    };
    let total = started.elapsed();
    static NO_API: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    if let Some(metrics) = &conn.worker.metrics {
        let sample = Sample {
            status: status.as_u16(),
            total,
            upstream: cx.upstream,
            rejection: cx.refusal,
            upstream_error: cx.upstream_error,
        };
        metrics.record(cx.api_id.as_ref().unwrap_or(&NO_API), &sample);
        if cx.store_error
            && let Some(all) = &conn.gateway.metrics
        {
            all.store_error();
        }
    }
    let arrival = cx.arrival.as_ref();
    if let (Some(batch), Some(texts), Some(arrival)) =
        (&conn.worker.analytics, cx.track.as_deref(), arrival)
        && let Some(timestamp) = arrival.timestamp
    {
        batch.record(record(conn, cx, texts, arrival, timestamp, status, total));
    }
    if let Some(arrival) = arrival.filter(|_| conn.worker.observing.access_log) {
        // The key is logged by the id it is stored under, hashed when it is stored raw:
        // a raw key never reaches the log.
        let key = key_hash(conn, cx);
        tracing::info!(
            target: "tollgate::access",
            request_id = arrival.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
            method = arrival.method.as_str(),
            path = arrival.path.as_str(),
            api_id = cx.api_id.as_deref().unwrap_or(""),
            key = key.as_str(),
            status = status.as_u16(),
            latency_ms = total.as_secs_f64() * 1000.0,
            upstream_ms = cx.upstream.map(|u| u.as_secs_f64() * 1000.0),
            "request"
        );
    }
}

/// The key as analytics and logs show it: its storage id when keys are hashed, else a SHA-256
/// of the raw key.
fn key_hash(conn: &ConnCtx, cx: &RequestCtx) -> String {
    cx.key_id.as_deref().map_or_else(String::new, |id| {
        if conn.gateway.config.keys.hash_keys {
            id.to_owned()
        } else {
            tollgate_session::HashAlgorithm::Sha256.hash(id.as_bytes())
        }
    })
}

fn record(
    conn: &ConnCtx,
    cx: &RequestCtx,
    texts: &RecordTexts,
    arrival: &Arrival,
    timestamp: tollgate_analytics::Timestamp,
    status: StatusCode,
    total: Duration,
) -> tollgate_analytics::Record {
    let raw_path = arrival.path.clone();
    let path = match &texts.strip {
        Some(lp) => match raw_path.strip_prefix(&**lp) {
            Some(rest) if rest.starts_with('/') => rest.to_owned(),
            Some(rest) => format!("/{rest}"),
            None => raw_path.clone(),
        },
        None => raw_path.clone(),
    };
    let api_key = key_hash(conn, cx);
    let api_id = cx.api_id.clone().unwrap_or_else(|| Arc::from(""));
    let session = cx.key.as_deref().map(|k| &k.session);
    let key_tags = session.map_or(&[][..], |s| s.tags.as_slice());
    let mut tags = Vec::with_capacity(key_tags.len() + 3);
    tags.extend(key_tags.iter().map(|t| Arc::from(t.as_str())));
    if !api_key.is_empty() {
        tags.push(Arc::from(format!("key-{api_key}")));
    }
    tags.push(Arc::clone(&texts.org_tag));
    tags.push(Arc::clone(&texts.api_tag));
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let mut record = tollgate_analytics::Record {
        method: arrival.method.as_str().to_owned(),
        host: Arc::clone(&texts.host),
        path,
        raw_path,
        content_length: arrival.content_length,
        user_agent: arrival.user_agent.clone(),
        calendar: tollgate_analytics::Calendar::default(),
        response_code: i64::from(status.as_u16()),
        api_key,
        timestamp,
        api_version: Arc::clone(&texts.api_version),
        api_name: Arc::clone(&texts.api_name),
        api_id,
        org_id: Arc::clone(&texts.org_id),
        oauth_id: "",
        request_time: ms(total),
        raw_request: "",
        raw_response: "",
        ip_address: conn.peer_ip.to_str().unwrap_or("").to_owned(),
        network: tollgate_analytics::Network::default(),
        latency: tollgate_analytics::Latency {
            total: ms(total),
            upstream: cx.upstream.map_or(0, ms),
        },
        tags,
        alias: session.map_or_else(String::new, |s| s.alias.clone()),
        track_path: false,
        expire_at: tollgate_analytics::Timestamp {
            secs: timestamp.secs.saturating_add(100 * 365 * 86_400),
            nanos: 0,
        },
    };
    record.set_calendar();
    record
}

/// The request's `X-Request-Id`, generated (and added, so the upstream sees it) when absent.
fn request_id(req: &mut Request<Incoming>) -> HeaderValue {
    if let Some(v) = req.headers().get(X_REQUEST_ID) {
        return v.clone();
    }
    static PREFIX: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        u32::from_le_bytes(b)
    });
    static THREADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    thread_local! {
        // Each thread numbers its own requests (no counter shared between cores), in its own
        // range: the top 16 bits are the thread's.
        static NEXT: std::cell::Cell<u64> = std::cell::Cell::new(
            THREADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 48,
        );
    }
    let n = NEXT.with(|next| {
        let n = next.get();
        next.set(n + 1);
        n
    });
    let mut hex = [0u8; 24];
    tollgate_session::hex_into(&mut hex[..8], &PREFIX.to_be_bytes());
    tollgate_session::hex_into(&mut hex[8..], &n.to_be_bytes());
    let id = HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("0"));
    req.headers_mut().insert(X_REQUEST_ID, id.clone());
    id
}
