//! The Prometheus scrape endpoint: its own listener (off the public port by default), one path.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tollgate_analytics::AnalyticsQueue;
use tollgate_proxy::metrics::Metrics;

/// Serves `GET <path>` with the current metrics until the process ends.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    path: String,
    metrics: Arc<Metrics>,
    analytics: Option<Arc<AnalyticsQueue>>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics listener could not start");
            return;
        }
    };
    let path: Arc<str> = path.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let path = Arc::clone(&path);
        let metrics = Arc::clone(&metrics);
        let analytics = analytics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let reply = answer(&req, &path, &metrics, analytics.as_deref());
                async move { Ok::<_, Infallible>(reply) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

fn answer(
    req: &Request<Incoming>,
    path: &str,
    metrics: &Metrics,
    analytics: Option<&AnalyticsQueue>,
) -> Response<Full<Bytes>> {
    let mut resp = if req.uri().path() != path {
        Response::new(Full::new(Bytes::from_static(b"not found\n")))
    } else if req.method() != Method::GET {
        Response::new(Full::new(Bytes::from_static(b"method not allowed\n")))
    } else {
        let mut resp = Response::new(Full::new(Bytes::from(metrics.render(analytics))));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return resp;
    };
    *resp.status_mut() = if req.uri().path() != path {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::METHOD_NOT_ALLOWED
    };
    resp
}
